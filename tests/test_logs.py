"""Training logs (zoo.logs: CSV always, TensorBoard with log=tensorboard), read back with
tensorboard's EventAccumulator; the model card (zoo.card); the sample grid's scale and the
NLL time estimate of the command line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from helpers import zoo_main as zoo_cli
from PIL import Image

import zoo
from zoo import data
from zoo.core import ConfigError
from zoo.images import legible_scale
from zoo.train import Trainer

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)


@pytest.fixture(scope="module")
def mnist_subset() -> torch.Tensor:
    x, _ = data.load("mnist", "train")
    return x[:1024]


def _trainer(out, images, **options):
    torch.manual_seed(0)
    model = zoo.create("vae-mlp", dataset="mnist", hidden=32)
    opts = dict(batch_size=32, checkpoint_every=3, log_every=2, log="tensorboard",
                sample_n=4)
    opts.update(options)
    return Trainer(model, "mnist", out, images=images, progress=False, **opts)


def _events(run) -> EventAccumulator:
    acc = EventAccumulator(str(run / "tensorboard"),
                           size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_logs_losses_fid_grids_and_options(tmp_path, mnist_subset):
    run = tmp_path / "tb"
    _trainer(run, mnist_subset, steps=8, sample_every=4, eval_every=4, eval_n=100,
             eval_extractor="mnist-classifier").fit()
    acc = _events(run)
    for tag in ("train/loss_bpd", "train/recon_bpd", "train/kl_bpd", "train/images_per_s"):
        assert [e.step for e in acc.Scalars(tag)] == [2, 4, 6, 8], tag
    fid = acc.Scalars("eval/fid")
    assert [e.step for e in fid] == [4, 8] and all(e.value > 0 for e in fid)
    grids = acc.Images("samples")
    assert [e.step for e in grids] == [4, 8]  # the last grid is not logged twice
    assert grids[0].width == 2 * 30 + 2 and grids[0].height == 2 * 30 + 2  # 4 images
    (text,) = acc.Tensors("options/text_summary")
    options = text.tensor_proto.string_val[0].decode()
    assert '"model": "vae-mlp"' in options and '"log": "tensorboard"' in options
    # the CSV files are written too, as before (zoo reads them back)
    rows = (run / "losses.csv").read_text().splitlines()
    assert rows[0] == "step,seconds,images_per_s,loss_bpd,recon_bpd,kl_bpd" and len(rows) == 5
    assert (run / "eval.csv").read_text().startswith("step,fid,n,extractor,extractor_sha256\n")
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step-0000004.png", "step-0000008.png"]


def test_a_run_shorter_than_log_every_logs_its_last_step(tmp_path, mnist_subset):
    run = tmp_path / "short"
    _trainer(run, mnist_subset, steps=3, log_every=100, sample_n=0).fit()
    rows = (run / "losses.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("3,")  # the three steps' mean, at step 3
    assert [e.step for e in _events(run).Scalars("train/loss_bpd")] == [3]
    # a run that ends past its last log point logs the steps since then at its last step
    run = tmp_path / "tail"
    _trainer(run, mnist_subset, steps=5, log_every=2, sample_n=0).fit()
    assert [e.step for e in _events(run).Scalars("train/loss_bpd")] == [2, 4, 5]


def test_resume_continues_the_curves_without_repeating_a_step(tmp_path, mnist_subset):
    run = tmp_path / "cut"
    trainer = _trainer(run, mnist_subset, steps=10, checkpoint_every=4)

    def crash(t):  # killed after logging step 6, past the checkpoint of step 4
        if t.step == 7:
            raise RuntimeError("killed")

    trainer.hook = crash
    with pytest.raises(RuntimeError, match="killed"):
        trainer.fit()
    assert [e.step for e in _events(run).Scalars("train/loss_bpd")] == [2, 4, 6]
    resumed = Trainer.resume(run, images=mnist_subset, progress=False)
    resumed.fit()
    acc = _events(run)
    steps = [e.step for e in acc.Scalars("train/loss_bpd")]
    assert steps == [2, 4, 6, 8, 10]
    # the same curve as a run that was never interrupted
    full = tmp_path / "full"
    _trainer(full, mnist_subset, steps=10, checkpoint_every=4).fit()
    want = [e.value for e in _events(full).Scalars("train/loss_bpd")]
    got = [e.value for e in acc.Scalars("train/loss_bpd")]
    assert got == pytest.approx(want, rel=1e-6)


def test_tensorboard_without_the_package_is_one_clear_error(tmp_path, mnist_subset,
                                                             monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard fails
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[tensorboard\]"'):
        _trainer(tmp_path / "none", mnist_subset, steps=2)
    assert not (tmp_path / "none").exists()
    code = ("import sys; sys.modules['tensorboard'] = None; from zoo.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run(
        [sys.executable, "-c", code, "train", "vae-mlp", "--dataset", "mnist", "--steps", "2",
         "--out", str(tmp_path / "cli"), "--set", "log=tensorboard"],
        capture_output=True, text=True, env={**os.environ, "ZOO_OFFLINE": "1"}, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("zoo: error:")]
    assert 'pip install -e ".[tensorboard]"' in line


def test_unknown_logger_is_refused():
    with pytest.raises(ConfigError, match="log must be one of csv, tensorboard"):
        Trainer(zoo.create("vae-mlp", dataset="mnist", hidden=32), "mnist", "/nonexistent",
                images=torch.zeros(64, 1, 28, 28, dtype=torch.uint8), steps=1, log="wandb")


def test_a_suite_takes_log_in_its_train_table(tmp_path):
    from zoo.bench.suite import load_suite

    suite = tmp_path / "s.toml"
    suite.write_text('datasets = ["mnist"]\n[defaults]\nbudget = { steps = 2 }\n'
                     'train = { log = "tensorboard", sample_every = 1 }\n'
                     '[[models]]\nname = "vae-mlp"\n')
    (entry,) = load_suite(suite).models
    assert entry.train["log"] == "tensorboard" and entry.train["sample_every"] == 1
    suite.write_text(suite.read_text().replace('"tensorboard"', '"wandb"'))
    with pytest.raises(ConfigError, match="log must be one of"):
        load_suite(suite)


# -- the model card, and the command line -------------------------------------------------------


@pytest.mark.slow
def test_model_card_is_written_by_train_eval_and_nll(tmp_path):
    run = tmp_path / "vae"
    zoo_cli("train", "vae-mlp", "--dataset", "mnist", "--steps", "6", "--out", str(run),
            "--batch-size", "64", "--set", "hidden=32", "--set", "log_every=3")
    card = (run / "README.md").read_text()
    info = json.loads((run / "run.json").read_text())
    assert card.startswith("# vae-mlp on mnist")
    assert f"{info['params']:,}" in card and "`hidden=32`" in card
    assert info["dataset_sha256"] == data.content_hash("mnist", "train")
    assert info["dataset_sha256"] in card
    assert info["trained"]["steps"] == 6 and "6 steps in" in card
    assert "![samples](samples.png)" in card and (run / "samples.png").is_file()
    assert (f"zoo train vae-mlp --dataset mnist --steps 6 --out {run} --batch-size 64 "
            "--set hidden=32 --set log_every=3 --seed 0") in card  # as given, and the seed
    assert "Not measured yet" in card

    zoo_cli("nll", str(run), "--n", "40", "--set", "k=2")
    zoo_cli("eval", str(run), "-n", "100", "--extractor", "mnist-classifier",
            "--metrics", "fid,kid", "--bootstrap", "10")
    card = (run / "README.md").read_text()
    nll = json.loads((run / "nll.json").read_text())
    result = json.loads((run / "eval.json").read_text())
    assert f"{nll['nll_bpd']:.4f} ± {nll['stderr']:.4f} bits/dim" in card
    assert "over 40 images of mnist test" in card
    fid_row = next(ln for ln in card.splitlines() if ln.startswith("| FID |"))
    lo, hi = result["fid_ci95"]
    assert f"{result['fid']:.3f}" in fid_row and f"[{lo:.3f}, {hi:.3f}]" in fid_row
    assert "100 generated images against 10000 images of mnist test" in card
    assert "`mnist-classifier`" in card and "after 6 training steps" in card
    assert f"zoo nll {run} --n 40 --set k=2" in card
    assert f"zoo eval {run} -n 100 --extractor mnist-classifier" in card
    assert "Not measured yet" not in card


@pytest.mark.slow
def test_sample_grids_of_tiny_images_are_enlarged(tmp_path):
    assert legible_scale(8, 8) == 4 and legible_scale(28, 28) == 2 and legible_scale(64, 64) == 2
    import numpy as np

    np.save(tmp_path / "tiny.npy",
            np.random.default_rng(0).integers(0, 256, (128, 8, 8, 1), dtype=np.uint8))
    run = tmp_path / "r8"
    zoo_cli("train", "vae-mlp", "--dataset", str(tmp_path / "tiny.npy"), "--steps", "2",
            "--batch-size", "32", "--out", str(run), "--set", "hidden=16")
    zoo_cli("sample", str(run), "-n", "64", "-o", str(tmp_path / "a.png"))
    zoo_cli("sample", str(run), "-n", "64", "-o", str(tmp_path / "b.png"), "--scale", "1")
    assert Image.open(tmp_path / "a.png").size == (4 * 82, 4 * 82)  # 8 rows of 8 images
    assert Image.open(tmp_path / "b.png").size == (82, 82)


def test_nll_over_a_whole_split_says_how_long_it_takes(tmp_path):

    run = tmp_path / "r"
    _trainer(run, data.load("mnist", "train")[0][:256], steps=2, log="csv").fit()
    proc = subprocess.run(  # stderr is a pipe: no terminal, progress as lines
        [sys.executable, "-c", "import sys, zoo.cli as c, zoo.progress as p; "
         "p.ESTIMATE_SECONDS = 0; sys.exit(c.main(sys.argv[1:]))", "nll", str(run),
         "--batch-size", "2500", "--set", "k=1"], capture_output=True, text=True,
        env={**os.environ, "ZOO_OFFLINE": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("zoo nll: about")]
    assert line.endswith("for 10000 images (--n to use fewer)")


# -- the model card of hostile files: nothing forged, no script, no traceback --------------------


def card_run(tmp_path, **info):
    """A run directory with only the files the card reads: run.json (``info`` over a vae-mlp
    run's), and eval.json when ``info`` has ``eval``."""
    run = tmp_path / "run"
    run.mkdir()
    result = info.pop("eval", None)
    base = {"model": "vae-mlp", "dataset": "mnist", "family": "vae",
            "train_config": {"steps": 6, "batch_size": 32, "seed": 0},
            "trained": {"steps": 6, "seconds": 1.5, "images_per_s": 128.0, "device": "cpu"}}
    (run / "run.json").write_text(json.dumps({**base, **info}))
    if result is not None:
        (run / "eval.json").write_text(json.dumps(result))
    return run


def outside_fences(card: str) -> list[str]:
    """The card's lines outside fenced code blocks, as CommonMark reads them (a fence is
    closed by a line of at least as many backticks and nothing else)."""
    out, fence = [], None
    for line in card.splitlines():
        run = len(line) - len(line.lstrip("`"))
        if fence is None and run >= 3:
            fence = run
        elif fence is not None and run >= fence and not line.strip("`").strip():
            fence = None
        elif fence is None:
            out.append(line)
    return out


HOSTILE = ["cat\n## Metrics\n\n| FID | 0.001 |", "<script>alert(1)</script>",
           "<img src=x onerror=alert(1)>", "[x](javascript:alert(1))"]


def test_card_class_names_and_names_from_files_forge_nothing(tmp_path):
    from zoo.card import render_card

    run = card_run(tmp_path, classes=HOSTILE, dataset="/data/<script>x</script>\n## Fake",
                   trained={"steps": 6, "seconds": 1.5, "images_per_s": 128.0,
                            "device": "cpu\n## Metrics <b>"})
    lines = outside_fences(render_card(run))
    text = re.sub(r"(`+)(?!`).+?(?<!`)\1(?!`)", "", "\n".join(lines))  # code spans: text
    assert [ln for ln in lines if ln.startswith("#")] == [
        lines[0], "## Model", "## Data", "## Training", "## Metrics", "## Reproduce"]
    assert "<script" not in text and "<img" not in text and "<b>" not in text
    assert not re.search(r"(?<!\\)\]\(javascript:", text)
    (classes,) = [ln for ln in lines if ln.startswith("- classes:")]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in classes and "\\[x\\]" in classes


def _reproduce(run) -> list[str]:
    """The lines of the card's Reproduce fence."""
    card = (run / "README.md").read_text()
    return card.split("## Reproduce\n\n```bash\n", 1)[1].split("\n```", 1)[0].splitlines()


def test_card_reproduce_line_is_the_command_as_given(tmp_path, capsys):
    from zoo.cli import main

    run = tmp_path / "r"
    given = ["train", "vae-mlp", "--dataset", "mnist", "--steps", "2", "--batch-size", "16",
             "--out", str(run), "--set", "hidden=16", "--quiet"]
    assert main(given) == 0
    # nothing zoo filled in (the dataset's defaults), the seed it trained with added
    assert _reproduce(run)[0] == "zoo " + " ".join(given) + " --seed 0"
    assert json.loads((run / "run.json").read_text())["command"] == _reproduce(run)[0]
    # a resumed run that trains the same keeps it; a longer budget is not that command
    assert main(["train", "vae-mlp", "--dataset", "mnist", "--out", str(run), "--resume"]) == 0
    assert _reproduce(run)[0] == "zoo " + " ".join(given) + " --seed 0"
    assert main(["train", "vae-mlp", "--dataset", "mnist", "--out", str(run), "--resume",
                 "--steps", "3", "--quiet"]) == 0
    assert "command" not in json.loads((run / "run.json").read_text())
    assert _reproduce(run)[0].startswith("zoo train vae-mlp --dataset mnist --steps 3")
    # a seed given is not repeated; a time budget says which steps give the same weights
    timed = tmp_path / "t"
    assert main(["train", "vae-mlp", "--dataset", "mnist", "--seconds", "600", "--steps", "2",
                 "--seed", "7", "--out", str(timed), "--set", "hidden=16", "--quiet"]) == 0
    line, note = _reproduce(timed)[:2]
    assert line.endswith(f"--seed 7 --out {timed} --set hidden=16 --quiet")
    assert line.count("--seed") == 1 and note.startswith("# a time budget: --steps 2 ")
    capsys.readouterr()


def test_card_reproduce_fence_holds_any_command(tmp_path):
    from zoo.card import render_card

    command = "zoo eval run ````\n```\n## Metrics\n<script>alert(1)</script>"
    card = render_card(card_run(tmp_path, eval={"fid": 12.5, "command": command}))
    outside = "\n".join(outside_fences(card))
    assert "<script" not in outside and outside.count("## Metrics") == 1
    assert "zoo eval run ```` ``` ## Metrics <script>alert(1)</script>" in card


@pytest.mark.parametrize("key,value", [
    ("trained", {"steps": [6], "seconds": 1.5}), ("trained", {"steps": 6, "seconds": {}}),
    ("trained", {"steps": 6, "images_per_s": "fast"}),
    ("train_config", {"steps": {"a": 1}, "batch_size": 32}),
    ("train_config", {"steps": 6, "seconds": "10", "batch_size": 32}),
])
def test_card_of_a_run_json_with_nested_wrong_types_is_one_error(tmp_path, key, value):
    from zoo.card import write_card
    from zoo.core import CheckpointError

    run = card_run(tmp_path, **{key: value})
    bad = next(k for k, v in value.items() if not isinstance(v, int | float) or k == "seconds"
               and not isinstance(v, float))
    with pytest.raises(CheckpointError, match=rf"run\.json: {key}: {bad} must be"):
        write_card(run)
    assert not (run / "README.md").exists()


@pytest.mark.parametrize("key,value", [
    ("params", 10**400), ("world_size", -(2**70)),
    ("trained", {"steps": 10**30, "seconds": 1.5}),
])
def test_card_of_a_run_json_with_an_integer_beyond_64_bits_is_one_error(tmp_path, key, value):
    from zoo.card import write_card
    from zoo.core import CheckpointError

    run = card_run(tmp_path, **{key: value})
    with pytest.raises(CheckpointError, match=r"run\.json: .*an integer of at most 64 bits"):
        write_card(run)
    assert not (run / "README.md").exists()


def test_card_shows_eval_figures_of_the_wrong_type_as_invalid(tmp_path):
    from zoo.card import render_card

    card = render_card(card_run(tmp_path, eval={
        "fid": 12.5, "fid_ci95": ["low", {}], "kid": "x", "kid_std": [1],
        "precision": 0.5, "precision_ci95": "wide",
        "recon_psnr": "bad", "recon_n": 5, "recon_fid": [], "command": ["zoo", "eval"]}))
    rows = {ln.split("|")[1].strip(): ln for ln in card.splitlines() if ln.startswith("| ")}
    assert rows["FID"] == "| FID | 12.500 | [invalid, invalid] |"
    assert rows["KID"] == "| KID | invalid ± invalid |  |"
    assert rows["precision"] == "| precision | 0.5000 | invalid |"
    assert "reconstruction figures: invalid (eval.json)" in card


def test_unwritable_tensorboard_folder_is_one_error_before_the_writer_thread(tmp_path,
                                                                           monkeypatch):
    """RUN/tensorboard where no file can be made (here a link into /proc, which refuses new
    files even to root): one ConfigError naming the folder; it was an OSError raised in
    the event writer's own thread, whose traceback was printed beside the error."""
    import threading

    from zoo.logs import TensorBoardLogger

    crashed = []
    monkeypatch.setattr(threading, "excepthook", lambda a: crashed.append(a.exc_value))
    (tmp_path / "tensorboard").symlink_to("/proc/1")
    with pytest.raises(ConfigError, match="cannot write TensorBoard events to .*tensorboard"):
        TensorBoardLogger(tmp_path)
    assert crashed == []

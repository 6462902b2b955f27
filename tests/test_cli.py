"""The `zoo` command as a user runs it: train, resume, sample, nll, list, data check, errors.
Most run ``zoo.cli.main`` in this process (``zoo_main``); the process itself (its exit
code and one-line error from ``python -m zoo``, signals) is tested with ``run_zoo``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import assert_one_line_error, run_zoo
from helpers import zoo_main as zoo
from PIL import Image


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "vae"
    zoo("train", "vae-mlp", "--dataset", "mnist", "--steps", "30", "--out", str(out),
        "--set", "hidden=64", "--set", "checkpoint_every=10")
    return out


@pytest.mark.slow
def test_train_writes_a_run(run):
    names = {p.name for p in run.iterdir()}
    assert {"run.json", "checkpoint.pt", "model.pt", "losses.csv"} <= names
    info = json.loads((run / "run.json").read_text())
    assert info["model"] == "vae-mlp" and info["dataset"] == "mnist"
    assert info["model_config"]["hidden"] == 64 and info["train_config"]["steps"] == 30


@pytest.mark.slow
def test_resume_extends_the_budget(run, tmp_path):
    proc = zoo("train", "vae-mlp", "--dataset", "mnist", "--steps", "40", "--out", str(run),
               "--resume")
    assert "40 steps" in proc.stdout
    again = zoo("train", "vae-mlp", "--dataset", "mnist", "--steps", "5", "--out", str(run),
                check=False)
    assert_one_line_error(again, "already holds a run", "--resume")


@pytest.mark.slow
def test_sample_writes_a_png_grid(run, tmp_path):
    png = tmp_path / "grid.png"
    proc = zoo("sample", str(run), "-n", "16", "-o", str(png), "--seed", "1", "--scale", "1",
               "--npy", str(tmp_path / "s.npy"))
    assert "16 samples" in proc.stdout
    img = Image.open(png)
    assert img.size == (4 * 30 + 2, 4 * 30 + 2) and img.mode == "L"
    bad = zoo("sample", str(run), "--set", "decode=median", "-o", str(png), check=False)
    assert_one_line_error(bad, "decode")


@pytest.mark.slow
def test_sample_labels_of_an_unconditional_run_is_one_line(run, tmp_path):
    png = tmp_path / "grid.png"
    bad = zoo("sample", str(run), "--labels", "0-9", "-o", str(png), check=False)
    assert_one_line_error(bad, "not class-conditional")
    bad = zoo("sample", str(run), "--labels", "0-", "-o", str(png), check=False)
    assert_one_line_error(bad, "--labels takes class numbers")
    assert not png.exists()


@pytest.mark.slow
def test_nll_prints_bits_per_dim(run, tmp_path):
    proc = zoo("nll", str(run), "--n", "50", "--set", "k=5", "--json", str(tmp_path / "n.json"))
    assert "bits/dim (bound, IWAE k=5)" in proc.stdout and "mnist test (50 images)" in proc.stdout
    result = json.loads((tmp_path / "n.json").read_text())
    assert 0.5 < result["nll_bpd"] < 9 and result["kind"] == "bound"


@pytest.mark.slow
def test_list_and_data_check():
    listing = zoo("list").stdout
    assert "vae-conv" in listing and "mnist" in listing and "searched:" in listing
    check = zoo("data", "check")
    assert "ok" in check.stdout and "files verified" in check.stdout


@pytest.mark.slow
def test_user_errors_are_one_line(tmp_path):
    assert_one_line_error(run_zoo("train", "vae-huge", "--dataset", "mnist", "--steps", "1",
                                  check=False), "unknown model", "vae-mlp")
    assert_one_line_error(zoo("train", "vae-mlp", "--dataset", "mnist", "--steps", "1",
                              "--set", "widht=3", "--out", str(tmp_path / "x"), check=False),
                          "unknown option 'widht'", "hidden")
    assert_one_line_error(zoo("train", "vae-mlp", "--dataset", "mnist", "--out",
                              str(tmp_path / "y"), check=False), "budget")
    missing = zoo("sample", str(tmp_path / "nothing"), check=False)
    assert_one_line_error(missing, "does not exist", "run directory")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert_one_line_error(zoo("sample", str(bad), check=False), "bad.pt")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(zoo("--root", str(empty), "train", "vae-mlp", "--dataset", "cifar10",
                              "--steps", "1", "--out", str(tmp_path / "c"), check=False),
                          "cifar-10-python.tar.gz")


def test_a_huge_labels_range_is_refused_before_it_is_expanded(monkeypatch):
    from zoo import cli

    def no_huge_range(*args):  # the old parser expanded (and de-duplicated) every number
        assert len(range(*args)) <= 10**6, f"--labels expanded range{args}"
        return range(*args)

    monkeypatch.setattr(cli, "range", no_huge_range, raising=False)
    with pytest.raises(cli.ConfigError, match=r"range '0-999999999' holds 1,000,000,000 "
                                              r"classes, more than a grid shows \(4096\)"):
        cli.parse_labels("0-999999999")
    with pytest.raises(cli.ConfigError, match=r"more classes than a grid shows \(4096\)"):
        cli.parse_labels("0-4000,5000-5100")
    assert cli.parse_labels("3,0-4,2") == [3, 0, 1, 2, 4]


def test_labels_for_huge_counts_are_refused_before_they_are_built(tmp_path, capsys,
                                                                 monkeypatch):
    import torch

    import zoo
    from zoo import cli

    torch.manual_seed(0)
    zoo.create("gan-mlp", image_shape=(1, 8, 8), g_hidden=(16,), d_hidden=(16,), latent_dim=4,
               conditional=True, num_classes=3).save(tmp_path / "m.pt")
    monkeypatch.setenv("ZOO_MAX_MEMORY_GB", "0.001")  # 1 MiB: 131,072 int64 labels
    built = []
    monkeypatch.setattr(torch.Tensor, "repeat_interleave",
                        lambda self, k: built.append(k) or torch.zeros(0), raising=True)
    for labels, n in (["--labels", "1", "-n", "200000"], "200,000"), \
            (["--labels", "0-2", "--per-class", "200000"], "600,000"):
        capsys.readouterr()
        assert cli.main(["sample", str(tmp_path / "m.pt"), *labels, "--npy",
                         str(tmp_path / "s.npy"), "-o", str(tmp_path / "g.png")]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"the labels of {n} samples" in err[0], err
        assert "memory limit" in err[0]
    assert built == [] and not (tmp_path / "s.npy").exists()


def test_sigterm_during_train_saves_releases_and_says_how_to_resume(tmp_path):
    """SIGTERM (what a scheduler, `timeout` or a container stop sends) stops `zoo train` as
    Ctrl-C does: a checkpoint at the step it stopped at, the lock released, the resume
    command printed; the exit status is 128 + 15, as a shell reports it."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "zoo", "train", "vae-mlp", "--dataset", "mnist", "--steps",
         "1000000", "--batch-size", "8", "--out", str(out), "--set", "hidden=8",
         "--set", "log_every=1", "--set", "checkpoint_every=1000000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "ZOO_OFFLINE": "1"})
    try:
        deadline = time.monotonic() + 120
        while not (out / "losses.csv").is_file() or len(
                (out / "losses.csv").read_text().splitlines()) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "Traceback" not in err, err
    line = next(ln for ln in err.splitlines() if "stopped by SIGTERM at step" in ln)
    step = int(line.split("at step ")[1].split(";")[0])
    assert step >= 2 and f"--out {out} --resume" in line
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == step
    assert not (out / ".zoo.lock").exists()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_sighup_during_bench_stops_it_as_ctrl_c_does(tiny_suite, tmp_path, monkeypatch, capsys,
                                                     stop_signals):
    """SIGHUP (a closed terminal) stops `zoo bench` as Ctrl-C does: the training run saves
    a checkpoint at its step, both locks are released, the rerun is named; exit 128 + 1."""
    from zoo import train
    from zoo.cli import main

    real, calls = train.check_losses, []

    def check_losses(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # in the second step
            os.kill(os.getpid(), signal.SIGHUP)
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "check_losses", check_losses)
    out = tmp_path / "bench"
    assert main(["bench", str(tiny_suite()), "--out", str(out)]) == 129
    err = capsys.readouterr().err
    assert f"stopped by SIGHUP; the finished rows are in {out / 'results.jsonl'}" in err
    assert "Run the same command again" in err and "Traceback" not in err
    [checkpoint] = out.rglob("checkpoint.pt")
    assert torch.load(checkpoint, weights_only=True)["step"] == 1
    assert not list(out.rglob(".zoo.lock"))


def test_an_error_that_quotes_a_multi_line_message_prints_one_line(tmp_path, capsys):
    """A ZooError quoting numpy's three-line refusal of a huge .npy header (or any text with
    line breaks) still prints as one line."""
    import struct

    from zoo import cli

    header = ("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 8, 8), "
              + " " * 200_000 + "}\n").encode()
    bad = tmp_path / "huge-header.npy"
    bad.write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header
                    + bytes(128))
    assert cli.main(["train", "vae-mlp", "--dataset", str(bad), "--steps", "1",
                     "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1].startswith("zoo: error: ") and "huge-header.npy" in lines[-1]
    assert "max_header_size" in lines[-1] and "Traceback" not in err
    assert not any("max_header_size" in ln for ln in lines[:-1])

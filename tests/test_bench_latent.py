"""Latent models in benchmark suites: ``autoencoder = "ID"`` trains that entry first and
hands its run to the second stage, per-model ``datasets``, the reconstruction and
first-stage columns, the report's Reconstruction section, reuse on a rerun, the second stage
retrained when its autoencoder's weights change, and the suite's errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import tiny_suite

import zoo
from zoo.bench import compare, schema
from zoo.bench.rows import fmt
from zoo.bench.runner import MARKER_FILE, read_rows, run_suite
from zoo.bench.suite import load_suite
from zoo.core import ConfigError
from zoo.models.latent import weights_sha256
from zoo.runs import load_run

HEAD = tiny_suite(
    name="latent-tiny", seed=0, datasets=["mnist", "fashion-mnist"],
    defaults={"batch_size": 16, "budget": {"steps": 3}, "train": {"ema_decay": 0.0}},
    evaluation={"n_samples": 64, "n_reference": 500, "nll_batch_size": 16, "batch_size": 64,
                "bootstrap": 20},
    models=None)  # the models are the parts below, raw TOML the error tests edit

VQ = """
[[models]]
name = "vq-transformer"        # before its autoencoder: the runner trains that one first
autoencoder = "vq-vae"
datasets = ["fashion-mnist"]
config = { dim = 32, depth = 1, heads = 2 }

[[models]]
name = "vq-vae"
datasets = ["fashion-mnist"]
config = { channels = 8, codes = 32 }
budget = { steps = AE_STEPS }
"""

KL = """
[[models]]
name = "kl-autoencoder"
datasets = ["fashion-mnist"]
config = { channels = 8 }

[[models]]
name = "latent-diffusion"
autoencoder = "kl-autoencoder"
datasets = ["fashion-mnist"]
config = { channels = 16, channel_mult = [1], timesteps = 10, mid_attention = false }
samplers = [{ sampler = "ddim", steps = 2 }, { sampler = "ddim", steps = 3 }]
"""

PIXEL = """
[[models]]
name = "vae-mlp"
datasets = ["mnist"]
config = { hidden = 16, latent_dim = 4 }
"""


def _suite(tmp_path: Path, name: str, *parts: str, ae_steps: int = 3) -> Path:
    path = tmp_path / name
    path.write_text(HEAD + "".join(parts).replace("AE_STEPS", str(ae_steps)))
    return path


class Events:
    def __init__(self):
        self.log: list[tuple[str, dict]] = []

    def __call__(self, event: str, **info) -> None:
        self.log.append((event, info))

    def models(self, event: str) -> list[str]:
        return [info["model"] for e, info in self.log if e == event]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The suite with both latent pairs and a pixel model, run once: (dir, rows, events)."""
    tmp = tmp_path_factory.mktemp("latent")
    path = _suite(tmp, "latent.toml", VQ, KL, PIXEL)
    out = tmp / "out"
    events = Events()
    run_suite(path, out, progress=False, hook=events)
    from zoo.bench.report import write_report

    write_report(out)
    return path, out, read_rows(out / "results.jsonl"), events


@pytest.mark.slow
@pytest.mark.suite
def test_each_autoencoder_is_trained_once_before_its_second_stage(run):
    _, out, rows, events = run
    assert events.models("train") == ["vae-mlp", "vq-vae", "vq-transformer",  # mnist first
                                      "kl-autoencoder", "latent-diffusion"]
    # per-model datasets: the latent pairs on fashion-mnist, the pixel model on mnist only
    assert sorted((r["dataset"], r["model"]) for r in rows) == sorted(
        [("fashion-mnist", m) for m in ("vq-transformer", "vq-vae", "kl-autoencoder",
                                        "latent-diffusion", "latent-diffusion")]
        + [("mnist", "vae-mlp")])
    for r in rows:
        assert list(r) == list(schema.COLUMNS)
    # the second stage was built over its autoencoder entry's run, and holds its weights
    for latent, ae in (("vq-transformer", "vq-vae"), ("latent-diffusion", "kl-autoencoder")):
        run_dir = out / "runs" / "fashion-mnist"
        model = load_run(run_dir / latent)
        assert model.config.autoencoder == str(run_dir / ae)
        assert model.config.autoencoder_sha256 == weights_sha256(load_run(run_dir / ae))


@pytest.mark.slow
@pytest.mark.suite
def test_rows_carry_reconstruction_and_first_stage_columns(run):
    _, _, rows, events = run
    by = {}
    for r in rows:
        by.setdefault(r["model"], []).append(r)
    # computed once per model, copied into each sampler row
    assert sorted(events.models("reconstruction")) == sorted(
        ["vq-transformer", "vq-vae", "kl-autoencoder", "latent-diffusion"])
    assert by["latent-diffusion"][0]["recon_psnr"] == by["latent-diffusion"][1]["recon_psnr"]
    recon = [k for k in schema.RECON_COLUMNS if "codebook" not in k and k != "dead_codes"]
    for latent, ae in (("vq-transformer", "vq-vae"), ("latent-diffusion", "kl-autoencoder")):
        a = by[ae][0]
        assert a["recon_n"] == 64 and 0 < a["recon_psnr"] < 100 and a["recon_fid"] > 0
        lo, hi = a["recon_psnr_ci95"]
        assert lo < a["recon_psnr"] < hi
        assert a["recon_fid_ci95"][0] <= a["recon_fid"] <= a["recon_fid_ci95"][1]
        assert a["autoencoder"] is None and a["autoencoder_train_flops"] is None
        for r in by[latent]:
            # a latent model's reconstructions are its autoencoder's
            assert {k: r[k] for k in recon} == {k: a[k] for k in recon}
            assert r["autoencoder"] == ae and r["autoencoder_params"] == a["params"]
            assert r["autoencoder_train_flops"] == a["train_flops"] > 0
            assert r["autoencoder_train_seconds"] == a["train_seconds"] > 0
            assert r["train_flops"] > 0
    vq, kl = by["vq-vae"][0], by["kl-autoencoder"][0]
    assert vq["codebook_size"] == 32 and 1 <= vq["codebook_perplexity"] <= 32
    assert 0 <= vq["dead_codes"] < 32
    assert by["vq-transformer"][0]["codebook_perplexity"] == vq["codebook_perplexity"]
    assert kl["codebook_size"] is None and kl["dead_codes"] is None  # n/a, not 0
    pixel = by["vae-mlp"][0]
    assert all(pixel[k] is None for k in (*schema.RECON_COLUMNS, *schema.AUTOENCODER_COLUMNS))


@pytest.mark.slow
@pytest.mark.suite
def test_the_report_has_a_reconstruction_section(run):
    _, out, rows, _ = run
    md = (out / "report.md").read_text()
    section = md.split("## Reconstruction", 1)[1].split("\n## ", 1)[0]
    lines = {line.split(" | ")[0].strip("| "): line for line in section.splitlines()
             if line.startswith("| ") and not line.startswith("| model")}
    assert set(lines) == {"vq-vae", "vq-transformer", "kl-autoencoder", "latent-diffusion"}
    assert "### fashion-mnist" in section and "### mnist" not in section
    cells = [c.strip() for c in lines["vq-transformer"].strip("|").split("|")]
    vq = next(r for r in rows if r["model"] == "vq-vae")
    t = next(r for r in rows if r["model"] == "vq-transformer")
    assert cells[1] == "vq-vae" and cells[2] == "64"
    assert cells[5] == f"{vq['codebook_perplexity']:.2f} / 32"
    assert cells[7] == f"{vq['train_flops']:.3g}" and cells[9] == f"{t['train_flops']:.3g}"
    assert cells[11] == f"{vq['train_flops'] + t['train_flops']:.3g}"  # both stages
    assert cells[12] == fmt(vq["train_seconds"] + t["train_seconds"])
    kl = [c.strip() for c in lines["kl-autoencoder"].strip("|").split("|")]
    assert kl[1] == "itself" and kl[5] == kl[6] == kl[9] == "n/a"
    html = (out / "report.html").read_text()
    assert 'id="reconstruction"' in html


@pytest.mark.slow
@pytest.mark.suite
def test_a_rerun_reuses_everything(run):
    path, out, rows, _ = run
    events = Events()
    run_suite(path, out, progress=False, hook=events)
    assert events.log == []
    assert read_rows(out / "results.jsonl") == rows


@pytest.mark.slow
@pytest.mark.suite
def test_only_model_trains_its_autoencoder_and_a_new_autoencoder_retrains_it(tmp_path):
    out = tmp_path / "out"
    first = Events()
    run_suite(_suite(tmp_path, "a.toml", VQ), out, only_model="vq-transformer",
              progress=False, hook=first)
    assert first.models("train") == ["vq-vae", "vq-transformer"]
    (row,) = read_rows(out / "results.jsonl")
    assert row["model"] == "vq-transformer" and row["autoencoder"] == "vq-vae"
    # the autoencoder's rows now: its run is reused, nothing retrains
    again = Events()
    run_suite(_suite(tmp_path, "a.toml", VQ), out, progress=False, hook=again)
    assert again.models("train") == [] and again.models("evaluate") == ["vq-vae"]
    assert [r["model"] for r in read_rows(out / "results.jsonl")] == ["vq-transformer",
                                                                       "vq-vae"]
    # a longer autoencoder budget: new autoencoder weights, so the unchanged second stage
    # is trained again over them (its config hash holds the autoencoder's weights hash)
    (out / "results.jsonl").unlink()
    marker = out / "runs" / "fashion-mnist" / "vq-transformer" / MARKER_FILE
    before = json.loads(marker.read_text())["config_hash"]
    second = Events()
    run_suite(_suite(tmp_path, "b.toml", VQ, ae_steps=4), out, only_model="vq-transformer",
              progress=False, hook=second)
    assert second.models("train") == ["vq-vae", "vq-transformer"]
    (row2,) = read_rows(out / "results.jsonl")
    assert row2["config_hash"] != before == row["config_hash"]
    assert row2["autoencoder_train_flops"] == pytest.approx(
        row["autoencoder_train_flops"] * 4 / 3)


def test_latent_entries_in_a_suite_load(tmp_path):
    suite = load_suite(_suite(tmp_path, "s.toml", VQ, KL, PIXEL))
    ld = suite.entry("latent-diffusion")
    assert ld.autoencoder == "kl-autoencoder" and ld.datasets == ["fashion-mnist"]
    assert suite.entry("vae-mlp").datasets == ["mnist"]
    assert [d for d, m, _ in suite.rows() if m.id == "vq-transformer"] == ["fashion-mnist"]
    assert suite.entry("vq-vae").evaluation.recon_images is None  # default: n_samples


@pytest.mark.parametrize("parts, change, key, what", [
    ((VQ,), ('autoencoder = "vq-vae"', 'autoencoder = "vqvae"'), "models[0].autoencoder",
     "no model of this suite has the id 'vqvae'"),
    ((VQ,), ('autoencoder = "vq-vae"', 'autoencoder = "vq-transformer"'),
     "models[0].autoencoder", "this entry itself"),
    ((VQ, PIXEL), ('autoencoder = "vq-vae"', 'autoencoder = "vae-mlp"'),
     "models[0].autoencoder", "is a vae-mlp, not an autoencoder"),
    ((VQ,), ('autoencoder = "vq-vae"\n', ''), "models[0].autoencoder",
     "vq-transformer works over a trained autoencoder"),
    ((VQ, PIXEL), ('config = { hidden', 'autoencoder = "vq-vae"\nconfig = { hidden'),
     "models[2].autoencoder", "vae-mlp does not work over an autoencoder"),
    ((VQ, KL), ('autoencoder = "vq-vae"', 'autoencoder = "kl-autoencoder"'),
     "models[0].config", "vq-transformer works over a vq-vae"),
    ((VQ,), ('config = { dim = 32', 'config = { autoencoder = "x", dim = 32'),
     "models[0].config.autoencoder", "give the autoencoder once"),
    ((VQ,), ('datasets = ["fashion-mnist"]\nconfig = { dim',
             'datasets = ["cifar10"]\nconfig = { dim'), "models[0].datasets[0]",
     "'cifar10' is not one of the suite's datasets"),
    ((VQ,), ('datasets = ["fashion-mnist"]\nconfig = { dim',
             'config = { dim'), "models[0].autoencoder",
     "'vq-vae' does not run on mnist"),
    ((VQ,), ('datasets = ["fashion-mnist"]\nconfig = { dim',
             'datasets = []\nconfig = { dim'), "models[0].datasets", "at least one"),
    ((VQ,), ("[evaluation]\n", "[evaluation]\nrecon_images = 1\n"),
     "evaluation.recon_images", "must be >= 2"),
])
def test_suite_errors_name_the_key(tmp_path, parts, change, key, what):
    text = (HEAD + "".join(parts)).replace("AE_STEPS", "3")
    assert change[0] in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(change[0], change[1], 1))
    with pytest.raises(ConfigError) as e:
        load_suite(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: {key}:"), msg
    assert what in msg, msg
    assert "zoo-suite-" not in msg  # the dry run's temporary autoencoder file is not named


def _row(**over) -> dict:
    row = dict.fromkeys(schema.COLUMNS)
    row.update(suite="t", dataset="fashion-mnist", model="vq-vae", family="autoencoder",
               sampler="default", sampler_options={}, recon_n=1000, recon_psnr=20.0,
               recon_psnr_ci95=[19.9, 20.1], recon_fid=5.0, recon_fid_ci95=[4.9, 5.1],
               codebook_perplexity=100.0, dead_codes=3, codebook_size=256)
    row.update(over)
    return row


def _write(d: Path, *rows: dict) -> Path:
    d.mkdir()
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_the_gate_judges_reconstruction_figures(tmp_path):
    assert schema.DIRECTION["recon_psnr"] == schema.DIRECTION["codebook_perplexity"] == 1
    assert schema.DIRECTION["recon_fid"] == schema.DIRECTION["dead_codes"] == -1
    assert {"recon_psnr", "recon_fid", "codebook_perplexity"} <= set(schema.DETERMINISTIC)
    base = _write(tmp_path / "base", _row())
    same = _write(tmp_path / "same", _row(recon_psnr=19.8, recon_psnr_ci95=[19.7, 19.9]))
    text, regressed = compare.compare_dirs(base, same)
    assert not regressed, text
    worse = _write(tmp_path / "worse", _row(recon_psnr=18.0, recon_psnr_ci95=[17.9, 18.1],
                                            codebook_perplexity=60.0, dead_codes=40))
    text, regressed = compare.compare_dirs(base, worse)
    assert regressed
    judged = {x["metric"]: x for x in compare.judge_dirs(base, worse)}
    assert judged["recon_psnr"]["verdict"] == "REGRESSED"
    assert judged["recon_psnr"]["se"] == pytest.approx(math.hypot(0.2, 0.2) / 3.92)
    assert judged["codebook_perplexity"]["verdict"] == "REGRESSED"
    assert judged["dead_codes"]["verdict"] == "worse"  # shown, not gated by default
    assert judged["recon_fid"]["verdict"] == "same"


def test_the_frame_types_the_new_columns(tmp_path):
    d = _write(tmp_path / "run", _row(), _row(model="vq-transformer",
                                              family="latent-autoregressive",
                                              autoencoder="vq-vae", autoencoder_params=1234,
                                              autoencoder_train_flops=2e12,
                                              autoencoder_train_seconds=30.0))
    df = zoo.bench.results(d)
    assert str(df["recon_n"].dtype) == str(df["dead_codes"].dtype) == "Int64"
    assert str(df["autoencoder_params"].dtype) == "Int64"
    assert df["recon_psnr_ci95.lo"].dtype == "float64"
    assert df["autoencoder_train_flops"].dtype == "float64"
    assert str(df["autoencoder"].dtype) == "string"
    assert df["autoencoder"].isna().sum() == 1  # the autoencoder's own row: n/a


def test_a_latent_models_hint_names_the_autoencoder_it_works_over():
    from zoo.bench.suite import _kind_hint

    assert _kind_hint("latent-flow-matching") == "kl-autoencoder"  # read from its class
    assert _kind_hint("latent-diffusion") == "kl-autoencoder"
    assert _kind_hint("vq-transformer") == "vq-vae"
    assert _kind_hint("no-such-model") == "autoencoder"

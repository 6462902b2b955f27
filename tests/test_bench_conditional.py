"""Conditional models in the harness: a guidance sweep as sampler variants, rows with
class accuracy and intra-class FID (with intervals), the FID-vs-class-accuracy figure."""

from __future__ import annotations

import pytest
from helpers import tiny_suite

from zoo.bench import figures
from zoo.bench.report import write_report
from zoo.bench.runner import read_rows, run_suite

TEXT = tiny_suite(
    name="cond", seed=0,
    defaults={"batch_size": 32, "budget": {"steps": 4}, "train": {"ema_decay": 0.0}},
    evaluation={"n_samples": 100, "metrics": ["fid", "kid", "class_accuracy", "intra_fid"],
                "n_reference": 1000, "nll_images": 0, "batch_size": 100, "grid_images": 16,
                "bootstrap": 50},
    models=[
        {"name": "ddpm",
         "samplers": [{"sampler": "ddim", "steps": 4, "guidance": g} for g in (0.0, 1.0, 3.0)],
         "config": {"conditional": True, "timesteps": 8, "channels": 8, "channel_mult": [1, 2],
                    "mid_attention": False}},
        {"name": "gan-mlp",
         "config": {"conditional": True, "g_hidden": [32], "d_hidden": [32], "latent_dim": 8}},
    ])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cond")
    (out / "suite-in.toml").write_text(TEXT)
    run_suite(out / "suite-in.toml", out / "out", progress=False)
    return out / "out"


@pytest.mark.slow
@pytest.mark.suite
def test_a_guidance_sweep_gives_a_row_per_value_with_class_metrics(run):
    rows = read_rows(run / "results.jsonl")
    ddpm = [r for r in rows if r["model"] == "ddpm"]
    assert sorted(r["sampler_options"].get("guidance", 1.0) for r in ddpm) == [0.0, 1.0, 3.0]
    for r in rows:
        lo, hi = r["class_accuracy_ci95"]
        assert 0 <= lo <= r["class_accuracy"] <= hi <= 1
        assert r["intra_fid"] > 0 and r["n_samples"] == 100


@pytest.mark.slow
@pytest.mark.suite
def test_the_report_draws_fid_against_class_accuracy(run, tmp_path):
    write_report(run)
    assert (run / "figures" / "fid_vs_class_accuracy_mnist.png").is_file()
    assert "FID vs class accuracy" in (run / "report.md").read_text()
    rows = [{k: v for k, v in r.items() if k != "class_accuracy"}
            for r in read_rows(run / "results.jsonl")]
    assert figures.fid_vs_class_accuracy("mnist", rows, tmp_path / "x.png") is None


@pytest.mark.slow
@pytest.mark.suite
def test_the_figure_is_drawn_again_from_the_rows(run, tmp_path):
    made = figures.write_figures(read_rows(run / "results.jsonl"), run, tmp_path)
    assert [t for t, _ in made if "class accuracy" in t] == ["mnist: FID vs class accuracy"]


def test_the_shipped_conditional_suite_loads():

    from zoo.bench.suite import load_suite

    suite = load_suite("conditional")
    assert all(m.config.get("conditional") for m in suite.models)
    assert {m.family for m in suite.models} == {"vae", "gan", "autoregressive", "diffusion"}

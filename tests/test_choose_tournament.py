"""zoo choose end to end on tiny presets under a FLOPs budget (steps independent of the
machine's speed): rounds, a planted loser, seeds, the report, resuming, the CLI's errors."""

import json

import pytest
from helpers import assert_one_line_error, zoo_main

from zoo.choose import decision, presets
from zoo.choose.plan import FINAL_EXTRA_SECONDS, Probe
from zoo.choose.tournament import STATE_FILE, Options, Tournament

TINY_VAE = presets.Preset("vae-mlp", "tiny", {"hidden": 32, "latent_dim": 4}, 32, {}, 5)
TINY_GAN = presets.Preset("gan-mlp", "tiny", {"g_hidden": [32], "d_hidden": [32],
                                             "latent_dim": 8}, 32, {}, 5)
TINY_VAE_WIDE = presets.Preset("vae-mlp", "wide", {"hidden": 64, "latent_dim": 4}, 32, {},
                               10 ** 9)  # never gets its steps: the small one is picked
TINY_PRESETS = {"vae-mlp": (TINY_VAE, TINY_VAE_WIDE), "gan-mlp": (TINY_GAN,)}


@pytest.fixture(scope="module")
def tournament(tmp_path_factory):
    """Two tiny families and a planted loser (the VAE at a learning rate 1000x too high)
    at 1.5e9 FLOPs per finalist, 2 seeds: three candidates, two rounds."""
    mp = pytest.MonkeyPatch()
    mp.setattr(presets, "PRESETS", TINY_PRESETS)
    out = tmp_path_factory.mktemp("choose") / "out"
    opts = Options(data="mnist", budget="1.5e9", out=out, seeds=2, n_round=60, n_final=60,
                   candidates=["vae-mlp:lr=1.0"], progress=False,
                   command="zoo choose mnist --budget 1.5e9")
    t = Tournament(opts)
    state = t.run()
    yield t, state, opts, mp
    mp.undo()


def test_rounds_and_finalists(tournament):
    t, state, _, _ = tournament
    p = state["plan"]
    assert [list(r) for r in p["schedule"]] == [[0.5, 3], [1.0, 2]]
    assert set(p["candidates"]) == {"vae-mlp", "gan-mlp", "vae-mlp-custom1"}
    assert p["candidates"]["vae-mlp"]["name"] == "tiny"  # the wide one never gets its steps
    # equal FLOPs: steps double from round to round; the finalists trained 2 seeds each
    for steps in p["steps"].values():
        assert steps[1] == pytest.approx(2 * steps[0], abs=1)
    assert len(state["alive"]) == 2 and len(state["alive"][1]) == 2
    for c in state["alive"][1]:
        assert {f"{c}/0/1", f"{c}/1/1"} <= set(state["evals"])
        assert (t.out / "runs" / c / "seed1" / "run.json").is_file()  # an ordinary run


def test_the_planted_loser_is_stopped_in_the_first_round(tournament):
    _, state, _, _ = tournament
    assert "vae-mlp-custom1" not in state["alive"][1]
    assert state["recommendation"]["winner"] != "vae-mlp-custom1"


def test_the_report_leads_with_the_recommendation(tournament):
    t, state, _, _ = tournament
    md = (t.out / "report.md").read_text()
    first = md.split("\n## ")[0]
    winner = state["recommendation"]["winner"]
    assert f"use {winner}" in first and "probability it is best" in first
    assert "of 2 seeds" in first and "runner-up" in first
    assert "Sampling speed" in first and "Training speed" in first
    assert "zoo choose mnist --budget 1.5e9" in md
    html = (t.out / "report.html").read_text()
    assert "probability it is best" in html and "<img" in html
    q = decision.quality(state)
    assert sum(c["prob_best"] for c in q["candidates"].values()) == pytest.approx(1)


def test_a_rerun_resumes_without_redoing_work(tournament):
    t, state, opts, _ = tournament
    before = json.loads((t.out / STATE_FILE).read_text())
    again = Tournament(opts).run()
    assert again["evals"] == before["evals"] and again["trained"] == before["trained"]


def test_other_arguments_on_the_same_directory_are_refused(tournament):
    t, _, opts, _ = tournament
    with pytest.raises(Exception, match="other arguments"):
        Tournament(Options(**{**opts.__dict__, "seeds": 3}))


def test_a_replan_moves_the_remaining_rounds_to_the_time_left(tmp_path, monkeypatch):
    """Under a time budget each later round is planned from the time left and the speeds
    measured so far."""
    monkeypatch.setattr(presets, "PRESETS", TINY_PRESETS)
    t = Tournament(Options(data="mnist", budget="10m", out=tmp_path / "o", seeds=3))
    t.state["plan"] = {"schedule": [[0.5, 3], [1.0, 2]], "candidates": {
        c: {"probe": {"first_step_seconds": 0.0}} for c in "ab"}, "steps": {"a": [100, 200],
                                                                          "b": [50, 100]}}
    t.state["alive"] = [["a", "b", "c"], ["a", "b"]]
    t.state["train_summary"] = {"a/0": {"steps": 100, "seconds": 10.0},
                                "b/0": {"steps": 50, "seconds": 10.0}}
    t.state["evals"] = {"a/0/0": {"seconds": 1.0, "n": 100}}
    t.clock.before = 300.0  # half the budget is spent
    t._replan(1)
    f = t.state["replans"]["1"]["final_seconds"]
    left = 600 * 0.94 - t.clock.elapsed()
    # two finalists: 0.5 more of the final length each, and two extra seeds each
    evals = 2 * 3 * 0.01 * 1000 + 2 * FINAL_EXTRA_SECONDS
    assert f * (2 * 0.5 + 2 * 2) + evals + 5 == pytest.approx(left, rel=1e-3)
    assert t.state["plan"]["steps"]["a"][1] == int(f / 0.1)
    assert t.state["plan"]["steps"]["b"][1] == int(f / 0.2)


def test_probe_of_a_diverging_candidate_times_the_steps_it_made():
    import torch

    from zoo import data as zdata
    from zoo.choose.probe import probe

    ds = zdata.spec("mnist")
    images, labels = zdata.load(ds, "test")
    p = probe(TINY_VAE.with_config(lr=1e6), ds, images[:256], labels[:256],
              torch.device("cpu"))
    assert isinstance(p, Probe) and p.step_seconds > 0


@pytest.mark.parametrize("args, needle", [
    (["mnist", "--budget", "soon"], "--budget must be a wall time"),
    (["mnist", "--budget", "30s"], "at least a minute"),
    (["mnist", "--budget", "6e12", "--families", "nope"], "unknown model 'nope'"),
    (["mnist", "--budget", "6e12", "--candidate", "vae-conv:nope=1"], "unknown option 'nope'"),
    (["mnist", "--budget", "6e12", "--seeds", "0"], "--seeds must be >= 1"),
])
def test_cli_errors_are_one_line(tmp_path, args, needle):
    proc = zoo_main("choose", *args, "--out", str(tmp_path / "o"), check=False)
    assert_one_line_error(proc, needle)


def test_a_folder_without_an_extractor_gets_one_made_first(tmp_path, monkeypatch):
    """Unlabelled RGB images with no extractor: the tournament makes a self-supervised one
    (tiny here), caches it and scores with it."""
    import functools

    import numpy as np
    from PIL import Image

    from zoo.metrics import features, ssl

    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ZOO_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(ssl, "SSLOptions", functools.partial(
        ssl.SSLOptions, steps=3, batch_size=8, channels=(4, 8), feature_dim=8, threads=1))
    monkeypatch.setattr(presets, "PRESETS", {"vae-mlp": (TINY_VAE,)})
    folder = tmp_path / "crops"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(120):
        im = np.full((12, 12, 3), rng.integers(0, 80, 3), dtype=np.uint8)
        y, x = rng.integers(0, 6, 2)
        im[y:y + 6, x:x + 6] = rng.integers(100, 256, 3)
        Image.fromarray(im).save(folder / f"{i:03d}.png")
    state = Tournament(Options(data=str(folder), budget="1e9", out=tmp_path / "o", seeds=1,
                               n_round=50, n_final=50, progress=False)).run()
    made = features.cached_extractor(str(folder))
    assert made is not None and state["extractor"]["extractor"] == made.stem
    assert state["recommendation"]["winner"] == "vae-mlp"

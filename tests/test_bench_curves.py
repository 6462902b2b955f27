"""Equal training budgets and quality along the way: a FLOPs budget becomes steps, the
curve's points are measured as training passes them (staged training gives the weights of
an unstaged run, bit for bit), a killed run resumes without repeating a point, and suites
refuse bad curve settings."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import tiny_model, tiny_suite

from zoo.bench.runner import CURVE_FILE, read_rows, run_suite
from zoo.bench.suite import load_suite
from zoo.core import ConfigError


class Stop(Exception):
    pass


def write(tmp_path: Path, curve: list | None = None, name: str = "s.toml",
          flops: float = 1.2e10) -> Path:
    """The curve suite, with ``curve`` [0.25, 0.5] unless given."""
    path = tmp_path / name
    path.write_text(tiny_suite(
        name="curve", seed=0,
        defaults={"batch_size": 32, "budget": {"flops": flops},
                  "train": {"ema_decay": 0.0, "log_every": 50}},
        evaluation={"n_samples": 100, "n_reference": 500, "nll_images": 32,
                    "nll_batch_size": 32, "batch_size": 100, "grid_images": 0, "bootstrap": 50,
                    "curve": [0.25, 0.5] if curve is None else curve, "curve_n_samples": 60,
                    "curve_nll_images": 16},
        models=[tiny_model(budget=None, batch_size=None, train=None),
                {"name": "gan-mlp", "config": {"g_hidden": [32], "d_hidden": [32],
                                               "latent_dim": 8}}]))
    return path


def weights(run: Path) -> dict:
    state = torch.load(run / "model.pt", weights_only=False)

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            elif torch.is_tensor(v):
                yield prefix + k, v
    return dict(flat(state))


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("curve")
    out = tmp / "out"
    run_suite(write(tmp), out, progress=False)
    return out


@pytest.mark.slow
@pytest.mark.suite
def test_a_flops_budget_gives_every_model_the_same_compute(staged):
    rows = {r["model"]: r for r in read_rows(staged / "results.jsonl")}
    for r in rows.values():
        per_step = r["train_flops_per_image"] * 32
        assert r["train_steps"] == math.ceil(1.2e10 / per_step)
        assert r["train_flops"] == pytest.approx(r["train_steps"] * per_step)
        assert 1.2e10 <= r["train_flops"] < 1.2e10 + per_step  # within one step of it
    # the models differ in FLOPs per image, so in steps
    assert rows["vae-mlp"]["train_steps"] != rows["gan-mlp"]["train_steps"]


@pytest.mark.slow
@pytest.mark.suite
def test_the_curve_has_a_point_per_fraction_with_intervals(staged):
    points = read_rows(staged / CURVE_FILE)
    assert [(p["model"], p["fraction"]) for p in points] == [
        ("vae-mlp", 0.25), ("vae-mlp", 0.5), ("vae-mlp", 1.0),
        ("gan-mlp", 0.25), ("gan-mlp", 0.5), ("gan-mlp", 1.0)]
    rows = {r["model"]: r for r in read_rows(staged / "results.jsonl")}
    for p in points:
        final = rows[p["model"]]
        assert p["budget"] == {"steps": None, "seconds": None, "flops": 1.2e10}
        assert p["n_samples"] == 60 and p["extractor"] == "mnist-classifier"
        assert p["train_steps"] == math.ceil(p["fraction"] * final["train_steps"] - 1e-9)
        assert p["train_flops"] == pytest.approx(p["train_steps"] * 32
                                                 * final["train_flops_per_image"])
        for key in ("fid", "kid"):
            lo, hi = p[f"{key}_ci95"]
            assert lo <= p[key] <= hi
        assert (p["nll_bpd"] is None) == (p["model"] == "gan-mlp")
        if p["nll_bpd"] is not None:
            assert p["nll_images"] == 16 and p["nll_kind"] == "bound"
    vae = [p for p in points if p["model"] == "vae-mlp"]
    assert vae[-1]["kid"] < vae[0]["kid"]  # it learns: the last point beats the first


@pytest.mark.slow
@pytest.mark.suite
def test_staged_training_gives_the_weights_of_an_unstaged_run(staged, tmp_path):
    out = tmp_path / "plain"
    run_suite(write(tmp_path, curve=[]), out, progress=False)
    assert not (out / CURVE_FILE).exists() or not read_rows(out / CURVE_FILE)
    for model in ("vae-mlp", "gan-mlp"):
        a = weights(staged / "runs" / "mnist" / model)
        b = weights(out / "runs" / "mnist" / model)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.suite
def test_a_killed_run_resumes_without_repeating_a_point(staged, tmp_path):
    out = tmp_path / "killed"
    suite = write(tmp_path)
    seen = []

    def kill(event, **info):
        if event == "curve":
            seen.append((info["model"], info["fraction"]))
            if len(seen) == 2:
                raise Stop

    with pytest.raises(Stop):
        run_suite(suite, out, progress=False, hook=kill)
    events = []
    run_suite(suite, out, progress=False, hook=lambda e, **i: events.append((e, i)))
    assert ("resume", {"dataset": "mnist", "model": "vae-mlp", "seed": 0}) in events
    points = read_rows(out / CURVE_FILE)
    keys = [(p["model"], p["fraction"]) for p in points]
    assert len(keys) == len(set(keys)) == 6
    want = {(p["model"], p["fraction"]): p["kid"] for p in read_rows(staged / CURVE_FILE)}
    assert {(p["model"], p["fraction"]): p["kid"] for p in points} == want


@pytest.mark.parametrize("curve, message", [
    ([0.5, 1.5], "fractions of the budget in (0, 1]"),
    ([0.5, 0.5], "fractions of the budget in (0, 1]"),
    (["half"], "items must be float"),
])
def test_bad_curves_are_refused_naming_the_key(tmp_path, curve, message):
    with pytest.raises(ConfigError, match=r"evaluation\.curve.*") as e:
        load_suite(write(tmp_path, curve=curve))
    assert message in str(e.value)


def test_a_negative_flops_budget_is_refused(tmp_path):
    path = write(tmp_path, flops=-1)
    with pytest.raises(ConfigError, match=r"defaults\.budget\.flops.*> 0"):
        load_suite(path)

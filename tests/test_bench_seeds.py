"""Figures over training seeds (``zoo.bench.seeds``): the combined interval, paired
differences, the probability of being best (calibrated on synthetic scores whose truth is
known), the aggregate row, ``seeds = K`` in suites, the runner's rows and the gate."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, tiny_model, tiny_suite, zoo_main

from zoo.bench import schema, seeds
from zoo.bench.compare import compare_dirs, judge_dirs
from zoo.bench.runner import read_rows, run_suite
from zoo.bench.suite import load_suite
from zoo.core import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _draws(x, sd, b=400, seed=0):
    """Per-seed bootstrap draws: ``b`` normal draws of sd ``sd`` around each figure."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=float)
    return x[:, None] + sd * rng.standard_normal((len(x), b))


# -- the combined interval -----------------------------------------------------------------------

def test_one_seed_is_its_own_sampling_interval():
    draws = _draws([10.0], 1.0)
    m, reps = seeds.combine([10.0], draws)
    assert m == 10.0
    assert np.std(reps) == pytest.approx(np.std(draws), rel=0.1)


def test_sampling_noise_alone_gives_the_sampling_interval_of_the_mean():
    """Seeds that agree up to their sampling noise: no training level is added, so the
    interval is the mean's sampling interval, about 1/sqrt(K) of one seed's."""
    k = 5
    x = 10 + 0.01 * np.arange(k)  # far less spread than the sampling sd of 1
    m, lo, hi = seeds.interval(x, _draws(x, 1.0))
    assert lo < m < hi
    assert hi - lo == pytest.approx(2 * 1.96 / np.sqrt(k), rel=0.2)


def test_training_spread_gives_the_t_interval_over_seeds():
    """Seeds far apart with little sampling noise: about the t interval m +- t s / sqrt(K)
    (the t quantile, not the normal's: three seeds estimate their spread poorly)."""
    x = np.array([10.0, 12.0, 14.0])
    m, lo, hi = seeds.interval(x, _draws(x, 0.01, b=4000))
    half = 4.303 * np.std(x, ddof=1) / np.sqrt(3)  # t(2) 97.5%
    assert m == 12.0
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.2)


def test_combine_refuses_mismatched_shapes():
    with pytest.raises(ConfigError, match="K figures and K x B draws"):
        seeds.combine([1.0, 2.0], np.zeros((3, 10)))


def _calibration():
    spec = importlib.util.spec_from_file_location(
        "prob_best_calibration", ROOT / "benchmarks" / "prob_best_calibration.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prob_best_is_calibrated_and_the_interval_covers_on_synthetic_scores():
    """Candidates with known true means, training-seed spread and sampling noise: the
    stated probability of being best matches how often that candidate is truly best
    (expected calibration error under 4 points), and the combined interval covers the
    true mean at least 90% of the time."""
    cal = _calibration()
    stated, truth, covered = cal.simulate(300, k=3, b=200, sb=0.5, sw=0.5, seed=1)
    table, ece = cal.reliability(stated, truth)
    assert ece < 0.04, table
    assert covered.mean() >= 0.9
    assert np.allclose(stated.sum(1), 1.0)


# -- prob_best and paired differences -------------------------------------------------------------

def test_prob_best_counts_the_best_of_each_joint_replicate():
    reps = {"a": [1.0, 1.0, 3.0, 2.0], "b": [2.0, 1.0, 1.0, 3.0], "c": [3.0, 5.0, 5.0, 5.0]}
    p = seeds.prob_best(reps, lower_is_better=True)
    assert p == {"a": pytest.approx(0.625), "b": pytest.approx(0.375), "c": 0.0}
    high = seeds.prob_best(reps, lower_is_better=False)
    assert high["c"] == 1.0 and sum(high.values()) == pytest.approx(1.0)


def _rows(model, x, draws, metric="fid"):
    return [{"model": model, "train_seed": i, metric: float(v),
             "bootstrap_replicates": {metric: list(d)}} for i, (v, d) in
            enumerate(zip(x, draws, strict=True))]


def test_paired_difference_cancels_the_sampling_noise_the_candidates_share():
    """Every run measured on the same sampling noise and bootstrap resamples (common
    random numbers), so their draws move together: the difference's interval is much
    tighter than either candidate's own, and it is the same on every call."""
    noise = 2.0 * np.random.default_rng(0).standard_normal((1, 400))
    xa, xb = np.array([20.0, 20.1, 19.9]), np.array([21.0, 21.1, 20.9])
    a = _rows("a", xa, xa[:, None] + noise)
    b = _rows("b", xb, xb[:, None] + noise)
    d, lo, hi = seeds.paired_difference(a, b, "fid")
    assert d == pytest.approx(-1.0)
    _, alo, ahi = seeds.interval(xa, xa[:, None] + noise)
    assert lo < d < hi and hi < 0  # A is better, surely
    assert hi - lo < 0.5 * (ahi - alo)
    assert seeds.paired_difference(a, b, "fid") == (d, lo, hi)


def test_replicates_are_read_from_the_rows_sidecar(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"fid": [1.0, 2.0, 3.0]}))
    reps = seeds.row_replicates({"replicates": "r.json"}, tmp_path)
    assert reps["fid"].tolist() == [1.0, 2.0, 3.0]
    assert seeds.row_replicates({"replicates": None}, tmp_path) == {}
    (tmp_path / "bad.json").write_text(json.dumps({"fid": "many"}))
    with pytest.raises(ConfigError, match="not a replicates file"):
        seeds.row_replicates({"replicates": "bad.json"}, tmp_path)
    with pytest.raises(ConfigError, match="no fid with bootstrap draws"):
        seeds.replicates_of([{"model": "m", "fid": 1.0}], "fid", tmp_path)


# -- the aggregate row ----------------------------------------------------------------------------

def test_aggregate_row_means_the_seeds_and_widens_the_interval():
    x = np.array([30.0, 34.0, 38.0])
    draws = _draws(x, 0.5)
    rows = []
    for i, v in enumerate(x):
        row = dict.fromkeys(schema.COLUMNS)
        row.update(suite="s", dataset="mnist", model="m", sampler="default", sampler_options={},
                   train_seed=i, fid=float(v), fid_ci95=[v - 1.0, v + 1.0], train_steps=10 + i,
                   nll_bpd=1.0 + i / 10, nll_stderr=0.01, seed=0,
                   sample_images_per_s={"1": 10.0 * (i + 1), "64": 5.0},
                   versions={"torch": "2.5"})
        rows.append(row)
    row, draws_out = seeds.aggregate(rows, [{"fid": d} for d in draws])
    assert row["train_seed"] is None and row["train_seeds"] == 3
    assert row["fid"] == pytest.approx(34.0) and row["train_steps"] == 11
    lo, hi = row["fid_ci95"]
    assert lo < 34.0 - 2 < 34.0 + 2 < hi  # wider than any one seed's sampling interval
    assert len(draws_out["fid"]) == 400
    assert row["nll_bpd"] == pytest.approx(1.1) and row["nll_stderr"] > 0.05
    assert row["sample_images_per_s"] == {"1": pytest.approx(20.0), "64": 5.0}
    assert row["versions"] == {"torch": "2.5"}
    assert schema.row_key(row) == schema.row_key({**rows[0], "train_seed": None})


def test_aggregate_without_bootstrap_draws_is_the_t_interval_over_seeds():
    rows = [{"suite": "s", "dataset": "d", "model": "m", "sampler": "default",
             "sampler_options": {}, "train_seed": i, "fid": v, "fid_ci95": None}
            for i, v in enumerate([10.0, 12.0, 14.0])]
    row, draws = seeds.aggregate(rows, [{}, {}, {}])
    half = 4.303 * 2.0 / np.sqrt(3)  # t(2) 97.5% x sd / sqrt(K)
    assert draws == {} and row["fid"] == 12.0
    assert (row["fid_ci95"][1] - row["fid_ci95"][0]) / 2 == pytest.approx(half, rel=0.25)


# -- suites ---------------------------------------------------------------------------------------

def test_suite_seeds_top_level_and_per_model(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(tiny_suite(seeds=3, models=[tiny_model(), tiny_model(id="one", seeds=1)]))
    suite = load_suite(path)
    assert [m.seeds for m in suite.models] == [3, 1]
    assert suite.models[0].train_seeds(suite.seed) == [3, 4, 5]
    path.write_text(tiny_suite())
    assert load_suite(path).models[0].seeds == 1


@pytest.mark.parametrize("where, value, what", [
    ("top", 0, "seeds: must be a whole number of training seeds from 1 to 1000, got int 0"),
    ("top", -2, "got int -2"),
    ("top", 2.5, "got float 2.5"),
    ("top", True, "got bool True"),
    ("top", "3", "got str '3'"),
    ("model", 10**6, "models[0].seeds: must be a whole number"),
])
def test_suite_seeds_errors_name_the_key(tmp_path, where, value, what):
    path = tmp_path / "s.toml"
    text = (tiny_suite(seeds=value) if where == "top"
            else tiny_suite(models=[tiny_model(seeds=value)]))
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(what)) as e:
        load_suite(path)
    assert "\n" not in str(e.value)


def test_suite_seeds_past_the_seed_range_is_refused(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(tiny_suite(seed=2**64 - 2, seeds=3))
    with pytest.raises(ConfigError, match=r"seeds: the last training seed"):
        load_suite(path)


def test_bad_seeds_through_the_cli_is_one_line(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(tiny_suite(seeds=0))
    proc = zoo_main("bench", str(path), "--out", str(tmp_path / "out"), check=False)
    assert_one_line_error(proc, "seeds: must be a whole number")


# -- the runner and the gate --------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    """The tiny suite with seeds = 2, run once: (suite, out dir, rows, events)."""
    tmp = tmp_path_factory.mktemp("seeds")
    path = tmp / "suite.toml"
    path.write_text(tiny_suite(seeds=2))
    events = []
    run_suite(path, tmp / "out", progress=False, hook=lambda e, **i: events.append((e, i)))
    return path, tmp / "out", read_rows(tmp / "out" / "results.jsonl"), events


def test_runner_trains_each_seed_and_writes_their_aggregate(two_seeds):
    _, out, rows, events = two_seeds
    assert [(r["train_seed"], r["train_seeds"]) for r in rows] == [(3, None), (4, None),
                                                                   (None, 2)]
    assert [i["seed"] for e, i in events if e == "train"] == [3, 4]
    one, two, agg = rows
    assert one["config_hash"] != two["config_hash"]  # the training seed is in the hash
    assert (out / "runs" / "mnist" / "vae-mlp@seed3" / "model.pt").is_file()
    assert (out / "runs" / "mnist" / "vae-mlp@seed4" / "model.pt").is_file()
    assert one["seed"] == two["seed"] == 3  # both measured with the suite's sampling seed
    for r in rows:
        assert list(r) == list(schema.COLUMNS)
        assert len(seeds.row_replicates(r, out)["fid"]) == 200
    assert agg["fid"] == pytest.approx((one["fid"] + two["fid"]) / 2)
    assert agg["fid_ci95"][0] <= agg["fid"] <= agg["fid_ci95"][1]
    assert agg["replicates"] == "replicates/mnist/vae-mlp/default.json"


def test_runner_resumes_seeds_without_training_again(two_seeds):
    path, out, rows, _ = two_seeds
    events = []
    run_suite(path, out, progress=False, hook=lambda e, **i: events.append((e, i)))
    assert not [e for e, _ in events if e in ("train", "evaluate", "aggregate")]
    assert len(read_rows(out / "results.jsonl")) == len(rows)


def test_compare_judges_the_aggregate_by_its_combined_interval(two_seeds, tmp_path):
    """A seed-only pair (training seeds 3, 4 against 13, 14): the per-seed rows do not join
    (and are not missing): the gate compares the aggregates, with their intervals."""
    _, out, rows, _ = two_seeds
    other = tmp_path / "other"
    other.mkdir()
    shifted = [{**r, "train_seed": None if r["train_seed"] is None else r["train_seed"] + 10}
               for r in rows]
    (other / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in shifted))
    text, regressed = compare_dirs(out, other)
    assert "BASE only" not in text and not regressed
    assert "vae-mlp (2 training seeds)" in text
    (fid,) = [j for j in judge_dirs(out, other) if j["metric"] == "fid"]
    agg = rows[-1]
    assert fid["ci_base"] == tuple(agg["fid_ci95"])

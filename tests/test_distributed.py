"""DDP on the CPU: two gloo processes (torchrun) against one process.

torchrun runs ``tests/ddp_worker.py``; the single-process twins run here, from the same
settings. Two ranks with a global batch of B must end with the weights one process gets
from the same B images in the same order (float tolerance), for every family; a run
resumed under DDP must continue exactly; sharded evaluation must equal one process; and a
rank that fails, or goes silent, must bring the job down instead of hanging it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ddp_worker as worker
import pytest
import torch
from helpers import tiny_model, tiny_suite

import zoo
from zoo import data, metrics, runs
from zoo import distributed as zdist
from zoo import train as ztrain
from zoo.core import ConfigError
from zoo.logs import SAMPLES_DIR

pytestmark = pytest.mark.ddp

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_TIMEOUT = 240  # seconds; far beyond a healthy run, so a hang fails the test


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def torchrun(*args: str, **env) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m torch.distributed.run --standalone --nproc_per_node=2 ARGS`` (a free port
    on 127.0.0.1), with this checkout's zoo; returns the process and its wall time."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node=2", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(**env), capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT)
    return proc, time.perf_counter() - t0


def run_worker(mode: str, out: Path, **env) -> tuple[subprocess.CompletedProcess, float]:
    out.mkdir(parents=True, exist_ok=True)
    return torchrun(str(ROOT / "tests" / "ddp_worker.py"), mode, str(out), **env)


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def _checkpoint(run: Path) -> dict:
    return torch.load(run / ztrain.CHECKPOINT_FILE, weights_only=True)


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(((a[k].double() - b[k].double()).abs().max().item() for k in a
                if a[k].is_floating_point()), default=0.0)


def _losses(run: Path) -> list[dict]:
    with (run / ztrain.LOSSES_FILE).open() as f:
        return list(csv.DictReader(f))


# -- two ranks train like one process ----------------------------------------------------------


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp-train")
    proc, _ = run_worker("train", out)
    _ok(proc)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", list(worker.CASES))
def test_two_ranks_equal_one_process(case, ddp_runs, tmp_path):
    ddp = ddp_runs / case
    worker.train(case, tmp_path / case)
    a, b = _checkpoint(ddp), _checkpoint(tmp_path / case)
    assert a["step"] == b["step"] == worker.STEPS
    ddp_w, one_w = a["model"]["state_dict"], b["model"]["state_dict"]
    init = worker.make_model(case).state_dict()
    tol = 2e-5
    assert _max_diff(one_w, init) > 20 * tol, "the weights did not move: nothing to compare"
    assert _max_diff(ddp_w, one_w) < tol, f"{case}: DDP weights differ from one process"
    assert _max_diff(a["ema"]["shadow"], b["ema"]["shadow"]) < tol
    assert a["rng_noise"].equal(b["rng_noise"]), "the ranks drew other batch noise"
    # both ranks hold the same weights, and rank 0 alone wrote the run directory
    r0, r1 = torch.load(ddp / "rank0.pt"), torch.load(ddp / "rank1.pt")
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    assert json.loads((ddp / ztrain.RUN_FILE).read_text())["world_size"] == 2
    assert {p.name for p in ddp.iterdir()} == {
        ztrain.RUN_FILE, ztrain.CHECKPOINT_FILE, ztrain.MODEL_FILE, ztrain.LOSSES_FILE,
        runs.CARD_FILE, runs.SAMPLES_FILE, SAMPLES_DIR, "rank0.pt", "rank1.pt"}
    # losses.csv holds the mean over ranks: the loss of the global batch
    rows_ddp, rows_one = _losses(ddp), _losses(tmp_path / case)
    assert [r["step"] for r in rows_ddp] == [r["step"] for r in rows_one]
    for rd, ro in zip(rows_ddp, rows_one, strict=True):
        for key in ro:
            if key not in ("step", "seconds", "images_per_s"):
                assert float(rd[key]) == pytest.approx(float(ro[key]), rel=1e-4, abs=1e-5)
    # the model file for sampling (EMA weights) agrees too
    assert _max_diff(zoo.load_run(ddp).state_dict(),
                     zoo.load_run(tmp_path / case).state_dict()) < tol


@pytest.mark.slow
@pytest.mark.parametrize("case", ["ddpm", "gan-wgan-gp"])
def test_resume_under_ddp_continues_identically(case, ddp_runs):
    full, resumed = _checkpoint(ddp_runs / case), _checkpoint(ddp_runs / f"{case}-resumed")
    assert resumed["step"] == full["step"] == worker.STEPS
    for key in full["model"]["state_dict"]:
        assert torch.equal(full["model"]["state_dict"][key], resumed["model"]["state_dict"][key])
    for key in full["ema"]["shadow"]:
        assert torch.equal(full["ema"]["shadow"][key], resumed["ema"]["shadow"][key])
    assert [r["step"] for r in _losses(ddp_runs / f"{case}-resumed")] == ["1", "2", "3", "4"]


@pytest.mark.slow
def test_a_ddp_run_resumes_on_one_process(ddp_runs, tmp_path):
    # the data order and the batch noise are global, so the number of processes may change
    half = tmp_path / "half"
    shutil.copytree(ddp_runs / "vae-half", half)
    assert _checkpoint(half)["step"] == worker.STEPS // 2
    worker.resume(half)
    one = worker.train("vae", tmp_path / "one")
    resumed = _checkpoint(half)["model"]["state_dict"]
    assert _max_diff(resumed, {k: v.cpu() for k, v in one.model.state_dict().items()}) < 2e-5
    assert [r["step"] for r in _losses(half)] == ["1", "2", "3", "4"]


# -- sharded evaluation --------------------------------------------------------------------


@pytest.mark.slow
def test_sharded_evaluation_equals_one_process(tmp_path):
    ddp, one = tmp_path / "ddp", tmp_path / "one"
    proc, _ = run_worker("eval", ddp)
    _ok(proc)
    one.mkdir()
    worker.sharded_eval(one)
    samples = torch.load(one / "samples-rank0.pt")
    assert samples.shape[0] == worker.EVAL_N
    # every rank gathered all samples, in the order one process draws them
    assert torch.equal(torch.load(ddp / "samples-rank0.pt"), samples)
    assert torch.equal(torch.load(ddp / "samples-rank1.pt"), samples)
    r_one = json.loads((one / "eval-rank0.json").read_text())
    for rank in (0, 1):
        r_ddp = json.loads((ddp / f"eval-rank{rank}.json").read_text())
        assert r_ddp["n_generated"] == r_one["n_generated"] == worker.EVAL_N
        assert r_ddp["fid"] == pytest.approx(r_one["fid"], rel=1e-9)
        assert r_ddp["kid"] == pytest.approx(r_one["kid"], rel=1e-9)
    # streaming FID during training: slices sampled on both ranks, statistics synced; one
    # process computes it from the same (EMA) weights, those of model.pt (no BatchNorm)
    (row_ddp,) = list(csv.DictReader((ddp / "stream" / ztrain.EVAL_FILE).open()))
    assert row_ddp["n"] == str(worker.EVAL_N)
    stream = metrics.StreamingFID("mnist", extractor="mnist-classifier", announce=False)
    model = zoo.load_run(ddp / "stream")
    for _, images in metrics.sample_slices(model, worker.EVAL_N, worker.TRAIN["batch_size"],
                                           worker.TRAIN["seed"]):
        stream.update(images)
    assert float(row_ddp["fid"]) == pytest.approx(stream.compute(), rel=1e-5)
    assert stream.compute() > 1.0


def test_sample_slices_do_not_depend_on_how_they_are_split():
    model = worker.eval_model()
    whole = metrics.draw_samples(model, 40, batch_size=16, seed=2)
    parts = dict(metrics.sample_slices(model, 40, batch_size=16, seed=2))
    assert sorted(parts) == [0, 1, 2] and [len(v) for v in parts.values()] == [16, 16, 8]
    assert torch.equal(torch.cat([parts[i] for i in range(3)]), whole)
    assert not torch.equal(parts[0][:8], parts[2])  # slices have their own generators
    assert not torch.equal(whole, metrics.draw_samples(model, 40, batch_size=16, seed=3))


# -- failures bring the job down -------------------------------------------------------------


@pytest.mark.slow
def test_a_failing_rank_brings_the_job_down(tmp_path):
    proc, seconds = run_worker("fail", tmp_path)
    assert proc.returncode != 0
    assert "rank 1 fails on purpose" in proc.stdout + proc.stderr
    assert seconds < 120
    assert not (tmp_path / "fail" / ztrain.CHECKPOINT_FILE).exists() or \
        _checkpoint(tmp_path / "fail")["step"] == 2


@pytest.mark.slow
def test_nan_guard_stops_every_rank_together(tmp_path):
    # rank 1 alone gets a NaN loss at step 3: both ranks must stop with the error there
    proc, seconds = run_worker("nan", tmp_path)
    assert proc.returncode != 0
    for rank in (0, 1):
        assert re.search(rf"rank {rank} stopped: .*non-finite on at least one rank\) at step 3; "
                         r".*last good checkpoint \(step 2\)", proc.stdout), proc.stdout
    assert _checkpoint(tmp_path / "nan")["step"] == 2
    assert seconds < 120


@pytest.mark.slow
def test_a_silent_rank_times_out_instead_of_hanging(tmp_path):
    # rank 1 sleeps 300 s at step 2; rank 0 waits at most ZOO_DIST_TIMEOUT in a collective
    proc, seconds = run_worker("hang", tmp_path, ZOO_DIST_TIMEOUT="5")
    assert proc.returncode != 0
    assert "Timed out" in proc.stdout + proc.stderr
    assert seconds < 120


# -- the command line ---------------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_zoo_train(tmp_path):
    out = tmp_path / "run"
    proc, _ = torchrun(
        "-m", "zoo", "train", "ddpm", "--dataset", "mnist", "--steps", "3", "--batch-size", "4",
        "--device", "cpu", "--out", str(out), "--set", "channels=8", "--set", "channel_mult=1,2",
        "--set", "mid_attention=false", "--set", "log_every=1",
    )
    _ok(proc)
    assert proc.stderr.count("x 2 processes") == 1, proc.stderr  # rank 0 alone speaks
    assert proc.stdout.count("trained ddpm for 3 steps") == 1, proc.stdout
    assert json.loads((out / ztrain.RUN_FILE).read_text())["world_size"] == 2
    assert [r["step"] for r in _losses(out)] == ["1", "2", "3"]
    assert zoo.load_run(out).sample(2, steps=2, sampler="ddim").shape == (2, 1, 28, 28)
    # zoo eval under torchrun: both ranks sample, rank 0 reports and writes once
    proc, _ = torchrun(
        "-m", "zoo", "eval", str(out), "-n", "12", "--extractor", "mnist-classifier",
        "--metrics", "fid", "--batch-size", "4", "--device", "cpu", "--json",
        str(tmp_path / "eval.json"), "--set", "sampler=ddim", "--set", "steps=2",
    )
    _ok(proc)
    assert proc.stdout.count("FID") == 1, proc.stdout
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["n_generated"] == 12 and result["fid"] > 0


BENCH_SUITE = tiny_suite(
    name="ddp", seed=1,
    defaults={"batch_size": 16, "budget": {"steps": 3}, "train": {"ema_decay": 0.0}},
    evaluation={"n_samples": 40, "metrics": ["fid", "kid", "is", "pr"], "nll_images": 30,
                "nll_batch_size": 8, "batch_size": 8},
    models=[
        tiny_model(config={"hidden": 32, "latent_dim": 4, "nll_samples": 3},
                   budget=None, batch_size=None, train=None),
        {"name": "ddpm",
         "config": {"timesteps": 6, "channels": 8, "channel_mult": [1, 2],
                    "mid_attention": False},
         "nll": {"mode": "estimate", "K": 2},
         "samplers": [{"sampler": "ddim", "steps": 3}]},
    ])


@pytest.mark.slow
@pytest.mark.suite
def test_torchrun_zoo_bench_equals_one_process(tmp_path):
    """``zoo bench`` under torchrun: rank 0 alone writes the rows, the grids and the report,
    and the figures are those of one process (training equal up to float rounding)."""
    from zoo.bench.runner import read_rows, run_suite

    suite = tmp_path / "ddp.toml"
    suite.write_text(BENCH_SUITE)
    proc, _ = torchrun("-m", "zoo", "bench", str(suite), "--out", str(tmp_path / "two"))
    _ok(proc)
    assert proc.stdout.count("report.md") == 1, proc.stdout
    run_suite(suite, tmp_path / "one", progress=False)
    two, one = read_rows(tmp_path / "two" / "results.jsonl"), read_rows(
        tmp_path / "one" / "results.jsonl")
    assert len(two) == len(one) == 2
    for a, b in zip(two, one, strict=True):
        assert (a["model"], a["train_steps"]) == (b["model"], b["train_steps"])
        for key in ("fid", "kid", "is", "precision", "recall", "nll_bpd"):
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-4), (a["model"], key)
        assert a["n_samples"] == 40 and a["nll_images"] == 30
        assert (tmp_path / "two" / a["grid"]).is_file()
    assert (tmp_path / "two" / "report.md").is_file()
    run = tmp_path / "two" / "runs" / "mnist" / "vae-mlp" / ztrain.RUN_FILE
    assert json.loads(run.read_text())["world_size"] == 2


# -- the pieces, in one process ------------------------------------------------------------------


def test_global_batch_must_divide_by_the_number_of_processes(monkeypatch):
    monkeypatch.setattr(zdist, "world_size", lambda: 2)
    images = worker.small_images(64)
    with pytest.raises(ConfigError, match="divisible by the number of processes"):
        ztrain.Trainer(worker.make_model("vae"), "mnist", "unused", images=images,
                       steps=1, batch_size=7)


def test_shards_and_batch_noise_make_up_the_global_batch():
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1)
    whole = data.BatchIterator(images, 8, seed=1)
    shards = [ztrain._ShardedBatches(images, 8, r, 2, seed=1) for r in (0, 1)]
    for _ in range(7):  # crosses an epoch
        batch = next(whole)
        a, b = next(shards[0]), next(shards[1])
        assert a.shape[0] == b.shape[0] == 4
        assert torch.equal(torch.stack([a, b], 1).flatten(0, 1), batch)
    model = worker.make_model("vae")
    draws = []
    for shard, rows in (((0, 2), 3), ((1, 2), 3), ((0, 1), 6)):  # 2 ranks x 3 rows, 1 x 6
        model.attach_training(None, torch.Generator().manual_seed(4), shard)
        draws.append((model.batch_randn(rows, 2), model.batch_randint(10, rows)))
    model.attach_training()
    (n0, t0), (n1, t1), (n, t) = draws
    assert torch.equal(torch.stack([n0, n1], 1).flatten(0, 1), n)
    assert torch.equal(torch.stack([t0, t1], 1).flatten(0, 1), t)
    assert not torch.equal(n0, n1)


def test_mix_seed_is_a_fixed_function():
    seeds = {zdist.mix_seed(s, i) for s in range(4) for i in range(50)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)
    assert zdist.mix_seed(7, 3) == zdist.mix_seed(7, 3)


def test_ddp_modules_hold_every_trained_parameter():
    for case in worker.CASES:
        model = worker.make_model(case)
        covered = {id(p) for m in model.ddp_modules().values() for p in m.parameters()}
        trained = [p for o in model.configure_optimizers().values()
                   for g in o.param_groups for p in g["params"]]
        assert trained and all(id(p) in covered for p in trained), case

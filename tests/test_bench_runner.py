"""The benchmark runner: the smoke suite end to end, resuming after a kill, reuse and resume
of training runs, suite errors that name the key, timing, and the CLI wiring."""

from __future__ import annotations

import json
import math
import re
import shutil
import tomllib
from pathlib import Path

import pytest
import torch
from helpers import tiny_model, tiny_suite

import zoo
from zoo import data
from zoo.bench import timing
from zoo.bench.runner import (
    MARKER_FILE,
    config_hash,
    read_rows,
    run_suite,
)
from zoo.bench.schema import COLUMNS, DETERMINISTIC, NLL_KINDS, row_key
from zoo.bench.suite import SUITES_DIR, load_suite, resolve_suite, shipped_suites
from zoo.cli import main
from zoo.core import ConfigError
from zoo.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
SMOKE = SUITES_DIR / "smoke.toml"
SUITES = [SUITES_DIR / f"{n}.toml" for n in ("smoke", "ci", "full")]


class Stop(Exception):
    """Raised by a test hook to kill a run midway."""


class Events:
    def __init__(self, stop_after_rows: int | None = None):
        self.log: list[tuple[str, dict]] = []
        self.stop_after_rows = stop_after_rows

    def __call__(self, event: str, **info) -> None:
        self.log.append((event, info))
        if event == "row" and self.stop_after_rows is not None:
            if self.count("row") >= self.stop_after_rows:
                raise Stop

    def count(self, event: str) -> int:
        return sum(e == event for e, _ in self.log)

    def models(self, event: str) -> list[str]:
        return [info["model"] for e, info in self.log if e == event]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke suite run once, uninterrupted: (out dir, rows, events)."""
    out = tmp_path_factory.mktemp("smoke")
    events = Events()
    run_suite(SMOKE, out, progress=False, hook=events)
    return out, read_rows(out / "results.jsonl"), events


@pytest.mark.slow
@pytest.mark.suite
def test_smoke_suite_end_to_end(smoke):
    out, rows, events = smoke
    suite = load_suite(SMOKE)
    assert len(rows) == len(list(suite.rows())) == 7
    for row in rows:
        assert list(row) == list(COLUMNS)
    assert len({row_key(r) for r in rows}) == len(rows)
    assert {r["family"] for r in rows} == {"vae", "gan", "autoregressive", "diffusion"}
    opt = lambda r, k: r["sampler_options"].get(k)  # noqa: E731
    kinds = {(r["family"], r["sampler"], opt(r, "steps"), opt(r, "eta"), opt(r, "temperature"))
             for r in rows}
    assert kinds == {
        ("vae", "default", None, None, None),
        ("gan", "default", None, None, None),
        ("autoregressive", "default", None, None, 1.0),
        ("autoregressive", "default", None, None, 0.8),
        ("diffusion", "ddpm", 8, None, None),  # ancestral: all T=8 steps
        ("diffusion", "ddim", 4, 0.0, None),
        ("diffusion", "ddim", 4, 1.0, None),
    }
    # the canonical options: every option of the sampler, defaults filled in
    ddim = next(r for r in rows if r["sampler"] == "ddim")
    assert ddim["sampler_options"] == {"steps": 4, "eta": 0.0, "spacing": "trailing",
                                       "clip_x0": True}
    assert events.count("train") == 4 and events.count("evaluate") == 7
    for r in rows:
        assert r["suite"] == "smoke" and r["dataset"] == "mnist"
        for k in ("fid", "kid", "is", "precision", "recall"):
            assert isinstance(r[k], float) and math.isfinite(r[k]), (r["model"], k)
        assert r["fid"] > 0 and r["is"] >= 1.0 and 0 <= r["precision"] <= 1
        assert r["extractor"] == "mnist-classifier" and len(r["extractor_hash"]) == 64
        n = 100 if r["sampler"] == "ddpm" else 200  # a variant's own n_samples
        assert (r["ref_split"], r["n_samples"], r["n_reference"]) == ("test", n, 1000)
        assert r["train_steps"] == (2 if r["family"] == "autoregressive" else 4)
        assert r["train_seconds"] > 0 and r["train_images_per_s"] > 0
        assert r["params"] == zoo.create(
            r["model"], dataset="mnist", **_config(suite, r["model"])).num_parameters()
        assert r["nll_kind"] in NLL_KINDS
        sizes = ["2"] if r["sampler"] == "ddpm" else ["1", "8"]  # a variant's own timing
        assert list(r["sample_images_per_s"]) == list(r["latency_ms_p50"]) == sizes
        for b in sizes:
            p50, p95 = r["latency_ms_p50"][b], r["latency_ms_p95"][b]
            assert 0 < p50 <= p95
            assert r["sample_images_per_s"][b] == pytest.approx(int(b) / p50 * 1000)
        assert r["latency_batch_size"] == int(sizes[-1])
        assert r["peak_mem_mb"] > 0 and r["memory_kind"] == "cpu peak rss"
        assert r["device"].startswith("cpu") and r["dtype"] == "float32"
        assert r["versions"]["torch"] == torch.__version__
        assert r["versions"]["zoo"] == zoo.__version__
        assert r["seed"] == 0 and re.fullmatch(r"[0-9a-f]{16}", r["config_hash"])
        grid = out / r["grid"]
        assert grid.is_file() and grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by_family = {r["family"]: r for r in rows}
    # a GAN has no likelihood: n/a, never 0
    gan = by_family["gan"]
    assert (gan["nll_bpd"], gan["nll_stderr"], gan["nll_kind"], gan["nll_images"]) == (
        None, None, "none", None)
    assert by_family["autoregressive"]["nll_kind"] == "exact"
    assert by_family["vae"]["nll_kind"] == by_family["diffusion"]["nll_kind"] == "bound"
    for fam in ("vae", "autoregressive", "diffusion"):
        r = by_family[fam]
        assert r["nll_images"] == 64 and 0 < r["nll_bpd"] < 100 and r["nll_stderr"] > 0
    # NLL belongs to the model: one figure in every sampler row of a model
    ddpm = [r for r in rows if r["family"] == "diffusion"]
    assert len({r["nll_bpd"] for r in ddpm}) == 1
    assert len({r["fid"] for r in ddpm}) == 3
    # the run directories hold the trained models and their config hashes
    for r in rows:
        marker = json.loads((out / "runs" / "mnist" / r["model"] / MARKER_FILE).read_text())
        assert marker["finished"] and marker["config_hash"] == r["config_hash"]
    assert (out / "suite.toml").read_text() == SMOKE.read_text()


def _config(suite, model_id: str) -> dict:
    return next(m.config for m in suite.models if m.id == model_id)


@pytest.mark.slow
@pytest.mark.suite
def test_killed_run_resumes_without_recomputing(smoke, tmp_path):
    _, full_rows, _ = smoke
    out = tmp_path / "run"
    first = Events(stop_after_rows=3)
    with pytest.raises(Stop):
        run_suite(SMOKE, out, progress=False, hook=first)
    done = read_rows(out / "results.jsonl")
    assert len(done) == 3
    assert first.models("train") == ["vae-mlp", "gan-mlp", "ar-transformer"]
    # the rerun (the same command) measures only the four missing rows; the transformer
    # finished training before the kill, so it is loaded, not retrained
    second = Events()
    run_suite(SMOKE, out, progress=False, hook=second)
    assert second.models("train") == ["ddpm"] and second.count("resume") == 0
    assert second.count("evaluate") == 4 and second.count("row") == 4
    rows = read_rows(out / "results.jsonl")
    assert len(rows) == 7 and len({row_key(r) for r in rows}) == 7
    assert rows[:3] == done
    # and nothing is lost or changed: the figures equal those of the uninterrupted run
    full = {row_key(r): r for r in full_rows}
    for r in rows:
        base = full[row_key(r)]
        for k in (*DETERMINISTIC, "config_hash", "train_steps", "params", "nll_kind"):
            assert r[k] == base[k], (r["model"], r["sampler"], k)
    # a third run has nothing to do
    third = Events()
    run_suite(SMOKE, out, progress=False, hook=third)
    assert third.log == [] and len(read_rows(out / "results.jsonl")) == 7


def _tiny(tmp_path: Path, steps: int = 6, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(tiny_suite(timing={"repeats": 2}, models=[tiny_model(
        budget={"steps": steps}, train={"ema_decay": 0.0, "checkpoint_every": 2})]))
    return path


def test_partial_training_run_is_resumed_and_changed_config_retrained(tmp_path):
    suite_path = _tiny(tmp_path)
    suite = load_suite(suite_path)
    entry = suite.models[0]
    ref = tmp_path / "ref"
    run_suite(suite_path, ref, progress=False)
    ref_row = read_rows(ref / "results.jsonl")[0]
    assert ref_row["kid"] is not None and ref_row["is"] is None  # not asked for: n/a
    assert ref_row["precision"] is None and ref_row["recall"] is None

    # a run killed after 2 of its 6 steps: a checkpoint, and a marker that is not finished
    out = tmp_path / "out"
    run_dir = out / "runs" / "mnist" / "vae-mlp"
    torch.manual_seed(suite.seed)
    model = zoo.create("vae-mlp", dataset="mnist", **entry.config)
    Trainer(model, "mnist", run_dir, progress=False, steps=2, batch_size=16, seed=suite.seed,
            device="cpu", ema_decay=0.0, checkpoint_every=2).fit()
    run_dir.joinpath(MARKER_FILE).write_text(json.dumps(
        {"config_hash": config_hash(suite, entry, "mnist", "cpu"), "finished": False}))
    (out / "suite.toml").write_bytes(suite_path.read_bytes())  # a bench copies it first
    events = Events()
    run_suite(suite_path, out, progress=False, hook=events)
    assert [e for e, _ in events.log] == ["resume", "evaluate", "row"]
    row = read_rows(out / "results.jsonl")[0]
    assert row["train_steps"] == 6
    for k in ("fid", "kid", "nll_bpd", "config_hash"):  # resuming is exact
        assert row[k] == ref_row[k], k

    # a new budget is a new configuration: the old run is not reused
    bigger = _tiny(tmp_path, steps=8, name="tiny8.toml")
    (out / "results.jsonl").unlink()
    events = Events()
    run_suite(bigger, out, progress=False, hook=events)
    row8 = read_rows(out / "results.jsonl")[0]
    assert events.models("train") == ["vae-mlp"]
    assert row8["train_steps"] == 8 and row8["config_hash"] != row["config_hash"]

    # the results file survives a kill in the middle of a line
    with (out / "results.jsonl").open("a") as f:
        f.write('{"suite": "tiny", "dataset": "mni')
    events = Events()
    run_suite(bigger, out, progress=False, hook=events)
    assert events.log == []
    assert read_rows(out / "results.jsonl") == [row8]


def test_only_model_and_dataset_filters(tmp_path):
    suite_path = _tiny(tmp_path)
    with pytest.raises(ConfigError, match="--only-model gan-mlp: the suite has vae-mlp"):
        run_suite(suite_path, tmp_path / "o", only_model="gan-mlp", progress=False)
    with pytest.raises(ConfigError, match="--only-dataset cifar10"):
        run_suite(suite_path, tmp_path / "o", only_dataset="cifar10", progress=False)


@pytest.mark.parametrize("suite_path", SUITES, ids=lambda p: p.name)
def test_shipped_suites_load(suite_path):
    suite = load_suite(suite_path)
    rows = list(suite.rows())
    assert rows and len({(d, m.id, v.key) for d, m, v in rows}) == len(rows)
    families = {m.family for m in suite.models}
    pixel = {"vae", "gan", "autoregressive", "diffusion"}
    latent = {"autoencoder", "latent-diffusion", "latent-autoregressive"}
    assert pixel <= families <= pixel | latent
    if suite_path.name == "smoke.toml":  # the tests run it: no latent pairs there
        assert families == pixel
    for m in suite.models:  # each second stage over an autoencoder entry of the suite
        if m.family.startswith("latent"):
            ae = suite.entry(m.autoencoder)
            assert ae.family == "autoencoder" and ae.datasets == m.datasets
    for m in suite.models:
        assert any(x is not None for x in m.budget.as_dict().values())
    samplers = {(m.family, v.name, v.canonical.get("eta")) for _, m, v in rows}
    assert ("diffusion", "ddim", 0.0) in samplers
    if suite_path.name != "ci.toml":  # ci: the samplers that fit its N on two CPU cores
        assert ("diffusion", "ddpm", None) in samplers
        assert ("diffusion", "ddim", 1.0) in samplers


def test_ci_suite_covers_the_issue_and_is_reproducible():
    suite = load_suite(SUITES[1])
    assert suite.datasets == ["mnist", "fashion-mnist"]
    assert {m.family for m in suite.models} == {"vae", "gan", "autoregressive", "diffusion",
                                                "autoencoder", "latent-autoregressive"}
    # the latent pair, on Fashion-MNIST only: a vq-vae on its own budget (no curve: its
    # samples are uniform codes), and the vq-transformer over it at everyone's budget
    ae, prior = suite.entry("vq-vae"), suite.entry("vq-transformer")
    assert prior.autoencoder == "vq-vae" and ae.datasets == prior.datasets == ["fashion-mnist"]
    assert ae.budget.flops < 6e12 and ae.evaluation.curve == ()
    stages = [m for m in suite.models if m.family != "autoencoder"]
    ddpm = next(m for m in suite.models if m.family == "diffusion")
    variants = {(v.name, v.canonical.get("steps"), v.canonical.get("eta"))
                for v in ddpm.variants}
    assert {("ddim", s, 0.0) for s in (10, 20, 50)} <= variants
    # one FLOPs budget for every model, no seconds: equal compute, and the committed
    # baseline is reproducible on any machine
    assert {(m.budget.flops, m.budget.steps, m.budget.seconds) for m in stages} \
        == {(6e12, None, None)} and (ae.budget.steps, ae.budget.seconds) == (None, None)
    # quality along the way, and one N for every row of a table
    assert all(m.evaluation.curve for m in stages)
    assert {v.n_samples or m.evaluation.n_samples for m in suite.models
            for v in m.variants} == {1000}
    # the sampler frontier: every diffusion sampler at 5, 10, 20 and 50 network calls
    calls = {(v.name, v.sampler.network_calls()) for v in ddpm.variants}
    for name in ("ddim", "dpmpp-2m", "unipc", "euler-ancestral"):
        assert {(name, c) for c in (5, 10, 20, 50)} <= calls, name
    assert {("heun", c) for c in (5, 9, 19, 49)} <= calls
    # conditional twins of ddpm and gan-dcgan, the DDPM's with a guidance sweep
    cond = {m.id: m for m in suite.models if m.config.get("conditional")}
    assert set(cond) == {"ddpm-cond", "gan-dcgan-cond"}
    assert {v.canonical.get("guidance", 1.0) for v in cond["ddpm-cond"].variants} \
        == {0.0, 1.0, 2.0, 4.0}


def test_the_objectives_suite_compares_the_four_at_equal_steps():
    suite = load_suite("objectives")
    configs = {(m.config.get("prediction", "epsilon"),
                m.config.get("loss_weighting", "uniform")) for m in suite.models}
    assert configs == {(p, w) for p in ("epsilon", "v") for w in ("uniform", "min-snr")}
    assert {m.budget.steps for m in suite.models} == {1500}


@pytest.mark.slow
@pytest.mark.suite
def test_smoke_suite_matches_the_committed_baseline(smoke):
    """The regression gate CI applies: this checkout's smoke run against
    reports/smoke-baseline with the default tolerances (deterministic metrics only)."""
    from zoo.bench.compare import compare_dirs

    out, _, _ = smoke
    table, regressed = compare_dirs(ROOT / "reports" / "smoke-baseline", out)
    assert not regressed, table


# -- malformed suites --------------------------------------------------------------------------
GOOD = """
datasets = ["mnist"]
[defaults]
budget = { steps = 1 }
[[models]]
name = "ddpm"
config = { timesteps = 10 }
samplers = [{ sampler = "ddpm" }, { sampler = "ddim", steps = 5 }]
[[models]]
name = "vae-mlp"
"""


@pytest.mark.parametrize("text, key, what", [
    ("colour = 1\n" + GOOD, "colour", "unknown key"),
    ("device = 'gpu'\n" + GOOD, "device", "must be auto, cpu, cuda or cuda:N"),
    (GOOD.replace('name = "vae-mlp"', 'name = "vae-mlp"\nbudgt = { steps = 1 }'),
     "models[1].budgt", "unknown key"),
    (GOOD.replace('name = "vae-mlp"', 'name = "vae-mlp"\nbudget = { steps = "ten" }'),
     "models[1].budget.steps", "must be int"),
    (GOOD.replace('name = "vae-mlp"', 'name = "vae-mlp"\nbudget = { steps = -1 }'),
     "models[1].budget.steps", "must be > 0"),
    (GOOD.replace('"vae-mlp"', '"vae-xl"'), "models[1].name", "unknown model 'vae-xl'"),
    (GOOD.replace('["mnist"]', '["mnist", "svhn"]'), "datasets[1]", "unknown dataset 'svhn'"),
    (GOOD.replace("budget = { steps = 1 }", "batch_size = 8"), "models[0].budget",
     "no training budget"),
    (GOOD.replace("steps = 5", "steps = 50"), "models[0].samplers[1]",
     "steps must be in 1..10"),
    (GOOD.replace('{ sampler = "ddpm" }', '{ sampler = "ddpm", temperature = 0.9 }'),
     "models[0].samplers[0].temperature", "unknown sampler option(s) temperature for ddpm"),
    (GOOD.replace('{ sampler = "ddpm" }', '{ sampler = "euler" }'), "models[0].samplers[0]",
     "euler"),
    (GOOD.replace('name = "vae-mlp"', 'name = "vae-mlp"\nsamplers = [{ decode = "median" }]'),
     "models[1].samplers[0].decode", "unknown decode 'median'; valid: mean, sample"),
    (GOOD.replace("timesteps = 10", "timestep = 10"), "models[0].config", "timestep"),
    (GOOD.replace('sampler = "ddpm" }, ', 'sampler = "ddpm" }, { sampler = "ddpm" }, '),
     "models[0].samplers[1]", "repeats an earlier variant"),
    (GOOD + "[evaluation]\nmetrics = ['fid', 'sharpness']\n", "evaluation.metrics",
     "sharpness"),
    (GOOD + "[timing]\nbatch_sizes = [0, 4]\n", "timing.batch_sizes", "must be > 0"),
    (GOOD + "[timing]\nmax_batch = 'yes'\n", "timing.max_batch", "must be bool"),
    (GOOD + "[timing]\nmax_batch_limit = 0\n", "timing.max_batch_limit", "must be > 0"),
    (GOOD + "[evaluation]\nn_samples = 2.5\n", "evaluation.n_samples", "must be int"),
    (GOOD.replace('name = "vae-mlp"', 'name = "gan-mlp"\nnll = { k = 5 }'), "models[1].nll",
     "defines no likelihood"),
    (GOOD.replace('name = "vae-mlp"', 'name = "vae-mlp"\nnll = { k = 0 }'), "models[1].nll",
     "must be >= 1"),
    (GOOD.replace('name = "vae-mlp"', 'name = "vae-mlp"\nnll = { K = 5 }'), "models[1].nll",
     "unknown nll option"),
    (GOOD.replace('name = "vae-mlp"', 'name = "vae-mlp"\ntrain = { steps = 5 }'),
     "models[1].train.steps", "unknown key"),
    (GOOD + "[[models]]\nname = \"ddpm\"\n", "models[2].id", "appears twice"),
    ("datasets = ['mnist']\n", "models", "give at least one [[models]] table"),
    ("datasets = ['mnist']\nmodels = 3\n", "models", "must be list"),
    (GOOD.replace('["mnist"]', '"mnist"'), "datasets", "must be list"),
    ("seed = 99999999999999999999\n" + GOOD, "seed", "integer in [-2**63, 2**64)"),
    (GOOD.replace("steps = 1 }", "seconds = nan }"), "defaults.budget.seconds",
     "a finite number"),
    (GOOD.replace('name = "vae-mlp"', 'name = "vae-mlp"\nbudget = { seconds = inf }'),
     "models[1].budget.seconds", "a finite number"),
])
def test_malformed_suite_names_the_key(tmp_path, text, key, what):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_suite(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: {key}:"), msg
    assert what in msg, msg


def test_good_suite_and_not_toml(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    suite = load_suite(path)
    assert suite.name == "good" and suite.seed == 0
    variants = suite.models[0].variants
    assert [v.canonical["steps"] for v in variants] == [10, 5]  # ddim's eta defaults to 0
    assert variants[1].canonical["eta"] == 0.0 and variants[1].label == "ddim, 5 steps, eta 0"
    path.write_text("datasets = [mnist")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_suite(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_suite(tmp_path / "missing.toml")


@pytest.mark.parametrize("content, what", [
    (b"name = '" + "caf\u00e9".encode("latin-1") + b"'\n" + GOOD.encode(),
     "is not UTF-8 text (byte 0xe9 at offset 11)"),
    (("x = " + "[" * 5000 + "]" * 5000 + "\n" + GOOD).encode(), "more than 32 levels deep"),
    (("x = " + "[" * 40 + "]" * 40 + "\n" + GOOD).encode(), "more than 32 levels deep"),
])
def test_suite_not_utf8_or_nested_too_deeply_is_one_error(tmp_path, content, what):
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(what)) as e:
        load_suite(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("line, what", [
    ('{"dataset": "mnist", "model": ["ddpm"]}', "model must be a name"),
    ('{"dataset": "mnist", "model": "ddpm", "fid": "12"}', "fid must be a number"),
    ('{"dataset": "mnist", "model": "ddpm", "sampler_options": {"steps": {"n": 5}}}',
     "sampler_options must be an object of plain values"),
    ('{"dataset": "mnist", "model": "ddpm", "x": ' + "[" * 3000 + "]" * 3000 + "}",
     "more than 32 levels deep"),
])
def test_resume_from_a_poisoned_results_file_names_the_line(tmp_path, line, what):
    """Resuming reads the rows done through the same checks as the report (a row the runner
    cannot key, e.g. a list where the model name goes, was a TypeError)."""
    suite, out = tmp_path / "suite.toml", tmp_path / "out"
    suite.write_text(tiny_suite())
    out.mkdir()
    (out / "results.jsonl").write_text('{"dataset": "mnist", "model": "vae"}\n' + line + "\n")
    with pytest.raises(ConfigError, match=rf"results.jsonl line 2 .*{re.escape(what)}"):
        run_suite(suite, out, progress=False)


# -- timing --------------------------------------------------------------------------------------
def test_percentile_closed_forms():
    assert timing.percentile([3.0], 95) == 3.0
    assert timing.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert timing.percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert timing.percentile(list(range(101)), 95) == 95


def test_time_call_runs_warmup_then_repeats():
    calls = []
    times = timing.time_call(lambda: calls.append(1), torch.device("cpu"), repeats=4, warmup=2)
    assert len(calls) == 6 and len(times) == 4 and all(t >= 0 for t in times)


def test_sampling_speed_on_a_tiny_model():
    torch.manual_seed(0)
    model = zoo.create("vae-mlp", dataset="mnist", hidden=16, latent_dim=4)
    model.train()
    out = timing.sampling_speed(model, [1, 32], repeats=3, warmup=1)
    assert model.training  # restored
    assert set(out["sample_images_per_s"]) == {"1", "32"}
    for b in ("1", "32"):
        assert len(out["latency_ms"][b]) == 3
        assert 0 < out["latency_ms_p50"][b] <= out["latency_ms_p95"][b]
        assert out["latency_ms_p95"][b] <= max(out["latency_ms"][b])
        assert out["sample_images_per_s"][b] == pytest.approx(
            int(b) * 1000 / out["latency_ms_p50"][b])
    assert out["memory_kind"] == "cpu peak rss" and 10 < out["peak_mem_mb"] < 1e6
    speed = timing.training_speed({"steps": 10, "seconds": 2.0}, batch_size=32)
    assert speed == {"train_steps": 10, "train_seconds": 2.0, "train_images_per_s": 160.0,
                     "train_first_step_s": None}
    # a Trainer summary: the steady state after the first step is the training speed
    speed = timing.training_speed({"steps": 10, "seconds": 2.0, "first_step_seconds": 1.5,
                                   "steady_images_per_s": 500.0}, batch_size=32)
    assert speed["train_images_per_s"] == 500.0 and speed["train_first_step_s"] == 1.5


def test_largest_batch_doubles_then_bisects():
    calls = []

    def fits(b):
        calls.append(b)
        return b <= 5000

    best = timing.largest_batch(fits, 64, 16384)
    assert 5000 - 5000 // 16 <= best <= 5000 and fits(best)
    assert calls[:8] == [64, 128, 256, 512, 1024, 2048, 4096, 8192]  # doubling first
    assert len(calls) < 20
    assert timing.largest_batch(lambda b: True, 64, 1000) == 1000  # the limit caps it
    assert timing.largest_batch(lambda b: b < 64, 64, 1000) is None  # start does not fit


def test_sampling_speed_gives_the_network_the_whole_batch(monkeypatch):
    """Throughput at batch b means b images through the network at once: the sampler's
    own batch_size (a VAE decodes 1000 at a time by default) is set to b; max_batch
    is a CUDA-only search, nothing on the CPU."""
    model = zoo.create("vae-mlp", dataset="mnist", hidden=16, latent_dim=4)
    seen = []
    original = model.sample

    def sample(n, **kw):
        seen.append((n, kw.get("batch_size")))
        return original(n, **kw)

    monkeypatch.setattr(model, "sample", sample)
    out = timing.sampling_speed(model, [2, 8], repeats=1, warmup=0, max_batch=True)
    assert seen == [(2, 2), (8, 8)]
    assert out["max_batch_size"] is None and set(out["sample_images_per_s"]) == {"2", "8"}


def test_flops_are_counted_exactly_for_mlps():
    """The closed forms of an MLP VAE (784-16-8 encoder, 4-16-784 decoder): forward 2 x the
    weights' multiply-adds; backward twice that, less the first layer's input gradient."""
    torch.manual_seed(0)
    model = zoo.create("vae-mlp", dataset="mnist", hidden=16, latent_dim=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    forward = 2 * (784 * 16 + 16 * 8 + 4 * 16 + 16 * 784)
    backward = 2 * forward - 2 * 784 * 16
    x, _ = data.load("mnist", "test")
    assert timing.train_flops_per_image(model, x[:8]) == forward + backward
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # a copy
    assert timing.sample_flops_per_image(model) == 2 * (4 * 16 + 16 * 784)
    gan = zoo.create("gan-mlp", dataset="mnist", g_hidden=(32,), d_hidden=(32,), latent_dim=8)
    assert timing.sample_flops_per_image(gan) == 2 * (8 * 32 + 32 * 784)
    # MFU: over the CPU's measured float32 matmul peak (DESIGN.md: ~180 GFLOP/s here)
    cpu = torch.device("cpu")
    peak = timing.peak_flops(cpu)
    assert 1e9 < peak < 1e13 and timing.peak_dtype(cpu) == "float32"
    assert timing.mfu(1e9, 10.0, cpu) == pytest.approx(1e10 / peak)
    assert timing.mfu(None, 10.0, cpu) is None


def test_environment_columns():
    env = timing.environment(torch.device("cpu"), seed=7)
    assert env["seed"] == 7 and env["dtype"] == "float32" and env["device"].startswith("cpu: ")
    assert env["versions"]["torch"] == torch.__version__
    assert env["commit"] is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", env["commit"])
    if (ROOT / ".git").exists():
        assert env["commit"] is not None


# -- the command line ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.suite
def test_cli_bench_report_compare(smoke, tmp_path, capsys):
    out, rows, _ = smoke
    run = tmp_path / "cli"
    shutil.copytree(out, run)
    assert main(["bench", str(SMOKE), "--out", str(run)]) == 0  # all rows done: report only
    assert len(read_rows(run / "results.jsonl")) == 7
    assert (run / "report.md").is_file() and (run / "results.csv").is_file()
    assert main(["report", str(run)]) == 0
    assert main(["compare", str(out), str(run)]) == 0
    # an injected regression: a worse FID in one row
    worse = tmp_path / "worse"
    worse.mkdir()
    bad = [dict(r) for r in rows]
    bad[0]["fid"] = bad[0]["fid"] * 2 + 10
    (worse / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad))
    capsys.readouterr()
    assert main(["compare", str(out), str(worse), "--tolerance", "fid=10%"]) == 1
    assert "fid" in capsys.readouterr().out


# -- the shipped suites ---------------------------------------------------------------------------
def test_the_suites_ship_in_the_package_and_load_by_name():
    assert SUITES_DIR.parent == Path(zoo.__file__).resolve().parent
    assert {"smoke", "ci", "full", "gpu-short", "conditional", "objectives"} <= set(
        shipped_suites())
    assert not list((ROOT / "benchmarks").glob("*.toml"))  # none left outside the package
    # pyproject ships them as package data (what `pip install .` installs)
    assert '"suites/*.toml"' in (ROOT / "pyproject.toml").read_text()
    for name, path in shipped_suites().items():
        assert resolve_suite(name) == path
        assert tomllib.loads(path.read_text())["description"]


def test_a_path_wins_over_a_name_and_an_unknown_name_lists_the_shipped(tmp_path, monkeypatch):
    mine = tmp_path / "smoke"
    mine.write_text(tiny_suite(name="mine"))
    monkeypatch.chdir(tmp_path)
    assert resolve_suite("smoke") == Path("smoke") and load_suite("smoke").name == "mine"
    with pytest.raises(ConfigError, match=r"no shipped suite has that name \(shipped: ci, "):
        resolve_suite("benchmarks/smoke.toml")


def test_zoo_bench_list(capsys):
    assert main(["bench", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == list(shipped_suites())
    smoke = next(ln for ln in lines if ln.startswith("smoke "))
    assert smoke.split(None, 1)[1] == load_suite("smoke").description
    assert max(map(len, lines)) <= 120


def test_zoo_bench_runs_a_shipped_suite_by_name(tmp_path, monkeypatch, capsys):
    """``zoo bench smoke`` hands the runner the packaged file (the runner stubbed: it loads
    the suite and trains nothing)."""
    ran = []

    def run_suite(suite, out, **kw):
        ran.append(load_suite(suite).path)
        return Path(out) / "results.jsonl"

    monkeypatch.setattr("zoo.bench.runner.run_suite", run_suite)
    monkeypatch.chdir(tmp_path)  # no file named smoke here
    assert main(["bench", "smoke", "--out", str(tmp_path / "out"), "--no-report"]) == 0
    assert ran == [SUITES_DIR / "smoke.toml"]
    assert main(["bench", "smoke"]) == 2
    assert "needs --out DIR" in capsys.readouterr().err


def test_cli_errors(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace('"vae-mlp"', '"vae-xl"'))
    assert main(["bench", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zoo: error: ") and "models[1].name" in err
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "holds no results.jsonl" in capsys.readouterr().err


def test_sample_grids_are_enlarged_as_zoo_sample_draws_them(tmp_path, tiny_suite):
    from PIL import Image

    from zoo.images import grid_size, legible_scale

    out = tmp_path / "out"
    run_suite(tiny_suite(), out, progress=False)
    (row,) = read_rows(out / "results.jsonl")
    scale = legible_scale(28, 28, 4)  # the suite's 4 MNIST images, as zoo sample scales them
    assert scale > 1
    with Image.open(out / row["grid"]) as im:
        assert im.size[::-1] == grid_size(4, 28, 28, scale=scale)


def test_suite_naming_a_folder_of_images(tmp_path):
    """A suite may name a folder (here of real MNIST PNGs in class folders) as a table with
    options, relative to the suite's folder; rows carry the folder's name as the dataset."""
    from PIL import Image

    from zoo import data

    x, y = data.load("mnist", "test")
    for i in range(120):
        folder = tmp_path / "my_images" / f"digit{int(y[i])}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i, 0].numpy()).save(folder / f"{i:04d}.png")
    suite = tmp_path / "own.toml"
    suite.write_text(tiny_suite(
        name=None, seed=None, device=None, datasets=[{"path": "my_images", "test_size": 20}],
        defaults={"batch_size": 16, "budget": {"steps": 2}},
        evaluation={"n_samples": 40, "nll_images": 8, "extractor": "mnist-classifier",
                    "metrics": None, "n_reference": None, "batch_size": None,
                    "grid_images": None},
        timing={"batch_sizes": [4]},
        models=[{"name": "vae-mlp", "config": {"hidden": 16, "latent_dim": 4}}]))
    loaded = load_suite(suite)
    assert loaded.datasets == ["my_images"]
    assert loaded.source("my_images").startswith(str(tmp_path / "my_images"))
    out = tmp_path / "out"
    assert main(["bench", str(suite), "--out", str(out), "--no-report"]) == 0
    (row,) = read_rows(out / "results.jsonl")
    assert row["dataset"] == "my_images" and row["fid"] is not None and row["nll_images"] == 8
    bad = tmp_path / "bad.toml"
    bad.write_text(suite.read_text().replace('"my_images"', '"no_such_folder"'))
    with pytest.raises(ConfigError, match=r"datasets\[0\].*unknown dataset"):
        load_suite(bad)


def test_a_bench_into_a_folder_with_a_report_of_its_own_is_refused(tmp_path, tiny_suite):
    """A folder that is not a bench output but holds report.md (or figures/, runs/, ...):
    refused before anything is trained or written, its files kept; a new folder is fine."""
    out = tmp_path / "project"
    out.mkdir()
    (out / "report.md").write_text("my own report")
    (out / "figures").mkdir()
    with pytest.raises(ConfigError, match=r"is not a bench output .* report\.md, figures"):
        run_suite(tiny_suite(), out, progress=False)
    assert (out / "report.md").read_text() == "my own report"
    assert sorted(p.name for p in out.iterdir()) == ["figures", "report.md"]

"""The metric registry: its declarations and invariants, density/coverage against the prdc
package and closed forms, and a metric registered here flowing into evaluate, a suite row,
the CI gate, the report and `zoo eval` with no other file edited."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import prdc
import pytest
import torch
from helpers import doc_example, tiny_suite

import zoo
from zoo import data, metrics
from zoo.bench import compare, figures, frame, report, schema
from zoo.bench.runner import read_rows, run_suite
from zoo.bench.suite import load_suite
from zoo.core import ConfigError
from zoo.metrics import registry
from zoo.metrics.density_coverage import density_coverage

REPO = Path(__file__).resolve().parents[1]

# the metrics zoo ships and the schema as it was before the registry, which existing
# results files follow: kept in this order, whatever is registered after them
SHIPPED = ("fid", "kid", "is", "pr", "dc", "memorization", "class_accuracy", "intra_fid",
           "class_tv")
OLD_QUALITY = ("fid", "kid", "kid_std", "is", "is_std", "precision", "recall")
# the defaults chosen from the seed-only spread of reports/gate-cpu (docs/benchmarks.md, "The
# regression gate"): a change is deliberate, with its measurement
TOLERANCES = {"fid": ("rel", 0.15), "kid": ("rel", 0.15), "is": ("rel", 0.05),
                  "precision": ("abs", 0.05), "recall": ("abs", 0.10), "density": ("rel", 0.10),
                  "coverage": ("rel", 0.25), "nll_bpd": ("abs", 0.02)}
OLD_DIRECTION = {"fid": -1, "kid": -1, "nll_bpd": -1, "latency_ms_p50": -1,
                 "latency_ms_p95": -1, "peak_mem_mb": -1, "is": 1, "precision": 1, "recall": 1,
                 "sample_images_per_s": 1, "train_images_per_s": 1, "train_mfu": 1,
                 "sample_mfu": 1}


def in_order(items, within) -> bool:
    """``items`` appear in ``within`` in this order (others may come between)."""
    rest = iter(within)
    return all(any(x == y for y in rest) for x in items)


def doc_metric_code():
    """The worked example of a metric registered from outside (docs/design.md), compiled."""
    blocks, where = doc_example("metric")
    return compile(blocks["python"], where, "exec")


pytestmark = pytest.mark.usefixtures("cache_env")


@pytest.fixture
def scratch(monkeypatch):
    """A copy of the registry that the test may add to; the original comes back after."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return registry


@pytest.fixture
def doc_metric(monkeypatch):
    """The registry with the documentation's external example registered on top (a copy: the
    shipped registry comes back after the test)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    exec(doc_metric_code(), {})
    assert registry.names()[-1] == "spread"
    return registry


@pytest.fixture(params=["shipped", "with the documented metric"])
def any_registry(request):
    """The registry as zoo ships it, and with the documentation's external example left
    registered: nothing below may depend on the shipped set being the whole set."""
    return request.getfixturevalue("doc_metric") if request.param != "shipped" \
        else registry


def mean_gap(real, fake) -> dict:
    """A toy metric: the distance between the feature means."""
    return {"mean_gap": float((real.double().mean(0) - fake.double().mean(0)).norm())}


TOY = registry.Metric(
    "toy", aliases=("mean-gap",), function=mean_gap,
    columns=(registry.Column("mean_gap", "mean gap", "{:.3f}", -1, tolerance=("abs", 0.1)),),
)


# -- declarations and invariants -----------------------------------------------------------


def test_every_metric_has_a_column_a_direction_and_a_tolerance(any_registry):
    names = registry.names()
    assert in_order(SHIPPED, names) and set(registry.default_metrics()) <= set(names)
    assert metrics.METRICS == ("fid", "kid", "is", "pr", "dc")  # the default set when zoo loaded
    keys = registry.column_keys()
    assert len(set(keys)) == len(keys) and in_order(OLD_QUALITY, keys)
    for name in names:
        m = registry.get(name)
        assert m.columns and all(registry.metric_of(c.key) is m for c in m.columns), name
        ranked = [c for c in m.columns if c.direction]
        assert ranked, f"{name} has no ranked column"
        for c in m.columns:
            # a table column is ranked; a spread (no label) is shown beside its figure,
            # ranked by nothing and gated by nothing
            assert bool(c.label) == bool(c.direction), c
            assert (c.tolerance is not None) == (c.deterministic and bool(c.direction)), c
            assert c.spread is None or c.spread in registry.column_keys(name), c
            assert c.figure in registry.FIGURES, c
        for alias in (name, *m.aliases):
            assert registry.normalize_metrics(alias) == (name,)
    assert registry.metric_of("nll_bpd") is None
    assert [c.key for c in registry.columns() if c.headline] == ["fid"]
    assert registry.headline().small_n == "kid"
    assert registry.default_tolerances() == {c.key: c.tolerance for c in registry.columns()
                                             if c.tolerance is not None}
    assert {k: v for k, v in registry.default_tolerances().items() if k in TOLERANCES} \
        == {k: v for k, v in TOLERANCES.items() if k != "nll_bpd"}


def test_density_coverage_declaration():
    dc = registry.get("coverage")
    assert (dc.name, dc.needs, dc.min_images, dc.default) == ("dc", "features", 6, True)
    assert dc.params == {"nearest_k": 5}
    assert registry.column_keys("pr") == ("precision", "recall")
    # relative: coverage is ~0.04 against the classifier's features, below any absolute 0.05
    assert registry.default_tolerances()["density"] == ("rel", 0.10)
    assert registry.default_tolerances()["coverage"] == ("rel", 0.25)


def test_normalize_metrics_aliases_order_and_errors(any_registry):
    assert registry.normalize_metrics("recall, FID,isc") == ("fid", "is", "pr")
    assert registry.normalize_metrics(["coverage", "density", "kid"]) == ("kid", "dc")
    with pytest.raises(ConfigError, match=r"unknown metric 'lpips'; choose from fid, kid, is, "
                                          r"pr, dc, memorization, class_accuracy"):
        registry.normalize_metrics("fid,lpips")
    with pytest.raises(ConfigError, match="no metric asked for"):
        registry.normalize_metrics([])
    assert metrics.normalize_metrics is registry.normalize_metrics


def test_torch_fidelity_result_keys_are_its_constants():
    import torch_fidelity as tf

    keys = {k for m in registry.names() for _, k in registry.get(m).tf_results}
    constants = {getattr(tf, n) for n in dir(tf) if n.startswith("KEY_METRIC_")}
    assert keys - {"kid_subset_size"} <= constants


def test_schema_and_gate_are_built_from_the_registry(any_registry):
    cols = schema.COLUMNS
    quality = schema.quality_columns()
    assert len(set(cols)) == len(cols)
    i = cols.index("fid")
    assert cols[i:i + len(quality)] == quality  # the metrics' columns, in one block
    assert cols[i - 1] == "train_flops" and cols[i + len(quality)] == "extractor"
    for c in registry.columns():  # each interval column right after its figure
        j = quality.index(c.key)
        assert (quality[j + 1:j + 2] == (c.key + schema.INTERVAL,)) == c.interval, c.key
    # today's directions in today's order (compare prints in this order), new ones added
    assert {k: v for k, v in schema.DIRECTION.items() if k in OLD_DIRECTION} == OLD_DIRECTION
    assert list(k for k in schema.DIRECTION if k in OLD_DIRECTION) == list(OLD_DIRECTION)
    assert {k: schema.DIRECTION[k] for k in registry.directions()} == registry.directions()
    det = schema.DETERMINISTIC
    assert det[:len(registry.deterministic_columns())] == registry.deterministic_columns()
    assert in_order(("nll_bpd", "recon_psnr", "recon_fid", "codebook_perplexity"),
                    det[len(registry.deterministic_columns()):])
    assert {k: v for k, v in compare.DEFAULT_TOLERANCES.items() if k in TOLERANCES} \
        == TOLERANCES
    assert set(compare.DEFAULT_TOLERANCES) == set(det)
    assert all(compare.DEFAULT_TOLERANCES[k] == t
               for k, t in registry.default_tolerances().items())


def test_the_registry_is_read_without_torch_fidelity():
    code = ("import sys; import zoo.bench.schema, zoo.bench.compare, zoo.bench.report, "
            "zoo.metrics.registry; print('torch_fidelity' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("change,needle", [
    ({"name": "fid"}, "registered already"),
    ({"aliases": ("isc",)}, "taken by metric 'is'"),
    ({"columns": (registry.Column("fid", "FID", direction=-1, tolerance=("abs", 1.0)),)},
     "belongs to metric 'fid'"),
    ({"columns": (registry.Column("x", "x", direction=-1),)}, "default tolerance"),
    ({"columns": (registry.Column("x", "x", direction=0, tolerance=("abs", 1.0)),)},
     "default tolerance"),
    ({"columns": (registry.Column("x", "x", direction=2),)}, "direction"),
    ({"columns": (registry.Column("x", "x", direction=1, tolerance=("pct", 1.0)),)},
     "tolerance must be"),
    ({"columns": (registry.Column("x", "x", spread="x_std"),)}, "spread"),
    ({"columns": (registry.Column("x", "x", direction=1, tolerance=("abs", 1.0),
                                  figure="pie"),)}, "figure must be one of"),
    ({"columns": (registry.Column("x", "x", direction=-1, tolerance=("abs", 1.0),
                                  headline=True),)}, "headline is taken by 'fid'"),
    ({"columns": (registry.Column("x", "x", direction=1, tolerance=("abs", 1.0),
                                  headline=True),)}, "lower is better"),
    ({"closest": True}, "closest .* needs the training split"),
    ({"needs": "pixels"}, "needs must be"),
    ({"tf_flag": "fid"}, "either tf_flag"),
    ({"function": None}, "either tf_flag"),
])
def test_register_refuses_inconsistent_declarations(scratch, change, needle):
    import dataclasses

    with pytest.raises(ConfigError, match=needle):
        scratch.register(dataclasses.replace(TOY, **change))
    assert "toy" not in scratch.names()


def test_a_metric_column_may_not_shadow_a_schema_column(scratch):
    scratch.register(registry.Metric("shadow", function=mean_gap, columns=(
        registry.Column("nll_bpd", "NLL", direction=-1, tolerance=("abs", 1.0)),)))
    with pytest.raises(ValueError, match="clash"):
        schema.columns()


# -- density and coverage -------------------------------------------------------------------


@pytest.mark.parametrize("n_real,n_fake,dim,shift,scale", [
    (500, 400, 64, 0.0, 1.0), (1000, 1000, 128, 0.3, 1.1), (300, 700, 16, 1.0, 1.0),
    (64, 50, 2048, 0.0, 0.9),
])
def test_density_coverage_match_the_prdc_package(n_real, n_fake, dim, shift, scale, capsys):
    rng = np.random.default_rng(n_real + dim)
    real = rng.standard_normal((n_real, dim))
    fake = rng.standard_normal((n_fake, dim)) * scale + shift
    expected = prdc.compute_prdc(real, fake, nearest_k=5)
    for chunk in (37, 1024):  # the chunking changes nothing
        got = density_coverage(torch.from_numpy(real), torch.from_numpy(fake), 5, chunk=chunk)
        # counts of strict comparisons: equal up to float rounding of the mean
        assert got["density"] == pytest.approx(float(expected["density"]), rel=1e-12, abs=0)
        assert got["coverage"] == pytest.approx(float(expected["coverage"]), rel=1e-12, abs=0)
    # float32 features, as the extractors give them, the same
    got = density_coverage(torch.from_numpy(real).float(), torch.from_numpy(fake).float())
    expected = prdc.compute_prdc(real.astype(np.float32), fake.astype(np.float32), 5)
    assert got["density"] == pytest.approx(float(expected["density"]), rel=1e-12, abs=0)
    assert got["coverage"] == pytest.approx(float(expected["coverage"]), rel=1e-12, abs=0)


def test_density_coverage_closed_forms():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 32, generator=g)
    # a set against itself: every real ball holds its own centre (coverage 1) and, without
    # ties, exactly k points of the set (itself and its k-1 nearest): density 1
    same = density_coverage(real, real.clone(), 5)
    assert same == {"density": pytest.approx(1.0, abs=1e-12), "coverage": 1.0}
    # far away: no generated sample in any ball
    assert density_coverage(real, real + 1000.0, 5) == {"density": 0.0, "coverage": 0.0}
    # every generated sample on one real one: the c balls holding it are covered (its own
    # among them), and each sample counts c: coverage c / N, density c / k
    one = density_coverage(real, real[:1].repeat(10, 1), 5)
    c = round(one["coverage"] * 400)
    assert c >= 1 and one["density"] == pytest.approx(c / 5, abs=1e-12)
    with pytest.raises(ValueError, match="at least 6 real"):
        density_coverage(real[:5], real, 5)


# -- through evaluate -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist():
    return data.load("mnist", "train")[0], data.load("mnist", "test")[0]


@pytest.mark.slow
def test_evaluate_density_coverage_on_classifier_features(mnist, tmp_path, capsys):
    x_train, x_test = mnist
    kw = {"extractor": "mnist-classifier", "n_reference": 1000, "cache_dir": tmp_path,
          "announce": False}
    samples = x_train[:500]
    default = metrics.evaluate(samples, "mnist", metrics="fid,kid,is,pr", **kw)
    assert "density" not in default and default["metrics"] == ["fid", "kid", "is", "pr"]
    both = metrics.evaluate(samples, "mnist", **kw)  # the default set has dc
    assert both["metrics"] == ["fid", "kid", "is", "pr", "dc"]
    assert both["reference_cache"] == "hit"  # density/coverage read the cached features
    for k in ("fid", "kid", "kid_std", "is", "is_std", "precision", "recall", "f_score"):
        assert both[k] == default[k], k  # torch-fidelity's figures are untouched
    # the same figures from features extracted here, by the prdc package
    ext = metrics.resolve_extractor("mnist-classifier", "mnist", announce=False)
    real = metrics.reference_features("mnist", "test", ext, ("features",), n_reference=1000,
                                      cache_dir=tmp_path)["features"]
    with torch.no_grad():
        fake = ext.build(["features"])(samples)[0]
    expected = prdc.compute_prdc(real.numpy(), fake.numpy(), 5)
    assert both["density"] == pytest.approx(float(expected["density"]), rel=1e-12)
    assert both["coverage"] == pytest.approx(float(expected["coverage"]), rel=1e-12)
    # real digits against real digits: density near 1; coverage below 1 with half as many
    # generated as real samples (measured 1.012 and 0.811)
    assert 0.8 < both["density"] < 1.2 and 0.7 < both["coverage"] <= 1.0, both
    text = metrics.format_result(both)
    assert "  density    " in text and "  coverage   " in text
    noise = torch.randint(0, 256, (500, 1, 28, 28), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    bad = metrics.evaluate(noise, "mnist", metrics="dc", **kw)
    assert bad["coverage"] < 0.05 and bad["density"] < 0.05, bad
    assert bad["reference_cache"] == "hit"  # a metric of its own still reads the cache
    with pytest.raises(ConfigError, match="dc needs at least 6"):
        metrics.evaluate(samples[:5], "mnist", metrics="dc", **kw)


# -- a metric registered at run time flows everywhere -----------------------------------------

#: the tiny suite asking for the toy metric
_TOY = {"name": "toy", "evaluation": {"metrics": ["fid", "mean-gap"]}, "timing": {"repeats": 2}}
TOY_SUITE = tiny_suite(**_TOY)


@pytest.mark.slow
@pytest.mark.suite
def test_a_registered_metric_reaches_evaluate_rows_gate_and_report(
        scratch, mnist, tmp_path, monkeypatch, capsys):
    scratch.register(TOY)
    x_train, _ = mnist
    kw = {"extractor": "mnist-classifier", "n_reference": 300, "cache_dir": tmp_path / "c",
          "announce": False}
    ext = metrics.resolve_extractor("mnist-classifier", "mnist", announce=False)
    fig, status = metrics.compute_metrics(x_train[:200], x_train[200:500], ext, "fid,mean-gap")
    assert set(fig) == {"fid", "mean_gap"} and fig["mean_gap"] > 0 and status == "off"
    result = metrics.evaluate(x_train[:200], "mnist", metrics=("toy",), **kw)
    assert result["metrics"] == ["toy"] and result["mean_gap"] > 0
    assert "mean gap" in metrics.format_result(result)

    # the schema, the gate
    assert schema.COLUMNS[schema.COLUMNS.index("mean_gap") + 1] == "extractor"  # the last
    assert schema.DIRECTION["mean_gap"] == -1 and "mean_gap" in schema.DETERMINISTIC
    assert compare.DEFAULT_TOLERANCES["mean_gap"] == ("abs", 0.1)

    # a suite asks for it; its row carries the column
    suite_path = tmp_path / "toy.toml"
    suite_path.write_text(TOY_SUITE)
    assert load_suite(suite_path).models[0].evaluation.metrics == ("fid", "mean-gap")
    out = tmp_path / "run"
    run_suite(suite_path, out, progress=False)
    (row,) = read_rows(out / "results.jsonl")
    assert list(row) == list(schema.COLUMNS)
    assert row["mean_gap"] > 0 and row["fid"] > 0 and row["kid"] is None

    # the report shows it; the gate holds it to its tolerance
    md = report.write_report(out).read_text()
    head = next(ln for ln in md.splitlines() if ln.startswith("| model | family"))
    # density/coverage are default metrics: shown (empty) although the suite skipped them
    assert "| recall | density | coverage | mean gap | NLL bpd |" in head
    assert f"| {report.fmt(row['mean_gap'])} |" in md
    assert "### mnist: mean gap vs speed" in md  # and its figure
    assert (out / "figures" / "mean_gap_vs_speed_mnist.png").is_file()
    for delta, regressed in ((0.05, False), (0.2, True)):
        new_row = copy.deepcopy(row)
        new_row["mean_gap"] += delta
        new = tmp_path / f"new{delta}"
        new.mkdir()
        (new / "results.jsonl").write_text(json.dumps(new_row) + "\n")
        text, bad = compare.compare_dirs(out, new, wide=True)
        assert bad is regressed, text
        line = next((ln for ln in text.splitlines() if " mean_gap (lower better)" in ln), text)
        assert line.rstrip().endswith("REGRESSED" if regressed else "worse"), line

    # unregistered: gone from the schema again, and unknown to a suite
    monkeypatch.undo()
    assert "mean_gap" not in schema.COLUMNS and "mean_gap" not in compare.DEFAULT_TOLERANCES
    with pytest.raises(ConfigError, match="unknown metric 'mean-gap'"):
        load_suite(suite_path)


@pytest.mark.slow
def test_the_documented_metric_gets_its_column_tolerance_figure_and_curve(
        doc_metric, tmp_path):
    """The documented metric, registered from outside with no other file edited: a report
    column, a default tolerance, a figure against speed and a panel of the compute curves."""
    col = registry.column("spread")
    assert compare.DEFAULT_TOLERANCES["spread"] == ("abs", 0.05) == col.tolerance
    assert schema.DIRECTION["spread"] == 1 and "spread" in frame.CURVE_COLUMNS
    run = tmp_path / "ci-cpu"
    shutil.copytree(REPO / "reports" / "ci-cpu", run, ignore=shutil.ignore_patterns(
        "figures", "grids", "report.*", "results.csv"))
    for name in ("results.jsonl", "curve.jsonl"):  # a spread on every row and curve point
        recs = [json.loads(line) for line in (run / name).read_text().splitlines()]
        for i, rec in enumerate(recs):
            rec["spread"] = 0.5 + 0.01 * i
        (run / name).write_text("".join(json.dumps(r) + "\n" for r in recs))
    md = report.write_report(run).read_text()
    head = next(ln for ln in md.splitlines() if ln.startswith("| model | family"))
    assert "| near copy | spread | NLL bpd |" in head
    assert f"| {report.fmt(0.5)} |" in md
    for ds in ("mnist", "fashion-mnist"):
        assert f"### {ds}: spread vs speed" in md
        assert (run / "figures" / f"spread_vs_speed_{ds}.png").is_file()
        # its compute curve: a panel beside KID's and FID's
        cdf = frame.curves(run)
        panels = [k for k, _ in figures.curve_panels(cdf[cdf["dataset"] == ds])]
        assert panels == ["kid", "fid", "spread", "nll_bpd"]
    # the headline figures are still FID's, and nothing else got a figure
    titles = [ln for ln in md.splitlines() if ln.startswith("### mnist: ")]
    assert titles == ["### mnist: quality vs speed", "### mnist: spread vs speed",
                      "### mnist: sampler frontier", "### mnist: throughput vs batch size"]


def test_a_suite_checks_the_samples_a_metric_needs(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(tiny_suite(**{**_TOY, "evaluation": {"metrics": ["fid", "dc"],
                                                         "n_samples": 5}}))
    with pytest.raises(ConfigError, match=r"evaluation\.n_samples.*must be >= 6 \(dc needs 6\)"):
        load_suite(path)


# -- zoo eval --------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_eval_density_coverage(tmp_path, capsys):
    from zoo.cli import main
    from zoo.train import Trainer

    torch.manual_seed(0)
    run = tmp_path / "vae"
    Trainer(zoo.create("vae-mlp", dataset="mnist", hidden=32), "mnist", run, steps=5,
            progress=False).fit()
    capsys.readouterr()
    rc = main(["eval", str(run), "--n", "100", "--metrics", "fid,dc",
               "--extractor", "mnist-classifier", "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "FID" in captured.out and "density" in captured.out and "coverage" in captured.out
    result = json.loads((run / "eval.json").read_text())
    assert result["metrics"] == ["fid", "dc"] and "kid" not in result
    assert 0 <= result["coverage"] <= 1 and result["density"] >= 0
    rc = main(["eval", str(run), "--n", "10", "--metrics", "dc,lpips", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown metric 'lpips'; choose from fid, kid, is, pr, dc, memorization" in err
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "dc (density/coverage)" in " ".join(capsys.readouterr().out.split())

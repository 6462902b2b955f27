"""zoo.bench.results: benchmark rows as a typed pandas DataFrame, the results.csv written
from it, and the documented example of it (the README's third recipe)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import doc_example

import zoo.bench
from zoo.bench import frame
from zoo.bench.report import write_csv
from zoo.bench.rows import read_results, variant

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"


def _row(**over) -> dict:
    row = {
        "suite": "t", "dataset": "mnist", "model": "ddpm", "family": "diffusion",
        "sampler": "ddim", "sampler_options": {"steps": 10, "eta": 0.0, "spacing": "trailing",
                                               "clip_x0": True},
        "params": 1234, "train_steps": 0, "train_seconds": 1.5, "fid": 8.0, "kid": None,
        "nll_bpd": 1.2, "nll_kind": "bound", "n_samples": 100,
        "sample_images_per_s": {"1": 2.0, "64": 30.0}, "latency_ms_p50": {"1": 500.0},
        "peak_mem_mb": 100.0, "seed": 0, "versions": {"torch": "2.5.1"},
        "timestamp": "2026-01-01T00:00:00+00:00",
    }
    return {**row, **over}


def _rows() -> list[dict]:
    return [
        _row(),
        _row(model="gan-dcgan", family="gan", sampler="default", sampler_options={},
             params=None, fid=19.0, nll_bpd=None, nll_kind="none",
             sample_images_per_s={"64": 900.0}, latency_ms_p50={}, seed=1),
        _row(dataset="fashion-mnist", fid=float("nan"), nll_bpd=0.0,
             sampler_options={"steps": 50, "eta": 1.0, "spacing": "trailing",
                              "clip_x0": False}),
    ]


def _write(tmp_path: Path, rows: list[dict]) -> Path:
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


# ----------------------------------------------------------------------------- the frame


def test_columns_are_typed_and_flattened(tmp_path):
    df = zoo.bench.results(_write(tmp_path, _rows()))
    assert len(df) == 3
    assert str(df["params"].dtype) == "Int64" and str(df["seed"].dtype) == "Int64"
    assert str(df["train_steps"].dtype) == "Int64" and str(df["n_samples"].dtype) == "Int64"
    for c in ("fid", "kid", "nll_bpd", "train_seconds", "peak_mem_mb",
              "sample_images_per_s@1", "sample_images_per_s@64", "latency_ms_p50@1",
              "sampler_options.eta"):
        assert df[c].dtype == "float64", c
    for c in ("suite", "dataset", "model", "family", "sampler", "sampler_label", "nll_kind",
              "timestamp", "versions.torch", "sampler_options.spacing"):
        assert df[c].dtype == "string", c
    assert str(df["sampler_options.steps"].dtype) == "Int64"
    assert str(df["sampler_options.clip_x0"].dtype) == "boolean"
    for c in ("sample_images_per_s", "latency_ms_p50", "sampler_options", "versions"):
        assert c not in df.columns
    cols = list(df.columns)
    assert cols.index("sampler_label") == cols.index("sampler") + 1
    # the report's order: dataset, then family, model, sampler options
    assert list(df["dataset"]) == ["fashion-mnist", "mnist", "mnist"]
    assert list(df["model"]) == ["ddpm", "ddpm", "gan-dcgan"]


def test_a_missing_figure_is_nan_never_0(tmp_path):
    df = zoo.bench.results(_write(tmp_path, _rows())).set_index(["dataset", "model"])
    gan = df.loc[("mnist", "gan-dcgan")]
    assert pd.isna(gan["params"]) and pd.isna(gan["nll_bpd"]) and pd.isna(gan["kid"])
    assert pd.isna(gan["sample_images_per_s@1"]) and pd.isna(gan["latency_ms_p50@1"])
    assert pd.isna(gan["sampler_options.steps"]) and pd.isna(gan["sampler_options.clip_x0"])
    assert gan["sample_images_per_s@64"] == 900.0
    fm = df.loc[("fashion-mnist", "ddpm")]
    assert pd.isna(fm["fid"])  # NaN in the JSON: not a figure
    assert fm["nll_bpd"] == 0.0 and fm["train_steps"] == 0  # real zeros stay zeros
    assert not fm["sampler_options.clip_x0"]
    assert df["nll_bpd"].isna().sum() == 1 and df["kid"].isna().all()
    # aggregates skip a missing figure instead of counting it as 0
    assert df["nll_bpd"].mean() == pytest.approx((1.2 + 0.0) / 2)


def test_sampler_label_is_the_reports(tmp_path):
    rows = _rows()
    df = zoo.bench.results(_write(tmp_path, rows))
    by_model = {(r["dataset"], r["model"]): variant(r) for r in rows}
    assert [by_model[k] for k in zip(df["dataset"], df["model"], strict=True)] \
        == list(df["sampler_label"])
    assert "10 steps" in by_model[("mnist", "ddpm")]


def test_a_results_file_or_its_directory(tmp_path):
    d = _write(tmp_path, _rows())
    pd.testing.assert_frame_equal(zoo.bench.results(d), zoo.bench.results(d / "results.jsonl"))


def test_it_imports_no_torch_fidelity():
    code = ("import sys, zoo.bench; zoo.bench.results('reports/smoke-baseline'); "
            "assert 'torch_fidelity' not in sys.modules, 'torch_fidelity imported'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# ----------------------------------------------------------------------------- committed reports


# the CI baseline as committed at 980a0a0, rows of the older schema (steps/eta/temperature
# columns instead of sampler_options, no intervals)
LEGACY = Path(__file__).parent / "data" / "ci-cpu-980a0a0"
COMMITTED = [REPORTS / "smoke-baseline", REPORTS / "ci-cpu", LEGACY]


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_the_committed_reports_read(path):
    rows = read_results(path)
    df = zoo.bench.results(path)
    assert len(df) == len(rows)
    # the older schema (steps/eta/temperature columns) is read as today's: sampler options
    assert {"sampler_options.steps", "sampler_options.eta", "sampler_options.temperature"} \
        <= set(df.columns)
    assert set(df["sampler"]) >= {"ddim", "default"}
    intervals = "fid_ci95" in rows[0]
    assert ("fid_ci95.lo" in df and df["fid_ci95.lo"].notna().all()) == intervals
    assert intervals == (path != LEGACY)
    assert not df["sampler"].str.contains(r"\(").any()
    assert df["sampler_options.steps"].dtype == "Int64"
    assert df["fid"].dtype == "float64" and df["fid"].notna().all()
    gan = df[df.family == "gan"]
    assert len(gan) and gan["nll_bpd"].isna().all() and (gan["nll_kind"] == "none").all()
    timed = {(r["dataset"], r["model"], variant(r)): (r.get("sample_images_per_s") or {}).get("1")
             for r in rows}
    for ds, model, label, v in zip(df["dataset"], df["model"], df["sampler_label"],
                                   df["sample_images_per_s@1"], strict=True):
        want = timed[(ds, model, label)]
        assert (pd.isna(v) and want is None) or v == want  # not timed there: NaN, not 0
    assert df["sampler_label"].notna().all()


# ----------------------------------------------------------------------------- results.csv


def _agree(df: pd.DataFrame, path: Path):
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        recs = list(reader)
        assert reader.fieldnames == list(df.columns)
    assert len(recs) == len(df)
    for rec, (_, line) in zip(recs, df.iterrows(), strict=True):
        for col, v in line.items():
            cell = rec[col]
            if pd.isna(v):
                assert cell == "", (col, cell)
            elif df[col].dtype == "float64":
                assert float(cell) == v or (math.isnan(v) and cell == ""), col
            elif str(df[col].dtype) == "Int64":
                assert int(cell) == v, col
            else:
                assert cell == str(v), col


def test_csv_and_frame_agree(tmp_path):
    rows = _rows()
    d = _write(tmp_path, rows)
    write_csv(read_results(d), tmp_path / "results.csv")
    _agree(zoo.bench.results(d), tmp_path / "results.csv")


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_csv_and_frame_agree_on_the_committed_reports(tmp_path, path):
    shutil.copy(path / "results.jsonl", tmp_path / "results.jsonl")
    write_csv(read_results(tmp_path), tmp_path / "results.csv")
    _agree(frame.results(tmp_path), tmp_path / "results.csv")


# -------------------------------------------------------------------- the documented example


def test_the_documented_example_runs_and_prints_what_it_shows(monkeypatch):
    blocks, where = doc_example("results-frame")
    assert "text" in blocks, f"{where} shows no output after the results-frame example"
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks["python"], where, "exec"), {"__name__": "readme"})

    def lines(s):
        return [ln.rstrip() for ln in s.strip().splitlines()]
    assert lines(out.getvalue()) == lines(blocks["text"])


def _curve(model, fraction, kid, **over) -> dict:
    steps = int(100 * fraction)
    return {"suite": "t", "dataset": "mnist", "model": model, "family": "vae",
            "sampler": "default", "sampler_options": {}, "fraction": fraction,
            "train_steps": steps, "train_images": steps * 32,
            "train_flops": steps * 32 * 2e6, "train_seconds": steps * 0.1,
            "budget": {"steps": 100, "seconds": None, "flops": None},
            "n_samples": 200, "extractor": "mnist-classifier", "ref_split": "test",
            "fid": kid * 100, "fid_ci95": [kid * 90, kid * 110], "kid": kid,
            "kid_ci95": [kid - 0.01, kid + 0.01], "nll_bpd": None, "nll_stderr": None,
            "nll_kind": "none", "nll_images": None, **over}


def test_curves_are_typed_and_split(tmp_path):
    pts = [_curve("b", 1.0, 0.1), _curve("b", 0.5, 0.2), _curve("a", 0.5, 0.3, train_flops=None,
                                                              nll_bpd=1.5, nll_stderr=0.01,
                                                              nll_kind="bound",
                                                              nll_images=64)]
    (tmp_path / "curve.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pts)
                                          + '{"model": "c", "fra')  # a partial last line
    df = zoo.bench.curves(tmp_path)
    assert list(df["model"]) == ["a", "b", "b"] and list(df["fraction"]) == [0.5, 0.5, 1.0]
    for col, dtype in (("fraction", "float64"), ("train_steps", "Int64"),
                       ("train_images", "Int64"), ("train_flops", "float64"),
                       ("budget.steps", "Int64"), ("budget.flops", "float64"),
                       ("kid_ci95.lo", "float64"), ("fid_ci95.hi", "float64"),
                       ("nll_bpd", "float64"), ("model", "string"),
                       ("sampler_label", "string")):
        assert str(df[col].dtype) == dtype, col
    assert math.isnan(df["train_flops"][0]) and df["train_flops"][1] == 50 * 32 * 2e6
    assert df["kid_ci95.lo"][2] == pytest.approx(0.09)
    assert df["budget.steps"].tolist() == [100, 100, 100]
    assert df["budget.seconds"].isna().all()
    assert "kid_ci95" not in df and "budget" not in df
    assert df.equals(zoo.bench.curves(tmp_path / "curve.jsonl"))


def test_curves_of_a_run_without_one(tmp_path):
    with pytest.raises(zoo.core.ConfigError, match="curve"):
        zoo.bench.curves(tmp_path)

"""Benchmark rows as a pandas DataFrame: ``zoo.bench.results(DIR)``.

One row per measurement (the rows of ``rows.read_results``, so a results file of the older
schema is read as today's), in the order of ``results.csv``, which is written from this
frame (``report.write_csv``): the two agree column for column.

Columns: the schema's (``schema.COLUMNS``) in order, the per-batch ones flattened to
``column@batch`` (``sample_images_per_s@64``), dict-valued ones to ``column.key``
(``sampler_options.steps``, ``versions.torch``), a 95% interval ``fid_ci95: [lo, hi]`` to
``fid_ci95.lo`` and ``fid_ci95.hi``, ``sampler_label`` (the sampler as its
declaration labels it, as in the report) after ``sampler``, then any keys a row has beyond
the schema (the option columns of the older schema). Types: integers ``Int64``, other
numbers ``float64``, flags ``boolean``, text ``string``; a figure that does not exist is
``NaN`` or ``<NA>``, never 0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ..core import ConfigError
from ..metrics import registry as metric_registry
from . import schema
from .rows import (
    PER_BATCH,
    check_point,
    per_batch,
    present,
    read_jsonl,
    read_results,
    sort_key,
    variant,
)

LABEL = "sampler_label"  # the column beside "sampler" that rows.variant fills in
CURVE_FILE = "curve.jsonl"  # quality along training, one line per model and budget fraction
# curve.jsonl's keys before and after the quality figures (``curve_columns``)
_CURVE_HEAD = ("suite", "dataset", "model", "family", "sampler", "sampler_options", "fraction",
               "train_steps", "train_images", "train_flops", "train_seconds", "budget",
               "n_samples", "extractor", "ref_split")
_CURVE_TAIL = ("nll_bpd", "nll_stderr", "nll_kind", "nll_images")
_CURVE_KINDS = {"fraction": "float", "train_steps": "int", "train_images": "int",
                "train_flops": "float", "train_seconds": "float", "n_samples": "int",
                "nll_images": "int", "budget.steps": "int", "budget.seconds": "float",
                "budget.flops": "float"}


def curve_columns() -> tuple[str, ...]:
    """curve.jsonl's keys, in order (the runner's ``[evaluation] curve``): each figure the
    report draws along training (the registry's "speed" figures: FID, KID) with its
    interval, between the point's identity and its NLL."""
    quality = [k for c in metric_registry.figure_columns("speed")
               for k in (c.key, c.key + schema.INTERVAL)[:1 + c.interval]]
    return (*_CURVE_HEAD, *quality, *_CURVE_TAIL)


def __getattr__(name: str):
    if name == "CURVE_COLUMNS":  # computed on access: includes a metric registered later
        return curve_columns()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def columns(rows: list[dict]) -> list[str]:
    """The frame's (and results.csv's) columns: schema.COLUMNS in order, per-batch columns
    flattened to ``column@batch`` (ascending batch sizes), dict-valued columns to
    ``column.key``, ``sampler_label`` after ``sampler``, then any extra keys."""
    cols: list[str] = []
    extra = [k for r in rows for k in r if k not in schema.COLUMNS]
    for col in list(schema.COLUMNS) + list(dict.fromkeys(extra)):
        if col in PER_BATCH:
            sizes = sorted({bs for r in rows for bs in per_batch(r, col)})
            cols += [f"{col}@{bs}" for bs in sizes]
        elif col.endswith(schema.INTERVAL):
            cols += [f"{col}.lo", f"{col}.hi"]
        elif any(isinstance(r.get(col), dict) for r in rows):
            keys = dict.fromkeys(k for r in rows if isinstance(r.get(col), dict) for k in r[col])
            cols += [f"{col}.{k}" for k in keys]
        else:
            cols.append(col)
        if col == "sampler":
            cols.append(LABEL)
    return cols


def flatten(row: dict) -> dict:
    """A row as {frame column: value}: per-batch and dict columns flattened, lists as JSON,
    ``sampler_label`` filled in."""
    out = {}
    for col, v in row.items():
        if col in PER_BATCH:
            for bs, x in per_batch(row, col).items():
                out[f"{col}@{bs}"] = x
        elif col.endswith(schema.INTERVAL):
            if isinstance(v, (list, tuple)) and len(v) == 2:
                out[f"{col}.lo"], out[f"{col}.hi"] = v
        elif isinstance(v, dict):
            for k, x in v.items():
                out[f"{col}.{k}"] = x
        elif isinstance(v, list):
            out[col] = json.dumps(v)
        else:
            out[col] = v
    out[LABEL] = variant(row)
    return out


def _integral(v) -> bool:
    return isinstance(v, int) or (isinstance(v, float) and math.isfinite(v) and v.is_integer())


def _series(name: str, values: list, kind: str | None = None) -> pd.Series:
    """One typed column (``kind``, else the schema's type of ``name``); a value that is not
    ``present`` is NaN / <NA>."""
    values = [v if present(v) else None for v in values]
    there = [v for v in values if v is not None]
    kind = kind or schema.column_kind(name)
    if kind is None:  # a column the schema does not type: from its values
        if there and all(isinstance(v, bool) for v in there):
            kind = "bool"
        elif there and all(isinstance(v, int) and not isinstance(v, bool) for v in there):
            kind = "int"
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in there):
            kind = "float"  # no value at all: a missing number
        else:
            kind = "str"
    if kind == "int" and not all(_integral(v) and not isinstance(v, bool) for v in there):
        kind = "float" if all(isinstance(v, (int, float)) for v in there) else "str"
    if kind == "float" and not all(isinstance(v, (int, float)) for v in there):
        kind = "str"
    if kind == "bool" and not all(isinstance(v, bool) for v in there):
        kind = "str"
    if kind == "int":
        return pd.Series([None if v is None else int(v) for v in values], name=name,
                         dtype="Int64")
    if kind == "float":
        return pd.Series([math.nan if v is None else float(v) for v in values], name=name,
                         dtype="float64")
    if kind == "bool":
        return pd.Series(values, name=name, dtype="boolean")
    return pd.Series([None if v is None else str(v) for v in values], name=name,
                     dtype="string")


def frame(rows: list[dict]) -> pd.DataFrame:
    """Rows (as ``rows.read_results`` returns them) as a typed DataFrame, one line per row,
    sorted by dataset, then as the report orders a dataset's rows."""
    rows = [schema.upgrade(r) for r in rows]
    cols = columns(rows)  # dict keys in the order the rows first give them
    rows.sort(key=lambda r: (str(r.get("dataset")), sort_key(r)))
    flat = [flatten(r) for r in rows]
    data = {c: _series(c, [f.get(c) for f in flat]) for c in cols}
    return pd.DataFrame(data, columns=cols)


def results(path: Path | str) -> pd.DataFrame:
    """The rows of a benchmark output directory (or of its ``results.jsonl``) as a
    DataFrame: one line per measurement, typed columns, NaN / <NA> where a figure does not
    exist (never 0). ``df.groupby("family")``, ``df.pivot_table(index="model",
    columns="sampler_label", values="fid")`` and so on."""
    return frame(read_results(path))


def curves(path: Path | str) -> pd.DataFrame:
    """The training curves of a benchmark output directory (its ``curve.jsonl``, or that
    file given directly) as a DataFrame: one line per model, sampler and budget fraction,
    sorted by dataset, model, sampler and fraction; intervals split into ``fid_ci95.lo`` /
    ``.hi`` as in ``results``, the budget into ``budget.steps`` / ``.seconds`` /
    ``.flops``, ``sampler_label`` after ``sampler``. Raises ConfigError when the file is
    missing or corrupt (an unterminated last line, a run stopped mid-write, is left out)."""
    file = Path(path)
    file = file / CURVE_FILE if file.is_dir() else file
    if not file.is_file():
        raise ConfigError(f"{file} does not exist; a suite with [evaluation] curve = [...] "
                          "writes it")
    recs = read_jsonl(file, check_point, partial_tail=[])
    return curve_frame(recs)


def curve_frame(recs: list[dict]) -> pd.DataFrame:
    """Curve points (curve.jsonl's lines) as the typed DataFrame ``curves`` returns."""
    flat = [flatten(r) for r in recs]
    cols: list[str] = []
    known = curve_columns()
    for col in list(known) + [k for r in recs for k in r if k not in known]:
        if col.endswith(schema.INTERVAL):
            cols += [f"{col}.lo", f"{col}.hi"]
        elif col == "budget":
            cols += ["budget.steps", "budget.seconds", "budget.flops"]
        elif any(isinstance(r.get(col), dict) for r in recs):
            cols += [f"{col}.{k}" for k in dict.fromkeys(
                k for r in recs if isinstance(r.get(col), dict) for k in r[col])]
        elif col == "sampler_options":
            pass  # no options at all
        else:
            cols.append(col)
        if col == "sampler":
            cols.append(LABEL)
    cols = list(dict.fromkeys(cols))
    data = {c: _series(c, [f.get(c) for f in flat], _CURVE_KINDS.get(c)) for c in cols}
    df = pd.DataFrame(data, columns=cols)
    if len(df):
        df = df.sort_values(["dataset", "model", LABEL, "fraction"], kind="stable")
    return df.reset_index(drop=True)


def records(df: pd.DataFrame) -> list[dict]:
    """The lines of a frame as {column: Python value} (``value``: None where a figure does
    not exist), for the report's tables."""
    return [{k: value(v) for k, v in zip(df.columns, line, strict=True)}
            for line in df.itertuples(index=False, name=None)]


def value(v):
    """A frame value as the row held it: None where a figure does not exist, Python's own
    int, float, bool or str otherwise."""
    if v is None or v is pd.NA or (isinstance(v, float) and not math.isfinite(v)):
        return None
    return v.item() if hasattr(v, "item") else v


def cell(v) -> str:
    """A frame value as a results.csv cell: empty when it does not exist, never 0."""
    if v is None or v is pd.NA or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if hasattr(v, "item"):  # numpy scalars: Python's own repr of the number
        v = v.item()
    return str(v)

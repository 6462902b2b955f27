"""``zoo compare BASE NEW [--tolerance fid=10% nll_bpd=0.02 ...]``: the CI gate.

Joins the rows of two runs' ``results.jsonl`` by ``schema.KEY``, prints each metric's
base and new value, the delta and its verdict with the metric's direction (lower FID is
better, higher IS is better, ...), and says whether anything regressed:

- ``same`` / ``better`` / ``worse``: within tolerance (or not gated);
- ``REGRESSED``: a gated metric got worse by more than its tolerance, or a gated metric that
  the base run has is missing (None, NaN) in the new run;
- ``n/a``: the figure exists in one run only and is not gated.

Gated by default: the deterministic metrics (``schema.DETERMINISTIC``), which are identical
for identical code, seed and machine. Timings and memory vary with the machine's load: they
are printed, and gated only when a tolerance is given for them. Rows present in one run only
are listed; a row of BASE missing from NEW fails the gate (a measurement that vanished).
"""

from __future__ import annotations

import math
import re

from ..core import ConfigError
from ..metrics import registry as metric_registry
from . import schema
from .rows import PER_BATCH, per_batch, present, read_results, variant

# (kind, value): ("rel", 0.10) allows a 10% worsening of the base value, ("abs", 0.02) 0.02
Tolerance = tuple[str, float]

# the metrics' default tolerances are declared in zoo.metrics.registry (fid 10%, kid 0.005,
# is 5%, precision and recall 0.05, ...); the likelihood's here
_TOLERANCES: dict[str, Tolerance] = {"nll_bpd": ("abs", 0.02)}


def default_tolerances() -> dict[str, Tolerance]:
    """The default gate: every deterministic metric column's tolerance, and NLL's."""
    return {**metric_registry.default_tolerances(), **_TOLERANCES}


def __getattr__(name: str):
    if name == "DEFAULT_TOLERANCES":  # computed on access: includes a metric registered later
        return default_tolerances()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# settings under which quality figures are measured: a change makes them incomparable
EVAL_SETTINGS = ("extractor", "extractor_hash", "ref_split", "n_samples", "n_reference",
                 "nll_images")

_NUMBER = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


def parse_tolerances(items: list[str] | None) -> dict[str, Tolerance]:
    """The tolerances of ``--tolerance`` items over the defaults.

    ``fid=10%``: relative (10% of the base value); ``nll_bpd=0.02``: absolute, in the
    metric's unit; ``fid=off``: not gated. Metrics: those of ``schema.DIRECTION``. Timings
    (``sample_images_per_s``, ``latency_ms_p50``, ...) are gated only when given here.
    """
    tol = default_tolerances()
    for item in items or []:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(
                f"tolerance {item!r} is not METRIC=VALUE (e.g. fid=10% or nll_bpd=0.02)"
            )
        name, _, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if name not in schema.DIRECTION:
            raise ConfigError(
                f"tolerance {item!r}: unknown metric {name!r}; "
                f"valid: {', '.join(schema.DIRECTION)}"
            )
        if value.lower() == "off":
            tol.pop(name, None)
            continue
        rel = value.endswith("%")
        number = value[:-1].strip() if rel else value
        if not _NUMBER.match(number):
            raise ConfigError(
                f"tolerance {item!r}: {value!r} is not a non-negative number, a percentage "
                "(10%) or off"
            )
        x = float(number)
        tol[name] = ("rel", x / 100) if rel else ("abs", x)
    return tol


def _fmt_tol(t: Tolerance | None) -> str:
    if t is None:
        return "-"
    kind, x = t
    return f"{x * 100:g}%" if kind == "rel" else f"{x:g}"


def _value(row: dict, metric: str) -> float | None:
    if "@" in metric:
        col, bs = metric.split("@")
        return per_batch(row, col).get(int(bs))
    v = row.get(metric)
    return float(v) if present(v) and isinstance(v, (int, float)) else None


def _metrics(base: dict, new: dict) -> list[tuple[str, str]]:
    """(metric as printed, metric whose direction and tolerance apply)."""
    out = []
    for m in schema.DIRECTION:
        if m in PER_BATCH:
            sizes = sorted(set(per_batch(base, m)) | set(per_batch(new, m)))
            out += [(f"{m}@{bs}", m) for bs in sizes]
        else:
            out.append((m, m))
    return out


def verdict(metric: str, b: float | None, n: float | None,
            tol: Tolerance | None) -> str:
    """same / better / worse / REGRESSED / n/a for one metric of one row."""
    if b is None and n is None:
        return ""
    if n is None or not math.isfinite(n):
        return "REGRESSED" if tol is not None and b is not None else "n/a"
    if b is None:
        return "n/a"
    worsening = -schema.DIRECTION[metric] * (n - b)  # > 0: worse
    if abs(n - b) <= 1e-12 * max(abs(b), 1.0):
        return "same"
    if worsening < 0:
        return "better"
    if tol is not None:
        kind, x = tol
        allowed = x * abs(b) if kind == "rel" else x
        if worsening > allowed * (1 + 1e-9) + 1e-12:
            return "REGRESSED"
    return "worse"


def _row_name(row: dict) -> str:
    return f"{row.get('dataset')} / {row.get('model')} / {variant(row)}"


def _env(rows: list[dict]) -> str:
    def vals(col):
        out = []
        for r in rows:
            v = r.get(col)
            if isinstance(v, dict):
                v = " ".join(f"{k} {x}" for k, x in v.items())
            v = "n/a" if not present(v) else str(v)
            if v not in out:
                out.append(v)
        return ", ".join(out)
    return (f"device {vals('device')}; dtype {vals('dtype')}; commit {vals('commit')}; "
            f"{vals('versions')}")


def _table(lines: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in lines) for i in range(len(lines[0]))]
    out = []
    for j, r in enumerate(lines):
        out.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def _num(v: float | None) -> str:
    if v is None:
        return "n/a"
    if not math.isfinite(v):
        return str(v)
    return f"{v:.6g}"


def compare_dirs(base, new, tolerances: dict | None = None) -> tuple[str, bool]:
    """Compare two runs (directories or results.jsonl files): (printable table, whether
    anything regressed). ``tolerances``: {metric: (kind, value)} as from ``parse_tolerances``
    (the metrics gated; None: the defaults)."""
    tol = default_tolerances() if tolerances is None else dict(tolerances)
    unknown = [m for m in tol if m not in schema.DIRECTION]
    if unknown:
        raise ConfigError(f"tolerance for unknown metric(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(schema.DIRECTION)}")
    base_rows = {schema.row_key(r): r for r in read_results(base)}
    new_rows = {schema.row_key(r): r for r in read_results(new)}
    common = [k for k in base_rows if k in new_rows]
    only_base = [k for k in base_rows if k not in new_rows]
    only_new = [k for k in new_rows if k not in base_rows]

    lines = [["row", "metric", "base", "new", "delta", "delta %", "tolerance", "verdict"]]
    counts: dict[str, int] = {}
    regressed_items = []
    for k in common:
        b_row, n_row = base_rows[k], new_rows[k]
        for shown, metric in _metrics(b_row, n_row):
            b, n = _value(b_row, shown), _value(n_row, shown)
            t = tol.get(metric)
            v = verdict(metric, b, n, t)
            if not v:
                continue
            counts[v] = counts.get(v, 0) + 1
            if b is not None and n is not None and math.isfinite(n):
                delta = f"{n - b:+.4g}"
                pct = f"{(n - b) / abs(b) * 100:+.1f}%" if b != 0 else "n/a"
            else:
                delta = pct = "n/a"
            arrow = "lower better" if schema.DIRECTION[metric] < 0 else "higher better"
            lines.append([_row_name(b_row), f"{shown} ({arrow})", _num(b), _num(n), delta,
                          pct, _fmt_tol(t), v])
            if v == "REGRESSED":
                regressed_items.append(f"{_row_name(b_row)}: {shown} {_num(b)} -> {_num(n)} "
                                       f"(tolerance {_fmt_tol(t)})")

    out = [f"base: {base}", f"  {_env(list(base_rows.values()))}",
           f"new:  {new}", f"  {_env(list(new_rows.values()))}",
           "gated: " + (", ".join(f"{m} {_fmt_tol(t)}" for m, t in tol.items()) or "nothing"),
           ""]
    differ = {}
    for k in common:
        for col in EVAL_SETTINGS:
            if base_rows[k].get(col) != new_rows[k].get(col):
                differ.setdefault(col, []).append(_row_name(base_rows[k]))
    for col, names in differ.items():
        out.append(f"warning: {col} differs between the runs in {len(names)} row(s) (e.g. "
                   f"{names[0]}): their quality figures are not measured the same way")
    if differ:
        out.append("")
    if len(lines) > 1:
        out += _table(lines)
    else:
        out.append("no rows in common")
    out.append("")
    if only_base:
        out.append(f"rows in BASE only (missing from NEW; this fails the gate): {len(only_base)}")
        out += [f"  - {_row_name(base_rows[k])}" for k in only_base]
    if only_new:
        out.append(f"rows in NEW only (not in BASE; nothing to compare): {len(only_new)}")
        out += [f"  - {_row_name(new_rows[k])}" for k in only_new]
    regressed = bool(regressed_items or only_base)
    tally = ", ".join(f"{counts.get(v, 0)} {v.lower()}"
                      for v in ("same", "better", "worse", "REGRESSED", "n/a"))
    out.append(f"{len(common)} rows compared ({tally})")
    if regressed_items:
        out.append("regressions past tolerance:")
        out += [f"  - {x}" for x in regressed_items]
    out.append("RESULT: REGRESSED" if regressed else "RESULT: OK (no regression past tolerance)")
    return "\n".join(out), regressed


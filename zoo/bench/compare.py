"""``zoo compare BASE NEW [--tolerance fid=10% nll_bpd=0.02 ...]``: the CI gate.

Joins the rows of two runs' ``results.jsonl`` by ``schema.KEY``, prints each metric's
base and new value, the delta and its verdict with the metric's direction (lower FID is
better, higher IS is better, ...), and says whether anything regressed.

A figure measured on N samples is noisy: two runs that differ only in their seed give
different FIDs. Where both rows carry the figure's uncertainty (the 95% interval
``<metric>_ci95`` of ``schema.interval_of``, or NLL's ``nll_stderr``), the gate judges
the delta against it. The standard error of a figure is ``(hi - lo) / (2 * 1.96)`` (NLL:
``nll_stderr``); the delta's is ``se_d = sqrt(se_base**2 + se_new**2)``. The worsening
``w = -direction * (new - base)`` has the 95% interval ``[w - 1.96 se_d, w + 1.96 se_d]``;
``allowed`` is the tolerance (relative: ``x * |base|``; absolute: ``x``). Verdicts:

- ``REGRESSED``: a gated metric got worse beyond its tolerance with 95% confidence
  (``w - 1.96 se_d > allowed``; without an interval: ``w > allowed``), or a gated metric
  that the base run has is missing (None, NaN) in the new run;
- ``can't tell``: the interval of the worsening straddles the tolerance
  (``w - 1.96 se_d <= allowed < w + 1.96 se_d``) and ``w > 0``: the runs' N is too small
  to decide. The row shows the smallest worsening this pair can detect,
  ``allowed + 1.96 se_d``. It does not fail the gate; the summary counts and lists it;
- ``better``: improved past the tolerance with 95% confidence (``w + 1.96 se_d <
  -allowed``; a figure not gated: past zero);
- ``worse``: a figure not gated got worse with 95% confidence (``w - 1.96 se_d > 0``);
- ``same``: otherwise: the delta's 95% interval contains zero, or lies within the
  tolerance, which is the figure's seed-to-seed spread (the defaults are chosen from a
  measured one, ``zoo.metrics.registry``): a change that seeds alone make is no change;
- ``n/a``: the figure exists in one run only and is not gated.

A figure without an uncertainty in either row (rows written before intervals, NLL
without a standard error, timings) is judged by the tolerance alone (any change within it
is better or worse by its sign), and the table says "no interval" for it.

The table fits 120 columns (grouped by row; ``wide=True``: every column on every line), and
a warning line names each setting in which the two runs' rows differ (``SETTINGS``: the
training budget, the model's configuration, N): their figures do not measure the same
thing. Rows measured with different feature extractors (name or weights' sha256) are not
compared at all: the comparison is refused with a line saying which.

A run with ``seeds = K`` holds one row per training seed and their aggregate
(``zoo.bench.seeds``); the gate judges the aggregate, whose interval combines the
training-seed spread with the sampling noise, and leaves its per-seed rows out (a seed-only
pair's training seeds differ, so those rows would not join anyway).

Gated by default: the deterministic metrics (``schema.DETERMINISTIC``), which are identical
for identical code, seed and machine. Timings and memory vary with the machine's load: they
are printed, and gated only when a tolerance is given for them. Rows present in one run only
are listed; a row of BASE missing from NEW fails the gate (a measurement that vanished).
"""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass

from ..core import ConfigError
from ..metrics import registry as metric_registry
from . import schema
from .rows import PER_BATCH, aggregated, per_batch, present, read_results, variant

# (kind, value): ("rel", 0.10) allows a 10% worsening of the base value, ("abs", 0.02) 0.02
Tolerance = tuple[str, float]

# the metrics' default tolerances are declared in zoo.metrics.registry (fid 10%, kid 10%,
# is 5%, precision and recall 0.05, ...); the likelihood's and the reconstructions' here
_TOLERANCES: dict[str, Tolerance] = {"nll_bpd": ("abs", 0.02), "recon_psnr": ("abs", 0.5),
                                     "recon_fid": ("rel", 0.10),
                                     "codebook_perplexity": ("rel", 0.10)}


def default_tolerances() -> dict[str, Tolerance]:
    """The default gate: every deterministic metric column's tolerance, NLL's and the
    reconstruction figures' (PSNR 0.5 dB, rFID 10%, codebook perplexity 10%)."""
    return {**metric_registry.default_tolerances(), **_TOLERANCES}


def __getattr__(name: str):
    if name == "DEFAULT_TOLERANCES":  # computed on access: includes a metric registered later
        return default_tolerances()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# what two runs' rows must share for their figures to measure the same thing: (what the
# warning calls it, the row columns that say it). config_hash covers the model, its options,
# the budget, the batch size, the device type and the seed: it is compared only between
# rows of the same seed (a seed-only pair differs in it and nothing else)
SETTINGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("budget", ("train_steps", "train_flops")),
    ("model config", ("params", "config_hash")),
    ("N", ("n_samples", "n_reference", "nll_images", "recon_n")),
    ("reference split", ("ref_split",)),
)
WIDTH = 120  # the default output's width in columns

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


Z95 = 1.96  # the standard normal's 97.5% quantile: a 95% two-sided interval is +- 1.96 se
CANT_TELL = "can't tell"
VERDICTS = ("same", "better", "worse", CANT_TELL, "REGRESSED", "n/a")


def standard_error(row: dict, metric: str) -> float | None:
    """A figure's standard error in ``row``: from its 95% interval column
    (``(hi - lo) / (2 * 1.96)``), NLL's ``nll_stderr``; None when the row has none."""
    if "@" in metric:
        return None
    if metric == "nll_bpd":
        v = row.get("nll_stderr")
        ok = present(v) and isinstance(v, (int, float)) and math.isfinite(v) and v >= 0
        return float(v) if ok else None
    col = schema.interval_of(metric)
    iv = row.get(col) if col else None
    if (isinstance(iv, (list, tuple)) and len(iv) == 2
            and all(isinstance(x, (int, float)) and present(x) and math.isfinite(x)
                    for x in iv) and iv[1] >= iv[0]):
        return (float(iv[1]) - float(iv[0])) / (2 * Z95)
    return None


@dataclass(frozen=True)
class Judgement:
    """The gate's verdict on one metric of one row, and the figures behind it."""

    verdict: str
    worsening: float | None = None  # -direction * (new - base): > 0 is worse
    se: float | None = None  # the delta's standard error; None: no interval in some row
    allowed: float | None = None  # the tolerance in the metric's unit; None: not gated

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% interval of the worsening."""
        if self.worsening is None or self.se is None:
            return None
        return self.worsening - Z95 * self.se, self.worsening + Z95 * self.se

    @property
    def detectable(self) -> float | None:
        """The smallest worsening this pair of runs can call REGRESSED: allowed + 1.96 se."""
        if self.allowed is None or self.se is None:
            return None
        return self.allowed + Z95 * self.se


def _beyond(x: float, allowed: float) -> bool:
    return x > allowed * (1 + 1e-9) + 1e-12


def judge(metric: str, b: float | None, n: float | None, tol: Tolerance | None,
          se_base: float | None = None, se_new: float | None = None) -> Judgement:
    """The verdict on one metric of one row (see the module docstring for the rule):
    ``se_base``/``se_new`` are the two figures' standard errors (None: none known)."""
    if b is None and n is None:
        return Judgement("")
    if n is None or not math.isfinite(n):
        return Judgement("REGRESSED" if tol is not None and b is not None else "n/a")
    if b is None:
        return Judgement("n/a")
    worsening = -schema.DIRECTION[metric] * (n - b)  # > 0: worse
    se = (math.hypot(se_base, se_new)
          if se_base is not None and se_new is not None else None)
    allowed = None
    if tol is not None:
        kind, x = tol
        allowed = x * abs(b) if kind == "rel" else x
    j = Judgement("", worsening, se, allowed)
    if abs(n - b) <= 1e-12 * max(abs(b), 1.0):
        return Judgement("same", worsening, se, allowed)
    if se is None:  # the tolerance alone
        if allowed is not None and _beyond(worsening, allowed):
            return Judgement("REGRESSED", worsening, se, allowed)
        return Judgement("better" if worsening < 0 else "worse", worsening, se, allowed)
    lo, hi = j.interval
    margin = 0.0 if allowed is None else allowed  # a change within it is seed noise
    if _beyond(lo, margin) and allowed is not None:
        return Judgement("REGRESSED", worsening, se, allowed)
    if worsening > 0 and allowed is not None and _beyond(hi, allowed):  # lo <= allowed < hi
        return Judgement(CANT_TELL, worsening, se, allowed)
    if _beyond(lo, margin):
        return Judgement("worse", worsening, se, allowed)
    if _beyond(-hi, margin):
        return Judgement("better", worsening, se, allowed)
    return Judgement("same", worsening, se, allowed)


def verdict(metric: str, b: float | None, n: float | None, tol: Tolerance | None,
            se_base: float | None = None, se_new: float | None = None) -> str:
    """same / better / worse / can't tell / REGRESSED / n/a for one metric of one row."""
    return judge(metric, b, n, tol, se_base, se_new).verdict


def _row_name(row: dict) -> str:
    seeds = row.get("train_seeds")
    over = f" ({seeds} training seeds)" if isinstance(seeds, int) and seeds > 1 else ""
    return f"{row.get('dataset')} / {row.get('model')}{over} / {variant(row)}"


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


def _num(v: float | None) -> str:
    if v is None:
        return "n/a"
    if not math.isfinite(v):
        return str(v)
    return f"{v:.6g}"


def _short(v: float) -> str:
    return f"{v:.4g}"


def _with_interval(v: float | None, ci: tuple[float, float] | None) -> str:
    if v is None:
        return "n/a"
    if ci is None:
        return _num(v)
    return f"{_short(v)} [{_short(ci[0])}, {_short(ci[1])}]"


def _interval(row: dict, metric: str, v: float | None, se: float | None):
    """The figure's 95% interval as the row gives it (NLL: +- 1.96 nll_stderr)."""
    if v is None or se is None:
        return None
    col = schema.interval_of(metric)
    if col and isinstance(row.get(col), (list, tuple)):
        return float(row[col][0]), float(row[col][1])
    return v - Z95 * se, v + Z95 * se


def _load(base, new, tolerances):
    tol = default_tolerances() if tolerances is None else dict(tolerances)
    unknown = [m for m in tol if m not in schema.DIRECTION]
    if unknown:
        raise ConfigError(f"tolerance for unknown metric(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(schema.DIRECTION)}")
    base_rows = {schema.row_key(r): r for r in aggregated(read_results(base))}
    new_rows = {schema.row_key(r): r for r in aggregated(read_results(new))}
    _same_extractor(base_rows, new_rows)
    return tol, base_rows, new_rows


def _same_extractor(base_rows: dict, new_rows: dict) -> None:
    """A ConfigError when a row of both runs was measured with different feature
    extractors (name or weights): their FID, KID, ... are on different scales."""
    for k, b in base_rows.items():
        n = new_rows.get(k)
        if n is None or not (present(b.get("extractor")) and present(n.get("extractor"))):
            continue
        was = (b.get("extractor"), b.get("extractor_hash"))
        now = (n.get("extractor"), n.get("extractor_hash"))
        if was != now:
            def name(e):
                return f"{e[0]} (sha256 {str(e[1])[:12]})"
            raise ConfigError(f"the runs were measured with different feature extractors "
                              f"({_row_name(b)}: {name(was)} in BASE, {name(now)} in NEW), "
                              "so their figures are not comparable; evaluate both with the "
                              "same extractor (a suite's extractor = ..., zoo eval --extractor)")


def _judgements(tol, base_rows, new_rows) -> list[dict]:
    out = []
    for k in base_rows:
        if k not in new_rows:
            continue
        b_row, n_row = base_rows[k], new_rows[k]
        for shown, metric in _metrics(b_row, n_row):
            b, n = _value(b_row, shown), _value(n_row, shown)
            se_b, se_n = standard_error(b_row, shown), standard_error(n_row, shown)
            t = tol.get(metric)
            j = judge(metric, b, n, t, se_b, se_n)
            if not j.verdict:
                continue
            out.append({"row": _row_name(b_row), "metric": shown, "direction_of": metric,
                        "gated": t is not None, "tolerance": _fmt_tol(t),
                        "verdict": j.verdict, "base": b, "new": n,
                        "se_base": se_b, "se_new": se_n,
                        "ci_base": _interval(b_row, shown, b, se_b),
                        "ci_new": _interval(n_row, shown, n, se_n), "worsening": j.worsening,
                        "se": j.se, "interval": j.interval, "allowed": j.allowed,
                        "detectable": j.detectable})
    return out


def judge_dirs(base, new, tolerances: dict | None = None) -> list[dict]:
    """The gate's judgement of every metric of every row the two runs share: a dict each
    with ``row``, ``metric``, ``gated``, ``verdict``, ``base``, ``new``, ``se_base``,
    ``se_new``, ``ci_base``, ``ci_new`` (the figures' 95% intervals), ``worsening``, ``se``
    (the delta's), ``interval`` (of the worsening), ``allowed`` and ``detectable`` (the
    smallest worsening this pair can detect)."""
    return _judgements(*_load(base, new, tolerances))


def _describe(x: dict) -> str:
    """``fid 22.7 [22.1, 23.3] -> 31.0 [30.2, 31.9] (tolerance 10%; worse by 8.3 [7.3, 9.3])``"""
    text = (f"{x['row']}: {x['metric']} {_with_interval(x['base'], x['ci_base'])} -> "
            f"{_with_interval(x['new'], x['ci_new'])} (tolerance {x['tolerance']}")
    if x["worsening"] is not None:
        text += f"; worse by {_with_interval(x['worsening'], x['interval'])}"
    if x["verdict"] == CANT_TELL:
        text += (f"; allowed {_short(x['allowed'])}; smallest detectable worsening at this N "
                 f"{_short(x['detectable'])}")
    elif x["se"] is None and x["worsening"] is not None:
        text += "; no interval"
    return text + ")"


def _differences(base_rows: dict, new_rows: dict, common: list) -> list[str]:
    """One warning line per setting of ``SETTINGS`` in which the runs' rows differ."""
    out = []
    for label, cols in SETTINGS:
        names, example = [], None
        for k in common:
            b, n = base_rows[k], new_rows[k]
            differ = [c for c in cols if b.get(c) != n.get(c)
                      and (c != "config_hash" or b.get("seed") == n.get("seed"))]
            if differ:
                names.append(_row_name(b))
                example = example or ", ".join(f"{c} {b.get(c)} -> {n.get(c)}" for c in differ)
        if names:
            out.append(f"warning: the runs differ in {label} in {len(names)} of {len(common)} "
                       f"row(s) (e.g. {names[0]}: {example}): their figures do not measure "
                       "the same thing")
    return out


def _cells(x: dict) -> dict[str, str]:
    """The printed cells of one judgement."""
    b, n = x["base"], x["new"]
    cells = {"delta": "n/a", "delta %": "n/a", "delta 95%": "n/a"}
    if b is not None and n is not None and math.isfinite(n):
        cells["delta"] = f"{n - b:+.4g}"
        cells["delta %"] = f"{(n - b) / abs(b) * 100:+.1f}%" if b != 0 else "n/a"
        if x["se"] is not None:
            half = Z95 * x["se"]
            cells["delta 95%"] = f"[{n - b - half:+.3g}, {n - b + half:+.3g}]"
        else:
            cells["delta 95%"] = "no interval"
    det = x["detectable"]
    lower = schema.DIRECTION[x["direction_of"]] < 0
    return {"row": x["row"], "metric": x["metric"],
            "direction": "lower better" if lower else "higher better",
            "base": _num(b), "new": _num(n), "short base": _short_num(b),
            "short new": _short_num(n), **cells,
            "detectable": "-" if det is None else f"{det:.3g}",
            "tolerance": x["tolerance"], "verdict": x["verdict"]}


def _short_num(v: float | None) -> str:
    return "n/a" if v is None else _short(v) if math.isfinite(v) else str(v)


def _align(lines: list[list[str]], left: int, indent: str = "") -> list[str]:
    """Columns padded to their widest cell (the first ``left`` to the left, the others to
    the right), with a rule under the header (the first line)."""
    widths = [max(len(r[i]) for r in lines) for i in range(len(lines[0]))]
    out = []
    for j, r in enumerate(lines):
        out.append(indent + "  ".join(c.ljust(w) if i < left else c.rjust(w)
                                      for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                   .rstrip())
        if j == 0:
            out.append(indent + "  ".join("-" * w for w in widths))
    return out


def _table(judgements: list[dict], wide: bool) -> list[str]:
    """The judgements as a table: every column on a line of its own (``wide``), or grouped
    under each row's name with the figures a reviewer reads (within ``WIDTH`` columns)."""
    cells = [_cells(x) for x in judgements]
    if wide:
        head = ["row", "metric", "base", "new", "delta", "delta %", "delta 95%",
                "detectable", "tolerance", "verdict"]
        return _align([head] + [[c["row"], f"{c['metric']} ({c['direction']})",
                                 *(c[h] for h in head[2:])] for c in cells], 2)
    head = ["metric", "better", "base", "new", "delta [95%]", "delta %", "tol", "verdict"]
    body = [[c["metric"], c["direction"].split()[0], c["short base"], c["short new"],
             c["delta"] if c["delta 95%"] == "n/a" else f"{c['delta']} ({c['delta 95%']})"
             if c["delta 95%"] == "no interval" else f"{c['delta']} {c['delta 95%']}",
             c["delta %"], c["tolerance"], c["verdict"]] for c in cells]
    table = _align([head] + body, 2, "  ")
    out, last = table[:2], None
    for c, line in zip(cells, table[2:], strict=True):
        if c["row"] != last:
            out.append(c["row"])
            last = c["row"]
        out.append(line)
    return out


def _fit(lines: list[str], width: int) -> list[str]:
    """Each line longer than ``width`` wrapped, its continuation indented under it."""
    out = []
    for line in lines:
        if len(line) <= width:
            out.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip()) + 4)
        out += textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False)
    return out


def compare_dirs(base, new, tolerances: dict | None = None,
                 wide: bool = False) -> tuple[str, bool]:
    """Compare two runs (directories or results.jsonl files): (printable text, whether
    anything regressed). ``tolerances``: {metric: (kind, value)} as from ``parse_tolerances``
    (the metrics gated; None: the defaults). The text fits ``WIDTH`` columns unless
    ``wide`` (every column on every line of the table, no wrapping)."""
    tol, base_rows, new_rows = _load(base, new, tolerances)
    common = [k for k in base_rows if k in new_rows]
    only_base = [k for k in base_rows if k not in new_rows]
    only_new = [k for k in new_rows if k not in base_rows]
    judgements = _judgements(tol, base_rows, new_rows)
    counts: dict[str, int] = {}
    for x in judgements:
        counts[x["verdict"]] = counts.get(x["verdict"], 0) + 1
    regressed_items = [_describe(x) for x in judgements if x["verdict"] == "REGRESSED"]
    cant_tell_items = [_describe(x) for x in judgements if x["verdict"] == CANT_TELL]

    out = [f"base: {base}", f"  {_env(list(base_rows.values()))}",
           f"new:  {new}", f"  {_env(list(new_rows.values()))}",
           "gated: " + (", ".join(f"{m} {_fmt_tol(t)}" for m, t in tol.items()) or "nothing"),
           "rule: same when the delta's 95% interval (from both runs' intervals) contains "
           "zero or lies within the tolerance (a gated figure's seed-to-seed spread); "
           "regressed or better when it lies beyond the tolerance, can't tell when a "
           "worsening's interval straddles it (not a failure); a figure without an "
           "interval: the tolerance alone",
           ""]
    warnings = _differences(base_rows, new_rows, common)
    out += warnings + ([""] if warnings else [])
    out += _table(judgements, wide) if judgements else ["no rows in common"]
    out.append("")
    if only_base:
        out.append(f"rows in BASE only (missing from NEW; this fails the gate): {len(only_base)}")
        out += [f"  - {_row_name(base_rows[k])}" for k in only_base]
    if only_new:
        out.append(f"rows in NEW only (not in BASE; nothing to compare): {len(only_new)}")
        out += [f"  - {_row_name(new_rows[k])}" for k in only_new]
    regressed = bool(regressed_items or only_base)
    tally = ", ".join(f"{counts.get(v, 0)} {v if v == CANT_TELL else v.lower()}"
                      for v in VERDICTS)
    out.append(f"{len(common)} rows compared ({tally})")
    if cant_tell_items:
        out.append(f"can't tell (the runs' N is too small to decide; not a failure): "
                   f"{len(cant_tell_items)}")
        out += [f"  - {x}" for x in cant_tell_items]
    if regressed_items:
        out.append("regressions past tolerance:")
        out += [f"  - {x}" for x in regressed_items]
    out.append("RESULT: REGRESSED" if regressed else "RESULT: OK (no regression past tolerance)")
    return "\n".join(out if wide else _fit(out, WIDTH)), regressed

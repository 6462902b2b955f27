"""The rows of a benchmark run, beside their schema: reading ``results.jsonl`` and the
helpers that the report (``report``), its figures (``figures``) and the CI gate
(``compare``) compute from rows: presence, per-batch columns, the sampler variant and
label, grouping, the speed axis and the Pareto front, and the table formatting of a figure.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from ..core import ConfigError
from ..metrics import registry as metric_registry
from ..readers import parse_json, read_text
from . import schema

RESULTS_FILE = "results.jsonl"
NA = "n/a"

# columns holding {batch size (str): value}; flattened to ``column@batch`` in results.csv
PER_BATCH = ("sample_images_per_s", "latency_ms_p50", "latency_ms_p95")


# ----------------------------------------------------------------------------- reading


def results_path(path: Path | str) -> Path:
    """``DIR/results.jsonl`` for a run directory, or the path itself for a file."""
    path = Path(path)
    return path / RESULTS_FILE if path.is_dir() else path


def read_results(path: Path | str, partial_tail: list | None = None) -> list[dict]:
    """The rows of a run directory's ``results.jsonl`` (or of that file given directly).

    Raises ConfigError naming the file (and line) when it is missing, empty or corrupt, or
    a row holds a value of the wrong type (``check_row``). A key measured twice (a row
    appended again) keeps its last row. With ``partial_tail`` (a list), an unterminated
    invalid last line (a run killed mid-write; rerunning zoo bench measures that row again)
    is left out and its line number appended to the list; without it, that is an error too.
    """
    file = results_path(path)
    if not file.exists():
        where = f"{file} does not exist"
        raise ConfigError(
            f"{where}; give a benchmark output directory "
            f"(zoo bench SUITE --out DIR) or its {RESULTS_FILE}"
        )
    rows = {schema.row_key(row): row
            for row in map(schema.upgrade, read_jsonl(file, check_row, partial_tail))}
    if not rows:
        raise ConfigError(f"{file} holds no results rows (it is empty)")
    return list(rows.values())


def read_jsonl(file: Path, check: Callable[[dict], str | None],
               partial_tail: list | None = None) -> list[dict]:
    """The objects of a JSON Lines file (``results.jsonl``, ``curve.jsonl``) in order, each
    read by ``zoo.readers`` (depth bounded) and passed to ``check`` (what is wrong with it,
    or None) before any caller uses it: one ConfigError naming the file, line and key
    otherwise. ``partial_tail``: as in ``read_results``."""
    text = read_text(file, "file")
    found = []
    lines = text.splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{file} line {lineno}"
        try:
            row = parse_json(line, where)
        except ConfigError as e:
            if partial_tail is not None and lineno == len(lines) and not text.endswith("\n"):
                partial_tail.append(lineno)
                continue
            raise ConfigError(
                f"{e}; the file is corrupt (an interrupted write leaves a partial last line: "
                "delete that line and rerun zoo bench to measure the row again)") from None
        problem = check(row) if isinstance(row, dict) else "it is not a JSON object"
        if problem is not None:
            raise ConfigError(f"{where} is not a row zoo wrote: {problem}")
        found.append(row)
    return found


_INT64 = 2**63
_REQUIRED = ("dataset", "model")  # what makes a line a row (or a curve point) at all
_WANT = {"str": "text", "int": "a whole number within 64 bits", "float": "a number",
         "scalar": "text, a number or true/false"}


def _fits(v, kind: str) -> bool:
    """Whether one value is null or a ``kind``: "str", "int" (within 64 bits), "float" (a
    number that converts to a float) or "scalar" (text, true/false, a float or an integer
    within 64 bits)."""
    if v is None:
        return True
    if isinstance(v, str | bool):
        return kind == "scalar" or (kind == "str" and isinstance(v, str))
    if kind == "str" or not isinstance(v, int | float):
        return False
    if kind == "float":
        return isinstance(v, float) or abs(v) <= sys.float_info.max
    if isinstance(v, float):
        return kind == "scalar" or (math.isfinite(v) and v.is_integer() and abs(v) < _INT64)
    return -_INT64 <= v < _INT64


def _flat(v) -> bool:
    """A scalar, or a dict or list of scalars and lists of scalars (sampler options such as
    UniPC's ``disable_corrector = []``, a column the schema does not type)."""
    values = v.values() if isinstance(v, dict) else v if isinstance(v, list) else [v]
    return all(_fits(x, "scalar") or (isinstance(x, list) and all(_fits(y, "scalar")
                                                                   for y in x))
               for x in values)


def _shown(v) -> str:
    kind = {str: "text", bool: "true/false", dict: "an object", list: "a list"}.get(
        type(v), "the number")
    text = json.dumps(v)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


def check_row(row: dict) -> str | None:
    """What is wrong with a results row or curve point read from a file (``"fid must be a
    number, got text 'abc'"``), None when each column holds what the schema says: names as
    short text, figures as numbers (integers within 64 bits), per-batch figures as
    {batch size: number}, intervals as [lo, hi], options as plain values."""
    for key in _REQUIRED:
        if key not in row:
            return f"it lacks {key}"
    for key, v in row.items():
        if key in PER_BATCH:
            ok = v is None or isinstance(v, dict) and all(
                k.isdigit() and len(k) < 10 and _fits(x, "float") for k, x in v.items())
            want = "an object of {batch size: number}"
        elif key.endswith(schema.INTERVAL):
            ok = v is None or (isinstance(v, list) and len(v) == 2
                               and all(_fits(x, "float") for x in v))
            want = "a [low, high] pair of numbers"
        elif key in ("sampler_options", "versions"):
            ok, want = v is None or isinstance(v, dict) and _flat(v), "an object of plain values"
        elif key in schema.KEY and schema.column_kind(key) == "str":
            ok = isinstance(v, str) and 0 < len(v) <= 200 or (v is None and key not in _REQUIRED)
            want = "a name (text of 1 to 200 characters)"
        else:
            kind = schema.column_kind(key)
            ok = _fits(v, kind) if kind else _flat(v)
            want = _WANT[kind or "scalar"]
        if not ok:
            return f"{key} must be {want}, got {_shown(v)}"
    return None


def check_point(point: dict) -> str | None:
    """``check_row`` of a curve.jsonl point, which also has its ``fraction`` of the budget."""
    f = point.get("fraction")
    if isinstance(f, bool) or not isinstance(f, int | float) or not 0 < f <= 1:
        return f"fraction must be a number in (0, 1], got {_shown(f)}"
    return check_row(point)


# ----------------------------------------------------------------------------- helpers


def present(v) -> bool:
    """Whether a figure exists: not None and not NaN."""
    if v is None:
        return False
    if isinstance(v, float) and not math.isfinite(v):
        return False
    return not (isinstance(v, (dict, list, str)) and len(v) == 0)


def aggregated(rows: list[dict]) -> list[dict]:
    """The rows a table or the gate judges: each row of one training seed (``train_seed``)
    whose aggregate over the seeds is among ``rows`` left out (the aggregate stands for
    it, with the interval that includes training-seed spread)."""
    keys = {schema.row_key({**r, "train_seed": None}) for r in rows
            if r.get("train_seeds") is not None and r.get("train_seed") is None}
    return [r for r in rows if r.get("train_seed") is None
            or schema.row_key({**r, "train_seed": None}) not in keys]


def per_batch(row: dict, column: str) -> dict[int, float]:
    """A per-batch-size column as {int batch size: value}, absent values left out."""
    d = row.get(column)
    if not isinstance(d, dict):
        return {}
    out = {}
    for k, v in d.items():
        try:
            bs = int(k)
        except (TypeError, ValueError):
            continue
        if present(v):
            out[bs] = float(v)
    return out


def variant(row: dict) -> str:
    """The sampler variant of a row as its sampler's declaration labels it (name, headline
    options, options off their defaults)."""
    return schema.sampler_label(schema.upgrade(row))


def label(row: dict) -> str:
    return f"{row.get('model')} · {variant(row)}"


def fmt(v, digits: int = 4) -> str:
    """A figure for a table, to ``digits`` significant digits (thousands without decimals):
    ``n/a`` when it does not exist, never 0."""
    if not present(v):
        return NA
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    a = abs(v)
    if a >= 10 ** (digits - 1):
        return f"{v:,.0f}"
    if a == 0:
        return "0"
    if a < 1e-4:
        return f"{v:.{digits - 1}e}"
    decimals = max(digits - 1 - math.floor(math.log10(a)), 0)
    return f"{v:.{decimals}f}"


def fmt_ci(v, lo=None, hi=None, digits: int = 4) -> str:
    """A figure with its 95% interval, ``22.72 [22.10, 23.31]``; the figure alone when the
    interval does not exist (rows written before intervals), ``n/a`` when the figure does
    not."""
    text = fmt(v, digits)
    if text == NA or not (present(lo) and present(hi)):
        return text
    return f"{text} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


def fmt_pm(v, half=None, digits: int = 4) -> str:
    """A figure with a symmetric spread, ``0.976 ± 0.014`` (the figure alone without one)."""
    text = fmt(v, digits)
    if text == NA or not present(half):
        return text
    return f"{text} ± {fmt(half, 2)}"


def interval(row, key: str) -> tuple[float, float] | None:
    """The 95% interval of figure ``key`` of a row (a results row, its ``<key>_ci95: [lo,
    hi]``, or a frame record, its ``<key>_ci95.lo`` / ``.hi``); None when there is none."""
    ci = row.get(key + schema.INTERVAL)
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        lo, hi = ci
    else:
        lo, hi = row.get(f"{key}{schema.INTERVAL}.lo"), row.get(f"{key}{schema.INTERVAL}.hi")
    if present(lo) and present(hi):
        return float(lo), float(hi)
    return None


def fmt_params(v) -> str:
    if not present(v):
        return NA
    v = float(v)
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def fmt_nll(row: dict, unit: str = "") -> str:
    """"1.234 ± 0.004 (exact)", "≤ 1.300 (bound)" (an upper bound), or n/a."""
    v = row.get("nll_bpd")
    if not present(v):
        return NA
    kind = row.get("nll_kind") or "?"
    text = f"{'≤ ' if kind == 'bound' else ''}{v:.3f}"
    if present(row.get("nll_stderr")):
        text += f" ± {row['nll_stderr']:.3f}"
    return f"{text}{unit} ({kind})"


def by_dataset(rows: Iterable[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(str(row.get("dataset")), []).append(row)
    for ds in out.values():
        ds.sort(key=sort_key)
    return out


def sort_key(row: dict):
    """The order of rows within a dataset: family, model, sampler, then the sampler's
    options in the order it declares them."""
    def k(v):
        return (v is None, v if isinstance(v, (int, float)) else str(v))
    row = schema.upgrade(row)
    options = row.get("sampler_options")
    options = options.values() if isinstance(options, dict) else ()
    return (str(row.get("family")), str(row.get("model")), str(row.get("sampler")),
            *(k(v) for v in options))


def per_model(rows: list[dict]) -> list[dict]:
    """One row per model (the first of its sampler variants): for per-model figures
    (NLL, training speed) repeated in each sampler row."""
    seen: dict[str, dict] = {}
    for row in rows:
        seen.setdefault(str(row.get("model")), row)
    return list(seen.values())


def headline() -> str:
    """The key of the registry's headline quality column (FID)."""
    col = metric_registry.headline()
    if col is None:
        raise ConfigError("no registered metric declares the headline column (FID's)")
    return col.key


def small_n(key: str | None = None) -> str | None:
    """The column compared instead of ``key`` (default the headline) where N differs: its
    ``Column.small_n`` (KID for FID), None when it has none."""
    col = metric_registry.column(key or headline())
    alt = col.small_n if col is not None else None
    return alt if alt is not None and metric_registry.column(alt) is not None else None


def comparison(ns, has_kid: bool, key: str | None = None) -> tuple[str, str | None]:
    """The quality figure to compare rows measured at sample sizes ``ns`` by, and why when
    it is not ``key`` (default the headline, FID): its ``small_n`` stand-in (KID) when the
    Ns differ (FID is biased upward at small N, KID is unbiased) and some row has it
    (``has_kid``); ``key`` otherwise."""
    key = key or headline()
    ns = sorted({int(n) for n in ns if present(n)})
    alt = small_n(key)
    if len(ns) > 1 and has_kid and alt is not None:
        name, alt_name = metric_registry.column(key).label, metric_registry.column(alt).label
        return alt, (f"{alt_name} is the comparison figure here: the rows' N differ "
                     f"({', '.join(str(n) for n in ns)}) and {name} is biased at small N.")
    return key, None


# ----------------------------------------------------------------------------- speed axis


def speed_batch(rows: list[dict]) -> tuple[int | None, bool]:
    """The batch size to compare sampling speed at: the largest one every row with a speed
    was timed at, (bs, True); when there is none in common, (None, False) and each row is
    taken at its own largest batch."""
    sets = [set(per_batch(r, "sample_images_per_s")) for r in rows]
    sets = [s for s in sets if s]
    if not sets:
        return None, False
    common = set.intersection(*sets)
    return (max(common), True) if common else (None, False)


def speed(row: dict, bs: int | None) -> float | None:
    d = per_batch(row, "sample_images_per_s")
    if not d:
        return None
    if bs is None:
        return d[max(d)]
    return d.get(bs)


def pareto_front(rows: list[dict], bs: int | None, key: str | None = None) -> list[dict]:
    """The rows no other row beats on both ``key`` (default the headline, FID; better in
    its column's direction) and sampling speed (higher), sorted from the best quality to
    the fastest."""
    key = key or headline()
    col = metric_registry.column(key)
    sign = -1.0 if col is not None and col.direction > 0 else 1.0  # pareto: lower is better
    pts = [(r, sign * float(r[key]), speed(r, bs)) for r in rows if present(r.get(key))]
    return pareto([(r, f, s) for r, f, s in pts if s is not None])


def pareto(pts: list[tuple]) -> list:
    """Of (item, quality (lower is better), speed (higher is better)) points, the items no
    other point beats on both, sorted from the best quality to the fastest."""
    front = []
    for r, f, s in pts:
        dominated = any(
            (f2 <= f and s2 >= s) and (f2 < f or s2 > s) for _, f2, s2 in pts
        )
        if not dominated:
            front.append((r, f, s))
    front.sort(key=lambda t: (t[1], -t[2]))
    return [r for r, _, _ in front]


def calls(row: dict) -> int | None:
    """Network evaluations per image of a row's sampler: its ``network_calls``, or for rows
    written before that column its ``steps`` option."""
    n = row.get("network_calls")
    if present(n):
        return int(n)
    opts = row.get("sampler_options")
    steps = opts.get("steps") if isinstance(opts, dict) else None
    return int(steps) if present(steps) else None


def frontier_lines(rows: list[dict]) -> dict[tuple, list[dict]]:
    """The rows with the headline figure (FID) and a count of network calls, one line per
    model, sampler and its options other than ``steps`` (sorted by calls): the sampler
    frontier's lines."""
    groups: dict[tuple, list[dict]] = {}
    key = headline()
    for r in rows:
        if present(r.get(key)) and calls(r) is not None:
            rest = {k: v for k, v in (r.get("sampler_options") or {}).items() if k != "steps"}
            groups.setdefault((str(r.get("model")), str(r.get("sampler")),
                               json.dumps(rest, sort_keys=True)), []).append(r)
    for rs in groups.values():
        rs.sort(key=calls)
    return dict(sorted(groups.items(), key=lambda t: t[0]))

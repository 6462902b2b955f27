"""Figures over several training seeds: a combined interval, paired differences and the
probability that a candidate is best.

A suite with ``seeds = K`` trains each model K times (training seeds ``seed``, ``seed + 1``,
...) and measures each run with the *same* sampling seed, so every run draws its samples
from the same noise and every row's bootstrap resamples the same sample indices (common
random numbers). Each row keeps the B bootstrap draws behind its intervals (a sidecar
JSON file, ``replicates``); this module combines them.

The combined interval is a two-level (hierarchical) bootstrap of the mean over seeds ``m``.
Replicate b draws K seeds with replacement and, for each, one of that seed's B sampling
draws (the bootstrap of its samples' features), and adds a draw of the training-seed
level:

    rep_b = m + mean_k (R[j_bk, w_bk] - mean R[j_bk]) + sqrt(sb2 / K) * T_b

with ``R`` the seeds' draws, ``T_b`` a Student's t draw with K - 1 degrees of freedom and
``sb2 = max(s2 - sw2, 0)`` the training-seed variance: ``s2`` the sample variance of the
per-seed figures, from which ``sw2`` (the mean variance of one seed's draws) takes out the
sampling noise it holds. The seed level is drawn, not resampled: resampling K = 3 values
with replacement spreads them by ``(K - 1) / K`` of their variance and ignores that the
spread itself is estimated from three values; that plain two-level bootstrap covered the
true mean 76% of the time where training dominates (benchmarks/prob_best_calibration.py),
the t draw 92-97% everywhere, its probabilities of being best within 2.6 points of the
observed frequencies (reports/calibration-cpu/prob_best.md).

Comparisons between candidates are paired: every candidate's replicate b takes the same
sampling draws (the same bootstrap resamples of the same sample indices, common random
numbers, since every run is measured with the same sampling seed), while each candidate's
training-seed level is its own (their training runs are independent); a difference's
interval then loses the sampling noise the candidates share. ``prob_best`` counts, over
such joint replicates, how often each candidate is best.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..core import ConfigError
from ..metrics.intervals import LEVEL, percentile_interval  # noqa: F401 (re-exported)
from ..readers import read_json
from .rows import PER_BATCH, present


def draw_indices(k: int, b: int, draw_seed: int, candidate: str = ""
                 ) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """(the candidate's own generator, seeds [b, k], within [b, k]): the seed positions
    each replicate takes (with replacement; from the candidate's generator, seeded with
    ``draw_seed`` and its name, so candidates' training seeds stay independent) and the
    sampling draw it takes of each (from a generator seeded with ``draw_seed`` alone: the
    same bootstrap resamples for every candidate, common random numbers)."""
    own = np.random.default_rng([int(draw_seed), zlib.crc32(str(candidate).encode())])
    shared = np.random.default_rng(int(draw_seed))
    return own, own.integers(0, k, size=(b, k)), shared.integers(0, b, size=(b, k))


def combine(figures: Sequence[float], replicates: Sequence[Sequence[float]],
            draw_seed: int = 0, candidate: str = "") -> tuple[float, np.ndarray]:
    """(the mean over seeds, its B hierarchical bootstrap replicates) of per-seed
    ``figures`` [K] and each seed's B sampling draws ``replicates`` [K, B] (see the module
    docstring); ``candidate`` names whose they are (its own seed-level draws). One seed:
    its own sampling draws."""
    x = np.asarray(figures, dtype=np.float64)
    r = np.asarray(replicates, dtype=np.float64)
    if x.ndim != 1 or r.ndim != 2 or r.shape[0] != x.shape[0] or r.shape[1] < 2:
        raise ConfigError(f"combine needs K figures and K x B draws (B >= 2), got "
                          f"{x.shape} and {r.shape}")
    k, b = r.shape
    m = float(x.mean())
    dev = r - r.mean(1, keepdims=True)  # each seed's sampling noise, centred
    own, seeds, within = draw_indices(k, b, draw_seed, candidate)
    out = m + dev[seeds, within].mean(1)
    if k > 1:
        sb2 = max(float(x.var(ddof=1)) - float(dev.var(1, ddof=1).mean()), 0.0)
        out = out + math.sqrt(sb2 / k) * own.standard_t(k - 1, size=b)
    return m, out


def interval(figures, replicates, draw_seed: int = 0,
             level: float = LEVEL) -> tuple[float, float, float]:
    """(mean over seeds, lo, hi): the combined ``level`` interval (``combine``)."""
    m, reps = combine(figures, replicates, draw_seed)
    lo, hi = percentile_interval(reps, level, m)
    return m, lo, hi


def row_replicates(row: Mapping, root: str | Path | None = None) -> dict[str, np.ndarray]:
    """A row's bootstrap draws ``{column: [B]}``: its ``bootstrap_replicates`` (rows built
    in memory), else the sidecar file its ``replicates`` column names (relative to
    ``root``, the bench output directory); {} when it has none."""
    held = row.get("bootstrap_replicates")
    if isinstance(held, Mapping):
        return {k: np.asarray(v, dtype=np.float64) for k, v in held.items()}
    rel = row.get("replicates")
    if not present(rel):
        return {}
    path = Path(root or ".") / str(rel)
    data = read_json(path, "bootstrap replicates")
    if not isinstance(data, dict) or not all(
            isinstance(v, list) and all(isinstance(x, int | float) for x in v)
            for v in data.values()):
        raise ConfigError(f"{path} is not a replicates file zoo wrote ({{column: [numbers]}})")
    return {k: np.asarray(v, dtype=np.float64) for k, v in data.items()}


def replicates_of(rows: Sequence[Mapping], metric: str, root: str | Path | None = None,
                  draw_seed: int = 0, candidate: str | None = None
                  ) -> tuple[float, np.ndarray]:
    """(figure, B replicates) of ``metric`` over ``rows``, one row per training seed of one
    candidate (``combine``; ``candidate`` default: the rows' model); ConfigError when a row
    lacks the figure or its draws. Candidates' replicates of one ``draw_seed`` are joint:
    ``prob_best`` takes them."""
    figures, draws = [], []
    for row in rows:
        reps = row_replicates(row, root).get(metric)
        if not present(row.get(metric)) or reps is None:
            raise ConfigError(f"{row.get('model')} (train seed {row.get('train_seed')}) has "
                              f"no {metric} with bootstrap draws (evaluation.bootstrap > 0)")
        figures.append(float(row[metric]))
        draws.append(reps)
    if len({len(d) for d in draws}) != 1:
        raise ConfigError(f"the rows' {metric} draws differ in number: "
                          f"{sorted({len(d) for d in draws})}")
    name = str(rows[0].get("model")) if candidate is None and rows else candidate
    return combine(figures, draws, draw_seed, name or "")


def paired_difference(rows_a: Sequence[Mapping], rows_b: Sequence[Mapping], metric: str,
                      root: str | Path | None = None, draw_seed: int = 0,
                      level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, lo, hi) of ``metric`` of candidate A minus candidate B (their rows, one per
    training seed), from joint replicates: the same sampling draws for both (common random
    numbers), so sampling noise they share cancels."""
    ma, ra = replicates_of(rows_a, metric, root, draw_seed, "a")
    mb, rb = replicates_of(rows_b, metric, root, draw_seed, "b")
    if len(ra) != len(rb):
        raise ConfigError(f"the candidates' {metric} have {len(ra)} and {len(rb)} bootstrap "
                          "draws; pair rows measured with the same evaluation.bootstrap")
    lo, hi = percentile_interval(ra - rb, level, ma - mb)
    return ma - mb, lo, hi


def prob_best(candidates: Mapping[str, Sequence[float]], lower_is_better: bool
              ) -> dict[str, float]:
    """{name: probability it is best}: the share of joint replicates (replicate b of every
    candidate drawn together, as ``replicates_of`` with one ``draw_seed`` gives them) in
    which each candidate has the best figure; ties share the replicate."""
    names = list(candidates)
    if not names:
        return {}
    reps = np.asarray([np.asarray(candidates[n], dtype=np.float64) for n in names])
    if reps.ndim != 2:
        raise ConfigError("prob_best needs the same number of replicates for every candidate")
    values = reps if lower_is_better else -reps
    best = values == values.min(0, keepdims=True)
    share = (best / best.sum(0, keepdims=True)).mean(1)
    return {n: float(p) for n, p in zip(names, share, strict=True)}


# -- the aggregate row of a suite's seeds ---------------------------------------------------------

def aggregate(rows: Sequence[Mapping], replicates: Sequence[Mapping[str, np.ndarray]],
              draw_seed: int = 0) -> tuple[dict, dict[str, np.ndarray]]:
    """(the aggregate row, its combined draws ``{column: [B]}``) of one candidate's rows,
    one per training seed, and each row's bootstrap draws (``row_replicates``).

    A figure with draws in every row: the mean over seeds, its interval the combined one
    (``combine``); an interval without draws (a reconstruction figure's): each seed's
    figure taken as normal with the sd its interval implies; a figure without an interval
    (``bootstrap = 0``): the t interval over the seeds. NLL: the mean, its standard
    error ``sqrt(((t/z)^2 sb2 + mean se^2) / K)``. Other numbers: the mean (whole numbers
    rounded); the rest as the first row has them; ``train_seed`` None, ``train_seeds`` K."""
    from . import schema

    k = len(rows)
    out = dict(rows[0])
    out.update(train_seed=None, train_seeds=k, timestamp=rows[-1].get("timestamp"))
    draws: dict[str, np.ndarray] = {}
    for col in out:
        values = [r.get(col) for r in rows]
        if col.endswith(schema.INTERVAL) or col in schema.KEY or col in (
                "train_seed", "train_seeds", "seed", "nll_stderr"):
            continue
        if col in PER_BATCH:
            out[col] = _mean_dict(values) if all(isinstance(v, dict) for v in values) else None
        elif all(_number(v) for v in values):
            out[col] = _mean(values, schema.column_kind(col) == "int")
            ci = schema.interval_of(col)
            if ci is not None:
                out[ci], reps = _combined(col, ci, rows, replicates, draw_seed)
                if reps is not None:
                    draws[col] = reps
        elif any(v != values[0] for v in values) and schema.interval_of(col):
            out[col] = out[schema.interval_of(col)] = None  # missing in some seed
    se = [r.get("nll_stderr") for r in rows]
    if all(_number(v) for v in se) and all(_number(r.get("nll_bpd")) for r in rows):
        out["nll_stderr"] = _nll_se([float(r["nll_bpd"]) for r in rows], se)
    return out, draws


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _mean(values, whole: bool):
    m = float(np.mean(values))
    return int(round(m)) if whole else m


def _mean_dict(values: list[dict]) -> dict:
    """{key: mean} over the keys every dict has a number at (per-batch speeds)."""
    keys = [key for key in values[0] if all(_number(v.get(key)) for v in values)]
    return {key: float(np.mean([v[key] for v in values])) for key in keys}


def _combined(col: str, ci: str, rows, replicates, draw_seed: int):
    """(the combined interval of ``col``, its draws or None when they are not measured)."""
    x = [float(r[col]) for r in rows]
    got = [reps.get(col) for reps in replicates]
    if all(g is not None for g in got) and len({len(g) for g in got}) == 1:
        m, reps = combine(x, got, draw_seed, str(rows[0].get("model")))
        return percentile_interval(reps, LEVEL, m), reps
    intervals = [r.get(ci) for r in rows]
    if all(isinstance(i, list | tuple) and len(i) == 2 and all(map(_number, i))
           for i in intervals):
        sd = np.array([(hi - lo) / (2 * 1.959964) for lo, hi in intervals])
    elif len(x) > 1:  # no sampling interval: the seeds' spread holds that noise too
        sd = np.zeros(len(x))
    else:
        return None, None
    normal = np.random.default_rng(int(draw_seed)).standard_normal((len(x), 200))
    m, reps = combine(x, np.array(x)[:, None] + sd[:, None] * normal, draw_seed,
                      str(rows[0].get("model")))
    return percentile_interval(reps, LEVEL, m), None


def _nll_se(values: list[float], se: list[float]) -> float:
    """The standard error of the mean over seeds of NLLs with standard errors ``se``."""
    k = len(values)
    w = float(np.mean(np.square(se)))
    sb2 = max(float(np.var(values, ddof=1)) - w, 0.0) if k > 1 else 0.0
    return math.sqrt((t_ratio(k) ** 2 * sb2 + w) / k)


def t_ratio(k: int, level: float = LEVEL) -> float:
    """Student's t quantile with ``k - 1`` degrees of freedom over the normal's at the
    two-sided ``level`` (1 for one seed)."""
    if k <= 1:
        return 1.0
    from scipy import stats

    q = 0.5 + level / 2
    return float(stats.t.ppf(q, k - 1) / stats.norm.ppf(q))

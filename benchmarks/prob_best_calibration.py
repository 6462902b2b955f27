"""Calibration of ``zoo.bench.seeds`` on synthetic scores whose truth is known.

Each trial draws C candidates with true means from N(0, spread^2); each candidate is
"trained" K times (seed effects N(0, sb^2)) and each run "measured" once (sampling noise
N(0, sw^2)), its bootstrap draws simulated as B draws of N(0, sw^2) around its figure.
Two checks:

- ``prob_best``: the stated probability that a candidate is best (lower is better),
  binned, against how often the candidate with that probability is truly the best
  (a reliability table);
- the combined interval (``seeds.interval``): how often it covers the candidate's true
  mean; beside it, the plain two-level bootstrap (the K figures resampled with
  replacement as they are, each with one of its sampling draws: ``plain``), which
  ``zoo.bench.seeds`` replaced because it covers too rarely where training dominates.

    OMP_NUM_THREADS=1 python benchmarks/prob_best_calibration.py [--trials 2000]
"""

from __future__ import annotations

import argparse

import numpy as np

from zoo.bench import seeds


def plain(x: np.ndarray, draws: np.ndarray, draw_seed: int) -> tuple[float, np.ndarray]:
    """The plain two-level bootstrap of the mean over seeds: K seeds drawn with
    replacement, each with one of its sampling draws (centred), no correction."""
    k, b = draws.shape
    rng = np.random.default_rng(draw_seed)
    idx, within = rng.integers(0, k, (b, k)), rng.integers(0, b, (b, k))
    dev = draws - draws.mean(1, keepdims=True)
    return float(x.mean()), (x[idx] + dev[idx, within]).mean(1)


def simulate(trials: int, candidates: int = 3, k: int = 3, b: int = 200, spread: float = 1.0,
             sb: float = 0.5, sw: float = 0.5, seed: int = 0, method=None):
    """(stated probabilities [trials, C], truly best [trials, C] bools, covered [trials, C]
    bools) of ``trials`` simulated comparisons; ``method(x, draws, draw_seed)``: how the
    replicates are made (default ``seeds.combine``)."""
    rng = np.random.default_rng(seed)
    stated = np.zeros((trials, candidates))
    truth = np.zeros((trials, candidates), dtype=bool)
    covered = np.zeros((trials, candidates), dtype=bool)
    for t in range(trials):
        mu = rng.normal(0, spread, candidates)
        reps = {}
        for c in range(candidates):
            x = mu[c] + rng.normal(0, sb, k) + rng.normal(0, sw, k)
            draws = x[:, None] + rng.normal(0, sw, (k, b))
            if method is None:
                m, reps[c] = seeds.combine(x, draws, draw_seed=t, candidate=str(c))
            else:
                m, reps[c] = method(x, draws, t * candidates + c)
            lo, hi = seeds.percentile_interval(reps[c], seeds.LEVEL, m)
            covered[t, c] = lo <= mu[c] <= hi
        p = seeds.prob_best(reps, lower_is_better=True)
        stated[t] = [p[c] for c in range(candidates)]
        truth[t, int(np.argmin(mu))] = True
    return stated, truth, covered


def reliability(stated: np.ndarray, truth: np.ndarray, bins: int = 10):
    """[(bin lo, bin hi, count, mean stated, observed frequency)] and the expected
    calibration error (the count-weighted mean |stated - observed|)."""
    s, y = stated.ravel(), truth.ravel().astype(float)
    edges = np.linspace(0, 1, bins + 1)
    table, err = [], 0.0
    for i in range(bins):
        inside = (s >= edges[i]) & ((s < edges[i + 1]) | (i == bins - 1))
        if inside.any():
            table.append((edges[i], edges[i + 1], int(inside.sum()), float(s[inside].mean()),
                          float(y[inside].mean())))
            err += inside.sum() * abs(s[inside].mean() - y[inside].mean())
    return table, err / s.size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=2000)
    args = ap.parse_args()
    print("| K seeds | seed sd | sampling sd | ECE | coverage of the true mean | plain "
          "bootstrap: ECE | coverage |")
    print("|---|---|---|---|---|---|---|")
    tables = {}
    for k, sb, sw in ((3, 0.5, 0.5), (3, 1.0, 0.2), (3, 0.1, 0.5), (3, 0.0, 0.5), (5, 0.5, 0.5)):
        stated, truth, covered = simulate(args.trials, k=k, sb=sb, sw=sw)
        table, ece = reliability(stated, truth)
        tables[(k, sb, sw)] = table
        p_stated, p_truth, p_covered = simulate(args.trials, k=k, sb=sb, sw=sw, method=plain)
        p_ece = reliability(p_stated, p_truth)[1]
        print(f"| {k} | {sb} | {sw} | {ece:.3f} | {covered.mean():.3f} | {p_ece:.3f} | "
              f"{p_covered.mean():.3f} |", flush=True)
    for (k, sb, sw), table in tables.items():
        print(f"\nreliability, K={k}, seed sd {sb}, sampling sd {sw} (3 candidates, "
              "true means N(0, 1)):")
        print("| stated | n | mean stated | observed |")
        print("|---|---|---|---|")
        for lo, hi, n, s, o in table:
            print(f"| {lo:.1f}-{hi:.1f} | {n} | {s:.3f} | {o:.3f} |")


if __name__ == "__main__":
    main()

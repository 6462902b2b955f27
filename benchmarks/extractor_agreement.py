"""Do two feature extractors rank the same models alike? Each run draws N samples once
(one sampling seed); both extractors score the same samples against the same reference
split; the script prints, and writes as Markdown, every model's FID and KID under each
extractor with its 95% interval, and Spearman's and Kendall's rank correlations of the two
rankings (with scipy's p-values: with a handful of models they are weak evidence).

    python benchmarks/extractor_agreement.py RUN [RUN ...] --dataset mnist \
        --extractor mnist-classifier --extractor PATH/TO/ssl --out agreement.md [--n 1000]

A self-supervised extractor made for unlabelled data (``zoo extractor D --unlabelled``)
is checked so against the dataset's shipped classifier: agreement says the figures made
with it order models as the labelled yardstick does.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from scipy import stats

import zoo
import zoo.train
from zoo.metrics import evaluate

FIGURES = ("fid", "kid")


def score(runs: list[Path], dataset: str, extractors: list[str], n: int, seed: int) -> dict:
    """{run (its path below the runs' common folder): {extractor: {figure: (value, (lo,
    hi))}}}; each run's samples drawn once."""
    out = {}
    root = Path(os.path.commonpath([r.resolve() for r in runs])) if len(runs) > 1 else None
    for run in runs:
        model = zoo.train.load_run(run)
        samples = model.sample(n, generator=torch.Generator().manual_seed(seed))
        name = str(run.resolve().relative_to(root)) if root else run.name
        out[name] = {}
        for ex in extractors:
            r = evaluate(samples, dataset, extractor=ex, metrics=FIGURES, seed=seed,
                         announce=False)
            out[name][ex] = {f: (r[f], tuple(r.get(f"{f}_ci95") or (None, None)))
                                 for f in FIGURES}
    return out


def correlations(scores: dict, extractors: list[str]) -> dict:
    """{figure: (spearman rho, p, kendall tau, p)} of the two extractors' values."""
    a, b = extractors
    out = {}
    for f in FIGURES:
        x = [scores[r][a][f][0] for r in scores]
        y = [scores[r][b][f][0] for r in scores]
        rho, p_rho = stats.spearmanr(x, y)
        tau, p_tau = stats.kendalltau(x, y)
        out[f] = (float(rho), float(p_rho), float(tau), float(p_tau))
    return out


def markdown(scores: dict, extractors: list[str], corr: dict, dataset: str, n: int) -> str:
    def cell(value, ci):
        lo, hi = ci
        return f"{value:.4g}" + (f" [{lo:.4g}, {hi:.4g}]" if lo is not None else "")

    a, b = (Path(e).stem if Path(e).suffix == ".pt" else e for e in extractors)
    scores = {run: {Path(e).stem if Path(e).suffix == ".pt" else e: v for e, v in s.items()}
              for run, s in scores.items()}
    lines = [f"# Extractor agreement on {dataset}: {a} vs {b}", "",
             f"{len(scores)} models, {n} samples each (drawn once, scored by both), the "
             "test split as the reference; 95% bootstrap intervals.", "",
             "| model | " + " | ".join(f"{f.upper()} {e}" for f in FIGURES for e in (a, b))
             + " |", "|---" * (1 + 2 * len(FIGURES)) + "|"]
    for run, s in scores.items():
        lines.append(f"| {run} | " + " | ".join(cell(*s[e][f]) for f in FIGURES
                                               for e in (a, b)) + " |")
    lines += ["", "| figure | Spearman rho (p) | Kendall tau (p) |", "|---|---|---|"]
    for f, (rho, p_rho, tau, p_tau) in corr.items():
        lines.append(f"| {f.upper()} | {rho:.3f} ({p_rho:.3g}) | {tau:.3f} ({p_tau:.3g}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--extractor", action="append", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if len(args.extractor) != 2:
        ap.error("give exactly two --extractor")
    if len(args.runs) < 3:
        ap.error("give at least three runs (a rank correlation of two is always +-1)")
    scores = score(args.runs, args.dataset, args.extractor, args.n, args.seed)
    text = markdown(scores, args.extractor, correlations(scores, args.extractor),
                    args.dataset, args.n)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()

"""Calibration of the bootstrap intervals on real models (MNIST, CPU).

1. Sampling noise: one small vae-conv and one small DDPM, each trained once, measured at
   ``--sampling-seeds`` sampling seeds (FID and KID at N = ``--n`` with the MNIST
   classifier's features, B = 200 bootstrap draws). For each figure: how many of the
   seeds' 95% intervals cover the mean over the seeds, and the ratio of the observed
   standard deviation over the seeds to the sd each interval implies ((hi - lo) / 3.92,
   averaged).
2. Training seeds: ``--train-seeds`` tiny vae-conv runs (training seeds 0, 1, ...), each
   measured at the same sampling seed (common random numbers, as a suite with
   ``seeds = K`` does). For every subset of K = 3 runs, the combined interval
   (``zoo.bench.seeds.interval``: hierarchical bootstrap over training seeds and samples)
   is checked for covering the mean over all the runs; the sampling-only interval of the
   subset's mean (its seeds' draws averaged, no training level) beside it.

    OMP_NUM_THREADS=1 ZOO_DATA_ROOT=... python benchmarks/calibration.py \\
        --out reports/calibration-cpu

Writes ``OUT/calibration.json`` (every figure and interval) and ``OUT/README.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

import zoo
from zoo import metrics
from zoo.bench import seeds as zseeds

METRICS = ("fid", "kid")
MODELS = {  # tiny, short-trained: tens of seconds each on one CPU core
    "vae-conv": ({"channels": [16, 32], "conv_hidden": 64, "latent_dim": 16}, 300, 64, {}),
    "ddpm": ({"channels": 8}, 400, 32, {"sampler": "ddim", "steps": 10, "eta": 0.0}),
}


def train(name: str, seed: int, work: Path, steps: int | None = None):
    """Model ``name`` trained with ``seed`` into ``work/NAME-STEPS-seedS`` (reused)."""
    config, default_steps, batch, _ = MODELS[name]
    steps = steps or default_steps
    run = work / f"{name}-{steps}-seed{seed}"
    if (run / "model.pt").is_file():
        return zoo.load(run).eval()
    torch.manual_seed(seed)
    model = zoo.create(name, dataset="mnist", **config)
    zoo.Trainer(model, "mnist", run, progress=False, steps=steps,
                batch_size=batch, seed=seed, sample_n=0, checkpoint_every=10**6,
                device="cpu").fit()
    return zoo.load(run).eval()


def measure(model, name: str, seed: int, n: int) -> dict:
    """FID and KID with intervals and bootstrap draws of ``n`` samples drawn with ``seed``."""
    options = MODELS[name][3]
    r = metrics.evaluate(model, "mnist", "test", "classifier", n=n, metrics=["fid", "kid"],
                         seed=seed, bootstrap=200, replicates=True, announce=False,
                         batch_size=250, **options)
    return {m: {"value": r[m], "ci": r[f"{m}_ci95"], "draws": r["bootstrap_replicates"][m]}
            for m in METRICS}


def sampling_table(runs: dict) -> list[dict]:
    """Per model and metric: coverage of the mean over sampling seeds, spread ratio."""
    out = []
    for name, per_seed in runs.items():
        for m in METRICS:
            v = np.array([r[m]["value"] for r in per_seed])
            ci = np.array([r[m]["ci"] for r in per_seed])
            mean = v.mean()
            implied = float(((ci[:, 1] - ci[:, 0]) / (2 * 1.959964)).mean())
            out.append({"model": name, "metric": m, "seeds": len(v), "mean": float(mean),
                        "covered": int(((ci[:, 0] <= mean) & (mean <= ci[:, 1])).sum()),
                        "observed_sd": float(v.std(ddof=1)), "implied_sd": implied,
                        "ratio": float(v.std(ddof=1) / implied)})
    return out


def training_table(runs: list[dict], k: int = 3) -> list[dict]:
    """Per metric: how many K-subsets' combined (and sampling-only) intervals cover the
    mean over every training run."""
    out = []
    for m in METRICS:
        v = np.array([r[m]["value"] for r in runs])
        draws = np.array([r[m]["draws"] for r in runs])
        truth = v.mean()
        combined = sampling = 0
        widths, sampling_widths = [], []
        subsets = list(itertools.combinations(range(len(runs)), k))
        for i, sub in enumerate(subsets):
            sub = list(sub)
            mean, lo, hi = zseeds.interval(v[sub], draws[sub], draw_seed=i)
            combined += lo <= truth <= hi
            widths.append(hi - lo)
            avg = draws[sub].mean(0) - draws[sub].mean() + mean  # sampling noise only
            slo, shi = np.percentile(avg, [2.5, 97.5])
            sampling += slo <= truth <= shi
            sampling_widths.append(shi - slo)
        implied = float(np.mean(widths)) / (2 * 1.959964)
        out.append({"metric": m, "runs": len(runs), "k": k, "subsets": len(subsets),
                    "mean": float(truth), "seed_sd": float(v.std(ddof=1)),
                    "combined_covered": int(combined), "sampling_covered": int(sampling),
                    "combined_width": float(np.mean(widths)),
                    "sampling_width": float(np.mean(sampling_widths)),
                    # the sd of a K-run mean (seed sd / sqrt K) over the sd the combined
                    # interval implies
                    "ratio": float(v.std(ddof=1) / np.sqrt(k) / implied)})
    return out


def readme(result: dict) -> str:
    a = result["args"]
    lines = ["# Calibration of the bootstrap intervals on real models (CPU)", "",
             f"Made by `python benchmarks/calibration.py --out reports/calibration-cpu "
             f"--sampling-seeds {a['sampling_seeds']} --train-seeds {a['train_seeds']} "
             f"--n {a['n']}` (OMP_NUM_THREADS=1, {result['seconds']:.0f} s). MNIST, the "
             "shipped MNIST classifier's features, N = "
             f"{a['n']} samples against the test split, B = 200 bootstrap draws."
             + (" The sampling-seed figures were reused from an earlier run of the same "
                "command (`--sampling-from`), the seconds are the training seeds' alone."
                if a.get("sampling_from") else ""), "",
             "## Sampling seeds: one trained model, many sampling seeds", "",
             "Coverage: how many of the seeds' 95% intervals hold the mean over the seeds "
             "(about 95% expected; the mean itself is noisy, so a little more). Ratio: the "
             "observed sd over the seeds / the sd the intervals imply ((hi - lo) / 3.92, "
             "mean over seeds): 1 is calibrated, above 1 too narrow.", "",
             "| model | metric | seeds | mean | covered | observed sd | implied sd | ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["sampling"]:
        lines.append(f"| {r['model']} | {r['metric']} | {r['seeds']} | {r['mean']:.4g} | "
                     f"{r['covered']}/{r['seeds']} ({r['covered'] / r['seeds']:.0%}) | "
                     f"{r['observed_sd']:.3g} | {r['implied_sd']:.3g} | {r['ratio']:.2f} |")
    lines += ["", "## Training seeds: the combined interval", "",
              "Tiny vae-conv runs differing only in their training seed, each measured with "
              "the same sampling seed. For every subset of K runs, the combined interval "
              "(`zoo.bench.seeds`: training-seed level and sampling level) and the "
              "sampling-only interval of the subset's mean are checked for covering the "
              "mean over all runs.", "",
              "| metric | runs | K | subsets | seed sd | combined covers | width | ratio | "
              "sampling-only covers | width |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["training"]:
        s = r["subsets"]
        lines.append(f"| {r['metric']} | {r['runs']} | {r['k']} | {s} | {r['seed_sd']:.3g} | "
                     f"{r['combined_covered']}/{s} ({r['combined_covered'] / s:.0%}) | "
                     f"{r['combined_width']:.3g} | {r['ratio']:.2f} | {r['sampling_covered']}/{s} "
                     f"({r['sampling_covered'] / s:.0%}) | {r['sampling_width']:.3g} |")
    lines += ["", "Ratio: the sd of a mean of K runs (the runs' sd / sqrt K) over the sd the "
              "combined interval implies (its width / 3.92); below 1 the interval is wider "
              "than the spread it covers (its t quantile for K - 1 = 2 degrees of freedom "
              "is 2.2 times the normal's). The subsets overlap (they share runs), so their "
              "coverages are not independent trials; `calibration.json` holds every "
              "figure.", "",
              "The probability of being best (`zoo.bench.seeds.prob_best`) and the "
              "combined interval on synthetic scores whose truth is known: "
              "[prob_best.md](prob_best.md) (`benchmarks/prob_best_calibration.py`).", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="reports/calibration-cpu")
    ap.add_argument("--sampling-seeds", type=int, default=20)
    ap.add_argument("--train-seeds", type=int, default=6)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--work", default="/tmp/zoo-calibration", help="the training runs")
    ap.add_argument("--sampling-from", help="a calibration.json whose sampling-seed figures "
                    "to reuse (measure the training seeds only)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    sampling = {}
    if args.sampling_from:
        sampling = json.loads(Path(args.sampling_from).read_text())["runs"]["sampling"]
    for name in [] if sampling else MODELS:
        model = train(name, 0, Path(args.work))
        sampling[name] = []
        for s in range(args.sampling_seeds):
            sampling[name].append(measure(model, name, 1000 + s, args.n))
            print(name, s, {m: round(sampling[name][-1][m]["value"], 4) for m in METRICS},
                  flush=True)
    training = []
    for s in range(args.train_seeds):
        training.append(measure(train("vae-conv", s, Path(args.work), steps=150), "vae-conv", 1000,
                                args.n))
        print("train seed", s, {m: round(training[-1][m]["value"], 4) for m in METRICS},
              flush=True)
    result = {"args": vars(args), "seconds": time.time() - t0,
              "sampling": sampling_table(sampling), "training": training_table(training),
              "runs": {"sampling": {k: [{m: {x: r[m][x] for x in ("value", "ci")}
                                        for m in METRICS} for r in v]
                                    for k, v in sampling.items()},
                       "training": [{m: {x: r[m][x] for x in ("value", "ci", "draws")}
                                     for m in METRICS} for r in training]}}
    (out / "calibration.json").write_text(json.dumps(result, indent=1))
    (out / "README.md").write_text(readme(result))
    print(readme(result))


if __name__ == "__main__":
    main()

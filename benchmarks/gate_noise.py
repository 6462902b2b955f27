"""How often does ``zoo compare`` cry wolf, and does it still catch a real regression?

Trains the same model K times with only the seed changed (the suite's top-level ``seed``)
and compares every ordered pair of those runs with the default gate: any REGRESSED among
them is a false alarm. Then trains the same model with a tenth of the steps (the planted
regression) for the first P seeds and compares each against every seed-only run (BASE: the
full run, NEW: the planted one): those should say REGRESSED.

    OMP_NUM_THREADS=1 python benchmarks/gate_noise.py --out reports/gate-cpu

Writes ``summary.json`` and ``summary.md`` to ``--out`` (the runs stay under
``--out/runs/``, reused when rerun with the same options) and prints the false-alarm count,
the "can't tell" count per metric, the median smallest detectable change of FID and KID at
this N, the planted regressions' verdicts and each gated figure's seed-only spread (the
largest difference between two seeds, which the default tolerances are chosen from).

    python benchmarks/gate_noise.py --out reports/gate-cpu --spread

prints the seed-only spread again from ``--out/summary.json`` alone (no training).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

CANT = "can't tell"

SUITE = """
name = "gate-noise"
seed = {seed}
device = "cpu"
datasets = ["{dataset}"]
[evaluation]
n_samples = {n}
extractor = "classifier"
metrics = {metrics}
nll_images = {nll_images}
batch_size = 500
grid_images = 4
bootstrap = {bootstrap}
[timing]
batch_sizes = [1]
repeats = 1
warmup = 0
[[models]]
name = "{model}"
budget = {{ steps = {steps} }}
batch_size = 128
train = {{ ema_decay = 0.0, checkpoint_every = {steps} }}
"""


def run(out: Path, tag: str, seed: int, steps: int, args) -> Path:
    from zoo.bench.runner import run_suite

    d = out / "runs" / f"{tag}-seed{seed}"
    d.mkdir(parents=True, exist_ok=True)
    suite = d / "suite-input.toml"
    suite.write_text(SUITE.format(seed=seed, dataset=args.dataset, n=args.n,
                                  metrics=json.dumps(args.metrics.split(",")),
                                  nll_images=args.nll_images, bootstrap=args.bootstrap,
                                  model=args.model, steps=steps))
    t = time.perf_counter()
    run_suite(suite, d, progress=False)
    print(f"  {tag} seed {seed} ({steps} steps): {time.perf_counter() - t:.0f} s",
          flush=True)
    return d


def seed_spread(pair_details: list[dict]) -> dict[str, dict]:
    """{metric: median, largest difference between two seeds (absolute and relative to the
    median), standard deviation} of each gated figure over the seed-only runs."""
    values: dict[str, dict[int, float]] = {}
    for p_ in pair_details:
        for x in p_["judgements"]:
            if x["gated"] and x["base"] is not None and x["new"] is not None:
                values.setdefault(x["metric"], {}).update({p_["base"]: x["base"],
                                                           p_["new"]: x["new"]})
    out = {}
    for m, by_seed in values.items():
        xs = list(by_seed.values())
        med = statistics.median(xs)
        largest = max(xs) - min(xs)
        out[m] = {"seeds": len(xs), "median": med, "largest_difference": largest,
                  "relative": largest / abs(med) if med else None,
                  "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0}
    return out


def print_spread(spread: dict[str, dict]) -> None:
    print("seed-only spread (largest difference between two seeds, and its share of the "
          "median):")
    for m, s in spread.items():
        rel = "n/a" if s["relative"] is None else f"{s['relative'] * 100:.1f}%"
        print(f"  {m}: median {s['median']:.4g}, largest difference "
              f"{s['largest_difference']:.4g} ({rel}), sd {s['sd']:.3g} over {s['seeds']} seeds")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="reports/gate-cpu")
    p.add_argument("--model", default="vae-conv")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--n", type=int, default=1000, help="evaluation.n_samples")
    p.add_argument("--metrics", default="fid,kid,pr,dc")
    p.add_argument("--nll-images", type=int, default=200)
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("-k", type=int, default=6, help="seed-only runs (seeds 0..K-1)")
    p.add_argument("--planted", type=int, default=2,
                   help="planted regressions (a tenth of the steps, seeds 0..P-1)")
    p.add_argument("--tolerance", nargs="*", default=[], metavar="METRIC=VALUE",
                   help="as zoo compare's (e.g. kid=10%%); summaries named after them")
    p.add_argument("--spread", action="store_true",
                   help="print the seed-only spread of --out/summary.json and stop")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.spread:
        print_spread(seed_spread(json.loads((out / "summary.json").read_text())["pair_details"]))
        return 0
    t0 = time.perf_counter()
    print(f"{args.k} seed-only runs of {args.model} ({args.steps} steps) and {args.planted} "
          f"planted ({max(1, args.steps // 10)} steps), N = {args.n}", flush=True)
    seeds = [run(out, "full", s, args.steps, args) for s in range(args.k)]
    planted = [run(out, "tenth", s, max(1, args.steps // 10), args)
               for s in range(args.planted)]

    from zoo.bench.compare import judge_dirs, parse_tolerances

    tol = parse_tolerances(args.tolerance)
    stem = "summary" + "".join("-" + t.replace("=", "").replace("%", "pct")
                               for t in args.tolerance)

    pairs = []
    for (i, a), (j, b) in itertools.permutations(enumerate(seeds), 2):
        pairs.append({"base": i, "new": j, "judgements": judge_dirs(a, b, tol)})
    plants = []
    for (i, a), (j, b) in itertools.product(enumerate(seeds), enumerate(planted)):
        plants.append({"base": i, "planted": j, "judgements": judge_dirs(a, b, tol)})

    def failed(pair):
        return any(x["verdict"] == "REGRESSED" for x in pair["judgements"])

    false_alarms = [p_ for p_ in pairs if failed(p_)]
    metrics = []
    for x in pairs[0]["judgements"] if pairs else []:
        if x["gated"] and x["metric"] not in metrics:
            metrics.append(x["metric"])
    per_metric = {}
    for m in metrics:
        js = [x for p_ in pairs for x in p_["judgements"] if x["metric"] == m]
        det = [x["detectable"] for x in js if x["detectable"] is not None]
        planted_v = [x["verdict"] for p_ in plants for x in p_["judgements"]
                     if x["metric"] == m]
        per_metric[m] = {
            "verdicts": {v: sum(x["verdict"] == v for x in js)
                         for v in ("same", "better", "worse", "can't tell", "REGRESSED")},
            "median_smallest_detectable": statistics.median(det) if det else None,
            "median_allowed": statistics.median(x["allowed"] for x in js
                                                if x["allowed"] is not None)
            if any(x["allowed"] is not None for x in js) else None,
            "median_value": statistics.median(x["base"] for x in js if x["base"] is not None),
            "planted": {v: planted_v.count(v) for v in sorted(set(planted_v))},
        }
    planted_summary = []
    for p_ in plants:
        planted_summary.append({
            "base_seed": p_["base"], "planted_seed": p_["planted"], "fails": failed(p_),
            "verdicts": {x["metric"]: x["verdict"] for x in p_["judgements"] if x["gated"]},
        })
    summary = {
        "command": "python benchmarks/gate_noise.py " + " ".join(sys.argv[1:] if argv is None
                                                                 else argv),
        "model": args.model, "dataset": args.dataset, "steps": args.steps,
        "planted_steps": max(1, args.steps // 10), "n_samples": args.n,
        "metrics": args.metrics, "tolerance": args.tolerance, "bootstrap": args.bootstrap,
        "k": args.k,
        "false_alarms": len(false_alarms), "pairs": len(pairs),
        "false_alarm_pairs": [(p_["base"], p_["new"]) for p_ in false_alarms],
        "per_metric": per_metric,
        "planted_detected": sum(x["fails"] for x in planted_summary),
        "planted_pairs": len(planted_summary), "planted": planted_summary,
        "seed_spread": seed_spread(pairs),
        "seconds": round(time.perf_counter() - t0),
        "pair_details": [{"base": p_["base"], "new": p_["new"], "judgements": p_["judgements"]}
                         for p_ in pairs],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")

    def f(v):
        return "n/a" if v is None else f"{v:.4g}"

    md = [f"# Gate noise: {args.model} on {args.dataset}, {args.steps} steps, "
          f"N = {args.n}", "",
          "Gate: default tolerances" + (f" with {' '.join(args.tolerance)}"
                                        if args.tolerance else "") + ".", "",
          f"False alarms (REGRESSED between seed-only runs): **{len(false_alarms)} / "
          f"{len(pairs)}** ordered pairs of {args.k} seeds.", "",
          f"Planted regression ({summary['planted_steps']} steps) caught: "
          f"**{summary['planted_detected']} / {summary['planted_pairs']}** pairs.", "",
          "| metric | median value | tolerance (median allowed) | seed pairs: same / better /"
          " worse / can't tell / REGRESSED | median smallest detectable worsening | "
          "planted verdicts |",
          "|---|---|---|---|---|---|---|"]
    for m, s in per_metric.items():
        v = s["verdicts"]
        md.append(f"| {m} | {f(s['median_value'])} | {f(s['median_allowed'])} | "
                  f"{v['same']} / {v['better']} / {v['worse']} / {v[CANT]} / "
                  f"{v['REGRESSED']} | {f(s['median_smallest_detectable'])} | "
                  f"{', '.join(f'{k} {n}' for k, n in s['planted'].items())} |")
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")

    print(f"false alarms: {len(false_alarms)} / {len(pairs)} ordered seed-only pairs")
    for m, s in per_metric.items():
        print(f"  {m}: can't tell {s['verdicts'][CANT]} / "
              f"{len(pairs)}, median smallest detectable worsening "
              f"{f(s['median_smallest_detectable'])} (allowed {f(s['median_allowed'])}, "
              f"value {f(s['median_value'])}); planted: {s['planted']}")
    print_spread(summary["seed_spread"])
    print(f"planted regressions caught: {summary['planted_detected']} / "
          f"{summary['planted_pairs']}")
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')} "
          f"({summary['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

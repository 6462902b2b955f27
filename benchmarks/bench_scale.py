"""The GPU fast path, measured: training throughput and MFU per model with and without
``torch.compile``, and sampling throughput (DDIM-50, the Transformer's cached decoding) at
batch 1, 64 and the largest batch that fits, with and without CUDA graphs.

    python benchmarks/bench_scale.py train  --out reports/scale-h200
    python benchmarks/bench_scale.py sample --out reports/scale-h200
    python benchmarks/bench_scale.py report --out reports/scale-h200   # scale.md again

Each part appends its rows to OUT/<part>.jsonl as it goes (a killed run keeps what it
measured) and rewrites OUT/scale.md from every row there.

train   each model at its batch size in the ``full`` suite, trained by the Trainer as ``zoo train``
        does (bf16 autocast, channels_last for the convolutional models, fused AdamW), once
        eager and once with ``--compile``: the first step (where compilation happens) apart
        from the steady-state images/s, model FLOPs per image counted with FlopCounterMode,
        and MFU against the device's measured bf16 matmul peak (``zoo.bench.timing``).
sample  DDIM-50 (``ddpm``, ``ddpm-full``) and the Transformer's decoding (``ar-transformer``,
        ``ar-transformer-full``) in float32 at batch 1, 64 and the largest batch that fits
        (found eagerly by doubling and bisecting, out-of-memory caught, up to a limit per
        model that keeps the part inside ten minutes on an H200), the whole loop
        captured as one CUDA graph against the eager loop, timed interleaved (median of
        pair ratios); graphed and eager samples are checked identical for the same seed.
        For DDIM the share of the loop's time outside the network: the loop against the
        same number of network calls captured alone.
Weights are untrained for sampling (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import zoo
from zoo import data as zdata
from zoo.bench import timing
from zoo.nn.graphs import capture, release_graphs
from zoo.train import Trainer

# model, batch size (the full suite's), training steps timed (the first one apart)
TRAIN = [
    ("ar-transformer-full", 64, 120),
    ("ar-transformer", 64, 300),
    ("ddpm", 128, 400),
    ("vae-conv", 128, 1000),
    ("gan-dcgan", 128, 600),
    ("ddpm-full", 128, 200),
]
# model, sampler options, batch sizes timed besides 1, 64 and the largest, largest tried
SAMPLE = [
    ("ar-transformer", {"temperature": 1.0}, (256,), 1024),
    ("ddpm", {"sampler": "ddim", "steps": 50}, (256, 1024), 8192),
    ("ar-transformer-full", {"temperature": 1.0}, (), 256),
    ("ddpm-full", {"sampler": "ddim", "steps": 50}, (256,), 512),
]
DATASET = "mnist"


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev: torch.device) -> float:
    sync(dev)
    t = time.perf_counter()
    fn()
    sync(dev)
    return time.perf_counter() - t


def interleaved(a, b, dev: torch.device, pairs: int) -> dict:
    """a and b alternately after one warm-up call of each: both medians (s), and the median
    of the pair ratios b/a."""
    a(), b()
    ta, tb = [], []
    for _ in range(pairs):
        ta.append(timed(a, dev))
        tb.append(timed(b, dev))
    return {"a_s": statistics.median(ta), "b_s": statistics.median(tb),
            "b_over_a": statistics.median(y / x for x, y in zip(ta, tb, strict=True))}


def append(out: Path, part: str, row: dict) -> None:
    print(json.dumps(row), flush=True)
    with open(out / f"{part}.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def bench_train(out: Path, dev: torch.device, only: list[str], steps_override=None) -> None:
    images, _ = zdata.load(DATASET, "train")
    peak = timing.peak_flops(dev)
    for name, batch, steps in TRAIN:
        if only and name not in only:
            continue
        steps = steps_override or steps
        flops = None
        for compiled in (False, True):
            # compiled code of the models before (shared forwards such as Sequential's)
            # counts towards Dynamo's recompile limit, past which it silently runs eagerly
            torch._dynamo.reset()
            torch.manual_seed(0)
            model = zoo.create(name, dataset=DATASET)
            with tempfile.TemporaryDirectory() as tmp:
                trainer = Trainer(model, DATASET, tmp, steps=steps, batch_size=batch,
                                  device=str(dev), compile=compiled, progress=False, seed=0,
                                  checkpoint_every=10**9, log_every=10**9)
                try:
                    summary = trainer.fit()
                except Exception as e:  # one model's failure must not lose the others
                    append(out, "train", {"model": name, "compile": compiled,
                                          "error": f"{type(e).__name__}: {e}"[:300]})
                    continue
            if flops is None:
                fresh = zoo.create(name, dataset=DATASET).place(dev)
                flops = timing.train_flops_per_image(fresh, images[:batch].to(dev))
            ips = summary["steady_images_per_s"]
            append(out, "train", {
                "model": name, "compile": compiled, "batch_size": batch,
                "params": model.num_parameters(), "steps": summary["steps"],
                "first_step_s": summary["first_step_seconds"], "steady_images_per_s": ips,
                "train_flops_per_image": flops,
                "tflops_per_s": flops * ips / 1e12 if flops and ips else None,
                "mfu": timing.mfu(flops, ips, dev), "peak_tflops": peak / 1e12 if peak else None,
                "peak_dtype": timing.peak_dtype(dev), "device": timing.device_name(dev),
                "torch": torch.__version__,
            })
            del model, trainer
            if dev.type == "cuda":
                torch.cuda.empty_cache()


def bench_sample(out: Path, dev: torch.device, only: list[str], pairs: int) -> None:
    for name, options, extra, limit in SAMPLE:
        if only and name not in only:
            continue
        torch.manual_seed(0)
        model = zoo.create(name, dataset=DATASET).place(dev).eval()

        def draw(b, graph, seed=0, model=model, options=options):
            gen = torch.Generator(dev).manual_seed(seed)
            return model.sample(b, generator=gen, batch_size=b, cuda_graph=graph, **options)

        for b in (1, 64):
            same = torch.equal(draw(b, True, seed=1), draw(b, False, seed=1))
            append(out, "sample", {"model": name, "check": "graphed == eager", "batch": b,
                                   **options, "identical": same})

        def fits(b, draw=draw):
            try:
                draw(b, False)
                sync(dev)
                return True
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                return False

        biggest = timing.largest_batch(fits, 64, limit) if dev.type == "cuda" else None
        flops = timing.sample_flops_per_image(model, **options)
        for b in sorted({1, 64, *extra, biggest or 64}):
            n_pairs = pairs if b <= 64 else max(2, pairs // 2)
            try:
                r = interleaved(lambda b=b: draw(b, True), lambda b=b: draw(b, False), dev,
                                n_pairs)
            except torch.cuda.OutOfMemoryError:  # the graph's own pool on top of the max
                release_graphs(model)
                torch.cuda.empty_cache()
                append(out, "sample", {"model": name, "batch": b, **options,
                                       "error": "graphed run out of memory"})
                continue
            row = {"model": name, "batch": b, "largest": b == biggest, "limit": limit,
                   **options,
                   "params": model.num_parameters(),
                   "graphed_images_per_s": b / r["a_s"], "eager_images_per_s": b / r["b_s"],
                   "graph_speedup": r["b_over_a"], "pairs": n_pairs,
                   "sample_flops_per_image": flops,
                   "graphed_tflops_per_s": flops * b / r["a_s"] / 1e12 if flops else None}
            if options.get("sampler") == "ddim":
                net_s = network_only(model, b, options["steps"], dev)
                row.update(network_only_images_per_s=b / net_s,
                           outside_network_share_graphed=1 - net_s / r["a_s"],
                           outside_network_share_eager=1 - net_s / r["b_s"])
            append(out, "sample", {**row, "device": timing.device_name(dev),
                                   "torch": torch.__version__})
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()


def network_only(model, b: int, calls: int, dev: torch.device) -> float:
    """Seconds of ``calls`` U-Net forwards at batch b captured alone in one graph."""
    x = torch.randn(b, *model.image_shape, device=dev)
    t = torch.tensor([500], device=dev)
    with torch.inference_mode():
        graph, _ = capture(lambda: [model.net(x, t) for _ in range(calls)],
                           lambda: model.net(x, t), dev)
    graph.replay()
    return statistics.median(timed(graph.replay, dev) for _ in range(5))


def fmt(value, digits=1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def write_report(out: Path) -> None:
    def rows(part):
        path = out / f"{part}.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines() if x] if path.exists() else []

    train, sample = rows("train"), rows("sample")
    lines = ["# GPU fast path", ""]
    env = next((r for r in train + sample if "device" in r), None)
    if env:
        lines += [f"Device: {env['device']}; torch {env['torch']}. Written by "
                  "`benchmarks/bench_scale.py` (its docstring says what each figure is).", ""]
    if train:
        peak = next((r["peak_tflops"] for r in train if r.get("peak_tflops")), None)
        lines += ["## Training (bf16 autocast, fused AdamW, channels_last for conv models)", "",
                  f"MFU: model FLOPs per image x steady images/s over the measured dense "
                  f"bf16 matmul peak ({fmt(peak)} TFLOP/s); attention counted in full, as "
                  "nanoGPT and PaLM count it (the causal mask skips about half of it).", "",
                  "| model | params | batch | compile | first step s | steady images/s "
                  "| GFLOP/image | TFLOP/s | MFU |", "|---|---|---|---|---|---|---|---|---|"]
        notes = []
        for r in train:
            if "error" in r:
                lines.append(f"| {r['model']} | | | {r['compile']} | {r['error']} | | | | |")
                continue
            if "note" in r:
                notes.append(f"{r['model']} with compile: {r['note']}")
            lines.append(
                f"| {r['model']} | {r['params']/1e6:.2f}M | {r['batch_size']} | "
                f"{'yes' if r['compile'] else 'no'}{' (*)' if 'note' in r else ''} | "
                f"{fmt(r['first_step_s'], 2)} | "
                f"{fmt(r['steady_images_per_s'], 0)} | "
                f"{fmt(r['train_flops_per_image'] and r['train_flops_per_image'] / 1e9, 2)} | "
                f"{fmt(r['tflops_per_s'])} | "
                f"{'n/a' if r['mfu'] is None else format(r['mfu'], '.1%')} |")
        lines += ["", *(f"(*) {n}" for n in notes), ""] if notes else [""]
    if sample:
        lines += ["## Sampling (float32), CUDA graph vs eager", "",
                  "| model | sampler | batch | graphed images/s | eager images/s | speedup "
                  "| outside network (graphed / eager) |", "|---|---|---|---|---|---|---|"]
        checks = []
        for r in sample:
            what = (f"DDIM-{r['steps']}" if r.get("sampler") == "ddim"
                    else f"T={r.get('temperature')}")
            if "check" in r:
                checks.append(f"{r['model']} {what} batch {r['batch']}: "
                              f"{'identical' if r['identical'] else 'DIFFERENT'}")
                continue
            if "error" in r:
                lines.append(f"| {r['model']} | {what} | {r['batch']} | {r['error']} | | | |")
                continue
            share = (f"{r['outside_network_share_graphed']:.1%} / "
                     f"{r['outside_network_share_eager']:.1%}"
                     if "outside_network_share_graphed" in r else "n/a")
            batch = str(r["batch"])
            if r.get("largest"):
                batch += " (the limit tried)" if r["batch"] == r.get("limit") else " (largest)"
            lines.append(f"| {r['model']} | {what} | {batch} | "
                         f"{fmt(r['graphed_images_per_s'])} | {fmt(r['eager_images_per_s'])} | "
                         f"{r['graph_speedup']:.2f}x | {share} |")
        lines += ["", "Graphed against eager samples, same seed: " + "; ".join(checks) + ".", ""]
    (out / "scale.md").write_text("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=("train", "sample", "report"))
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--models", default="", help="comma-separated subset")
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--steps", type=int, help="training steps of every model (a quick check)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(args.device)
    only = [m for m in args.models.split(",") if m]
    if args.part != "report" and dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_scale: CUDA is not available here")
    if args.part == "train":
        bench_train(out, dev, only, args.steps)
    elif args.part == "sample":
        bench_sample(out, dev, only, args.pairs)
    write_report(out)
    print((out / "scale.md").read_text())


if __name__ == "__main__":
    main()

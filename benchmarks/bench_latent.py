"""Speed of the latent models against their pixel-space counterparts at comparable sizes
(issue #21's targets), on this machine's CPU or a GPU.

Every comparison is interleaved (latent A, pixel B, A B ...; ``peers.interleaved``) after
warm-up and reported as the median of the pair ratios pixel time / latent time ("latent
faster by"), with both absolute medians beside it: one timing on a shared machine drifts
while the ratio of alternating runs holds.

    python benchmarks/bench_latent.py --out reports/latent-cpu   # everything, ~4 min on 2 cores
    python benchmarks/bench_latent.py --only sample              # one part
    python benchmarks/bench_latent.py --quick                    # smoke run, under a minute
    python benchmarks/bench_latent.py --device cuda

Parts:
  sample  ``vq-transformer`` (49 codes of a ``vq-vae`` per 28x28 image, decoded by it) vs
          ``ar-transformer`` (784 subpixels), both dim 128, depth 4, heads 4:
          KV-cache sampling at temperature 1, ms per image at batch 1 and 64 (``--batches``).
          Target: >= 10x.
  ddim    ``latent-diffusion`` (a 1-level U-Net over a ``kl-autoencoder``'s 4x7x7 latents,
          ``channels`` 84: 1,111,660 trainable parameters, +4.6% of ``ddpm``'s 1,062,497)
          vs ``ddpm``: DDIM-50 sampling at batch 64, ms per image, the latent model's
          including its decoder.
  train   the same pair: one ``train_step`` at batch 64 on MNIST (forward, backward, Adam;
          the latent model's including its frozen encoder's forward), images/s.
          Target: >= 3x.

The autoencoders are freshly initialised (untrained): the speed of either stage does not
depend on the weights. FLOPs per image (matmuls, convolutions, attention; counted by
``torch.utils.flop_counter`` on one image's sampling and on one training step, as
``zoo.bench.timing``) and the achieved FLOP/s against this device's measured matmul peak
are shown beside the times (the peak is timed once, at the start, by ``peak_flops``: on a
loaded machine the shares move with the load, and can pass 100%).
``--out DIR`` writes ``DIR/latent.md`` (the tables) and
``DIR/latent.json`` (environment, parameter counts, rows).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from peers import interleaved

import zoo
from zoo import data
from zoo.bench.timing import (
    device_name,
    git_commit,
    peak_dtype,
    peak_flops,
    sample_flops_per_image,
    train_flops_per_image,
)

#: latent-diffusion's U-Net width: 1,111,660 trainable parameters against ddpm's 1,062,497
#: (+4.6%; 80 gives 1,008,804, -5.1%)
LD_CHANNELS = 84
#: the transformers' size: ar-transformer's default
TRANSFORMER = {"dim": 128, "depth": 4, "heads": 4}
TARGETS = {"sample": 10.0, "train": 3.0}
DEVICE = torch.device("cpu")


def synced(fn: Callable[[], object]) -> Callable[[], None]:
    """fn, returning once the device has finished it (so wall-clock timing is honest)."""
    def run() -> None:
        fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize(DEVICE)
    return run


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_models(folder: Path, ld_channels: int) -> dict:
    """The four models, seeded, on DEVICE; the autoencoders saved untrained into folder."""
    paths = {}
    for name in ("vq-vae", "kl-autoencoder"):
        torch.manual_seed(0)
        paths[name] = folder / f"{name}.pt"
        zoo.create(name, "mnist").save(paths[name])
    models = {}
    for key, name, opts in (
        ("vq", "vq-transformer", {**TRANSFORMER, "autoencoder": str(paths["vq-vae"])}),
        ("ar", "ar-transformer", TRANSFORMER),
        ("ld", "latent-diffusion", {"channels": ld_channels,
                                    "autoencoder": str(paths["kl-autoencoder"])}),
        ("ddpm", "ddpm", {}),
    ):
        torch.manual_seed(0)
        models[key] = zoo.create(name, "mnist", **opts).place(DEVICE)
    return models


def parameter_rows(models: dict) -> list[dict]:
    described = {
        "vq": "vq-transformer (dim 128, depth 4, heads 4) over vq-vae (256 codes, 7x7)",
        "ar": "ar-transformer (dim 128, depth 4, heads 4)",
        "ld": (f"latent-diffusion (channels {models['ld'].config.channels}, 1-level U-Net) "
               "over kl-autoencoder (4x7x7)"),
        "ddpm": "ddpm (default: channels 32, 3-level U-Net)",
    }
    return [{"model": key, "description": described[key], "trainable": trainable(m),
             "with_frozen_autoencoder": m.num_parameters()} for key, m in models.items()]


def achieved(flops: float | None, images_per_s: float) -> float | None:
    return flops * images_per_s / 1e9 if flops else None


def row(part: str, what: str, unit: str, latent: str, pixel: str, t_latent: float,
        t_pixel: float, ratio: float, n: int, pairs: int, flops: tuple) -> dict:
    """One comparison: times in seconds per call of n images; ratio = median pixel/latent."""
    ips_latent, ips_pixel = n / t_latent, n / t_pixel
    per = (lambda ips: ips) if unit == "images/s" else (lambda ips: 1e3 / ips)
    return {
        "part": part, "what": what, "unit": unit, "latent": latent, "pixel": pixel,
        "latent_value": per(ips_latent), "pixel_value": per(ips_pixel),
        "latent_faster_by": ratio, "target": TARGETS.get(part), "batch": n, "pairs": pairs,
        "latent_mflop_per_image": flops[0] / 1e6 if flops[0] else None,
        "pixel_mflop_per_image": flops[1] / 1e6 if flops[1] else None,
        "latent_gflop_per_s": achieved(flops[0], ips_latent),
        "pixel_gflop_per_s": achieved(flops[1], ips_pixel),
    }


def bench_sample(models: dict, batches: list[int], pairs: int, warmup: int) -> list[dict]:
    vq, ar = models["vq"], models["ar"]
    flops = (sample_flops_per_image(vq, temperature=1.0),
             sample_flops_per_image(ar, temperature=1.0))
    g_vq = torch.Generator(DEVICE).manual_seed(0)
    g_ar = torch.Generator(DEVICE).manual_seed(0)
    rows = []
    for n in batches:
        p = 4 * pairs if n == 1 else pairs  # batch 1 is quick and noisier
        t_vq, t_ar, ratio = interleaved(
            synced(lambda n=n: vq.sample(n, temperature=1.0, batch_size=n, generator=g_vq)),
            synced(lambda n=n: ar.sample(n, temperature=1.0, batch_size=n, generator=g_ar)),
            p, warmup=warmup if n > 1 else 3 * warmup)
        rows.append(row("sample", f"KV-cache sampling, temperature 1, batch {n}", "ms/image",
                        "vq-transformer", "ar-transformer", t_vq, t_ar, ratio, n, p, flops))
    return rows


def bench_ddim(models: dict, n: int, pairs: int, warmup: int) -> list[dict]:
    ld, ddpm = models["ld"], models["ddpm"]
    opts = {"sampler": "ddim", "steps": 50}
    flops = sample_flops_per_image(ld, **opts), sample_flops_per_image(ddpm, **opts)
    g_ld = torch.Generator(DEVICE).manual_seed(0)
    g_px = torch.Generator(DEVICE).manual_seed(0)
    t_ld, t_px, ratio = interleaved(
        synced(lambda: ld.sample(n, batch_size=n, generator=g_ld, **opts)),
        synced(lambda: ddpm.sample(n, batch_size=n, generator=g_px, **opts)),
        pairs, warmup=warmup)
    return [row("ddim", f"DDIM-50 sampling (latent: with decoder), batch {n}", "ms/image",
                "latent-diffusion", "ddpm", t_ld, t_px, ratio, n, pairs, flops)]


def bench_train(models: dict, n: int, pairs: int, warmup: int) -> list[dict]:
    ld, ddpm = models["ld"], models["ddpm"]
    x = data.load("mnist", "train")[0][:n].to(DEVICE)
    flops = train_flops_per_image(ld, x), train_flops_per_image(ddpm, x)
    ld.train()
    ddpm.train()
    opt_ld, opt_px = ld.configure_optimizers(), ddpm.configure_optimizers()
    t_ld, t_px, ratio = interleaved(synced(lambda: ld.train_step(x, opt_ld)),
                                    synced(lambda: ddpm.train_step(x, opt_px)),
                                    pairs, warmup=warmup)
    return [row("train", f"training step (fwd, bwd, Adam; latent: with encoder), batch {n}",
                "images/s", "latent-diffusion", "ddpm", t_ld, t_px, ratio, n, pairs, flops)]


def fmt_flops(r: dict, peak: float | None) -> tuple[str, str]:
    def one(side: str) -> tuple[str, str]:
        mflop, gflops = r[f"{side}_mflop_per_image"], r[f"{side}_gflop_per_s"]
        if mflop is None:
            return "-", "-"
        share = f" ({100 * gflops * 1e9 / peak:.0f}%)" if peak else ""
        return f"{mflop:,.0f}", f"{gflops:.1f}{share}"

    (fl, gl), (fp, gp) = one("latent"), one("pixel")
    return f"{fl} / {fp}", f"{gl} / {gp}"


PARAM_HEADER = ["| model | trainable parameters | with its frozen autoencoder |", "|---|---|---|"]
ROW_HEADER = ["| comparison | latent model | latent | pixel model | pixel | latent faster by "
              "| target | MFLOP/image latent / pixel | GFLOP/s latent / pixel (% of peak) |",
              "|---|---|---|---|---|---|---|---|---|"]


def param_line(p: dict) -> str:
    frozen = p["with_frozen_autoencoder"]
    return (f"| {p['description']} | {p['trainable']:,} "
            f"| {f'{frozen:,}' if frozen != p['trainable'] else '-'} |")


def row_line(r: dict, peak: float | None) -> str:
    digits = ".1f" if r["unit"] == "images/s" else ".2f"
    flops, rate = fmt_flops(r, peak)
    target = f">= {r['target']:g}x" if r["target"] else "-"
    return (f"| {r['what']} ({r['unit']}) | {r['latent']} | {r['latent_value']:{digits}} "
            f"| {r['pixel']} | {r['pixel_value']:{digits}} | {r['latent_faster_by']:.2f}x "
            f"| {target} | {flops} | {rate} |")


def tables(params: list[dict], rows: list[dict], peak: float | None) -> str:
    return "\n".join([*PARAM_HEADER, *map(param_line, params), "", *ROW_HEADER,
                      *(row_line(r, peak) for r in rows)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("sample", "ddim", "train"))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument("--batches", default="1,64", help="vq- vs ar-transformer sampling batches")
    p.add_argument("--ddim-batch", type=int, default=64)
    p.add_argument("--train-batch", type=int, default=64)
    p.add_argument("--pairs", type=int, default=5,
                   help="interleaved pairs per sampling figure (x4 at batch 1)")
    p.add_argument("--train-pairs", type=int, default=20)
    p.add_argument("--ld-channels", type=int, default=LD_CHANNELS,
                   help="latent-diffusion's U-Net channels (default: parameters matched)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: batches 1,4, DDIM batch 4, train batch 16, 2 pairs")
    p.add_argument("--json", help="also write environment, parameters and rows to this file")
    p.add_argument("--out", help="write latent.md and latent.json into this folder")
    args = p.parse_args()
    if args.quick:
        args.batches, args.ddim_batch, args.train_batch = "1,4", 4, 16
        args.pairs, args.train_pairs = 2, 3
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    # one warm-up round on the CPU; on CUDA the sampling loops are graphed from the 2nd call
    warmup = 2 if DEVICE.type == "cuda" else 1
    peak = peak_flops(DEVICE)
    env = {"device": device_name(DEVICE), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "commit": git_commit(),
           "peak_gflop_per_s": peak / 1e9 if peak else None, "peak_dtype": peak_dtype(DEVICE),
           "load_avg_1m_start": os.getloadavg()[0], "quick": args.quick}
    print(json.dumps(env), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(Path(tmp), args.ld_channels)
    params = parameter_rows(models)
    counts = {q["model"]: q["trainable"] for q in params}
    gap = counts["ld"] / counts["ddpm"] - 1
    print(f"latent-diffusion channels {args.ld_channels}: {counts['ld']:,} trainable "
          f"parameters, {100 * gap:+.1f}% of ddpm's {counts['ddpm']:,}"
          + ("" if abs(gap) <= 0.05 else " (NOT within 5%: pick another --ld-channels)"),
          flush=True)
    print("\n".join([*PARAM_HEADER, *map(param_line, params), "", *ROW_HEADER]), flush=True)
    rows: list[dict] = []
    parts = {
        "sample": lambda: bench_sample(models, [int(b) for b in args.batches.split(",")],
                                       args.pairs, warmup),
        "ddim": lambda: bench_ddim(models, args.ddim_batch, args.pairs, warmup),
        "train": lambda: bench_train(models, args.train_batch, args.train_pairs, 2 * warmup),
    }
    for name, run in parts.items():
        if args.only in (None, name):
            for r in run():
                rows.append(r)
                print(row_line(r, peak), flush=True)
    env["load_avg_1m_end"] = os.getloadavg()[0]
    result = {"env": env, "params": params, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "latent.json").write_text(json.dumps(result, indent=2))
        quick = " --quick" if args.quick else ""
        (out / "latent.md").write_text(
            "# Latent models against their pixel-space counterparts, same machine\n\n"
            + ("**Smoke run (`--quick`): small batches, 2 pairs; not a measurement.**\n\n"
               if args.quick else "")
            + f"`python benchmarks/bench_latent.py{quick} --out {out}`: each pair timed "
            "interleaved (latent, pixel, latent, pixel, ..., median of the pair ratios "
            "after warm-up); latent faster by = pixel time / latent time. Issue #21's "
            "targets: vq-transformer >= 10x per sampled image, latent-diffusion >= 3x "
            "training images/s at equal trainable parameters. Autoencoders untrained (speed "
            "does not depend on the weights).\n\n"
            f"Environment: {env['device']}, {env['threads']} threads, torch {env['torch']}, "
            f"commit {env['commit']}, measured {env['peak_dtype']} matmul peak "
            f"{env['peak_gflop_per_s'] or float('nan'):.0f} GFLOP/s (timed once at the start: "
            "the % of peak below moves with the load), load average "
            f"{env['load_avg_1m_start']:.1f} at the start and {env['load_avg_1m_end']:.1f} "
            "at the end.\n\n" + tables(params, rows, peak) + "\n")
        print(f"wrote {out / 'latent.md'}")


if __name__ == "__main__":
    main()

"""Speed of the diffusion family: zoo's samplers against each other, and zoo against diffusers
at the same parameter count, on this machine's CPU.

Every comparison is interleaved (A B A B ...) and reported as the median of the pair ratios
with both absolute medians beside it: one timing on a shared machine drifts while the ratio
of alternating runs holds.

    python benchmarks/bench_diffusion.py                  # everything (~15 min on 2 idle cores)
    python benchmarks/bench_diffusion.py --only peer      # one part
    python benchmarks/bench_diffusion.py --threads 1
    python benchmarks/bench_diffusion.py --device cuda --bf16 --batches 1,64,256   # a GPU

Parts:
  samplers  zoo's default MNIST model (``ddpm``, 1,062,497 parameters), batch 64: DDIM at
            S = 10, 50, 100 steps, each paired with DDIM-50; DDPM at T = 1000 timed A B A
            between two DDIM-50 runs (``--ddpm-pairs`` repeats it). images/s, and the
            DDIM-50 / DDPM throughput ratio (ideal: 1000 / 50 = 20).
  peer      zoo ``ddpm`` vs diffusers ``UNet2DModel`` with block_out_channels (32, 64, 64),
            one layer per block, attention in the middle block only, GroupNorm of 4 groups
            as zoo's (1,062,497 parameters, the same count), driven by ``DDIMScheduler``:
            DDIM-50 images/s at batch 1 and 64 (trailing spacing, eta 0, x0 clipped on
            both), and one training step at batch 64 (L_simple, Adam, gradient clipping at
            1.0 on both). ratio = peer time / zoo time, so > 1 means zoo is faster.

CUDA graph against eager sampling is measured by benchmarks/bench_scale.py (sample).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import zoo
from zoo import data

T = 1000
BATCH = 64
DEVICE = torch.device("cpu")
AUTOCAST = False


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def timed(fn: Callable[[], object]) -> float:
    """Seconds of one call; on CUDA the queue is drained before and after."""
    sync()
    t = time.perf_counter()
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=AUTOCAST):
        fn()
    sync()
    return time.perf_counter() - t


def interleaved(a: Callable[[], object], b: Callable[[], object], pairs: int,
                warmup: int = 1) -> dict:
    """Time a and b alternately; medians of each and of the b/a ratios."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for _ in range(pairs):
        ta.append(timed(a))
        tb.append(timed(b))
    return {
        "a_s": statistics.median(ta), "b_s": statistics.median(tb),
        "ratio_b_over_a": statistics.median(y / x for x, y in zip(ta, tb, strict=True)),
        "pairs": pairs,
    }


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def forward_flops(model) -> int:
    """Floating-point operations of one U-Net forward on one image (convolutions, matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, *model.image_shape, device=DEVICE)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.net(x, torch.tensor([500], device=DEVICE))
    return counter.get_total_flops()


def bench_samplers(model, pairs: int, ddpm_pairs: int) -> list[dict]:
    gen = torch.Generator(DEVICE).manual_seed(0)

    def ddim(steps: int):
        return lambda: model.sample(BATCH, sampler="ddim", steps=steps, generator=gen)

    def run(sampler: str, steps: int):
        return lambda: model.sample(BATCH, sampler=sampler, steps=steps, generator=gen)

    rows = []
    # each sampler against DDIM-50, interleaved: the frontier's speed-ups at equal network
    # calls are these ratios (the per-call overhead of a multistep or sigma-space step)
    for sampler, steps, calls in (("ddim", 10, 10), ("ddim", 100, 100), ("dpmpp-2m", 10, 10),
                                  ("dpmpp-2m", 20, 20), ("unipc", 10, 10),
                                  ("euler-ancestral", 20, 20), ("heun", 10, 19)):
        r = interleaved(ddim(50), run(sampler, steps), pairs)
        rows.append({
            "part": "samplers", "what": f"{sampler}-{steps} vs DDIM-50, batch {BATCH}",
            "calls": calls,
            "images_per_s": BATCH / r["b_s"], "ddim50_images_per_s": BATCH / r["a_s"],
            "ddim50_speedup_over_this": r["ratio_b_over_a"], "pairs": pairs,
        })
    ref = ddim(50)
    ref()
    if DEVICE.type == "cuda":  # the sampling loop is captured from its second run on
        model.sample(BATCH, sampler="ddpm", generator=gen)
        model.sample(BATCH, sampler="ddpm", generator=gen)
    ratios, t_ddpm, t_ref = [], [], []
    for _ in range(ddpm_pairs):
        a1 = timed(ref)
        b = timed(lambda: model.sample(BATCH, sampler="ddpm", generator=gen))
        a2 = timed(ref)
        ratios.append(b / ((a1 + a2) / 2))
        t_ddpm.append(b)
        t_ref += [a1, a2]
    rows.append({
        "part": "samplers", "what": f"DDPM-{T} vs DDIM-50 (A B A), batch {BATCH}",
        "calls": T,
        "images_per_s": BATCH / statistics.median(t_ddpm),
        "ddim50_images_per_s": BATCH / statistics.median(t_ref),
        "ddim50_speedup_over_this": statistics.median(ratios), "pairs": ddpm_pairs,
    })
    return rows


def diffusers_peer():
    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        UNet2DModel,
    )

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=28, in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=(32, 64, 64), down_block_types=("DownBlock2D",) * 3,
        up_block_types=("UpBlock2D",) * 3, norm_num_groups=4,
    )
    ddim = DDIMScheduler(num_train_timesteps=T, beta_schedule="linear", clip_sample=True,
                         set_alpha_to_one=True, timestep_spacing="trailing")
    ddpm = DDPMScheduler(num_train_timesteps=T, beta_schedule="linear")
    dpm = DPMSolverMultistepScheduler(num_train_timesteps=T, beta_schedule="linear")
    return unet.to(DEVICE), {"ddim": ddim, "dpmpp-2m": dpm}, ddpm


def bench_peer(pairs: int, train_pairs: int, batches: list[int]) -> list[dict]:
    import diffusers

    images, _ = data.load("mnist", "train")
    x_u8 = images[:BATCH].to(DEVICE)
    unet, schedulers, ddpm = diffusers_peer()
    ddpm.alphas_cumprod = ddpm.alphas_cumprod.to(DEVICE)
    torch.manual_seed(0)
    model = zoo.create("ddpm", dataset="mnist").to(DEVICE)
    zoo_params, peer_params = model.num_parameters(), sum(p.numel() for p in unet.parameters())
    gen_zoo = torch.Generator(DEVICE).manual_seed(0)
    gen_peer = torch.Generator(DEVICE).manual_seed(0)

    def peer_sample(n: int, sampler: str, steps: int):
        unet.eval()
        sched = schedulers[sampler]
        sched.set_timesteps(steps)
        x = torch.randn(n, 1, 28, 28, generator=gen_peer, device=DEVICE)
        x = x * sched.init_noise_sigma
        with torch.inference_mode():
            for t in sched.timesteps:
                eps = unet(sched.scale_model_input(x, t), t).sample
                x = sched.step(eps, t, x).prev_sample
        return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)

    def zoo_sample(n: int, sampler: str, steps: int):
        return model.sample(n, sampler=sampler, steps=steps, generator=gen_zoo)

    rows = []
    for sampler, steps, name in (("ddim", 50, "DDIM-50"), ("dpmpp-2m", 20, "DPM-Solver++ 2M-20")):
        for n in batches:
            p = 4 * pairs if n == 1 else pairs
            r = interleaved(lambda n=n, s=sampler, k=steps: zoo_sample(n, s, k),
                            lambda n=n, s=sampler, k=steps: peer_sample(n, s, k), p)
            rows.append({
                "part": "peer", "what": f"{name} sampling, batch {n}",
                "zoo_images_per_s": n / r["a_s"], "diffusers_images_per_s": n / r["b_s"],
                "ratio": r["ratio_b_over_a"], "pairs": p,
            })

    unet.train()
    model.train()
    model.grad_clip = 1.0
    peer_opt = torch.optim.Adam(unet.parameters(), lr=1e-3)
    zoo_opt = model.configure_optimizers()

    def peer_step():
        x0 = x_u8.float() / 127.5 - 1
        noise = torch.randn_like(x0)
        t = torch.randint(0, T, (x0.shape[0],), device=DEVICE)
        loss = F.mse_loss(unet(ddpm.add_noise(x0, noise, t), t).sample, noise)
        peer_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        peer_opt.step()
        return loss.item()

    r = interleaved(lambda: model.train_step(x_u8, zoo_opt), peer_step, train_pairs, warmup=2)
    rows.append({
        "part": "peer", "what": f"training step, batch {BATCH}",
        "zoo_s": r["a_s"], "diffusers_s": r["b_s"], "ratio": r["ratio_b_over_a"],
        "pairs": train_pairs,
    })
    for row in rows:
        row.update(zoo_params=zoo_params, diffusers_params=peer_params,
                   diffusers_version=diffusers.__version__)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("samplers", "peer"))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--pairs", type=int, default=5, help="interleaved pairs per sampling figure")
    p.add_argument("--train-pairs", type=int, default=20)
    p.add_argument("--ddpm-pairs", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for zoo and diffusers")
    p.add_argument("--batches", default=f"1,{BATCH}", help="sampling batch sizes vs diffusers")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args()
    global DEVICE, AUTOCAST
    DEVICE, AUTOCAST = torch.device(args.device), args.bf16
    if args.threads:
        torch.set_num_threads(args.threads)
    name = (torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else cpu_name())
    env = {
        "device": f"{DEVICE.type}: {name}", "threads": torch.get_num_threads(),
        "dtype": "bf16 autocast" if AUTOCAST else "float32",
        "torch": torch.__version__, "load_avg_1m": os.getloadavg()[0],
    }
    print(json.dumps(env))
    rows: list[dict] = []
    if args.only in (None, "samplers"):
        torch.manual_seed(0)
        model = zoo.create("ddpm", dataset="mnist").to(DEVICE)
        flops = forward_flops(model)
        sampler_rows = bench_samplers(model, args.pairs, args.ddpm_pairs)
        for row in sampler_rows:
            row["gflop_per_s"] = flops * row["calls"] * row["images_per_s"] / 1e9
            row["forward_mflop_per_image"] = flops / 1e6
        rows += sampler_rows
        for row in sampler_rows:
            print(json.dumps(row))
    if args.only in (None, "peer"):
        batches = [int(b) for b in args.batches.split(",")]
        peer_rows = bench_peer(args.pairs, args.train_pairs, batches)
        rows += peer_rows
        for row in peer_rows:
            print(json.dumps(row))
    env["load_avg_1m_end"] = os.getloadavg()[0]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()

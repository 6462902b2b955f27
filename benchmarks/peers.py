"""zoo side by side with peer libraries at matched sizes, timed interleaved on one machine.

Single timings on shared machines drift 20-70% within an hour, while the ratio of two things
timed in alternation (A B A B ..., median of the pair ratios) holds to about 1%. Each
comparison prints both absolute figures and the ratio (higher = zoo faster).

    python benchmarks/peers.py --out reports/peers-cpu   # all three, ~20 min on 2 cores
    python benchmarks/peers.py vae                       # zoo vae-mlp vs pythae VAE
    python benchmarks/peers.py diffusion                 # ddpm vs diffusers (bench_diffusion)
    python benchmarks/peers.py transformer               # vs x-transformers (bench_autoregressive)

Needs the peers: ``pip install -e ".[bench]"``. ``--out DIR`` writes ``DIR/peers.md`` (the
table) and ``DIR/peers.json`` (rows and environment).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

import zoo
from zoo import data


def interleaved(a: Callable[[], None], b: Callable[[], None], repeats: int, warmup: int = 5):
    """Time a and b alternately; returns (median seconds of a, of b, median of b/a ratios)."""
    for _ in range(warmup):
        a()
        b()
    ta, tb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a()
        t1 = time.perf_counter()
        b()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    ratios = [y / x for x, y in zip(ta, tb, strict=True)]
    return statistics.median(ta), statistics.median(tb), statistics.median(ratios)


def bench_vae(repeats: int, batch: int = 128) -> list[dict]:
    """One training step (forward, backward, Adam) of zoo's vae-mlp and pythae's VAE."""
    from pythae.models import VAE, VAEConfig

    images, _ = data.load("mnist", "train")
    x = images[:batch]
    torch.manual_seed(0)
    peer = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=20))
    peer_opt = torch.optim.Adam(peer.parameters(), lr=1e-3)
    peer_x = {"data": x.float() / 255.0}

    def peer_step():
        out = peer(peer_x)
        peer_opt.zero_grad(set_to_none=True)
        out.loss.backward()
        peer_opt.step()

    peer_params = sum(p.numel() for p in peer.parameters())
    rows = []
    for label, overrides in [("vae-mlp (default, hidden 400)", {}),
                             ("vae-mlp (hidden 512, params matched)", {"hidden": 512})]:
        model = zoo.create("vae-mlp", dataset="mnist", **overrides)
        opts = model.configure_optimizers()
        t_zoo, t_peer, ratio = interleaved(lambda m=model, o=opts: m.train_step(x, o),
                                           peer_step, repeats)
        rows.append({
            "comparison": f"train step, batch {batch}", "zoo": label,
            "zoo_params": model.num_parameters(), "peer": "pythae VAE (MLP)",
            "peer_params": peer_params, "zoo_ms": 1e3 * t_zoo, "peer_ms": 1e3 * t_peer,
            "ratio": ratio,
        })
    return rows


def bench_diffusion(repeats: int) -> list[dict]:
    """zoo ddpm vs diffusers UNet2DModel + DDIMScheduler (see bench_diffusion.py)."""
    import bench_diffusion as bd

    pairs = max(3, repeats // 10)
    rows = []
    for r in bd.bench_peer(pairs, max(10, repeats // 3), [1, bd.BATCH]):
        ms = ("zoo_s", "diffusers_s") if "zoo_s" in r else None
        rows.append({
            "comparison": r["what"], "zoo": "ddpm (default MNIST model)",
            "zoo_params": r["zoo_params"], "peer": f"diffusers {r['diffusers_version']}",
            "peer_params": r["diffusers_params"],
            "zoo_ms": 1e3 * r[ms[0]] if ms else 1e3 / r["zoo_images_per_s"],
            "peer_ms": 1e3 * r[ms[1]] if ms else 1e3 / r["diffusers_images_per_s"],
            "unit": "ms per step" if ms else "ms per image",
            "ratio": r["ratio"],
        })
    return rows


def bench_transformer(repeats: int) -> list[dict]:
    """zoo ar-transformer vs x-transformers at dim 128, depth 4, heads 4 of 32 dimensions
    each (see bench_autoregressive.py): full generation of 16 images, forward+backward of
    16, the latter's FLOP/s against the measured matmul peak."""
    import bench_autoregressive as ba

    pairs = max(3, repeats // 10)
    rows = []
    for r in (ba.bench_sample(pairs, 16), ba.bench_train(pairs, 16)):
        if "zoo_gflop_per_s" in r:  # the training step against the measured matmul peak
            from zoo.bench.timing import peak_flops

            peak = peak_flops(torch.device("cpu"))
            r["what"] += (f": zoo at {r['zoo_gflop_per_s']:.1f} GFLOP/s"
                          + (f", {100 * r['zoo_gflop_per_s'] * 1e9 / peak:.0f}% of this CPU's "
                             f"measured float32 matmul peak ({peak / 1e9:.0f} GFLOP/s)"
                             if peak else ""))
        rows.append({
            "comparison": r["what"].split(":")[0] + "".join(r["what"].split(":")[2:]),
            "zoo": "ar-transformer (dim 128, depth 4, 32 per head)",
            "zoo_params": r.get("zoo_params", ba.zoo_model().num_parameters()),
            "peer": "x-transformers",
            "peer_params": r.get("xt_params", sum(p.numel() for p in ba.xt_models()[0]
                                                  .parameters())),
            "zoo_ms": 1e3 * r["a_median_s"], "peer_ms": 1e3 * r["b_median_s"],
            "unit": "ms per call", "ratio": r["ratio_b_over_a"],
        })
    return rows


BENCHES = {"vae": bench_vae, "diffusion": bench_diffusion, "transformer": bench_transformer}


def table(rows: list[dict]) -> str:
    lines = ["| comparison | zoo | params | peer | params | zoo ms | peer ms | zoo faster by |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        unit = r.get("unit", "ms per step")
        lines.append(
            f"| {r['comparison']} ({unit}) | {r['zoo']} | {r['zoo_params'] / 1e6:.2f}M "
            f"| {r['peer']} | {r['peer_params'] / 1e6:.2f}M | {r['zoo_ms']:.2f} "
            f"| {r['peer_ms']:.2f} | {r['ratio']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("which", nargs="*", choices=[*BENCHES, []], help="default: all")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--out", help="write peers.md and peers.json into this folder")
    args = p.parse_args()
    env = {"device": f"cpu: {platform.processor() or platform.machine()}",
           "threads": torch.get_num_threads(), "torch": torch.__version__,
           "load_avg_1m_start": os.getloadavg()[0]}
    print(json.dumps(env))
    rows = []
    for name in args.which or list(BENCHES):
        rows += BENCHES[name](args.repeats)
        print(table(rows), flush=True)
    env["load_avg_1m_end"] = os.getloadavg()[0]
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "peers.json").write_text(json.dumps({"env": env, "rows": rows}, indent=2))
        (out / "peers.md").write_text(
            "# zoo against peer libraries, same machine, matched sizes\n\n"
            "`python benchmarks/peers.py --out " + str(out) + "`: every pair timed interleaved "
            "(A B A B ..., median of the pair ratios); higher = zoo faster.\n\n"
            f"Environment: {env['device']}, {env['threads']} threads, torch {env['torch']}, "
            f"load average {env['load_avg_1m_start']:.1f} at the start and "
            f"{env['load_avg_1m_end']:.1f} at the end.\n\n" + table(rows) + "\n")
        print(f"wrote {out / 'peers.md'}")


if __name__ == "__main__":
    main()

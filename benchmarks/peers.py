"""zoo side by side with peer libraries at matched sizes, timed interleaved on one machine.

Single timings on shared machines drift 20-70% within an hour, while the ratio of two things
timed in alternation (A B A B ..., median of the pair ratios) holds to about 1%. Each
comparison prints both absolute figures and the ratio (higher = zoo faster).

    python benchmarks/peers.py vae            # zoo vae-mlp vs pythae VAE, one training step
    python benchmarks/peers.py vae --repeats 50
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

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


BENCHES = {"vae": bench_vae}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("which", nargs="*", default=list(BENCHES), choices=list(BENCHES))
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    print("| comparison | zoo | params | peer | params | zoo ms | peer ms | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.which:
        for r in BENCHES[name](args.repeats):
            print(f"| {r['comparison']} | {r['zoo']} | {r['zoo_params'] / 1e6:.2f}M | {r['peer']} "
                  f"| {r['peer_params'] / 1e6:.2f}M | {r['zoo_ms']:.2f} | {r['peer_ms']:.2f} "
                  f"| {r['ratio']:.2f}x |")


if __name__ == "__main__":
    main()

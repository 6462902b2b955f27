"""This zoo against another checkout of it, interleaved A B A B in one process: the same
models, weights and generators, so the samples must be identical and the ratio of the
times says whether a change made a path slower.

    cp -r /path/to/old/checkout/zoo /tmp/old/zoo_old
    python benchmarks/ab_versions.py /tmp/old [--repeats 20]

Prints one line per path: both medians (ms) and the median of the new/old time ratios
(below 1: this checkout is faster), and whether the outputs were equal.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import torch
from peers import interleaved  # benchmarks/peers.py: A B A B, median of the ratios

import zoo


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("old_root", help="a folder holding the other checkout's package as zoo_old")
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    sys.path.insert(0, args.old_root)
    old = importlib.import_module("zoo_old")
    shape = (1, 28, 28)
    cases = [
        ("ddpm", {}, {"sampler": "ddim", "steps": 50}, 16),
        ("ddpm", {"timesteps": 100}, {"sampler": "ddpm"}, 16),
        ("ar-transformer", {"dim": 32, "depth": 2, "heads": 2}, {"temperature": 1.0}, 8),
        ("vae-conv", {}, {}, 256),
        ("gan-dcgan", {}, {}, 256),
    ]
    x = torch.randint(0, 256, (64, *shape), dtype=torch.uint8)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"new/old time ratio (<1: new faster)")
    for name, config, options, n in cases:
        compare_case(old, name, config, options, n, shape, x, args.repeats)


def compare_case(old, name, config, options, n, shape, x, repeats) -> None:
    torch.manual_seed(0)
    new_m = zoo.create(name, image_shape=shape, **config).eval()
    old_m = old.create(name, image_shape=shape, **config).eval()
    old_m.load_state_dict(new_m.state_dict())
    outs = {}

    def draw(m, key):
        outs[key] = m.sample(n, generator=torch.Generator().manual_seed(1), **options)

    ms_old, ms_new, r = interleaved(lambda: draw(old_m, "old"), lambda: draw(new_m, "new"),
                                    repeats)
    same = torch.equal(outs["old"], outs["new"])
    print(f"sample {name} {options} n={n}: old {ms_old * 1e3:.1f} ms, new "
          f"{ms_new * 1e3:.1f} ms, ratio {r:.3f}, identical samples: {same}", flush=True)
    opt_new, opt_old = new_m.configure_optimizers(), old_m.configure_optimizers()
    new_m.train()
    old_m.train()
    new_m.attach_training(noise_generator=torch.Generator().manual_seed(0))
    old_m.attach_training(noise_generator=torch.Generator().manual_seed(0))
    ms_old, ms_new, r = interleaved(lambda: old_m.train_step(x, opt_old),
                                    lambda: new_m.train_step(x, opt_new), repeats)
    new_sd, old_sd = new_m.state_dict(), old_m.state_dict()
    same = new_sd.keys() == old_sd.keys() and all(torch.equal(new_sd[k], old_sd[k])
                                                  for k in new_sd)
    print(f"train_step {name} batch 64: old {ms_old * 1e3:.1f} ms, new "
          f"{ms_new * 1e3:.1f} ms, ratio {r:.3f}, identical weights after the same steps: "
          f"{same}", flush=True)


if __name__ == "__main__":
    main()

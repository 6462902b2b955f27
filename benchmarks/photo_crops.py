"""A folder of unlabelled 32x32 RGB crops of real photographs, made offline from the sample
photographs that matplotlib and scikit-learn install (Grace Hopper, a flower, a Chinese
temple): random positions, scales of 1/8 to 1/2 of the shorter side, mirror flips. It
stands in for a user's folder of photo crops where no such dataset can be downloaded.

    python benchmarks/photo_crops.py OUT [--n 5000] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def photographs() -> list[Path]:
    import matplotlib

    found = [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]
    try:
        import sklearn

        images = Path(sklearn.__file__).parent / "datasets" / "images"
        found += [images / "flower.jpg", images / "china.jpg"]
    except ImportError:
        pass
    return [p for p in found if p.is_file()]


def crops(n: int, seed: int, size: int = 32):
    rng = np.random.default_rng(seed)
    photos = [Image.open(p).convert("RGB") for p in photographs()]
    if not photos:
        raise SystemExit("no sample photographs found (install matplotlib)")
    for i in range(n):
        im = photos[i % len(photos)]
        w, h = im.size
        side = int(rng.uniform(1 / 8, 1 / 2) * min(w, h))
        x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
        crop = im.crop((x, y, x + side, y + side)).resize((size, size), Image.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        yield crop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for i, crop in enumerate(crops(args.n, args.seed)):
        crop.save(args.out / f"{i:05d}.png")
    print(f"wrote {args.n} crops of {len(photographs())} photographs to {args.out}")


if __name__ == "__main__":
    main()

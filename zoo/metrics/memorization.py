"""A memorization check over extractor features: are generated samples closer to the
training images than held-out images are?

For each generated sample, the Euclidean distance (in the extractor's feature layer, the
one FID/KID/precision/recall use) to its nearest training image; the same for each
held-out reference (test) image. ``memorization_ratio`` is the ratio of the two medians
(about 1 for a model that does not copy, below 1 when its samples sit closer to the
training set than unseen data does), ``near_copies`` the fraction of generated samples
closer to a training image than the 1st percentile of the test-to-train distances (about
0.01 for a model that does not copy, 1 for one that returns its training images).

Nearest neighbours are found in float32 blocks of ``chunk`` x ``train_chunk`` distances
(about 32 MB at the defaults), so memory stays bounded at 60k training images x 10k
samples.

To look at: ``closest_pairs`` gives the ``k`` generated samples closest to a training
image as (sample index, training index, distance) triples, closest first, and
``pairs_panel`` / ``save_pairs_panel`` draw them, each sample beside its nearest
training image (``zoo eval`` writes ``memorization.png`` beside ``eval.json``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

CHUNK = 1024  #: query rows per block
TRAIN_CHUNK = 8192  #: training rows per block


def nearest_distances(x: Tensor, train: Tensor, chunk: int = CHUNK,
                      train_chunk: int = TRAIN_CHUNK) -> Tensor:
    """``[len(x)]``: the Euclidean distance of each row of ``x`` to its nearest row of
    ``train`` (k=1), in float32, computed ``chunk`` x ``train_chunk`` at a time."""
    return nearest(x, train, chunk, train_chunk)[0]


def nearest(x: Tensor, train: Tensor, chunk: int = CHUNK,
            train_chunk: int = TRAIN_CHUNK) -> tuple[Tensor, Tensor]:
    """(distance ``[len(x)]`` float32, index ``[len(x)]`` int64) of each row of ``x``'s
    nearest row of ``train``, ``chunk`` x ``train_chunk`` at a time (the first on a tie)."""
    if x.dim() != 2 or train.dim() != 2 or x.shape[1] != train.shape[1]:
        raise ValueError(f"nearest distances take features [M, D] and [N, D], got "
                         f"{tuple(x.shape)} and {tuple(train.shape)}")
    if train.shape[0] < 1:
        raise ValueError("nearest distances need at least one training row")
    x = x.detach().to(torch.float32)
    train = train.detach().to(x.device, torch.float32)
    out = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    where = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for i in range(0, x.shape[0], chunk):
        q = x[i:i + chunk]
        best = torch.full((q.shape[0],), float("inf"), dtype=torch.float32, device=x.device)
        arg = torch.zeros(q.shape[0], dtype=torch.int64, device=x.device)
        for j in range(0, train.shape[0], train_chunk):
            d, k = torch.cdist(q, train[j:j + train_chunk]).min(1)
            better = d < best
            best = torch.where(better, d, best)
            arg = torch.where(better, k + j, arg)
        out[i:i + chunk] = best
        where[i:i + chunk] = arg
    return out, where


def closest_pairs(fake: Tensor, train: Tensor, k: int = 8, chunk: int = CHUNK
                  ) -> list[tuple[int, int, float]]:
    """The ``k`` generated samples closest to a training image, closest first, as
    ``(sample index, training index, distance)`` triples, from the features ``fake [M, D]``
    and ``train [N, D]`` (the ones ``memorization`` reads)."""
    d, j = nearest(fake, train, chunk)
    order = torch.argsort(d.cpu(), stable=True)[:max(0, int(k))]
    return [(int(i), int(j[i]), float(d[i])) for i in order]


def memorization(real: Tensor, fake: Tensor, *, train: Tensor, percentile: float = 1.0,
                 chunk: int = CHUNK, closest: int = 0) -> dict:
    """``{"memorization_ratio", "near_copies"}`` of generated features ``fake [M, D]``
    against the training features ``train [N, D]``, with held-out features ``real [K, D]``
    (the reference split) as the yardstick; ``percentile`` of the held-out distances is
    the near-copy threshold. With ``closest`` = k > 0 also ``"closest_pairs"``: the
    ``closest_pairs`` triples of the k samples closest to a training image (from the same
    nearest-neighbour pass)."""
    if real.shape[0] < 2 or fake.shape[0] < 1:
        raise ValueError(f"memorization needs at least 2 held-out and 1 generated sample, "
                         f"got {real.shape[0]} and {fake.shape[0]}")
    d_fake, j_fake = nearest(fake, train, chunk)
    pairs = None
    if closest > 0:
        order = torch.argsort(d_fake.cpu(), stable=True)[:int(closest)]
        pairs = [(int(i), int(j_fake[i]), float(d_fake[i])) for i in order]
    d_fake = d_fake.double()
    d_real = nearest_distances(real, train, chunk).double()
    held_out = float(torch.quantile(d_real, 0.5))
    if not held_out > 0:
        raise ValueError("the held-out images' median distance to the training set is 0: "
                         "the reference split is (a copy of) the training split")
    threshold = torch.quantile(d_real, percentile / 100.0)
    out = {"memorization_ratio": float(torch.quantile(d_fake, 0.5)) / held_out,
           "near_copies": float((d_fake < threshold).double().mean())}
    if pairs is not None:
        out["closest_pairs"] = pairs
    return out


def pairs_panel(samples: Tensor, train_images: Tensor,
                pairs: list[tuple[int, int, float]] | list[list], per_row: int = 4,
                scale: int | None = None, labels: bool = True) -> Tensor:
    """A uint8 ``[C, H', W']`` panel of ``pairs`` (``closest_pairs``' triples): each
    generated sample ``samples[i]`` beside its nearest training image ``train_images[j]``
    (sample left, training image right, 1 px apart on a gray frame), pairs on a white
    ground ``per_row`` to a row in the triples' order (closest first), each captioned with
    its rank and distance, under a one-line legend (``labels``). ``scale`` enlarges the
    images (default: to about 64 px)."""
    if samples.dtype != torch.uint8 or train_images.dtype != torch.uint8 \
            or samples.dim() != 4 or samples.shape[1:] != train_images.shape[1:]:
        raise ValueError(f"a pairs panel takes uint8 [N, C, H, W] samples and training "
                         f"images of one shape, got {samples.dtype} {tuple(samples.shape)} "
                         f"and {train_images.dtype} {tuple(train_images.shape)}")
    if not pairs:
        raise ValueError("a pairs panel needs at least one (sample, train, distance) triple")
    from PIL import Image, ImageDraw

    c, h, w = samples.shape[1:]
    scale = scale or max(1, 64 // max(h, w))
    h, w = h * scale, w * scale
    frame, gap, caption = 2, 10, 14 if labels else 0
    top = 14 if labels else 0  # a legend line above the pairs
    pw, ph = 2 * w + 3 * frame - 1, h + 2 * frame  # a pair: frame | sample | 1px | train
    per_row = max(1, min(per_row, len(pairs)))
    rows = -(-len(pairs) // per_row)
    width = per_row * pw + (per_row + 1) * gap
    height = top + rows * (ph + caption) + (rows + 1) * gap
    canvas = np.full((height, width, c), 255, dtype=np.uint8)

    def big(img: Tensor) -> np.ndarray:
        a = img.detach().cpu().permute(1, 2, 0).numpy()
        return a.repeat(scale, 0).repeat(scale, 1)

    spots = []
    for n, (i, j, _) in enumerate(pairs):
        r, col = divmod(n, per_row)
        y = top + gap + r * (ph + caption + gap)
        x = gap + col * (pw + gap)
        canvas[y:y + ph, x:x + pw] = 128
        canvas[y + frame:y + frame + h, x + frame:x + frame + w] = big(samples[int(i)])
        x2 = x + frame + w + frame - 1
        canvas[y + frame:y + frame + h, x2:x2 + w] = big(train_images[int(j)])
        spots.append((x, y + ph + 1))
    if not labels:
        return torch.from_numpy(canvas).permute(2, 0, 1).contiguous()
    img = Image.fromarray(canvas[:, :, 0] if c == 1 else canvas)
    draw = ImageDraw.Draw(img)
    ink = 0 if c == 1 else (0, 0, 0)
    draw.text((gap, 4), "each pair: generated sample | its nearest training image; "
              "closest first, d = feature distance", fill=ink)
    for n, ((x, y), (_, _, d)) in enumerate(zip(spots, pairs, strict=True)):
        draw.text((x, y), f"#{n + 1} d={float(d):.3g}", fill=ink)
    out = np.asarray(img)
    out = out[:, :, None] if out.ndim == 2 else out
    return torch.from_numpy(out.copy()).permute(2, 0, 1).contiguous()


def save_pairs_panel(samples: Tensor, train_images: Tensor,
                     pairs: list[tuple[int, int, float]] | list[list], path,
                     **options) -> Path:
    """Write ``pairs_panel(samples, train_images, pairs, **options)`` as a PNG; the path."""
    from PIL import Image

    from ..core import atomic_write

    a = pairs_panel(samples, train_images, pairs, **options).permute(1, 2, 0).numpy()
    img = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
    return path

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
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK = 1024  #: query rows per block
TRAIN_CHUNK = 8192  #: training rows per block


def nearest_distances(x: Tensor, train: Tensor, chunk: int = CHUNK,
                      train_chunk: int = TRAIN_CHUNK) -> Tensor:
    """``[len(x)]``: the Euclidean distance of each row of ``x`` to its nearest row of
    ``train`` (k=1), in float32, computed ``chunk`` x ``train_chunk`` at a time."""
    if x.dim() != 2 or train.dim() != 2 or x.shape[1] != train.shape[1]:
        raise ValueError(f"nearest distances take features [M, D] and [N, D], got "
                         f"{tuple(x.shape)} and {tuple(train.shape)}")
    if train.shape[0] < 1:
        raise ValueError("nearest distances need at least one training row")
    x = x.detach().to(torch.float32)
    train = train.detach().to(x.device, torch.float32)
    out = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    for i in range(0, x.shape[0], chunk):
        q = x[i:i + chunk]
        best = torch.full((q.shape[0],), float("inf"), dtype=torch.float32, device=x.device)
        for j in range(0, train.shape[0], train_chunk):
            d = torch.cdist(q, train[j:j + train_chunk]).min(1).values
            best = torch.minimum(best, d)
        out[i:i + chunk] = best
    return out


def memorization(real: Tensor, fake: Tensor, *, train: Tensor, percentile: float = 1.0,
                 chunk: int = CHUNK) -> dict[str, float]:
    """``{"memorization_ratio", "near_copies"}`` of generated features ``fake [M, D]``
    against the training features ``train [N, D]``, with held-out features ``real [K, D]``
    (the reference split) as the yardstick; ``percentile`` of the held-out distances is
    the near-copy threshold."""
    if real.shape[0] < 2 or fake.shape[0] < 1:
        raise ValueError(f"memorization needs at least 2 held-out and 1 generated sample, "
                         f"got {real.shape[0]} and {fake.shape[0]}")
    d_fake = nearest_distances(fake, train, chunk).double()
    d_real = nearest_distances(real, train, chunk).double()
    held_out = float(torch.quantile(d_real, 0.5))
    if not held_out > 0:
        raise ValueError("the held-out images' median distance to the training set is 0: "
                         "the reference split is (a copy of) the training split")
    threshold = torch.quantile(d_real, percentile / 100.0)
    return {"memorization_ratio": float(torch.quantile(d_fake, 0.5)) / held_out,
            "near_copies": float((d_fake < threshold).double().mean())}

"""Density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for
Generative Models") over extractor features, as the ``prdc`` package defines them.

Each real sample gets a ball whose radius is the distance to its k-th nearest other real
sample. Density: the number of real balls a generated sample falls in, averaged over the
generated samples and divided by k (about 1 when the two sets come from one
distribution). Coverage: the fraction of real balls that hold at least one generated
sample. Distances are computed in float64 in row chunks, so memory stays bounded (about
``chunk x N`` numbers) at N = 10k and beyond.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: rows of a distance block; x N columns x 8 bytes stays under ~100 MB at N = 10k
CHUNK = 1024


def sq_norms(x: Tensor) -> Tensor:
    return (x * x).sum(1)


def sq_dists(a: Tensor, a_sq: Tensor, b: Tensor, b_sq: Tensor) -> Tensor:
    """Squared Euclidean distances ``[len(a), len(b)]``, clamped at 0 (rounding); rounded
    the same way both ways round, so d(x, y) == d(y, x) bit for bit."""
    return (a_sq[:, None] + b_sq[None, :]).addmm_(a, b.T, alpha=-2.0).clamp_min_(0.0)


def knn_radii(x: Tensor, k: int, chunk: int = CHUNK) -> Tensor:
    """Squared distance of each row of ``x`` to its k-th nearest other row (prdc's radii:
    the (k+1)-th smallest distance of a row, its own distance 0 counted)."""
    x_sq = sq_norms(x)
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(0, x.shape[0], chunk):
        d = sq_dists(x[i:i + chunk], x_sq[i:i + chunk], x, x_sq)
        d[torch.arange(d.shape[0], device=d.device), torch.arange(i, i + d.shape[0],
                                                                  device=d.device)] = 0.0
        out[i:i + chunk] = d.topk(k + 1, dim=1, largest=False).values[:, -1]
    return out


def density_coverage(real: Tensor, fake: Tensor, nearest_k: int = 5,
                     chunk: int = CHUNK) -> dict[str, float]:
    """``{"density", "coverage"}`` of generated features ``fake [M, D]`` against real
    features ``real [N, D]`` with k-NN balls of ``nearest_k`` (prdc's ``compute_prdc``)."""
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"density/coverage take features [N, D] and [M, D], got "
                         f"{tuple(real.shape)} and {tuple(fake.shape)}")
    if real.shape[0] < nearest_k + 1 or fake.shape[0] < 1:
        raise ValueError(f"density/coverage with k={nearest_k} need at least {nearest_k + 1} "
                         f"real and 1 generated sample, got {real.shape[0]} and {fake.shape[0]}")
    real = real.detach().to(torch.float64)
    fake = fake.detach().to(real.device, torch.float64)
    radii = knn_radii(real, nearest_k, chunk)
    real_sq, fake_sq = sq_norms(real), sq_norms(fake)
    inside = 0  # (real ball, generated sample) pairs with the sample inside the ball
    covered = 0  # real balls holding at least one generated sample
    for i in range(0, real.shape[0], chunk):
        # real rows, as in knn_radii: a generated copy of a real sample is at the same
        # distance from each real one as that real sample, bit for bit
        d = sq_dists(real[i:i + chunk], real_sq[i:i + chunk], fake, fake_sq)
        r = radii[i:i + chunk, None]
        inside += int((d < r).sum())
        covered += int((d.min(1, keepdim=True).values < r).sum())
    return {"density": inside / (nearest_k * fake.shape[0]),
            "coverage": covered / real.shape[0]}

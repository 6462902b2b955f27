"""Quality figures with their bootstrap replicates, and what they say across candidates.

Every evaluation of a tournament draws its samples with the same seed and scores them
against the same reference features with the *same* bootstrap resamples (``counts``, one
seed for all): common random numbers, so two candidates' replicate ``b`` differ by the
models, not by which samples the bootstrap happened to repeat. A figure is kept with its
``B`` replicates (``Scored``).

Across training seeds the replicates are combined by ``zoo.bench.seeds`` (a two-level
bootstrap with a drawn training-seed term): the same draw seed for every candidate keeps
them paired on the sampling side, while each candidate's seed level is its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..metrics.intervals import (
    fid_draws,
    kid_draws,
    kid_reference_term,
    percentile_interval,
    resample_counts,
)

#: bootstrap replicates per figure
DRAWS = 200
#: the seed of the shared resamples (common random numbers)
COUNTS_SEED = 20261207
#: the figures a tournament keeps replicates of; lower is better for both
FIGURES = ("kid", "fid")


@dataclass
class Scored:
    """A figure on the full sample and its bootstrap replicates."""

    value: float
    draws: list[float]

    def interval(self) -> list[float]:
        return percentile_interval(self.draws, centre=self.value)


def score(fake: torch.Tensor, real: torch.Tensor, draws: int = DRAWS,
          k_yy: float | None = None) -> dict[str, Scored]:
    """KID and FID of features ``fake [N, D]`` against ``real [M, D]`` with ``draws``
    replicates over resamples shared by every call with the same N; ``k_yy``: KID's
    reference term (``kid_reference_term(real)``) when already known."""
    n = fake.shape[0]
    counts = torch.cat([torch.ones(1, n, dtype=torch.float64),
                        resample_counts(n, draws, COUNTS_SEED)])
    if k_yy is None:
        k_yy = kid_reference_term(real)
    kid = kid_draws(fake, real, counts, k_yy=k_yy).tolist()
    fid = fid_draws(fake, real, counts).tolist()
    return {"kid": Scored(kid[0], kid[1:]), "fid": Scored(fid[0], fid[1:])}


def seed_wins(values: dict[str, list[float]], lower_is_better: bool = True) -> dict[str, int]:
    """How often each candidate has the best figure among candidates' seed i (seeds matched
    by their index; only indices every candidate has)."""
    k = min(len(v) for v in values.values())
    wins = dict.fromkeys(values, 0)
    for i in range(k):
        column = {n: v[i] for n, v in values.items()}
        best = (min if lower_is_better else max)(column, key=column.get)
        wins[best] += 1
    return wins

"""Quality figures with their bootstrap replicates, and what they say across candidates.

Every evaluation of a tournament draws its samples with the same seed and scores them
against the same reference features with the *same* bootstrap resamples (``counts``, one
seed for all): common random numbers, so two candidates' replicate ``b`` differ by the
models, not by which samples the bootstrap happened to repeat. A figure is kept with its
``B`` replicates (``Scored``).

Across training seeds (``prob_best``, ``difference``): a two-level bootstrap. Replicate
``b`` of a candidate resamples its seeds with replacement (independently per candidate:
seed 1 of one family has nothing to do with seed 1 of another) and averages those seeds'
sample-level replicate ``b``; so its spread holds both the training-seed spread and the
sampling noise, and candidates stay paired on the sampling side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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


def _combined(draws_by_seed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``[B]``: per replicate, the mean over seeds resampled with replacement."""
    k, b = draws_by_seed.shape
    pick = rng.integers(0, k, size=(b, k))
    return draws_by_seed[pick, np.arange(b)[:, None]].mean(1)


def combined(draws: dict[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """Each candidate's two-level replicates (``{name: [seeds, B]}`` -> ``{name: [B]}``)."""
    rng = np.random.default_rng(seed)
    return {name: _combined(np.atleast_2d(np.asarray(d, dtype=np.float64)), rng)
            for name, d in draws.items()}


def prob_best(draws: dict[str, np.ndarray], lower_is_better: bool = True,
              seed: int = 0) -> dict[str, float]:
    """The probability each candidate is best: the share of two-level replicates in which
    it has the best figure (ties split)."""
    reps = combined(draws, seed)
    names = list(reps)
    m = np.stack([reps[n] for n in names])  # [C, B]
    best = m.min(0) if lower_is_better else m.max(0)
    wins = (m == best)
    share = wins / wins.sum(0, keepdims=True)
    return {n: float(share[i].mean()) for i, n in enumerate(names)}


def difference(a: np.ndarray, b: np.ndarray, a_value: float, b_value: float,
               seed: int = 0) -> tuple[float, list[float]]:
    """(mean over seeds of ``a`` minus that of ``b``, its 95% two-level interval): ``a``,
    ``b`` are ``[seeds, B]`` replicates, ``a_value``/``b_value`` the means over seeds of the
    full-sample figures."""
    reps = combined({"a": a, "b": b}, seed)
    d = reps["a"] - reps["b"]
    centre = a_value - b_value
    return centre, percentile_interval(d, centre=centre)


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

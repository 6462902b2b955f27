"""The improved consistency-training recipe (Song & Dhariwal 2023, "Improved techniques for
training consistency models", section 3; constants as in their paper and diffusers'
``train_cm_ct_unconditional.py``): the step-count curriculum N(k), the Karras
discretisation of [sigma_min, sigma_max] into N - 1 intervals, the discretised lognormal
distribution over those intervals, the weights lambda and the pseudo-Huber distance.
Host-side numpy, except the loss."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .sampler import EDM

S0, S1 = 10, 1280  # the curriculum's first and last interval counts
P_MEAN, P_STD = -1.1, 2.0  # the lognormal noise distribution's log-mean and log-std
HUBER_C = 0.00054  # pseudo-Huber c = HUBER_C sqrt(d), d the data's dimension


def curriculum(k: int, total: int, s0: int = S0, s1: int = S1) -> int:
    """N(k) = min(s0 2^floor(k / K'), s1) + 1 with K' = floor(K / (log2 floor(s1 / s0) + 1)):
    the number of discretisation points at training step k of K, doubling from s0 + 1 to
    s1 + 1 over the run."""
    k_prime = max(math.floor(total / (math.log2(math.floor(s1 / s0)) + 1)), 1)
    return min(s0 * 2 ** math.floor(k / k_prime), s1) + 1


def karras_grid(n: int, edm: EDM) -> np.ndarray:
    """The n Karras sigmas, ascending from sigma_min to sigma_max (float64)."""
    return edm.karras(np.linspace(0, 1, n))[::-1].copy()


def lognormal_weights(sigmas: np.ndarray, p_mean: float = P_MEAN,
                      p_std: float = P_STD) -> np.ndarray:
    """p(interval i) over the N - 1 intervals [sigma_i, sigma_{i+1}] of an ascending grid:
    erf((log sigma_{i+1} - P_mean) / (sqrt(2) P_std)) - erf((log sigma_i - P_mean) /
    (sqrt(2) P_std)), normalised (the iCT paper's eq. 10)."""
    cdf = np.array([math.erf((math.log(s) - p_mean) / (math.sqrt(2) * p_std))
                    for s in sigmas])
    p = np.diff(cdf)
    return p / p.sum()


def interval_weights(sigmas: np.ndarray) -> np.ndarray:
    """lambda(sigma_i) = 1 / (sigma_{i+1} - sigma_i) of each interval."""
    return 1.0 / np.diff(sigmas)


def pseudo_huber(a: Tensor, b: Tensor, c: float) -> Tensor:
    """sqrt(||a - b||^2 + c^2) - c per sample (rows of [B, ...]), computed as ||a - b||^2 /
    (sqrt(||a - b||^2 + c^2) + c), which keeps its digits where ||a - b|| << c."""
    d2 = (a - b).float().square().flatten(1).sum(1)
    return d2 / (torch.sqrt(d2 + c * c) + c)

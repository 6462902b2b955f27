"""What the network predicts and how its training loss weighs the timesteps.

With x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, the network predicts one of

- ``"epsilon"``: eps (Ho et al. 2020),
- ``"x0"``: x0,
- ``"v"``: v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022, appendix D),

each an affine function of the others given x_t and abar, so the samplers and the bound
work in eps (``to_eps``) whatever the model predicts. ``loss_weighting="min-snr"`` (Hang
et al. 2023) weighs each sample's mean squared error by min(SNR, gamma) / SNR (epsilon),
min(SNR, gamma) / (SNR + 1) (v) or min(SNR, gamma) (x0), SNR = abar / (1 - abar): in every
case the x0-space loss weighted by min(SNR, gamma). ``"uniform"`` is the plain mean squared
error of the predicted quantity (L_simple for epsilon).
"""

from __future__ import annotations

import torch
from torch import Tensor

PREDICTIONS = ("epsilon", "v", "x0")
LOSS_WEIGHTINGS = ("uniform", "min-snr")


def _coefs(abar: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """sqrt(abar), sqrt(1 - abar) shaped to broadcast over ``like`` (one per item, or one),
    computed in abar's precision before the cast to ``like``'s dtype (a float64 abar keeps
    1 - abar's digits near t = 0, which float32 would round to ~3)."""
    abar = abar.reshape(-1, *([1] * (like.dim() - 1)))
    return abar.sqrt().to(like.dtype), (1 - abar).sqrt().to(like.dtype)


def target(prediction: str, x0: Tensor, eps: Tensor, abar: Tensor) -> Tensor:
    """What a ``prediction`` network is trained to output at x_t = q_sample(x0, eps)."""
    if prediction == "epsilon":
        return eps
    if prediction == "x0":
        return x0
    a, s = _coefs(abar, x0)
    return a * eps - s * x0


def to_eps(prediction: str, out: Tensor, x: Tensor, abar: Tensor) -> Tensor:
    """The eps that a ``prediction`` network's output ``out`` at x (= x_t, abar) stands for."""
    if prediction == "epsilon":
        return out
    a, s = _coefs(abar, x)
    if prediction == "v":
        return s * x + a * out  # eps = sqrt(1 - abar) x_t + sqrt(abar) v
    return (x - a * out) / s  # x0: eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)


def to_x0(prediction: str, out: Tensor, x: Tensor, abar: Tensor) -> Tensor:
    """The x0 that a ``prediction`` network's output ``out`` at x (= x_t, abar) stands for."""
    if prediction == "x0":
        return out
    a, s = _coefs(abar, x)
    if prediction == "v":
        return a * x - s * out  # x0 = sqrt(abar) x_t - sqrt(1 - abar) v
    return (x - s * out) / a


def from_eps(prediction: str, eps: Tensor, x: Tensor, abar: Tensor) -> Tensor:
    """The output of a ``prediction`` network that stands for ``eps`` at x (``to_eps``'s
    inverse)."""
    if prediction == "epsilon":
        return eps
    a, s = _coefs(abar, x)
    x0 = (x - s * eps) / a
    return x0 if prediction == "x0" else a * eps - s * x0


def loss_weight(prediction: str, weighting: str, abar: Tensor, gamma: float) -> Tensor:
    """Each sample's weight of its mean squared error (float64, abar's shape)."""
    abar = abar.double()
    if weighting == "uniform":
        return torch.ones_like(abar)
    snr = abar / (1 - abar)
    clipped = snr.clamp(max=gamma)
    if prediction == "epsilon":
        return (gamma / snr).clamp(max=1.0)  # min(SNR, gamma) / SNR, 1 where SNR = 0
    if prediction == "v":
        return clipped / (snr + 1)
    return clipped

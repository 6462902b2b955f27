"""The noise schedule: betas, q(x_t | x_0) and its posterior q(x_{t-1} | x_t, x_0).

Timesteps are 0-indexed: t = 0..T-1 here is t = 1..T of the papers. Every quantity is
computed once in float64 and kept as a non-persistent buffer (moved with the model, never
in a checkpoint: the config rebuilds it).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ...core import ConfigError
from ...nn.likelihood import gaussian_kl

SCHEDULES = ("linear", "cosine")
COSINE_S = 0.008
MAX_BETA = 0.999


def make_betas(schedule: str, timesteps: int, beta_start: float, beta_end: float) -> Tensor:
    """The float64 beta schedule: ``linear`` (Ho et al.) or ``cosine`` (Nichol & Dhariwal)."""
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    if schedule == "cosine":
        s = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((s + COSINE_S) / (1 + COSINE_S) * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=MAX_BETA)
    raise ConfigError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")


class NoiseSchedule(nn.Module):
    """Every quantity of q(x_t | x_0) and q(x_{t-1} | x_t, x_0) for a beta schedule."""

    def __init__(self, betas: Tensor, kind: str | None = None):
        super().__init__()
        self.kind = kind  # "linear", "cosine", or None (betas given)
        alphas = 1.0 - betas
        ab = torch.cumprod(alphas, 0)
        ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
        post_var = betas * (1.0 - ab_prev) / (1.0 - ab)
        post_var_clipped = torch.cat([post_var[1:2], post_var[1:]]) if len(betas) > 1 else betas
        quantities = {
            "betas": betas,
            "alphas_cumprod": ab,
            "alphas_cumprod_prev": ab_prev,
            "sqrt_alphas_cumprod": ab.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - ab).sqrt(),
            "sqrt_recip_alphas_cumprod": ab.rsqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / ab - 1.0).sqrt(),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": post_var_clipped.log(),
            "posterior_mean_coef1": betas * ab_prev.sqrt() / (1.0 - ab),
            "posterior_mean_coef2": (1.0 - ab_prev) * alphas.sqrt() / (1.0 - ab),
        }
        for name, value in quantities.items():
            self.register_buffer(name, value, persistent=False)

    @property
    def timesteps(self) -> int:
        return self.betas.numel()

    def at(self, name: str, t: Tensor) -> Tensor:
        """Quantity ``name`` at timesteps ``t`` [B], as float32 [B, 1, 1, 1]."""
        return getattr(self, name)[t].float().view(-1, 1, 1, 1)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), with the given noise."""
        return self.at("sqrt_alphas_cumprod", t) * x0 + self.at(
            "sqrt_one_minus_alphas_cumprod", t) * noise

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and (clipped) log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = self.at("posterior_mean_coef1", t) * x0 + self.at("posterior_mean_coef2", t) * xt
        return mean, self.at("posterior_log_variance_clipped", t)

    def predict_x0(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        return self.at("sqrt_recip_alphas_cumprod", t) * xt - self.at(
            "sqrt_recipm1_alphas_cumprod", t) * eps

    def prior_nats(self, x0: Tensor) -> Tensor:
        """KL(q(x_T | x_0) || N(0, I)) per image, in nats, computed in float64 (its terms
        cancel to ~abar_T^2 / 2 per pixel)."""
        ab = self.alphas_cumprod[-1]
        mean = ab.sqrt() * x0.double()
        logvar = torch.log1p(-ab).expand_as(mean)
        zero = torch.zeros_like(mean)
        return gaussian_kl(mean, logvar, zero, zero).flatten(1).sum(1)

"""DDIM (Song et al. 2021): S of the T training steps, deterministic at eta = 0."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import torch

from ...core import ConfigError
from .sampler import DiffusionSampler, SamplingPlan, affine_plan, affine_step

SPACINGS = ("trailing", "leading", "linspace")
DEFAULT_STEPS = 50


def sampling_timesteps(timesteps: int, steps: int, spacing: str) -> list[int]:
    """The S of T training timesteps a DDIM sampler visits, descending (Lin et al. 2023,
    table 2; the same sequences as diffusers' ``timestep_spacing``)."""
    if spacing == "trailing":
        ts = [round(timesteps - i * timesteps / steps) - 1 for i in range(steps)]
    elif spacing == "leading":
        ratio = timesteps // steps
        ts = [i * ratio for i in reversed(range(steps))]
    elif spacing == "linspace":
        ts = [round(v) for v in torch.linspace(0, timesteps - 1, steps, dtype=torch.float64)
              .flip(0).tolist()]
    else:
        raise ConfigError(f"unknown spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
    return ts


def ddim_plan(schedule, timesteps: Sequence[int], eta: float = 0.0) -> SamplingPlan:
    """DDIM (eq. 12) over the descending ``timesteps``; the last step goes to abar = 1, i.e.
    returns the predicted x0. sigma = eta * sqrt(beta-tilde of the jump)."""
    T = schedule.timesteps
    ts = [int(t) for t in timesteps]
    if not ts or any(not 0 <= t < T for t in ts) or any(
            p <= q for p, q in zip(ts, ts[1:], strict=False)):
        raise ConfigError(f"DDIM timesteps must be strictly decreasing values in 0..{T - 1}")
    t = torch.tensor(ts, dtype=torch.long).to(schedule.betas.device)
    ab = schedule.alphas_cumprod[t]
    ab_prev = torch.cat([schedule.alphas_cumprod[t[1:]], ab.new_ones(1)])
    var = (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
    sigma = eta * var.clamp(min=0).sqrt()
    d = (1 - ab_prev - sigma**2).clamp(min=0).sqrt()
    b = d / (1 - ab).sqrt()
    a = ab_prev.sqrt() - b * ab.sqrt()
    noisy = [eta > 0 and i < len(ts) - 1 for i in range(len(ts))]
    return affine_plan(schedule, ts, ab.rsqrt(), (1 / ab - 1).sqrt(), a, b, sigma, noisy)


@dataclass(frozen=True)
class DDIM(DiffusionSampler):
    """``sampler="ddim"``: ``steps`` S (default 50, at most T), ``eta`` (0: deterministic,
    1: DDPM-like noise), ``spacing`` of the visited timesteps."""

    name: ClassVar[str] = "ddim"
    marker: ClassVar[str] = "s"
    headline: ClassVar = (("steps", "{} steps"), ("eta", "eta {:g}"))

    steps: int | None = None  # None: min(50, T)
    eta: float = 0.0
    spacing: Literal["trailing", "leading", "linspace"] = "trailing"
    clip_x0: bool = True

    def check(self) -> None:
        super().check()
        if self.eta < 0:
            raise ConfigError(
                f"eta must be >= 0 (0: deterministic DDIM, 1: DDPM-like), got {self.eta}")

    def bind(self, model) -> DDIM:
        self.bind_guidance(model)
        T = model.timesteps
        steps = min(DEFAULT_STEPS, T) if self.steps is None else self.steps
        if not 1 <= steps <= T:
            raise ConfigError(f"steps must be in 1..{T} (the training timesteps), got {steps}")
        return replace(self, steps=steps)

    def plan(self, schedule) -> SamplingPlan:
        ts = sampling_timesteps(schedule.timesteps, self.steps, self.spacing)
        return ddim_plan(schedule, ts, self.eta)

    def step(self, plan, i, x, eps, noise, state):
        return (*affine_step(plan, i, x, eps, noise, self.clip_x0), state)

"""Euler ancestral sampling (Karras et al. 2022's Euler step with ancestral noise), as
diffusers' ``EulerAncestralDiscreteScheduler``, one network call per step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .sigmas import (
    SigmaPlan,
    SpacedSampler,
    euler_timesteps,
    interp_sigmas,
    lincomb,
    make_plan,
    train_sigmas,
)


def sigma_init_scale(sig0: float, spacing: str) -> float:
    """diffusers' ``init_noise_sigma`` of the Euler/Heun schedulers in VP space: x_sigma =
    init_noise_sigma * N(0, I) is x = x_sigma / sqrt(sigma_0^2 + 1). sigma_max for linspace and
    trailing spacing (so x has variance 1 - abar_0), sqrt(sigma_max^2 + 1) for leading (1)."""
    return sig0 / (sig0**2 + 1) ** 0.5 if spacing in ("linspace", "trailing") else 1.0


@dataclass(frozen=True)
class EulerAncestral(SpacedSampler):
    """``sampler="euler-ancestral"``: ``steps`` S (default 50, at most T), ``spacing`` of the
    visited timesteps (diffusers' ``timestep_spacing``, default ``"linspace"``). Each step
    moves x_sigma along eps to sigma_down and adds sigma_up z (stochastic)."""

    name: ClassVar[str] = "euler-ancestral"
    marker: ClassVar[str] = "v"

    def plan(self, schedule) -> SigmaPlan:
        ts = euler_timesteps(schedule.timesteps, self.steps, self.spacing)
        sig = np.concatenate([interp_sigmas(ts, train_sigmas(schedule)), [0.0]])
        s, s_to = sig[:-1], sig[1:]
        up = (s_to**2 * (s**2 - s_to**2) / s**2) ** 0.5
        down = (s_to**2 - up**2) ** 0.5
        c = 1 / (sig**2 + 1) ** 0.5  # x = c x_sigma
        # x_prev = a x + b eps + n z; x0 = r1 x - r2 eps
        coef = np.stack([c[1:] / c[:-1], c[1:] * (down - s), c[1:] * up, 1 / c[:-1], s], 1)
        return make_plan(schedule, ts, s, coef, [bool(u > 0) for u in up],
                         sigma_init_scale(sig[0], self.spacing))

    def step(self, plan, i, x, eps, noise, state):
        x0 = x * plan.coef[i, 3] - eps * plan.coef[i, 4]
        x_prev = lincomb(plan, i, [x, eps, noise], [0, 1, 2])
        return x_prev, x0, state

"""Ancestral sampling (Ho et al. 2020, algorithm 2): all T steps of p(x_{t-1} | x_t)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, Literal

from ...core import ConfigError
from .sampler import DiffusionSampler, SamplingPlan, affine_plan, affine_step


@dataclass(frozen=True)
class Ancestral(DiffusionSampler):
    """``sampler="ddpm"``: x_{t-1} = posterior mean + sigma_t z over every training step,
    sigma_t^2 = beta-tilde (``variance="beta_tilde"``, default) or beta."""

    name: ClassVar[str] = "ddpm"
    marker: ClassVar[str] = "o"
    headline: ClassVar = (("steps", "{} steps"),)

    steps: int | None = None  # always T; given only to say so
    variance: Literal["beta_tilde", "beta"] = "beta_tilde"
    clip_x0: bool = True

    def bind(self, model) -> Ancestral:
        self.bind_guidance(model)
        T = model.timesteps
        if self.steps is not None and self.steps != T:
            raise ConfigError(
                f"sampler='ddpm' takes all {T} steps; for fewer use sampler='ddim' with "
                f"steps=S (1..{T}) and eta=1.0 for DDPM-like stochastic sampling"
            )
        return replace(self, steps=T)

    def plan(self, schedule) -> SamplingPlan:
        s = schedule
        T = s.timesteps
        var = (s.posterior_variance if self.variance == "beta_tilde" else s.betas).clone()
        var[0] = 0.0
        return affine_plan(
            s, list(range(T - 1, -1, -1)),
            s.sqrt_recip_alphas_cumprod.flip(0), s.sqrt_recipm1_alphas_cumprod.flip(0),
            s.posterior_mean_coef1.flip(0), s.posterior_mean_coef2.flip(0),
            var.sqrt().flip(0), [t > 0 for t in range(T - 1, -1, -1)],
        )

    def step(self, plan, i, x, eps, noise, state):
        return (*affine_step(plan, i, x, eps, noise, self.clip_x0), state)

"""Multistep consistency sampling (Song et al. 2023, algorithm 1) as diffusers'
``CMStochasticIterativeScheduler`` and ``ConsistencyModelPipeline`` run it, on the contract
of the diffusion samplers (``zoo.models.diffusion.sampler``): options, a plan of per-row
tensors made once on the device, a step that reads only tensors.

x starts at sigma_max N(0, I); each of the S network calls maps x at sigma_k to the
model's x0, f(x, sigma_k) = c_skip(sigma_k) x + c_out(sigma_k) F(c_in(sigma_k) x,
c_noise(sigma_k)) (clipped to [-1, 1]), and all but the last re-noise it to the next sigma:
x = x0 + s_noise sqrt(sigma_{k+1}^2 - sigma_min^2) z. The S sigmas are diffusers': the
Karras sigmas of ``intervals`` N (its ``num_train_timesteps``) at the "leading" timesteps
(k N // S for k < S), from sigma_max down.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from ...core import ConfigError
from ...options import check_range
from ..diffusion.sampler import DiffusionSampler

DEFAULT_INTERVALS = 40  # diffusers' num_train_timesteps


@dataclass(frozen=True)
class EDM:
    """The EDM/consistency parametrisation (Karras et al. 2022; Song et al. 2023 appendix C):
    the noise range, the data's standard deviation and the Karras exponent."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    rho: float = 7.0

    def karras(self, ramp):
        """Karras sigmas at ``ramp`` in [0, 1]: sigma_max at 0, sigma_min at 1."""
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return (hi + ramp * (lo - hi)) ** self.rho

    def scalings(self, sigma):
        """(c_skip, c_out) with the boundary condition f(x, sigma_min) = x: c_skip =
        sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2), c_out = (sigma - sigma_min)
        sigma_data / sqrt(sigma^2 + sigma_data^2)."""
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / ((sigma - self.sigma_min) ** 2 + sd2)
        c_out = (sigma - self.sigma_min) * self.sigma_data / (sigma ** 2 + sd2) ** 0.5
        return c_skip, c_out

    def c_in(self, sigma):
        """The network's input scale 1 / sqrt(sigma^2 + sigma_data^2)."""
        return 1 / (sigma ** 2 + self.sigma_data ** 2) ** 0.5

    @staticmethod
    def c_noise(sigma):
        """The network's timestep 250 log(sigma) (the consistency models' code and diffusers)."""
        return 1000 * 0.25 * np.log(sigma + 1e-44)


@dataclass
class ConsistencyPlan:
    """One row per network call: the network's timestep ``t`` [S] (float32), its input
    scale ``c_in``, the output's ``c_skip`` and ``c_out``, and ``renoise`` [S], the scale of
    the noise added after the call (float64, on the device); ``noisy[i]``: whether row i
    draws noise (every row but the last). The loop scales its N(0, I) by ``init_scale``."""

    t: Tensor
    c_in: Tensor
    c_skip: Tensor
    c_out: Tensor
    renoise: Tensor
    noisy: list[bool]
    init_scale: float

    def __len__(self) -> int:
        return len(self.noisy)


def sampling_sigmas(steps: int, intervals: int, edm: EDM) -> np.ndarray:
    """The S sigmas a sampler visits, descending (float64): the Karras sigmas of N
    ``intervals`` at diffusers' "leading" timesteps k (N // S), k < S."""
    return edm.karras(np.arange(0, steps) * (intervals // steps) / (intervals - 1))


@dataclass(frozen=True)
class Multistep(DiffusionSampler):
    """``sampler="consistency"``: ``steps`` S network calls (default 1; the model's
    default sampler takes 2), on the grid of
    ``intervals`` N (default 40, diffusers'); ``s_noise`` scales the re-noising (default 1);
    ``clip_x0`` clips each x0 to [-1, 1] (default true, diffusers' ``clip_denoised``)."""

    name: ClassVar[str] = "consistency"
    marker: ClassVar[str] = "D"
    headline: ClassVar = (("steps", "{} steps"),)

    steps: int = 1
    intervals: int = DEFAULT_INTERVALS
    s_noise: float = field(default=1.0)
    clip_x0: bool = True

    def check(self) -> None:
        super().check()
        check_range(self.intervals, "intervals", least=2)
        check_range(self.s_noise, "s_noise", least=0)
        if not 1 <= self.steps <= self.intervals:
            raise ConfigError(f"steps must be in 1..{self.intervals} (the intervals), got "
                              f"{self.steps}")

    def bind(self, model) -> Multistep:
        self.bind_guidance(model)
        return replace(self)

    def plan(self, edm: EDM, device) -> ConsistencyPlan:
        exact = sampling_sigmas(self.steps, self.intervals, edm)
        # diffusers steps with float32 sigmas (sigma_min appended), its timesteps are the
        # float64 ones'
        sig32 = np.append(exact, edm.sigma_min).astype(np.float32).astype(np.float64)
        sigma = sig32[:-1]
        nxt = np.clip(sig32[1:], edm.sigma_min, edm.sigma_max)
        c_skip, c_out = edm.scalings(sigma)
        renoise = self.s_noise * np.sqrt(nxt ** 2 - edm.sigma_min ** 2)
        t = edm.c_noise(exact)
        as64 = lambda a: torch.from_numpy(np.asarray(a, np.float64)).to(device)  # noqa: E731
        return ConsistencyPlan(
            t=torch.from_numpy(t.astype(np.float32)).to(device), c_in=as64(edm.c_in(sigma)),
            c_skip=as64(c_skip), c_out=as64(c_out), renoise=as64(renoise),
            noisy=[i < self.steps - 1 for i in range(self.steps)],
            init_scale=float(edm.sigma_max))

    def step(self, plan, i, x, out, noise, state):
        """x0 = c_skip x + c_out F (clipped), then x0 + renoise z."""
        x0 = torch.addcmul(plan.c_skip[i] * x, out, plan.c_out[i])
        if self.clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        x_next = x0 if noise is None else torch.addcmul(x0, noise, plan.renoise[i])
        return x_next, x0, state

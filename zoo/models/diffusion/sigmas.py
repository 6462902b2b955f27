"""What the samplers ported from diffusers' sigma-parameterised schedulers share (Euler
ancestral, Heun, DPM-Solver++, UniPC): their timestep spacings, sigma tables and Karras
sigmas, computed once on the host in float64 exactly as diffusers does (``set_timesteps``),
and the plan they fill.

diffusers keeps an Euler/Heun sample in sigma space, x_sigma = x / sqrt(abar) with
sigma = sqrt((1 - abar) / abar), and feeds the network x_sigma / sqrt(sigma^2 + 1), which is
x itself: zoo's loop keeps x in this VP space, so a plan converts its coefficients, and the
network sees the same input and timestep as in diffusers. The x a row's network call sees
has abar = 1 / (1 + sigma^2) (``alpha_bar``), sigma being the row's (interpolated) sigma.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from ...core import ConfigError
from .sampler import DiffusionSampler

SPACINGS = ("linspace", "leading", "trailing")
KARRAS_RHO = 7.0


@dataclass
class SigmaPlan:
    """One row per network call: the timestep ``t`` fed to the network, ``alpha_bar`` of the
    x it sees, whether noise is drawn (``noisy``), and the sampler's coefficient table
    ``coef`` [rows, K] (float64, on the schedule's device; its columns are the sampler's).
    ``terms[i]`` lists the columns of row i that are not zero (known on the host, so a step
    skips the others without asking the device). The loop scales its N(0, I) draw by
    ``init_scale`` (diffusers' ``init_noise_sigma`` in VP space). ``sigma`` [rows] (float64)
    is the row's sigma; ``alpha_bar`` = 1 / (1 + sigma^2), float64 like every coefficient
    (float32 keeps only ~3 digits of 1 - abar near t = 0)."""

    t: Tensor
    alpha_bar: Tensor
    noisy: list[bool]
    coef: Tensor
    terms: list[tuple[int, ...]]
    sigma: Tensor
    init_scale: float = 1.0

    def __len__(self) -> int:
        return len(self.noisy)


def check_spacing(spacing: str) -> None:
    if spacing not in SPACINGS:
        raise ConfigError(f"unknown spacing {spacing!r}; valid: {', '.join(SPACINGS)}")


def check_steps(steps: int, T: int) -> None:
    if not 1 <= steps <= T:
        raise ConfigError(f"steps must be in 1..{T} (the training timesteps), got {steps}")


def train_sigmas(schedule) -> np.ndarray:
    """sigma_t = sqrt((1 - abar_t) / abar_t) of every training timestep, float64."""
    ab = schedule.alphas_cumprod.detach().cpu().double().numpy()
    return ((1 - ab) / ab) ** 0.5


def euler_timesteps(T: int, steps: int, spacing: str) -> np.ndarray:
    """Euler's and Heun's timesteps (float32, may be fractional), as diffusers."""
    check_spacing(spacing)
    if spacing == "linspace":
        return np.linspace(0, T - 1, steps, dtype=np.float32)[::-1].copy()
    if spacing == "leading":
        return (np.arange(0, steps) * (T // steps)).round()[::-1].copy().astype(np.float32)
    return np.arange(T, 0, -T / steps).round().copy().astype(np.float32) - 1


def multistep_timesteps(T: int, steps: int, spacing: str) -> np.ndarray:
    """DPM-Solver's and UniPC's timesteps (int64), as diffusers (lambda_min_clipped = -inf)."""
    check_spacing(spacing)
    if spacing == "linspace":
        return np.linspace(0, T - 1, steps + 1).round()[::-1][:-1].copy().astype(np.int64)
    if spacing == "leading":
        ratio = T // (steps + 1)
        return (np.arange(0, steps + 1) * ratio).round()[::-1][:-1].copy().astype(np.int64)
    return np.arange(T, 0, -T / steps).round().copy().astype(np.int64) - 1


def check_distinct(ts: np.ndarray, steps: int, spacing: str) -> None:
    if len(ts) != steps or np.any(np.diff(ts) >= 0) or ts[-1] < 0:
        raise ConfigError(f"steps={steps} with spacing={spacing!r} repeats timesteps; use "
                          f"fewer steps or another spacing")


def karras(sigma_max: float, sigma_min: float, steps: int) -> np.ndarray:
    """Karras et al. (2022) sigmas, rho = 7, descending from sigma_max to sigma_min."""
    ramp = np.linspace(0, 1, steps)
    lo, hi = sigma_min ** (1 / KARRAS_RHO), sigma_max ** (1 / KARRAS_RHO)
    return (hi + ramp * (lo - hi)) ** KARRAS_RHO


def sigma_to_t(sigmas: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """The fractional timestep of each sigma, interpolating log sigma (diffusers' rule)."""
    log_sigma = np.log(np.maximum(sigmas, 1e-10))
    dists = log_sigma - log_sigmas[:, np.newaxis]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    high = low + 1
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high]), 0, 1)
    return ((1 - w) * low + w * high).reshape(sigmas.shape)


def interp_sigmas(ts: np.ndarray, sig: np.ndarray) -> np.ndarray:
    return np.interp(ts, np.arange(0, len(sig)), sig)


def make_plan(schedule, t: np.ndarray, row_sigmas: np.ndarray, coef: np.ndarray,
              noisy: list[bool], init_scale: float = 1.0) -> SigmaPlan:
    """The plan on the schedule's device: ``row_sigmas`` [rows] is the sigma of the x each
    row's network call sees (abar = 1 / (1 + sigma^2))."""
    dev = schedule.betas.device
    if not np.all(np.isfinite(coef)):
        raise ConfigError("the sampler's coefficients are not finite for this schedule")
    terms = [tuple(int(k) for k in np.flatnonzero(row)) for row in coef]
    t = torch.from_numpy(np.ascontiguousarray(t))
    t = t.to(torch.long) if t.dtype == torch.int64 else t.to(torch.float32)
    row_sigmas = torch.from_numpy(np.asarray(row_sigmas, dtype=np.float64).copy())
    ab = 1.0 / (1.0 + row_sigmas**2)
    return SigmaPlan(t=t.to(dev), alpha_bar=ab.to(dev), noisy=list(noisy),
                     coef=torch.from_numpy(coef).to(torch.float64).to(dev), terms=terms,
                     sigma=row_sigmas.to(dev), init_scale=float(init_scale))


def lincomb(plan: SigmaPlan, i: int, tensors: list, cols: range | list) -> Tensor:
    """sum_k coef[i, cols[k]] * tensors[k] over the non-zero coefficients of row i."""
    out = None
    used = set(plan.terms[i])
    for col, x in zip(cols, tensors, strict=True):
        if col not in used or x is None:
            continue
        c = plan.coef[i, col]
        out = x * c if out is None else out.addcmul_(x, c)
    if out is None:
        out = torch.zeros_like(next(x for x in tensors if x is not None))
    return out


DEFAULT_STEPS = 50
ORDERS = (1, 2, 3)


def check_order(order: int) -> None:
    if order not in ORDERS:
        raise ConfigError(f"order must be 1, 2 or 3 (diffusers' solver_order), got {order}")


def bound_steps(sampler, model, multistep: bool) -> int:
    """A ported sampler's ``steps`` for ``model``, its guidance checked too: default
    min(50, T), a multistep solver's min(50, T - 1) (it visits steps + 1 distinct
    timesteps); in 1..T; its spacing giving distinct timesteps (a multistep solver's Karras
    sigmas are left unchecked, as diffusers lets them repeat)."""
    sampler.bind_guidance(model)
    T = model.timesteps
    steps = sampler.steps
    if steps is None:
        steps = min(DEFAULT_STEPS, max(T - 1, 1) if multistep else T)
    check_steps(steps, T)
    if not multistep:
        check_distinct(euler_timesteps(T, steps, sampler.spacing), steps, sampler.spacing)
    elif not sampler.karras:
        check_distinct(multistep_timesteps(T, steps, sampler.spacing), steps, sampler.spacing)
    return steps


@dataclass(frozen=True)
class SpacedSampler(DiffusionSampler):
    """The options every ported sampler has: ``steps`` S (None: min(50, T), a multistep
    solver's min(50, T - 1)) and the ``spacing`` of the visited timesteps (diffusers'
    ``timestep_spacing``), bound by ``bound_steps``."""

    headline: ClassVar = (("steps", "{} steps"),)
    #: whether it visits steps + 1 timesteps (DPM-Solver, UniPC) rather than steps
    multistep: ClassVar[bool] = False

    steps: int | None = None  # None: min(50, T)
    spacing: Literal["linspace", "leading", "trailing"] = "linspace"

    def check(self) -> None:
        super().check()
        check_spacing(self.spacing)

    def bind(self, model):
        return replace(self, steps=bound_steps(self, model, multistep=self.multistep))


@dataclass(frozen=True)
class KarrasSampler(SpacedSampler):
    """A ported sampler that may take Karras sigmas (diffusers' ``use_karras_sigmas``)."""

    karras: bool = False


@dataclass(frozen=True)
class MultistepSampler(KarrasSampler):
    """A multistep solver (DPM-Solver++, UniPC): ``order`` is diffusers' ``solver_order``."""

    multistep: ClassVar[bool] = True

    order: int = 2

    def check(self) -> None:
        super().check()
        check_order(self.order)

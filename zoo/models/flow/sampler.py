"""What a flow-matching sampler is: an ODE solver from t = 1 (noise) to t = 0 (data) over
the network's velocity v(x, t) = dx/dt, on the contract of the diffusion samplers
(``zoo.models.diffusion.sampler``): options, a plan of per-row tensors made once on the
device, and a step that reads only tensors (so the loop can be captured as a CUDA graph).

The times are diffusers' (``FlowMatchEulerDiscreteScheduler.set_timesteps``): S values
spaced evenly from 1 to the smallest of its ``num_train_timesteps`` = 1000 training sigmas,
each mapped by SD3's timestep shift t -> shift t / (1 + (shift - 1) t) (which spends more
steps at high noise when shift > 1), then a last step to 0. The network sees 1000 t as its
timestep, as diffusers' pipelines feed it. Computed in float32 as diffusers does, so the
timesteps are diffusers' to the bit. That grid (``spacing="linspace"``, the default) spends
its last step on [t_min, 0] = [0.001, 0]: at 2 steps it is one step of nearly the whole
path. ``spacing="trailing"`` visits 1, 1 - 1/S, ..., 1/S (shifted), then 0: S equal steps,
what a few-step sampler of a straight flow (``rectified-flow``) needs; the name is that of
DDIM's spacing ending its grid the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from ...core import ConfigError
from ...options import check_range
from ..diffusion.sampler import DiffusionSampler

#: the network's timestep is TIME_SCALE t (diffusers' ``num_train_timesteps``)
TIME_SCALE = 1000
DEFAULT_STEPS = 50  # diffusers' pipelines' num_inference_steps
SPACINGS = ("linspace", "trailing")


def shifted(t, shift: float):
    """SD3's timestep shift of times ``t`` (float32 tensors stay float32, as diffusers)."""
    return shift * t / (1 + (shift - 1) * t)


def flow_times(steps: int, shift: float, spacing: str = "linspace") -> np.ndarray:
    """The S times a sampler visits, descending from 1, then 0: [S + 1] float32 values;
    with ``spacing="linspace"`` diffusers' ``sigmas`` after ``set_timesteps(S)`` with
    ``shift``, with ``"trailing"`` the shifted 1 - k / S, k < S (equal steps unshifted)."""
    if spacing == "trailing":
        t = 1 - np.arange(steps, dtype=np.float64) / steps
    else:
        ends = torch.tensor([TIME_SCALE, 1], dtype=torch.float32) / TIME_SCALE
        t_max, t_min = shifted(ends, shift).tolist()  # its training table's first and last
        t = np.linspace(t_max * TIME_SCALE, t_min * TIME_SCALE, steps) / TIME_SCALE
    t = torch.from_numpy(shifted(t, shift)).to(torch.float32)
    return np.concatenate([t.numpy(), np.zeros(1, dtype=np.float32)])


@dataclass
class FlowPlan:
    """One row per network call: the network's timestep ``t`` [rows] (float32, TIME_SCALE
    times the time), the time ``sigma`` [rows] of the x it sees and the sampler's step
    coefficient ``coef`` [rows] (both float64, on the device). Nothing is drawn:
    ``noisy`` is all False (the loop's contract)."""

    t: Tensor
    sigma: Tensor
    coef: Tensor
    noisy: list[bool]

    def __len__(self) -> int:
        return len(self.noisy)


def make_plan(device, sigma: np.ndarray, coef: np.ndarray) -> FlowPlan:
    """The plan on ``device`` from the rows' (float32) times and coefficients."""
    sigma32 = np.asarray(sigma, dtype=np.float32)
    t = torch.from_numpy(sigma32) * TIME_SCALE  # float32, as diffusers' timesteps
    as64 = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float64)).to(device)  # noqa: E731
    return FlowPlan(t=t.to(device), sigma=as64(sigma32), coef=as64(coef),
                    noisy=[False] * len(sigma32))


@dataclass(frozen=True)
class FlowSampler(DiffusionSampler):
    """A flow-matching sampler: ``steps`` S (default 50, at most 1000), ``shift`` (SD3's
    timestep shift; 1: none, 3: SD3's), ``spacing`` of the times (``linspace``: diffusers';
    ``trailing``: equal steps), ``guidance`` (classifier-free, on the velocity)."""

    headline: ClassVar = (("steps", "{} steps"),)

    steps: int | None = None
    shift: float = field(default=1.0)
    spacing: Literal["linspace", "trailing"] = "linspace"

    def check(self) -> None:
        super().check()
        check_range(self.shift, "shift", above=0)
        if self.spacing not in SPACINGS:
            raise ConfigError(f"unknown spacing {self.spacing!r}; valid: {', '.join(SPACINGS)}")
        if self.steps is not None and not 1 <= self.steps <= TIME_SCALE:
            raise ConfigError(f"steps must be in 1..{TIME_SCALE}, got {self.steps}")

    def bind(self, model) -> FlowSampler:
        self.bind_guidance(model)
        return replace(self, steps=DEFAULT_STEPS if self.steps is None else self.steps)

    def label(self) -> str:
        out = super().label()
        calls = self.network_calls()
        return out if calls in (None, self.steps) else f"{out} ({calls} network calls)"

    def times(self) -> tuple[np.ndarray, np.ndarray]:
        """(t_k, dt_k = t_{k+1} - t_k) of the S steps, float64 from the float32 times."""
        t = flow_times(self.steps, self.shift, self.spacing).astype(np.float64)
        return t[:-1], np.diff(t)

    def plan(self, device) -> FlowPlan:
        raise NotImplementedError

    def x0(self, plan: FlowPlan, i: int, x: Tensor, v: Tensor) -> Tensor:
        """The predicted data x - t v at row i."""
        return torch.addcmul(x, v, plan.sigma[i], value=-1.0)

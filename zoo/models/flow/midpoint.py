"""The explicit midpoint method (second-order Runge-Kutta) on the flow's ODE: a half Euler
step to (t_k + t_{k+1}) / 2, then the whole step from x_k with the velocity there. S steps,
2 S network calls, every step (the last too) second order. No diffusers counterpart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from .sampler import FlowPlan, FlowSampler, make_plan


@dataclass(frozen=True)
class Midpoint(FlowSampler):
    """``sampler="midpoint"``: ``steps`` S (2 S network calls), ``shift``. Deterministic."""

    name: ClassVar[str] = "midpoint"
    marker: ClassVar[str] = "v"

    def network_calls(self) -> int | None:
        return None if self.steps is None else 2 * self.steps

    def plan(self, device) -> FlowPlan:
        t, dt = self.times()
        sigma = np.stack([t, t + dt / 2], 1).reshape(-1)
        coef = np.stack([dt / 2, dt], 1).reshape(-1)
        return make_plan(device, sigma, coef)

    def step(self, plan, i, x, v, noise, state):
        x0 = self.x0(plan, i, x, v)
        if i % 2 == 0:  # the half step to the midpoint, its start kept
            return torch.addcmul(x, v, plan.coef[i]), x0, (x,)
        return torch.addcmul(state[0], v, plan.coef[i]), x0, ()

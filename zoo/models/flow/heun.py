"""Heun's second-order method on the flow's ODE, as diffusers'
``FlowMatchHeunDiscreteScheduler`` (without churn): an Euler step from t_k to t_{k+1}, then
a second call there and the average of both velocities from x_k; the last step (to t = 0,
where no velocity is taken) is Euler alone: S steps, 2 S - 1 network calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from .sampler import FlowPlan, FlowSampler, make_plan


@dataclass(frozen=True)
class Heun(FlowSampler):
    """``sampler="heun"``: ``steps`` S (2 S - 1 network calls), ``shift``. Deterministic."""

    name: ClassVar[str] = "heun"
    marker: ClassVar[str] = "D"

    def network_calls(self) -> int | None:
        return None if self.steps is None else 2 * self.steps - 1

    def plan(self, device) -> FlowPlan:
        t, dt = self.times()
        # rows: t_0; then t_1, t_1, t_2, t_2, ...: the correction at t_{k+1} and the next
        # Euler step from there (diffusers' tables). Even rows step by dt, odd rows by dt / 2
        # times the sum of both velocities
        sigma = np.concatenate([t[:1], np.repeat(t[1:], 2)])
        coef = np.concatenate([dt[:1], *[[dt[k] / 2, dt[k + 1]] for k in range(len(dt) - 1)]])
        return make_plan(device, sigma, coef)

    def step(self, plan, i, x, v, noise, state):
        x0 = self.x0(plan, i, x, v)
        if i % 2 == 0:  # an Euler step, its start and velocity kept for the correction
            return torch.addcmul(x, v, plan.coef[i]), x0, (x, v)
        x_start, v_start = state
        return torch.addcmul(x_start, v_start + v, plan.coef[i]), x0, ()

"""Euler's method on the flow's ODE, as diffusers' ``FlowMatchEulerDiscreteScheduler``
(without stochastic sampling): x_{k+1} = x_k + (t_{k+1} - t_k) v(x_k, t_k), S steps, S
network calls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .sampler import FlowPlan, FlowSampler, make_plan


@dataclass(frozen=True)
class Euler(FlowSampler):
    """``sampler="euler"``: ``steps`` S (S network calls), ``shift``. Deterministic."""

    name: ClassVar[str] = "euler"
    marker: ClassVar[str] = "o"

    def plan(self, device) -> FlowPlan:
        t, dt = self.times()
        return make_plan(device, t, dt)

    def step(self, plan, i, x, v, noise, state):
        return torch.addcmul(x, v, plan.coef[i]), self.x0(plan, i, x, v), state

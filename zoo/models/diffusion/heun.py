"""Heun's second-order method (Karras et al. 2022, algorithm 1 without churn), as diffusers'
``HeunDiscreteScheduler``: ``steps`` S take 2 S - 1 network calls (an Euler step, then a
correction at its end, for every step but the last, which is Euler to sigma = 0)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .euler_ancestral import sigma_init_scale
from .sigmas import (
    KarrasSampler,
    SigmaPlan,
    euler_timesteps,
    interp_sigmas,
    karras,
    make_plan,
    sigma_to_t,
    train_sigmas,
)


@dataclass(frozen=True)
class Heun(KarrasSampler):
    """``sampler="heun"``: ``steps`` S (diffusers' ``num_inference_steps``, default 50, at most
    T; 2 S - 1 network calls), ``spacing`` (default ``"linspace"``), ``karras`` sigmas
    (``use_karras_sigmas``), ``clip_x0`` (``clip_sample``, default off). Deterministic."""

    name: ClassVar[str] = "heun"
    marker: ClassVar[str] = "D"

    clip_x0: bool = False

    def network_calls(self) -> int | None:
        return None if self.steps is None else 2 * self.steps - 1

    def label(self) -> str:
        out = super().label()
        return out if self.steps is None else f"{out} ({self.network_calls()} network calls)"

    def plan(self, schedule) -> SigmaPlan:
        ts = euler_timesteps(schedule.timesteps, self.steps, self.spacing)
        full = train_sigmas(schedule)
        sig = interp_sigmas(ts, full)
        if self.karras:
            sig = karras(sig[0], sig[-1], self.steps)
            ts = sigma_to_t(sig, np.log(full)).astype(np.float32)
        sig = np.concatenate([sig, [0.0]])
        # diffusers' tables: sigmas s0, s1, s1, ..., s_{S-1}, s_{S-1}, 0; timesteps t0, t1, t1, ...
        sd = np.concatenate([sig[:1], np.repeat(sig[1:-1], 2), sig[-1:]])
        td = np.concatenate([ts[:1], np.repeat(ts[1:], 2)])
        rows = len(td)
        c = 1 / (sd**2 + 1) ** 0.5  # x = c x_sigma
        dt = np.array([sd[i + 1] - sd[i] if i % 2 == 0 else sd[i] - sd[i - 1]
                       for i in range(rows)])
        # row i: x_sigma = x / c_i, x0 = x_sigma - s_i eps, derivative d = (x_sigma - x0) / s_i;
        # even rows x_next = c_{i+1} (x_sigma + d dt), odd rows average d with the saved one
        # and step from the saved x_sigma
        coef = np.stack([1 / c[:-1], sd[:-1], dt, c[1:]], 1)
        return make_plan(schedule, td, sd[:-1], coef, [False] * rows,
                         sigma_init_scale(sd[0], self.spacing))

    def step(self, plan, i, x, eps, noise, state):
        inv_c, s, dt, c_next = plan.coef[i]
        xs = x * inv_c
        x0 = xs - eps * s
        if self.clip_x0:
            x0.clamp_(-1.0, 1.0)
        d = (xs - x0) / s
        if i % 2 == 0:  # first order: an Euler step, saving its derivative and start
            return (xs + d * dt) * c_next, x0, (d, xs)
        d_first, xs_first = state
        return (xs_first + (d_first + d) / 2 * dt) * c_next, x0, ()

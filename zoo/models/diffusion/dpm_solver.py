"""DPM-Solver++ (Lu et al. 2022), multistep, as diffusers' ``DPMSolverMultistepScheduler``
with ``algorithm_type="dpmsolver++"`` (or ``"sde-dpmsolver++"``), midpoint solver type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .sigmas import (
    MultistepSampler,
    SigmaPlan,
    interp_sigmas,
    karras,
    lincomb,
    make_plan,
    multistep_timesteps,
    sigma_to_t,
    train_sigmas,
)


def karras_multistep(schedule, steps: int, round_t: bool) -> tuple[np.ndarray, np.ndarray]:
    """Karras sigmas over the whole training range and their timesteps, as DPM-Solver and
    UniPC do: rounded (int64 after diffusers' cast), or truncated where ``round_t`` is off
    (DPM-Solver with ``squaredcos_cap_v2``)."""
    full = train_sigmas(schedule)
    sig = karras(full[-1], full[0], steps)
    ts = sigma_to_t(sig, np.log(full))
    return (ts.round() if round_t else ts).astype(np.int64), sig


def lambdas(sig: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """alpha_t, sigma_t and lambda = log(alpha_t / sigma_t) of VP sigmas (inf at sigma 0)."""
    alpha = 1 / (sig**2 + 1) ** 0.5
    sigma_t = sig * alpha
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(sigma_t)
    return alpha, sigma_t, lam


@dataclass(frozen=True)
class DPMSolver(MultistepSampler):
    """``sampler="dpmpp-2m"``: DPM-Solver++(2M). ``steps`` S (default min(50, T - 1)),
    ``spacing`` (default ``"linspace"``), ``karras`` sigmas, ``order`` (diffusers'
    ``solver_order``, 2), ``sde`` (``algorithm_type="sde-dpmsolver++"``: stochastic),
    ``lower_order_final`` (lower orders at the last steps when S < 15, default on). The last
    step goes to sigma = 0 (``final_sigmas_type="zero"``) with a first-order update."""

    name: ClassVar[str] = "dpmpp-2m"
    marker: ClassVar[str] = "P"

    sde: bool = False
    lower_order_final: bool = True
    # clip each predicted x0 to [-1, 1]: diffusers' thresholding=True at sample_max_value=1
    # (its dynamic threshold is then exactly 1); off as there, but an undertrained model's
    # x0 at high noise runs far outside the data range (DDIM clips by default)
    clip_x0: bool = False

    def row_orders(self, S: int) -> list[int]:
        out = []
        for i in range(S):
            final = i == S - 1  # final_sigmas_type "zero": always first order
            second = i == S - 2 and self.lower_order_final and S < 15
            if self.order == 1 or i < 1 or final:
                out.append(1)
            elif self.order == 2 or i < 2 or second:
                out.append(2)
            else:
                out.append(3)
        return out

    def plan(self, schedule) -> SigmaPlan:
        S = self.steps
        if self.karras:
            ts, sig = karras_multistep(schedule, S, round_t=schedule_kind(schedule) != "cosine")
        else:
            ts = multistep_timesteps(schedule.timesteps, S, self.spacing)
            sig = interp_sigmas(ts, train_sigmas(schedule))
        sig = np.concatenate([sig, [0.0]])
        alpha, sigma_t, lam = lambdas(sig)
        orders = self.row_orders(len(ts))
        # columns: x, m0 (this step's x0), m1, m2 (the previous two), z; then x0 = r1 x - r2 eps
        coef = np.zeros((len(ts), 7))
        with np.errstate(divide="ignore", invalid="ignore"):
            for i, k in enumerate(orders):
                coef[i, :5] = self._update(i, k, alpha, sigma_t, lam)
        coef[:, 5] = (sig[:-1] ** 2 + 1) ** 0.5
        coef[:, 6] = sig[:-1]
        noisy = [self.sde and bool(s > 0) for s in sig[1:]]
        return make_plan(schedule, ts, sig[:-1], coef, noisy)

    def _update(self, i: int, order: int, alpha, sigma_t, lam) -> np.ndarray:
        """diffusers' update of order ``order`` at step i, applied to basis vectors: the
        coefficients of x, m0, m1, m2 and z in x_next."""
        x, m0, m1, m2, z = np.eye(5)
        a_t, s_t, s_s0 = alpha[i + 1], sigma_t[i + 1], sigma_t[i]
        h = lam[i + 1] - lam[i]
        if order == 1:
            D0, D1, D2 = m0, 0 * m0, 0 * m0
        elif order == 2:
            r0 = (lam[i] - lam[i - 1]) / h
            D0, D1, D2 = m0, (1.0 / r0) * (m0 - m1), 0 * m0
        else:
            r0, r1 = (lam[i] - lam[i - 1]) / h, (lam[i - 1] - lam[i - 2]) / h
            D1_0, D1_1 = (1.0 / r0) * (m0 - m1), (1.0 / r1) * (m1 - m2)
            D0 = m0
            D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1)
            D2 = (1.0 / (r0 + r1)) * (D1_0 - D1_1)
        if not self.sde:
            out = (s_t / s_s0) * x - (a_t * (np.exp(-h) - 1.0)) * D0
            if order == 2:
                out = out - 0.5 * (a_t * (np.exp(-h) - 1.0)) * D1
            elif order == 3:
                out = (out + (a_t * ((np.exp(-h) - 1.0) / h + 1.0)) * D1
                       - (a_t * ((np.exp(-h) - 1.0 + h) / h**2 - 0.5)) * D2)
            return out
        out = ((s_t / s_s0 * np.exp(-h)) * x + (a_t * (1 - np.exp(-2.0 * h))) * D0
               + s_t * np.sqrt(1.0 - np.exp(-2 * h)) * z)
        if order == 2:
            out = out + 0.5 * (a_t * (1 - np.exp(-2.0 * h))) * D1
        elif order == 3:
            out = (out + (a_t * ((1.0 - np.exp(-2.0 * h)) / (-2.0 * h) + 1.0)) * D1
                   + (a_t * ((1.0 - np.exp(-2.0 * h) - 2.0 * h) / (2.0 * h) ** 2 - 0.5)) * D2)
        return out

    def step(self, plan, i, x, eps, noise, state):
        x0 = x * plan.coef[i, 5] - eps * plan.coef[i, 6]
        if self.clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        m1, m2 = state if state else (None, None)
        x_prev = lincomb(plan, i, [x, x0, m1, m2, noise], range(5))
        return x_prev, x0, (x0, m1)


def schedule_kind(schedule) -> str | None:
    return getattr(schedule, "kind", None)


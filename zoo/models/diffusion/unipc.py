"""UniPC (Zhao et al. 2023): a multistep predictor (UniP) and corrector (UniC) in data
prediction, as diffusers' ``UniPCMultistepScheduler`` (``predict_x0``, ``bh2`` by default).
The corrector refines x_t with the network's output at x_t (no extra network call) before
the predictor steps on: one network call per step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .dpm_solver import karras_multistep, lambdas
from .sigmas import (
    MultistepSampler,
    SigmaPlan,
    interp_sigmas,
    lincomb,
    make_plan,
    multistep_timesteps,
    train_sigmas,
)


def _bh(lam, i_t: int, i_s0: int, order: int, prev: list[int]):
    """The quantities UniP and UniC share (diffusers' ``multistep_uni_*_bh_update``): from
    sigma index i_s0 to i_t, with earlier points at sigma indices ``prev`` (order - 1)."""
    h = lam[i_t] - lam[i_s0]
    rks = [(lam[si] - lam[i_s0]) / h for si in prev] + [1.0]
    rks = np.array(rks)
    hh = -h
    h_phi_1 = np.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial = 1
    B_h = np.expm1(hh)  # bh2
    R, b = [], []
    for k in range(1, order + 1):
        R.append(rks ** (k - 1))
        b.append(h_phi_k * factorial / B_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return np.stack(R), np.array(b), rks, h_phi_1, B_h


@dataclass(frozen=True)
class UniPC(MultistepSampler):
    """``sampler="unipc"``: UniPC, ``steps`` S (default min(50, T - 1)), ``spacing`` (default
    ``"linspace"``), ``karras`` sigmas, ``order`` (diffusers' ``solver_order``, 2),
    ``disable_corrector`` (the steps
    without corrector). Lower orders at the first and last steps, the last to sigma = 0."""

    name: ClassVar[str] = "unipc"
    marker: ClassVar[str] = "X"

    disable_corrector: tuple[int, ...] = ()
    clip_x0: bool = False  # as dpmpp-2m's: diffusers' thresholding=True, sample_max_value=1

    def plan(self, schedule) -> SigmaPlan:
        S, p = self.steps, self.order
        if self.karras:
            ts, sig = karras_multistep(schedule, S, round_t=True)
        else:
            ts = multistep_timesteps(schedule.timesteps, S, self.spacing)
            sig = interp_sigmas(ts, train_sigmas(schedule))
        S = len(ts)
        sig = np.concatenate([sig, [0.0]])
        alpha, sigma_t, lam = lambdas(sig)
        orders = [min(p, S - i, i + 1) for i in range(S)]  # lower_order_final, warm-up
        # corrector columns 0..p+2: x, last x_c, m_i, m_{i-1} .. m_{i-p}; predictor columns
        # p+3 .. 2p+4: x_c, m_i .. m_{i-p}; then x0 = r1 x - r2 eps
        nc, npred = p + 3, p + 2
        coef = np.zeros((S, nc + npred + 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            for i in range(S):
                if i > 0 and (i - 1) not in self.disable_corrector:
                    coef[i, :nc] = self._corrector(i, orders[i - 1], alpha, sigma_t, lam, nc)
                else:
                    coef[i, 0] = 1.0
                coef[i, nc:nc + npred] = self._predictor(i, orders[i], alpha, sigma_t, lam, npred)
        coef[:, -2] = (sig[:-1] ** 2 + 1) ** 0.5
        coef[:, -1] = sig[:-1]
        return make_plan(schedule, ts, sig[:-1], coef, [False] * S)

    def _predictor(self, i, order, alpha, sigma_t, lam, n) -> np.ndarray:
        e = np.eye(n)
        x, m = e[0], e[1:]  # m[k] = m_{i-k}
        R, b, rks, h_phi_1, B_h = _bh(lam, i + 1, i, order, [i - k for k in range(1, order)])
        D1s = [(m[k] - m[0]) / rks[k - 1] for k in range(1, order)]
        out = sigma_t[i + 1] / sigma_t[i] * x - alpha[i + 1] * h_phi_1 * m[0]
        if D1s:
            rhos = np.array([0.5]) if order == 2 else np.linalg.solve(R[:-1, :-1], b[:-1])
            out = out - alpha[i + 1] * B_h * sum(r * d for r, d in zip(rhos, D1s, strict=True))
        return out

    def _corrector(self, i, order, alpha, sigma_t, lam, n) -> np.ndarray:
        e = np.eye(n)
        last, m_t, m = e[1], e[2], e[3:]  # m[k] = m_{i-1-k}
        R, b, rks, h_phi_1, B_h = _bh(lam, i, i - 1, order,
                                     [i - (k + 1) for k in range(1, order)])
        D1s = [(m[k] - m[0]) / rks[k - 1] for k in range(1, order)]
        rhos = np.array([0.5]) if order == 1 else np.linalg.solve(R, b)
        corr = sum((r * d for r, d in zip(rhos[:-1], D1s, strict=True)), 0 * last)
        return (sigma_t[i] / sigma_t[i - 1] * last - alpha[i] * h_phi_1 * m[0]
                - alpha[i] * B_h * (corr + rhos[-1] * (m_t - m[0])))

    def step(self, plan, i, x, eps, noise, state):
        p = self.order
        nc = p + 3
        x0 = x * plan.coef[i, -2] - eps * plan.coef[i, -1]
        if self.clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        last, *ms = state if state else (None, *([None] * p))
        x_c = lincomb(plan, i, [x, last, x0, *ms], range(nc))
        x_prev = lincomb(plan, i, [x_c, x0, *ms], range(nc, nc + p + 2))
        return x_prev, x0, (x_c, x0, *ms[:-1])

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
    """What UniP and UniC share (Zhao et al. 2023, arXiv 2302.04867; diffusers'
    ``multistep_uni_*_bh_update``), from sigma index i_s0 to i_t with earlier points at the
    sigma indices ``prev`` (order - 1): the order conditions R a = b on the coefficients a
    (rows R_k = r^(k-1), r_k = (lambda_k - lambda_s0) / h of those points and 1;
    b_k = k! hh phi_(k+1)(hh) / B(h), phi_1(x) = (e^x - 1) / x, phi_(k+1)(x) = (phi_k(x) -
    1/k!) / x, hh = -h in data prediction), r, h_phi_1 = hh phi_1(hh) = e^-h - 1 and
    B(h) = e^hh - 1 ("bh2", diffusers' default; "bh1" would be B(h) = hh)."""
    h = lam[i_t] - lam[i_s0]
    rks = np.array([(lam[si] - lam[i_s0]) / h for si in prev] + [1.0])
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


def _differences(rhos, rks, n: int, m0: int) -> np.ndarray:
    """sum_k rho_k D1_k with D1_k = (m_k - m0) / r_k, as weights of ``n`` columns where m0
    is column ``m0`` and m_k column m0 + k."""
    out = np.zeros(n)
    for k, rho in enumerate(rhos, start=1):
        out[m0 + k] += rho * (1.0 / rks[k - 1])
        out[m0] += rho * (-1.0 / rks[k - 1])
    return out


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
        """UniP-p, step i: the weights of x, m_i, m_(i-1) .. m_(i-p) (x0 predictions) in
        x_t = (sigma_t / sigma_s) x - alpha_t h phi_1 m_i - alpha_t B(h) sum_k a_k D1_k,
        the a_k solving the first order - 1 order conditions (1/2 at order 2)."""
        R, b, rks, h_phi_1, B_h = _bh(lam, i + 1, i, order, [i - k for k in range(1, order)])
        base = np.zeros(n)
        base[0] = sigma_t[i + 1] / sigma_t[i]
        base[1] = -(alpha[i + 1] * h_phi_1)
        if order == 1:
            return base
        rhos = np.array([0.5]) if order == 2 else np.linalg.solve(R[:-1, :-1], b[:-1])
        return base - (alpha[i + 1] * B_h) * _differences(rhos, rks, n, 1)

    def _corrector(self, i, order, alpha, sigma_t, lam, n) -> np.ndarray:
        """UniC-p at step i (of the step from i - 1 to i): the weights of x, the last x_c,
        m_t (x0 at x), m_(i-1) .. m_(i-p) in x_c = (sigma_t / sigma_s) x_c,last
        - alpha_t h phi_1 m_(i-1) - alpha_t B(h) (sum_k a_k D1_k + a_p (m_t - m_(i-1))),
        the a solving all order conditions (1/2 at order 1); x itself is not used."""
        R, b, rks, h_phi_1, B_h = _bh(lam, i, i - 1, order,
                                     [i - (k + 1) for k in range(1, order)])
        rhos = np.array([0.5]) if order == 1 else np.linalg.solve(R, b)
        base = np.zeros(n)
        base[1] = sigma_t[i] / sigma_t[i - 1]
        base[3] = -(alpha[i] * h_phi_1)
        res = _differences(rhos[:-1], rks, n, 3)
        res[2] += rhos[-1]
        res[3] += -rhos[-1]
        return base - (alpha[i] * B_h) * res

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

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


def divided_differences(order: int, r0, r1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The multistep history terms D0, D1, D2 of DPM-Solver (Lu et al. 2022a, 2022b; diffusers'
    names) as weights of m0, m1, m2, the x0 predictions at lambda_s and the two before, with
    r0 h and r1 h the two lambda gaps before s: D0 = m0, D1 ~ h x0' and D2 ~ h^2 x0'' / 2
    (derivatives in lambda; zero beyond ``order`` - 1)."""
    zero = np.zeros(3)
    D0 = np.array([1.0, 0.0, 0.0])
    if order == 1:
        return D0, zero, zero
    D1_0 = (1.0 / r0) * np.array([1.0, -1.0, 0.0])  # (m0 - m1) / r0
    if order == 2:
        return D0, D1_0, zero
    D1_1 = (1.0 / r1) * np.array([0.0, 1.0, -1.0])  # (m1 - m2) / r1
    D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1)
    D2 = (1.0 / (r0 + r1)) * (D1_0 - D1_1)
    return D0, D1, D2


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
        """Step i's coefficients of x, m0, m1, m2 (this step's x0 prediction and the previous
        two) and z in x_next, from sigma index i (s) to i + 1 (t), h = lambda_t - lambda_s."""
        a_t, s_t, ratio = alpha[i + 1], sigma_t[i + 1], sigma_t[i + 1] / sigma_t[i]
        h = lam[i + 1] - lam[i]
        r0 = (lam[i] - lam[i - 1]) / h if order > 1 else None
        r1 = (lam[i - 1] - lam[i - 2]) / h if order > 2 else None
        D0, D1, D2 = divided_differences(order, r0, r1)
        if not self.sde:
            # DPM-Solver++ (Lu et al. 2022b, arXiv 2211.01095): the data-prediction exponential
            # integrator, x_t = (sigma_t / sigma_s) x - alpha_t (e^-h - 1) D0 (order 1: DDIM),
            # - alpha_t (e^-h - 1) D1 / 2 at order 2 (algorithm 2, 2M), or at order 3 (3M) its
            # Taylor terms + alpha_t ((e^-h - 1) / h + 1) D1 - alpha_t ((e^-h - 1 + h) / h^2
            # - 1/2) D2
            phi = np.exp(-h) - 1.0
            cx, cz = ratio, 0.0
            w0 = -(a_t * phi)
            w1 = {1: 0.0, 2: -(0.5 * (a_t * phi)), 3: a_t * (phi / h + 1.0)}[order]
            w2 = -(a_t * ((phi + h) / h**2 - 0.5)) if order == 3 else 0.0
        else:
            # SDE-DPM-Solver++ (diffusers' "sde-dpmsolver++"): x_t = (sigma_t / sigma_s) e^-h x
            # + alpha_t (1 - e^-2h) (D0 + D1 / 2) + sigma_t sqrt(1 - e^-2h) z at order 2; at
            # order 3 D1's weight is alpha_t ((1 - e^-2h) / (-2h) + 1) and D2's
            # alpha_t ((1 - e^-2h - 2h) / (2h)^2 - 1/2)
            psi = 1 - np.exp(-2.0 * h)
            cx, cz = ratio * np.exp(-h), s_t * np.sqrt(1.0 - np.exp(-2 * h))
            w0 = a_t * psi
            w1 = {1: 0.0, 2: 0.5 * (a_t * psi), 3: a_t * (psi / (-2.0 * h) + 1.0)}[order]
            w2 = a_t * ((psi - 2.0 * h) / (2.0 * h) ** 2 - 0.5) if order == 3 else 0.0
        return np.array([cx, *(w0 * D0 + w1 * D1 + w2 * D2), cz])

    def step(self, plan, i, x, eps, noise, state):
        x0 = x * plan.coef[i, 5] - eps * plan.coef[i, 6]
        if self.clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        m1, m2 = state if state else (None, None)
        x_prev = lincomb(plan, i, [x, x0, m1, m2, noise], range(5))
        return x_prev, x0, (x0, m1)


def schedule_kind(schedule) -> str | None:
    return getattr(schedule, "kind", None)


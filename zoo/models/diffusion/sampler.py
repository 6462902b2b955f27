"""What a diffusion sampler is: options (a frozen dataclass), a plan of per-step tensors
made once on the device from the noise schedule, and a step.

The model's loop is the same for every sampler::

    x = sampler.start(plan, N(0, I)); state = sampler.init_state(x)
    for i in range(len(plan)):
        eps = net(x, plan.t[i])
        x, x0, state = sampler.step(plan, i, x, eps, z_i if plan.noisy[i] else None, state)

A step reads only tensors (the plan's, the state's) and never asks the device for a value,
so the whole loop can be captured as one CUDA graph; ``state`` may carry anything a
multistep solver needs across steps. A new sampler is one subclass in one file, listed in
``DDPM.samplers`` (which ``latent-diffusion`` reads too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ...core import ConfigError
from ...options import SamplerOptions, check_range


@dataclass
class SamplingPlan:
    """Per-step coefficients of a one-step sampler, one row per network call.

    Step i at timestep ``t[i]``: x0 = r1 x - r2 eps (clipped to [-1, 1] if asked), then
    x_prev = a x0 + b x + sigma z. Both DDPM (a, b = the posterior mean coefficients) and
    DDIM (eq. 12 with eps re-derived from x0) take this form. ``noisy[i]`` says whether z is
    drawn at step i (sigma > 0), known on the host so the loop never asks the device.
    ``alpha_bar[i]`` is abar of the x that step i's network call sees (the model turns a
    v- or x0-prediction into eps with it; float64, since float32 keeps only ~3 digits of
    1 - abar near t = 0).
    """

    t: Tensor
    alpha_bar: Tensor
    r1: Tensor
    r2: Tensor
    a: Tensor
    b: Tensor
    sigma: Tensor
    noisy: list[bool]

    def __len__(self) -> int:
        return len(self.noisy)


_FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class DiffusionSampler(SamplerOptions):
    """A sampler of the diffusion family (see the module docstring). ``guidance`` w is
    classifier-free guidance of a class-conditional model (Ho & Salimans 2022):
    eps = eps_null + w (eps_label - eps_null); 0 samples unconditionally, 1 (default) the
    plain conditional model (one network call per step), other values both in one call."""

    guidance: float = field(default=1.0, kw_only=True)

    def check(self) -> None:
        # beyond float32's range the network's mix (torch.lerp) cannot take the weight
        check_range(self.guidance, "guidance", least=0, most=_FLOAT32_MAX)

    def bind_guidance(self, model) -> None:
        """Refuse guidance for a model without classes (the samplers' ``bind`` call it)."""
        if self.guidance != 1.0 and not model.conditional:
            raise ConfigError(f"guidance needs a class-conditional model; {model.name} is not "
                              "(train it with --set conditional=true), so drop guidance=")

    def canonical(self) -> dict:
        """As ``Options.canonical``, but guidance only when not 1 (the unguided default): rows
        and graphs keyed before guidance existed keep their keys."""
        out = super().canonical()
        if out["guidance"] == 1.0:
            del out["guidance"]
        return out

    def network_calls(self) -> int | None:
        """One network call per step (a guided call batches both labels into one)."""
        return getattr(self, "steps", None)

    def plan(self, schedule) -> Any:
        """The per-step tensors on the schedule's device; has ``t`` [S] (the network's
        timestep, long or fractional), ``alpha_bar`` [S] (float64) and ``noisy``."""
        raise NotImplementedError

    def start(self, plan, x: Tensor) -> Tensor:
        """The first x from the loop's N(0, I) draw: scaled by the plan's ``init_scale`` where
        it has one (diffusers' ``init_noise_sigma`` in VP space), else x itself."""
        scale = getattr(plan, "init_scale", 1.0)
        return x if scale == 1.0 else x * scale

    def init_state(self, x: Tensor) -> tuple:
        """What the step carries from one call to the next (nothing for one-step samplers)."""
        return ()

    def step(self, plan, i: int, x: Tensor, eps: Tensor, noise: Tensor | None,
             state: tuple) -> tuple[Tensor, Tensor, tuple]:
        """Step i from x (at t[i]) and the network's eps: (x_prev, predicted x0, state)."""
        raise NotImplementedError


def affine_plan(schedule, t: list[int], r1, r2, a, b, sigma, noisy: list[bool]) -> SamplingPlan:
    dev = schedule.betas.device
    t = torch.tensor(t, dtype=torch.long).to(dev)
    return SamplingPlan(t=t, alpha_bar=schedule.alphas_cumprod[t], r1=r1.float(),
                        r2=r2.float(), a=a.float(), b=b.float(), sigma=sigma.float(),
                        noisy=noisy)


def affine_step(plan: SamplingPlan, i: int, x: Tensor, eps: Tensor, noise: Tensor | None,
                clip_x0: bool) -> tuple[Tensor, Tensor]:
    """x0 = r1 x - r2 eps (clipped), x_prev = a x0 + b x + sigma z: five fused ops."""
    x0 = torch.addcmul(plan.r1[i] * x, eps, plan.r2[i], value=-1.0)
    if clip_x0:
        x0.clamp_(-1.0, 1.0)
    x_prev = torch.addcmul(plan.b[i] * x, x0, plan.a[i])
    if noise is not None:
        x_prev.addcmul_(noise, plan.sigma[i])
    return x_prev, x0

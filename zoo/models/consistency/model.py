"""Consistency models (Song et al. 2023): a U-Net ``F`` in the EDM parametrisation,
f(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, 250 log sigma), with
sigma_data = 0.5 and c_skip(sigma_min) = 1, c_out(sigma_min) = 0 (so f(x, sigma_min) = x),
trained so that f maps every point of a noising trajectory x0 + sigma z to the same x0;
sampled in 1 to a few network calls (``sampler``: diffusers' multistep sampling).

Two ways to train, one model:

- consistency training from scratch (CT, the default), the improved recipe of Song &
  Dhariwal 2023 (``recipe``): the pair (x0 + sigma_i z, x0 + sigma_{i+1} z) of adjacent
  Karras sigmas, the interval drawn from the discretised lognormal, the student f_theta at
  sigma_{i+1} pulled towards f at sigma_i under a stop-gradient (theta- = theta, no EMA
  teacher), pseudo-Huber distance weighted 1 / (sigma_{i+1} - sigma_i), the interval count
  N(k) doubling from 11 to 1281 over ``curriculum_steps``;
- consistency distillation (CD) from a trained ``ddpm`` or ``flow-matching`` run
  (``teacher=RUN``): the same loss and noise distribution over a fixed grid of
  ``distill_intervals``, x at sigma_i being one Euler (DDIM) step of the teacher's
  probability-flow ODE from x at sigma_{i+1}. The teacher's weights are held frozen inside
  the model (``zoo.models.latent.TeacherStage``, as a latent model holds its autoencoder):
  the checkpoint is self-contained and refuses a teacher whose weights changed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ...core import GenerativeModel, ModelSpec, adam
from ...nn.unet import UNetConfig
from ...options import check_range
from ..diffusion import DDPM
from ..diffusion.loop import SamplingLoop
from ..diffusion.objectives import to_eps
from ..diffusion.sigmas import sigma_to_t, train_sigmas
from ..flow import TIME_SCALE, FlowMatching
from ..latent import FILLED, TeacherStage
from .recipe import (
    HUBER_C,
    P_MEAN,
    P_STD,
    S0,
    S1,
    curriculum,
    interval_weights,
    karras_grid,
    lognormal_weights,
    pseudo_huber,
)
from .sampler import EDM, Multistep


@dataclass
class ConsistencyConfig(UNetConfig):
    """The U-Net (``zoo.nn.unet.UNetConfig``), the parametrisation, the training recipe
    and the teacher of distillation: one flat set of options."""

    lr: float = 2e-4
    sigma_min: float = 0.002  # EDM's noise range
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    rho: float = 7.0  # the Karras grid's exponent
    curriculum_steps: int = 10000  # K of N(k): the training steps N takes to reach s1 + 1
    s0: int = S0  # N(0) - 1
    s1: int = S1  # N's last value - 1
    p_mean: float = P_MEAN  # the lognormal noise distribution's log-mean
    p_std: float = P_STD  # ... and log-std
    huber_c: float = HUBER_C  # pseudo-Huber c = huber_c sqrt(C H W)
    teacher: str = ""  # a ddpm or flow-matching run to distill (empty: train from scratch)
    distill_intervals: int = 18  # N of distillation (Song et al. 2023: 18 on CIFAR-10)
    conditional: bool = False  # class-conditional (labels from the training data)
    num_classes: int | None = None  # filled from the dataset's labels when conditional
    label_dropout: float = 0.1  # share of training labels replaced by the null label
    teacher_sha256: str = field(default="", metadata=FILLED)  # its weights' hash
    teacher_spec: str = field(default="", metadata=FILLED)  # its class, config, shape


#: the default sampler (``Consistency.default_sampler``; docs/consistency.md has why)
DEFAULT_SAMPLER = {"sampler": "consistency", "steps": 2}


class Consistency(TeacherStage, SamplingLoop, GenerativeModel):
    """A consistency model: trained from scratch, or distilled from a held teacher."""

    family = "consistency"
    likelihood = None
    color = "#8c564b"
    Config = ConsistencyConfig
    samplers = (Multistep,)

    @property
    def default_sampler(self) -> dict:
        """Two network calls: on MNIST better than one for both distillation (FID 19.1
        against 21.4) and training from scratch (16.1 against 36.6), four no better than
        two (docs/consistency.md has the measurement)."""
        return dict(DEFAULT_SAMPLER)

    def __init__(self, config: ConsistencyConfig, image_shape):
        super().__init__(config, image_shape)
        c = config
        check_range(c.sigma_min, "sigma_min", above=0)
        check_range(c.sigma_max, "sigma_max", above=c.sigma_min)
        check_range(c.sigma_data, "sigma_data", above=0)
        check_range(c.rho, "rho", above=0)
        check_range(c.curriculum_steps, "curriculum_steps", least=1)
        check_range(c.s0, "s0", least=1)
        check_range(c.s1, "s1", least=c.s0)
        check_range(c.p_std, "p_std", above=0)
        check_range(c.huber_c, "huber_c", above=0)
        check_range(c.distill_intervals, "distill_intervals", least=2)
        self.edm = EDM(c.sigma_min, c.sigma_max, c.sigma_data, c.rho)
        self.build_unet()
        self.config = dataclasses.replace(self.config,
                                          channel_mult=tuple(self.net.config.channel_mult))
        self.register_buffer("trained_steps", torch.zeros((), dtype=torch.long))
        self._grids: dict = {}
        self.teacher = self.attach_teacher(
            (DDPM, FlowMatching), "distills a ddpm or flow-matching run", "flow-matching",
        ) if c.teacher or c.teacher_spec else None

    # -- training ------------------------------------------------------------------------
    def configure_optimizers(self):
        return {"consistency": adam(self.net.parameters(), lr=self.config.lr)}

    def ddp_modules(self):
        return {"net": self.net}

    def intervals(self) -> int:
        """The grid's point count N now: N(k) of CT at this step, or distillation's fixed
        ``distill_intervals`` + 1."""
        c = self.config
        if self.teacher is not None:
            return c.distill_intervals + 1
        return curriculum(int(self.trained_steps), c.curriculum_steps, c.s0, c.s1)

    def grid(self, n: int) -> dict[str, Tensor]:
        """The tables of the n-point Karras grid (ascending), on the device: sigma,
        the network's c_in, c_skip, c_out and timestep t at each point; each interval's
        weight lambda and the cumulative lognormal distribution ``cdf``; with a teacher,
        its input scale and timestep at each point."""
        key = (n, str(self.device))
        if key not in self._grids:
            c, edm = self.config, self.edm
            sig = karras_grid(n, edm)
            c_skip, c_out = edm.scalings(sig)
            p = lognormal_weights(sig, c.p_mean, c.p_std)
            tables = {"sigma": sig, "c_in": edm.c_in(sig), "c_skip": c_skip, "c_out": c_out,
                      "t": edm.c_noise(sig), "weight": interval_weights(sig),
                      "cdf": np.cumsum(p)}
            if self.teacher is not None:
                tables.update(self._teacher_tables(sig))
            self._grids[key] = {  # alpha-bar in float64: 1 - abar near sigma_min
                k: torch.tensor(v, dtype=torch.float64 if k == "abar" else torch.float32,
                                device=self.device) for k, v in tables.items()}
        return self._grids[key]

    def _teacher_tables(self, sig: np.ndarray) -> dict[str, np.ndarray]:
        """Where the teacher sees x_sigma = x0 + sigma z: its x = ``t_scale`` x_sigma at
        timestep ``t_teacher``; a flow's time ``t_flow`` = sigma / (1 + sigma), a DDPM's
        alpha-bar ``abar`` = 1 / (1 + sigma^2) (at the fractional timestep of sigma)."""
        if isinstance(self.teacher, FlowMatching):
            t = sig / (1 + sig)
            return {"t_scale": 1 / (1 + sig), "t_teacher": t * TIME_SCALE, "t_flow": t}
        abar = 1 / (1 + sig ** 2)
        log_sigmas = np.log(train_sigmas(self.teacher.schedule))
        return {"t_scale": np.sqrt(abar), "t_teacher": sigma_to_t(sig, log_sigmas),
                "abar": abar}

    def _teacher_eps(self, x: Tensor, j: Tensor, g: dict, y: tuple) -> Tensor:
        """The teacher's eps (dx/dsigma of the probability-flow ODE) at x_sigma, grid
        points ``j``."""
        view = (-1, *[1] * (x.dim() - 1))
        x_t = x * g["t_scale"][j].view(view)
        out = self.teacher.net(x_t, g["t_teacher"][j], *y).float()
        if isinstance(self.teacher, FlowMatching):  # v = eps - x0, x_t = (1 - t) x0 + t eps
            return x_t + (1 - g["t_flow"][j]).view(view) * out
        return to_eps(self.teacher.config.prediction, out, x_t, g["abar"][j])

    def consistency_fn(self, net, x: Tensor, j: Tensor, g: dict, y: tuple) -> Tensor:
        """f(x, sigma_j) = c_skip x + c_out F(c_in x, t) at grid points ``j`` [B]."""
        view = (-1, *[1] * (x.dim() - 1))
        out = net(x * g["c_in"][j].view(view), g["t"][j], *y).float()
        return g["c_skip"][j].view(view) * x + g["c_out"][j].view(view) * out

    def train_step(self, x, optimizers):
        """One step of lambda(sigma_i) d(f_theta(x_{i+1}, sigma_{i+1}), stopgrad
        f_theta(x_i, sigma_i)), d pseudo-Huber, the interval i drawn lognormally (see the
        module docstring); a conditional model sees the batch's labels, a
        ``label_dropout`` share replaced by the null label."""
        batch = self.check_batch(x)
        x0 = self.to_space(batch.images)
        n = self.intervals()
        g = self.grid(n)
        i = torch.searchsorted(g["cdf"], self.batch_rand(x0.shape[0]).contiguous())
        i = i.clamp_(max=n - 2)
        z = self.batch_randn(*x0.shape)
        y = (self.drop_labels(batch.labels, self.config.label_dropout),) \
            if self.conditional else ()
        view = (-1, *[1] * (x0.dim() - 1))
        x_next = x0 + g["sigma"][i + 1].view(view) * z
        with torch.no_grad():
            if self.teacher is None:
                x_cur = x0 + g["sigma"][i].view(view) * z
            else:  # one Euler step of the teacher's ODE from sigma_{i+1} to sigma_i
                step = (g["sigma"][i] - g["sigma"][i + 1]).view(view)
                x_cur = x_next + step * self._teacher_eps(x_next, i + 1, g, y)
            target = self.consistency_fn(self.net, x_cur, i, g, y)
        out = self.consistency_fn(self.wrapped("net"), x_next, i + 1, g, y)
        c = self.config.huber_c * self.dims ** 0.5
        loss = (g["weight"][i] * pseudo_huber(out, target, c)).mean()
        self.optimize(loss, optimizers["consistency"])
        self.trained_steps.add_(1)
        return {"loss": loss.item()}

    # -- sampling ------------------------------------------------------------------------
    @torch.inference_mode()
    def sample(self, n, *, generator=None, labels=None, batch_size: int = 256,
               cuda_graph="auto", noise: Tensor | None = None, **options) -> Tensor:
        """n uint8 images from sigma_max N(0, I), or from the given ``noise`` [n, C, H, W]
        (the N(0, I) draw, scaled by sigma_max here): ``steps`` network calls of multistep
        consistency sampling (default 2, ``default_sampler``), ``intervals`` N of its sigma
        grid (default 40), ``s_noise``, ``clip_x0`` (see ``sampler.Multistep``).
        ``cuda_graph``, ``labels`` and ``guidance`` (on the network's output) as for
        diffusion."""
        return self._sample_images(n, options, generator=generator, labels=labels,
                                   batch_size=batch_size, cuda_graph=cuda_graph, noise=noise)

    def sampling_plan(self, sampler):
        return sampler.plan(self.edm, self.device)

    def _predict(self, x: Tensor, plan, i: int, y: Tensor | None, guidance: float) -> Tensor:
        return self._guided_net(x * plan.c_in[i], plan.t[i:i + 1], y, guidance)


MODELS = {
    "consistency": ModelSpec(
        Consistency,
        "consistency model (Song et al.; improved training of Song & Dhariwal), DDPM's "
        "1.06M-parameter U-Net; trained from scratch, or distilled with --set teacher=RUN "
        "(a ddpm or flow-matching run); samples in 1-4 network calls",
        dataset_defaults={"cifar10": {"channels": 64}},
    ),
}

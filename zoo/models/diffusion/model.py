"""The diffusion family: DDPM (Ho et al. 2020) trained with L_simple (or a v- or x0-target,
min-SNR weighted: ``objectives``), sampled with any of its samplers (``samplers``: ancestral
DDPM, DDIM and the diffusers ports DPM-Solver++, UniPC, Heun, Euler-ancestral), and the
variational bound in bits/dim.

The pieces live beside this file: ``schedule`` (the noise schedule, q(x_t|x_0) and its
posterior), one sampler per file (``ancestral``, ``ddim``, ``dpm_solver``, ``unipc``,
``heun``, ``euler_ancestral`` on the contract of ``sampler``; ``sigmas`` the sigma-space
pieces and option fields the ports share),
``objectives`` (what the network predicts, the training target and weights, the conversion
to eps), ``bound`` (the variational bound) and ``loop`` (the sampling loop, eager or replayed as
one CUDA graph, which ``flow-matching`` shares). This file holds the model: the U-Net, its
training step, what the loop asks of it (the plan, the guided eps) and ``nll``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core import (
    ConfigError,
    GenerativeModel,
    ModelSpec,
    adam,
    eval_mode,
    option_flag,
    option_number,
)
from ...nn.likelihood import to_unit
from ...nn.unet import UNetConfig
from ...options import check_range
from .ancestral import Ancestral
from .bound import NLL_MODE_ALIASES, NLL_MODES, PROPOSALS, NLLResult, variational_bound
from .ddim import DDIM
from .dpm_solver import DPMSolver
from .euler_ancestral import EulerAncestral
from .heun import Heun
from .loop import SamplingLoop
from .objectives import LOSS_WEIGHTINGS, PREDICTIONS, loss_weight, target, to_eps
from .schedule import SCHEDULES, NoiseSchedule, make_betas
from .unipc import UniPC


@dataclass
class ScheduleConfig:
    """The noise schedule's options (``schedule``)."""

    schedule: Literal["linear", "cosine"] = "linear"
    timesteps: int = 1000
    beta_start: float = 1e-4  # linear schedule only
    beta_end: float = 0.02  # linear schedule only


@dataclass
class DDPMConfig(UNetConfig, ScheduleConfig):
    """The noise schedule (``ScheduleConfig``), the U-Net (``zoo.nn.unet.UNetConfig``, declared
    there once), training and nll(): one flat set of options, in that order, as ``--set``,
    suite configs and run.json give them."""

    lr: float = 1e-3
    prediction: Literal["epsilon", "v", "x0"] = "epsilon"  # what the U-Net outputs
    loss_weighting: Literal["uniform", "min-snr"] = "uniform"  # per-timestep loss weight
    min_snr_gamma: float = 5.0  # gamma of loss_weighting="min-snr" (Hang et al. 2023)
    nll_mode: Literal["estimate", "all", "exact"] = "estimate"  # "exact": deprecated "all"
    nll_samples: int = 4  # K: timesteps drawn per image by nll(mode="estimate")
    nll_draws: int = 2  # x_t drawn per term by nll(mode="all")
    conditional: bool = False  # class-conditional (labels from the training data)
    num_classes: int | None = None  # filled from the dataset's labels when conditional
    label_dropout: float = 0.1  # share of training labels replaced by the null label


def _choice(value, valid: Sequence[str], name: str) -> str:
    if value not in valid:
        raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    return value


def _nll_mode(value, name: str = "nll mode", stacklevel: int = 3) -> str:
    """``value`` as one of NLL_MODES; a deprecated alias ("exact") maps to its mode with a
    warning."""
    if value in NLL_MODE_ALIASES:
        new = NLL_MODE_ALIASES[value]
        warnings.warn(
            f"{name} {value!r} is deprecated: it is {new!r} (all T terms, each at sampled "
            "x_t, so a Monte Carlo estimate with a standard error, not an exact value)",
            DeprecationWarning, stacklevel=stacklevel)
        return new
    return _choice(value, NLL_MODES, name)


#: the default sampler's steps (``DDPM.default_sampler``)
DEFAULT_SAMPLER_STEPS = 10
#: the default sampler's classifier-free guidance of a class-conditional model
#: (docs/models.md has the guidance sweep it was chosen from)
DEFAULT_GUIDANCE = 4.0


class DDPM(SamplingLoop, GenerativeModel):
    """Denoising diffusion: a U-Net predicting epsilon (or v, x0), DDPM/DDIM samplers, VLB
    nll."""

    family = "diffusion"
    likelihood = "bound"
    color = "#9467bd"
    Config = DDPMConfig
    samplers = (Ancestral, DDIM, DPMSolver, Heun, EulerAncestral, UniPC)

    #: x0 clipped to [-1, 1] by the default sampler (pixels are bounded; latents are not)
    default_clip: ClassVar[bool] = True

    @property
    def default_sampler(self) -> dict:
        """UniPC at 10 steps (fewer where T is small): it reaches DDIM-50's FID within its
        interval at the fewest network calls on MNIST and Fashion-MNIST at the CI budget
        (``zoo bench default-sampler``, reports/default-sampler-cpu); ``sampler="ddpm"`` is
        the ancestral one. A class-conditional model's adds guidance ``DEFAULT_GUIDANCE``."""
        steps = min(DEFAULT_SAMPLER_STEPS, max(self.timesteps - 1, 1))
        return {"sampler": "unipc", "steps": steps,
                **({"clip_x0": True} if self.default_clip else {}),
                **({"guidance": DEFAULT_GUIDANCE} if self.conditional else {})}

    def __init__(self, config: DDPMConfig, image_shape):
        super().__init__(config, image_shape)
        c = config
        _choice(c.schedule, SCHEDULES, "schedule")
        _choice(c.prediction, PREDICTIONS, "prediction")
        _choice(c.loss_weighting, LOSS_WEIGHTINGS, "loss_weighting")
        check_range(c.min_snr_gamma, "min_snr_gamma", above=0)
        nll_mode = _nll_mode(c.nll_mode, "nll_mode")  # "exact" is recorded as "all"
        if c.timesteps < 1:
            raise ConfigError(f"timesteps must be >= 1, got {c.timesteps}")
        if c.schedule == "linear" and not 0.0 < c.beta_start <= c.beta_end < 1.0:
            raise ConfigError(
                f"the linear schedule needs 0 < beta_start <= beta_end < 1, "
                f"got beta_start={c.beta_start}, beta_end={c.beta_end}"
            )
        if c.nll_samples < 2:
            raise ConfigError(
                f"nll_samples must be >= 2 (a standard error needs two draws), got {c.nll_samples}"
            )
        if c.nll_draws < 2:
            raise ConfigError(
                f"nll_draws must be >= 2 (a standard error needs two draws), got {c.nll_draws}"
            )
        self.build_unet()
        # the config records the depth chosen for this size, so run.json shows what was built
        self.config = dataclasses.replace(self.config,
                                          channel_mult=tuple(self.net.config.channel_mult),
                                          nll_mode=nll_mode)
        self.schedule = NoiseSchedule(make_betas(c.schedule, c.timesteps, c.beta_start,
                                                 c.beta_end), kind=c.schedule)

    @property
    def timesteps(self) -> int:
        return self.config.timesteps

    # -- training ------------------------------------------------------------------------
    def configure_optimizers(self):
        return {"ddpm": adam(self.net.parameters(), lr=self.config.lr)}

    def ddp_modules(self):
        return {"net": self.net}

    def train_step(self, x, optimizers):
        """One step of L_simple: || eps - eps_theta(sqrt(abar) x0 + sqrt(1 - abar) eps, t) ||^2,
        or of the ``prediction``'s target (v, x0; see ``objectives``), each sample's error
        weighted per ``loss_weighting``; a conditional model sees the batch's labels, a
        ``label_dropout`` share of them replaced by the null label (so it also learns the
        unconditional model guidance uses)."""
        batch = self.check_batch(x)
        x0 = self.to_space(batch.images)
        t = self.batch_randint(self.timesteps, x0.shape[0])
        noise = self.batch_randn(*x0.shape)
        net = self.wrapped("net")
        args = (self.drop_labels(batch.labels, self.config.label_dropout),) \
            if self.conditional else ()
        c = self.config
        out = net(self.schedule.q_sample(x0, t, noise), t, *args).float()
        abar = self.schedule.alphas_cumprod[t]
        goal = target(c.prediction, x0, noise, abar)
        if c.loss_weighting == "uniform":
            loss = F.mse_loss(out, goal)
        else:
            w = loss_weight(c.prediction, c.loss_weighting, abar, c.min_snr_gamma).float()
            loss = ((out - goal).square().flatten(1).mean(1) * w).mean()
        self.optimize(loss, optimizers["ddpm"])
        return {"loss": loss.item()}

    # -- sampling ------------------------------------------------------------------------
    @torch.inference_mode()
    def sample(self, n, *, generator=None, labels=None, batch_size: int = 256,
               cuda_graph="auto", noise: Tensor | None = None, **options) -> Tensor:
        """n uint8 images from x_T ~ N(0, I), or from the given ``noise`` x_T [n, C, H, W].

        Without a ``sampler``: ``default_sampler``, UniPC at 10 steps with x0 clipped (its
        options may be given: ``steps=20``). ``sampler="ddpm"`` (``Ancestral``): all T
        steps, ``variance="beta_tilde"`` (default) or ``"beta"``. ``sampler="ddim"``
        (``DDIM``): ``steps`` S (default 50), ``eta`` (default 0: deterministic),
        ``spacing`` ``"trailing"`` (default), ``"leading"`` or ``"linspace"``. ``clip_x0``
        (both) clips each predicted x0 to [-1, 1]. ``sampler="dpmpp-2m"``, ``"unipc"``,
        ``"heun"``, ``"euler-ancestral"``: the diffusers schedulers of those names with
        their defaults (docs/models.md, "Fewer network calls"). ``sampler`` may also be a sampler's
        options object (``DDIM(steps=20)``). ``batch_size`` images are denoised at a time.
        ``cuda_graph`` replays the whole sampling loop as one captured CUDA graph: the same
        samples for the same generator, without a kernel launch from Python per operation;
        ``"auto"`` (default) does so on CUDA from the second batch of the same shape and
        options on (the first runs eagerly).

        A class-conditional model (``conditional=True``) takes ``labels``: one class (an int)
        or one per image; without, it samples from its null label (unconditionally).
        ``guidance`` w (every sampler; classifier-free, Ho & Salimans 2022) mixes the
        conditional and null-label predictions, eps_null + w (eps_label - eps_null): 0 is
        unconditional, 1 (default) conditional, > 1 guided (two passes in one batched call).

        ``noise`` (diffusers' ``latents``): the initial x_T, one per image, instead of a draw
        from ``generator`` (which then draws only a stochastic sampler's per-step noise). With
        a deterministic sampler (``ddim`` at eta 0) the same noise gives the same images, for
        any ``batch_size``, eager or graphed: for reproducibility across samplers and for
        interpolating between images.
        """
        return self._sample_images(n, options, generator=generator, labels=labels,
                                   batch_size=batch_size, cuda_graph=cuda_graph, noise=noise)

    def sampling_plan(self, sampler):
        return sampler.plan(self.schedule)

    def _predict(self, x: Tensor, plan, i: int, y: Tensor | None, guidance: float) -> Tensor:
        return self._eps(x, plan.t[i:i + 1], y, guidance, plan.alpha_bar[i:i + 1])

    def _eps(self, x: Tensor, t: Tensor, y: Tensor | None, guidance: float,
             abar: Tensor | None = None) -> Tensor:
        """The network's eps at x (timestep ``t``; alpha-bar ``abar``, the plan's row, or the
        schedule's at an integer ``t`` when not given), guided (``_guided_net``). A v- or
        x0-predicting network's output is turned into eps here, after the guidance mix (the
        conversion is affine in the output), so every sampler sees eps."""
        out = self._guided_net(x, t, y, guidance)
        if self.config.prediction == "epsilon":
            return out
        return to_eps(self.config.prediction, out, x,
                      self.schedule.alphas_cumprod[t] if abar is None else abar)

    def _eps_net(self, x: Tensor, t: Tensor, *y: Tensor) -> Tensor:
        """The network as an eps-predictor at integer timesteps ``t`` (for the bound)."""
        return to_eps(self.config.prediction, self.net(x, t, *y).float(), x,
                      self.schedule.alphas_cumprod[t])

    # -- likelihood ----------------------------------------------------------------------
    @torch.inference_mode()
    def nll_with_stderr(self, x, *, labels=None, mode: str | None = None, K: int | None = None,
                        proposal: str = "importance", draws: int | None = None,
                        batch_size: int = 256, clip_x0: bool = False, generator=None,
                        **opts) -> NLLResult:
        """The DDPM variational bound (Ho et al. eq. 5, L_0 discretized) in bits/dim per image,
        an unbiased Monte Carlo estimate with its standard error (each term but the prior is
        an expectation over x_t ~ q(x_t|x_0); the prior term is computed in closed form).

        ``mode="all"``: the prior, L_0 and all T-1 KL terms, each term the mean over
        ``draws`` (default 2) independent x_t, so draws x T network calls per image; the
        standard error is sqrt(sum over terms of their sample variance / draws), the terms'
        noise being independent. (``"exact"`` is its deprecated name: it is not exact.)
        ``mode="estimate"`` (K network calls per image, plus one for L_0):
        ``proposal="importance"`` (default) computes the prior exactly, L_0 at one x_1 and
        the sum of the T-1 KL terms as the mean of K terms at t ~ q(t) weighted by 1/q(t)
        (see ``bound.timestep_proposal``); ``proposal="uniform"`` draws K of all T terms
        uniformly and returns T times their mean. Its standard error counts the noise of
        the K terms (not of the one L_0 draw, small next to it). Defaults: the config's
        ``nll_mode``, ``nll_samples`` and ``nll_draws``. p's mean comes from the predicted
        eps as in Ho et al. eq. 11; ``clip_x0=True`` bounds the clipped model the samplers
        use by default instead (much lower on MNIST, whose pixels sit mostly at the clip limits).
        A class-conditional model bounds -log p(x | label) given ``labels`` (an int or one per
        image), else -log p(x) of its null-label (unconditional) model.
        """
        if opts:
            raise ConfigError(
                f"unknown nll option(s) {', '.join(sorted(opts))} for {self.name}; "
                "valid: mode, K, proposal, draws, batch_size, clip_x0, labels"
            )
        mode = _nll_mode(mode or self.config.nll_mode, stacklevel=4)  # past the decorator
        proposal = _choice(proposal, PROPOSALS, "proposal")
        K = self.config.nll_samples if K is None else option_number(K, "K", int)
        if mode == "estimate" and K < 2:
            raise ConfigError(f"K must be >= 2 (a standard error needs two draws), got {K}")
        draws = self.config.nll_draws if draws is None else option_number(draws, "draws", int)
        if mode == "all" and draws < 2:
            raise ConfigError(
                f"draws must be >= 2 (a standard error needs two draws), got {draws}")
        batch_size = option_number(batch_size, "batch_size", int)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        clip_x0 = option_flag(clip_x0, "clip_x0")
        x0 = to_unit(self.check_images(x))
        labels = self.check_labels(labels, x0.shape[0])
        if self.conditional and labels is None:
            labels = torch.full((x0.shape[0],), self.num_classes, dtype=torch.long,
                                device=x0.device)
        with eval_mode(self):
            net = self.net if self.config.prediction == "epsilon" else self._eps_net
            return variational_bound(
                net, self.schedule, x0, mode=mode, K=K, proposal=proposal,
                draws=draws, batch_size=batch_size, clip_x0=clip_x0, dims=self.dims,
                gen=self._generator_for(generator, x0.device), labels=labels)

    def describe_nll(self, mode=None, K=None, proposal="importance", draws=None,
                     labels=None, **options) -> str:
        what = self._describe_bound(mode, K, proposal, draws)
        if not self.conditional:
            return what
        return what + (", conditional on the given labels" if labels is not None
                       else ", null label (unconditional)")

    def _describe_bound(self, mode, K, proposal, draws) -> str:
        mode = NLL_MODE_ALIASES.get(mode or self.config.nll_mode, mode or self.config.nll_mode)
        if mode == "all":
            draws = self.config.nll_draws if draws is None else draws
            return f"bound, all {self.timesteps} terms, x_t sampled, {draws} draws each"
        K = self.config.nll_samples if K is None else K
        how = ("importance-sampled KL terms, prior exact" if proposal == "importance"
               else "uniformly drawn terms")
        return f"bound, estimate: K={K} {how} per image"

    def nll(self, x, **options) -> Tensor:
        """The variational bound in bits/dim per image (see ``nll_with_stderr``)."""
        return self.nll_with_stderr(x, **options).bpd


MODELS = {
    "ddpm": ModelSpec(
        DDPM,
        "DDPM/DDIM diffusion (Ho et al.; Song et al.), a 1.06M-parameter U-Net that trains "
        "on CPU; sample with sampler=ddpm|ddim",
        dataset_defaults={"cifar10": {"channels": 64}},
    ),
    "ddpm-full": ModelSpec(
        DDPM,
        "DDPM with the paper's CIFAR-10 U-Net (35.7M parameters at 32x32), for GPUs",
        defaults={
            "channels": 128, "max_levels": 4, "num_res_blocks": 2,
            "attention_levels": (1,), "dropout": 0.1, "lr": 2e-4, "norm_groups": 32,
        },
    ),
}

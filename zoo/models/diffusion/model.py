"""The diffusion family: DDPM (Ho et al. 2020) trained with L_simple (or a v- or x0-target,
min-SNR weighted: ``objectives``), sampled with any of its samplers (``samplers``: ancestral
DDPM, DDIM and the diffusers ports DPM-Solver++, UniPC, Heun, Euler-ancestral), and the
variational bound in bits/dim.

The pieces live beside this file: ``schedule`` (the noise schedule, q(x_t|x_0) and its
posterior), one sampler per file (``ancestral``, ``ddim``, ``dpm_solver``, ``unipc``,
``heun``, ``euler_ancestral`` on the contract of ``sampler``; ``sigmas`` the sigma-space
pieces and option fields the ports share),
``objectives`` (what the network predicts, the training target and weights, the conversion
to eps) and ``bound`` (the variational bound). This file holds the model: the U-Net, its training
step, the sampling loop (eager or replayed as one CUDA graph) and ``nll``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ... import progress
from ...core import (
    ConfigError,
    GenerativeModel,
    ModelSpec,
    adam,
    eval_mode,
    option_flag,
    option_number,
)
from ...errors import NonFiniteSamples
from ...nn.graphs import NOISE_BYTES, capture, graph_mode, model_graphs, weights_key
from ...nn.likelihood import from_unit, to_unit
from ...nn.unet import UNet, UNetConfig
from ...options import check_range
from .ancestral import Ancestral
from .bound import NLL_MODE_ALIASES, NLL_MODES, PROPOSALS, NLLResult, variational_bound
from .ddim import DDIM
from .dpm_solver import DPMSolver
from .euler_ancestral import EulerAncestral
from .heun import Heun
from .objectives import LOSS_WEIGHTINGS, PREDICTIONS, loss_weight, target, to_eps
from .schedule import SCHEDULES, NoiseSchedule, make_betas
from .unipc import UniPC

#: ``sample``'s own arguments, beside the sampler's options
_SAMPLE_ARGS = ("labels", "batch_size", "cuda_graph", "noise")


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

    @property
    def unet(self) -> UNetConfig:
        """The U-Net's options alone."""
        return UNetConfig(**{f.name: getattr(self, f.name) for f in fields(UNetConfig)})


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


class DDPM(GenerativeModel):
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
        the ancestral one."""
        steps = min(DEFAULT_SAMPLER_STEPS, max(self.timesteps - 1, 1))
        return {"sampler": "unipc", "steps": steps,
                **({"clip_x0": True} if self.default_clip else {})}

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
        check_range(c.lr, "lr", above=0)
        check_range(c.channels, "channels", least=1)
        check_range(c.norm_groups, "norm_groups", least=1)
        check_range(c.label_dropout, "label_dropout", least=0, below=1)
        if c.conditional and (c.num_classes is None or c.num_classes < 2):
            raise ConfigError(
                f"a conditional model needs num_classes >= 2, got {c.num_classes}; train it on "
                "a labelled dataset (which sets it) or give num_classes=K")
        #: the shape the diffusion runs in: the image's, or a latent model's latent shape
        self.space_shape = self.diffusion_shape()
        ch, h, w = self.space_shape
        self.net = UNet(ch, (h, w), c.unet,
                        num_classes=c.num_classes if c.conditional else None)
        # the config records the depth chosen for this size, so run.json shows what was built
        self.config = dataclasses.replace(self.config,
                                          channel_mult=tuple(self.net.config.channel_mult),
                                          nll_mode=nll_mode)
        self.schedule = NoiseSchedule(make_betas(c.schedule, c.timesteps, c.beta_start,
                                                 c.beta_end), kind=c.schedule)

    @property
    def timesteps(self) -> int:
        return self.config.timesteps

    # -- the space the diffusion runs in (a latent model's differs: latent_diffusion) -------
    def diffusion_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the diffused tensors: the image's."""
        return self.image_shape

    def to_space(self, x: Tensor) -> Tensor:
        """uint8 images -> the diffused float tensors (here [-1, 1] pixels)."""
        return to_unit(x)

    def from_space(self, x: Tensor) -> Tensor:
        """Diffused float tensors -> uint8 images."""
        return from_unit(x)

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
    def _generator_for(self, generator: torch.Generator | None, device: torch.device):
        """``generator`` itself if it lives on ``device``, else one there seeded from it."""
        if generator is None or generator.device == device:
            return generator
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        return torch.Generator(device=device).manual_seed(seed)

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
        x = self.sample_unit(n, generator=generator, labels=labels, batch_size=batch_size,
                             cuda_graph=cuda_graph, noise=noise, **options)
        try:
            return self.from_space(x)
        except NonFiniteSamples:
            w = self.parse_sampler(options, also=_SAMPLE_ARGS).guidance
            if w in (0.0, 1.0):
                raise
            raise NonFiniteSamples(f"guidance {w:g} overflowed to non-finite values (NaN or "
                                   "inf); use a smaller guidance (usually 1 to 10)") from None

    @torch.inference_mode()
    def sample_unit(self, n, *, generator=None, labels=None, batch_size=256, cuda_graph="auto",
                    noise=None, **options) -> Tensor:
        """Like ``sample`` but returns the float samples of the diffused space (pixels in
        [-1, 1] before quantization; a latent model's latents)."""
        sampler = self.parse_sampler(options, also=_SAMPLE_ARGS)
        n = option_number(n, "n", int)
        batch_size = option_number(batch_size, "batch_size", int)
        if n < 0 or batch_size < 1:
            raise ConfigError(f"need n >= 0 and batch_size >= 1, got {n=}, {batch_size=}")
        labels = self.check_labels(labels, n)
        noise = self._check_noise(noise, n)
        if self.conditional and labels is None:  # no class asked: the null label's model
            labels = torch.full((n,), self.num_classes, dtype=torch.long, device=self.device)
        graph, auto = graph_mode(cuda_graph, self.device)
        plan = sampler.plan(self.schedule)
        with eval_mode(self):
            gen = self._generator_for(generator, self.device)
            out = []
            for start in range(0, n, batch_size):
                b = min(batch_size, n - start)
                y = None if labels is None else labels[start:start + b]
                use_graph = graph and model_graphs(self).worth_it((sampler.key(), b), auto)
                denoise = self._denoise_graphed if use_graph else self._denoise
                x_T = None if noise is None else noise[start:start + b]
                out.append(denoise(sampler, plan, b, gen, y, x_T))
        return torch.cat(out) if out else torch.empty(0, *self.space_shape)

    def _guided_labels(self, y: Tensor | None, guidance: float) -> Tensor | None:
        """The labels of the network's batch: ``y`` (guidance 1), the null label (0), or
        both stacked for one call (classifier-free guidance with any other weight)."""
        if y is None:
            return None
        null = torch.full_like(y, self.num_classes)
        if guidance == 0:
            return null
        return y if guidance == 1 else torch.cat([y, null])

    def _eps(self, x: Tensor, t: Tensor, y: Tensor | None, guidance: float,
             abar: Tensor | None = None) -> Tensor:
        """The network's eps at x (timestep ``t``; alpha-bar ``abar``, the plan's row, or the
        schedule's at an integer ``t`` when not given), guided: eps_null + w (eps_y -
        eps_null) from one batched call over both labels when w is neither 0 nor 1 (``y``
        from ``_guided_labels``). A v- or x0-predicting network's output is turned into eps
        here, after the guidance mix (the conversion is affine in the output), so every
        sampler sees eps."""
        if y is None or y.shape[0] == x.shape[0]:
            out = self.net(x, t, *(() if y is None else (y,))).float()
        else:
            cond, uncond = self.net(torch.cat([x, x]), t, y).float().chunk(2)
            out = torch.lerp(uncond, cond, guidance)
        if self.config.prediction == "epsilon":
            return out
        return to_eps(self.config.prediction, out, x,
                      self.schedule.alphas_cumprod[t] if abar is None else abar)

    def _eps_net(self, x: Tensor, t: Tensor, *y: Tensor) -> Tensor:
        """The network as an eps-predictor at integer timesteps ``t`` (for the bound)."""
        return to_eps(self.config.prediction, self.net(x, t, *y).float(), x,
                      self.schedule.alphas_cumprod[t])

    def _check_noise(self, noise, n: int) -> Tensor | None:
        """``sample``'s ``noise=`` x_T as float32 on the model's device, or a ConfigError."""
        if noise is None:
            return None
        shape = (n, *self.space_shape)
        if not isinstance(noise, Tensor) or not noise.is_floating_point():
            got = noise.dtype if isinstance(noise, Tensor) else type(noise).__name__
            raise ConfigError(f"noise must be a float tensor of shape {list(shape)}, got {got}")
        if tuple(noise.shape) != shape:
            raise ConfigError(f"noise must have shape {list(shape)} (n, C, H, W), got "
                              f"{list(noise.shape)}")
        noise = noise.to(self.device, torch.float32)
        if not torch.isfinite(noise).all():
            raise ConfigError("noise must be finite")
        return noise

    def _denoise(self, sampler, plan, b: int, gen, y: Tensor | None = None,
                 x_T: Tensor | None = None) -> Tensor:
        dev = self.device
        x = torch.randn((b, *self.space_shape), generator=gen, device=dev) if x_T is None \
            else x_T.clone()
        x = sampler.start(plan, x)  # N(0, I) scaled as the sampler's reference starts
        y = self._guided_labels(y, sampler.guidance)
        state = sampler.init_state(x)
        for i in progress.steps(range(len(plan)), b):  # counted by a progress bar, if any
            eps = self._eps(x, plan.t[i:i + 1], y, sampler.guidance, plan.alpha_bar[i:i + 1])
            z = torch.randn(x.shape, generator=gen, device=dev) if plan.noisy[i] else None
            x, _, state = sampler.step(plan, i, x, eps, z, state)
        return x

    def _loop(self, sampler, plan, x: Tensor, zs: Tensor, steps: int,
              y: Tensor | None = None) -> Tensor:
        """The first ``steps`` steps of the sampling loop over given initial noise, per-step
        noise and labels (for capture)."""
        j = 0
        x = sampler.start(plan, x)
        y = self._guided_labels(y, sampler.guidance)
        state = sampler.init_state(x)
        for i in range(steps):
            eps = self._eps(x, plan.t[i:i + 1], y, sampler.guidance, plan.alpha_bar[i:i + 1])
            z = zs[j] if plan.noisy[i] else None
            j += plan.noisy[i]
            x, _, state = sampler.step(plan, i, x, eps, z, state)
        return x

    def _denoise_graphed(self, sampler, plan, b: int, gen, y: Tensor | None = None,
                         x_T: Tensor | None = None) -> Tensor:
        """``_denoise`` replayed as one CUDA graph (``zoo.nn.graphs``). The noise is drawn
        before the replay in the order ``_denoise`` draws it: the same samples. The labels
        and a given x_T are inputs of the graph (copied into its buffers), not part of it."""
        dev = self.device
        if sum(plan.noisy) * b * math.prod(self.space_shape) * 4 > NOISE_BYTES:  # won't fit
            return self._denoise(sampler, plan, b, gen, y, x_T)

        def build():
            x_in = torch.zeros((b, *self.space_shape), device=dev)
            zs = torch.zeros((sum(plan.noisy), b, *self.space_shape), device=dev)
            y_in = torch.zeros(b, dtype=torch.long, device=dev) if self.conditional else None
            graph, x_out = capture(lambda: self._loop(sampler, plan, x_in, zs, len(plan), y_in),
                                   lambda: self._loop(sampler, plan, x_in, zs, 1, y_in), dev)
            return graph, x_in, zs, y_in, x_out, plan  # the plan's tables are read by the replay

        graph, x_in, zs, y_in, x_out, _ = model_graphs(self).get((sampler.key(), b),
                                                                 weights_key(self.net), build)
        x_in.copy_(torch.randn(x_in.shape, generator=gen, device=dev) if x_T is None else x_T)
        for j in range(zs.shape[0]):
            zs[j].copy_(torch.randn(x_in.shape, generator=gen, device=dev))
        if y_in is not None:
            y_in.copy_(y)
        graph.replay()
        progress.ran(len(plan), b)
        return x_out.clone()

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

"""The diffusion family: DDPM (Ho et al. 2020) trained with L_simple, sampled ancestrally or
with DDIM (Song et al. 2021), and the variational bound in bits/dim with a discretized decoder.

Timesteps are 0-indexed: t = 0..T-1 here is t = 1..T of the papers. Every schedule quantity
is computed once in float64 and kept as a (non-persistent) buffer; each sampler turns the
schedule into a table of per-step coefficients (a ``SamplingPlan``) on the device before its
loop, so a step is one network call and five fused tensor ops, with no host synchronisation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import ConfigError, GenerativeModel, ModelSpec, adam, option_flag, option_number
from ..nn.graphs import NOISE_BYTES, capture, graph_mode, model_graphs, weights_key
from ..nn.likelihood import (
    discretized_gaussian_log_prob,
    from_unit,
    gaussian_kl,
    nats_to_bpd,
    to_unit,
)
from ..nn.unet import UNet, UNetConfig

SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddpm", "ddim")
SPACINGS = ("trailing", "leading", "linspace")
VARIANCES = ("beta_tilde", "beta")
NLL_MODES = ("estimate", "exact")
PROPOSALS = ("importance", "uniform")
COSINE_S = 0.008
MAX_BETA = 0.999


@dataclass
class DDPMConfig:
    """The noise schedule, the U-Net (see ``zoo.nn.unet.UNetConfig``), training and nll()."""

    schedule: Literal["linear", "cosine"] = "linear"
    timesteps: int = 1000
    beta_start: float = 1e-4  # linear schedule only
    beta_end: float = 0.02  # linear schedule only
    channels: int = 32
    channel_mult: tuple[int, ...] | None = None  # None: depth from the image size (max_levels)
    max_levels: int = 3
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = ()
    mid_attention: bool = True
    attention_heads: int = 1
    dropout: float = 0.0
    norm_groups: int = 4  # 32 groups of 32 channels normalise each channel alone (see unet.py)
    lr: float = 1e-3
    nll_mode: Literal["estimate", "exact"] = "estimate"
    nll_samples: int = 4  # K: timesteps drawn per image by nll(mode="estimate")


def make_betas(schedule: str, timesteps: int, beta_start: float, beta_end: float) -> Tensor:
    """The float64 beta schedule: ``linear`` (Ho et al.) or ``cosine`` (Nichol & Dhariwal)."""
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    if schedule == "cosine":
        s = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((s + COSINE_S) / (1 + COSINE_S) * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=MAX_BETA)
    raise ConfigError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")


def sampling_timesteps(timesteps: int, steps: int, spacing: str) -> list[int]:
    """The S of T training timesteps a DDIM sampler visits, descending (Lin et al. 2023,
    table 2; the same sequences as diffusers' ``timestep_spacing``)."""
    if spacing == "trailing":
        ts = [round(timesteps - i * timesteps / steps) - 1 for i in range(steps)]
    elif spacing == "leading":
        ratio = timesteps // steps
        ts = [i * ratio for i in reversed(range(steps))]
    elif spacing == "linspace":
        ts = [round(v) for v in torch.linspace(0, timesteps - 1, steps, dtype=torch.float64)
              .flip(0).tolist()]
    else:
        raise ConfigError(f"unknown spacing {spacing!r}; valid: {', '.join(SPACINGS)}")
    return ts


@dataclass
class SamplingPlan:
    """Per-step coefficients of a sampler, one row per network call, on the model's device.

    Step i at timestep ``t[i]``: x0 = r1 x - r2 eps (clipped to [-1, 1] if asked), then
    x_prev = a x0 + b x + sigma z. Both DDPM (a, b = the posterior mean coefficients) and
    DDIM (eq. 12 with eps re-derived from x0) take this form. ``noisy[i]`` says whether z is
    drawn at step i (sigma > 0), known on the host so the loop never asks the device.
    """

    t: Tensor
    r1: Tensor
    r2: Tensor
    a: Tensor
    b: Tensor
    sigma: Tensor
    noisy: list[bool]

    def __len__(self) -> int:
        return len(self.noisy)


@dataclass
class NLLResult:
    """A variational bound per image in bits/dim and its Monte Carlo standard error.

    ``kind`` is ``"exact"`` (all T terms) or ``"estimate"`` (K sampled terms per image);
    ``stderr`` is 0 for exact. ``mean()`` and ``stderr_of_mean()`` give the batch figure.
    """

    bpd: Tensor
    stderr: Tensor
    kind: str
    detail: str

    def mean(self) -> float:
        return float(self.bpd.double().mean())

    def stderr_of_mean(self) -> float:
        n = max(self.bpd.numel(), 1)
        return float(self.stderr.double().square().sum().sqrt() / n)


def _choice(value, valid: Sequence[str], name: str) -> str:
    if value not in valid:
        raise ConfigError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    return value


class DDPM(GenerativeModel):
    """Denoising diffusion: epsilon prediction with a U-Net, DDPM/DDIM samplers, VLB nll."""

    family = "diffusion"
    likelihood = "bound"
    Config = DDPMConfig

    def __init__(self, config: DDPMConfig, image_shape):
        super().__init__(config, image_shape)
        c = config
        _choice(c.schedule, SCHEDULES, "schedule")
        _choice(c.nll_mode, NLL_MODES, "nll_mode")
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
        if c.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {c.lr}")
        unet_fields = {f.name for f in fields(UNetConfig)}
        unet_config = UNetConfig(**{k: getattr(c, k) for k in unet_fields})
        ch, h, w = self.image_shape
        self.net = UNet(ch, (h, w), unet_config)
        # the config records the depth chosen for this size, so run.json shows what was built
        self.config = dataclasses.replace(c, channel_mult=tuple(self.net.config.channel_mult))
        self._register_schedule(make_betas(c.schedule, c.timesteps, c.beta_start, c.beta_end))

    def _register_schedule(self, betas: Tensor) -> None:
        """Every quantity of q(x_t | x_0) and q(x_{t-1} | x_t, x_0), in float64."""
        alphas = 1.0 - betas
        ab = torch.cumprod(alphas, 0)
        ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])
        post_var = betas * (1.0 - ab_prev) / (1.0 - ab)
        post_var_clipped = torch.cat([post_var[1:2], post_var[1:]]) if len(betas) > 1 else betas
        quantities = {
            "betas": betas,
            "alphas_cumprod": ab,
            "alphas_cumprod_prev": ab_prev,
            "sqrt_alphas_cumprod": ab.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - ab).sqrt(),
            "sqrt_recip_alphas_cumprod": ab.rsqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / ab - 1.0).sqrt(),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": post_var_clipped.log(),
            "posterior_mean_coef1": betas * ab_prev.sqrt() / (1.0 - ab),
            "posterior_mean_coef2": (1.0 - ab_prev) * alphas.sqrt() / (1.0 - ab),
        }
        for name, value in quantities.items():
            self.register_buffer(name, value, persistent=False)

    @property
    def timesteps(self) -> int:
        return self.config.timesteps

    # -- the forward process and its posterior --------------------------------------------
    def _at(self, name: str, t: Tensor) -> Tensor:
        """Schedule quantity ``name`` at timesteps ``t`` [B], as float32 [B, 1, 1, 1]."""
        return getattr(self, name)[t].float().view(-1, 1, 1, 1)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), with the given noise."""
        return self._at("sqrt_alphas_cumprod", t) * x0 + self._at(
            "sqrt_one_minus_alphas_cumprod", t) * noise

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and (clipped) log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = self._at("posterior_mean_coef1", t) * x0 + self._at("posterior_mean_coef2", t) * xt
        return mean, self._at("posterior_log_variance_clipped", t)

    def predict_x0(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        return self._at("sqrt_recip_alphas_cumprod", t) * xt - self._at(
            "sqrt_recipm1_alphas_cumprod", t) * eps

    # -- training ------------------------------------------------------------------------
    def configure_optimizers(self):
        return {"ddpm": adam(self.net.parameters(), lr=self.config.lr)}

    def ddp_modules(self):
        return {"net": self.net}

    def train_step(self, x, optimizers):
        """One step of L_simple: || eps - eps_theta(sqrt(abar) x0 + sqrt(1 - abar) eps, t) ||^2."""
        x0 = to_unit(self.check_images(x))
        t = self.batch_randint(self.timesteps, x0.shape[0])
        noise = self.batch_randn(*x0.shape)
        net = self.wrapped("net")
        loss = F.mse_loss(net(self.q_sample(x0, t, noise), t).float(), noise)
        self.optimize(loss, optimizers["ddpm"])
        return {"loss": loss.item()}

    # -- sampling ------------------------------------------------------------------------
    def _plan(self, t: Sequence[int], r1, r2, a, b, sigma, noisy: list[bool]) -> SamplingPlan:
        dev = self.betas.device
        return SamplingPlan(
            t=torch.tensor(t, dtype=torch.long).to(dev),
            r1=r1.float(), r2=r2.float(), a=a.float(), b=b.float(), sigma=sigma.float(),
            noisy=noisy,
        )

    def ddpm_plan(self, variance: str = "beta_tilde") -> SamplingPlan:
        """Ancestral sampling over all T steps with sigma^2 = beta-tilde (or beta)."""
        _choice(variance, VARIANCES, "variance")
        T = self.timesteps
        var = (self.posterior_variance if variance == "beta_tilde" else self.betas).clone()
        var[0] = 0.0
        return self._plan(
            list(range(T - 1, -1, -1)),
            self.sqrt_recip_alphas_cumprod.flip(0), self.sqrt_recipm1_alphas_cumprod.flip(0),
            self.posterior_mean_coef1.flip(0), self.posterior_mean_coef2.flip(0),
            var.sqrt().flip(0), [t > 0 for t in range(T - 1, -1, -1)],
        )

    def ddim_plan(self, timesteps: Sequence[int], eta: float = 0.0) -> SamplingPlan:
        """DDIM (Song et al., eq. 12) over the descending ``timesteps``; the last step goes to
        abar = 1, i.e. returns the predicted x0. sigma = eta * sqrt(beta-tilde of the jump)."""
        ts = [int(t) for t in timesteps]
        if not ts or any(not 0 <= t < self.timesteps for t in ts) or any(
                p <= q for p, q in zip(ts, ts[1:], strict=False)):
            raise ConfigError(
                f"DDIM timesteps must be strictly decreasing values in 0..{self.timesteps - 1}"
            )
        dev = self.betas.device
        t = torch.tensor(ts, dtype=torch.long).to(dev)
        ab = self.alphas_cumprod[t]
        ab_prev = torch.cat([self.alphas_cumprod[t[1:]], ab.new_ones(1)])
        var = (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
        sigma = eta * var.clamp(min=0).sqrt()
        d = (1 - ab_prev - sigma**2).clamp(min=0).sqrt()
        b = d / (1 - ab).sqrt()
        a = ab_prev.sqrt() - b * ab.sqrt()
        noisy = [eta > 0 and i < len(ts) - 1 for i in range(len(ts))]
        return self._plan(ts, ab.rsqrt(), (1 / ab - 1).sqrt(), a, b, sigma, noisy)

    @staticmethod
    def step(plan: SamplingPlan, i: int, x: Tensor, eps: Tensor, noise: Tensor | None,
             clip_x0: bool = True) -> tuple[Tensor, Tensor]:
        """Step i of ``plan`` from x (at t[i]) and the network's eps; returns (x_prev, x0)."""
        x0 = torch.addcmul(plan.r1[i] * x, eps, plan.r2[i], value=-1.0)
        if clip_x0:
            x0.clamp_(-1.0, 1.0)
        x_prev = torch.addcmul(plan.b[i] * x, x0, plan.a[i])
        if noise is not None:
            x_prev.addcmul_(noise, plan.sigma[i])
        return x_prev, x0

    def _generator_for(self, generator: torch.Generator | None, device: torch.device):
        """``generator`` itself if it lives on ``device``, else one there seeded from it."""
        if generator is None or generator.device == device:
            return generator
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        return torch.Generator(device=device).manual_seed(seed)

    def make_plan(self, sampler: str = "ddpm", steps=None, eta=None, spacing=None,
                  variance=None) -> SamplingPlan:
        """Validate sampler options and build the plan (see ``sample`` for the options)."""
        _choice(sampler, SAMPLERS, "sampler")
        T = self.timesteps
        if sampler == "ddpm":
            if steps is not None and option_number(steps, "steps", int) != T:
                raise ConfigError(
                    f"sampler='ddpm' takes all {T} steps; for fewer use sampler='ddim' with "
                    f"steps=S (1..{T}) and eta=1.0 for DDPM-like stochastic sampling"
                )
            for k, v in (("eta", eta), ("spacing", spacing)):
                if v is not None:
                    raise ConfigError(f"{k} is an option of sampler='ddim', not of 'ddpm'")
            return self.ddpm_plan(_choice(variance or "beta_tilde", VARIANCES, "variance"))
        if variance is not None:
            raise ConfigError(
                "variance is an option of sampler='ddpm'; DDIM's noise is set by eta "
                "(eta=1 gives the beta-tilde variance)"
            )
        steps = min(50, T) if steps is None else option_number(steps, "steps", int)
        if not 1 <= steps <= T:
            raise ConfigError(f"steps must be in 1..{T} (the training timesteps), got {steps}")
        eta = 0.0 if eta is None else option_number(eta, "eta")
        if eta < 0:
            raise ConfigError(f"eta must be >= 0 (0: deterministic DDIM, 1: DDPM-like), got {eta}")
        spacing = _choice(spacing or "trailing", SPACINGS, "spacing")
        return self.ddim_plan(sampling_timesteps(T, steps, spacing), eta)

    @torch.inference_mode()
    def sample(self, n, *, generator=None, sampler: str = "ddpm", steps: int | None = None,
               eta: float | None = None, spacing: str | None = None,
               variance: str | None = None, clip_x0: bool = True, batch_size: int = 256,
               cuda_graph="auto", **opts) -> Tensor:
        """n uint8 images from x_T ~ N(0, I).

        ``sampler="ddpm"``: ancestral, all T steps, ``variance="beta_tilde"`` (default) or
        ``"beta"``. ``sampler="ddim"``: ``steps`` S (default 50), ``eta`` (default 0:
        deterministic), ``spacing`` ``"trailing"`` (default), ``"leading"`` or
        ``"linspace"``. ``clip_x0`` clips each predicted x0 to [-1, 1]; ``batch_size``
        images are denoised at a time. ``cuda_graph`` replays the whole sampling loop as one
        captured CUDA graph: the same samples for the same generator, without a kernel
        launch from Python per operation; ``"auto"`` (default) does so on CUDA from the
        second batch of the same shape and options on (the first runs eagerly).
        """
        return from_unit(self.sample_unit(
            n, generator=generator, sampler=sampler, steps=steps, eta=eta, spacing=spacing,
            variance=variance, clip_x0=clip_x0, batch_size=batch_size, cuda_graph=cuda_graph,
            **opts))

    @torch.inference_mode()
    def sample_unit(self, n, *, generator=None, sampler: str = "ddpm", steps=None, eta=None,
                    spacing=None, variance=None, clip_x0=True, batch_size=256,
                    cuda_graph="auto", **opts) -> Tensor:
        """Like ``sample`` but returns the float samples in [-1, 1] (before quantization)."""
        if opts:
            valid = "sampler, steps, eta, spacing, variance, clip_x0, batch_size, cuda_graph"
            raise ConfigError(
                f"unknown sampler option(s) {', '.join(sorted(opts))} for {self.name}; "
                f"valid: {valid}"
            )
        n = option_number(n, "n", int)
        batch_size = option_number(batch_size, "batch_size", int)
        if n < 0 or batch_size < 1:
            raise ConfigError(f"need n >= 0 and batch_size >= 1, got {n=}, {batch_size=}")
        clip_x0 = option_flag(clip_x0, "clip_x0")
        graph, auto = graph_mode(cuda_graph, self.device)
        key = (sampler, steps, eta, spacing, variance, clip_x0)
        plan = self.make_plan(sampler, steps, eta, spacing, variance)
        was_training = self.training
        self.eval()
        try:
            dev = self.device
            gen = self._generator_for(generator, dev)
            out = []
            for start in range(0, n, batch_size):
                b = min(batch_size, n - start)
                use_graph = graph and model_graphs(self).worth_it((*key, b), auto)
                denoise = self._denoise_graphed if use_graph else self._denoise
                out.append(denoise(plan, b, gen, clip_x0, key))
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.empty(0, *self.image_shape)

    def _denoise(self, plan: SamplingPlan, b: int, gen, clip_x0: bool, key=None) -> Tensor:
        dev = self.device
        x = torch.randn((b, *self.image_shape), generator=gen, device=dev)
        for i in range(len(plan)):
            eps = self.net(x, plan.t[i:i + 1]).float()
            z = torch.randn(x.shape, generator=gen, device=dev) if plan.noisy[i] else None
            x, _ = self.step(plan, i, x, eps, z, clip_x0)
        return x

    def _loop(self, plan: SamplingPlan, x: Tensor, zs: Tensor, clip_x0: bool) -> Tensor:
        """The sampling loop over given initial noise and per-step noise (for capture)."""
        j = 0
        for i in range(len(plan)):
            eps = self.net(x, plan.t[i:i + 1]).float()
            z = zs[j] if plan.noisy[i] else None
            j += plan.noisy[i]
            x, _ = self.step(plan, i, x, eps, z, clip_x0)
        return x

    def _denoise_graphed(self, plan: SamplingPlan, b: int, gen, clip_x0: bool, key) -> Tensor:
        """``_denoise`` replayed as one CUDA graph (``zoo.nn.graphs``). The noise is drawn
        before the replay in the order ``_denoise`` draws it: the same samples."""
        dev = self.device
        if sum(plan.noisy) * b * self.dims * 4 > NOISE_BYTES:
            return self._denoise(plan, b, gen, clip_x0)  # the noise would not fit comfortably

        def build():
            x_in = torch.zeros((b, *self.image_shape), device=dev)
            zs = torch.zeros((sum(plan.noisy), b, *self.image_shape), device=dev)
            first = SamplingPlan(plan.t[:1], plan.r1, plan.r2, plan.a, plan.b, plan.sigma,
                                 plan.noisy[:1])
            graph, x_out = capture(lambda: self._loop(plan, x_in, zs, clip_x0),
                                   lambda: self._loop(first, x_in, zs, clip_x0), dev)
            return graph, x_in, zs, x_out, plan  # the plan's tables are read by the replay

        graph, x_in, zs, x_out, _ = model_graphs(self).get(("ddpm", *key, b),
                                                           weights_key(self.net), build)
        x_in.copy_(torch.randn(x_in.shape, generator=gen, device=dev))
        for j in range(zs.shape[0]):
            zs[j].copy_(torch.randn(x_in.shape, generator=gen, device=dev))
        graph.replay()
        return x_out.clone()

    # -- likelihood ----------------------------------------------------------------------
    def prior_nats(self, x0: Tensor) -> Tensor:
        """KL(q(x_T | x_0) || N(0, I)) per image, in nats, computed in float64 (its terms
        cancel to ~abar_T^2 / 2 per pixel)."""
        ab = self.alphas_cumprod[-1]
        mean = ab.sqrt() * x0.double()
        logvar = torch.log1p(-ab).expand_as(mean)
        zero = torch.zeros_like(mean)
        return gaussian_kl(mean, logvar, zero, zero).flatten(1).sum(1)

    def vb_terms_nats(self, x0: Tensor, t: Tensor, noise: Tensor, clip_x0: bool = False,
                      part: Literal["both", "decoder", "kl"] = "both") -> Tensor:
        """The bound's term at timestep t per item, in nats (float64): the discretized
        Gaussian decoder -log p(x_0 | x_1) at t = 0, KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))
        at t > 0, with p's variance beta-tilde and x_t = q_sample(x0, t, noise). ``part``
        computes only one kind when the caller knows which timesteps it passes."""
        xt = self.q_sample(x0, t, noise)
        eps = self.net(xt, t).float()
        x0_pred = self.predict_x0(xt, t, eps)
        if clip_x0:
            x0_pred = x0_pred.clamp(-1.0, 1.0)
        model_mean, logvar = self.q_posterior(x0_pred, xt, t)
        if part != "kl":
            decoder = -discretized_gaussian_log_prob(x0, model_mean, 0.5 * logvar)
            decoder = decoder.flatten(1).double().sum(1)
            if part == "decoder":
                return decoder
        true_mean, _ = self.q_posterior(x0, xt, t)
        kl = gaussian_kl(true_mean, logvar, model_mean, logvar).flatten(1).double().sum(1)
        return kl if part == "kl" else torch.where(t == 0, decoder, kl)

    def _terms(self, x0: Tensor, img: Tensor, t: Tensor, gen, batch_size: int,
               clip_x0: bool, part: str) -> Tensor:
        """vb_terms_nats for the (image index, timestep) pairs, ``batch_size`` at a time."""
        out = torch.empty(img.numel(), dtype=torch.float64, device=x0.device)
        for s in range(0, img.numel(), batch_size):
            xi = x0[img[s:s + batch_size]]
            noise = torch.randn(xi.shape, generator=gen, device=xi.device)
            out[s:s + batch_size] = self.vb_terms_nats(
                xi, t[s:s + batch_size], noise, clip_x0, part)
        return out

    def timestep_proposal(self) -> Tensor:
        """q(t) over t = 1..T-1 for the estimate: half uniform, half proportional to 1/t.

        The KL terms fall off roughly as 1/t (the first few dominate the bound), so drawing t
        with probability ~1/t and weighting by 1/q(t) cuts the standard error of a trained
        model's estimate about 7-fold against uniform draws; the uniform half bounds every
        weight by 2(T-1), which keeps it robust for models whose large-t terms are large
        (an untrained one: 9-fold lower than uniform).
        """
        t = torch.arange(1, self.timesteps, dtype=torch.float64, device=self.betas.device)
        inv = 1.0 / t
        return 0.5 / len(t) + 0.5 * inv / inv.sum()

    @torch.inference_mode()
    def nll_with_stderr(self, x, *, mode: str | None = None, K: int | None = None,
                        proposal: str = "importance", batch_size: int = 256,
                        clip_x0: bool = False, generator=None, **opts) -> NLLResult:
        """The DDPM variational bound (Ho et al. eq. 5, L_0 discretized) in bits/dim per image.

        ``mode="exact"``: the prior term, L_0 and all T-1 KL terms (T network calls per
        image). ``mode="estimate"`` (K network calls per image, plus one for L_0), unbiased
        with its standard error: ``proposal="importance"`` (default) computes the prior and
        L_0 exactly and the sum of the T-1 KL terms as the mean of K terms at t ~ q(t)
        weighted by 1/q(t) (see ``timestep_proposal``); ``proposal="uniform"`` draws K of all
        T terms uniformly and returns T times their mean. Defaults: the config's
        ``nll_mode`` and ``nll_samples``. p's mean comes from the predicted eps as in Ho et
        al. eq. 11; ``clip_x0=True`` bounds the clipped model the samplers use by default
        instead (much lower on MNIST, whose pixels sit mostly at the clip limits).
        """
        if opts:
            raise ConfigError(
                f"unknown nll option(s) {', '.join(sorted(opts))} for {self.name}; "
                "valid: mode, K, proposal, batch_size, clip_x0"
            )
        mode = _choice(mode or self.config.nll_mode, NLL_MODES, "nll mode")
        proposal = _choice(proposal, PROPOSALS, "proposal")
        K = self.config.nll_samples if K is None else option_number(K, "K", int)
        if mode == "estimate" and K < 2:
            raise ConfigError(f"K must be >= 2 (a standard error needs two draws), got {K}")
        batch_size = option_number(batch_size, "batch_size", int)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        clip_x0 = option_flag(clip_x0, "clip_x0")
        x0 = to_unit(self.check_images(x))
        n, dev, T = x0.shape[0], x0.device, self.timesteps
        was_training = self.training
        self.eval()
        try:
            gen = self._generator_for(generator, dev)
            every = torch.arange(n, device=dev)
            total = self.prior_nats(x0)
            stderr = torch.zeros(n, dtype=torch.float64, device=dev)
            if mode == "estimate" and proposal == "uniform":
                t = torch.randint(0, T, (n * K,), generator=gen, device=dev)
                terms = self._terms(x0, every.repeat_interleave(K), t, gen, batch_size,
                                    clip_x0, "both").view(n, K)
                total += T * terms.mean(1)
                stderr = T * terms.std(1) / math.sqrt(K)
                detail = f"K={K} of {T} terms per image drawn uniformly"
            else:
                total += self._terms(x0, every, torch.zeros(n, dtype=torch.long, device=dev),
                                     gen, batch_size, clip_x0, "decoder")
                if T > 1 and mode == "exact":
                    t = torch.arange(1, T, device=dev).repeat(n)
                    terms = self._terms(x0, every.repeat_interleave(T - 1), t, gen, batch_size,
                                        clip_x0, "kl")
                    total += terms.view(n, T - 1).sum(1)
                    detail = f"all {T} terms"
                elif T > 1:
                    q = self.timestep_proposal()
                    idx = torch.multinomial(q, n * K, replacement=True, generator=gen)
                    terms = self._terms(x0, every.repeat_interleave(K), idx + 1, gen,
                                        batch_size, clip_x0, "kl")
                    weighted = (terms / q[idx]).view(n, K)
                    total += weighted.mean(1)
                    stderr = weighted.std(1) / math.sqrt(K)
                    detail = (f"K={K} of {T - 1} KL terms per image, importance-sampled; "
                              "prior and L_0 exact")
                else:
                    detail = "T=1: prior and L_0"
        finally:
            self.train(was_training)
        return NLLResult(
            bpd=nats_to_bpd(total, self.dims).float().cpu(),
            stderr=nats_to_bpd(stderr, self.dims).float().cpu(),
            kind=mode,
            detail=detail,
        )

    def describe_nll(self, mode=None, K=None, proposal="importance", **options) -> str:
        mode = mode or self.config.nll_mode
        if mode == "exact":
            return f"bound, exact: all {self.timesteps} terms"
        K = self.config.nll_samples if K is None else K
        how = ("importance-sampled KL terms, prior and L_0 exact" if proposal == "importance"
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

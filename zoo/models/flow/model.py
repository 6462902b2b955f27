"""Flow matching (Lipman et al. 2023) on the linear path of rectified flow (Liu et al. 2023),
as Stable Diffusion 3 trains (Esser et al. 2024): x_t = (1 - t) x_0 + t noise, t = 1 being
noise (diffusers' convention), and the U-Net (``zoo.nn.unet``) regresses the path's velocity
v = noise - x_0 at x_t. Times are drawn uniformly or logit-normally (SD3's choice, which
weights the middle of the path); sampling integrates dx/dt = v from t = 1 to 0 with one of
the samplers beside this file (``euler``, ``heun``, ``midpoint``) through the diffusion
family's loop (``zoo.models.diffusion.loop``: ``noise=``, guidance, CUDA graphs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ...core import ConfigError, GenerativeModel, ModelSpec, adam, eval_mode, option_number
from ...nn.unet import UNetConfig
from ...options import check_range
from ..diffusion.bound import NLLResult
from ..diffusion.loop import SamplingLoop
from .euler import Euler
from .heun import Heun
from .likelihood import NLL_METHODS, dequantized_bpd
from .midpoint import Midpoint
from .sampler import TIME_SCALE
from .straightness import STEPS as STRAIGHTNESS_STEPS
from .straightness import euler_straightness

TIME_SAMPLINGS = ("uniform", "logit-normal")


@dataclass
class FlowMatchingConfig(UNetConfig):
    """The U-Net (``zoo.nn.unet.UNetConfig``), then training: one flat set of options."""

    lr: float = 1e-3
    time_sampling: Literal["uniform", "logit-normal"] = "uniform"  # how training draws t
    logit_mean: float = 0.0  # logit-normal t = sigmoid(m + s n), n ~ N(0, 1): m (SD3: 0)
    logit_std: float = 1.0  # ... and s (SD3: 1)
    conditional: bool = False  # class-conditional (labels from the training data)
    num_classes: int | None = None  # filled from the dataset's labels when conditional
    label_dropout: float = 0.1  # share of training labels replaced by the null label
    nll_method: Literal["hutchinson", "exact"] = "hutchinson"  # the ODE's divergence
    nll_steps: int = 64  # Heun steps of the likelihood ODE (2 network calls each)
    nll_samples: int = 4  # K: (dequantization, probe) draws per image


#: the default sampler (``FlowMatching.default_sampler``; docs/flow-matching.md says how
#: it was chosen)
DEFAULT_SAMPLER = {"sampler": "midpoint", "steps": 5}


class FlowMatching(SamplingLoop, GenerativeModel):
    """Flow matching: a U-Net predicting the velocity of the linear path, ODE samplers."""

    family = "flow-matching"
    likelihood = "bound"  # of dequantized data through the ODE (``likelihood``)
    color = "#17becf"
    Config = FlowMatchingConfig
    samplers = (Euler, Heun, Midpoint)

    @property
    def default_sampler(self) -> dict:
        """Midpoint at 5 steps (10 network calls, as DDPM's default): on MNIST its FID is
        that of 50 Euler or 25 Heun steps, where Euler at 10 steps is 0.6 worse
        (docs/flow-matching.md has the measurement)."""
        return dict(DEFAULT_SAMPLER)

    def __init__(self, config: FlowMatchingConfig, image_shape):
        super().__init__(config, image_shape)
        c = config
        if c.time_sampling not in TIME_SAMPLINGS:
            raise ConfigError(f"unknown time_sampling {c.time_sampling!r}; valid: "
                              f"{', '.join(TIME_SAMPLINGS)}")
        check_range(c.logit_mean, "logit_mean")
        check_range(c.logit_std, "logit_std", above=0)
        self._nll_options(c.nll_method, c.nll_steps, c.nll_samples, "nll_")
        self.build_unet()
        # the config records the depth chosen for this size, so run.json shows what was built
        self.config = dataclasses.replace(self.config,
                                          channel_mult=tuple(self.net.config.channel_mult))

    # -- training ------------------------------------------------------------------------
    def configure_optimizers(self):
        return {"flow": adam(self.net.parameters(), lr=self.config.lr)}

    def ddp_modules(self):
        return {"net": self.net}

    def sample_times(self, n: int) -> Tensor:
        """n training times in [0, 1] per ``time_sampling``, from the batch noise stream."""
        c = self.config
        if c.time_sampling == "uniform":
            return self.batch_rand(n)
        return torch.sigmoid(c.logit_mean + c.logit_std * self.batch_randn(n))

    def train_step(self, x, optimizers):
        """One step of ``regress`` on the batch's images x_0 and independent noise."""
        batch = self.check_batch(x)
        x0 = self.to_space(batch.images)
        t = self.sample_times(x0.shape[0])
        noise = self.batch_randn(*x0.shape)
        return self.regress(x0, noise, t, batch.labels, optimizers)

    def regress(self, x0: Tensor, noise: Tensor, t: Tensor, labels: Tensor,
                optimizers) -> dict[str, float]:
        """One step of || v_theta(x_t, t) - (noise - x_0) ||^2 at x_t = (1 - t) x_0 + t noise;
        a conditional model sees ``labels``, a ``label_dropout`` share of them replaced by
        the null label (the unconditional model guidance uses)."""
        x_t = torch.lerp(x0, noise, t.view(-1, *[1] * (x0.dim() - 1)))
        args = (self.drop_labels(labels, self.config.label_dropout),) \
            if self.conditional else ()
        out = self.wrapped("net")(x_t, t * TIME_SCALE, *args).float()
        loss = F.mse_loss(out, noise - x0)
        self.optimize(loss, optimizers["flow"])
        return {"loss": loss.item()}

    # -- sampling ------------------------------------------------------------------------
    @torch.inference_mode()
    def sample(self, n, *, generator=None, labels=None, batch_size: int = 256,
               cuda_graph="auto", noise: Tensor | None = None, **options) -> Tensor:
        """n uint8 images integrated from x_1 ~ N(0, I), or from the given ``noise`` x_1
        [n, C, H, W] (then the same noise gives the same images, for any ``batch_size``,
        eager or graphed).

        Without a ``sampler``: ``default_sampler`` (midpoint, 5 steps; its options may be given:
        ``steps=20``). ``sampler="euler"`` (S calls), ``"heun"`` (2 S - 1) or ``"midpoint"``
        (2 S), each with ``steps`` S (default 50) and ``shift`` (SD3's timestep shift,
        default 1); the first two are diffusers' ``FlowMatchEulerDiscreteScheduler`` and
        ``FlowMatchHeunDiscreteScheduler``. ``cuda_graph`` replays the loop as one CUDA graph
        (``"auto"``: on CUDA from the second batch of the same shape and options on).

        A class-conditional model takes ``labels`` (an int or one per image); without, it
        samples from its null label. ``guidance`` w mixes the velocities, v_null + w (v_label
        - v_null): 0 unconditional, 1 (default) conditional, > 1 guided (one batched call).
        """
        return self._sample_images(n, options, generator=generator, labels=labels,
                                   batch_size=batch_size, cuda_graph=cuda_graph, noise=noise)

    def sampling_plan(self, sampler):
        return sampler.plan(self.device)

    def _predict(self, x: Tensor, plan, i: int, y: Tensor | None, guidance: float) -> Tensor:
        return self._guided_net(x, plan.t[i:i + 1], y, guidance)

    @torch.inference_mode()
    def straightness(self, n: int, *, steps: int = STRAIGHTNESS_STEPS, generator=None,
                     batch_size: int = 256) -> tuple[float, float]:
        """(S, its standard error) over ``n`` paths from z ~ N(0, I) drawn from
        ``generator``: Liu et al.'s straightness of the model's flow, the mean over each
        path's ``steps`` equal Euler steps of || (z - x_0) - v(x_t, t) ||^2 / D
        (``straightness``; 0: straight paths, one Euler step exact). A conditional model's
        paths take the classes in turn (0, 1, ...: the sample grid's labels)."""
        n = option_number(n, "n", int)
        steps = option_number(steps, "steps", int)
        batch_size = option_number(batch_size, "batch_size", int)
        check_range(n, "n", least=2)  # a standard error needs two paths
        check_range(steps, "steps", least=1)
        check_range(batch_size, "batch_size", least=1)
        gen = self._generator_for(generator, self.device)
        values = []
        with eval_mode(self):
            for start in range(0, n, batch_size):
                b = min(batch_size, n - start)
                z = torch.randn((b, *self.space_shape), generator=gen, device=self.device)
                y = (torch.arange(start, start + b, device=self.device) % self.num_classes,) \
                    if self.conditional else ()

                def velocity(x, t, y=y):
                    t = torch.full((1,), t * TIME_SCALE, device=x.device)
                    return self.net(x, t, *y).float()

                values.append(euler_straightness(velocity, z, steps))
        s = torch.cat(values)
        return float(s.mean()), float(s.std() / n ** 0.5)

    # -- likelihood ----------------------------------------------------------------------
    def _nll_options(self, method, steps, K, prefix: str = "") -> tuple[str, int, int]:
        """(method, steps, K) of ``nll``, the config's where None, checked."""
        c = self.config
        method = c.nll_method if method is None else method
        if method not in NLL_METHODS:
            raise ConfigError(f"unknown {prefix}method {method!r}; valid: "
                              f"{', '.join(NLL_METHODS)}")
        steps = c.nll_steps if steps is None else option_number(steps, f"{prefix}steps", int)
        K = c.nll_samples if K is None else option_number(K, "nll_samples" if prefix else "K",
                                                           int)
        check_range(steps, f"{prefix}steps", least=1)
        if K < 2:
            raise ConfigError(f"{'nll_samples' if prefix else 'K'} must be >= 2 (a standard "
                              f"error needs two draws), got {K}")
        return method, steps, K

    def nll_with_stderr(self, x, *, labels=None, method: str | None = None,
                        steps: int | None = None, K: int | None = None, batch_size: int = 64,
                        generator=None, **opts) -> NLLResult:
        """-log P(x) in bits/dim per uint8 image through the ODE (``likelihood``): an upper
        bound (uniform dequantization) estimated from K (dequantization, probe) draws per
        image, with its standard error. ``method="hutchinson"`` (default) estimates the
        divergence with one Rademacher probe per draw (2 ``steps`` forward and backward
        passes); ``"exact"`` computes it (one backward pass per dimension: small images).
        Defaults: the config's ``nll_method``, ``nll_steps``, ``nll_samples``. A
        conditional model gives -log p(x | label) with ``labels``, else its null label's."""
        if opts:
            raise ConfigError(f"unknown nll option(s) {', '.join(sorted(opts))} for "
                              f"{self.name}; valid: method, steps, K, batch_size, labels")
        method, steps, K = self._nll_options(method, steps, K)
        batch_size = option_number(batch_size, "batch_size", int)
        check_range(batch_size, "batch_size", least=1)
        images = self.check_images(x)
        labels = self.check_labels(labels, images.shape[0])
        if self.conditional and labels is None:
            labels = torch.full((images.shape[0],), self.num_classes, dtype=torch.long,
                                device=self.device)
        gen = self._generator_for(generator, self.device)
        bpd, err = [], []
        with eval_mode(self):
            for start in range(0, images.shape[0], batch_size):
                y = None if labels is None else labels[start:start + batch_size]
                y = None if y is None else y.repeat_interleave(K)

                def velocity(x_t, t, y=y):
                    t = torch.full((1,), t * TIME_SCALE, device=x_t.device)
                    return self.net(x_t, t, *(() if y is None else (y,))).float()

                b, e = dequantized_bpd(velocity, images[start:start + batch_size], K=K,
                                       steps=steps, method=method, generator=gen)
                bpd.append(b)
                err.append(e)
        return NLLResult(torch.cat(bpd), torch.cat(err), method,
                         self.describe_nll(method=method, steps=steps, K=K))

    def nll(self, x, **options) -> Tensor:
        """Bits/dim per image through the ODE (see ``nll_with_stderr``)."""
        return self.nll_with_stderr(x, **options).bpd

    def describe_nll(self, method=None, steps=None, K=None, labels=None, **options) -> str:
        method, steps, K = self._nll_options(method, steps, K)
        how = ("exact divergence" if method == "exact"
               else "Hutchinson divergence estimate, one Rademacher probe per draw")
        what = (f"ODE bound on dequantized data: {how}, {steps} Heun steps, K={K} draws "
                "per image")
        if not self.conditional:
            return what
        return what + (", conditional on the given labels" if labels is not None
                       else ", null label (unconditional)")


MODELS = {
    "flow-matching": ModelSpec(
        FlowMatching,
        "flow matching / rectified flow (Lipman et al.; Liu et al.; SD3's objective), DDPM's "
        "1.06M-parameter U-Net predicting velocity; sample with sampler=euler|heun|midpoint",
        dataset_defaults={"cifar10": {"channels": 64}},
    ),
}

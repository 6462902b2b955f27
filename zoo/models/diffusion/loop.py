"""The sampling loop every diffusion-like family shares (``ddpm``, ``latent-diffusion``,
``flow-matching``): x drawn (or given as ``noise=``), then one sampler step per row of the
sampler's plan, each from the network's guided prediction; eager, or replayed as one
captured CUDA graph (``zoo.nn.graphs``) that gives the same samples for the same generator.

A family mixes ``SamplingLoop`` in and supplies ``sampling_plan(sampler)`` (the sampler's
per-step tensors on the model's device) and ``_predict(x, plan, i, y, guidance)`` (what the
sampler's step reads at row ``i``: DDPM's eps, a flow's velocity); its samplers follow the
contract of ``sampler.DiffusionSampler`` (``start``, ``init_state``, ``step``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ... import progress
from ...core import ConfigError, eval_mode, option_number
from ...errors import NonFiniteSamples
from ...nn.graphs import NOISE_BYTES, capture, graph_mode, model_graphs, weights_key
from ...nn.likelihood import from_unit, to_unit
from ...nn.unet import UNet
from ...options import check_range

#: ``sample``'s own arguments, beside the sampler's options
SAMPLE_ARGS = ("labels", "batch_size", "cuda_graph", "noise")


class SamplingLoop:
    """Mixed into a ``GenerativeModel`` with a ``net`` (a U-Net taking (x, t[, labels])):
    ``sample``, ``sample_unit`` and the loop behind them (see the module docstring)."""

    # -- the space the loop runs in (a latent model's differs) -----------------------------
    def diffusion_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the sampled tensors: the image's."""
        return self.image_shape

    def to_space(self, x: Tensor) -> Tensor:
        """uint8 images -> the sampled float tensors (here [-1, 1] pixels)."""
        return to_unit(x)

    def from_space(self, x: Tensor) -> Tensor:
        """Sampled float tensors -> uint8 images."""
        return from_unit(x)

    # -- what a family supplies ----------------------------------------------------------
    def build_unet(self) -> None:
        """``self.net``, the U-Net over ``diffusion_shape()`` (class-conditional when the
        config is), after the options every such family shares are checked;
        ``space_shape``, the shape it runs in: the image's, or a latent model's latents."""
        c = self.config
        check_range(c.lr, "lr", above=0)
        check_range(c.channels, "channels", least=1)
        check_range(c.norm_groups, "norm_groups", least=1)
        check_range(c.label_dropout, "label_dropout", least=0, below=1)
        if c.conditional and (c.num_classes is None or c.num_classes < 2):
            raise ConfigError(
                f"a conditional model needs num_classes >= 2, got {c.num_classes}; train it on "
                "a labelled dataset (which sets it) or give num_classes=K")
        self.space_shape = self.diffusion_shape()
        ch, h, w = self.space_shape
        self.net = UNet(ch, (h, w), c.unet, num_classes=c.num_classes if c.conditional else None)

    def sampling_plan(self, sampler):
        """The bound ``sampler``'s per-step tensors on the model's device."""
        raise NotImplementedError

    def _predict(self, x: Tensor, plan, i: int, y: Tensor | None, guidance: float) -> Tensor:
        """What the sampler's step ``i`` reads from the network at x, guided."""
        raise NotImplementedError

    # -- sampling ------------------------------------------------------------------------
    def _generator_for(self, generator: torch.Generator | None, device: torch.device):
        """``generator`` itself if it lives on ``device``, else one there seeded from it."""
        if generator is None or generator.device == device:
            return generator
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        return torch.Generator(device=device).manual_seed(seed)

    def _sample_images(self, n, options: dict, **args) -> Tensor:
        """``sample_unit(n, **args, **options)`` as uint8 images (``options``: the
        sampler's); a non-finite result under guidance other than 0 or 1 says the guidance
        overflowed."""
        x = self.sample_unit(n, **args, **options)
        try:
            return self.from_space(x)
        except NonFiniteSamples:
            w = self.parse_sampler(options, also=SAMPLE_ARGS).guidance
            if w in (0.0, 1.0):
                raise
            raise NonFiniteSamples(f"guidance {w:g} overflowed to non-finite values (NaN or "
                                   "inf); use a smaller guidance (usually 1 to 10)") from None

    @torch.inference_mode()
    def sample_unit(self, n, *, generator=None, labels=None, batch_size=256, cuda_graph="auto",
                    noise=None, **options) -> Tensor:
        """Like ``sample`` but returns the float samples of the sampled space (pixels in
        [-1, 1] before quantization; a latent model's latents)."""
        sampler = self.parse_sampler(options, also=SAMPLE_ARGS)
        n = option_number(n, "n", int)
        batch_size = option_number(batch_size, "batch_size", int)
        if n < 0 or batch_size < 1:
            raise ConfigError(f"need n >= 0 and batch_size >= 1, got {n=}, {batch_size=}")
        labels = self.check_labels(labels, n)
        noise = self._check_noise(noise, n)
        if self.conditional and labels is None:  # no class asked: the null label's model
            labels = torch.full((n,), self.num_classes, dtype=torch.long, device=self.device)
        graph, auto = graph_mode(cuda_graph, self.device)
        plan = self.sampling_plan(sampler)
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

    def _guided_net(self, x: Tensor, t: Tensor, y: Tensor | None, guidance: float) -> Tensor:
        """The network's output at x (timestep ``t``), guided: out_null + w (out_y -
        out_null) from one batched call over both labels when w is neither 0 nor 1 (``y``
        from ``_guided_labels``)."""
        if y is None or y.shape[0] == x.shape[0]:
            return self.net(x, t, *(() if y is None else (y,))).float()
        cond, uncond = self.net(torch.cat([x, x]), t, y).float().chunk(2)
        return torch.lerp(uncond, cond, guidance)

    def _check_noise(self, noise, n: int) -> Tensor | None:
        """``sample``'s ``noise=`` (the initial x) as float32 on the model's device, or a
        ConfigError."""
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
            out = self._predict(x, plan, i, y, sampler.guidance)
            z = torch.randn(x.shape, generator=gen, device=dev) if plan.noisy[i] else None
            x, _, state = sampler.step(plan, i, x, out, z, state)
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
            out = self._predict(x, plan, i, y, sampler.guidance)
            z = zs[j] if plan.noisy[i] else None
            j += plan.noisy[i]
            x, _, state = sampler.step(plan, i, x, out, z, state)
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

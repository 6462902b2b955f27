"""A Transformer prior over a VQ-VAE's codes (van den Oord et al. 2017 with a Transformer in
place of the PixelCNN; DALL-E's and VQGAN's second stage): the autoregressive family's
model (``zoo.models.autoregressive``: KV-cache sampling, temperature, top-k, conditional
with guidance) over the code grid of a trained ``vq-vae`` (``autoencoders``) in raster
order, a vocabulary of its codebook size, instead of the image's 256-valued subpixels.
A 28x28 image is 49 codes at the VQ-VAE's default 1/4 side, where the pixel Transformer
predicts 784 subpixels.

Likelihood: a bound in bits/dim per image dimension, -log p(z*) from this prior (exact,
the summed cross-entropy of the codes) plus the VQ-VAE decoder's discretized likelihood
-log p(x | z*) at the encoder's codes z*: the ELBO of a deterministic encoder
(``VQVAE.codes_bound``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import ConfigError, ModelSpec, eval_mode
from ..nn.likelihood import from_unit
from .autoencoders import VQVAE
from .autoregressive import ARTransformer, ARTransformerConfig
from .latent import FILLED, LatentStage, attach_autoencoder


@dataclass
class VQTransformerConfig(ARTransformerConfig):
    """``ar-transformer``'s options, and the VQ-VAE run the prior is learned over."""

    autoencoder: str = ""  # the vq-vae run directory (or model file)
    autoencoder_sha256: str = field(default="", metadata=FILLED)  # its weights' hash
    autoencoder_spec: str = field(default="", metadata=FILLED)  # its class, config, shape


class VQTransformer(LatentStage, ARTransformer):
    """Decoder-only Transformer over a frozen VQ-VAE's codes."""

    family = "latent-autoregressive"
    likelihood = "bound"
    color = "#bcbd22"
    Config = VQTransformerConfig
    autoencoder_model: ClassVar[str] = "vq-vae"  # the model its autoencoder run is

    def token_grid(self) -> tuple[int, tuple[int, int, int]]:
        self.autoencoder = attach_autoencoder(self, VQVAE, "vq-transformer")
        return self.autoencoder.config.codes, (1, *self.autoencoder.code_shape)

    @torch.no_grad()
    def to_tokens(self, x: Tensor) -> Tensor:
        """uint8 [N, C, H, W] -> the VQ-VAE's codes [N, h * w] in raster order."""
        return self.autoencoder.encode(x).reshape(x.shape[0], -1)

    @torch.no_grad()
    def to_images(self, tokens: Tensor) -> Tensor:
        """Codes [N, h * w] -> the decoded uint8 images."""
        h, w = self.autoencoder.code_shape
        return from_unit(self.autoencoder.decode(tokens.view(-1, h, w)))

    @torch.no_grad()
    def reconstruct(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """The VQ-VAE's reconstructions of uint8 images (what the first stage costs)."""
        return self.autoencoder.reconstruct(x, batch_size)

    def sample(self, n: int, *, prefix: Tensor | None = None, **options) -> Tensor:
        """n uint8 images: codes decoded token by token (``ar-transformer``'s options but
        ``prefix``), then decoded by the VQ-VAE."""
        if prefix is not None:
            raise ConfigError("vq-transformer generates codes, not pixels: prefix (the first "
                              "rows of each image) is for ar-transformer")
        return super().sample(n, **options)

    def describe_nll(self, labels=None, **options) -> str:
        what = "bound (-log p(z*) from the prior, exact, + the VQ-VAE decoder's -log p(x|z*))"
        if not self.conditional:
            return what
        return what + (", conditional on the labels" if labels is not None
                       else ", null label (unconditional)")

    @torch.no_grad()
    def nll(self, x, labels: Tensor | None = None, batch_size: int = 256, **opts) -> Tensor:
        """-log2 p(z*) - log2 p(x | z*) per image dimension (``describe_nll``); a conditional
        model's prior term is -log p(z* | labels), or the null label's without."""
        x, labels, batch_size = self.nll_inputs(x, labels, batch_size, opts)
        done = 0

        def prior_nll(codes: Tensor) -> Tensor:
            nonlocal done
            tokens = codes.reshape(codes.shape[0], -1)
            y = None if labels is None else labels[done:done + tokens.shape[0]]
            done += tokens.shape[0]
            logits = self.forward(tokens, y).float()
            return F.cross_entropy(logits.transpose(1, 2), tokens, reduction="none").sum(1)

        with eval_mode(self):
            return self.autoencoder.codes_bound(x, prior_nll, batch_size)


MODELS = {
    "vq-transformer": ModelSpec(
        VQTransformer,
        "decoder-only Transformer prior over a trained vq-vae's codes (49 per 28x28 image), "
        "KV-cache sampling; --set autoencoder=RUN",
    ),
}

"""Latent diffusion (Rombach et al. 2022, Stable Diffusion's recipe): the diffusion family's
model, U-Net and every sampler (``zoo.models.diffusion``), run over the latents of a trained
``kl-autoencoder`` (``autoencoders``) instead of pixels.

An image is encoded to its posterior mean and divided by the autoencoder's running standard
deviation of its latents (Stable Diffusion's scale factor: unit-variance latents); a sample
is denoised in that space and decoded. Class-conditional training and classifier-free
guidance work as in ``ddpm``. Its samplers are ``DDPM.samplers``, read at each access (a
sampler added there reaches this model too); the latents are not bounded, so the ones that
clip the predicted x0 to [-1, 1] by default (``ddpm``, ``ddim``) do not here
(``clip_x0=false``, as diffusers' latent pipelines).

No likelihood: the diffusion bound is for the discrete pixels it decodes with L_0, and a
bound on an image through continuous latents needs the encoder's density too, which a
deterministic encoder does not give; ``nll`` says so.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from ..core import LikelihoodUnavailable, ModelSpec
from ..nn.likelihood import from_unit
from .autoencoders import KLAutoencoder
from .diffusion import DDIM, DDPM, Ancestral, DDPMConfig
from .latent import FILLED, LatentStage, attach_autoencoder


@dataclass
class LatentDiffusionConfig(DDPMConfig):
    """``ddpm``'s options, and the autoencoder run the model works over."""

    channels: int = 64
    autoencoder: str = ""  # the kl-autoencoder run directory (or model file)
    autoencoder_sha256: str = field(default="", metadata=FILLED)  # its weights' hash
    autoencoder_spec: str = field(default="", metadata=FILLED)  # its class, config, shape


@functools.cache
def unclipped(sampler: type) -> type:
    """``sampler`` with x0 clipping off by default: a ``Latent<Name>`` subclass (made once)
    where its ``clip_x0`` defaults to true, else ``sampler`` itself."""
    clip = next((f for f in dataclasses.fields(sampler) if f.name == "clip_x0"), None)
    if clip is None or clip.default is not True:
        return sampler
    name = "Latent" + sampler.__name__
    doc = (sampler.__doc__ or "") + " Latents are not clipped unless ``clip_x0=true``."
    body = {"__annotations__": {"clip_x0": clip.type}, "clip_x0": False,
            "__module__": __name__, "__qualname__": name, "__doc__": doc}
    return dataclass(frozen=True)(type(name, (sampler,), body))


class _UnclippedDDPMSamplers:
    """``DDPM.samplers`` as of each access, each ``unclipped``."""

    def __get__(self, obj, owner=None) -> tuple[type, ...]:
        return tuple(unclipped(s) for s in DDPM.samplers)


LatentAncestral = unclipped(Ancestral)
LatentDDIM = unclipped(DDIM)


class KLLatentSpace(LatentStage):
    """Mixed into a latent model ahead of its pixel family (one whose loop runs in
    ``diffusion_shape`` through ``to_space``/``from_space``): that space becomes a frozen
    kl-autoencoder's unit-variance latents."""

    autoencoder_model: ClassVar[str] = "kl-autoencoder"  # the model its autoencoder run is

    def diffusion_shape(self) -> tuple[int, int, int]:
        self.autoencoder = attach_autoencoder(self, KLAutoencoder, self.family)
        return self.autoencoder.latent_shape

    @property
    def latent_scale(self) -> Tensor:
        """Stable Diffusion's scale factor: 1 / the std of the autoencoder's latents."""
        return self.autoencoder.latent_std.reciprocal()

    @torch.no_grad()
    def to_space(self, x: Tensor) -> Tensor:
        return self.autoencoder.encode(x) * self.latent_scale

    @torch.no_grad()
    def from_space(self, z: Tensor) -> Tensor:
        return from_unit(self.autoencoder.decode(z / self.latent_scale))

    @torch.no_grad()
    def reconstruct(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """The autoencoder's reconstructions of uint8 images (what the first stage costs)."""
        return self.autoencoder.reconstruct(x, batch_size)

    likelihood: ClassVar[str | None] = None

    def nll_with_stderr(self, x, **options):
        raise LikelihoodUnavailable(
            f"{self.name} has no likelihood: a likelihood of images through continuous "
            "latents needs the encoder's density, which its deterministic encoder does not give")

    def nll(self, x, **options) -> Tensor:
        return self.nll_with_stderr(x, **options)

    def describe_nll(self, **options) -> str:
        return "none"


class LatentDiffusion(KLLatentSpace, DDPM):
    """DDPM over a frozen kl-autoencoder's unit-variance latents."""

    family = "latent-diffusion"
    color = "#e377c2"
    Config = LatentDiffusionConfig
    samplers = _UnclippedDDPMSamplers()  # DDPM's, with x0 clipping off by default
    default_clip = False


MODELS = {
    "latent-diffusion": ModelSpec(
        LatentDiffusion,
        "DDPM (U-Net, every diffusion sampler) over a trained kl-autoencoder's latents "
        "(Stable Diffusion's recipe); --set autoencoder=RUN",
    ),
}

__all__ = ["MODELS", "KLLatentSpace", "LatentDiffusion", "LatentDiffusionConfig"]

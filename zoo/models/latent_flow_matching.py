"""Latent flow matching (Stable Diffusion 3's recipe at zoo's scale): the flow-matching
family's model, U-Net and samplers (``zoo.models.flow``) run over the latents of a trained
``kl-autoencoder``, exactly as ``latent-diffusion`` runs DDPM there (``KLLatentSpace``: the
posterior mean divided by the latents' running standard deviation; samples decoded).
Class-conditional training and classifier-free guidance work as in ``flow-matching``."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core import ModelSpec
from .flow import FlowMatching, FlowMatchingConfig
from .latent import FILLED
from .latent_diffusion import KLLatentSpace


@dataclass
class LatentFlowMatchingConfig(FlowMatchingConfig):
    """``flow-matching``'s options, and the autoencoder run the model works over."""

    channels: int = 64
    autoencoder: str = ""  # the kl-autoencoder run directory (or model file)
    autoencoder_sha256: str = field(default="", metadata=FILLED)  # its weights' hash
    autoencoder_spec: str = field(default="", metadata=FILLED)  # its class, config, shape


class LatentFlowMatching(KLLatentSpace, FlowMatching):
    """Flow matching over a frozen kl-autoencoder's unit-variance latents."""

    family = "latent-flow-matching"
    color = "#bcbd22"
    Config = LatentFlowMatchingConfig


MODELS = {
    "latent-flow-matching": ModelSpec(
        LatentFlowMatching,
        "flow matching (U-Net predicting velocity, Euler/Heun/midpoint) over a trained "
        "kl-autoencoder's latents (SD3's recipe); --set autoencoder=RUN",
    ),
}

__all__ = ["MODELS", "LatentFlowMatching", "LatentFlowMatchingConfig"]

"""The autoencoder family: the first stage of the latent models (``latent``).

``kl-autoencoder`` is latent diffusion's "VAE" (Rombach et al. 2022): a conv encoder to a
Gaussian posterior over a latent of ``latent_channels`` at 1/2^levels of the side, a small
KL weight towards N(0, I), and a conv decoder. ``vq-vae`` (van den Oord et al. 2017)
quantizes the encoder's output to the nearest of ``codes`` codebook vectors (EMA updates,
dead-code restarts: ``zoo.nn.autoencoder.VectorQuantizer``), a code grid at 1/4 of the
side. Both are trained for reconstruction (mean squared error in [-1, 1]) and are judged by
``reconstruct`` (PSNR, the FID of reconstructions; ``zoo eval``), the VQ-VAE also by its
codebook use (``codebook_usage``: perplexity, dead codes).

Each is also a generative model with its training-time prior (which is why a second stage
exists): ``kl-autoencoder`` samples z ~ N(0, I), ``vq-vae`` draws every code uniformly, and
both decode. Their ``nll`` is a bound in bits/dim under a discretized Gaussian decoder whose
one scale is learned beside the weights (fitted to the reconstruction error, so it never
changes what the decoder learns): the ELBO for the KL autoencoder, and for the VQ-VAE
-log p(z*) - log p(x | z*) at the encoder's codes z* (the ELBO of a deterministic encoder:
log p(x) = log sum_z p(z) p(x|z) >= log p(z*) p(x|z*)), with p(z*) uniform here and the
Transformer prior's in ``vq-transformer``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import ConfigError, GenerativeModel, ModelSpec, adam, eval_mode, option_number
from ..nn.autoencoder import Decoder, Encoder, VectorQuantizer, check_side
from ..nn.likelihood import discretized_gaussian_log_prob, from_unit, nats_to_bpd, to_unit
from ..options import SamplerOptions, check_range

LOGVAR_RANGE = (-30.0, 20.0)  # the posterior's log-variance, clamped as latent diffusion does
STD_MOMENTUM = 0.99  # of the running standard deviation of the latents (latent_std)


@dataclass(frozen=True)
class Prior(SamplerOptions):
    """Latents from the training-time prior (N(0, I), or uniform codes), decoded to the mean."""

    name: ClassVar[str] = "default"


class Autoencoder(GenerativeModel):
    """What both autoencoders share: the conv encoder and decoder, the learned decoder scale,
    ``reconstruct``, the prior ``sample`` and the bound's decoder term."""

    family = "autoencoder"
    likelihood = "bound"
    color = "#17becf"
    samplers = (Prior,)

    def __init__(self, config, image_shape):
        super().__init__(config, image_shape)
        c = config
        for key in ("channels", "levels"):
            check_range(getattr(c, key), key, least=1)
        check_range(c.lr, "lr", above=0)
        self.latent_shape = (self.latent_channels(), *check_side(self.image_shape, c.levels,
                                                                  type(self).__name__)[1:])
        ch = self.image_shape[0]
        self.encoder = Encoder(ch, c.channels, c.levels, self.encoder_channels())
        self.decoder = Decoder(self.latent_channels(), c.channels, c.levels, ch)
        # log of the discretized Gaussian decoder's scale in [-1, 1] units (the bound's)
        self.log_sigma = nn.Parameter(torch.tensor(math.log(0.1)))

    def latent_channels(self) -> int:
        raise NotImplementedError

    def encoder_channels(self) -> int:
        return self.latent_channels()

    def configure_optimizers(self):
        return {"autoencoder": adam(self.parameters(), lr=self.config.lr)}

    def sigma_loss(self, mse: Tensor) -> Tensor:
        """The Gaussian NLL per element of the decoder scale given the (detached) mean
        squared error: its minimum is at sigma^2 = mse, and no gradient reaches the decoder."""
        return 0.5 * mse.detach() * torch.exp(-2 * self.log_sigma) + self.log_sigma

    def decoder_nll_nats(self, x_unit: Tensor, mean: Tensor) -> Tensor:
        """-log p(x | z) per image in nats: a discretized Gaussian around the decoder's
        ``mean`` with the learned scale, over the 256 bins of each subpixel."""
        log_scale = self.log_sigma.detach().clamp(min=-7.0).expand_as(mean)
        return -discretized_gaussian_log_prob(x_unit, mean.float(), log_scale).flatten(1).sum(1)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """uint8 images -> their uint8 reconstructions (encode, decode the mean)."""
        x = self.check_images(x)
        batch_size = option_number(batch_size, "batch_size", int)
        with eval_mode(self):
            out = [from_unit(self.decode(self.encode(x[i:i + batch_size])))
                   for i in range(0, x.shape[0], batch_size)]
        return torch.cat(out) if out else x.clone()

    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, batch_size: int = 500, **options):
        """n uint8 images decoded from latents of the training-time prior (``Prior``): what
        the autoencoder generates alone, before a second stage learns its latents."""
        self.parse_sampler(options, also=("batch_size",))
        n = option_number(n, "n", int)
        batch_size = option_number(batch_size, "batch_size", int)
        if n < 0 or batch_size < 1:
            raise ConfigError(f"need n >= 0 and batch_size >= 1, got {n=}, {batch_size=}")
        self.check_labels(labels, n)
        with eval_mode(self):
            gdev = generator.device if generator is not None else self.device
            out = [from_unit(self.decode(self.prior_latents(min(batch_size, n - i), generator,
                                                            gdev).to(self.device)))
                   for i in range(0, n, batch_size)]
        return torch.cat(out) if out else torch.empty(0, *self.image_shape, dtype=torch.uint8)


@dataclass
class KLAutoencoderConfig:
    """Widths and depth of the conv encoder/decoder, the latent and the KL weight."""

    channels: int = 16  # width of the first level (doubled per level, at most 4x)
    levels: int = 2  # the side is halved this many times: 28x28 -> 7x7
    latent_channels: int = 4
    kl_weight: float = 1e-6  # latent diffusion's: the KL only keeps the latents' scale sane
    lr: float = 1e-3


class KLAutoencoder(Autoencoder):
    """Conv encoder to N(mean, var) over a [latent_channels, H/4, W/4] latent, conv decoder;
    trained on summed squared error + kl_weight KL(q(z|x) || N(0, I))."""

    Config = KLAutoencoderConfig

    def __init__(self, config: KLAutoencoderConfig, image_shape):
        check_range(config.latent_channels, "latent_channels", least=1)
        check_range(config.kl_weight, "kl_weight", least=0)
        super().__init__(config, image_shape)
        # the running standard deviation of the encoder's means, which a latent model
        # divides by (Stable Diffusion's scale factor), kept as training goes
        self.register_buffer("latent_std", torch.ones(()))

    def latent_channels(self) -> int:
        return self.config.latent_channels

    def encoder_channels(self) -> int:
        return 2 * self.config.latent_channels  # mean and log-variance

    def posterior(self, x_unit: Tensor) -> tuple[Tensor, Tensor]:
        mean, logvar = self.encoder(x_unit).float().chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def encode(self, x: Tensor) -> Tensor:
        """uint8 (or [-1, 1] float) images -> the posterior means [N, latent_channels, h, w]."""
        return self.posterior(to_unit(x) if x.dtype == torch.uint8 else x)[0]

    def decode(self, z: Tensor) -> Tensor:
        """Latents -> images in [-1, 1] (the decoder's mean, unclamped)."""
        return self.decoder(z).float()

    def prior_latents(self, b: int, generator, device) -> Tensor:
        return torch.randn((b, *self.latent_shape), generator=generator, device=device)

    def ddp_modules(self):
        return {"model": self}

    def forward(self, x_unit: Tensor, noise: Tensor):
        mean, logvar = self.posterior(x_unit)
        z = mean + torch.exp(0.5 * logvar) * noise
        return self.decoder(z).float(), mean, logvar

    def train_step(self, x, optimizers):
        batch = self.check_batch(x)
        x0 = to_unit(batch.images)
        noise = self.batch_randn(x0.shape[0], *self.latent_shape)
        recon, mean, logvar = self.wrapped("model")(x0, noise)
        sq = (recon - x0).square()
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)
        n = x0.shape[0]
        loss = (sq.sum() + self.config.kl_weight * kl.sum()) / n
        mse = sq.mean()
        self.optimize(loss + self.sigma_loss(mse), optimizers["autoencoder"])
        with torch.no_grad():
            self.latent_std.lerp_(mean.std().to(self.latent_std), 1 - STD_MOMENTUM)
        return {"loss": loss.item(), "mse": mse.item(), "kl": (kl.sum() / n).item()}

    @torch.no_grad()
    def nll(self, x, *, generator=None, batch_size: int = 256, **opts) -> Tensor:
        """The ELBO in bits/dim, one z ~ q(z|x) per image: -log p(x|z) (the discretized
        Gaussian decoder) + KL(q(z|x) || N(0, I)); an unbiased estimate of the bound."""
        if opts:
            raise ConfigError(f"unknown nll option(s) {', '.join(opts)} for {self.name}; "
                              "valid: batch_size")
        x = self.check_images(x)
        out = []
        with eval_mode(self):
            for i in range(0, x.shape[0], batch_size):
                xu = to_unit(x[i:i + batch_size])
                mean, logvar = self.posterior(xu)
                gdev = generator.device if generator is not None else self.device
                eps = torch.randn(mean.shape, generator=generator, device=gdev).to(mean.device)
                z = mean + torch.exp(0.5 * logvar) * eps
                kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)
                out.append(nats_to_bpd(self.decoder_nll_nats(xu, self.decode(z)) + kl,
                                       self.dims))
        return torch.cat(out) if out else torch.empty(0, device=self.device)

    def describe_nll(self, **options) -> str:
        return "bound (ELBO, one z per image, N(0, I) prior)"


@dataclass
class VQVAEConfig:
    """The conv encoder/decoder, the codebook and its EMA updates."""

    channels: int = 16  # width of the first level (doubled per level, at most 4x)
    levels: int = 2  # code grid at 1/4 of the side: 28x28 -> 7x7 = 49 codes
    codes: int = 256  # codebook size (the prior's vocabulary)
    code_dim: int = 16
    beta: float = 0.25  # commitment cost
    decay: float = 0.99  # of the codebook's moving averages
    restart_below: float = 0.03  # a code used less (EMA count per batch) is restarted
    lr: float = 1e-3


class VQVAE(Autoencoder):
    """Conv encoder, nearest-code quantization (EMA codebook), conv decoder."""

    Config = VQVAEConfig

    def __init__(self, config: VQVAEConfig, image_shape):
        check_range(config.codes, "codes", least=2)
        check_range(config.code_dim, "code_dim", least=1)
        check_range(config.beta, "beta", least=0)
        check_range(config.decay, "decay", least=0, below=1)
        check_range(config.restart_below, "restart_below", least=0)
        super().__init__(config, image_shape)
        c = config
        self.quantizer = VectorQuantizer(c.codes, c.code_dim, c.decay,
                                         restart_below=c.restart_below)

    def latent_channels(self) -> int:
        return self.config.code_dim

    @property
    def code_shape(self) -> tuple[int, int]:
        return self.latent_shape[1:]

    def encode(self, x: Tensor) -> Tensor:
        """uint8 images -> their codes, int64 [N, h, w]."""
        return self.quantizer.indices(self.encoder(to_unit(self.check_images(x))).float())

    def decode(self, codes: Tensor) -> Tensor:
        """Codes [N, h, w] -> images in [-1, 1] (the decoder's mean, unclamped)."""
        return self.decoder(self.quantizer.lookup(codes)).float()

    def prior_latents(self, b: int, generator, device) -> Tensor:
        return torch.randint(0, self.config.codes, (b, *self.code_shape), generator=generator,
                             device=device)

    def forward(self, x_unit: Tensor):
        z = self.encoder(x_unit).float()
        q, idx = self.quantizer(z)
        return self.decoder(q).float(), z, idx

    def train_step(self, x, optimizers):
        batch = self.check_batch(x)
        x0 = to_unit(batch.images)
        recon, z, idx = self.wrapped("model")(x0)
        mse = F.mse_loss(recon, x0)
        commit = F.mse_loss(z, self.quantizer.lookup(idx).detach())
        loss = mse + self.config.beta * commit
        self.optimize(loss + self.sigma_loss(mse), optimizers["autoencoder"])
        pick = self.batch_randint(2 ** 62, 1)  # seeds the restarts from the batch noise
        gen = torch.Generator(device=z.device).manual_seed(int(pick[0]))
        restarted = self.quantizer.update(z.detach(), idx, gen)
        usage = self.usage(idx)
        return {"loss": loss.item(), "mse": mse.item(), "commit": commit.item(),
                "perplexity": usage["perplexity"], "restarts": float(restarted)}

    def usage(self, codes: Tensor) -> dict:
        """Codebook use over ``codes``: perplexity (exp of the entropy of the code
        frequencies: ``codes`` when all are used equally) and the codes never used."""
        counts = torch.bincount(codes.reshape(-1), minlength=self.config.codes).double()
        p = counts / counts.sum().clamp(min=1)
        entropy = -(p * p.clamp(min=1e-30).log()).sum()
        return {"perplexity": float(entropy.exp()), "dead_codes": int((counts == 0).sum()),
                "codes": self.config.codes}

    @torch.no_grad()
    def codebook_usage(self, x: Tensor, batch_size: int = 256) -> dict:
        """``usage`` of the codes of the uint8 images ``x`` (e.g. the test split)."""
        with eval_mode(self):
            codes = torch.cat([self.encode(x[i:i + batch_size])
                               for i in range(0, x.shape[0], batch_size)])
        return self.usage(codes)

    def prior_nll_nats(self, codes: Tensor) -> Tensor:
        """-log p(codes) per image under the uniform prior."""
        return torch.full((codes.shape[0],), codes[0].numel() * math.log(self.config.codes),
                          device=codes.device)

    @torch.no_grad()
    def nll(self, x, *, batch_size: int = 256, **opts) -> Tensor:
        """-log p(z*) - log p(x | z*) in bits/dim at the encoder's codes z*, the uniform
        prior's: a bound (the ELBO of a deterministic encoder), computed exactly."""
        if opts:
            raise ConfigError(f"unknown nll option(s) {', '.join(opts)} for {self.name}; "
                              "valid: batch_size")
        return self.codes_bound(x, self.prior_nll_nats, batch_size)

    def codes_bound(self, x: Tensor, prior_nll, batch_size: int = 256) -> Tensor:
        """The bound in bits/dim with the prior term ``prior_nll(codes)`` (nats per image)."""
        x = self.check_images(x)
        out = []
        with eval_mode(self):
            for i in range(0, x.shape[0], batch_size):
                xb = x[i:i + batch_size]
                codes = self.encode(xb)
                nats = prior_nll(codes) + self.decoder_nll_nats(to_unit(xb), self.decode(codes))
                out.append(nats_to_bpd(nats, self.dims))
        return torch.cat(out) if out else torch.empty(0, device=self.device)

    def describe_nll(self, **options) -> str:
        return "bound (-log p(z*) - log p(x|z*) at the encoder's codes, uniform prior)"


MODELS = {
    "kl-autoencoder": ModelSpec(
        KLAutoencoder,
        "KL-regularised conv autoencoder (latent diffusion's first stage), 4 latent channels "
        "at 1/4 of the side; train latent-diffusion over it",
    ),
    "vq-vae": ModelSpec(
        VQVAE,
        "VQ-VAE (van den Oord et al.), 256 codes on a grid at 1/4 of the side, EMA codebook "
        "with dead-code restarts; train vq-transformer over it",
    ),
}

"""The GAN family: the classic MLP GAN (Goodfellow et al.) and DCGAN (Radford et al.),
trained with the non-saturating, hinge or WGAN-GP loss.

The model owns two Adam optimizers ({"g", "d"}); one ``train_step`` does the
discriminator update(s) and one generator update. GANs define no likelihood, so ``nll``
raises ``LikelihoodUnavailable``. The Trainer's EMA averages the generator only
(``ema_module``). A generator with BatchNorm samples in eval mode, and ``save`` (the
Trainer's model.pt) stores BatchNorm statistics re-estimated for the weights it stores
("standing statistics", as in BigGAN), so EMA weights never meet running statistics of
other weights.

Class-conditional (``conditional=True``): both generators concatenate a class
embedding to z, and the DCGAN generator's BatchNorms are conditional BatchNorms
(class-dependent gain and bias, initialised to 1 and 0; with these alone its images hardly
depended on the class after 600 MNIST steps, while D's scores did). The discriminator is a
projection discriminator (Miyato & Koyama 2018): D(x, y) = psi(phi(x)) + <embed(y), phi(x)>,
phi(x) the flattened last feature map for the DCGAN. Fakes in a train step take the
real batch's labels; every loss (the gradient penalty too) scores with those labels. Left
to the adversarial loss alone the conditional generator ignores z (one image per class), so
its loss adds a mode-seeking term (Mao et al. 2019, ``diversity``): the fakes come in pairs
of one class, and G pays ``diversity / ratio`` where ratio is the pairs' mean image
distance over their latents' (the fakes then take the first half's labels twice). An
unconditional model builds exactly the networks it always did (same state_dict, samples).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from ..core import (
    ConfigError,
    GenerativeModel,
    LikelihoodUnavailable,
    ModelSpec,
    adam,
    atomic_write,
    eval_mode,
)
from ..nn.likelihood import from_unit, to_unit
from ..options import SamplerOptions, check_range, option_number

LOSSES = ("ns", "hinge", "wgan-gp")
ARCHS = ("mlp", "dcgan")
D_NORMS = ("auto", "batch", "layer", "none")
#: DCGAN: the generator's first feature map has a side in this range, doubled per stage
DCGAN_START = (4, 8)
#: a conditional GAN's default weight of the mode-seeking term
DIVERSITY = 0.1
#: latents used to re-estimate the generator's BatchNorm statistics when saving
BN_CALIBRATION_SAMPLES = 2048
BN_CALIBRATION_BATCH = 128


@dataclass(frozen=True)
class Latents(SamplerOptions):
    """G(z) for z ~ N(0, I): the GAN's one sampler, without options."""

    name: ClassVar[str] = "default"


@dataclass
class GANConfig:
    """Options of both GANs; ``arch`` picks the networks, ``loss`` the objective."""

    arch: Literal["mlp", "dcgan"] = "mlp"
    latent_dim: int = 100
    g_hidden: tuple[int, ...] = (256, 512, 1024)  # mlp: generator widths
    d_hidden: tuple[int, ...] = (1024, 512, 256)  # mlp: discriminator widths
    channels: int = 64  # dcgan: channels at full resolution (ngf = ndf), doubled per stage
    loss: Literal["ns", "hinge", "wgan-gp"] = "ns"
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    n_critic: int | None = None  # D updates per train_step; None: 5 for wgan-gp, else 1
    gp_weight: float = 10.0  # wgan-gp: weight of the gradient penalty
    spectral_norm: bool = False  # spectral normalization of every D layer
    # dcgan D normalization; auto: batch (Radford), none with spectral_norm, layer for wgan-gp
    d_norm: Literal["auto", "batch", "layer", "none"] = "auto"
    conditional: bool = False  # class-conditional G and (projection) D; sample(labels=...)
    # weight of the mode-seeking term (MSGAN) in G's loss; None: DIVERSITY for a conditional
    # model (whose G otherwise ignores z: one image per class), 0 (none) for an unconditional
    diversity: float | None = None
    num_classes: int | None = None  # conditional: the classes (create() reads the dataset's)


# -- losses --------------------------------------------------------------------------------


def discriminator_loss(kind: str, real: Tensor, fake: Tensor) -> Tensor:
    """The discriminator's loss from its raw scores (logits) of real and fake images.

    ns: -log sigmoid(r) - log(1 - sigmoid(f)); hinge: relu(1 - r) + relu(1 + f);
    wgan-gp: f - r (the gradient penalty is added separately, see ``gradient_penalty``).
    """
    real, fake = real.float(), fake.float()
    if kind == "ns":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if kind == "wgan-gp":
        return fake.mean() - real.mean()
    raise ConfigError(f"unknown GAN loss {kind!r}; valid: {', '.join(LOSSES)}")


def generator_loss(kind: str, fake: Tensor) -> Tensor:
    """The generator's loss from the discriminator's scores of its images.

    ns: -log sigmoid(f) (non-saturating); hinge and wgan-gp: -f.
    """
    fake = fake.float()
    if kind == "ns":
        return F.softplus(-fake).mean()
    if kind in ("hinge", "wgan-gp"):
        return -fake.mean()
    raise ConfigError(f"unknown GAN loss {kind!r}; valid: {', '.join(LOSSES)}")


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    weight: float = 10.0,
    generator: torch.Generator | None = None,
    mix: Tensor | None = None,
) -> Tensor:
    """WGAN-GP: ``weight * E[(||grad critic(x_hat)|| - 1)^2]`` at random interpolates
    ``x_hat = e * real + (1 - e) * fake``, e ~ U[0, 1] per image (Gulrajani et al.);
    ``mix`` gives e (one value per image) instead of drawing it from ``generator``."""
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    if mix is None:
        gdev = generator.device if generator is not None else real.device
        mix = torch.rand(shape, generator=generator, device=gdev)
    e = mix.reshape(shape).to(real.device, real.dtype)
    x_hat = (e * real.detach() + (1.0 - e) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).float().sum(), x_hat, create_graph=True)
    norm = (grad.float().flatten(1).pow(2).sum(1) + 1e-12).sqrt()
    return weight * (norm - 1.0).pow(2).mean()


def _paired_labels(y: Tensor | None) -> Tensor | None:
    """The fakes' labels for the mode-seeking term: image i and i + b//2 share a class (the
    first half's labels twice; an odd batch's last image keeps its own)."""
    if y is None:
        return None
    h = y.shape[0] // 2
    return torch.cat([y[:h], y[:h], y[2 * h:]])


def mode_seeking_ratio(images: Tensor, z: Tensor) -> Tensor:
    """Mao et al. 2019 (MSGAN): mean |G(z1) - G(z2)| / mean |z1 - z2| over the pairs
    (i, i + b//2) of a batch; the generator's loss adds ``diversity / ratio``, so images that
    do not move with z (one image per class) cost it."""
    h = images.shape[0] // 2
    di = (images[:h] - images[h:2 * h]).float().abs().mean()
    dz = (z[:h] - z[h:2 * h]).float().abs().mean()
    return di / dz


# -- networks ------------------------------------------------------------------------------


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without its own affine, then a gain and bias per class (embeddings
    initialised to 1 and 0): ``gain[y] * bn(x) + bias[y]`` (de Vries et al., BigGAN)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.gain(y)[:, :, None, None] * self.bn(x) + self.bias(y)[:, :, None, None]


class ConditionalGenerator(nn.Module):
    """G(z, y): ``net`` with the class embedding concatenated to z (``embed``, MLP) and/or
    the class passed to its conditional BatchNorms (DCGAN)."""

    def __init__(self, net: nn.Sequential, embed: nn.Embedding | None = None):
        super().__init__()
        self.embed = embed
        self.net = net

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        h = z if self.embed is None else torch.cat([z, self.embed(y).to(z.dtype)], 1)
        for m in self.net:
            h = m(h, y) if isinstance(m, ConditionalBatchNorm2d) else m(h)
        return h


class ProjectionDiscriminator(nn.Module):
    """D(x, y) = psi(phi(x)) + <embed(y), phi(x)> (Miyato & Koyama 2018): ``body`` is phi,
    ``head`` the unconditional score psi (the plain D's last layer). The DCGAN's psi is a
    convolution over the whole last feature map, a linear map of the flattened map, so phi
    there is the flattened map and embed(y) has one weight per channel and position (summed
    over positions instead, as in the paper's ResNet D, class accuracy fell from 0.93 to
    0.58 at the CI budget, and the one-image-per-class collapse stayed)."""

    def __init__(self, net: nn.Sequential, num_classes: int):
        super().__init__()
        *body, head, _flatten = net
        self.body = nn.Sequential(*body)
        self.head = head
        width = head.in_features if isinstance(head, nn.Linear) else (
            head.in_channels * math.prod(head.kernel_size))
        self.embed = nn.Embedding(num_classes, width)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.body(x)
        out = self.head(h).flatten()
        phi = h.flatten(1)
        return out + (self.embed(y).to(phi.dtype) * phi).sum(1)


def _mlp_generator(cfg: GANConfig, image_shape: tuple[int, int, int]) -> nn.Module:
    layers: list[nn.Module] = []
    prev = cfg.latent_dim * (2 if cfg.conditional else 1)
    for width in cfg.g_hidden:
        layers += [nn.Linear(prev, width), nn.LeakyReLU(0.2)]
        prev = width
    layers += [nn.Linear(prev, math.prod(image_shape)), nn.Tanh(), nn.Unflatten(1, image_shape)]
    if cfg.conditional:
        return ConditionalGenerator(nn.Sequential(*layers),
                                    nn.Embedding(cfg.num_classes, cfg.latent_dim))
    return nn.Sequential(*layers)


def _mlp_discriminator(cfg: GANConfig, image_shape: tuple[int, int, int]) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    prev = math.prod(image_shape)
    for width in cfg.d_hidden:
        layers += [nn.Linear(prev, width), nn.LeakyReLU(0.2)]
        prev = width
    layers += [nn.Linear(prev, 1), nn.Flatten(0)]
    if cfg.conditional:
        return ProjectionDiscriminator(nn.Sequential(*layers), cfg.num_classes)
    return nn.Sequential(*layers)


def dcgan_sides(limit: int = 128) -> list[int]:
    """The image sides (up to ``limit``) a DCGAN handles: s * 2^k, 4 <= s <= 8, k >= 1."""
    lo, hi = DCGAN_START
    return sorted({s * 2**k for s in range(lo, hi + 1) for k in range(1, 8) if s * 2**k <= limit})


def _dcgan_plan(image_shape: tuple[int, int, int]) -> tuple[tuple[int, int], int]:
    """((first feature-map height, width), number of stride-2 stages) for an image size:
    halve while both sides are even and stay >= 4 (28 -> 7 in 2 stages, 32 -> 4 in 3,
    64 -> 4 in 4, 8 -> 4 in 1)."""
    c, h, w = image_shape
    sh, sw, stages = h, w, 0
    lo, hi = DCGAN_START
    while sh % 2 == 0 and sw % 2 == 0 and sh // 2 >= lo and sw // 2 >= lo:
        sh, sw, stages = sh // 2, sw // 2, stages + 1
    if stages < 1 or sh > hi or sw > hi:
        sides = ", ".join(map(str, dcgan_sides()))
        raise ConfigError(
            f"gan-dcgan handles images whose height and width are s * 2^k with 4 <= s <= 8 "
            f"and k >= 1 (the same k for both): sides {sides}, ... (e.g. 28x28x1 MNIST, "
            f"32x32x3 CIFAR-10, any channel count); got {h}x{w}x{c}. Resize the images "
            f"(--set image_size=32) or use gan-mlp, which takes any size"
        )
    return (sh, sw), stages


def _dcgan_generator(cfg: GANConfig, image_shape: tuple[int, int, int]) -> nn.Module:
    """z [N, latent, 1, 1] -> transposed convs (BatchNorm, ReLU) -> tanh image."""
    c = image_shape[0]
    start, stages = _dcgan_plan(image_shape)
    ch = cfg.channels * 2 ** (stages - 1)

    def norm(width: int) -> nn.Module:
        if cfg.conditional:
            return ConditionalBatchNorm2d(width, cfg.num_classes)
        return nn.BatchNorm2d(width)

    z_in = cfg.latent_dim * (2 if cfg.conditional else 1)  # conditional: [z, embed(y)]
    layers: list[nn.Module] = [
        nn.Unflatten(1, (z_in, 1, 1)),
        nn.ConvTranspose2d(z_in, ch, start, 1, 0, bias=False),
        norm(ch), nn.ReLU(),
    ]
    for _ in range(stages - 1):
        layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False),
                   norm(ch // 2), nn.ReLU()]
        ch //= 2
    layers += [nn.ConvTranspose2d(ch, c, 4, 2, 1), nn.Tanh()]
    if cfg.conditional:
        return ConditionalGenerator(nn.Sequential(*layers),
                                    nn.Embedding(cfg.num_classes, cfg.latent_dim))
    return nn.Sequential(*layers)


def _dcgan_discriminator(cfg: GANConfig, image_shape: tuple[int, int, int], norm: str):
    """Strided convs with LeakyReLU(0.2); no normalization after the first layer."""
    c = image_shape[0]
    start, stages = _dcgan_plan(image_shape)
    ch = cfg.channels
    layers: list[nn.Module] = [nn.Conv2d(c, ch, 4, 2, 1), nn.LeakyReLU(0.2)]
    for _ in range(stages - 1):
        layers.append(nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=norm == "none"))
        if norm == "batch":
            layers.append(nn.BatchNorm2d(ch * 2))
        elif norm == "layer":
            layers.append(nn.GroupNorm(1, ch * 2))
        layers.append(nn.LeakyReLU(0.2))
        ch *= 2
    layers += [nn.Conv2d(ch, 1, start, 1, 0), nn.Flatten(0)]
    if cfg.conditional:
        return ProjectionDiscriminator(nn.Sequential(*layers), cfg.num_classes)
    return nn.Sequential(*layers)


@torch.no_grad()
def _dcgan_init(module: nn.Module) -> None:
    """Radford et al.: conv weights N(0, 0.02), BatchNorm scales N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


# -- the model -----------------------------------------------------------------------------


class GAN(GenerativeModel):
    family = "gan"
    likelihood = None
    Config = GANConfig
    color = "#d62728"
    samplers = (Latents,)

    def __init__(self, config: GANConfig, image_shape):
        super().__init__(config, image_shape)
        self._validate(config)
        self.n_critic = config.n_critic or (5 if config.loss == "wgan-gp" else 1)
        self.diversity = config.diversity if config.diversity is not None else (
            DIVERSITY if config.conditional else 0.0)
        if config.arch == "mlp":
            self.gen = _mlp_generator(config, self.image_shape)
            self.disc = _mlp_discriminator(config, self.image_shape)
        else:
            norm = config.d_norm
            if norm == "auto":
                norm = "layer" if config.loss == "wgan-gp" else (
                    "none" if config.spectral_norm else "batch")
            self.gen = _dcgan_generator(config, self.image_shape)
            self.disc = _dcgan_discriminator(config, self.image_shape, norm)
            _dcgan_init(self.gen)
            _dcgan_init(self.disc)
            # channels_last: a CPU train step is ~1.2x faster (interleaved A/B, 1 thread)
            self.gen.to(memory_format=torch.channels_last)
            self.disc.to(memory_format=torch.channels_last)
        if config.spectral_norm:
            for m in self.disc.modules():
                if isinstance(m, nn.Linear | nn.Conv2d | nn.Embedding):
                    _spectral_norm(m)

    @staticmethod
    def _validate(c: GANConfig) -> None:
        if c.arch not in ARCHS:
            raise ConfigError(f"unknown GAN arch {c.arch!r}; valid: {', '.join(ARCHS)}")
        if c.loss not in LOSSES:
            raise ConfigError(f"unknown GAN loss {c.loss!r}; valid: {', '.join(LOSSES)}")
        if c.d_norm not in D_NORMS:
            raise ConfigError(f"unknown d_norm {c.d_norm!r}; valid: {', '.join(D_NORMS)}")
        if c.loss == "wgan-gp" and c.d_norm == "batch":
            raise ConfigError(
                "loss wgan-gp cannot use d_norm=batch: the gradient penalty is per image and "
                "BatchNorm mixes the images of a batch; use d_norm=layer, none or auto"
            )
        check_range(c.latent_dim, "latent_dim", least=1)
        check_range(c.channels, "channels", least=1)
        if c.arch == "dcgan" and c.channels % 2:
            raise ConfigError(f"dcgan channels must be even, got {c.channels}")
        if not c.g_hidden or not c.d_hidden or min(*c.g_hidden, *c.d_hidden) < 1:
            raise ConfigError("g_hidden and d_hidden must be non-empty lists of widths >= 1")
        if c.n_critic is not None and c.n_critic < 1:
            raise ConfigError(f"n_critic must be >= 1 (or None for the loss's default), "
                              f"got {c.n_critic}")
        if not c.lr > 0 or len(c.betas) != 2 or not all(0.0 <= b < 1.0 for b in c.betas):
            raise ConfigError(f"need lr > 0 and two betas in [0, 1), got lr={c.lr}, "
                              f"betas={c.betas}")
        check_range(c.lr, "lr", above=0)
        check_range(c.gp_weight, "gp_weight", least=0)
        if c.diversity is not None:
            check_range(c.diversity, "diversity", least=0)
        if c.conditional:
            if c.num_classes is None:
                raise ConfigError("a conditional GAN needs num_classes (create() reads it from "
                                  "dataset=...; or give num_classes=K)")
            check_range(c.num_classes, "num_classes", least=2)

    # -- pieces ------------------------------------------------------------------------------
    def _latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        gdev = generator.device if generator is not None else self.device
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=gdev)
        return z.to(self.device)

    def _labels(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n classes drawn uniformly from ``generator``, on the model's device."""
        gdev = generator.device if generator is not None else self.device
        y = torch.randint(self.num_classes, (n,), generator=generator, device=gdev)
        return y.to(self.device)

    def _score(self, scores: Tensor) -> Tensor:
        """What losses.csv shows of D's scores: mean probability for ns, mean raw score else."""
        s = scores.detach().float()
        return (torch.sigmoid(s) if self.config.loss == "ns" else s).mean()

    # -- interface ---------------------------------------------------------------------------
    def configure_optimizers(self):
        c = self.config
        betas = tuple(c.betas)
        return {
            "g": adam(self.gen.parameters(), lr=c.lr, betas=betas),
            "d": adam(self.disc.parameters(), lr=c.lr, betas=betas),
        }

    def ema_module(self) -> nn.Module:
        return self.gen

    def ddp_modules(self):
        """Generator and discriminator, each its own DDP module (each has its optimizer)."""
        return {"gen": self.gen, "disc": self.disc}

    def train_step(self, x, optimizers):
        """n_critic D updates, then one G update.

        With n_critic > 1 (wgan-gp) the batch is split into n_critic equal chunks, one per
        critic update, so every real image is seen once and a train_step costs about one
        full-batch D update; a batch smaller than n_critic is reused whole. The G update
        draws a full batch of latents (with n_critic = 1 it reuses the D step's fakes).

        Under DDP, G and D are called through their wrappers where their gradients are
        needed; the G update scores its fakes with the bare D (frozen: no D gradients to
        average). Latents and interpolation weights come from ``batch_randn``/``batch_rand``.
        """
        batch = self.check_batch(x)
        real_all = to_unit(batch.images)
        b = real_all.shape[0]
        loss_kind = self.config.loss
        k = self.n_critic
        split = k > 1 and b >= k
        chunks = list(real_all.tensor_split(k)) if split else [real_all] * k
        # conditional: the fakes of a step take the labels of its real images
        y_all = batch.labels if self.conditional else None
        y_chunks = (list(y_all.tensor_split(k)) if split else [y_all] * k) if (
            self.conditional) else [None] * k
        gen, disc = self.wrapped("gen"), self.wrapped("disc")

        def G(module, z, y):
            return module(z) if y is None else module(z, y)

        def D(module, img, y):
            return module(img) if y is None else module(img, y)

        latent = self.config.latent_dim
        y_fake = _paired_labels(y_all) if self.diversity else y_all
        sums: dict[str, Tensor] = {}
        fake = z = None
        for real, y in zip(chunks, y_chunks, strict=True):
            if k == 1:
                z = self.batch_randn(b, latent)
                fake = G(gen, z, y_fake)
                fake_d = fake.detach()
                y_d = y_fake
            else:
                with torch.no_grad():
                    fake_d = G(self.gen, self.batch_randn(real.shape[0], latent), y)
                y_d = y
            r, f = D(disc, real, y), D(disc, fake_d, y_d)
            loss_d = discriminator_loss(loss_kind, r, f)
            if loss_kind == "wgan-gp":
                gp = gradient_penalty(lambda img, y=y: D(disc, img, y), real, fake_d,
                                      self.config.gp_weight, mix=self.batch_rand(real.shape[0]))
                sums["gp"] = sums.get("gp", 0.0) + gp.detach()
                loss_d = loss_d + gp
            self.optimize(loss_d, optimizers["d"])
            for key, v in (("d_real", self._score(r)), ("d_fake", self._score(f)),
                           ("loss_d", loss_d.detach())):
                sums[key] = sums.get(key, 0.0) + v
        if fake is None:
            z = self.batch_randn(b, latent)
            fake = G(gen, z, y_fake)
        self.disc.requires_grad_(False)
        try:
            loss_g = generator_loss(loss_kind, D(self.disc, fake, y_fake))
            if self.diversity and b > 1:
                ms = mode_seeking_ratio(fake, z)
                sums["mode_seeking"] = ms.detach()
                loss_g = loss_g + self.diversity / (ms + 1e-5)
            self.optimize(loss_g, optimizers["g"])
        finally:
            self.disc.requires_grad_(True)
        order = ("d_real", "d_fake", "loss_d", "gp")
        out = {key: (sums[key] / k).item() for key in order if key in sums}
        if "mode_seeking" in sums:
            out["mode_seeking"] = sums["mode_seeking"].item()
        out["loss_g"] = loss_g.item()
        return out

    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, batch_size: int = 1000,
               **options) -> Tensor:
        """n uint8 images G(z), z ~ N(0, I) drawn at once from ``generator``, decoded
        ``batch_size`` at a time in eval mode (BatchNorm uses its stored statistics), so the
        images do not depend on ``batch_size``.

        A conditional GAN draws image i of class ``labels[i]`` (``labels``: one int for all,
        or n ints in 0..num_classes-1); without ``labels`` it draws the classes uniformly at
        random from ``generator`` (after z). A GAN has no ``guidance`` option: its one
        sampler takes none, and passing one is an error."""
        if "guidance" in options:
            raise ConfigError(
                f"{self.name} takes no guidance option: classifier-free guidance is a "
                "diffusion sampler's; a conditional GAN follows labels=... by itself")
        self.parse_sampler(options, also=("batch_size",))
        n = option_number(n, "n", int)
        batch_size = option_number(batch_size, "batch_size", int)
        if n < 0:
            raise ConfigError(f"n must be an integer >= 0, got {n}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size}")
        y = self.check_labels(labels, n)
        z = self._latents(n, generator)
        if self.conditional and y is None:
            y = self._labels(n, generator)
        with eval_mode(self.gen):
            if y is None:
                out = [from_unit(self.gen(z[i:i + batch_size])) for i in range(0, n, batch_size)]
            else:
                out = [from_unit(self.gen(z[i:i + batch_size], y[i:i + batch_size]))
                       for i in range(0, n, batch_size)]
        return torch.cat(out) if out else torch.empty(0, *self.image_shape, dtype=torch.uint8)

    def nll(self, x, **options) -> Tensor:
        raise LikelihoodUnavailable(
            f"{self.name} is a GAN, and GANs define no likelihood: there is no NLL "
            "(bits/dim) to compute; compare GANs by sample metrics (FID, KID, precision/recall)"
        )

    # -- BatchNorm statistics ----------------------------------------------------------------
    def recalibrate_batchnorm(
        self, samples: int = BN_CALIBRATION_SAMPLES, batch_size: int = BN_CALIBRATION_BATCH,
        seed: int = 0,
    ) -> None:
        """Re-estimate the generator's BatchNorm running statistics for its current weights;
        call it after loading other weights (e.g. an EMA) into a live model."""
        standing_batchnorm_stats(self.gen, self.config.latent_dim, samples, batch_size, seed,
                                 num_classes=self.num_classes)

    def save(self, path: str | os.PathLike) -> None:
        """Write the model with generator BatchNorm statistics re-estimated for the saved
        weights: the Trainer saves model.pt with the EMA weights swapped in, while the
        running statistics it copied belong to the live weights. The live model is kept as
        is, and so is the Trainer's resume checkpoint (``checkpoint_dict``)."""
        ckpt = self.checkpoint_dict()
        if _batchnorms(self.gen):
            twin = copy.deepcopy(self.gen)
            for m in twin.modules():  # the Trainer's --compile sets a compiled forward bound
                m.__dict__.pop("forward", None)  # to the original: the copy would run that
            standing_batchnorm_stats(twin, self.config.latent_dim, num_classes=self.num_classes)
            ckpt["state_dict"].update(
                {f"gen.{k}": v.detach().cpu() for k, v in twin.named_buffers()}
            )
        atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def _batchnorms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def standing_batchnorm_stats(
    gen: nn.Module, latent_dim: int, samples: int = BN_CALIBRATION_SAMPLES,
    batch_size: int = BN_CALIBRATION_BATCH, seed: int = 0, num_classes: int | None = None,
) -> None:
    """Set every BatchNorm's running statistics of ``gen`` to the average batch statistics
    over ``samples`` latents (fixed seed, training-size batches): what eval mode should use
    for these weights. A conditional generator (``num_classes``) gets classes drawn
    uniformly with each batch of latents."""
    bns = _batchnorms(gen)
    if not bns:
        return
    device = next(gen.parameters()).device
    momenta = [bn.momentum for bn in bns]
    was_training = gen.training
    g = torch.Generator(device=device).manual_seed(seed)
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        gen.train()
        for i in range(0, samples, batch_size):
            b = min(batch_size, samples - i)
            z = torch.randn(b, latent_dim, generator=g, device=device)
            if num_classes is None:
                gen(z)
            else:
                gen(z, torch.randint(num_classes, (b,), generator=g, device=device))
    finally:
        for bn, m in zip(bns, momenta, strict=True):
            bn.momentum = m
        gen.train(was_training)


MODELS = {
    "gan-mlp": ModelSpec(
        GAN,
        "classic MLP GAN (latent 100, G 256-512-1024, D 1024-512-256, LeakyReLU), any size",
        defaults={"arch": "mlp"},
    ),
    "gan-dcgan": ModelSpec(
        GAN,
        "DCGAN of Radford et al., stages from the size (8, 16, 28, 32, 64, ...; loss "
        "ns|hinge|wgan-gp)",
        defaults={"arch": "dcgan"},
    ),
}

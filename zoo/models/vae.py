"""The VAE family (Kingma & Welling): Gaussian encoder, standard normal prior, and a
decoder likelihood of 8-bit data (discretized logistic) or of binarized data (Bernoulli).

Training maximises the reparameterized ELBO; ``nll`` is the IWAE bound with k importance
samples (k=1 is the ELBO), in bits/dim, with the log-mean-exp taken in float64.

Class-conditional (``conditional=True``): a conditional VAE (Sohn et al. 2015),
the one-hot label concatenated to the input of the encoder's first dense layer and of every
decoder layer, p(z) = N(0, I) for every class. Trained on the plain ELBO, the latent learns
the class before the decoder learns to read the label (decoding a test digit's posterior
mean with another label still draws the digit), so prior samples take a random class; the
KL term's weight therefore starts at ``KL_START`` and falls to 1 (``kl_start``,
``kl_anneal_steps``): a costly latent leaves the class to the free label.
``sample(n, labels=...)`` decodes for the given classes (uniform random classes without
them); ``nll(x, labels=y)`` bounds -log p(x|y), and ``nll(x)`` on a conditional model
bounds -log p(x) of the model's uniform class prior, p(x) = mean_y p(x|y), by importance
sampling over the pairs (y, z) with proposal uniform(y) q(z|x, y): k samples of z per
class, one log-mean-exp over all K*k weights (a valid IWAE bound on log p(x), K times the
cost). An unconditional model builds exactly the networks it always did.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from ..core import ConfigError, GenerativeModel, ModelSpec, adam, eval_mode
from ..limits import check_memory
from ..nn.likelihood import (
    bernoulli_log_prob,
    check_samples,
    discretized_logistic_log_prob,
    from_unit,
    nats_to_bpd,
    to_unit,
)
from ..options import SamplerOptions, check_range, option_number

LIKELIHOODS = ("discretized-logistic", "bernoulli")
LOG_SCALE_MIN = -7.0
LOG_2PI = math.log(2 * math.pi)
#: a conditional VAE's KL weight at step 0 (annealed to 1)
KL_START = 30.0


@dataclass(frozen=True)
class Prior(SamplerOptions):
    """z ~ N(0, I), then the decoder's mean (``decode="mean"``) or a draw from p(x|z)."""

    name: ClassVar[str] = "default"

    decode: Literal["mean", "sample"] = "mean"


@dataclass
class VAEConfig:
    arch: Literal["mlp", "conv"] = "mlp"
    latent_dim: int = 20
    hidden: int = 400  # mlp: width of the one hidden layer of encoder and decoder
    # conv: channels of the stride-2 stages; None: (32, 64), or (32,) for a size that
    # can be halved only once (sides 2 mod 4, e.g. 30)
    channels: tuple[int, ...] | None = None
    conv_hidden: int = 256  # conv: width of the dense layer between conv stack and latent
    likelihood: Literal["discretized-logistic", "bernoulli"] = "discretized-logistic"
    # discretized-logistic: the logistic's scale is an output of the decoder per image and
    # pixel ("decoder"), or one learned parameter per pixel shared by all images ("learned")
    pixel_scale: Literal["decoder", "learned"] = "decoder"
    lr: float = 1e-3
    nll_samples: int = 100  # k of the IWAE bound used by nll()
    binarize_threshold: int = 128  # bernoulli: x >= threshold is a 1
    conditional: bool = False  # class-conditional VAE: the one-hot label into encoder/decoder
    num_classes: int | None = None  # conditional: the classes (create() reads the dataset's)
    # the KL term's weight starts at kl_start and moves linearly to 1 over kl_anneal_steps
    # (0: the ELBO from the first step); None: 1 for an unconditional model, KL_START for a
    # conditional one (a latent kept small at first leaves the class to the label)
    kl_start: float | None = None
    kl_anneal_steps: int = 1432  # vae-conv's steps at the CI budget (6e12 FLOPs, batch 128)


def gaussian_kl_standard(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over the last dim, in nats."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def gaussian_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, exp(logvar)) summed over the last dim."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


def _auto_stages(h: int, w: int) -> tuple[int, ...]:
    """Stage widths for vae-conv: (32, 64) when the size halves twice, (32,) when once."""
    if h % 2 or w % 2:
        raise ConfigError(
            f"vae-conv halves the image at least once, so it needs an even height and width "
            f"(e.g. 8, 10, 14, 16, 28, 30, 32, 64); got {h}x{w}. Resize the images "
            "(--set image_size=28) or use vae-mlp, which takes any size"
        )
    return (32, 64) if h % 4 == 0 and w % 4 == 0 else (32,)


class VAE(GenerativeModel):
    family = "vae"
    likelihood = "bound"
    color = "#1f77b4"
    Config = VAEConfig
    samplers = (Prior,)

    def __init__(self, config: VAEConfig, image_shape):
        super().__init__(config, image_shape)
        if config.likelihood not in LIKELIHOODS:
            raise ConfigError(
                f"unknown VAE likelihood {config.likelihood!r}; valid: {', '.join(LIKELIHOODS)}"
            )
        for key in ("latent_dim", "hidden", "conv_hidden", "nll_samples"):
            check_range(getattr(config, key), key, least=1)
        if config.channels is not None:
            if not config.channels:
                raise ConfigError("channels must list one width per stage (or be None)")
            for ch in config.channels:
                check_range(ch, "each of channels", least=1)
        check_range(config.lr, "lr", above=0)
        if config.kl_start is not None:
            check_range(config.kl_start, "kl_start", least=0)
        check_range(config.kl_anneal_steps, "kl_anneal_steps", least=0)
        check_range(config.binarize_threshold, "binarize_threshold", least=1, most=255)
        if config.conditional:
            if config.num_classes is None:
                raise ConfigError("a conditional VAE needs num_classes (create() reads it from "
                                  "dataset=...; or give num_classes=K)")
            check_range(config.num_classes, "num_classes", least=2)
        k_in = config.num_classes if config.conditional else 0  # one-hot width
        c, h, w = self.image_shape
        if config.pixel_scale not in ("decoder", "learned"):
            raise ConfigError(f"pixel_scale must be decoder or learned, got {config.pixel_scale!r}")
        decoder_scale = config.likelihood == "discretized-logistic" and (
            config.pixel_scale == "decoder")
        self.out_channels = 2 * c if decoder_scale else c
        self.log_scale = (
            nn.Parameter(torch.full(self.image_shape, -1.0))
            if config.likelihood == "discretized-logistic" and not decoder_scale else None
        )
        zd = config.latent_dim
        if config.arch == "mlp":
            self.encoder = nn.Sequential(
                nn.Flatten(), nn.Linear(c * h * w + k_in, config.hidden), nn.ReLU(),
                nn.Linear(config.hidden, 2 * zd),
            )
            self.decoder = nn.Sequential(
                nn.Linear(zd + k_in, config.hidden), nn.ReLU(),
                nn.Linear(config.hidden + k_in, self.out_channels * h * w),
                nn.Unflatten(1, (self.out_channels, h, w)),
            )
        elif config.arch == "conv":
            if config.channels is None:
                config = self.config = dataclasses.replace(config, channels=_auto_stages(h, w))
            self.encoder, self.decoder = self._conv_nets(config, k_in)
        else:
            raise ConfigError(f"unknown VAE arch {config.arch!r}; valid: mlp, conv")
        self._init_output()

    @torch.no_grad()
    def _init_output(self) -> None:
        """Start near the uniform distribution: a flat mean, and a logistic scale of e^-1
        (8.28 bits/dim on uniform data, the closest a logistic gets to uniform's 8)."""
        layers = (nn.Linear, nn.ConvTranspose2d)
        last = next(m for m in reversed(self.decoder) if isinstance(m, layers))
        last.weight.mul_(0.01)
        last.bias.zero_()
        c = self.image_shape[0]
        if self.out_channels == 2 * c:
            last.bias.view(self.out_channels, -1)[c:] = -1.0

    def _conv_nets(self, config: VAEConfig, k_in: int = 0) -> tuple[nn.Module, nn.Module]:
        c, h, w = self.image_shape
        stages = len(config.channels)
        f = 2**stages
        if h % f or w % f or not config.channels:
            raise ConfigError(
                f"vae-conv with {stages} stride-2 stages needs height and width divisible "
                f"by {f} (e.g. 28x28 or 32x32), got {h}x{w}; leave channels unset to fit the "
                "stages to the size"
            )
        enc: list[nn.Module] = []
        prev = c
        for ch in config.channels:
            enc += [nn.Conv2d(prev, ch, 4, 2, 1), nn.SiLU()]
            prev = ch
        flat = prev * (h // f) * (w // f)
        enc += [
            nn.Flatten(), nn.Linear(flat + k_in, config.conv_hidden), nn.SiLU(),
            nn.Linear(config.conv_hidden, 2 * config.latent_dim),
        ]
        # the decoder takes the one-hot at every layer (planes of it at a convolution's
        # input): the label then costs the decoder nothing to use at any scale
        dec: list[nn.Module] = [
            nn.Linear(config.latent_dim + k_in, config.conv_hidden), nn.SiLU(),
            nn.Linear(config.conv_hidden + k_in, flat), nn.SiLU(),
            nn.Unflatten(1, (prev, h // f, w // f)),
        ]
        rev = list(reversed(config.channels))
        for ch, nxt in zip(rev, rev[1:], strict=False):
            dec += [nn.ConvTranspose2d(ch + k_in, nxt, 4, 2, 1), nn.SiLU()]
        dec.append(nn.ConvTranspose2d(rev[-1] + k_in, self.out_channels, 4, 2, 1))
        return nn.Sequential(*enc), nn.Sequential(*dec)

    # -- pieces ------------------------------------------------------------------------------
    def _inputs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder's input and the decoder's target for a uint8 batch."""
        if self.config.likelihood == "bernoulli":
            xb = (x >= self.config.binarize_threshold).float()
            return xb * 2 - 1, xb
        xu = to_unit(x)
        return xu, xu

    def _one_hot(self, y: Tensor | None, like: Tensor) -> Tensor | None:
        if not self.conditional:
            return None
        if y is None:
            raise ConfigError(f"{self.name} is class-conditional: give the labels")
        return nn.functional.one_hot(y.long(), self.num_classes).to(like.dtype)

    def _run(self, net: nn.Sequential, h: Tensor, y: Tensor | None) -> Tensor:
        """``net`` on h, the one-hot label (conditional) concatenated to the input of the
        encoder's first dense layer and of every decoder layer (as constant planes at a
        transposed convolution's input)."""
        if not self.conditional:
            return net(h)
        every = net is self.decoder
        first = True
        for m in net:
            if isinstance(m, nn.Linear) and (first or every):
                h = torch.cat([h, self._one_hot(y, h)], 1)
                first = False
            elif every and isinstance(m, nn.ConvTranspose2d):
                planes = self._one_hot(y, h)[:, :, None, None].expand(-1, -1, *h.shape[2:])
                h = torch.cat([h, planes], 1)
            h = m(h)
        return h

    def encode(self, x_in: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mu, logvar = self._run(self.encoder, x_in, y).float().chunk(2, dim=-1)
        return mu, logvar.clamp(-30.0, 20.0)

    def log_px_given_z(self, target: Tensor, z: Tensor, y: Tensor | None = None) -> Tensor:
        """log p(x|z) (conditional: log p(x|z, y)) summed over pixels."""
        out = self._run(self.decoder, z, y).float()
        if self.config.likelihood == "bernoulli":
            lp = bernoulli_log_prob(target, out)
        else:
            mean, log_scale = self._split(out)
            lp = discretized_logistic_log_prob(target, mean, log_scale)
        return lp.flatten(1).sum(-1)

    def _split(self, out: Tensor) -> tuple[Tensor, Tensor]:
        """The decoder's output -> (logistic mean, log scale >= LOG_SCALE_MIN)."""
        if self.log_scale is not None:
            return out, self.log_scale.float().clamp(min=LOG_SCALE_MIN).unsqueeze(0)
        mean, log_scale = out.chunk(2, dim=1)
        return mean, log_scale.clamp(min=LOG_SCALE_MIN)

    # -- interface ---------------------------------------------------------------------------
    def configure_optimizers(self):
        return {"vae": adam(self.parameters(), lr=self.config.lr)}

    def forward(self, x_in: Tensor, target: Tensor,
                y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per image: the reconstruction term -log p(x|z) with one reparameterized z ~ q(z|x)
        (noise from ``batch_randn``) and KL(q(z|x) || p(z)), both in nats (conditional: given
        the labels y as well)."""
        mu, logvar = self.encode(x_in, y)
        z = mu + self.batch_randn(*mu.shape) * torch.exp(0.5 * logvar)
        return -self.log_px_given_z(target, z, y), gaussian_kl_standard(mu, logvar)

    def kl_weight(self, opt: torch.optim.Optimizer) -> float:
        """The KL term's weight at this step, keyed on the optimizer's own step count (so a
        resumed run continues the schedule)."""
        start = self.config.kl_start
        if start is None:
            start = KL_START if self.conditional else 1.0
        state = opt.state.get(opt.param_groups[0]["params"][0])
        done = int(state["step"]) if state and "step" in state else 0
        steps = self.config.kl_anneal_steps
        left = max(0.0, 1.0 - done / steps) if steps else 0.0
        return 1.0 + (start - 1.0) * left

    def train_step(self, x, optimizers):
        batch = self.check_batch(x)
        x_in, target = self._inputs(batch.images)
        if self.conditional:
            recon, kl = self.wrapped("model")(x_in, target, batch.labels)
        else:
            recon, kl = self.wrapped("model")(x_in, target)
        beta = self.kl_weight(optimizers["vae"])
        loss = (recon + kl).mean() if beta == 1.0 else (recon + beta * kl).mean()
        self.optimize(loss, optimizers["vae"])
        scale = 1.0 / (self.dims * math.log(2))
        return {
            "loss_bpd": (recon + kl).mean().item() * scale,
            "recon_bpd": recon.mean().item() * scale,
            "kl_bpd": kl.mean().item() * scale,
        }

    @torch.no_grad()
    def sample(self, n, *, generator=None, labels=None, batch_size: int = 1000, **options):
        """n uint8 images: z ~ N(0, I), then the decoder's mean (``decode="mean"``, default)
        or a draw from p(x|z) (``decode="sample"``).

        A conditional VAE decodes image i for class ``labels[i]`` (one int for all, or n ints
        in 0..num_classes-1); without ``labels`` it first draws the n classes uniformly at
        random from ``generator``."""
        decode = self.parse_sampler(options, also=("batch_size",)).decode
        n = option_number(n, "n", int)
        batch_size = option_number(batch_size, "batch_size", int)
        if n < 0 or batch_size < 1:
            raise ConfigError(f"need n >= 0 and batch_size >= 1, got {n=}, {batch_size=}")
        y = self.check_labels(labels, n)
        if self.conditional and y is None:
            gdev = generator.device if generator is not None else self.device
            y = torch.randint(self.num_classes, (n,), generator=generator, device=gdev)
            y = y.to(self.device)
        dev = self.device
        out = []
        with eval_mode(self):
            for start in range(0, n, batch_size):
                b = min(batch_size, n - start)
                z = torch.randn(b, self.config.latent_dim, generator=generator,
                                device=generator.device if generator is not None else dev)
                yb = None if y is None else y[start:start + b]
                out.append(self._decode(z.to(dev), decode, generator, yb))
        c, h, w = self.image_shape
        return torch.cat(out) if out else torch.empty(0, c, h, w, dtype=torch.uint8)

    def _decode(self, z: Tensor, decode: str, generator, y: Tensor | None = None) -> Tensor:
        out = self._run(self.decoder, z, y).float()
        gdev = generator.device if generator is not None else out.device
        if self.config.likelihood == "bernoulli":
            p = torch.sigmoid(out)
            if decode == "sample":
                p = torch.bernoulli(p.to(gdev), generator=generator).to(out.device)
            return (check_samples(p) * 255).round().to(torch.uint8)
        mean, log_scale = self._split(out)
        if decode == "sample":
            u = torch.rand(mean.shape, generator=generator, device=gdev).to(out.device)
            u = u.clamp(1e-5, 1 - 1e-5)
            mean = mean + log_scale.exp() * (u.log() - (-u).log1p())
        return from_unit(mean)

    def _importance_samples(self, k, opts) -> int:
        if opts:
            raise ConfigError(f"unknown nll option(s) {', '.join(opts)} for {self.name}; "
                              "valid: k, batch_size")
        k = self.config.nll_samples if k is None else option_number(k, "k", int)
        if k < 1:
            raise ConfigError(f"k (importance samples) must be >= 1, got {k}")
        return k

    def describe_nll(self, k=None, batch_size=None, labels=None, **options) -> str:
        k = self._importance_samples(k, options)
        text = "bound, ELBO" if k == 1 else f"bound, IWAE k={k}"
        if not self.conditional:
            return text
        if labels is not None:
            return text + ", conditional -log p(x|y) at the given labels"
        return (f"bound, IWAE k={k} per class, -log p(x) marginal over {self.num_classes} "
                "classes (uniform p(y))")

    @torch.no_grad()
    def nll(self, x, k: int | None = None, batch_size: int = 4096, labels=None,
            **opts) -> Tensor:
        """IWAE bound on -log p(x) in bits/dim, one value per image (k=1: the ELBO).

        For the Bernoulli likelihood this is the NLL of the binarized images. A conditional
        model with ``labels`` (one int, or one per image) bounds -log p(x|y); without labels
        it bounds -log p(x) = -log mean_y p(x|y) under its uniform class prior: k samples of
        z for each of the K classes, one log-mean-exp over the K*k importance weights (an
        IWAE bound with proposal uniform(y) q(z|x, y); K times the cost of one class).
        """
        k = self._importance_samples(k, opts)
        batch_size = option_number(batch_size, "batch_size", int)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        x = self.check_images(x)
        if labels is not None and not self.conditional:
            raise ConfigError(f"{self.name} is not class-conditional, so nll() takes no "
                              "labels; call it without labels=")
        y = self.check_labels(labels, x.shape[0])
        per = max(1, batch_size // k)
        _, h, w = self.image_shape
        # the decoder's output, its log-probabilities and the expanded targets of k samples
        check_memory(12 * k * min(per, x.shape[0]) * self.out_channels * h * w,
                     f"the IWAE bound with k={k}", "use fewer importance samples (k)")
        with eval_mode(self):
            if self.conditional and y is None:  # marginal over the classes, uniform p(y)
                out = [self._iwae_marginal(x[i:i + per], k) for i in range(0, x.shape[0], per)]
            else:
                out = [self._iwae(x[i:i + per], k, None if y is None else y[i:i + per])
                       for i in range(0, x.shape[0], per)]
        return nats_to_bpd(torch.cat(out), self.dims).float() if out else torch.empty(0)

    def _iwae_marginal(self, x: Tensor, k: int) -> Tensor:
        """-log p(x) bound of a conditional model: log-mean-exp over K classes x k samples."""
        b = x.shape[0]
        log_w = torch.stack([
            self._log_weights(x, k, torch.full((b,), c, dtype=torch.long, device=x.device))
            for c in range(self.num_classes)])  # [K, k, b]
        return -(torch.logsumexp(log_w.flatten(0, 1), dim=0) - math.log(k * self.num_classes))

    def _iwae(self, x: Tensor, k: int, y: Tensor | None = None) -> Tensor:
        return -(torch.logsumexp(self._log_weights(x, k, y), dim=0) - math.log(k))

    def _log_weights(self, x: Tensor, k: int, y: Tensor | None = None) -> Tensor:
        """float64 [k, b]: log p(x, z | y) - log q(z | x, y) at k draws z ~ q(z | x, y)."""
        x_in, target = self._inputs(x)
        mu, logvar = self.encode(x_in, y)
        b = x.shape[0]
        eps = torch.randn(k, b, mu.shape[1], device=mu.device)
        z = mu + eps * torch.exp(0.5 * logvar)  # [k, b, zd]
        log_q = gaussian_log_prob(z, mu, logvar)
        log_p_z = -0.5 * (LOG_2PI + z.pow(2)).sum(-1)
        tgt = target.unsqueeze(0).expand(k, *target.shape).reshape(k * b, *target.shape[1:])
        yk = None if y is None else y.repeat(k)  # row i * b + j is image j
        log_px = self.log_px_given_z(tgt, z.reshape(k * b, -1), yk).reshape(k, b)
        return (log_px + log_p_z - log_q).double()


MODELS = {
    "vae-mlp": ModelSpec(
        VAE,
        "MLP VAE of Kingma & Welling (784-400-20), any image size",
        defaults={"arch": "mlp", "pixel_scale": "learned"},
    ),
    "vae-conv": ModelSpec(
        VAE,
        "convolutional VAE, 1 or 2 stride-2 stages by the size (even sides: 8, 16, 28, 32, ...)",
        defaults={"arch": "conv", "latent_dim": 32},
        dataset_defaults={"cifar10": {"channels": (64, 128), "latent_dim": 128}},
    ),
}

"""The convolutional encoder and decoder of the autoencoders (latent diffusion's, VQ-VAE's)
and the vector quantizer with EMA codebook updates and dead-code restarts.

The encoder halves the image ``levels`` times (stride-2 convolutions between residual
blocks), so a 28x28 image becomes a 7x7 grid at ``levels=2``; the decoder mirrors it with
nearest-neighbour upsampling. Both are plain residual conv stacks (GroupNorm, SiLU) as in
the autoencoder of latent diffusion (Rombach et al. 2022), at CPU sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError


def _groups(channels: int) -> int:
    """GroupNorm's group count for ``channels``: the largest of 8, 4, 2, 1 dividing it."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class ConvBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, plus the (1x1-projected) input."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


def check_side(image_shape, levels: int, name: str) -> tuple[int, int, int]:
    """(C, h, w) of the latent grid of an image halved ``levels`` times; sides that do not
    halve evenly are a ConfigError naming a size that does."""
    c, h, w = image_shape
    f = 2 ** levels
    if h % f or w % f:
        up = ((max(h, w) + f - 1) // f) * f
        raise ConfigError(f"{name} halves the image {levels} times, so its sides must be "
                          f"multiples of {f}, got {h}x{w}; resize the data (e.g. ?size={up}) "
                          "or set levels")
    return c, h // f, w // f


class Encoder(nn.Module):
    """Image [N, C, H, W] in [-1, 1] -> [N, out_channels, H / 2^levels, W / 2^levels]."""

    def __init__(self, in_channels: int, channels: int, levels: int, out_channels: int):
        super().__init__()
        widths = [channels * min(2 ** i, 4) for i in range(levels + 1)]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i in range(levels):
            layers += [ConvBlock(widths[i], widths[i]),
                       nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1)]
        layers += [ConvBlock(widths[-1], widths[-1]), nn.GroupNorm(_groups(widths[-1]),
                                                                   widths[-1]), nn.SiLU(),
                   nn.Conv2d(widths[-1], out_channels, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.stem(x))


class Decoder(nn.Module):
    """Latent [N, in_channels, h, w] -> image [N, out_channels, h 2^levels, w 2^levels]
    (unbounded: the caller's likelihood or loss reads it as the mean in [-1, 1])."""

    def __init__(self, in_channels: int, channels: int, levels: int, out_channels: int):
        super().__init__()
        widths = [channels * min(2 ** i, 4) for i in range(levels + 1)][::-1]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1),
                                   ConvBlock(widths[0], widths[0])]
        for i in range(levels):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       nn.Conv2d(widths[i], widths[i + 1], 3, padding=1),
                       ConvBlock(widths[i + 1], widths[i + 1])]
        layers += [nn.GroupNorm(_groups(widths[-1]), widths[-1]), nn.SiLU(),
                   nn.Conv2d(widths[-1], out_channels, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.body(z)


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantization to a codebook of ``codes`` vectors of ``dim`` (van den
    Oord et al. 2017), the codebook learned by exponential moving averages of the vectors
    assigned to each code (their appendix A.1) rather than by gradient, and a code whose
    average use falls below ``restart_below`` vectors per batch restarted at a random encoder
    output of the batch (dead-code restarts, as in Jukebox / Dhariwal et al. 2020).

    The EMA state (cluster sizes, summed vectors) is in buffers, so it is checkpointed and
    resumed with the weights; the updates are drawn from the generator given to ``update``.
    """

    def __init__(self, codes: int, dim: int, decay: float = 0.99, eps: float = 1e-5,
                 restart_below: float = 0.03):
        super().__init__()
        self.codes, self.dim, self.decay, self.eps = codes, dim, decay, eps
        self.restart_below = restart_below
        embed = torch.randn(codes, dim) / dim ** 0.5
        self.register_buffer("embed", embed)
        # counts start at zero, so the first update restarts every code that the first batch
        # leaves unused at one of its vectors: a codebook initialised from the data
        self.register_buffer("cluster_size", torch.zeros(codes))
        self.register_buffer("embed_sum", torch.zeros(codes, dim))

    def indices(self, z: Tensor) -> Tensor:
        """The nearest code of each vector of z [N, dim, h, w] -> int64 [N, h, w]."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim).float()
        dist = (flat.square().sum(1, keepdim=True) - 2 * flat @ self.embed.t()
                + self.embed.square().sum(1)[None])
        return dist.argmin(1).view(z.shape[0], *z.shape[2:])

    def lookup(self, idx: Tensor) -> Tensor:
        """Codes [N, h, w] -> their vectors [N, dim, h, w]."""
        return F.embedding(idx, self.embed).permute(0, 3, 1, 2).contiguous()

    @torch.no_grad()
    def update(self, z: Tensor, idx: Tensor, generator: torch.Generator | None = None) -> int:
        """One EMA step of the codebook towards the vectors ``z`` assigned to it by ``idx``;
        returns how many dead codes were restarted."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim).float()
        onehot = F.one_hot(idx.reshape(-1), self.codes).type_as(flat)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codes * self.eps) * n
        self.embed.copy_(self.embed_sum / smoothed[:, None])
        dead = self.cluster_size < self.restart_below
        k = int(dead.sum())
        if k:
            pick = torch.randint(0, flat.shape[0], (k,), generator=generator,
                                 device=generator.device if generator is not None
                                 else flat.device).to(flat.device)
            fresh = flat[pick]
            self.embed[dead] = fresh
            self.embed_sum[dead] = fresh
            self.cluster_size[dead] = 1.0
        return k

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(quantized z with straight-through gradients to z, the codes [N, h, w])."""
        idx = self.indices(z)
        q = self.lookup(idx)
        return z + (q - z).detach(), idx

"""The DDPM U-Net (Ho et al. 2020): residual blocks with GroupNorm and SiLU, a sinusoidal
timestep embedding through an MLP, self-attention at the lowest resolutions, dropout.

Built for speed on the CPU as much as on a GPU: the timestep embedding of every residual block
is projected by one matrix multiply instead of one per block, a timestep shared by the whole
batch (as in sampling) is embedded once and broadcast, and the activation, the embedding add
and the residual add run in place on fresh tensors (no allocation, same gradients).
Activations stay in the contiguous NCHW layout on the CPU, where PyTorch's channels_last
GroupNorm is much slower than NCHW's.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import ConfigError
from .attention import SelfAttention


@dataclass
class UNetConfig:
    """Width, depth and where to attend.

    ``channel_mult`` has one entry per resolution level (the image is halved between
    levels); None picks the depth from the image size (``auto_channel_mult``: up to
    ``max_levels`` levels of widths 1, 2, 2, ...). ``attention_levels`` indexes those levels
    (0 = full resolution); the middle block at the lowest resolution always attends when
    ``mid_attention`` is set.

    ``norm_groups`` of 4 rather than DDPM's 32: at 32 channels, 32 groups normalise every
    channel on its own (instance norm), which erases each feature map's mean, i.e. the
    image's brightness (samples with grey backgrounds). DDPM's 32 groups were meant for 128+
    channels, 4+ per group.
    """

    channels: int = 32
    channel_mult: tuple[int, ...] | None = None
    max_levels: int = 3
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = ()
    mid_attention: bool = True
    attention_heads: int = 1
    dropout: float = 0.0
    norm_groups: int = 4

    @property
    def unet(self) -> UNetConfig:
        """The U-Net's options alone (of a model config that extends these)."""
        return UNetConfig(**{f.name: getattr(self, f.name)
                             for f in dataclasses.fields(UNetConfig)})


#: the auto depth halves the image while its side stays even and at least this after halving
MIN_SIDE = 4


def auto_channel_mult(h: int, w: int, max_levels: int) -> tuple[int, ...]:
    """Width multipliers (1, 2, 2, ...) of as many levels as the size allows: the image is
    halved while height and width are even and stay >= MIN_SIDE, up to ``max_levels``
    levels (28x28 -> 3 levels down to 7x7; 32x32 -> 3 levels, or 4 down to 4x4 with
    ``max_levels=4``; 8x8 -> 2 levels; an odd size -> 1)."""
    if max_levels < 1:
        raise ConfigError(f"max_levels must be >= 1, got {max_levels}")
    levels = 1
    while (levels < max_levels and h % 2 == 0 and w % 2 == 0
           and h // 2 >= MIN_SIDE and w // 2 >= MIN_SIDE):
        h, w, levels = h // 2, w // 2, levels + 1
    return (1,) + (2,) * (levels - 1)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (float) timesteps ``t`` [B] -> [B, dim]: sines then cosines."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32)
        / max(half - 1, 1)
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    if channels % groups:
        raise ConfigError(
            f"GroupNorm with norm_groups={groups} needs channel counts divisible by it, "
            f"got {channels} channels; choose norm_groups dividing every level's width"
        )
    return nn.GroupNorm(groups, channels, eps=1e-5)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, add the timestep projection, GroupNorm-SiLU-dropout-conv, skip."""

    def __init__(self, cin: int, cout: int, groups: int, dropout: float):
        super().__init__()
        self.cout = cout
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout, groups)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor, mod: Tensor | None = None) -> Tensor:
        """``mod`` [B, 2 cout, 1, 1] (a class-conditional U-Net's): the class's shift and
        scale of the second normalisation's output, norm2(h) (1 + scale) + shift (ADM's
        scale-shift norm)."""
        h = self.norm2(self.conv1(F.silu(self.norm1(x), inplace=True)).add_(emb))
        if mod is not None:
            shift, scale = mod.chunk(2, dim=1)
            h = torch.addcmul(shift, h, 1 + scale)
        h = self.conv2(self.dropout(F.silu(h, inplace=True)))
        return h.add_(self.skip(x))


class AttentionBlock(nn.Module):
    """GroupNorm, multi-head self-attention over the H*W positions, residual."""

    def __init__(self, channels: int, groups: int, heads: int):
        super().__init__()
        if channels % heads:
            raise ConfigError(
                f"attention_heads={heads} must divide the attended width {channels}"
            )
        self.norm = _norm(channels, groups)
        self.attn = SelfAttention(channels, heads, causal=False)
        nn.init.zeros_(self.attn.proj.weight)
        nn.init.zeros_(self.attn.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)
        return x + self.attn(tokens).reshape(b, h, w, c).permute(0, 3, 1, 2)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling then a 3x3 convolution, computed without upsampling.

    Each of the four output phases (row parity a, column parity b) sees a 2x2 window of the
    low-resolution input whose taps are sums of the 3x3 kernel's taps, so one 2x2 convolution
    with 4x the output channels gives all phases: 16/36 of the multiply-adds, the same
    function and the same parameters (``self.conv`` holds the 3x3 kernel).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def phase_kernels(self) -> tuple[Tensor, Tensor]:
        """The [4 * C_out, C_in, 2, 2] kernel (phases a, b in row-major order) and its bias."""
        w = self.conv.weight
        rows = (torch.stack([w[:, :, 0], w[:, :, 1] + w[:, :, 2]], 2),
                torch.stack([w[:, :, 0] + w[:, :, 1], w[:, :, 2]], 2))
        phases = []
        for r in rows:
            phases.append(torch.stack([r[..., 0], r[..., 1] + r[..., 2]], -1))
            phases.append(torch.stack([r[..., 0] + r[..., 1], r[..., 2]], -1))
        return torch.cat(phases), self.conv.bias.repeat(4)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        weight, bias = self.phase_kernels()
        z = F.conv2d(x, weight, bias, padding=1)  # [B, 4 * C, H + 1, W + 1]
        c = z.shape[1] // 4
        out = z.new_empty(b, c, h, 2, w, 2)
        for k in range(4):
            a, bb = divmod(k, 2)
            out[:, :, :, a, :, bb] = z[:, k * c:(k + 1) * c, a:a + h, bb:bb + w]
        return out.view(b, c, 2 * h, 2 * w)


def checked_config(config: UNetConfig, image_size: tuple[int, int]) -> UNetConfig:
    """``config`` with its depth chosen for ``image_size`` when unset, checked against it."""
    c = config
    if c.channel_mult is None:
        c = dataclasses.replace(c, channel_mult=auto_channel_mult(*image_size, c.max_levels))
    levels = len(c.channel_mult)
    if c.channels < 1 or not c.channel_mult or min(c.channel_mult) < 1:
        raise ConfigError(
            f"channels and every channel_mult entry must be >= 1, got channels={c.channels}, "
            f"channel_mult={c.channel_mult}"
        )
    if c.num_res_blocks < 1:
        raise ConfigError(f"num_res_blocks must be >= 1, got {c.num_res_blocks}")
    if not 0.0 <= c.dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {c.dropout}")
    if c.attention_heads < 1:
        raise ConfigError(f"attention_heads must be >= 1, got {c.attention_heads}")
    bad = [lv for lv in c.attention_levels if not 0 <= lv < levels]
    if bad:
        raise ConfigError(
            f"attention_levels {bad} out of range: channel_mult has {levels} levels, "
            f"so valid levels are 0..{levels - 1} (0 = full resolution)"
        )
    f = 2 ** (levels - 1)
    h, w = image_size
    if h % f or w % f:
        raise ConfigError(
            f"a U-Net with {levels} levels (channel_mult={c.channel_mult}) halves the image "
            f"{levels - 1} times, so height and width must be multiples of {f} "
            f"(e.g. {', '.join(str(f * k) for k in (7, 8, 16) if f * k <= 256)}); "
            f"got {h}x{w}. Use fewer levels, pad the images, or leave channel_mult unset "
            "so the U-Net picks its depth from the size"
        )
    return c


#: the initial std of the class's shifts and scales: zero learnt the class slowly (class
#: accuracy 0.44 at guidance 4 at the ci suite's budget on MNIST, FID 12.0), 0.2 sooner
#: (0.72, FID 13.6); docs/models.md has the measurements
CLASS_MOD_STD = 0.2


class UNet(nn.Module):
    """Predicts a tensor shaped like ``x`` [B, C, H, W] from ``x`` and timesteps ``t``.

    ``t`` is [B] or [1] (one timestep for the whole batch, embedded once). H and W must be
    divisible by 2^(levels - 1). With ``num_classes`` K it is class-conditional: a class
    embedding (K + 1 rows, the last the null label) gives every residual block a shift and
    a scale of its second normalisation's output (ADM's scale-shift norm, with the class
    alone), drawn at the start from N(0, ``CLASS_MOD_STD``^2); without, it has no such
    parameters.

    The class has its own path rather than being added to the timestep embedding: added
    there, at any scale of its own it either drowned the timestep (nn.Embedding's N(0, 1):
    a much worse FID) or was learnt slowly (N(0, 0.3^2): class accuracy 0.33 at the ci
    suite's budget, FID 55 where the unconditional model reached 21).
    """

    def __init__(self, in_channels: int, image_size: tuple[int, int], config: UNetConfig,
                 num_classes: int | None = None):
        super().__init__()
        # modules are made in this order (parameter names, initial draws): input, down path,
        # middle, up path, output, then the embedding projections
        c = self.config = checked_config(config, image_size)
        self.image_size = tuple(image_size)
        ch, widths = c.channels, [c.channels * m for m in c.channel_mult]
        self.emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(
            nn.Linear(ch, self.emb_dim), nn.SiLU(), nn.Linear(self.emb_dim, self.emb_dim)
        )
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down, skips = self._down_path(widths)
        cur = skips[-1]
        self.mid = nn.ModuleList([self._res(cur, cur)])
        if c.mid_attention:
            self.mid.append(self._attention(cur))
        self.mid.append(self._res(cur, cur))
        self.up = self._up_path(widths, skips)
        self.norm_out = _norm(widths[0], c.norm_groups)
        self.conv_out = nn.Conv2d(widths[0], in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self._embedding_projections(num_classes)

    def _res(self, cin: int, cout: int) -> ResBlock:
        return ResBlock(cin, cout, self.config.norm_groups, self.config.dropout)

    def _attention(self, channels: int) -> AttentionBlock:
        return AttentionBlock(channels, self.config.norm_groups, self.config.attention_heads)

    def _down_path(self, widths: list[int]) -> tuple[nn.ModuleList, list[int]]:
        """The encoder's blocks, and the width of each output the up path takes as a skip."""
        c = self.config
        down, skips = nn.ModuleList(), [c.channels]
        cur = c.channels
        for lv, wd in enumerate(widths):
            for _ in range(c.num_res_blocks):
                down.append(self._res(cur, wd))
                cur = wd
                if lv in c.attention_levels:
                    down.append(self._attention(cur))
                skips.append(cur)
            if lv != len(widths) - 1:
                down.append(Downsample(cur))
                skips.append(cur)
        return down, skips

    def _up_path(self, widths: list[int], skips: list[int]) -> nn.ModuleList:
        """The decoder's blocks, each residual block taking one skip (the last first)."""
        c = self.config
        up, cur, skips = nn.ModuleList(), skips[-1], list(skips)
        for lv in reversed(range(len(widths))):
            for _ in range(c.num_res_blocks + 1):
                up.append(self._res(cur + skips.pop(), widths[lv]))
                cur = widths[lv]
                if lv in c.attention_levels:
                    up.append(self._attention(cur))
            if lv != 0:
                up.append(Upsample(cur))
        return up

    def _embedding_projections(self, num_classes: int | None) -> None:
        """One linear map from the embedding to every residual block's channels, and the
        class embedding of a class-conditional U-Net."""
        self._res_blocks = [m for m in self.modules() if isinstance(m, ResBlock)]
        self._emb_splits = [b.cout for b in self._res_blocks]
        self.emb_proj = nn.Linear(self.emb_dim, sum(self._emb_splits))
        if num_classes is not None:
            self.class_emb = nn.Embedding(num_classes + 1, 2 * sum(self._emb_splits))
            nn.init.normal_(self.class_emb.weight, std=CLASS_MOD_STD)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """``y``: int64 class labels [B] of a class-conditional U-Net (required by one)."""
        emb = self.time_mlp(timestep_embedding(t, self.config.channels))
        embs = iter(self.emb_proj(F.silu(emb))[:, :, None, None].split(self._emb_splits, dim=1))
        mods = iter([None] * len(self._emb_splits))
        if hasattr(self, "class_emb"):
            mods = iter(self.class_emb(y)[:, :, None, None].split(
                [2 * c for c in self._emb_splits], dim=1))

        h = self.conv_in(x)
        hs = [h]
        for m in self.down:
            if isinstance(m, ResBlock):
                h = m(h, next(embs), next(mods))
                hs.append(h)
            elif isinstance(m, Downsample):
                h = m(h)
                hs.append(h)
            else:
                h = m(h)
                hs[-1] = h
        for m in self.mid:
            h = m(h, next(embs), next(mods)) if isinstance(m, ResBlock) else m(h)
        for m in self.up:
            if isinstance(m, ResBlock):
                h = m(torch.cat([h, hs.pop()], dim=1), next(embs), next(mods))
            else:
                h = m(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=True))

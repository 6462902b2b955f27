"""Multi-head self-attention and the pre-LN Transformer block, with a preallocated KV cache.

Attention runs through ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels
where the device has them). Autoregressive decoding keeps one cache tensor per layer, shaped
``[B, 2, heads, max_len, head_dim]`` (keys at index 0, values at 1), allocated once and written
in place, so a decode step costs one new token's work and no concatenation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import ConfigError

#: where a decode step's attention is two batched matrix-vector products (one query against
#: the cache) instead of SDPA: device type -> least batch x heads. On CUDA always: the fused
#: attention kernels tile 64 queries and took 81% of the GPU time of a batch-256 decoding;
#: measured on an H200 (ar-transformer, float32, whole image, seconds SDPA -> matrix-vector):
#: graph-captured batch 1 0.219 -> 0.122, 64 0.380 -> 0.324, 256 0.791 -> 0.632; eager
#: batch 1024 2.55 -> 1.87, eager 64 0.70 -> 0.91 (more launches where launches bound the
#: step). One choice for both keeps the captured and the eager decoding's samples equal.
MATVEC_DECODE = {"cuda": 0}


def new_kv_cache(
    depth: int,
    batch: int,
    heads: int,
    max_len: int,
    head_dim: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """An empty cache for ``depth`` layers: ``[depth, batch, 2, heads, max_len, head_dim]``."""
    return torch.empty(depth, batch, 2, heads, max_len, head_dim, device=device, dtype=dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention over ``[B, T, dim]``; causal (decoder) or not (encoder)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, causal: bool = True):
        super().__init__()
        if dim < 1 or heads < 1 or dim % heads:
            raise ConfigError(
                f"attention needs dim divisible by heads (both >= 1), got dim={dim}, heads={heads}"
            )
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.causal = causal
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, cache: Tensor | None = None, start: int = 0) -> Tensor:
        """Attend over ``x`` [B, T, dim]. With ``cache`` ([B, 2, heads, L, head_dim]) the keys
        and values of ``x`` are written at positions ``start .. start+T-1`` and the queries
        attend to everything cached up to there (prefill of a decoder)."""
        b, t, _ = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        mask = None
        is_causal = self.causal and t > 1
        if cache is not None:
            end = start + t
            cache[:, :, :, start:end] = qkv[1:].transpose(0, 1)
            k, v = cache[:, 0, :, :end], cache[:, 1, :, :end]
            if is_causal and start > 0:
                rows = torch.arange(start, end, device=x.device).unsqueeze(1)
                mask = rows >= torch.arange(end, device=x.device)
                is_causal = False
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.resid_drop(self.proj(a.transpose(1, 2).reshape(b, t, self.dim)))

    def step(self, x: Tensor, cache: Tensor, pos: int) -> Tensor:
        """One decode step: ``x`` [B, dim] is the token at ``pos``; its key and value are
        written into ``cache`` in place and it attends to positions ``0 .. pos``."""
        b = x.shape[0]
        qkv = F.linear(x, self.qkv.weight, self.qkv.bias).view(b, 3, self.heads, self.head_dim)
        cache[:, :, :, pos] = qkv[:, 1:]
        k, v = cache[:, 0, :, : pos + 1], cache[:, 1, :, : pos + 1]
        if b * self.heads >= MATVEC_DECODE.get(x.device.type, math.inf):
            q = qkv[:, 0].unsqueeze(-1) * self.head_dim**-0.5
            w = torch.softmax(torch.matmul(k, q).transpose(-1, -2), dim=-1, dtype=torch.float32)
            a = torch.matmul(w.to(v.dtype), v)
        else:
            a = F.scaled_dot_product_attention(qkv[:, 0].unsqueeze(2), k, v)
        return F.linear(a.view(b, self.dim), self.proj.weight, self.proj.bias)


def modulate(h: Tensor, mod: Tensor | None, i: int) -> Tensor:
    """``h * (1 + mod[:, i + 1]) + mod[:, i]`` (adaptive LayerNorm, DiT's adaLN); ``h`` when
    ``mod`` is None."""
    return h if mod is None else torch.addcmul(mod[:, i], h, 1 + mod[:, i + 1])


class TransformerBlock(nn.Module):
    """Pre-LN block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))`` (GPT-2 layout)."""

    def __init__(
        self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
        causal: bool = True,
    ):
        super().__init__()
        hidden = int(round(dim * mlp_ratio))
        if hidden < 1:
            raise ConfigError(f"mlp_ratio must give a hidden width >= 1, got {mlp_ratio}")
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout, causal)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.mlp_drop = nn.Dropout(dropout)

    def mlp(self, x: Tensor) -> Tensor:
        return self.mlp_drop(self.fc2(F.gelu(self.fc1(x))))

    def forward(self, x: Tensor, cache: Tensor | None = None, start: int = 0,
                mod: Tensor | None = None) -> Tensor:
        """``mod`` [B, 4, dim] (adaptive LayerNorm, a conditional model's): the shift and
        scale of ``ln1``'s output, then of ``ln2``'s, h * (1 + scale) + shift per row."""
        if mod is not None:
            mod = mod[:, :, None]  # [B, 4, 1, dim]: the same for every position
        x = x + self.attn(modulate(self.ln1(x), mod, 0), cache, start)
        return x + self.mlp(modulate(self.ln2(x), mod, 2))

    def step(self, x: Tensor, cache: Tensor, pos: int, mod: Tensor | None = None) -> Tensor:
        """Decode one token ``x`` [B, dim] at ``pos`` (eval only: no dropout, no hooks)."""
        ln1, ln2 = self.ln1, self.ln2
        h = F.layer_norm(x, ln1.normalized_shape, ln1.weight, ln1.bias, ln1.eps)
        x = x + self.attn.step(modulate(h, mod, 0), cache, pos)
        h = modulate(F.layer_norm(x, ln2.normalized_shape, ln2.weight, ln2.bias, ln2.eps), mod, 2)
        h = F.gelu(F.linear(h, self.fc1.weight, self.fc1.bias))
        return x + F.linear(h, self.fc2.weight, self.fc2.bias)

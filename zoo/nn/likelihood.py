"""Discretized likelihoods of 8-bit data and the nats <-> bits/dim conversion.

Convention (used by every family): an image x in {0..255}^D is mapped to [-1, 1] by
x / 127.5 - 1, so each value owns a bin of width 2/255 centred on it; the edge bins
0 and 255 extend to -inf and +inf. A log-likelihood of the discrete data in nats is
turned into bits per dimension by dividing by D * ln 2, D = C * H * W. A continuous
density on [-1, 1] would need the log-Jacobian D * log(127.5) added; the discretized
likelihoods below need none because they already give probabilities of the bins.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import NonFiniteSamples

LN2 = math.log(2.0)
BIN_HALF_WIDTH = 1.0 / 255.0


def to_unit(x: Tensor) -> Tensor:
    """uint8 0..255 -> float in [-1, 1]."""
    return x.float() / 127.5 - 1.0


def from_unit(x: Tensor) -> Tensor:
    """float in [-1, 1] -> uint8 0..255 (rounded, clamped); refused (``check_samples``)
    when any value is NaN or infinite."""
    return ((check_samples(x.float()).clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def check_samples(x: Tensor) -> Tensor:
    """``x``, the float samples about to become uint8 pixels, or NonFiniteSamples when any
    value is NaN or infinite: the cast would turn them into black or arbitrary pixels."""
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteSamples("sampling overflowed to non-finite values (NaN or inf); "
                               "check the sampler's options and the model's weights")
    return x


def nats_to_bpd(nll_nats: Tensor, dims: int) -> Tensor:
    """Per-image NLL in nats -> bits per dimension."""
    return nll_nats / (dims * LN2)


def bpd_to_nats(bpd: Tensor, dims: int) -> Tensor:
    return bpd * (dims * LN2)


def discretized_logistic_log_prob(x_unit: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """Elementwise log P(bin of x) under a logistic(mean, exp(log_scale)) on [-1, 1].

    ``x_unit`` holds data already mapped by ``to_unit`` (no gradient flows to it); ``mean``
    and ``log_scale`` broadcast against it. Edge bins take the tails.
    """
    return _DiscretizedLogistic.apply(x_unit, mean, log_scale)


class _DiscretizedLogistic(torch.autograd.Function):
    """The bin's log-mass with a hand-written backward: a third of the elementwise kernels
    autograd would run through the same formula, which matters on CPU where a VAE step is
    small.

    With s = exp(log_scale), c = (x - mean) / s, k = h / s (h the bin's half width), the
    bin's mass is sigmoid(c + k) - sigmoid(c - k) = sigmoid(c + k) sigmoid(k - c)
    (1 - exp(-2k)), so its log is logsig(c + k) + logsig(k - c) + log(-expm1(-2k)): no
    cancellation. The lowest bin keeps only logsig(c + k) (the mass below), the highest only
    logsig(k - c). Derivatives: d/dc = sigmoid(-(c + k)) - sigmoid(-(k - c)) on the kept
    terms; d/dk = their sum plus 2 / expm1(2k) for the width term; c and k scale as 1/s, so
    d/dlog_scale = -(c d/dc + k d/dk) and d/dmean = -d/dc / s.
    """

    @staticmethod
    def forward(ctx, x, mean, log_scale):
        inv_s = torch.exp(-log_scale)
        k = inv_s * BIN_HALF_WIDTH
        c = torch.sub(x, mean)
        # in place, unless log_scale broadcasts wider than x - mean
        c = c.mul_(inv_s) if torch.broadcast_shapes(c.shape, inv_s.shape) == c.shape \
            else c * inv_s
        # float masks, written by the comparison itself (no bool tensor to convert):
        # multiplying by them is faster than masked_fill on the CPU
        mask = torch.empty(x.shape, dtype=c.dtype, device=c.device)
        keep_a = torch.lt(x, 0.999, out=mask)  # not the top bin: the mass below counts
        keep_b = torch.gt(x, -0.999, out=torch.empty_like(mask))  # not the bottom bin
        interior = keep_a * keep_b
        a, b = c + k, k - c
        # F.logsigmoid: one stable pass, faster than min(z, 0) - log1p(exp(-|z|)) in four ops
        out = F.logsigmoid(a).mul_(keep_a)
        out.addcmul_(F.logsigmoid(b), keep_b)
        out.addcmul_(torch.log(-torch.expm1(-2.0 * k)), interior)
        ctx.save_for_backward(a, b, c, k, inv_s, keep_a, keep_b, interior)
        ctx.shapes = (mean.shape, log_scale.shape)
        ctx.needs = ctx.needs_input_grad[1:]
        return out

    @staticmethod
    def backward(ctx, grad):
        a, b, c, k, inv_s, keep_a, keep_b, interior = ctx.saved_tensors
        mean_shape, scale_shape = ctx.shapes
        ga = torch.sigmoid(-a).mul_(keep_a).mul_(grad)
        gb = torch.sigmoid(-b).mul_(keep_b).mul_(grad)
        grad_mean = grad_scale = None
        d = gb - ga  # -d/dc
        if ctx.needs[0]:
            grad_mean = (d * inv_s).sum_to_size(mean_shape)
        if ctx.needs[1]:
            dk = (ga + gb).addcmul_(interior * grad, 2.0 / torch.expm1(2.0 * k))
            grad_scale = (c * d).addcmul_(k, dk, value=-1.0).sum_to_size(scale_shape)
        return None, grad_mean, grad_scale


def discretized_gaussian_log_prob(x_unit: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """Elementwise log P(bin of x) under N(mean, exp(log_scale)^2) on [-1, 1] (DDPM's L_0)."""
    centered = x_unit - mean
    inv_s = torch.exp(-log_scale)
    norm = torch.distributions.Normal(0.0, 1.0)
    cdf_plus = norm.cdf(inv_s * (centered + BIN_HALF_WIDTH))
    cdf_minus = norm.cdf(inv_s * (centered - BIN_HALF_WIDTH))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_minus = torch.log((1.0 - cdf_minus).clamp(min=1e-12))
    log_mid = torch.log((cdf_plus - cdf_minus).clamp(min=1e-12))
    return torch.where(
        x_unit < -0.999, log_cdf_plus, torch.where(x_unit > 0.999, log_one_minus_cdf_minus, log_mid)
    )


def bernoulli_log_prob(x_binary: Tensor, logits: Tensor) -> Tensor:
    """Elementwise log p(x) of binary data {0, 1} under Bernoulli(sigmoid(logits))."""
    return -F.binary_cross_entropy_with_logits(logits, x_binary, reduction="none")


def gaussian_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """Elementwise KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats."""
    return 0.5 * (
        logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0
    )

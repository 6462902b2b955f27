"""The variational bound of a diffusion model in bits/dim (Ho et al. eq. 5, L_0 discretized),
a Monte Carlo estimate with its standard error: all T terms at sampled x_t (``"all"``) or K
importance-sampled terms (``"estimate"``). Every term but the prior is an expectation over
x_t ~ q(x_t|x_0), so neither mode is exact."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ...nn.likelihood import discretized_gaussian_log_prob, gaussian_kl, nats_to_bpd
from .schedule import NoiseSchedule

NLL_MODES = ("estimate", "all")
# deprecated spellings of a mode: "exact" was the all-terms mode's name, but its terms are
# sampled at random x_t, so it was never exact
NLL_MODE_ALIASES = {"exact": "all"}
PROPOSALS = ("importance", "uniform")


@dataclass
class NLLResult:
    """A variational bound per image in bits/dim and its Monte Carlo standard error.

    ``kind`` is ``"all"`` (all T terms, each at ``draws`` sampled x_t) or ``"estimate"`` (K
    sampled terms per image); ``stderr`` is the Monte Carlo standard error of ``bpd`` for the
    given images (the noise of x_t and t, not the spread over images), ``detail`` says how it
    was computed. ``mean()`` and ``stderr_of_mean()`` give the batch figure.
    """

    bpd: Tensor
    stderr: Tensor
    kind: str
    detail: str

    def mean(self) -> float:
        return float(self.bpd.double().mean())

    def stderr_of_mean(self) -> float:
        n = max(self.bpd.numel(), 1)
        return float(self.stderr.double().square().sum().sqrt() / n)


def vb_terms_nats(net: nn.Module, schedule: NoiseSchedule, x0: Tensor, t: Tensor,
                  noise: Tensor, clip_x0: bool = False,
                  part: Literal["both", "decoder", "kl"] = "both") -> Tensor:
    """The bound's term at timestep t per item, in nats (float64): the discretized Gaussian
    decoder -log p(x_0 | x_1) at t = 0, KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) at t > 0,
    with p's variance beta-tilde and x_t = q_sample(x0, t, noise). ``part`` computes only
    one kind when the caller knows which timesteps it passes."""
    s = schedule
    xt = s.q_sample(x0, t, noise)
    eps = net(xt, t).float()
    x0_pred = s.predict_x0(xt, t, eps)
    if clip_x0:
        x0_pred = x0_pred.clamp(-1.0, 1.0)
    model_mean, logvar = s.q_posterior(x0_pred, xt, t)
    if part != "kl":
        decoder = -discretized_gaussian_log_prob(x0, model_mean, 0.5 * logvar)
        decoder = decoder.flatten(1).double().sum(1)
        if part == "decoder":
            return decoder
    true_mean, _ = s.q_posterior(x0, xt, t)
    kl = gaussian_kl(true_mean, logvar, model_mean, logvar).flatten(1).double().sum(1)
    return kl if part == "kl" else torch.where(t == 0, decoder, kl)


def timestep_proposal(schedule: NoiseSchedule) -> Tensor:
    """q(t) over t = 1..T-1 for the estimate: half uniform, half proportional to 1/t.

    The KL terms fall off roughly as 1/t (the first few dominate the bound), so drawing t
    with probability ~1/t and weighting by 1/q(t) cuts the standard error of a trained
    model's estimate about 7-fold against uniform draws; the uniform half bounds every
    weight by 2(T-1), which keeps it robust for models whose large-t terms are large
    (an untrained one: 9-fold lower than uniform).
    """
    t = torch.arange(1, schedule.timesteps, dtype=torch.float64, device=schedule.betas.device)
    inv = 1.0 / t
    return 0.5 / len(t) + 0.5 * inv / inv.sum()


def _labelled(net, y: Tensor, x: Tensor, t: Tensor) -> Tensor:
    return net(x, t, y)


def _terms(net, schedule, x0: Tensor, img: Tensor, t: Tensor, gen, batch_size: int,
           clip_x0: bool, part: str, labels: Tensor | None = None) -> Tensor:
    """vb_terms_nats for the (image index, timestep) pairs, ``batch_size`` at a time; a
    class-conditional net is given each image's label from ``labels``."""
    out = torch.empty(img.numel(), dtype=torch.float64, device=x0.device)
    for s in range(0, img.numel(), batch_size):
        xi = x0[img[s:s + batch_size]]
        noise = torch.randn(xi.shape, generator=gen, device=xi.device)
        f = net if labels is None else functools.partial(_labelled, net,
                                                          labels[img[s:s + batch_size]])
        out[s:s + batch_size] = vb_terms_nats(f, schedule, xi, t[s:s + batch_size], noise,
                                              clip_x0, part)
    return out


def variational_bound(net: nn.Module, schedule: NoiseSchedule, x0: Tensor, *, mode: str,
                      K: int, proposal: str, batch_size: int, clip_x0: bool, gen,
                      dims: int, draws: int = 2, labels: Tensor | None = None) -> NLLResult:
    """The bound in bits/dim per image of ``x0`` (in [-1, 1]); see ``DDPM.nll_with_stderr``.
    ``labels`` [N]: each image's class for a class-conditional net."""
    mode = NLL_MODE_ALIASES.get(mode, mode)
    n, dev, T = x0.shape[0], x0.device, schedule.timesteps
    if n == 0:
        empty = torch.empty(0)
        return NLLResult(bpd=empty, stderr=empty, kind=mode, detail="no images")
    every = torch.arange(n, device=dev)
    total = schedule.prior_nats(x0)
    stderr = torch.zeros(n, dtype=torch.float64, device=dev)
    if mode == "all":
        # every term t = 0..T-1 (L_0 and the T-1 KL terms) at ``draws`` independent x_t
        # (draws x T network calls per image); the draws are ordered draw-major so that
        # the first draw's noise matches draws=1. The terms use independent noise, so the
        # variance of the sum of the per-term means is the sum of the per-term variances
        # over draws, each estimated by its sample variance (ddof 1).
        t = torch.arange(T, device=dev).repeat(draws * n)
        img = every.repeat_interleave(T).repeat(draws)
        terms = _terms(net, schedule, x0, img, t, gen, batch_size, clip_x0,
                       "both", labels=labels).view(draws, n, T)
        total += terms.mean(0).sum(1)
        if draws > 1:
            stderr = (terms.var(0).sum(1) / draws).sqrt()
        detail = (f"all {T} terms, x_t sampled, {draws} draw{'s' if draws > 1 else ''} each"
                  + ("" if draws > 1 else "; standard error unknown (reported as 0)"))
    elif mode == "estimate" and proposal == "uniform":
        t = torch.randint(0, T, (n * K,), generator=gen, device=dev)
        terms = _terms(net, schedule, x0, every.repeat_interleave(K), t, gen, batch_size,
                       clip_x0, "both", labels=labels).view(n, K)
        total += T * terms.mean(1)
        stderr = T * terms.std(1) / math.sqrt(K)
        detail = f"K={K} of {T} terms per image drawn uniformly"
    else:
        total += _terms(net, schedule, x0, every, torch.zeros(n, dtype=torch.long, device=dev),
                        gen, batch_size, clip_x0, "decoder", labels=labels)
        if T > 1:
            q = timestep_proposal(schedule)
            idx = torch.multinomial(q, n * K, replacement=True, generator=gen)
            terms = _terms(net, schedule, x0, every.repeat_interleave(K), idx + 1, gen,
                           batch_size, clip_x0, "kl", labels=labels)
            weighted = (terms / q[idx]).view(n, K)
            total += weighted.mean(1)
            stderr = weighted.std(1) / math.sqrt(K)
            detail = (f"K={K} of {T - 1} KL terms per image, importance-sampled; "
                      "prior exact, L_0 at one x_1 draw")
        else:
            detail = "T=1: prior exact, L_0 at one x_1 draw"
    return NLLResult(bpd=nats_to_bpd(total, dims).float().cpu(),
                     stderr=nats_to_bpd(stderr, dims).float().cpu(), kind=mode, detail=detail)

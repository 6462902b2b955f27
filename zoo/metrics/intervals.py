"""Bootstrap intervals of the feature metrics: resample the generated side, keep the reference.

``bootstrap_intervals`` takes the extractor features of both sides once and draws ``B``
resamples of the *generated* features with replacement (as multinomial counts, from a
generator seeded with ``seed``); the reference features stay fixed. Each metric is
recomputed per draw from quantities computed once over the full sample, so no draw runs
the network or recomputes a reference-only quantity:

- FID: the weighted mean and covariance of the draw, against the reference's; the trace
  term ``tr sqrt(S1 S2)`` as ``sum sqrt(eig(A S1 A))`` with ``A = S2^(1/2)`` (one
  symmetric eigen-decomposition per draw, batched). On the full sample this equals
  torch-fidelity's ``scipy.linalg.sqrtm`` figure to ~1e-9 relative. With fewer samples
  than feature dimensions (N < D, InceptionV3's D=2048) the same eigenvalues come from
  the draw's N x N Gram matrix (``_fid_draws_gram``), much faster.
- KID: the unbiased squared MMD with torch-fidelity's kernel ``(x.y / d + 1)^3`` over the
  whole draw (the expectation of torch-fidelity's mean over subsets), pairs of copies of
  one sample left out of the generated-generated term.
- precision: the share of generated samples inside a reference ball (radii fixed), a mean
  over the generated samples, so a draw is a weighted mean.
- recall: torch-fidelity's k=3 definition on the draw: the generated balls' radii are the
  k-th nearest *other* sample of the draw (copies of a sample are not its neighbours,
  other samples count with their multiplicity).
- density (a mean over the generated samples) and coverage (reference balls holding a
  sample of the draw), with the reference radii fixed.
- IS: torch-fidelity's ``isc`` on the draw's logits (no reference side): the draw's
  samples in index order, shuffled with torch-fidelity's permutation for ``seed``, cut
  into its 10 splits; per split ``exp(mean_i H(p_i, q) - H(p_i))`` computed as
  ``exp(sum q log(1/q) - mean_i H(p_i))`` with ``q`` the split's mean class distribution,
  so a draw costs sums of the softmax computed once. On the full sample this is
  torch-fidelity's figure to ~1e-12 relative (tests/test_metrics_intervals.py).
- any other function metric over features or logits: ``metric.compute(real, fake[draw])``
  per draw (``real`` None for a metric without a reference side).

The interval is the 2.5th and 97.5th percentile of the draws (the percentile bootstrap),
by default shifted by the draws' bias (their mean minus the full-sample figure, computed
the same way): a resample holds ~63% distinct samples, so set-valued figures (recall,
coverage) fall well below the full-sample figure on every draw, and a plug-in FID near 0
rises; the plain percentile interval would then miss the figure it is reported with.
The shift keeps the interval's width (the spread of the draws) and centres it on the
figure; see tests/test_metrics_intervals.py for its measured coverage.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from . import registry
from .density_coverage import knn_radii, sq_dists, sq_norms

LEVEL = 0.95
#: numbers per batched block (draws x D x D, draws x N); bounds memory at large D or N
BLOCK = 1 << 24


def resample_counts(n: int, draws: int, seed: int) -> Tensor:
    """``[draws, n]`` multinomial counts: how often each generated sample is in each draw."""
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randint(n, (draws, n), generator=g)
    return torch.zeros(draws, n, dtype=torch.float64).scatter_add_(
        1, idx, torch.ones(draws, n, dtype=torch.float64))


def percentile_interval(values, level: float = LEVEL, centre: float | None = None
                        ) -> list[float]:
    """The ``level`` percentile interval of bootstrap ``values``; with ``centre`` (the
    full-sample figure) shifted by the draws' bias ``mean(values) - centre``, so a figure
    whose resamples are biased (a plug-in FID near 0, recall and coverage on a draw's ~63%
    distinct samples) still sits inside its interval."""
    a = np.asarray(values, dtype=np.float64)
    lo, hi = np.percentile(a, [50 * (1 - level), 50 * (1 + level)])
    shift = 0.0 if centre is None else float(a.mean()) - float(centre)
    return [float(lo - shift), float(hi - shift)]


# -- FID ---------------------------------------------------------------------------------------

def _sym_sqrt(s: Tensor) -> Tensor:
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(fake: Tensor, real: Tensor) -> float:
    """FID of two feature sets (float64 mean and covariance, eigen-based trace term)."""
    ones = torch.ones(1, fake.shape[0], dtype=torch.float64)
    return float(fid_draws(fake, real, ones)[0])


def fid_draws(fake: Tensor, real: Tensor, counts: Tensor, gram: bool | None = None) -> Tensor:
    """FID of each draw (``counts [B, N]``) of ``fake [N, D]`` against ``real [M, D]``.

    ``gram`` (default: when N < D, e.g. 2000 InceptionV3 features of D=2048): the trace
    term from the draw's N x N Gram matrix instead of a D x D one (``_fid_draws_gram``).
    """
    x = fake.detach().cpu().double()
    y = real.detach().cpu().double()
    mu2 = y.mean(0)
    s2 = torch.cov(y.T).reshape(y.shape[1], y.shape[1])
    if gram or (gram is None and x.shape[0] < x.shape[1]):
        return _fid_draws_gram(x, mu2, s2, counts)
    a = _sym_sqrt(s2)
    n, d = x.shape
    out = torch.empty(counts.shape[0], dtype=torch.float64)
    step = max(1, BLOCK // (d * max(d, n)))
    for b in range(0, counts.shape[0], step):
        c = counts[b:b + step]
        m = c.sum(1, keepdim=True)  # [b, 1]
        mu1 = c @ x / m  # [b, D]
        # weighted scatter: sum_i c_i x_i x_i^T - m mu mu^T, over (m - 1)
        xc = x[None] - mu1[:, None]  # [b, N, D]
        s1 = (xc * c[:, :, None]).transpose(1, 2) @ xc / (m[:, :, None] - 1)
        ev = torch.linalg.eigvalsh(a @ s1 @ a)
        tr_sqrt = ev.clamp_min(0).sqrt().sum(1)
        diff = mu1 - mu2
        out[b:b + step] = ((diff * diff).sum(1) + s1.diagonal(dim1=1, dim2=2).sum(1)
                           + s2.trace() - 2 * tr_sqrt)
    return out


def _fid_draws_gram(x: Tensor, mu2: Tensor, s2: Tensor, counts: Tensor) -> Tensor:
    """``fid_draws`` through the N x N Gram matrix, exact: with ``Z = W^(1/2) (X - 1 mu1^T)
    S2^(1/2) / sqrt(m - 1)`` (``W`` the draw's counts), ``A S1 A = Z^T Z`` has the nonzero
    eigenvalues of ``Z Z^T = W^(1/2) (X - 1 mu1^T) S2 (X - 1 mu1^T)^T W^(1/2) / (m - 1)``,
    whose centred middle is ``K - v 1^T - 1 v^T + s`` with ``K = X S2 X^T`` computed once
    (``v = K c / m``, ``s = c^T K c / m^2``). Per draw: one eigen-decomposition of the
    draw's u x u block (u distinct samples, ~0.63 N) instead of forming two D x D products
    and decomposing D x D; no square root of S2 either."""
    k = x @ s2 @ x.T  # [N, N]
    sq = (x * x).sum(1)  # for tr S1
    tr_s2 = s2.trace()
    out = torch.empty(counts.shape[0], dtype=torch.float64)
    for b, c in enumerate(counts):
        u = c.nonzero()[:, 0]
        cu = c[u]
        m = cu.sum()
        ku = k[u][:, u]
        v = ku @ cu / m
        sc = cu @ v / m
        w = cu.sqrt()
        g = (ku - v[:, None] - v[None, :] + sc) * w[:, None] * w[None, :] / (m - 1)
        tr_sqrt = torch.linalg.eigvalsh(g).clamp_min(0).sqrt().sum()
        mu1 = cu @ x[u] / m
        tr_s1 = (cu @ sq[u] - m * (mu1 * mu1).sum()) / (m - 1)
        diff = mu1 - mu2
        out[b] = (diff * diff).sum() + tr_s1 + tr_s2 - 2 * tr_sqrt
    return out


# -- KID ---------------------------------------------------------------------------------------

def _poly_kernel(a: Tensor, b: Tensor) -> Tensor:
    return (a @ b.T / a.shape[1] + 1) ** 3


def kid_reference_term(real: Tensor, chunk: int = 2048) -> float:
    """KID's reference-reference term: the mean kernel over distinct pairs of ``real``
    (the same for every generated set, so callers scoring many may compute it once)."""
    y = real.detach().cpu().double()
    m = y.shape[0]
    k_yy = 0.0
    for i in range(0, m, chunk):
        k = _poly_kernel(y[i:i + chunk], y)
        k_yy += float(k.sum()) - float(k[:, i:i + chunk].diagonal().sum())
    return k_yy / (m * (m - 1))


def kid_draws(fake: Tensor, real: Tensor, counts: Tensor, chunk: int = 2048,
              k_yy: float | None = None) -> Tensor:
    """Unbiased squared MMD (torch-fidelity's cubic kernel) of each draw against ``real``;
    ``k_yy``: ``kid_reference_term(real)`` when already known."""
    x = fake.detach().cpu().double()
    y = real.detach().cpu().double()
    n = x.shape[0]
    if k_yy is None:
        k_yy = kid_reference_term(y, chunk)
    k_xy = torch.cat([_poly_kernel(x[i:i + chunk], y).mean(1) for i in range(0, n, chunk)])
    c = counts
    tot = c.sum(1)
    same = (c * c).sum(1)  # pairs of copies of one sample (its own diagonal included)
    xx = torch.zeros(c.shape[0], dtype=torch.float64)
    for i in range(0, n, chunk):  # c^T K c over row blocks of K, never N x N at once
        k = _poly_kernel(x[i:i + chunk], x)
        ci = c[:, i:i + chunk]
        xx += ((c @ k.T) * ci).sum(1) - (ci * ci * k[:, i:i + chunk].diagonal()).sum(1)
    return xx / (tot * tot - same) + k_yy - 2 * (c @ k_xy) / tot


# -- precision / recall (torch-fidelity, k = 3) ----------------------------------------------

def _kth_other(d: Tensor, c: Tensor, k: int) -> Tensor:
    """Per row of ``d [u, u]`` (distances among a draw's distinct samples, each with
    multiplicity ``c [u]``): the distance to the k-th nearest other sample of the draw
    (it is among the k nearest distinct others, each counting at least once)."""
    d = d.clone()
    d.fill_diagonal_(float("inf"))
    kk = min(k, d.shape[1])
    dist, order = d.topk(kk, 1, largest=False)
    reach = c[order].cumsum(1)
    pos = (reach < k).sum(1, keepdim=True).clamp_max(kk - 1)
    return dist.gather(1, pos)[:, 0]


def pr_draws(fake: Tensor, real: Tensor, counts: Tensor,
             k: int = registry.PR_NEIGHBORHOOD) -> tuple[Tensor, Tensor]:
    """(precision, recall) of each draw, torch-fidelity's definition (float32 ``cdist``)."""
    x = fake.detach().cpu().float()
    y = real.detach().cpu().float()
    r_real = torch.cat([torch.cdist(y[i:i + 4096], y).kthvalue(k + 1).values
                        for i in range(0, y.shape[0], 4096)])
    d_yx = torch.cdist(y, x)  # [M, N]
    inside = (d_yx <= r_real[:, None]).any(0).double()  # generated sample in a real ball
    precision = counts @ inside / counts.sum(1)
    d_xx = torch.cdist(x, x)
    recall = torch.empty(counts.shape[0], dtype=torch.float64)
    r = torch.empty(x.shape[0], dtype=d_yx.dtype)
    for b in range(counts.shape[0]):
        u = counts[b].nonzero()[:, 0]
        r.fill_(-float("inf"))  # a sample not in the draw has no ball
        r[u] = _kth_other(d_xx[u][:, u], counts[b, u], k)
        recall[b] = (d_yx <= r).any(1).double().mean()
    return precision, recall


# -- density / coverage (prdc, k = 5) ----------------------------------------------------------

def dc_draws(fake: Tensor, real: Tensor, counts: Tensor,
             nearest_k: int = registry.DC_NEAREST_K) -> tuple[Tensor, Tensor]:
    """(density, coverage) of each draw; the reference radii as ``density_coverage``'s."""
    y = real.detach().cpu().double()
    x = fake.detach().cpu().double()
    radii = knn_radii(y, nearest_k)
    y_sq, x_sq = sq_norms(y), sq_norms(x)
    present = (counts > 0).float().T  # [N, B]
    per_fake = torch.zeros(x.shape[0], dtype=torch.float64)
    covered = torch.zeros(counts.shape[0], dtype=torch.float64)
    for i in range(0, y.shape[0], 1024):  # real rows, as density_coverage's
        d = sq_dists(y[i:i + 1024], y_sq[i:i + 1024], x, x_sq)
        ball = d < radii[i:i + 1024, None]
        per_fake += ball.sum(0).double()  # real balls each generated sample falls in
        # a real ball is covered when the draw holds a sample inside it
        covered += ((ball.float() @ present) > 0).sum(0).double()
    density = counts @ per_fake / (nearest_k * counts.sum(1))
    return density, covered / y.shape[0]


# -- IS (torch-fidelity's isc: shuffled with its rng_seed, mean over splits) -----------------

def tf_seed(seed: int) -> int:
    """torch-fidelity's ``rng_seed`` for a zoo seed: it seeds numpy's legacy RandomState,
    which takes [0, 2**32), while a zoo seed is any 64-bit integer (reduced mod 2**32)."""
    return int(seed) % 2**32


def is_draws(logits: Tensor, counts: Tensor, seed: int,
             splits: int = registry.IS_SPLITS) -> Tensor:
    """Inception score of each draw (``counts [B, N]``) of ``logits [N, C]``: the draw's
    samples (each as often as it was drawn, in index order) go through torch-fidelity's
    shuffle (``np.random.RandomState(tf_seed(seed)).permutation``) and its ``splits`` splits; the
    mean of the splits' ``exp(KL)``."""
    z = logits.detach().cpu().double()
    n = z.shape[0]
    splits = min(splits, n)
    p = z.softmax(1)
    neg_h = (p * z.log_softmax(1)).sum(1)  # sum_c p log p of each sample
    perm = torch.from_numpy(np.random.RandomState(tf_seed(seed)).permutation(n))
    bounds = [i * n // splits for i in range(splits + 1)]
    out = torch.empty(counts.shape[0], dtype=torch.float64)
    for b, c in enumerate(counts):
        idx = torch.repeat_interleave(torch.arange(n), c.long())[perm]
        scores = []
        for i in range(splits):
            part = idx[bounds[i]:bounds[i + 1]]
            q = p[part].mean(0)
            # mean_i KL(p_i || q) = mean_i sum p_i log p_i - sum q log q
            kl = neg_h[part].mean() - (q * q.log()).sum()
            scores.append(kl.exp())
        out[b] = torch.stack(scores).mean()
    return out


# -- the registry's metrics ---------------------------------------------------------------------

def _generic(metric: registry.Metric) -> Callable:
    def draws(fake: Tensor, real: Tensor, counts: Tensor) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for c in counts:
            idx = torch.repeat_interleave(torch.arange(c.shape[0]), c.long())
            for key, v in metric.compute(real, fake[idx]).items():
                out.setdefault(key, []).append(float(v))
        return out
    return draws


def _fast(name: str, seed: int) -> Callable | None:
    def fid(fake, real, counts):
        return {"fid": fid_draws(fake, real, counts)}

    def kid(fake, real, counts):
        return {"kid": kid_draws(fake, real, counts)}

    def pr(fake, real, counts):
        return dict(zip(("precision", "recall"), pr_draws(fake, real, counts), strict=True))

    def dc(fake, real, counts):
        return dict(zip(("density", "coverage"), dc_draws(fake, real, counts), strict=True))

    def isc(fake, real, counts):
        return {"is": is_draws(fake, counts, seed)}

    return {"fid": fid, "kid": kid, "is": isc, "pr": pr, "dc": dc}.get(name)


def interval_metrics(metrics) -> tuple[str, ...]:
    """The metrics among ``metrics`` with a column that gets an interval."""
    return tuple(m for m in metrics if not registry.get(m).own_interval
                 and any(c.interval for c in registry.get(m).columns))


def bootstrap_intervals(features: dict[str, tuple[Tensor, Tensor | None]], draws: int,
                        seed: int,
                        level: float = LEVEL, centred: bool = True,
                        figures: dict | None = None,
                        replicates: dict | None = None) -> dict[str, list[float]]:
    """``{<column>_ci95: [lo, hi]}`` of each interval column of the metrics in ``features``
    (``{metric: (fake [N, D], real [M, D])}``; ``real`` None for a metric without a
    reference side, IS, whose ``fake`` are the logits), from ``draws`` resamples of the
    generated side seeded with ``seed`` (the same draws for every metric; IS's splits are
    also shuffled with ``seed``, as torch-fidelity's ``rng_seed``). ``centred``: the
    percentile interval shifted by the draws' bias against the full-sample figure
    (``percentile_interval``); False: the plain percentile interval. ``figures``: the
    figures as reported (``{column: value}``); a centred interval is moved onto each, so a
    figure computed another way than the draws' full-sample one still sits inside its
    interval (KID: torch-fidelity's mean over random reference subsets, against the draws'
    MMD over the whole reference set; the two differ by the subsets' noise).
    ``replicates`` (a dict): filled with ``{column: [B] float64 array}``, each draw's
    figure moved as the interval is (onto the figure as reported), for combining rows
    later (``zoo.bench.seeds``: intervals over training seeds, paired differences)."""
    out: dict[str, list[float]] = {}
    for name, (fake, real) in features.items():
        metric = registry.get(name)
        n = fake.shape[0]
        # row 0: the full sample, the figure the draws are centred on
        counts = torch.cat([torch.ones(1, n, dtype=torch.float64),
                            resample_counts(n, draws, seed)])
        values = (_fast(name, seed) or _generic(metric))(fake, real, counts)
        for col in metric.columns:
            if col.interval and col.key in values:
                v = np.asarray(values[col.key], dtype=np.float64)
                lo, hi = percentile_interval(v[1:], level, v[0] if centred else None)
                shown = (figures or {}).get(col.key)
                move = 0.0
                if centred and isinstance(shown, (int, float)) and np.isfinite(shown):
                    move = shown - v[0]
                out[f"{col.key}_ci95"] = [float(lo + move), float(hi + move)]
                if replicates is not None:
                    replicates[col.key] = v[1:] + move
    return out

"""An extractor's validity card: does each figure measured with its features respond to the
defects a user cares about, and at what N can it be read to 5%?

On held-out real images (the test split, cut into a fixed *reference* half and a *pool*
the "generated" sets are drawn from), each defect is applied at five graded severities to
``n`` pool images, and every figure is measured against the reference with zoo's own
metric functions (``intervals``' FID, KID and precision/recall, ``density_coverage``,
``memorization``):

- ``noise`` (Gaussian, sigma a fraction of 255), ``blur`` (Gaussian, sigma in pixels),
  ``shift`` (every image moved down-right by k pixels, edges repeated), ``quantize`` (to
  fewer bits per channel);
- ``drop_classes``: 1..5 of the classes left out of the set (the dataset's labels, or
  k-means clusters of the extractor's features where it has none: mode dropping);
- ``outliers``: a fraction of the set replaced by uniform-noise images;
- ``copycat``: a fraction of the set replaced by training images (the memorization check
  must flag it; the other figures are not expected to notice, which is the point).

Per defect and figure: the Spearman correlation of severity and figure, and a verdict
against the direction the figure should move (``EXPECTED``): ``pass`` at
``|rho| >= RHO_PASS`` in that direction, ``fail`` otherwise, ``n/a`` where no direction is
expected. Then the smallest N of a grid at which each figure's 95% bootstrap interval
(``intervals.bootstrap_intervals``, the generated side resampled) is within 5% of its value,
on the pool with noise of severity ``PROBE`` (figures like a middling model's). The same
response table is measured with a randomly initialised network of the classifier's
architecture (``random_extractor``), so the card shows what training the extractor added.
``validity_card.write_card`` writes the card as JSON, Markdown and a figure.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import ConfigError
from ..errors import ZooError
from .density_coverage import density_coverage
from .features import ClassifierConfig, ClassifierNet, Extractor, save_bytes
from .intervals import bootstrap_intervals, fid_draws, kid_draws, pr_draws
from .memorization import memorization
from .registry import DC_NEAREST_K

#: defect -> its five severities, mildest first
LEVELS: dict[str, tuple[float, ...]] = {
    "noise": (0.04, 0.08, 0.16, 0.24, 0.32),  # sigma / 255
    "blur": (0.5, 0.8, 1.2, 1.6, 2.0),  # sigma in pixels
    "shift": (1, 2, 3, 4, 5),  # pixels, down and right
    "quantize": (5, 4, 3, 2, 1),  # bits per channel
    "drop_classes": (1, 2, 3, 4, 5),  # classes (or clusters) of CLASSES left out
    "outliers": (0.1, 0.2, 0.3, 0.4, 0.5),  # fraction of uniform-noise images
    "copycat": (0.2, 0.4, 0.6, 0.8, 1.0),  # fraction of training images
}
DEFECTS = tuple(LEVELS)
FIGURES = ("fid", "kid", "precision", "recall", "density", "coverage",
           "memorization_ratio", "near_copies")
_WORSE = {"fid": +1, "kid": +1, "precision": -1, "recall": -1, "density": -1, "coverage": -1}
#: defect -> figure -> +1 should rise with severity, -1 fall, 0 no direction expected.
#: Precision and density measure fidelity (are the samples on the real manifold?), so a
#: set of real images with classes missing is not expected to lower them; the quality
#: figures are not expected to see a copycat (it is real data), the memorization check is.
EXPECTED: dict[str, dict[str, int]] = {
    d: {f: _WORSE.get(f, 0) for f in FIGURES} for d in DEFECTS}
EXPECTED["drop_classes"].update(precision=0, density=0)
EXPECTED["copycat"] = {f: 0 for f in FIGURES} | {"memorization_ratio": -1, "near_copies": +1}
RHO_PASS = 0.9
CLASSES = 10  #: pseudo-classes (k-means clusters) of an unlabelled dataset
WITHIN = 0.05  #: the interval half-width asked of a figure, relative to its value
N_GRID = (250, 500, 1000, 2000, 5000)
#: the noise severity of the set the N is measured on: figures of a middling model (the
#: classifiers' FID ~6-10, precision ~0.6-0.75, recall ~0.1-0.3, as a small VAE's), so no
#: figure sits at its floor, where a relative width means nothing
PROBE = 2
#: the defaults of ``measure``, each capped by what the data holds: a few minutes of one
#: CPU thread per card with a small CNN
N_GENERATED, N_REFERENCE, N_TRAIN = 1000, 2500, 5000
#: near copies (the share of samples closer to a training image than 99% of held-out
#: images are) at which the memorization check counts as flagging a set
COPY_FLAG = 0.5

Features = Callable[[Tensor], Tensor]


@dataclasses.dataclass(frozen=True)
class Yardstick:
    """What a card measures with: a name, the sha256 of its weights, and a function from
    uint8 ``[N, C, H, W]`` images to float features ``[N, D]`` (the layer FID reads)."""

    name: str
    sha256: str
    features: Features


def yardstick(extractor: Extractor, batch_size: int = 500, device=None) -> Yardstick:
    """A resolved extractor's FID/KID/PR layer as a Yardstick."""
    module = extractor.build([extractor.layers["fid"]], device)
    return Yardstick(extractor.name, extractor.sha256,
                     _batched(lambda x: module(x)[0], batch_size, device))


def random_extractor(reference: Extractor | ClassifierConfig, seed: int = 0,
                     image_shape: Sequence[int] | None = None) -> Yardstick:
    """A ClassifierNet of the reference classifier's architecture (its card's config; a
    default one of ``image_shape``'s channels for any other extractor) with fresh weights
    drawn from ``seed``: the baseline that shows what training the extractor added."""
    if isinstance(reference, ClassifierConfig):
        config = reference
    else:
        cfg = _classifier_config(reference)
        config = cfg or ClassifierConfig(in_channels=int((image_shape or (3,))[0]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = ClassifierNet(config).eval().requires_grad_(False)
    sha = hashlib.sha256(save_bytes(net.state_dict())).hexdigest()
    return Yardstick(f"random-init (seed {seed})", sha, _batched(lambda x: net(x)[0], 500))


def _classifier_config(extractor: Extractor) -> ClassifierConfig | None:
    from .features import classifier_card

    try:
        cfg = classifier_card(extractor.weights)[0]["config"]
    except ZooError:  # not a classifier (InceptionV3): a default config
        return None
    return ClassifierConfig(**{**cfg, "channels": tuple(cfg["channels"])})


def _batched(fn: Callable[[Tensor], Tensor], batch_size: int, device=None) -> Features:
    @torch.no_grad()
    def features(x: Tensor) -> Tensor:
        parts = [fn(x[i:i + batch_size].to(device) if device else x[i:i + batch_size])
                 for i in range(0, x.shape[0], batch_size)]
        return torch.cat(parts).float().cpu()
    return features


# -- the defects ---------------------------------------------------------------------------


def _to_uint8(x: Tensor) -> Tensor:
    return x.round().clamp(0, 255).to(torch.uint8)


def gaussian_noise(x: Tensor, sigma: float, gen: torch.Generator) -> Tensor:
    """``x`` plus Gaussian noise of standard deviation ``sigma`` * 255, rounded."""
    noise = torch.randn(x.shape, generator=gen) * (float(sigma) * 255.0)
    return _to_uint8(x.float() + noise)


def blur(x: Tensor, sigma: float) -> Tensor:
    """A Gaussian blur of ``sigma`` pixels (separable, edges repeated)."""
    r = max(1, int(np.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / float(sigma)) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x.float(), (r, r, r, r), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    y = F.conv2d(y, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return _to_uint8(y)


def shift(x: Tensor, pixels: int) -> Tensor:
    """Every image moved ``pixels`` down and right, the top and left edges repeated."""
    p = int(pixels)
    h, w = x.shape[2:]
    return F.pad(x.float(), (p, 0, p, 0), mode="replicate")[:, :, :h, :w].to(torch.uint8)


def quantize(x: Tensor, bits: int) -> Tensor:
    """Each channel rounded to ``2 ** bits`` evenly spaced levels of 0..255."""
    top = 2 ** int(bits) - 1
    return _to_uint8((x.float() / 255.0 * top).round() / top * 255.0)


def mix(x: Tensor, other: Tensor, fraction: float, gen: torch.Generator) -> Tensor:
    """``x`` with a random ``fraction`` of its images replaced by random images of ``other``."""
    n = x.shape[0]
    k = int(round(float(fraction) * n))
    out = x.clone()
    where = torch.randperm(n, generator=gen)[:k]
    out[where] = other[torch.randint(other.shape[0], (k,), generator=gen)]
    return out


def uniform_noise_images(n: int, shape: Sequence[int], gen: torch.Generator) -> Tensor:
    """``n`` images of independent uniform pixels (the outliers)."""
    return torch.randint(0, 256, (n, *shape), generator=gen, dtype=torch.uint8)


def drop_classes(pool: Tensor, groups: Tensor, dropped: Sequence[int], n: int,
                 gen: torch.Generator) -> Tensor:
    """``n`` images of ``pool`` whose group (class or cluster) is not in ``dropped``; drawn
    with replacement only where fewer than ``n`` remain."""
    keep = (~torch.isin(groups, torch.as_tensor(list(dropped), dtype=groups.dtype))
            ).nonzero().flatten()
    if keep.numel() == 0:
        raise ConfigError("dropping the classes leaves no image")
    if keep.numel() >= n:
        pick = keep[torch.randperm(keep.numel(), generator=gen)[:n]]
    else:
        pick = keep[torch.randint(keep.numel(), (n,), generator=gen)]
    return pool[pick]


def kmeans(x: Tensor, k: int, seed: int = 0, iters: int = 25) -> Tensor:
    """Cluster labels ``[N]`` of Lloyd's k-means on ``x [N, D]``, started from ``k``
    distinct rows drawn with ``seed`` (pseudo-classes of unlabelled images)."""
    gen = torch.Generator().manual_seed(int(seed))
    x = x.double()
    centres = x[torch.randperm(x.shape[0], generator=gen)[:k]].clone()
    labels = torch.zeros(x.shape[0], dtype=torch.int64)
    for _ in range(iters):
        labels = torch.cdist(x, centres).argmin(1)
        for j in range(centres.shape[0]):
            members = x[labels == j]
            if members.shape[0]:
                centres[j] = members.mean(0)
    return labels


# -- the sets and their figures --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """The card's images: the held-out split cut into a fixed ``reference`` and a ``pool``
    (with its classes, -1 where unlabelled) the generated sets are drawn from, and the
    ``train`` images the copycat returns and the memorization check compares with."""

    reference: Tensor
    pool: Tensor
    pool_labels: Tensor
    train: Tensor

    @property
    def labelled(self) -> bool:
        return self.pool_labels.numel() > 0 and int(self.pool_labels.min()) >= 0


def held_out(images: Tensor, labels: Tensor | None, train: Tensor, n_reference: int,
             seed: int = 0) -> HeldOut:
    """Cut the held-out ``images`` (in a seeded order) into ``n_reference`` reference
    images and the pool (the rest)."""
    n = images.shape[0]
    if not 2 * DC_NEAREST_K < n_reference < n:
        raise ConfigError(f"a card needs more held-out images than its {n_reference} "
                          f"reference images, and more than {2 * DC_NEAREST_K}; got {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    labels = torch.full((n,), -1) if labels is None else torch.as_tensor(labels).long()
    ref, pool = order[:n_reference], order[n_reference:]
    return HeldOut(images[ref], images[pool], labels[pool], train)


def _gen(seed: int, *parts: int) -> torch.Generator:
    mixed = int(seed)
    for p in parts:
        mixed = (mixed * 1_000_003 + int(p) + 1) % 2**62
    return torch.Generator().manual_seed(mixed)


def defective(defect: str, severity: int, data: HeldOut, n: int, groups: Tensor,
              seed: int = 0) -> Tensor:
    """The generated set of ``defect`` at ``severity`` (1..5; 0: the clean set), ``n``
    uint8 images; the same images for the same arguments, whatever the extractor."""
    clean = data.pool[:n]
    if severity == 0:
        return clean
    level = LEVELS[defect][severity - 1]
    gen = _gen(seed, DEFECTS.index(defect), severity)
    if defect == "noise":
        return gaussian_noise(clean, level, gen)
    if defect == "blur":
        return blur(clean, level)
    if defect == "shift":
        return shift(clean, int(level))
    if defect == "quantize":
        return quantize(clean, int(level))
    if defect == "drop_classes":
        order = torch.randperm(int(groups.max()) + 1, generator=_gen(seed, 99))
        return drop_classes(data.pool, groups, order[:int(level)].tolist(), n, gen)
    if defect == "outliers":
        return mix(clean, uniform_noise_images(n, clean.shape[1:], gen), level, gen)
    if defect == "copycat":
        return mix(clean, data.train, level, gen)
    raise ConfigError(f"unknown defect {defect!r}; choose from {', '.join(DEFECTS)}")


def figures(fake: Tensor, real: Tensor, train: Tensor) -> dict[str, float]:
    """Every figure of generated features ``fake`` against reference features ``real``
    (and training features ``train``), with zoo's metric functions."""
    ones = torch.ones(1, fake.shape[0], dtype=torch.float64)
    precision, recall = pr_draws(fake, real, ones)
    out = {"fid": float(fid_draws(fake, real, ones)[0]),
           "kid": float(kid_draws(fake, real, ones)[0]),
           "precision": float(precision[0]), "recall": float(recall[0]),
           **density_coverage(real, fake, DC_NEAREST_K)}
    mem = memorization(real, fake, train=train)
    out.update(memorization_ratio=mem["memorization_ratio"], near_copies=mem["near_copies"])
    return {k: float(out[k]) for k in FIGURES}


def spearman(values: Sequence[float]) -> float:
    """Spearman's rho of severities 1..len(values) against ``values`` (ties ranked by
    their mean rank); 0 for a figure that does not change."""
    from scipy.stats import spearmanr

    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)) or np.ptp(v) == 0:
        return 0.0
    # rounded: a rank correlation of five points is a multiple of 0.05, and 0.8999...
    # must not fail a check at 0.9
    return round(float(spearmanr(np.arange(1, len(v) + 1), v).statistic), 6)


def saturates(values: Sequence[float], expected: int) -> bool:
    """Whether ``values`` never step against the ``expected`` direction but stall (ties,
    e.g. a figure at its floor): a failed check of a figure that did respond."""
    steps = np.diff(np.asarray(values, dtype=np.float64)) * expected
    return expected != 0 and bool(np.all(steps >= 0)) and bool(np.any(steps == 0))


def verdict(rho: float, expected: int) -> str:
    """``pass`` when ``rho`` goes the ``expected`` way (+1 rises, -1 falls) by at least
    ``RHO_PASS``, ``fail`` when not, ``n/a`` when no direction is expected (0)."""
    if expected == 0:
        return "n/a"
    return "pass" if rho * expected >= RHO_PASS else "fail"


def response(ys: Yardstick, data: HeldOut, n: int, groups: Tensor, seed: int = 0,
             progress: Callable[[str], None] | None = None) -> dict:
    """How each figure under ``ys`` responds to each defect: ``{"clean": {figure: value},
    "defects": {defect: {"levels", "values": {figure: [5]}, "rho", "expected", "verdict",
    "saturates": [failed figures that only stall, see ``saturates``]}}}``."""
    real = ys.features(data.reference)
    train = ys.features(data.train)
    clean = figures(ys.features(defective("noise", 0, data, n, groups, seed)), real, train)
    out: dict = {"clean": clean, "defects": {}}
    for defect in DEFECTS:
        if progress:
            progress(f"{ys.name}: {defect}")
        rows = [figures(ys.features(defective(defect, s, data, n, groups, seed)), real, train)
                for s in range(1, len(LEVELS[defect]) + 1)]
        values = {f: [r[f] for r in rows] for f in FIGURES}
        rho = {f: spearman(values[f]) for f in FIGURES}
        out["defects"][defect] = {
            "levels": list(LEVELS[defect]), "values": values, "rho": rho,
            "expected": dict(EXPECTED[defect]),
            "verdict": {f: verdict(rho[f], EXPECTED[defect][f]) for f in FIGURES},
            "saturates": [f for f in FIGURES if verdict(rho[f], EXPECTED[defect][f]) == "fail"
                          and saturates(values[f], EXPECTED[defect][f])]}
    return out


# -- the N a figure needs ----------------------------------------------------------------------

_INTERVAL_OF = {"fid": "fid", "kid": "kid", "precision": "pr", "recall": "pr",
                "density": "dc", "coverage": "dc"}


def relative_halfwidths(fake: Tensor, real: Tensor, grid: Sequence[int], draws: int = 100,
                        seed: int = 0, metrics: Sequence[str] = ("fid", "kid", "pr", "dc")
                        ) -> dict[str, dict[int, float]]:
    """``{figure: {N: half-width of its 95% bootstrap interval / |figure|}}`` on the first N
    rows of ``fake`` for each N of ``grid`` (those up to ``len(fake)``), the figures of
    ``metrics`` (registry names whose interval ``bootstrap_intervals`` computes)."""
    out: dict[str, dict[int, float]] = {}
    for n in sorted(int(g) for g in grid if int(g) <= fake.shape[0]):
        sides = {m: (fake[:n], real) for m in metrics}
        ci = bootstrap_intervals(sides, draws, seed, centred=False)
        value = _point_figures(fake[:n], real, metrics)
        for fig, v in value.items():
            lo, hi = ci[f"{fig}_ci95"]
            out.setdefault(fig, {})[n] = (hi - lo) / 2 / abs(v) if v else float("inf")
    return out


def _point_figures(fake: Tensor, real: Tensor, metrics: Sequence[str]) -> dict[str, float]:
    ones = torch.ones(1, fake.shape[0], dtype=torch.float64)
    out: dict[str, float] = {}
    if "fid" in metrics:
        out["fid"] = float(fid_draws(fake, real, ones)[0])
    if "kid" in metrics:
        out["kid"] = float(kid_draws(fake, real, ones)[0])
    if "pr" in metrics:
        p, r = pr_draws(fake, real, ones)
        out.update(precision=float(p[0]), recall=float(r[0]))
    if "dc" in metrics:
        out.update(density_coverage(real, fake, DC_NEAREST_K))
    return out


def smallest_n(widths: dict[int, float], within: float = WITHIN) -> int | None:
    """The smallest N of ``widths`` ({N: relative half-width}) from which on every larger N
    measured is within ``within`` too; None when even the largest is not."""
    found = None
    for n in sorted(widths, reverse=True):
        if not widths[n] <= within:
            break
        found = n
    return found


def n_for_interval(ys: Yardstick, data: HeldOut, groups: Tensor, grid: Sequence[int] = N_GRID,
                   draws: int = 100, seed: int = 0) -> dict:
    """The N each figure needs for a 95% interval within ``WITHIN`` of its value, on the
    whole pool with noise of severity ``PROBE``: ``{"set", "grid", "halfwidth": {figure:
    {N: relative half-width}}, "n": {figure: N or None}}``."""
    n = data.pool.shape[0]
    grid = sorted({min(int(g), n) for g in grid})  # capped by what the pool holds
    probe = ys.features(defective("noise", PROBE, data, n, groups, seed))
    widths = relative_halfwidths(probe, ys.features(data.reference), grid, draws, seed)
    return {"set": f"the {n} pool images with noise sigma {LEVELS['noise'][PROBE - 1]} x 255",
            "grid": grid, "draws": draws,
            "halfwidth": {f: {str(k): v for k, v in w.items()} for f, w in widths.items()},
            "n": {f: smallest_n(w) for f, w in widths.items()}}


# -- the card ----------------------------------------------------------------------------------


def measure(extractor: Extractor | Yardstick, test_images: Tensor, test_labels: Tensor | None,
            train_images: Tensor, *, n: int | None = None, n_reference: int | None = None,
            n_train: int = N_TRAIN, seed: int = 0, grid: Sequence[int] = N_GRID,
            draws: int = 100, baseline: Yardstick | None | bool = True,
            progress: Callable[[str], None] | None = None, device=None) -> dict:
    """The validity card of ``extractor`` as a dict (``validity_card.write_card`` writes
    it): held-out ``test_images`` (uint8, with their labels or None) cut into
    ``n_reference`` reference images (default: half, at most ``N_REFERENCE``) and the pool
    the sets of ``n`` images are drawn from (default ``N_GENERATED``, at most the pool);
    the copycat and the memorization check use ``n_train`` of ``train_images``.
    ``baseline``: True for ``random_extractor`` of the extractor's architecture, a
    Yardstick, or False/None."""
    ys = extractor if isinstance(extractor, Yardstick) else yardstick(extractor, device=device)
    n_reference = n_reference or min(N_REFERENCE, test_images.shape[0] // 2)
    train = train_images[torch.randperm(train_images.shape[0], generator=_gen(seed, 7))
                         [:n_train]]
    data = held_out(test_images, test_labels, train, n_reference, seed)
    n = min(N_GENERATED, data.pool.shape[0]) if n is None else int(n)
    if not 2 * DC_NEAREST_K <= n <= data.pool.shape[0]:
        raise ConfigError(f"n must be in {2 * DC_NEAREST_K}..{data.pool.shape[0]} (the held-out "
                          f"images left after the {n_reference} reference images), got {n}")
    groups = data.pool_labels if data.labelled else kmeans(ys.features(data.pool), CLASSES, seed)
    if baseline is True:
        if isinstance(extractor, Yardstick):
            raise ConfigError("a Yardstick's random baseline must be given (baseline=...)")
        baseline = random_extractor(extractor, seed, test_images.shape[1:])
    rows = {"extractor": response(ys, data, n, groups, seed, progress)}
    if baseline:
        rows["baseline"] = response(baseline, data, n, groups, seed, progress)
    out = {
        "extractor": ys.name, "extractor_weights_sha256": ys.sha256,
        "baseline": baseline.name if baseline else None,
        "baseline_weights_sha256": baseline.sha256 if baseline else None,
        "image_shape": list(test_images.shape[1:]), "n_generated": int(n),
        "n_reference": int(n_reference), "n_pool": int(data.pool.shape[0]),
        "n_train": int(train.shape[0]), "seed": int(seed),
        "classes": "labels" if data.labelled else f"k-means clusters ({CLASSES}) of the "
                                                  "extractor's features",
        "rho_pass": RHO_PASS, "within": WITHIN, "copy_flag": COPY_FLAG,
        "levels": {d: list(v) for d, v in LEVELS.items()},
        "responses": rows,
    }
    if progress:
        progress(f"{ys.name}: N for a {WITHIN:.0%} interval")
    out["n_for_interval"] = n_for_interval(ys, data, groups, grid, draws, seed)
    out.update(summary(rows))
    return out


def summary(responses: dict) -> dict:
    """The card's verdicts in short: ``failures`` (``[who, defect, figure, rho]`` of each
    failed check) and ``copycat`` ({who: near copies at the full copycat, and whether the
    memorization check flags it})."""
    failures, copycat = [], {}
    for who, res in responses.items():
        for defect, d in res["defects"].items():
            failures += [[who, defect, f, round(d["rho"][f], 4)]
                         for f in FIGURES if d["verdict"][f] == "fail"]
        near = res["defects"]["copycat"]["values"]["near_copies"][-1]
        copycat[who] = {"near_copies": near, "flagged": near >= COPY_FLAG}
    return {"failures": failures, "copycat": copycat}


def dataset_card(extractor: Extractor, dataset, *, split: str = "test", root=None,
                 **options) -> dict:
    """``measure`` on a dataset: its ``split`` (default test) is the held-out side, its
    training split feeds the copycat and the memorization check."""
    from .. import data as zdata

    images, labels = zdata.load(dataset, split, root=root)
    train, _ = zdata.load(dataset, "train", root=root)
    card = measure(extractor, images, labels, train, **options)
    return {"dataset": str(dataset), "split": split, **card}

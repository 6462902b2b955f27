"""Per-class metrics: do the samples show the classes they were asked for, and all of them?

All three read the dataset's shipped classifier (``<dataset>-classifier``, the extractor
whose ``logits`` feed IS and whose ``features`` feed FID): with InceptionV3 the logits are
ImageNet's classes, not the dataset's, so ``evaluate`` refuses them there.

- ``class_accuracy`` (needs the requested labels): the share of samples the classifier
  assigns to the class they were drawn for. Interval: Wilson's 95% score interval of a
  binomial share (closed form, no resampling).
- ``intra_fid`` (needs the requested labels and the reference's labels): the FID of each
  class's samples against that class's reference images, averaged over the classes asked
  for (StudioGAN's iFID). Interval: a percentile bootstrap *within classes*: each class's
  samples resampled with replacement (the class sizes fixed, the reference fixed), the
  mean over classes recomputed per draw, shifted by the draws' bias like every other
  interval (``intervals.percentile_interval``).
- ``class_tv`` (no labels): the total variation distance between the class histogram of
  the samples and of the reference images, both as the classifier labels them (its
  errors cancel to first order): 0 when the classes come in the reference's proportions,
  0.9 when every sample is one of ten balanced classes. A mode-dropping signal for any
  model; its interval is the generic bootstrap of the samples' logits.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..core import ConfigError
from .intervals import LEVEL, fid_draws, percentile_interval, resample_counts
from .registry import COLLAPSE_RATIO


def wilson_interval(successes: int, n: int, level: float = LEVEL) -> list[float]:
    """Wilson's score interval of a binomial proportion (95% by default)."""
    if n < 1:
        return [0.0, 1.0]
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _labels(labels, n: int, what: str) -> Tensor:
    labels = torch.as_tensor(labels).reshape(-1).long().cpu()
    if labels.shape[0] != n:
        raise ConfigError(f"{what}: {labels.shape[0]} labels for {n} images")
    return labels


def class_accuracy(real, fake: Tensor, *, labels, bootstrap: int = 0, seed: int = 0) -> dict:
    """The share of samples whose classifier class (argmax of ``fake``, the logits) is the
    requested ``labels``; ``class_accuracy_ci95`` (Wilson) when ``bootstrap`` > 0."""
    labels = _labels(labels, fake.shape[0], "class_accuracy")
    if int(labels.max()) >= fake.shape[1] or int(labels.min()) < 0:
        raise ConfigError(f"class_accuracy: labels {int(labels.min())}..{int(labels.max())} "
                          f"but the classifier has {fake.shape[1]} classes")
    hits = int((fake.argmax(1).cpu() == labels).sum())
    out: dict = {"class_accuracy": hits / labels.shape[0]}
    if bootstrap:
        out["class_accuracy_ci95"] = wilson_interval(hits, labels.shape[0])
    return out


def intra_fid(real: Tensor, fake: Tensor, *, labels, reference_labels,
              bootstrap: int = 0, seed: int = 0) -> dict:
    """The mean over the requested classes of FID(class c's samples, class c's reference
    images); ``intra_fid_ci95`` from ``bootstrap`` resamples within classes."""
    labels = _labels(labels, fake.shape[0], "intra_fid")
    ref = _labels(reference_labels, real.shape[0], "intra_fid reference")
    fake, real = fake.double().cpu(), real.double().cpu()
    classes = sorted(int(c) for c in labels.unique())
    per_class, draws = [], []
    for c in classes:
        f, r = fake[labels == c], real[ref == c]
        if f.shape[0] < 2 or r.shape[0] < 2:
            raise ConfigError(f"intra_fid needs at least 2 samples and 2 reference images "
                              f"of each class; class {c} has {f.shape[0]} samples and "
                              f"{r.shape[0]} reference images (draw more samples, -n)")
        ones = torch.ones(1, f.shape[0], dtype=torch.float64)
        per_class.append(float(fid_draws(f, r, ones)[0]))
        if bootstrap:
            counts = resample_counts(f.shape[0], bootstrap, seed * 1000 + c).double()
            draws.append(fid_draws(f, r, counts).double().numpy())
    value = float(np.mean(per_class))
    out: dict = {"intra_fid": value,
                 "intra_fid_per_class": [round(v, 4) for v in per_class],
                 "intra_fid_classes": classes}
    if bootstrap:
        out["intra_fid_ci95"] = percentile_interval(np.mean(draws, axis=0), centre=value)
    return out


def class_tv(real: Tensor, fake: Tensor) -> dict:
    """Total variation distance between the classifier's class histograms of the samples
    (``fake`` logits) and of the reference images (``real`` logits)."""
    k = fake.shape[1]
    p = torch.bincount(fake.argmax(1).cpu(), minlength=k).double() / fake.shape[0]
    q = torch.bincount(real.argmax(1).cpu(), minlength=k).double() / real.shape[0]
    return {"class_tv": float(0.5 * (p - q).abs().sum())}


#: at most this many reference images per class enter the pairwise distances (the first ones)
MAX_REFERENCE_PER_CLASS = 1000
RECALL_K = 3  #: k of the k-NN balls of the per-class recall (as ``pr``'s)


def _mean_pairwise(x: Tensor) -> float:
    """The mean Euclidean distance over the distinct pairs of the rows of ``x``."""
    d = torch.cdist(x, x)
    n = x.shape[0]
    return float(d.sum() / (n * (n - 1)))


def _recall(real: Tensor, fake: Tensor, k: int) -> float:
    """Improved recall (Kynkäänniemi et al. 2019): the share of ``real`` rows inside a
    ball around some ``fake`` row whose radius is its distance to its k-th nearest other."""
    k = min(k, fake.shape[0] - 1)
    d = torch.cdist(fake, fake)
    radii = d.topk(k + 1, dim=1, largest=False).values[:, -1]
    return float((torch.cdist(real, fake) <= radii[None]).any(1).double().mean())


def _sample_classes(real: Tensor, fake: Tensor, ref: Tensor) -> Tensor:
    """The class of each sample of an unconditional model: its nearest reference class
    mean in feature space."""
    classes = sorted(int(c) for c in ref.unique())
    means = torch.stack([real[ref == c].mean(0) for c in classes])
    return torch.as_tensor(classes)[torch.cdist(fake, means).argmin(1)]


def diversity(real: Tensor, fake: Tensor, *, reference_labels, labels=None) -> dict:
    """Within-class diversity, a collapse alarm: per class, the mean pairwise feature
    distance of the samples / that of the reference images of the class (1: as varied as
    real images; near 0: one image per class), and the recall of the class's reference
    images by its samples. The classes are the requested ``labels`` of a conditional
    model's samples, else each sample's nearest reference class mean. Classes with fewer
    than 2 samples are left out; ``diversity_collapsed`` lists those below
    ``COLLAPSE_RATIO``."""
    ref = _labels(reference_labels, real.shape[0], "diversity reference")
    fake, real = fake.double().cpu(), real.double().cpu()
    given = labels is not None
    classes_of = (_labels(labels, fake.shape[0], "diversity") if given
                  else _sample_classes(real, fake, ref))
    classes, ratios, recalls = [], [], []
    for c in sorted(int(c) for c in classes_of.unique()):
        f, r = fake[classes_of == c], real[ref == c][:MAX_REFERENCE_PER_CLASS]
        if f.shape[0] < 2 or r.shape[0] < 2:
            continue
        classes.append(c)
        ratios.append(_mean_pairwise(f) / max(_mean_pairwise(r), 1e-12))
        # as many reference images as samples: recall grows with the reference's size
        recalls.append(_recall(r[:f.shape[0]], f, RECALL_K))
    if not classes:
        raise ConfigError("diversity needs at least 2 samples and 2 reference images of "
                          "some class (draw more samples, -n)")
    return {"diversity": float(np.mean(ratios)), "diversity_min": float(min(ratios)),
            "class_recall": float(np.mean(recalls)), "class_recall_min": float(min(recalls)),
            "diversity_per_class": [round(v, 4) for v in ratios],
            "class_recall_per_class": [round(v, 4) for v in recalls],
            "diversity_classes": classes,
            "diversity_collapsed": [c for c, v in zip(classes, ratios, strict=True)
                                    if v < COLLAPSE_RATIO]}


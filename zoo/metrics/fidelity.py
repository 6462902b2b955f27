"""FID, KID, IS and precision/recall of uint8 images or a model, through torch-fidelity,
and the metrics of ``registry`` that torch-fidelity lacks (density/coverage).

``evaluate`` draws ``n`` samples (or takes a uint8 batch), feeds them and the reference
split to ``torch_fidelity.calculate_metrics`` with one feature extractor for all metrics
(a registered function metric gets the same extractor's features of both sides),
and returns the figures together with what makes them comparable: the extractor and the
sha256 of its weights, the reference dataset and split, and both image counts. In steps:
``eval_request`` (the reference, extractor and metrics, checked once), ``generate`` (the
images, their classes and where they came from) and ``score`` (features, metrics and
their intervals).

The reference side is cached on disk (``$ZOO_CACHE/metrics`` or ``~/.cache/zoo/metrics``)
as torch-fidelity's per-layer *features* (KID and precision/recall need the features, not
only FID's mean and covariance) under a key made of the dataset, split, the MD5s of its
files, the number of images, the extractor, its weights' sha256 and the torch-fidelity
version; any change of a part is a new key, so a stale entry is never read.
``StreamingFID`` is the torchmetrics version for evaluation during training.

Under a process group (torchrun) ``evaluate`` shards the sampling: the ``n`` samples are
cut into slices of ``batch_size``, slice i drawn with its own generator seeded from
``(seed, i)``; rank r draws slices r, r + N, ..., the slices are gathered in order and
rank 0 computes the figures once and sends them to every rank. The same slices are drawn
in one process, so the result does not depend on the number of processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch_fidelity
from torch import Tensor, nn
from torch.utils.data import Dataset

from .. import data as zdata
from .. import distributed as zdist
from .. import progress as zprogress
from ..core import ConfigError, GenerativeModel, atomic_write
from ..runs import load_run
from ..sampling import draw_samples
from . import registry
from .features import INCEPTION, Extractor, MetricsError, resolve_extractor
from .intervals import bootstrap_intervals, interval_metrics, tf_seed
from .registry import normalize_metrics

CACHE_FORMAT = 1
METRICS = registry.default_metrics()  # the default set (``registry.names()``: all)
KID_SUBSET_SIZE = 1000
IS_SPLITS = registry.IS_SPLITS
PANEL_PAIRS = 8  #: pairs in the memorization panel when only ``panel`` is given
PR_NEIGHBORHOOD = registry.PR_NEIGHBORHOOD
#: the extractor layer (as torch-fidelity names it per metric) of what a function metric needs
_NEEDS_LAYER = {"features": "prc", "logits": "isc"}


class _Images(Dataset):
    """A uint8 ``[N, C, H, W]`` tensor as the Dataset torch-fidelity reads (items [C, H, W])."""

    def __init__(self, images: Tensor):
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where reference features live: ``cache_dir`` > ``$ZOO_CACHE/metrics`` > ~/.cache/zoo."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("ZOO_CACHE", "").strip()
    return (Path(env) if env else Path("~/.cache/zoo")).expanduser() / "metrics"


def _check_batch(x, what: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
        raise ConfigError(
            f"{what} must be a uint8 tensor [N, C, H, W] with values 0..255, got "
            f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}"
        )
    return x.detach().cpu().contiguous()


def reference_key(
    dataset, split: str, n_reference: int, extractor: Extractor,
    root: str | os.PathLike | None = None,
) -> tuple:
    """(cache name, parts) of a dataset split's features under ``extractor``.

    A built-in dataset is keyed by the MD5s of its files; an own dataset (or a resized
    built-in one) by the sha256 of the split's pixels and labels, so moving or renaming
    its files keeps the cache and changing an image (or an option like size) does not.
    """
    ds = zdata.spec(dataset)
    parts: dict = {"format": CACHE_FORMAT, "dataset": ds.name, "split": split}
    if ds.builtin and not ds.transformed:
        info = zdata.dataset_info(ds.source)
        files = info.split_files.get(split)
        if files is None:
            raise ConfigError(f"unknown split {split!r} for {info.name}; valid splits: "
                              f"{', '.join(info.split_files)}")
        parts["files"] = {f: info.files[f].md5 for f in files}
    else:
        parts["content_sha256"] = zdata.content_hash(ds, split, root)
    parts.update({
        "n_reference": int(n_reference),
        "extractor": extractor.name,
        "weights_sha256": extractor.sha256,
        "torch_fidelity": torch_fidelity.__version__,
    })
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]
    return f"{ds.name}-{split}-{digest}", parts


_NUMPY_GLOBALS = [np.dtype, np.ndarray, np._core.multiarray._reconstruct,
                  type(np.dtype(np.float64)), type(np.dtype(np.float32))]


def _vet_cache(root: Path, key: str) -> None:
    """Drop a cache entry any of whose files cannot be read as tensors/arrays."""
    for p in sorted(root.glob(f"{key}-*.pt")):
        try:
            with torch.serialization.safe_globals(_NUMPY_GLOBALS):
                torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a bad file can fail in many ways
            print(f"zoo.metrics: cache file {p} is unreadable ({type(e).__name__}); "
                  "recomputing the reference features", file=sys.stderr)
            for q in root.glob(f"{key}-*"):
                q.unlink(missing_ok=True)
            return


def _layer(extractor: Extractor, metric: str) -> str | None:
    """The extractor layer a metric reads (None: the images themselves)."""
    m = registry.get(metric)
    flag = m.tf_flag or _NEEDS_LAYER.get(m.needs)
    return extractor.layers[flag] if flag is not None else None


def _reference_cached(root: Path, key: str, extractor: Extractor, metrics: tuple) -> bool:
    layers = {_layer(extractor, m) for m in metrics} - {None}
    prefix = f"{key}-{extractor.tf_name}"
    if metrics == ("fid",) and (root / f"{prefix}-stat-fid-{extractor.layers['fid']}.pt").is_file():
        return True
    return all((root / f"{prefix}-features-{layer}.pt").is_file() for layer in layers)


def _device(device) -> torch.device:
    if device is None or device == "auto":
        return zdist.device_for_rank(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"metrics run on cpu or cuda, got device {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for but torch sees no CUDA GPU")
    return zdist.device_for_rank(dev)  # under torchrun a bare "cuda" is this rank's GPU


def _tf_common(device: torch.device, batch_size: int, seed: int, progress: bool) -> dict:
    return {
        "cuda": device.type == "cuda",
        "batch_size": int(batch_size),
        "rng_seed": tf_seed(seed),
        "verbose": zprogress.resolve(progress) == zprogress.BAR,  # its bars: a terminal's
        "save_cpu_ram": True,  # no DataLoader worker processes; batched precision/recall
    }


def compute_metrics(
    generated: Tensor,
    reference: Tensor,
    extractor: Extractor,
    metrics: str | Sequence[str] | None = None,
    *,
    cache_key: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 500,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    train: dict[str, Tensor] | None = None,
    bootstrap: int = 0,
    closest: int = 0,
    labels: Tensor | None = None,
    reference_labels: Tensor | None = None,
    replicates: bool = False,
) -> tuple[dict, str]:
    """The figures of ``generated`` against ``reference`` (both uint8) with one extractor,
    and the reference cache status ("hit", "miss" or "off": no ``cache_key``).

    ``metrics``: names of ``registry`` (None: its default set). ``train``: the training
    split's ``{layer: features}`` for a metric declared with ``train``. ``bootstrap`` B > 0:
    a 95% percentile interval ``<column>_ci95: [lo, hi]`` of each interval column from B
    resamples of the generated features, seeded with ``seed``. ``closest`` k > 0 with a
    metric declared with ``closest`` (``memorization``): ``memorization_closest``, the k
    samples nearest a training image as ``[sample, training index, distance]``.
    ``labels`` (int64 [N], the class each sample was drawn for) and ``reference_labels``
    ([M]): for the metrics declared with them, which are refused without them.
    ``replicates`` with ``bootstrap``: also ``bootstrap_replicates``, ``{column: [B]
    figures of the draws}`` (``intervals.bootstrap_intervals``).
    """
    metrics = normalize_metrics(registry.default_metrics() if metrics is None else metrics)
    generated, reference, labels = _check_inputs(generated, reference, extractor, metrics,
                                                 train, labels, reference_labels, batch_size,
                                                 bootstrap)
    dev = _device(device)
    spec = {m: registry.get(m) for m in metrics}
    tf = tuple(m for m in metrics if spec[m].tf_flag)
    own = tuple(m for m in metrics if not spec[m].tf_flag)
    binary = any(spec[m].reference for m in tf)  # IS alone never looks at the reference
    # what reads the reference's features (torch-fidelity extracts its metrics' layers as one)
    own_ref = tuple(m for m in own if spec[m].reference and _layer(extractor, m) is not None)
    status = _cache_status(cache_key, cache_dir, extractor, (tf if binary else ()) + own_ref)
    boot = interval_metrics(metrics) if bootstrap else ()
    seen: dict[int, dict[str, Tensor]] = {}  # the features torch-fidelity extracted, by input
    out = _tf_metrics(generated, reference, extractor, tf, binary, cache_key, cache_dir, dev,
                      batch_size, seed, progress, seen if boot else None) if tf else {}
    fake, real = _features(generated, reference, extractor, own, boot, seen, dev, batch_size,
                           progress, cache_key, cache_dir)
    out.update(_function_metrics(own, extractor, generated, reference, fake, real, train,
                                 closest=closest, labels=labels, bootstrap=bootstrap, seed=seed,
                                 reference_labels=reference_labels))
    out = _plain(out)
    if boot:
        sides = {m: (fake[_layer(extractor, m)], real.get(_layer(extractor, m))
                     if spec[m].reference else None) for m in boot}
        kept: dict = {}
        out.update(bootstrap_intervals(sides, bootstrap, seed, figures=out, replicates=kept))
        if replicates:
            out["bootstrap_replicates"] = {k: [float(x) for x in v] for k, v in kept.items()}
    return out, status


def _features(generated: Tensor, reference: Tensor, extractor: Extractor, own: tuple,
              boot: tuple, seen: dict, dev: torch.device, batch_size: int, progress: bool,
              cache_key: str | None, cache_dir) -> tuple[dict, dict]:
    """({layer: generated features}, {layer: reference features}) that the function metrics
    ``own`` and the bootstrapped metrics ``boot`` read: torch-fidelity's (``seen``), the
    rest extracted here once per side (the reference's through the cache)."""
    fake, real = dict(seen.get(1, {})), dict(seen.get(2, {}))
    if not (own or boot):
        return fake, real
    own_ref = {_layer(extractor, m) for m in own if registry.get(m).reference}
    layers = ({_layer(extractor, m) for m in own}
              | ({_layer(extractor, m) for m in boot} - set(fake))) - {None}
    # IS has no reference side: its logits are never extracted from the reference
    boot_ref = {_layer(extractor, m) for m in boot if registry.get(m).reference}
    ref_layers = (own_ref | (boot_ref - set(real))) - {None}
    fake.update(_extract(1, generated, extractor, sorted(layers), dev, batch_size, progress))
    real.update(_extract(2, reference, extractor, sorted(ref_layers), dev, batch_size,
                         progress, cache_key, cache_dir))
    return fake, real


def _check_inputs(generated: Tensor, reference: Tensor, extractor: Extractor,
                  metrics: tuple[str, ...], train, labels, reference_labels,
                  batch_size: int, bootstrap: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """Refuse what ``metrics`` cannot be computed from; (generated, reference, labels as
    int64 [N] on the CPU)."""
    generated = _check_batch(generated, "generated images")
    reference = _check_batch(reference, "reference images")
    if generated.shape[1:] != reference.shape[1:]:
        raise ConfigError(f"generated images are {tuple(generated.shape[1:])} but the "
                          f"reference images are {tuple(reference.shape[1:])}")
    n1, n2 = generated.shape[0], reference.shape[0]
    for m in metrics:
        spec = registry.get(m)
        need = spec.min_images
        if min(n1, n2 if spec.reference else n1) < need:
            raise ConfigError(f"{m} needs at least {need} images on each side, "
                              f"got {n1} generated and {n2} reference")
    for m in metrics:
        if registry.get(m).train and _layer(extractor, m) not in (train or {}):
            raise ConfigError(f"{m} needs the training split's features "
                              f"({_layer(extractor, m)!r} layer); evaluate passes them")
    for m in metrics:
        if registry.get(m).labels and labels is None:
            raise ConfigError(f"{m} needs the class each sample was drawn for: evaluate a "
                              "class-conditional model, or pass labels= with the images")
        if registry.get(m).reference_labels and reference_labels is None:
            raise ConfigError(f"{m} needs the reference images' labels (reference_labels=)")
    if labels is not None:
        labels = torch.as_tensor(labels).reshape(-1).long().cpu()
        if labels.shape[0] != n1:
            raise ConfigError(f"{labels.shape[0]} labels for {n1} generated images")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if bootstrap < 0:
        raise ConfigError(f"bootstrap must be >= 0 (0: no interval), got {bootstrap}")
    return generated, reference, labels


def _cache_status(cache_key: str | None, cache_dir, extractor: Extractor,
                  reads: tuple[str, ...]) -> str:
    """"hit" or "miss" of the reference features that ``reads`` (metrics) need; "off"
    without a cache key or when none reads them. A corrupt entry is dropped first."""
    if cache_key is None or not reads:
        return "off"
    root = cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    _vet_cache(root, cache_key)
    return "hit" if _reference_cached(root, cache_key, extractor, reads) else "miss"


def _function_metrics(own: tuple[str, ...], extractor: Extractor, generated: Tensor,
                      reference: Tensor, fake: dict, real: dict, train: dict | None,
                      **options) -> dict:
    """The figures of the function metrics ``own``, each given its side(s) (the images, or
    their features ``fake``/``real``) and what its declaration asks for of ``options``."""
    out: dict = {}
    for name in own:
        metric, layer = registry.get(name), _layer(extractor, name)
        mine, theirs = (generated, reference) if layer is None else (fake[layer],
                                                                     real.get(layer))
        given = {"closest": int(options["closest"])} if (
            metric.closest and options["closest"] > 0) else {}
        if metric.labels or metric.optional_labels:
            given["labels"] = options["labels"]
        if metric.reference_labels:
            given["reference_labels"] = options["reference_labels"]
        if metric.own_interval:
            given.update(bootstrap=int(options["bootstrap"]), seed=int(options["seed"]))
        out.update(metric.compute(theirs if metric.reference else None, mine,
                                  (train or {}).get(layer) if metric.train else None,
                                  **given))
    return out


def _plain(out: dict) -> dict:
    """Figures as Python floats (ints and lists kept); ``closest_pairs`` as the result's
    ``memorization_closest``."""
    pairs = out.pop("closest_pairs", None)
    out = {k: v if isinstance(v, (int, list)) else float(v) for k, v in out.items()}
    if pairs is not None:
        out["memorization_closest"] = [[int(i), int(j), float(d)] for i, j, d in pairs]
    return out


@contextlib.contextmanager
def _features_seen(seen: dict):
    """Within: ``seen[input_id]`` gets the ``{layer: features}`` torch-fidelity extracts
    (or reads from its cache) in ``calculate_metrics``, so the bootstrap reuses them
    instead of running the network again; torch-fidelity's own figures are untouched."""
    import torch_fidelity.metric_fid as tf_fid
    import torch_fidelity.metrics as tf_metrics

    name = "extract_featuresdict_from_input_id_cached"
    modules = [m for m in (tf_metrics, tf_fid) if hasattr(m, name)]
    originals = [getattr(m, name) for m in modules]

    def recording(original):
        def extract(input_id, *args, **kwargs):
            features = original(input_id, *args, **kwargs)
            seen.setdefault(input_id, {}).update(features)
            return features
        return extract

    for m, original in zip(modules, originals, strict=True):
        setattr(m, name, recording(original))
    try:
        yield seen
    finally:
        for m, original in zip(modules, originals, strict=True):
            setattr(m, name, original)


def _tf_metrics(generated: Tensor, reference: Tensor, extractor: Extractor, metrics: tuple,
                binary: bool, cache_key: str | None, cache_dir, dev: torch.device,
                batch_size: int, seed: int, progress: bool, seen: dict | None = None) -> dict:
    """The figures of torch-fidelity's metrics among ``metrics``, from one call; ``seen``
    (when given) gets the features it extracted (``_features_seen``)."""
    n1, n2 = generated.shape[0], reference.shape[0]
    kwargs = {
        "input1": _Images(generated),
        "input2": _Images(reference) if binary else None,
        **{registry.get(m).tf_flag: True for m in metrics},
        **extractor.tf_kwargs(),
        **_tf_common(dev, batch_size, seed, progress),
        "kid_subset_size": min(KID_SUBSET_SIZE, n1, n2),
        "isc_splits": min(IS_SPLITS, n1),
        "prc_neighborhood": PR_NEIGHBORHOOD,
        "prc_batch_size": 2000,
    }
    if cache_key is not None and binary:
        kwargs.update(cache=True, cache_root=str(cache_root(cache_dir)),
                      input2_cache_name=cache_key)
    else:
        kwargs["cache"] = False
    ctx = torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext()
    with ctx, _features_seen(seen) if seen is not None else contextlib.nullcontext():
        raw = torch_fidelity.calculate_metrics(**kwargs)
    # a result is torch-fidelity's figure, or (kid_subset_size) the argument it was given
    return {key: raw[tf_key] if tf_key in raw else kwargs[tf_key]
            for m in metrics for key, tf_key in registry.get(m).tf_results}


def _extract(input_id: int, images: Tensor, extractor: Extractor, layers: Sequence[str],
             dev: torch.device, batch_size: int, progress: bool,
             cache_key: str | None = None, cache_dir=None) -> dict[str, Tensor]:
    """``{layer: features [N, D]}`` of uint8 images through torch-fidelity's extractor; the
    reference side (``input_id`` 2) read from or written to the cache under ``cache_key``."""
    if not layers:
        return {}
    from torch_fidelity.utils import (
        create_feature_extractor,
        extract_featuresdict_from_input_id_cached,
    )

    kwargs = {f"input{input_id}": _Images(images), **extractor.tf_kwargs(),
              **_tf_common(dev, batch_size, 0, progress)}
    if cache_key is not None:
        croot = cache_root(cache_dir)
        croot.mkdir(parents=True, exist_ok=True)
        kwargs.update(cache=True, cache_root=str(croot), input2_cache_name=cache_key)
    else:
        kwargs["cache"] = False
    module = create_feature_extractor(extractor.tf_name, list(layers), **kwargs)
    ctx = torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext()
    with ctx:
        return extract_featuresdict_from_input_id_cached(input_id, module, **kwargs)


def _reference_images(dataset: str, split: str, n_reference: int | None, root,
                      with_labels: bool = False):
    images, labels = zdata.load(dataset, split, root=root)
    if n_reference is not None:
        if n_reference < 2 or n_reference > images.shape[0]:
            raise ConfigError(f"n_reference must be in 2..{images.shape[0]} for {dataset} "
                              f"{split}, got {n_reference}")
        images, labels = images[:n_reference], labels[:n_reference]
    return (images, labels) if with_labels else images


def balanced_labels(n: int, num_classes: int) -> Tensor:
    """The labels ``evaluate`` asks a conditional model for: ``i % num_classes`` (int64)."""
    return torch.arange(int(n)) % int(num_classes)


def draw_labelled(model: GenerativeModel, labels: Tensor, batch_size: int = 500,
                  seed: int = 0, progress: bool = False,
                  generator: torch.Generator | None = None, **sampler_options) -> Tensor:
    """Samples of a conditional model, image i of class ``labels[i]``: each class drawn
    with ``draw_samples`` (``labels=c``, its own seed ``mix_seed(seed, c)``, so the same
    with any number of processes) and put back in the order of ``labels``."""
    labels = torch.as_tensor(labels).reshape(-1).long().cpu()
    out = None
    for c in sorted(int(c) for c in labels.unique()):
        where = (labels == c).nonzero().flatten()
        x = draw_samples(model, where.numel(), batch_size, zdist.mix_seed(int(seed), c),
                         progress, generator, labels=c, **sampler_options)
        if out is None:
            out = torch.empty((labels.shape[0], *x.shape[1:]), dtype=x.dtype)
        out[where] = x
    return out


def evaluate(
    samples_or_model: Tensor | GenerativeModel | str | os.PathLike,
    dataset: str,
    split: str = "test",
    extractor: str | None = None,
    n: int | None = None,
    metrics: str | Sequence[str] | None = None,
    *,
    batch_size: int = 500,
    seed: int = 0,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    n_reference: int | None = None,
    n_train: int | None = None,
    inception_weights: str | os.PathLike | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    progress: bool = False,
    announce: bool = True,
    bootstrap: int = 200,
    closest: int = 0,
    panel: str | os.PathLike | None = None,
    labels: Tensor | Sequence[int] | None = None,
    replicates: bool = False,
    **sampler_options,
) -> dict:
    """Sample quality of generated images against a dataset split, as one result row.

    ``samples_or_model``: a uint8 ``[N, C, H, W]`` batch (all of it is used, or its first
    ``n``), a GenerativeModel, or a run directory / model file; a model draws ``n`` samples
    (default 10000) with ``sampler_options`` and ``generator`` (default: seeded with
    ``seed``; ``seed`` also seeds KID's subsets and IS's shuffle).
    ``extractor``: None (the default of ``dataset``, announced and recorded), a name
    (``inception-v3-compat``, ``<dataset>-classifier``, ``classifier``) or a classifier
    ``.pt`` path. The reference is the whole split unless ``n_reference`` is given. A
    metric that reads the training split (``memorization``) gets the features of its
    first ``n_train`` images (default all), cached like the reference's.

    ``metrics``: names of ``registry`` (None: its default set, fid, kid, is, pr and dc).
    ``bootstrap``: B resamples (with replacement, seeded with ``seed``) of the generated
    side's features, the reference fixed, give a 95% percentile interval
    ``<column>_ci95: [lo, hi]`` of FID, KID, IS, precision, recall, density and coverage (the
    registry's ``Column.interval``); 0 computes none. The figures stay torch-fidelity's.
    ``closest`` (k) with ``memorization``: ``memorization_closest``, the k samples closest
    to a training image as ``[sample index, training index, distance]``; ``panel``: a PNG
    path where those pairs are drawn (``memorization.save_pairs_panel``; k defaults to 8),
    recorded as ``memorization_panel``. ``replicates``: the result also holds
    ``bootstrap_replicates``, ``{column: the B draws' figures}`` behind each interval.
    ``labels``: for a class-conditional model, the class of each sample to draw (int64
    [n]; default: balanced, ``i % num_classes``, every class drawn with its own seed,
    ``draw_labelled``); for a batch of images, the class each was drawn for. They reach
    the metrics declared with ``labels`` (``class_accuracy``, ``intra_fid``), which are
    refused without them (an unconditional model, or images without ``labels=``); the
    row records ``labels`` ("balanced" or "given") and ``num_classes``. The class metrics
    read the dataset's classifier (``zoo.metrics.classes``) and are refused under an
    InceptionV3 extractor, whose logits are ImageNet's classes.

    Returns the figures (``fid``, ``kid``/``kid_std``, ``is``/``is_std``,
    ``precision``/``recall``/``f_score``, and each registered metric's columns, e.g.
    ``density``/``coverage``) and the metadata that every result row carries:
    ``extractor``, ``extractor_weights_sha256``, ``extractor_choice``, ``dataset``,
    ``split``, ``n_generated``, ``n_reference``, the reference cache status and timings.
    """
    request = eval_request(
        dataset, split, extractor, metrics, batch_size=batch_size, seed=seed, device=device,
        n_reference=n_reference, n_train=n_train, inception_weights=inception_weights,
        cache=cache, cache_dir=cache_dir, root=root, progress=progress, announce=announce,
        bootstrap=bootstrap, closest=closest, panel=panel, replicates=replicates)
    generated = generate(samples_or_model, request, n, labels=labels, generator=generator,
                         **sampler_options)
    t1 = time.perf_counter()
    figures, status = score(generated, request)
    return _result_row(request, generated, figures, status, time.perf_counter() - t1)


def _result_row(r: EvalRequest, generated: Generated, figures: dict, status: str,
                seconds: float) -> dict:
    """``evaluate``'s row: the figures and what makes them comparable."""
    return {
        **figures,
        **r.extractor.record(),
        **_dataset_record(r.dataset, r.split, r.root),
        "split": r.split,
        "n_generated": int(generated.images.shape[0]),
        "n_reference": int(r.reference.shape[0]),
        "metrics": list(r.metrics),
        "seed": int(r.seed),
        "bootstrap": int(r.bootstrap),
        **generated.origin,
        "reference_cache": status,
        "seconds_metrics": round(seconds, 3),
        "device": str(r.device),
        "torch_fidelity": torch_fidelity.__version__,
    }


@dataclass(frozen=True, eq=False)
class EvalRequest:
    """What ``evaluate`` measures against and how, checked once (``eval_request``): the
    reference split's images and classes, the extractor, the metrics and their options."""

    dataset: Any
    split: str
    metrics: tuple[str, ...]
    extractor: Extractor
    reference: Tensor
    reference_labels: Tensor
    device: torch.device
    key: str | None  # the reference features' cache name (None: no cache)
    batch_size: int = 500
    seed: int = 0
    n_train: int | None = None
    cache: bool = True
    cache_dir: str | os.PathLike | None = None
    root: str | os.PathLike | None = None
    progress: bool = False
    bootstrap: int = 200
    closest: int = 0
    panel: str | os.PathLike | None = None
    replicates: bool = False  # keep the bootstrap draws' figures (bootstrap_replicates)

    @property
    def train_layers(self) -> list[str]:
        """The extractor layers whose training-split features a metric reads."""
        return sorted({_layer(self.extractor, m) for m in self.metrics
                       if registry.get(m).train})


def eval_request(dataset, split: str = "test", extractor: str | None = None,
                 metrics: str | Sequence[str] | None = None, *, device=None,
                 n_reference: int | None = None, inception_weights=None,
                 announce: bool = True, **options) -> EvalRequest:
    """``evaluate``'s reference, extractor and metrics, refused here when they do not go
    together (class metrics under InceptionV3, unlabelled references, a training-split
    reference for a metric that reads the training split); ``options``: the rest of
    ``EvalRequest``'s fields."""
    metrics = normalize_metrics(registry.default_metrics() if metrics is None else metrics)
    dev = _device(device)
    reference, reference_labels = _reference_images(dataset, split, n_reference,
                                                     options.get("root"), with_labels=True)
    ext = resolve_extractor(extractor, dataset, inception_weights,
                            announce=announce and zdist.is_main())
    classy = registry.class_metrics(metrics)
    if classy and ext.kind != "classifier":
        what = "ImageNet's classes" if ext.name == INCEPTION else "an encoder without classes"
        raise ConfigError(f"{', '.join(classy)} read the dataset classifier's classes, but "
                          f"the extractor is {ext.name} ({what}); use "
                          "--extractor <dataset>-classifier")
    metrics = _with_logits_only(metrics, ext, announce and zdist.is_main())
    labelled = [m for m in metrics if registry.get(m).reference_labels]
    if labelled and (reference_labels.numel() == 0 or int(reference_labels.min()) < 0):
        raise ConfigError(f"{dataset} {split} has unlabelled images; "
                          f"{', '.join(labelled)} needs every reference image's class")
    train = [m for m in metrics if registry.get(m).train]
    if train and split == "train":
        raise ConfigError(f"{', '.join(train)} compares the samples with the training split "
                          "against held-out images: use a reference split other than train")
    key = (reference_key(dataset, split, reference.shape[0], ext, options.get("root"))[0]
           if options.get("cache", True) else None)
    return EvalRequest(dataset, split, metrics, ext, reference, reference_labels, dev, key,
                       **options)


def _with_logits_only(metrics: tuple[str, ...], ext: Extractor, announce: bool):
    """``metrics`` less those that read class logits (IS) when ``ext`` has none (an
    encoder), said on stderr; a ConfigError when nothing is left."""
    if ext.logits:
        return metrics
    kept = tuple(m for m in metrics if registry.get(m).needs != "logits")
    left_out = [m for m in metrics if m not in kept]
    why = f"the extractor {ext.name} is an encoder without class logits"
    if not kept:
        raise ConfigError(f"{', '.join(left_out)} read class logits, but {why}; ask for "
                          "fid, kid, pr, dc or memorization, or use a classifier extractor")
    if left_out and announce:
        print(f"zoo.metrics: {', '.join(left_out)} left out: {why}", file=sys.stderr)
    return kept


class Generated(NamedTuple):
    """The images ``evaluate`` scores (uint8 [N, C, H, W] on the CPU), the class of each
    (int64 [N]; None: not given), and where they came from (the result row's fields)."""

    images: Tensor
    labels: Tensor | None
    origin: dict


def generate(samples_or_model, request: EvalRequest, n: int | None = None, *,
             labels=None, generator: torch.Generator | None = None,
             **sampler_options) -> Generated:
    """The images to score: ``n`` samples (default 10000) of a model, a run directory or a
    model file, or a uint8 batch as given (its first ``n``); see ``evaluate``."""
    t0 = time.perf_counter()
    if isinstance(samples_or_model, (str, os.PathLike)):
        samples_or_model = load_run(samples_or_model, map_location=request.device)
    if isinstance(samples_or_model, GenerativeModel):
        return _model_samples(samples_or_model, request, n, labels, generator, t0,
                              sampler_options)
    if sampler_options or generator is not None:
        given = [*sampler_options, *(["generator"] if generator is not None else [])]
        raise ConfigError(f"sampler options ({', '.join(given)}) need a model, "
                          "not a batch of images")
    return _given_images(samples_or_model, request, n, labels)


def _model_samples(model: GenerativeModel, request: EvalRequest, n: int | None, labels,
                   generator, t0: float, sampler_options: dict) -> Generated:
    """``n`` samples of ``model`` (a conditional one: of the ``labels`` given, else of
    balanced ones), with the model, its options and the sampling time as their origin."""
    r = request
    zprogress.stage("sample")
    shape = tuple(r.reference.shape[1:])
    if tuple(model.image_shape) != shape:
        raise ConfigError(f"{model.name} makes {tuple(model.image_shape)} images but "
                          f"{r.dataset} has {shape}")
    count = 10000 if n is None else int(n)
    origin: dict = {}
    if model.conditional:
        given = labels is not None
        labels = (model.check_labels(labels, count) if given
                  else balanced_labels(count, model.num_classes)).cpu()
        images = draw_labelled(model, labels, r.batch_size, r.seed, r.progress, generator,
                               **sampler_options)
        origin.update(labels="given" if given else "balanced",
                      num_classes=int(model.num_classes))
    else:
        if labels is not None:
            model.check_labels(labels, count)  # the one-line refusal
        images = draw_samples(model, count, r.batch_size, r.seed, r.progress, generator,
                              **sampler_options)
    origin.update(model=model.name, family=model.family, sampler_options=sampler_options,
                  seconds_sampling=round(time.perf_counter() - t0, 3))
    return Generated(images, labels, origin)


def _given_images(samples, request: EvalRequest, n: int | None, labels) -> Generated:
    """A uint8 batch (its first ``n``) and the classes it was drawn for, checked."""
    images = _check_batch(samples, "samples")
    if n is not None and not 1 <= n <= images.shape[0]:
        raise ConfigError(f"n={n} but only {images.shape[0]} samples were given")
    origin: dict = {}
    if labels is not None:
        labels = torch.as_tensor(labels)
        if (labels.is_floating_point() or labels.dim() != 1
                or labels.shape[0] != images.shape[0]):
            raise ConfigError(f"labels must be integers [N], one per image "
                              f"({images.shape[0]}), got {tuple(labels.shape)}")
        labels = labels.long().cpu()
        origin["labels"] = "given"
    if n is not None:
        images = images[:n]
        labels = None if labels is None else labels[:n]
    shape = tuple(request.reference.shape[1:])
    if tuple(images.shape[1:]) != shape:
        raise ConfigError(f"the samples are {tuple(images.shape[1:])} images but "
                          f"{request.dataset} has {shape}")
    return Generated(images, labels, origin)


def score(generated: Generated, request: EvalRequest) -> tuple[dict, str]:
    """(figures, reference cache status) of the generated images against the reference:
    features, the metrics and their intervals (``compute_metrics``), the training split's
    features for a metric that reads them, the memorization panel. Rank 0 of a process
    group computes them once and sends them to every rank."""
    figures, status = None, None
    zprogress.stage("features and metrics")
    if zdist.is_main():
        figures, status = _score_here(generated, request)
    return zdist.broadcast_object((figures, status))


def _score_here(generated: Generated, r: EvalRequest) -> tuple[dict, str]:
    train, n_train_used = None, None
    layers = r.train_layers
    if layers:
        train = reference_features(r.dataset, "train", r.extractor, layers,
                                   n_reference=r.n_train, cache=r.cache,
                                   cache_dir=r.cache_dir, root=r.root,
                                   batch_size=r.batch_size, device=r.device)
        n_train_used = int(train[layers[0]].shape[0])
    figures, status = compute_metrics(
        generated.images, r.reference, r.extractor, r.metrics, cache_key=r.key,
        cache_dir=r.cache_dir, batch_size=r.batch_size, seed=r.seed, device=r.device,
        progress=r.progress, train=train, bootstrap=r.bootstrap,
        closest=r.closest or (PANEL_PAIRS if r.panel else 0), labels=generated.labels,
        reference_labels=r.reference_labels, replicates=r.replicates,
    )
    if n_train_used is not None:
        figures["n_train"] = n_train_used
    if r.panel is not None and figures.get("memorization_closest"):
        from .memorization import save_pairs_panel

        train_images = _reference_images(r.dataset, "train", r.n_train, r.root)
        figures["memorization_panel"] = str(save_pairs_panel(
            generated.images, train_images, figures["memorization_closest"], r.panel))
    if status != "off":
        _write_key_card(cache_root(r.cache_dir), r.dataset, r.split, r.reference.shape[0],
                        r.extractor, r.root)
    return figures, status


def _dataset_record(dataset, split: str, root=None) -> dict:
    """How a result row names its dataset: the built-in name, or the spec and content hash."""
    ds = zdata.spec(dataset)
    if ds.builtin and not ds.transformed:
        return {"dataset": ds.name}
    return {"dataset": str(ds), "dataset_sha256": zdata.content_hash(ds, split, root)}


def _write_key_card(root: Path, dataset, split: str, n: int, ext: Extractor,
                    data_root=None) -> None:
    """A readable JSON beside the cache files saying what the key stands for."""
    key, parts = reference_key(dataset, split, n, ext, data_root)
    path = root / f"{key}.json"
    if not path.is_file():
        text = json.dumps(parts, indent=2)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def fid(
    samples: Tensor,
    dataset: str,
    split: str = "test",
    extractor: str | None = None,
    **options,
) -> float:
    """FID of a uint8 batch against a dataset split (reference features cached), one float.

    Quick for N of 1000-2000 with a classifier extractor: the tests' per-family check.
    """
    options.setdefault("announce", False)
    return evaluate(samples, dataset, split, extractor, metrics=("fid",), **options)["fid"]


def reference_features(
    dataset: str,
    split: str,
    extractor: Extractor,
    layers: Sequence[str] = ("features",),
    *,
    n_reference: int | None = None,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    batch_size: int = 500,
    device: str | torch.device | None = None,
) -> Tensor:
    """``{layer: features [N, D]}`` of a split, from (or into) the cache ``evaluate`` uses.

    Layers are extracted (and cached) as one group, like torch-fidelity does for a metric
    call that needs them all.
    """
    reference = _reference_images(dataset, split, n_reference, root)
    dev = _device(device)
    key = None
    if cache:
        key = reference_key(dataset, split, reference.shape[0], extractor, root)[0]
        croot = cache_root(cache_dir)
        croot.mkdir(parents=True, exist_ok=True)
        _vet_cache(croot, key)
        _write_key_card(croot, dataset, split, reference.shape[0], extractor, root)
    return _extract(2, reference, extractor, layers, dev, batch_size, False, key, cache_dir)


class _LayerOutput(nn.Module):
    """One layer of a torch-fidelity extractor as the plain module torchmetrics expects."""

    def __init__(self, extractor: nn.Module, num_features: int):
        super().__init__()
        self.extractor = extractor
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return self.extractor(x)[0]


class StreamingFID:
    """FID during training: torchmetrics' FrechetInceptionDistance over a zoo extractor.

    The reference statistics come from the same cached features ``evaluate`` uses (added on
    rank 0 only, so a DDP sync sums them exactly once); ``update`` adds generated uint8
    batches on any rank and ``compute`` syncs across ranks. ``reset`` keeps the reference.
    """

    def __init__(
        self,
        dataset: str,
        split: str = "test",
        extractor: str | None = None,
        *,
        device: str | torch.device | None = None,
        n_reference: int | None = None,
        inception_weights: str | os.PathLike | None = None,
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
        root: str | os.PathLike | None = None,
        announce: bool = True,
    ):
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.device = _device(device)
        self.extractor = resolve_extractor(extractor, dataset, inception_weights, announce)
        layer = self.extractor.layers["fid"]
        real = reference_features(
            dataset, split, self.extractor, (layer,), n_reference=n_reference, cache=cache,
            cache_dir=cache_dir, root=root, device=self.device,
        )[layer].double()
        self.dataset, self.split, self.n_reference = dataset, split, real.shape[0]
        module = _LayerOutput(self.extractor.build([layer]), real.shape[1])
        self.metric = FrechetInceptionDistance(feature=module, reset_real_features=False)
        self.metric = self.metric.to(self.device)
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
            m = self.metric
            m.real_features_sum = real.sum(0).to(self.device)
            m.real_features_cov_sum = (real.T @ real).to(self.device)
            m.real_features_num_samples = torch.tensor(real.shape[0], device=self.device)

    def update(self, fake: Tensor) -> None:
        """Add a uint8 batch of generated images."""
        fake = _check_batch(fake, "generated images")
        with torch.no_grad():
            self.metric.update(fake.to(self.device), real=False)

    def compute(self) -> float:
        """The FID of the images added so far, on every rank of a process group (the
        statistics of all ranks are summed)."""
        count = zdist.all_reduce(self.metric.fake_features_num_samples.reshape(1).double())
        if int(count.item()) < 2:
            raise MetricsError("StreamingFID needs at least 2 generated images before compute()")
        return float(self.metric.compute())

    def reset(self) -> None:
        """Forget the generated images; the reference statistics stay."""
        self.metric.reset()

    def record(self) -> dict:
        return {**self.extractor.record(), "dataset": self.dataset, "split": self.split,
                "n_reference": self.n_reference,
                "n_generated": int(self.metric.fake_features_num_samples)}


# -- presentation ------------------------------------------------------------------------

def format_result(result: dict) -> str:
    """A small text table of an ``evaluate`` result, with what it was measured against."""
    lines = []
    worded = [m for m in map(registry.get, registry.names()) if m.text is not None
              and all(c.key in result for c in m.columns)]
    in_words = {c.key for m in worded for c in m.columns}
    for col in registry.columns():
        if col.label and col.key in result and col.key not in in_words:
            value = col.format.format(result[col.key])
            spread = result.get(col.spread) if col.spread else None
            if spread is not None and math.isfinite(spread) and spread > 0:  # 0: one subset
                value += " ± " + col.format.format(spread)
            ci = result.get(f"{col.key}_ci95")
            if ci is not None:
                value += " [" + ", ".join(col.format.format(v) for v in ci) + "]"
            lines.append(f"  {col.label:<10} {value}")
    lines += ["  " + m.describe(result) for m in worded]
    head = (f"{result.get('model', 'samples')} vs {result['dataset']} {result['split']}: "
            f"{result['n_generated']} generated, {result['n_reference']} reference images")
    ext = (f"extractor {result['extractor']} (weights sha256 "
           f"{result['extractor_weights_sha256'][:12]}); {result['extractor_choice']}")
    return "\n".join([head, *lines, ext])


def memorization_line(result: dict) -> str:
    """``memorization_ratio`` and ``near_copies`` of a result in words, on one line."""
    split = result.get("split", "held-out")
    pct = registry.get("memorization").params.get("percentile", 1.0)
    ratio, near = result["memorization_ratio"], result["near_copies"]
    text = (f"memorization: distance to the nearest training image, median of the samples / "
            f"median of the {split} images {ratio:.2f} (1: as far as unseen images; below 1: "
            f"closer to the training set); near copies {100 * near:.1f}%")
    n = result.get("n_generated")
    if n:
        text += (f" ({round(near * n)} of {n} samples closer to a training image than "
                 f"{100 - pct:g}% of the {split} images are)")
    return text


def feature_layer(extractor: Extractor, metric: str) -> str | None:
    """The extractor layer ``metric`` reads (None: the images themselves)."""
    return _layer(extractor, metric)


def features(images: Tensor, extractor: Extractor, metric: str = "kid",
             device: str | torch.device | None = None, batch_size: int = 500) -> Tensor:
    """The features ``metric`` reads of generated uint8 ``images`` (float64 ``[N, D]``)."""
    layer = _layer(extractor, metric)
    dev = _device(device)
    return _extract(1, _check_batch(images, "images"), extractor, [layer], dev, batch_size,
                    False)[layer].double().cpu()


"""The metric registry: each sample-quality metric declared once, read by everything else.

A ``Metric`` says what it is computed from (torch-fidelity under one of its flags, or a
function over the extractor's features, its logits or the images), the fewest images it
needs per side, whether ``zoo eval`` / a suite computes it by default, and its result
``Column``s: key, table label, format, direction, determinism, default ``zoo compare``
tolerance and the report figure it is drawn in. ``zoo.metrics.evaluate``, ``zoo eval``,
the results schema, the runner, the report's tables and figures, the training curves and
the CI gate all read these declarations, so a new metric is one function and one
``register`` call.

Light on purpose (no torch or torch-fidelity here): ``zoo.bench.schema``, ``compare`` and
``report`` read it, and they never import torch-fidelity.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..core import ConfigError

#: (kind, value): ("rel", 0.10) allows a 10% worsening of the base value, ("abs", 0.02) 0.02
Tolerance = tuple[str, float]

NEEDS = ("features", "logits", "images")
FIGURES = ("speed", "guidance", None)  #: ``Column.figure``
#: torch-fidelity flags whose figures ``zoo.metrics.intervals`` recomputes per bootstrap draw
BOOTSTRAPPED_TF = ("fid", "kid", "isc", "prc")


@dataclass(frozen=True)
class Column:
    """One figure a metric puts in a result row."""

    key: str  #: the result and row key, e.g. ``fid``, ``kid_std``
    label: str = ""  #: table header; "" for a spread, shown as ``± x`` beside its figure
    format: str = "{:.4f}"  #: how ``format_result`` prints it
    direction: int = 0  #: +1 higher is better, -1 lower is better, 0 not ranked (a std)
    #: identical for identical code, seed and machine: safe to gate on in CI
    deterministic: bool = True
    #: the default ``zoo compare`` tolerance; every deterministic ranked figure has one
    tolerance: Tolerance | None = None
    spread: str | None = None  #: the key of the column holding this figure's spread
    #: gets a bootstrap interval (``<key>_ci95``) when ``evaluate(bootstrap=B)`` resamples
    #: the generated side's features or logits (the reference, if any, fixed)
    interval: bool = False
    #: the report's figure of a ranked, labelled column: "speed" (against sampling speed,
    #: and a panel of the quality-against-training-compute curves), "guidance" (against
    #: the headline column across guidance values), or None (none)
    figure: str | None = "speed"
    #: the report's headline quality figure (one column): the summary's sample-quality axis,
    #: its Pareto front, the sampler frontier and the "quality vs speed" figure
    headline: bool = False
    #: the key of a column (of any metric) compared instead where the rows' N differ, and
    #: in the curves' ranking at one small N: this figure is biased by N, that one is not
    small_n: str | None = None
    axis: str = ""  #: a figure's axis label; "" for the label


@dataclass(frozen=True, eq=False)
class Metric:
    """A sample-quality metric: what it needs, how it is computed and what it reports.

    ``function(real, fake, **params) -> {column key: value}`` gets the reference and the
    generated side as ``needs`` says: ``features`` (the extractor's feature layer, the one
    FID/KID/PR use, ``[N, D]`` float tensors), ``logits`` (its class logits, IS's layer) or
    ``images`` (uint8 ``[N, C, H, W]``); ``real`` is None when ``reference`` is False. It
    is given as a callable or as ``"module:function"``, imported only when computed. With
    ``train`` it also gets the training split's features of the same layer, as the keyword
    ``train`` (cached like the reference's; ``evaluate(n_train=...)`` takes a subset).
    """

    name: str
    columns: tuple[Column, ...]
    needs: str = "features"
    min_images: int = 2  #: per side (the generated side only when ``reference`` is False)
    default: bool = False  #: computed when no metric set is named
    #: measured along the way when a suite names no ``curve_metrics`` (cheap at small N)
    curve: bool = False
    aliases: tuple[str, ...] = ()
    reference: bool = True  #: compared with the reference images (IS is not)
    #: a function metric that also reads the training split's features (``train=``)
    train: bool = False
    #: computed by ``torch_fidelity.calculate_metrics`` under this flag (fid, kid, isc, prc)
    tf_flag: str | None = None
    #: result key -> torch-fidelity's result key (or the argument it was called with)
    tf_results: tuple[tuple[str, str], ...] = ()
    function: str | Callable | None = None
    params: dict = field(default_factory=dict)  #: keyword arguments of ``function``
    description: str = ""
    #: a function metric of the requested class of each generated sample: gets them as
    #: ``labels=`` (int64 [N]); refused when the samples have none (an unconditional model)
    labels: bool = False
    #: gets the requested classes as ``labels=`` where the samples have them, else None
    optional_labels: bool = False
    #: ... and of the reference images' classes, as ``reference_labels=`` (int64 [M])
    reference_labels: bool = False
    #: the function computes its own interval columns (``<key>_ci95``) when given
    #: ``bootstrap=B`` (> 0) and ``seed=``, instead of the generic resampling of
    #: ``zoo.metrics.intervals`` (which cannot keep the labels paired with the samples)
    own_interval: bool = False
    #: reads the dataset classifier's classes (its logits or class-conditional statistics):
    #: meaningless under an ImageNet extractor, so ``evaluate`` refuses that pairing
    classes: bool = False
    #: a metric reading the training split that also takes ``closest=k`` and returns
    #: ``closest_pairs``, the k samples nearest a training image (``evaluate(panel=...)``
    #: draws them beside those images)
    closest: bool = False
    #: ``"module:function"`` (or a callable) of an ``evaluate`` result giving the metric's
    #: figures as one line of ``format_result`` in words, instead of a line per column
    text: str | Callable | None = None

    def describe(self, result: dict) -> str | None:
        """The metric's line of ``format_result``, when it declares ``text``."""
        fn = self.text
        if isinstance(fn, str):
            module, _, attr = fn.partition(":")
            fn = getattr(importlib.import_module(module), attr)
        return None if fn is None else fn(result)

    def compute(self, real, fake, train=None, **options) -> dict:
        """The figures of a function metric: ``function(real, fake, **params, **options)``
        (and ``train=train`` for a metric that reads the training split)."""
        fn = self.function
        if isinstance(fn, str):
            module, _, attr = fn.partition(":")
            fn = getattr(importlib.import_module(module), attr)
        extra = {"train": train} if self.train else {}
        if not self.own_interval:
            options.pop("bootstrap", None)
            options.pop("seed", None)
        return dict(fn(real, fake, **{**self.params, **options}, **extra))


_REGISTRY: dict[str, Metric] = {}


def _check(metric: Metric) -> None:
    where = f"metric {metric.name!r}"
    if not metric.name or metric.name != metric.name.strip().lower() or "," in metric.name:
        raise ConfigError(f"{where}: a name is lower case, without spaces or commas")
    if metric.needs not in NEEDS:
        raise ConfigError(f"{where}: needs must be one of {', '.join(NEEDS)}, "
                          f"got {metric.needs!r}")
    if (metric.tf_flag is None) == (metric.function is None):
        raise ConfigError(f"{where}: give either tf_flag (torch-fidelity) or a function")
    if metric.train and (metric.function is None or metric.needs == "images"
                         or not metric.reference):
        raise ConfigError(f"{where}: a metric reading the training split (train) is a "
                          "function of features or logits, compared with the reference")
    if (metric.labels or metric.optional_labels or metric.reference_labels
            or metric.own_interval) and (
            metric.function is None or metric.needs == "images" or metric.train):
        raise ConfigError(f"{where}: labels, reference_labels and own_interval are for a "
                          "function metric of features or logits that reads no training split")
    if metric.closest and not metric.train:
        raise ConfigError(f"{where}: closest (the samples nearest a training image) needs "
                          "the training split (train)")
    if metric.reference_labels and not metric.reference:
        raise ConfigError(f"{where}: reference_labels needs a reference side (reference)")
    if metric.min_images < 1:
        raise ConfigError(f"{where}: min_images must be >= 1, got {metric.min_images}")
    if not metric.columns:
        raise ConfigError(f"{where}: declares no result column")
    taken = {n: m.name for m in _REGISTRY.values() if m.name != metric.name
             for n in (m.name, *m.aliases)}
    for n in (metric.name, *metric.aliases):
        if n in taken:
            raise ConfigError(f"{where}: the name {n!r} is taken by metric {taken[n]!r}")
    owned = {c.key: m.name for m in _REGISTRY.values() if m.name != metric.name
             for c in m.columns}
    keys = [c.key for c in metric.columns]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{where}: column keys repeat: {keys}")
    for c in metric.columns:
        if c.key in owned:
            raise ConfigError(f"{where}: column {c.key!r} belongs to metric {owned[c.key]!r}")
        if c.direction not in (-1, 0, 1):
            raise ConfigError(f"{where}: column {c.key!r} direction must be -1, 0 or +1")
        if c.interval and (c.direction == 0 or metric.needs == "images" or metric.train
                           or (metric.tf_flag is not None
                               and metric.tf_flag not in BOOTSTRAPPED_TF)
                           or ((metric.labels or metric.reference_labels)
                               and not metric.own_interval)):
            raise ConfigError(f"{where}: column {c.key!r}: an interval is for a ranked figure "
                              "of the features or logits (resampled per draw) that reads no "
                              "training split; a torch-fidelity metric needs its per-draw "
                              f"form in zoo.metrics.intervals ({', '.join(BOOTSTRAPPED_TF)}), "
                              "a metric of labels its own (own_interval)")
        if c.figure not in FIGURES:
            raise ConfigError(f"{where}: column {c.key!r} figure must be one of "
                              f"{', '.join(map(str, FIGURES))}, got {c.figure!r}")
        if c.headline and not (c.direction < 0 and c.label and c.figure == "speed"):
            raise ConfigError(f"{where}: column {c.key!r}: the headline is a labelled figure, "
                              "lower is better, drawn against speed")
        if c.headline and any(h.headline for m in _REGISTRY.values() if m.name != metric.name
                              for h in m.columns):
            raise ConfigError(f"{where}: column {c.key!r}: the headline is taken by "
                              f"{headline().key!r}")
        if c.spread is not None and c.spread not in keys:
            raise ConfigError(f"{where}: column {c.key!r} spread {c.spread!r} is not one of "
                              "its columns")
        gated = c.deterministic and c.direction != 0
        if gated != (c.tolerance is not None):
            raise ConfigError(f"{where}: column {c.key!r}: a deterministic figure with a "
                              "direction has a default tolerance, and nothing else has one")
        if c.tolerance is not None:
            kind, value = c.tolerance
            if kind not in ("rel", "abs") or not value >= 0:
                raise ConfigError(f"{where}: column {c.key!r} tolerance must be ('rel' or "
                                  f"'abs', value >= 0), got {c.tolerance!r}")


def register(metric: Metric, *, replace: bool = False) -> Metric:
    """Add ``metric`` (or replace the one of its name, with ``replace``); returns it."""
    if metric.name in _REGISTRY and not replace:
        raise ConfigError(f"metric {metric.name!r} is registered already")
    _check(metric)
    _REGISTRY[metric.name] = metric
    return metric


def unregister(name: str) -> None:
    """Remove a metric (tests register and remove their own)."""
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """Every registered metric, in registration order (the canonical order)."""
    return tuple(_REGISTRY)


def default_metrics() -> tuple[str, ...]:
    """The metrics computed when none are named."""
    return tuple(n for n, m in _REGISTRY.items() if m.default)


def curve_metrics() -> tuple[str, ...]:
    """The metrics measured along the way when a suite names none."""
    return tuple(n for n, m in _REGISTRY.items() if m.curve)


def get(name: str) -> Metric:
    """A metric by name or alias."""
    return _REGISTRY[normalize_metrics(name)[0]]


def normalize_metrics(metrics: str | Sequence[str]) -> tuple[str, ...]:
    """``"fid,kid"`` or a sequence -> canonical names in registry order; unknown is an error."""
    known = names()
    aliases = {a: m.name for m in _REGISTRY.values() for a in m.aliases}
    items = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    chosen = set()
    for m in items:
        key = str(m).strip().lower()
        key = aliases.get(key, key)
        if key not in known:
            raise ConfigError(f"unknown metric {m!r}; choose from {', '.join(known)}")
        chosen.add(key)
    if not chosen:
        raise ConfigError(f"no metric asked for; choose from {', '.join(known)}")
    return tuple(m for m in known if m in chosen)


def describe() -> str:
    """One line for ``--metrics`` help: the names, their aliases and the default set."""
    parts = [m.name + (f" ({'/'.join(m.aliases)})" if m.aliases else "")
             for m in _REGISTRY.values()]
    return f"{', '.join(parts)}; default {','.join(default_metrics())}"


def columns(metrics: str | Iterable[str] | None = None) -> tuple[Column, ...]:
    """The result columns of a metric set (every registered metric when None), in order."""
    chosen = names() if metrics is None else normalize_metrics(
        metrics if isinstance(metrics, str) else list(metrics))
    return tuple(c for n in chosen for c in _REGISTRY[n].columns)


def column_keys(metrics: str | Iterable[str] | None = None) -> tuple[str, ...]:
    return tuple(c.key for c in columns(metrics))


def metric_of(key: str) -> Metric | None:
    """The metric a result column belongs to (None for a column of no metric)."""
    for m in _REGISTRY.values():
        if any(c.key == key for c in m.columns):
            return m
    return None


def directions() -> dict[str, int]:
    """{column: +1 higher is better / -1 lower is better} of every ranked column."""
    return {c.key: c.direction for c in columns() if c.direction}


def deterministic_columns() -> tuple[str, ...]:
    """Ranked columns identical for identical code, seed and machine (gated by default)."""
    return tuple(c.key for c in columns() if c.deterministic and c.direction)


def label_metrics(metrics: str | Iterable[str] | None = None) -> tuple[str, ...]:
    """The metrics of a set that need the requested class of each sample."""
    chosen = names() if metrics is None else normalize_metrics(
        metrics if isinstance(metrics, str) else list(metrics))
    return tuple(n for n in chosen if _REGISTRY[n].labels)


def class_metrics(metrics: str | Iterable[str] | None = None) -> tuple[str, ...]:
    """The metrics of a set that read the dataset classifier's classes (``zoo.metrics.classes``:
    meaningless under an ImageNet extractor)."""
    chosen = names() if metrics is None else normalize_metrics(
        metrics if isinstance(metrics, str) else list(metrics))
    return tuple(n for n in chosen if _REGISTRY[n].classes)


def interval_columns(metrics: str | Iterable[str] | None = None) -> tuple[str, ...]:
    """The columns of a metric set that get a bootstrap interval (``<key>_ci95``)."""
    return tuple(c.key for c in columns(metrics) if c.interval)


def column(key: str) -> Column | None:
    """A result column by key (None for a column of no metric)."""
    return next((c for c in columns() if c.key == key), None)


def headline() -> Column | None:
    """The report's headline quality column (``Column.headline``: FID)."""
    return next((c for c in columns() if c.headline), None)


def figure_columns(figure: str = "speed") -> tuple[Column, ...]:
    """The ranked, labelled columns the report draws as ``figure`` (``Column.figure``)."""
    return tuple(c for c in columns() if c.figure == figure and c.direction and c.label)


def closest_metrics(metrics: str | Iterable[str] | None = None) -> tuple[str, ...]:
    """The metrics of a set that find the samples nearest a training image (``closest``)."""
    chosen = names() if metrics is None else normalize_metrics(
        metrics if isinstance(metrics, str) else list(metrics))
    return tuple(n for n in chosen if _REGISTRY[n].closest)


def default_tolerances() -> dict[str, Tolerance]:
    """{column: default ``zoo compare`` tolerance} of the deterministic ranked columns."""
    return {c.key: c.tolerance for c in columns() if c.tolerance is not None}


# -- the metrics ----------------------------------------------------------------------------

# The default tolerances of fid, kid, precision, recall, density and coverage are the largest
# difference between six trainings that differ only in their seed, rounded up to the next 5%
# (relative) or 0.01 (absolute): a change that seeds alone make does not fail the gate (the
# regression gate section of docs/benchmarks.md has the measurement and its command). Density and
# coverage are relative: their scale depends on the data and the extractor (coverage ~0.04
# against the classifier's features, where an absolute 0.05 could never fire).
#: the fewest reference images for a FID worth comparing: FID is biased upward the more,
#: and spread the wider, the fewer the images, so a smaller reference set (a small own
#: dataset's test split) is flagged by ``zoo eval``, the model card and the report
MIN_REFERENCE_IMAGES = 1000


def small_reference(n) -> str | None:
    """A note that a reference set of ``n`` images is below ``MIN_REFERENCE_IMAGES``; None
    when it is not (or ``n`` is not a count)."""
    if isinstance(n, bool) or not isinstance(n, int) or n >= MIN_REFERENCE_IMAGES:
        return None
    return (f"only {n:,} reference images, fewer than the {MIN_REFERENCE_IMAGES:,} a FID "
            "needs: it is biased upward and noisy at this size; compare it only with figures "
            "measured against the same reference set")


#: a class whose samples spread less than this share of its reference images' (mean pairwise
#: feature distance, ``classes.diversity``) is called collapsed; real images of a class
#: against that class's test images give ~1.0 (docs/metrics.md has the measurements)
COLLAPSE_RATIO = 0.5


def collapse_warning(result: dict) -> str | None:
    """A one-line warning when a result's (or row's) within-class diversity says a class
    collapsed (``diversity_min`` below ``COLLAPSE_RATIO``); None otherwise or unmeasured."""
    low = result.get("diversity_min")
    if isinstance(low, bool) or not isinstance(low, (int, float)) or not low < COLLAPSE_RATIO:
        return None
    which = result.get("diversity_collapsed")
    classes = f" (class {', '.join(map(str, which))})" if which else ""
    return (f"within-class collapse: the samples of a class{classes} spread {low:.2f}x as "
            f"much as its real images (below {COLLAPSE_RATIO:g}: a few distinct images per "
            "class)")


PR_NEIGHBORHOOD = 3  #: torch-fidelity's precision/recall: k of the k-NN radii
IS_SPLITS = 10  #: torch-fidelity's inception score: splits (fewer when fewer images)
DC_NEAREST_K = 5  #: density/coverage: k of the k-NN radii (the prdc package's default)

register(Metric(
    "fid", default=True, curve=True, tf_flag="fid",
    columns=(Column("fid", "FID", "{:.3f}", -1, tolerance=("rel", 0.15),
                    interval=True, headline=True, small_n="kid"),),
    tf_results=(("fid", "frechet_inception_distance"),),
    description="Fréchet distance of the Gaussians fitted to the features",
))
register(Metric(
    "kid", default=True, curve=True, tf_flag="kid",
    columns=(Column("kid", "KID", "{:.5f}", -1, tolerance=("rel", 0.15), spread="kid_std",
                    interval=True),
             Column("kid_std", "", "{:.5f}")),
    tf_results=(("kid", "kernel_inception_distance_mean"),
                ("kid_std", "kernel_inception_distance_std"),
                ("kid_subset_size", "kid_subset_size")),
    description="squared MMD with a cubic polynomial kernel, mean over subsets",
))
register(Metric(
    "is", aliases=("isc",), default=True, tf_flag="isc", needs="logits", reference=False,
    columns=(Column("is", "IS", "{:.3f}", +1, tolerance=("rel", 0.05), spread="is_std",
                    interval=True, figure=None),
             Column("is_std", "", "{:.3f}")),
    tf_results=(("is", "inception_score_mean"), ("is_std", "inception_score_std")),
    description="Inception score of the generated images' class logits",
))
register(Metric(
    "pr", aliases=("prc", "precision", "recall"), default=True, tf_flag="prc",
    min_images=PR_NEIGHBORHOOD + 1,
    columns=(Column("precision", "precision", "{:.4f}", +1, tolerance=("abs", 0.05),
                    interval=True, figure=None),
             Column("recall", "recall", "{:.4f}", +1, tolerance=("abs", 0.10),
                    interval=True, figure=None)),
    tf_results=(("precision", "precision"), ("recall", "recall"), ("f_score", "f_score")),
    description="improved precision and recall (Kynkäänniemi et al. 2019), k=3",
))
register(Metric(
    "dc", aliases=("density", "coverage"), default=True, min_images=DC_NEAREST_K + 1,
    function="zoo.metrics.density_coverage:density_coverage",
    params={"nearest_k": DC_NEAREST_K},
    columns=(Column("density", "density", "{:.4f}", +1, tolerance=("rel", 0.10),
                    interval=True, figure=None),
             Column("coverage", "coverage", "{:.4f}", +1, tolerance=("rel", 0.25),
                    interval=True, figure=None)),
    description="density and coverage (Naeem et al. 2020), k=5",
))
register(Metric(
    "memorization", aliases=("memo",), train=True, closest=True, min_images=2,
    text="zoo.metrics.fidelity:memorization_line",
    function="zoo.metrics.memorization:memorization", params={"percentile": 1.0},
    columns=(Column("memorization_ratio", "memo ratio", "{:.4f}", +1,
                    tolerance=("abs", 0.05), figure=None),
             Column("near_copies", "near copy", "{:.4f}", -1, tolerance=("abs", 0.02),
                    figure=None)),
    description="nearest-training-image distance of the samples against the held-out "
                "images': median ratio and the share of near copies (below the held-out "
                "1st percentile)",
))
register(Metric(
    "class_accuracy", aliases=("acc", "accuracy"), classes=True, needs="logits", reference=False,
    min_images=1, labels=True, own_interval=True,
    function="zoo.metrics.classes:class_accuracy",
    columns=(Column("class_accuracy", "class acc", "{:.4f}", +1, tolerance=("abs", 0.02),
                    interval=True, figure="guidance",
                    axis="class accuracy (the classifier agrees with the class asked for)"),),
    description="share of samples the dataset's classifier assigns to the class they were "
                "drawn for (Wilson 95% interval); needs the requested labels",
))
register(Metric(
    "intra_fid", aliases=("ifid",), classes=True, min_images=2, labels=True, reference_labels=True,
    own_interval=True, function="zoo.metrics.classes:intra_fid",
    columns=(Column("intra_fid", "intra FID", "{:.3f}", -1, tolerance=("rel", 0.10),
                    interval=True, figure=None),),
    description="FID of each class's samples against that class's reference images, "
                "averaged over the classes (StudioGAN's iFID; bootstrap within classes); "
                "needs the requested labels",
))
register(Metric(
    "class_tv", aliases=("tv",), classes=True, needs="logits", min_images=1,
    function="zoo.metrics.classes:class_tv",
    columns=(Column("class_tv", "class TV", "{:.4f}", -1, tolerance=("abs", 0.02),
                    interval=True, figure=None),),
    description="total variation distance between the classifier's class histograms of "
                "the samples and of the reference images (0: the reference's class "
                "proportions; a mode-dropping signal, no labels needed)",
))
register(Metric(
    "diversity", aliases=("collapse",), min_images=2, reference_labels=True,
    function="zoo.metrics.classes:diversity", optional_labels=True,
    columns=(Column("diversity", "diversity", "{:.3f}", +1, tolerance=("abs", 0.10),
                    figure=None),
             Column("diversity_min", "diversity min", "{:.3f}", +1, tolerance=("abs", 0.15),
                    figure=None),
             Column("class_recall", "class recall", "{:.3f}", +1, tolerance=("abs", 0.10),
                    figure=None),
             Column("class_recall_min", "class recall min", "{:.3f}", +1,
                    tolerance=("abs", 0.15), figure=None)),
    description="within-class diversity, a collapse alarm: per class, the samples' mean "
                "pairwise feature distance / the reference images' (1: as varied; below "
                f"{COLLAPSE_RATIO:g}: collapsed), mean and min over classes, and per-class "
                "recall (k=3); classes by the requested labels, else by the nearest "
                "reference class mean",
))

"""Sample-quality metrics: FID, KID, IS and precision/recall through torch-fidelity, and
density/coverage, a memorization check and the per-class metrics (``classes``: class
accuracy, intra-class FID, class TV); each declared in ``registry``.

>>> from zoo import metrics
>>> row = metrics.evaluate(model, "mnist", n=10000)      # figures + extractor, reference, counts
>>> metrics.fid(samples_uint8, "mnist")                  # one float, reference cached

Every figure is tied to its feature extractor (``row["extractor"]`` and the sha256 of its
weights): numbers made with different extractors are never comparable.
"""

import importlib

from . import registry
from .registry import Column, Metric, normalize_metrics, register, unregister

# the rest is imported on first use: torch-fidelity is slow to import, and the results
# schema, report and compare read ``registry`` without it
_SUBMODULES = ("classes", "density_coverage", "features", "fidelity", "memorization",
               "reconstruction", "straightness")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in __all__:
        from .. import sampling
        from . import features, fidelity

        home = next(m for m in (fidelity, features, sampling) if hasattr(m, name))
        value = globals()[name] = getattr(home, name)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def streaming_fid(*args, **kwargs):
    """``StreamingFID(*args, **kwargs)``, imported when called: the Trainer's evaluator of
    ``eval_every`` (``zoo.Trainer(..., evaluator=...)``) without torch-fidelity at import."""
    from .fidelity import StreamingFID

    return StreamingFID(*args, **kwargs)


__all__ = [
    "INCEPTION",
    "METRICS",
    "ClassifierConfig",
    "ClassifierExtractor",
    "ClassifierNet",
    "Column",
    "Extractor",
    "InceptionExtractor",
    "Metric",
    "MetricsError",
    "StreamingFID",
    "available_extractors",
    "balanced_labels",
    "cache_root",
    "classifier_names",
    "compute_metrics",
    "draw_labelled",
    "draw_samples",
    "evaluate",
    "fid",
    "find_inception_weights",
    "format_result",
    "load_classifier",
    "normalize_metrics",
    "reference_features",
    "reference_key",
    "register",
    "registry",
    "resolve_extractor",
    "sample_slices",
    "unregister",
]

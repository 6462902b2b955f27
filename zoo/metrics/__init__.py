"""Sample-quality metrics: FID, KID, IS and precision/recall through torch-fidelity.

>>> from zoo import metrics
>>> row = metrics.evaluate(model, "mnist", n=10000)      # figures + extractor, reference, counts
>>> metrics.fid(samples_uint8, "mnist")                  # one float, reference cached

Every figure is tied to its feature extractor (``row["extractor"]`` and the sha256 of its
weights): numbers made with different extractors are never comparable.
"""

from ..sampling import draw_samples, sample_slices
from .features import (
    INCEPTION,
    ClassifierConfig,
    ClassifierExtractor,
    ClassifierNet,
    Extractor,
    InceptionExtractor,
    MetricsError,
    available_extractors,
    classifier_names,
    find_inception_weights,
    load_classifier,
    resolve_extractor,
)
from .fidelity import (
    METRICS,
    StreamingFID,
    cache_root,
    compute_metrics,
    evaluate,
    fid,
    format_result,
    reference_features,
    reference_key,
)

__all__ = [
    "INCEPTION",
    "METRICS",
    "ClassifierConfig",
    "ClassifierExtractor",
    "ClassifierNet",
    "Extractor",
    "InceptionExtractor",
    "MetricsError",
    "StreamingFID",
    "available_extractors",
    "cache_root",
    "classifier_names",
    "compute_metrics",
    "draw_samples",
    "evaluate",
    "fid",
    "find_inception_weights",
    "format_result",
    "load_classifier",
    "reference_features",
    "reference_key",
    "resolve_extractor",
    "sample_slices",
]

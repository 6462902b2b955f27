"""The error hierarchy: every error a user of zoo can cause is a ZooError.

A module of its own, below everything else, so that any module (``distributed``, the
runtime, the sampling loop) can raise these without importing ``core``; ``zoo.core``
re-exports them, so ``from zoo.core import ConfigError`` is the usual spelling.
"""

from __future__ import annotations


class ZooError(Exception):
    """Base class of every error a user of zoo can cause."""


class DataError(ZooError):
    """A dataset file is missing, corrupt or malformed."""


class ConfigError(ZooError):
    """An unknown model, option or value."""


class CheckpointError(ZooError):
    """A checkpoint is truncated, foreign, unsafe or does not match."""


class LikelihoodUnavailable(ZooError):
    """The model defines no likelihood (a GAN)."""


class TrainingDiverged(ZooError):
    """A loss became NaN or infinite."""


class MetricsError(ZooError):
    """A metric cannot be computed as asked (missing extractor weights, too few images...)."""


class SettingError(ZooError):
    """An environment variable of zoo's (``$ZOO_MAX_MEMORY_GB``) holds a value zoo cannot
    use: not a ConfigError, so that no reader of a file blames the file for it."""


class NonFiniteSamples(ZooError):
    """A model's samples came out NaN or infinite (an option or the weights overflowed)."""


class LockHeld(ZooError):
    """Another process is writing the same run or bench directory (``zoo.locks``)."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for
    one-line errors that wrap torch's multi-line ones."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "LikelihoodUnavailable",
    "LockHeld",
    "MetricsError",
    "NonFiniteSamples",
    "SettingError",
    "TrainingDiverged",
    "ZooError",
    "first_line",
]

"""zoo: generative models of four families behind one interface, and a benchmark harness.

>>> import zoo
>>> model = zoo.create("vae-conv", dataset="mnist")
>>> images = model.sample(16)            # uint8 [16, 1, 28, 28]
"""

from .core import (
    CheckpointError,
    ConfigError,
    DataError,
    GenerativeModel,
    LikelihoodUnavailable,
    TrainingDiverged,
    ZooError,
)
from .core import __version__ as __version__
from .registry import available, create
from .runs import load_run
from .train import TrainConfig, Trainer


def load(path) -> GenerativeModel:
    """Load a model from a checkpoint file or a run directory (its EMA weights)."""
    return load_run(path)


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "GenerativeModel",
    "LikelihoodUnavailable",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "ZooError",
    "available",
    "create",
    "load",
]

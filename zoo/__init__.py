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
from .registry import available, create
from .runs import load_run
from .train import TrainConfig, Trainer

__version__ = "0.1.0"


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

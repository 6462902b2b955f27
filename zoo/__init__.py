"""zoo: generative models of four families behind one interface, and a benchmark harness.

>>> import zoo
>>> model = zoo.create("vae-conv", dataset="mnist")
>>> images = model.sample(16)            # uint8 [16, 1, 28, 28]
"""

from . import train as _train
from .card import write_card as _write_card
from .core import (
    CheckpointError,
    ConfigError,
    DataError,
    GenerativeModel,
    LikelihoodUnavailable,
    TrainingDiverged,
    ZooError,
)
from .metrics import streaming_fid as _streaming_fid
from .registry import available, create
from .runs import load_run
from .train import TrainConfig, Trainer

__version__ = "0.1.0"

# what the Trainer (the training layer) uses from the layers above it unless told otherwise
_train.SERVICES.update(evaluator=_streaming_fid, card=_write_card)


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

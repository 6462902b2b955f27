"""The run directory format: the files a training run writes, and how to read them back.

A run directory holds ``run.json`` (what was trained, on what, with which options),
``checkpoint.pt`` (everything needed to resume: weights, EMA, optimizers, RNG, step),
``model.pt`` (the weights used for sampling: the EMA weights when EMA is on),
``losses.csv`` and, with streaming evaluation on, ``eval.csv``. ``zoo.train`` writes it;
the metrics, the harness and the CLI read it through here, without importing the Trainer.
"""

from __future__ import annotations

import json
from pathlib import Path

from .core import CheckpointError, GenerativeModel

RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
LOSSES_FILE = "losses.csv"
EVAL_FILE = "eval.csv"


def load_run(path: str | Path, map_location="cpu") -> GenerativeModel:
    """Load the model of a run directory (its EMA weights) or of a model file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"{path} does not exist; give a run directory (zoo train ... --out DIR) or a model file"
        )
    if path.is_dir():
        if not (path / MODEL_FILE).is_file():
            raise CheckpointError(
                f"{path} holds no trained model ({MODEL_FILE} is missing); "
                "train one with `zoo train MODEL --dataset D --out DIR`"
            )
        path = path / MODEL_FILE
    return GenerativeModel.load(path, map_location=map_location)


def run_info(path: str | Path) -> dict:
    """The run.json of a run directory ({} for a bare model file)."""
    p = Path(path) / RUN_FILE
    return json.loads(p.read_text()) if p.is_file() else {}


__all__ = [
    "CHECKPOINT_FILE",
    "EVAL_FILE",
    "LOSSES_FILE",
    "MODEL_FILE",
    "RUN_FILE",
    "load_run",
    "run_info",
]

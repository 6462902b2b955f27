"""The options of the training loop (``TrainConfig``): apart from ``zoo.train`` so that the
run directory's readers (the model card, the harness's suite checks) know them without the
Trainer. ``zoo.train`` re-exports it."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

from .core import ConfigError
from .logs import LOGGERS
from .options import check_seed


@dataclass
class TrainConfig:
    """Options of the training loop (the model's own options live in its Config)."""

    batch_size: int = 128
    steps: int | None = None
    seconds: float | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None  # None: bf16 autocast on CUDA, off on CPU
    channels_last: bool | None = None  # None: on for convolutional models on CUDA
    compile: bool = False  # torch.compile the networks (the first step pays the compile)
    ema_decay: float | None = 0.999  # None or 0: no EMA
    grad_clip: float | None = 1.0
    # a logged loss beyond this (in absolute value) stops training like a NaN (None: off)
    max_loss: float | None = 1e6
    checkpoint_every: int = 1000
    log_every: int = 25
    eval_every: int | None = None  # steps between streaming FID evaluations (None: off)
    eval_n: int = 1000  # generated images per evaluation
    eval_extractor: str | None = None  # None: the dataset's default extractor (announced)
    log: str = "csv"  # csv (losses.csv, eval.csv) | tensorboard (csv and RUN/tensorboard/)
    sample_every: int | None = None  # steps between logged sample grids (None: off)
    # images of each sample grid: the periodic ones and RUN/samples.png, drawn at the end
    # for the model card (0: none at the end)
    sample_n: int = 16

    def validate(self) -> None:
        _check_types(self)
        if self.steps is None and self.seconds is None:
            raise ConfigError("give a training budget: steps and/or seconds")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.seconds is not None and not (math.isfinite(self.seconds) and self.seconds > 0):
            raise ConfigError(f"seconds must be a finite number > 0, got {self.seconds}")
        check_seed(self.seed)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ConfigError("checkpoint_every and log_every must be >= 1")
        if self.eval_every is not None and (self.eval_every < 1 or self.eval_n < 2):
            raise ConfigError("eval_every must be >= 1 (or None) and eval_n >= 2")
        if self.sample_every is not None and self.sample_every < 1:
            raise ConfigError(f"sample_every must be >= 1 (or None: off), got {self.sample_every}")
        if not 0 <= self.sample_n <= 256 or (self.sample_every and self.sample_n < 1):
            raise ConfigError(f"sample_n must be in 0..256 (>= 1 with sample_every), got "
                              f"{self.sample_n}")
        if self.log not in LOGGERS:
            raise ConfigError(f"log must be one of {', '.join(LOGGERS)}, got {self.log!r}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip)
                                               and self.grad_clip >= 0):
            raise ConfigError(f"grad_clip must be a finite number >= 0 (0 or None: off), "
                              f"got {self.grad_clip}")
        if self.max_loss is not None and not self.max_loss > 0:
            raise ConfigError(f"max_loss must be > 0 (or None: off), got {self.max_loss}")


def _check_types(config: TrainConfig) -> None:
    """Each field of the type its annotation says (a TOML table, a run.json or a keyword
    argument can hold anything): one ConfigError naming the field otherwise."""
    for f in dataclasses.fields(config):
        value, ann = getattr(config, f.name), str(f.type)
        if value is None and "None" in ann:
            continue
        if "bool" in ann:
            ok, want = isinstance(value, bool), "true or false"
        elif "int" in ann:
            ok, want = isinstance(value, numbers.Integral) and not isinstance(value, bool), \
                "an integer"
        elif "float" in ann:
            ok, want = isinstance(value, numbers.Real) and not isinstance(value, bool), \
                "a number"
        else:
            ok, want = isinstance(value, str), "a string"
        if not ok:
            none = " (or None)" if "None" in ann else ""
            raise ConfigError(f"training option {f.name} must be {want}{none}, got "
                              f"{type(value).__name__} {value!r}")


__all__ = ["TrainConfig"]

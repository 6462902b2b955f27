"""The Trainer's loop, in pieces: its clock, its log window, the per-step loss checks and the
periodic work (evaluation, sample grids, checkpoints) of ``zoo.train.Trainer``."""

from __future__ import annotations

import contextlib
import math
import time

import torch

from . import distributed as zdist
from .core import TrainingDiverged


class TrainingClock:
    """Training seconds of one ``fit`` call: wall time less the pauses (evaluations, sample
    grids), with the first step (compilation, warm-up) timed apart from the steady ones."""

    def __init__(self):
        self.start = time.perf_counter()  # the training time since then is not banked yet
        self.first_seconds: float | None = None
        self.steady_from: float | None = None

    def running(self) -> float:
        """Training seconds since the last ``lap`` (or the start)."""
        return time.perf_counter() - self.start

    def lap(self) -> float:
        """``running()``, and the clock restarted from now."""
        now = time.perf_counter()
        seconds, self.start = now - self.start, now
        return seconds

    def stepped(self) -> None:
        """Mark a step done: the first one ends the warm-up."""
        if self.first_seconds is None:
            self.steady_from = time.perf_counter()
            self.first_seconds = self.steady_from - self.start

    @contextlib.contextmanager
    def paused(self):
        """The time inside the block is not training time (an exception leaves it counted,
        as the interrupted run's checkpoint records it)."""
        t = time.perf_counter()
        yield
        t = time.perf_counter() - t
        self.start += t
        self.steady_from += t

    def steady_images_per_s(self, steps: int, batch_size: int) -> float | None:
        """Images/s of ``steps`` steady steps up to the last ``lap`` (None without any)."""
        return steps * batch_size / (self.start - self.steady_from) if steps > 0 else None


class LogWindow:
    """The losses and images since the last log point: their means and the images/s
    (wall time, pauses included)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.count = 0
        self.t, self.images = time.perf_counter(), 0

    def add(self, losses: dict, images: int) -> None:
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1
        self.images += images

    def peek(self) -> tuple[float, dict]:
        """(images/s, mean losses) of the window so far, the window kept."""
        ips = self.images / max(time.perf_counter() - self.t, 1e-9)
        return ips, {k: v / max(self.count, 1) for k, v in self.sums.items()}

    def take(self) -> tuple[float, dict]:
        """(images/s, mean losses) of the window, and a new window from now."""
        ips, means = self.peek()
        self.t, self.images = time.perf_counter(), 0
        self.sums, self.count = {}, 0
        return ips, means


def mean_over_ranks(losses: dict, world: int) -> dict:
    """The losses averaged over the ranks of a process group (as they are in one process)."""
    if world == 1:
        return losses
    keys = list(losses)
    mean = zdist.all_reduce(torch.tensor([losses[k] for k in keys], dtype=torch.float64)) / world
    return dict(zip(keys, mean.tolist(), strict=True))


def check_losses(name: str, losses: dict, max_loss: float | None) -> None:
    """TrainingDiverged when a loss is not finite or beyond ``max_loss`` in size."""
    bad = [k for k, v in losses.items() if not math.isfinite(v)]
    if bad:
        raise TrainingDiverged(f"{name}: {', '.join(bad)} became non-finite")
    big = [k for k, v in losses.items() if max_loss is not None and abs(v) > max_loss]
    if big:
        raise TrainingDiverged(f"{name}: {big[0]} reached {losses[big[0]]:.4g}, beyond "
                               f"max_loss {max_loss:g}")


def due(step: int, every: int | None) -> bool:
    """Whether periodic work done every ``every`` steps (None: never) falls on ``step``."""
    return bool(every) and step % every == 0


__all__ = ["LogWindow", "TrainingClock", "check_losses", "due", "mean_over_ranks"]

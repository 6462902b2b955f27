"""Progress of a long job on stderr, the one way every command shows it.

A ``Progress`` is shown in one of three modes:

- ``bar``: on a terminal, a tqdm bar that moves per unit of work;
- ``lines``: elsewhere (a CI log), one plain line every ``interval()`` seconds
  (``$ZOO_PROGRESS_INTERVAL``, default 30) with the same figures, written by a heartbeat
  thread so a line comes even while the work makes no visible step;
- ``off``.

``enabled`` picks it: False is off; True is a bar on a terminal and lines elsewhere; None
follows the job it runs inside (an enclosing ``Progress``), else the process default, which
``default(...)`` sets (the CLI: on unless ``--quiet``) and which is otherwise "a bar on a
terminal, nothing elsewhere". Only rank 0 of a process group shows anything.

Jobs nest: a bench shows its suite, a Trainer inside it its steps. ``stage(text)`` says
what the innermost shown job is doing; ``steps(iterable, images)`` wraps a sampling loop
(diffusion steps, autoregressive tokens), so a job opened with ``steps=True`` counts those
steps rather than whole model calls.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator

from . import distributed as zdist
from .errors import ConfigError
from .limits import duration

INTERVAL_ENV = "ZOO_PROGRESS_INTERVAL"
#: seconds between two lines on a non-terminal
DEFAULT_INTERVAL = 30.0
#: an estimate is printed before a job when it will take at least this many seconds
ESTIMATE_SECONDS = 10.0

OFF, BAR, LINES = "off", "bar", "lines"

_lock = threading.RLock()
_active: list[Progress] = []  # open jobs, outermost first
_default: list[bool | None] = [None]  # None: a bar on a terminal, nothing elsewhere
_heart: list[threading.Event] = []  # the stop event of the running heartbeat, if any
_paused = [0]  # > 0: sampling loops are not counted (``uncounted``)


def interval() -> float:
    """Seconds between two progress lines on a non-terminal: ``$ZOO_PROGRESS_INTERVAL``
    (a positive number), else ``DEFAULT_INTERVAL``."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"${INTERVAL_ENV} must be a positive number of seconds, got {text!r}")
    return value


@contextlib.contextmanager
def default(enabled: bool | None):
    """Within the block, a job's ``enabled=None`` outside any other job means ``enabled``."""
    _default.append(enabled)
    try:
        yield
    finally:
        _default.pop()


def resolve(enabled: bool | None, file=None, terminal: bool | None = None) -> str:
    """The mode (``OFF``, ``BAR``, ``LINES``) of a job asked for with ``enabled``."""
    if enabled is None:
        with _lock:
            enabled = _active[-1].enabled if _active else _default[-1]
    if enabled is False or not zdist.is_main():
        return OFF
    if terminal is None:
        f = file or sys.stderr
        terminal = bool(getattr(f, "isatty", lambda: False)())
    if terminal:
        return BAR
    return LINES if enabled else OFF


class Progress:
    """One job's progress: ``total`` units (None: unknown) of ``unit``, ``initial`` done.

    ``update(n)`` adds work done, ``set(n)`` sets it (a time budget), ``note(**figures)``
    and ``stage(text)`` show what goes with it. ``steps=True``: sampling loops reported
    through ``steps()`` inside the job count as the unit (``total`` is then the number of
    images, the steps' total worked out as the loops start). ``estimate``: after the first
    ``update``, this line with ``{time}`` replaced by how long the whole job will take, at
    the rate so far, when that is at least ``ESTIMATE_SECONDS``."""

    def __init__(self, desc: str, total: float | None = None, unit: str = "it", *,
                 enabled: bool | None = None, initial: float = 0, steps: bool = False,
                 estimate: str | None = None, file=None, terminal: bool | None = None,
                 clock=None):
        self.file = file
        #: a time budget's clock (seconds spent, maybe before this process): the count
        #: follows it, and the time left is the budget's rest
        self.clock = clock
        self.mode = resolve(enabled, file, terminal)
        self.enabled = self.mode != OFF if enabled is None else enabled
        self.desc, self.total, self.unit, self.n = desc, total, unit, initial
        self.figures: dict[str, str] = {}
        self.status = ""
        self.detail = ""  # what the code it calls is doing (``stage()``)
        self.start = time.monotonic()
        self.estimate, self.first = estimate, initial
        self.images = total if steps else None  # images to draw; None: no step counting
        self.drawn = 0  # images whose loops have started
        self.bar = None
        if self.mode == BAR:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit=unit, desc=desc, leave=None,
                            file=self._out(), **_size(self._out()))
        with _lock:
            _active.append(self)
        if self.mode == LINES:
            _beat()

    def _out(self):
        return self.file or sys.stderr

    # -- the work done ---------------------------------------------------------------------
    def update(self, n: float = 1) -> None:
        self.set(self.n + n)

    def set(self, n: float) -> None:
        self.n = n
        if self.bar is not None:
            self.bar.update(n - self.bar.n)
        if self.estimate is not None and self.n > self.first:
            self._estimate()

    def note(self, **figures) -> None:
        """Figures shown after the count (``loss=0.31``), replacing those of the same name."""
        if self.mode == OFF:
            return
        self.figures.update({k: v if isinstance(v, str) else f"{v:.4g}"
                             for k, v in figures.items()})
        self._postfix()

    def stage(self, text: str) -> None:
        """What the job is doing now (``mnist/ddpm: train``); the detail that ``stage()``
        added is cleared."""
        self.status, self.detail = text, ""
        self._postfix(refresh=True)

    def drew(self, images: int) -> None:
        """A model call drew ``images`` images: counted as such unless its loops were
        counted as steps."""
        if self.unit != "step":
            self.update(images)

    def _postfix(self, refresh: bool = False) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(self._tail(), refresh=refresh)

    def _tail(self) -> str:
        doing = ": ".join(filter(None, [self.status, self.detail]))
        return ", ".join(filter(None, [doing, *(f"{k}={v}" for k, v in self.figures.items())]))

    def _estimate(self) -> None:
        """Say once, from the work so far, how long the whole job will take."""
        text, self.estimate = self.estimate, None
        left = self.left()
        if left is not None and left >= ESTIMATE_SECONDS and self.mode != OFF:
            self.write(text.replace("{time}", duration(left)))

    def _tick(self) -> bool:
        """With a ``clock`` and a total, the count read from the clock (True)."""
        if self.clock is None or self.total is None:
            return False
        self.n = min(self.clock(), self.total)
        return True

    def left(self) -> float | None:
        """Seconds left at the rate so far (None before any work or without a total); with
        a ``clock``, the budget's rest."""
        if self._tick():
            return self.total - self.n
        done = self.n - self.first
        if self.total is None or done <= 0:
            return None
        return (time.monotonic() - self.start) * max(self.total - self.n, 0) / done

    # -- sampling loops ----------------------------------------------------------------------
    def _loop(self, length: int, images: int) -> None:
        """A sampling loop of ``length`` steps over ``images`` images starts: the total
        becomes the steps done plus those of the images not yet started."""
        images = max(images, 1)
        left = max(self.images - self.drawn, images)
        self.drawn += images
        if self.unit != "step":
            self.unit, self.n, self.first = "step", 0, 0
            self.start = time.monotonic()
            if self.bar is not None:
                self.bar.unit = "step"
                self.bar.reset(total=None)
        self.note(img=f"{min(self.drawn, self.images)}/{self.images}")
        self.total = self.n + length * math.ceil(left / images)
        if self.bar is not None:
            self.bar.total = self.total

    # -- output ------------------------------------------------------------------------------
    def line(self) -> str:
        """The job as one plain line: ``train ddpm: 120/500 step (24%), 20 s elapsed, about
        1 min 4 s left, 5.9 step/s, loss=0.31``."""
        elapsed = time.monotonic() - self.start
        left = self.left()
        parts = [self._count()] if self.total or self.n else []
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{duration(elapsed)} elapsed")
        if left is not None:
            parts.append(f"about {duration(left)} left")
        if self.n > self.first and elapsed > 0 and self.unit != "s":  # a time budget: no rate
            parts.append(f"{(self.n - self.first) / elapsed:.3g} {self.unit}/s")
        if self._tail():
            parts.append(self._tail())
        return f"{self.desc}: " + ", ".join(parts)

    def _count(self) -> str:
        """``120/500 step``, ``3 it`` without a total."""
        return _count(self.n) + (f"/{_count(self.total)}" if self.total else "") + \
            f" {self.unit}"

    def outer(self) -> str:
        """The job as it prefixes the line of a job inside it: ``bench smoke 2/6 row
        (mnist/ddpm (entry 1 of 2): train)``."""
        self._tick()  # a budget's clock moves while an inner job runs
        count = f" {self._count()}" if self.total or self.n else ""
        doing = ": ".join(filter(None, [self.status, self.detail]))
        return self.desc + count + (f" ({doing})" if doing else "")

    def write(self, text: str) -> None:
        """A message line that leaves the bars whole."""
        if self.bar is not None:
            self.bar.write(text, file=self._out())
        else:
            print(text, file=self._out(), flush=True)

    def close(self) -> None:
        with _lock:
            if self in _active:
                _active.remove(self)
            if _heart and not any(p.mode == LINES for p in _active):
                _heart.pop().set()  # the heartbeat stops; the next job starts its own
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _count(n: float | None) -> str:
    return "?" if n is None else f"{n:.1f}" if n != int(n) else f"{int(n)}"


def _size(file) -> dict:
    """tqdm's size options: follow the terminal, or a fixed size where it reports none (a
    pseudo-terminal of size 0x0, where tqdm would draw no bar at all, an empty line)."""
    try:
        size = os.get_terminal_size(file.fileno())
    except (AttributeError, OSError, ValueError):
        size = os.terminal_size((0, 0))
    if size.columns > 0 and size.lines > 0:
        return {"dynamic_ncols": True}
    return {"ncols": size.columns or 100, "nrows": size.lines or 20}


def _shown() -> list[Progress]:
    with _lock:
        return [p for p in _active if p.mode != OFF]


def current() -> Progress | None:
    """The innermost shown job, or None."""
    shown = _shown()
    return shown[-1] if shown else None


def stage(text: str) -> None:
    """Tell the innermost shown job what the code it runs is doing now, after what the job
    itself says it does (no-op without one)."""
    job = current()
    if job is not None:
        job.detail = text
        job._postfix(refresh=True)


def steps(iterable: Iterable, images: int, length: int | None = None) -> Iterator:
    """``iterable`` (a sampling loop of ``length`` steps, default ``len(iterable)``, over
    ``images`` images), each step counted by the innermost job when it counts steps."""
    job = _counting()
    if job is None:
        yield from iterable
        return
    job._loop(len(iterable) if length is None else length, images)
    for item in iterable:
        yield item
        job.update(1)


def ran(length: int, images: int) -> None:
    """A sampling loop of ``length`` steps over ``images`` images ran at once (a CUDA
    graph's replay): counted as a whole by the innermost job when it counts steps."""
    job = _counting()
    if job is not None:
        job._loop(length, images)
        job.update(length)


@contextlib.contextmanager
def uncounted():
    """Sampling loops inside the block are not counted (a CUDA graph's capture and warm-up:
    its steps are counted when it is replayed, ``ran``)."""
    with _lock:
        _paused[0] += 1
    try:
        yield
    finally:
        with _lock:
            _paused[0] -= 1


def _counting() -> Progress | None:
    """The innermost job, when it is shown and counts sampling steps."""
    with _lock:
        job = _active[-1] if _active and not _paused[0] else None
    return job if job is not None and job.images is not None and job.mode != OFF else None


# -- lines on a non-terminal ---------------------------------------------------------------------
def _beat() -> None:
    """Start the heartbeat thread unless it runs: every ``interval()`` seconds, while a job
    is shown as lines, the innermost job's line, after what its outer jobs are doing."""
    with _lock:
        if _heart:
            return
        stop = threading.Event()
        _heart.append(stop)
    every = interval()

    def run() -> None:
        while not stop.wait(every):
            with _lock:
                shown = [p for p in _active if p.mode == LINES]
                if not shown:
                    if stop in _heart:
                        _heart.remove(stop)
                    return
                text = " | ".join([*(p.outer() for p in shown[:-1]), shown[-1].line()])
                try:
                    print(text, file=shown[-1]._out(), flush=True)
                except (OSError, ValueError):  # the stream closed under us
                    pass

    threading.Thread(target=run, name="zoo-progress", daemon=True).start()


__all__ = ["BAR", "DEFAULT_INTERVAL", "ESTIMATE_SECONDS", "INTERVAL_ENV", "LINES", "OFF",
           "Progress", "current", "default", "interval", "ran", "resolve", "stage", "steps",
           "uncounted"]

"""Where the Trainer's logs go: one small interface, one class per destination.

The Trainer calls a ``Logger`` (on rank 0 only; the other ranks get ``NullLogger``):

- ``log_scalars(step, values, section="train", notes=None)``: numbers to plot against the
  step (losses and images/s in section ``train``, the streaming FID in section ``eval``);
  ``notes`` are annotations of the same row (seconds trained, the extractor's name) that a
  file keeps beside the numbers and a tracker may leave out;
- ``log_images(step, tag, grid)``: a uint8 ``[C, H, W]`` image (a grid of samples);
- ``log_text(tag, text)``: text logged once, such as the run's options;
- ``close()``.

``CSVLogger`` is the run directory's own format (``losses.csv``, ``eval.csv``, what zoo
reads back) and always runs; ``log=tensorboard`` adds ``TensorBoardLogger`` on top
(``RUN/tensorboard/``). Another tracker (W&B, MLflow) is one more class here and one more
name in ``LOGGERS``.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import torch

from .core import ConfigError, atomic_write
from .files import open_append
from .images import save_grid
from .runs import EVAL_FILE, LOSSES_FILE

#: the folder of a run directory that TensorBoard's event files go in
TENSORBOARD_DIR = "tensorboard"
#: the folder of a run directory that CSVLogger writes periodic sample grids in
SAMPLES_DIR = "samples"
#: the values of the training option ``log`` (csv is always written)
LOGGERS = ("csv", "tensorboard")


class Logger:
    """The interface (and a logger that drops everything: ranks other than 0)."""

    def log_scalars(self, step: int, values: dict[str, float], section: str = "train",
                    notes: dict | None = None) -> None:
        pass

    def log_images(self, step: int, tag: str, grid: torch.Tensor) -> None:
        pass

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        pass

    def close(self) -> None:
        pass


NullLogger = Logger


class Loggers(Logger):
    """Several loggers as one: each call goes to each of them in turn."""

    def __init__(self, loggers: list[Logger]):
        self.loggers = list(loggers)

    def log_scalars(self, step, values, section="train", notes=None) -> None:
        for lg in self.loggers:
            lg.log_scalars(step, values, section, notes)

    def log_images(self, step, tag, grid) -> None:
        for lg in self.loggers:
            lg.log_images(step, tag, grid)

    def log_text(self, tag, text, step=0) -> None:
        for lg in self.loggers:
            lg.log_text(tag, text, step)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()


def trim_csv(path: Path, upto: int | None) -> list[str] | None:
    """Drop the rows of a step-keyed CSV (losses.csv, eval.csv) after step ``upto`` (the
    checkpoint a run resumes from: those steps are trained and logged again) and a row cut
    short by a kill; returns the header's fields (None without a file or header)."""
    if not path.exists():
        return None
    lines = path.read_text().splitlines(keepends=True)
    if not lines or not lines[0].endswith("\n"):  # no header, or one cut short
        path.unlink()
        return None
    fields = next(csv.reader([lines[0]]))
    kept = [lines[0]]
    for line in lines[1:]:
        row = next(csv.reader([line]), [])
        whole = line.endswith("\n") and len(row) == len(fields)
        try:
            keep = whole and (upto is None or int(row[0]) <= upto)
        except ValueError:
            keep = False
        if keep:
            kept.append(line)
    if len(kept) < len(lines):
        text = "".join(kept)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return fields


class CSVLogger(Logger):
    """The run directory's CSV files: section ``train`` rows to ``losses.csv``, ``eval`` to
    ``eval.csv`` (the columns ``LEADING`` names first, then the row's other values and notes
    in their order; a resumed run keeps its files' header), images to
    ``samples/step-NNNNNNN.png``; text is left to run.json. ``resume_step``: the step a run
    resumes from (rows after it are dropped: they are logged again); None starts afresh."""

    FILES = {"train": LOSSES_FILE, "eval": EVAL_FILE}
    #: the first columns of each file, the run format zoo reads back (zoo.bench.figures)
    LEADING = {"train": ("step", "seconds", "images_per_s"),
               "eval": ("step", "fid", "n", "extractor", "extractor_sha256")}

    def __init__(self, out: str | Path, resume_step: int | None = None):
        self.out = Path(out)
        self.fields: dict[str, list[str] | None] = {}
        for section, name in self.FILES.items():
            path = self.out / name
            if resume_step is not None:
                self.fields[section] = trim_csv(path, resume_step)
            else:
                path.unlink(missing_ok=True)
                self.fields[section] = None

    def log_scalars(self, step, values, section="train", notes=None) -> None:
        given = {"step": step, **values, **(notes or {})}
        lead = [k for k in self.LEADING.get(section, ("step",)) if k in given]
        row = {k: given[k] for k in lead + [k for k in given if k not in lead]}
        path = self.out / self.FILES.get(section, f"{section}.csv")
        fields = self.fields.get(section)
        new = fields is None
        if new:
            fields = self.fields[section] = list(row)
        with open_append(path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)

    def log_images(self, step, tag, grid) -> None:
        if tag == "samples":
            save_grid(grid.unsqueeze(0), self.out / SAMPLES_DIR / f"step-{step:07d}.png",
                      nrow=1)


class TensorBoardLogger(Logger):
    """Event files under ``RUN/tensorboard/`` (torch.utils.tensorboard's SummaryWriter):
    values as ``section/name`` scalars, images and text under their tags. ``resume_step``:
    the events after it (written by a run that was killed after its last checkpoint) are
    purged, so a resumed run continues the same curves without repeating a step."""

    def __init__(self, out: str | Path, resume_step: int | None = None):
        writer_class = tensorboard_writer()
        purge = None if resume_step is None else resume_step + 1
        folder = Path(out) / TENSORBOARD_DIR
        try:  # the writer writes from a thread of its own: a failure there is a traceback
            folder.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as e:
            raise ConfigError(f"cannot write TensorBoard events to {folder} "
                              f"({e.strerror or e}); make it a writable folder, or train with "
                              "log=csv") from None
        self.writer = writer_class(log_dir=str(folder), purge_step=purge)

    def log_scalars(self, step, values, section="train", notes=None) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"{section}/{name}", float(value), step)
        self.writer.flush()

    def log_images(self, step, tag, grid) -> None:
        self.writer.add_image(tag, grid.detach().cpu(), step, dataformats="CHW")
        self.writer.flush()

    def log_text(self, tag, text, step=0) -> None:
        self.writer.add_text(tag, text, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def tensorboard_writer():
    """torch's SummaryWriter, or the one-line ConfigError that says what to install."""
    try:
        import tensorboard  # noqa: F401 - torch.utils.tensorboard needs the package
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            'log=tensorboard needs the tensorboard package: pip install -e ".[tensorboard]" '
            "(or pip install tensorboard)") from None
    return SummaryWriter


def check_logger(name: str) -> None:
    """Refuse an unknown ``log`` value, or tensorboard without its package, before training."""
    if name not in LOGGERS:
        raise ConfigError(f"log must be one of {', '.join(LOGGERS)}, got {name!r}")
    if name == "tensorboard":
        tensorboard_writer()


def make_logger(name: str, out: str | Path, resume_step: int | None = None) -> Logger:
    """The loggers of training option ``log``: the CSV files always, and the tracker named."""
    check_logger(name)
    loggers: list[Logger] = [CSVLogger(out, resume_step)]
    if name == "tensorboard":
        loggers.append(TensorBoardLogger(out, resume_step))
    return Loggers(loggers)


__all__ = [
    "CSVLogger",
    "LOGGERS",
    "Logger",
    "Loggers",
    "NullLogger",
    "TENSORBOARD_DIR",
    "TensorBoardLogger",
    "check_logger",
    "make_logger",
    "trim_csv",
]

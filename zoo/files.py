"""How zoo writes a file: never through a symbolic link, whole or not at all.

Every file zoo writes into a run or output directory goes through here: ``atomic_write``
for a file written whole (a checkpoint, run.json, the model card, a grid, a ``.npy``) and
``open_append`` / ``open_fd`` for one appended to or held open (a log, results.jsonl, the
lock). A symbolic link where such a file goes is refused with a one-line ConfigError naming
it: a link planted in ``--out`` would otherwise have zoo create, truncate or append to the
file it points to, outside the directory it was told to write in.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import IO

from .errors import ConfigError


def refuse_symlink(path: str | os.PathLike) -> None:
    """Raise the one-line error for a symbolic link at ``path`` (nothing when there is none)."""
    if os.path.islink(path):
        raise ConfigError(f"{path} is a symbolic link; zoo does not write through links (the "
                          "file it points to could be outside the output directory): "
                          "remove it or write elsewhere")


def open_fd(path: str | os.PathLike, flags: int, mode: int = 0o644) -> int:
    """``os.open(path, flags)`` refusing a symbolic link in place of the file (O_NOFOLLOW:
    the check and the open are one step, so a link planted meanwhile is refused too)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP or os.path.islink(path):
            refuse_symlink(path)
        raise


def open_append(path: str | os.PathLike, newline: str | None = None) -> IO[str]:
    """A text file opened to append to (created when missing), refusing a symbolic link."""
    fd = open_fd(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    return os.fdopen(fd, "a", newline=newline)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` and rename the result onto ``path``; readers never see half.

    The temporary file sits beside ``path`` (made with O_EXCL, so never through a link) and
    is removed on every way out, an exception or an interrupt. The file is fsynced before
    the rename and the directory after it (where the system allows), so a power loss leaves
    the previous version or the new one, never an empty or partial file. A symbolic link at
    ``path`` is refused rather than replaced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    refuse_symlink(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # not every system can open or sync a directory
        _fsync(path.parent)


def _fsync(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["atomic_write", "open_append", "open_fd", "refuse_symlink"]

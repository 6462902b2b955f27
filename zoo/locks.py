"""One writer per directory: a lock file held for a whole ``Trainer.fit`` or ``run_suite``.

The lock is ``fcntl.flock`` on ``DIR/.zoo.lock``; the kernel drops it when its holder
exits, however it exits (kill -9 included), so a lock is never held by a dead process. The
file records the holder (pid, host, start time, command) for the one-line error a second
writer gets, and is removed on release. A file left behind by a process of this host that
died is taken over with a note on stderr; one left by a process of another host is refused
(on a network file system its lock may not be visible here), naming the file to delete.
Under torchrun rank 0 alone takes the lock, and every rank raises when it could not.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import shlex
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from . import distributed as zdist
from .errors import ConfigError, LockHeld, ZooError
from .files import open_fd

LOCK_FILE = ".zoo.lock"


def _holder_text(info: dict) -> str:
    """``pid 123 on host since 2026-01-01T12:00:00+00:00 (zoo train ...)``."""
    if not info:
        return "a process that has not yet written its name"
    text = f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('since', '?')}"
    return text + (f" ({info['command']})" if info.get("command") else "")


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError, OverflowError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


class DirLock:
    """The lock of one directory (created when missing); ``acquire`` raises ``LockHeld``
    naming the holder when another process has it."""

    def __init__(self, directory: str | os.PathLike, what: str = "run directory"):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DirLock:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            while True:
                fd = open_fd(self.path, os.O_RDWR | os.O_CREAT)  # a planted link: refused
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _read(fd)
                    os.close(fd)
                    raise LockHeld(
                        f"{self.directory} is in use: {_holder_text(holder)} is writing this "
                        f"{self.what}; wait for it to finish, stop it, or write elsewhere"
                    ) from None
                except BaseException:
                    os.close(fd)
                    raise
                if _same_file(fd, self.path):
                    break
                os.close(fd)  # the holder released and removed it meanwhile: lock the new one
            try:
                self._take(fd)
            except BaseException:
                os.close(fd)
                raise
        except OSError as e:
            raise ConfigError(
                f"cannot lock {self.what} {self.directory} ({self.path}: "
                f"{e.strerror or e}); is it writable?"
            ) from None
        self._fd = fd
        return self

    def _take(self, fd: int) -> None:
        """Record this process in the locked file, after looking at who left it there."""
        previous = _read(fd)
        host = socket.gethostname()
        if previous:
            if previous.get("host") != host:
                raise LockHeld(
                    f"{self.directory} is locked by {_holder_text(previous)}; zoo cannot tell "
                    f"from {host} whether that process still runs: if it does not, delete "
                    f"{self.path}"
                )
            state = ("has ended" if not _alive(previous.get("pid"))
                     else "no longer holds it")
            print(f"zoo: taking over the stale lock {self.path} of {_holder_text(previous)}: "
                  f"that process {state}", file=sys.stderr)
        command = ""
        if sys.argv:
            program = Path(sys.argv[0])  # `python -m zoo` runs zoo/__main__.py
            name = program.parent.name if program.name == "__main__.py" else program.name
            command = shlex.join([name, *sys.argv[1:]])
        mine = {
            "pid": os.getpid(), "host": host,
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": command[:200],
        }
        data = (json.dumps(mine) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.path):
                self.path.unlink()  # still locked: no one else can have taken it yet
        except OSError:
            pass
        finally:
            os.close(fd)  # drops the flock

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict:
    """The holder recorded in a lock file ({} when empty or unreadable)."""
    try:
        data = os.pread(fd, 4096, 0)
        info = json.loads(data.decode()) if data.strip() else {}
    except (OSError, ValueError):
        return {"pid": "?", "host": "?", "since": "?"}
    return info if isinstance(info, dict) else {"pid": "?", "host": "?", "since": "?"}


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


@contextlib.contextmanager
def exclusive(directory: str | os.PathLike, what: str = "run directory") -> Iterator[None]:
    """Hold ``directory``'s lock for the block. Under torchrun rank 0 takes it and tells
    the others, so that every rank raises the same error (none is left waiting)."""
    lock, error = None, None
    if zdist.is_main():
        try:
            lock = DirLock(directory, what).acquire()
        except ZooError as e:
            error = e
    if zdist.world_size() > 1:
        error = zdist.broadcast_object(error)
    if error is not None:
        raise error
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


__all__ = ["LOCK_FILE", "DirLock", "exclusive"]

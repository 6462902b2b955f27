"""How much memory one thing zoo builds for a user may take, checked before allocating it.

A model's weights, a decoded dataset, an array of samples or a grid image past the limit is
refused with a one-line error instead of an allocator failure deep inside torch or numpy
(or the kernel's OOM killer). The limit is half of the machine's memory (the smaller of the
physical memory and the cgroup's limit), so one such thing leaves room for the rest of a
run; ``$ZOO_MAX_MEMORY_GB`` overrides it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .errors import ConfigError, SettingError, ZooError

MEMORY_ENV = "ZOO_MAX_MEMORY_GB"
#: the largest ``$ZOO_MAX_MEMORY_GB`` taken: 1 PiB, past any machine's memory (a larger
#: number is a typo, and 1e300 GB has no byte count)
MAX_MEMORY_GB = 2**20
MACHINE_FRACTION = 0.5
#: the limit when the machine's memory cannot be read
FALLBACK_BYTES = 8 * 2**30
_CGROUP_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def machine_memory() -> int | None:
    """Bytes of memory this process may use: physical memory, or the cgroup's limit when
    smaller (None when neither can be read)."""
    sizes = []
    try:
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        pass
    for f in _CGROUP_FILES:
        try:
            text = Path(f).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < 2**60:  # "max" or a huge number: no limit
            sizes.append(int(text))
    sizes = [s for s in sizes if s > 0]
    return min(sizes) if sizes else None


def memory_limit() -> tuple[int, str]:
    """(the limit in bytes, where it comes from, in words). A ``$ZOO_MAX_MEMORY_GB`` that
    is no number of gigabytes in (0, MAX_MEMORY_GB] is a SettingError naming it."""
    text = os.environ.get(MEMORY_ENV, "").strip()
    if text:
        try:
            gb = float(text)
        except ValueError:
            gb = math.nan
        if not 0 < gb <= MAX_MEMORY_GB:  # NaN fails too
            raise SettingError(f"${MEMORY_ENV} must be a number of gigabytes > 0 and at most "
                               f"{MAX_MEMORY_GB} (1 PiB), got {text[:40]!r}")
        return int(gb * 2**30), f"${MEMORY_ENV}={text}"
    machine = machine_memory()
    if machine is None:
        return FALLBACK_BYTES, f"the machine's memory is unknown; set ${MEMORY_ENV}"
    return int(machine * MACHINE_FRACTION), f"half of this machine's {gib(machine)}"


def gib(nbytes: float) -> str:
    """A byte count in words: '3.2 GiB', '512.0 MiB'."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:,.1f} {unit}"
    return f"{int(nbytes)} bytes"


def check_memory(nbytes: float, what: str, hint: str = "",
                 error: type[ZooError] = ConfigError) -> None:
    """Refuse (``error``) when ``what`` would take ``nbytes``, more than the memory limit."""
    limit, source = memory_limit()
    if nbytes > limit:
        raise error(f"{what} would take {gib(nbytes)}, more than zoo's memory limit of "
                    f"{gib(limit)} ({source}); {hint + ', or ' if hint else ''}"
                    f"raise the limit with {MEMORY_ENV}=GB")


__all__ = ["MAX_MEMORY_GB", "MEMORY_ENV", "check_memory", "gib", "machine_memory", "memory_limit"]


def duration(seconds: float, digits: int = 0) -> str:
    """A time in words: ``12 s`` (``digits`` decimals under a minute), ``3 min 40 s``,
    ``1 h 5 min``."""
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.{digits}f} s"
    m, s = divmod(round(seconds), 60)
    if m < 60:
        return f"{m} min {s} s"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"

"""Multi-process training and evaluation with ``torch.distributed`` (launched by torchrun).

``torchrun --nproc_per_node=N -m zoo train ...`` starts N processes that each read
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT`` from the
environment; ``launched()`` (entered by the CLI) turns those into a process group: NCCL for
CUDA tensors and gloo for CPU tensors, with a timeout (``$ZOO_DIST_TIMEOUT`` seconds,
default 600) so that a rank waiting for a dead peer raises instead of hanging. Without
those variables (or with WORLD_SIZE=1) everything here is a no-op and zoo runs as one
process.

The helpers below work with or without a process group: ``rank()`` is 0 and
``world_size()`` 1 when none is initialized.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist

from .errors import ConfigError

DEFAULT_TIMEOUT_S = 600.0
_MASK64 = (1 << 64) - 1


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one rank that writes files and prints."""
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if is_initialized() else 0


def timeout() -> datetime.timedelta:
    text = os.environ.get("ZOO_DIST_TIMEOUT", "").strip()
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"ZOO_DIST_TIMEOUT must be a number of seconds, got {text!r}") from None
    if seconds <= 0:
        raise ConfigError(f"ZOO_DIST_TIMEOUT must be > 0, got {seconds}")
    return datetime.timedelta(seconds=seconds)


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env() -> bool:
    """Initialize the default process group from torchrun's environment variables.

    Returns True when this call created the group (the caller then destroys it), False
    when there is nothing to do (one process, or a group already exists).
    """
    if is_initialized() or not launched_by_torchrun():
        return False
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run zoo without torchrun")
    backend = "gloo"
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local} but torch sees {torch.cuda.device_count()} CUDA GPU(s); "
                "use --nproc_per_node at most the number of GPUs"
            )
        torch.cuda.set_device(local)
        backend = "cpu:gloo,cuda:nccl"  # NCCL for CUDA tensors, gloo for CPU ones
    dist.init_process_group(backend=backend, timeout=timeout())
    return True


@contextlib.contextmanager
def launched() -> Iterator[None]:
    """Join the process group torchrun describes for the duration of the block (no-op
    otherwise); the group is destroyed on the way out, also after an error."""
    created = init_from_env()
    try:
        yield
        if created and is_initialized():
            # no rank tears the group down while a peer is still in a collective (a rare
            # "terminate called without an active exception" in gloo at exit otherwise)
            dist.barrier()
    finally:
        if created and is_initialized():
            # free unreachable cycles (a Trainer's DDP wrapper holds the group) while the
            # interpreter is whole: freed at finalization, gloo's worker threads can abort
            gc.collect()
            dist.destroy_process_group()
            gc.collect()


def device_for_rank(device: torch.device) -> torch.device:
    """Under a process group, a bare ``cuda`` means this rank's GPU (LOCAL_RANK)."""
    if device.type == "cuda" and device.index is None and is_initialized():
        return torch.device("cuda", local_rank())
    return device


def _coll_device() -> torch.device:
    """The device whose tensors this group's collectives take (CUDA under NCCL)."""
    if is_initialized() and "nccl" in str(dist.get_backend()).lower():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(values: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """A reduced copy of ``values`` over all ranks (``values`` itself in one process)."""
    if not is_initialized():
        return values
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    t = values.detach().to(_coll_device(), torch.float64, copy=True)
    dist.all_reduce(t, op=ops[op])
    return t.to(values.device)


def all_finite(loss: torch.Tensor) -> bool:
    """Whether ``loss`` is finite on every rank: a collective, so all ranks decide alike."""
    ok = torch.isfinite(loss.detach()).all().to(torch.float64).reshape(1)
    return bool(all_reduce(ok, "min").item() > 0)


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any rank."""
    if not is_initialized():
        return flag
    return bool(all_reduce(torch.tensor([float(flag)]), "max").item() > 0)


def all_gather_object(obj) -> list:
    if not is_initialized():
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def my_share(n: int) -> range:
    """This rank's items of n (rank, rank + N, ...; all of them in one process)."""
    return range(rank(), n, world_size())


def gather_dict(mine: dict) -> dict:
    """The union of every rank's ``{index: value}`` (``my_share`` keys), on every rank."""
    if world_size() == 1:
        return mine
    out: dict = {}
    for part in all_gather_object(mine):
        out.update(part)
    return out


def barrier() -> None:
    if is_initialized():
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. to fill a cache), then the other ranks."""
    if not is_initialized():
        yield
        return
    if not is_main():
        dist.barrier()
    try:
        yield
    finally:
        if is_main():
            dist.barrier()


def mix_seed(seed: int, index: int) -> int:
    """A 63-bit seed for stream ``index`` of ``seed`` (splitmix64): a pure function, so the
    generator of a sample slice or a rank is the same whichever process computes it."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + (int(index) + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


__all__ = [
    "all_finite",
    "all_gather_object",
    "all_reduce",
    "any_rank",
    "barrier",
    "broadcast_object",
    "device_for_rank",
    "gather_dict",
    "init_from_env",
    "is_initialized",
    "is_main",
    "launched",
    "local_rank",
    "main_first",
    "mix_seed",
    "my_share",
    "rank",
    "world_size",
]

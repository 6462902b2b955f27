"""Speed and memory of a model, and the environment a row was measured in.

Sampling is timed per call at each batch size after ``warmup`` untimed calls: on CUDA with
``torch.cuda.Event`` pairs around each call (after ``synchronize``), on the CPU with
``time.perf_counter``. Throughput is batch size / median latency. Peak memory is CUDA's
``max_memory_allocated`` since a reset, or on the CPU the process's peak RSS (which only
grows over a process's life; ``memory_kind`` says which).
"""

from __future__ import annotations

import datetime
import functools
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from ..core import GenerativeModel


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics."""
    if not values:
        raise ValueError("percentile of no values")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``fn()`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(float(start.elapsed_time(end)))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000.0)
    return times


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> tuple[float, str]:
    """(MiB, kind): CUDA max_memory_allocated since the last reset, or the CPU peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "cpu peak rss"


def sampling_speed(
    model: GenerativeModel,
    batch_sizes,
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
    **sampler_options,
) -> dict:
    """Throughput and per-call latency of ``model.sample`` at each batch size.

    Returns ``sample_images_per_s``, ``latency_ms_p50`` and ``latency_ms_p95`` (dicts keyed
    by the batch size as a string), ``latency_ms`` (every timed call) and the peak memory.
    """
    device = model.device
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(int(seed))
    out: dict = {"sample_images_per_s": {}, "latency_ms_p50": {}, "latency_ms_p95": {},
                 "latency_ms": {}}
    reset_peak_memory(device)
    try:
        for b in batch_sizes:
            def call(b=int(b)):
                with torch.no_grad():
                    model.sample(b, generator=gen, **sampler_options)

            times = time_call(call, device, repeats, warmup)
            p50 = statistics.median(times)
            key = str(int(b))
            out["latency_ms"][key] = [round(t, 4) for t in times]
            out["latency_ms_p50"][key] = p50
            out["latency_ms_p95"][key] = percentile(times, 95)
            out["sample_images_per_s"][key] = int(b) / (p50 / 1000.0)
    finally:
        model.train(was_training)
    out["peak_mem_mb"], out["memory_kind"] = peak_memory(device)
    return out


def training_speed(summary: dict, batch_size: int) -> dict:
    """Training figures from a Trainer summary (``steps``, ``seconds``)."""
    steps, seconds = int(summary["steps"]), float(summary["seconds"])
    return {
        "train_steps": steps,
        "train_seconds": seconds,
        "train_images_per_s": steps * batch_size / seconds if seconds > 0 else None,
    }


# -- environment -------------------------------------------------------------------------------
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cpu = _cpu_model() or platform.processor() or platform.machine()
    return f"cpu: {cpu} ({torch.get_num_threads()} threads)"


@functools.cache
def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


@functools.cache
def versions() -> dict:
    import numpy

    import zoo

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "zoo": zoo.__version__, "numpy": numpy.__version__}
    try:
        import torch_fidelity

        out["torch_fidelity"] = torch_fidelity.__version__
    except ImportError:
        pass
    if torch.version.cuda:
        out["cuda"] = torch.version.cuda
    return out


@functools.cache
def git_commit() -> str | None:
    """The commit of the zoo checkout being run (``+dirty`` when zoo/ has local changes);
    None when zoo is not imported from a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, timeout=10)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root:
            return None
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "zoo"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("+dirty" if dirty else "")) or None


def environment(device: torch.device, seed: int, dtype: str = "float32") -> dict:
    """The columns every row carries about where and how it was measured."""
    return {
        "device": device_name(device),
        "dtype": dtype,
        "versions": versions(),
        "commit": git_commit(),
        "seed": int(seed),
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }

"""Speed and memory of a model, and the environment a row was measured in.

Sampling is timed per call at each batch size after ``warmup`` untimed calls: on CUDA with
``torch.cuda.Event`` pairs around each call (after ``synchronize``), on the CPU with
``time.perf_counter``. Throughput is batch size / median latency. Peak memory is CUDA's
``max_memory_allocated`` since a reset, or on the CPU the process's peak RSS (which only
grows over a process's life; ``memory_kind`` says which).

Model FLOPs are counted, not estimated: ``torch.utils.flop_counter.FlopCounterMode`` adds
up the matmuls, convolutions and attention of one training step and of one sampling call
(forward and backward; elementwise work is not counted, as in every MFU figure). On CUDA
the achieved FLOP/s over the device's measured dense bf16 matmul peak is the model FLOPs
utilization (MFU).
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

from .. import distributed as zdist
from ..core import GenerativeModel, eval_mode, from_checkpoint_dict
from ..nn import graphs


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


def largest_batch(fits, start: int, limit: int) -> int | None:
    """The largest batch size in [start, limit] for which ``fits(b)`` holds, for a ``fits``
    that is true up to some size and false beyond: doubling from ``start``, then bisecting
    between the last size that fit and the first that did not, to within 1/16. None when
    ``start`` itself does not fit."""
    if start > limit or not fits(start):
        return None
    lo, hi = start, None
    while hi is None:
        nxt = min(lo * 2, limit)
        if nxt == lo:
            return lo
        if fits(nxt):
            lo = nxt
        else:
            hi = nxt
    while hi - lo > max(1, lo // 16):
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def sampling_speed(
    model: GenerativeModel,
    batch_sizes,
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
    max_batch: bool = False,
    max_batch_limit: int = 16384,
    **sampler_options,
) -> dict:
    """Throughput and per-call latency of ``model.sample`` at each batch size, the network
    taking the whole batch at once (``batch_size=b`` is passed unless the options set it).

    With ``max_batch`` on CUDA, the largest batch that fits in memory (``largest_batch``
    from the largest of ``batch_sizes`` up to ``max_batch_limit``, out-of-memory errors
    caught) is timed too and returned as ``max_batch_size`` (None on the CPU).
    Returns ``sample_images_per_s``, ``latency_ms_p50`` and ``latency_ms_p95`` (dicts keyed
    by the batch size as a string), ``latency_ms`` (every timed call) and the peak memory.
    """
    device = model.device
    gen = torch.Generator(device=device).manual_seed(int(seed))
    out: dict = {"sample_images_per_s": {}, "latency_ms_p50": {}, "latency_ms_p95": {},
                 "latency_ms": {}, "max_batch_size": None}

    def call(b: int) -> None:
        with torch.no_grad():
            model.sample(b, generator=gen, **{"batch_size": b, **sampler_options})

    def fits(b: int) -> bool:
        try:
            call(b)
            _sync(device)
            return True
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            return False

    sizes = [int(b) for b in batch_sizes]
    reset_peak_memory(device)
    with eval_mode(model):
        if max_batch and device.type == "cuda":
            out["max_batch_size"] = largest_batch(fits, max(sizes), int(max_batch_limit))
            if out["max_batch_size"] and out["max_batch_size"] not in sizes:
                sizes.append(out["max_batch_size"])
            reset_peak_memory(device)
        for b in sizes:
            times = time_call(lambda b=b: call(b), device, repeats, warmup)
            p50 = statistics.median(times)
            key = str(b)
            out["latency_ms"][key] = [round(t, 4) for t in times]
            out["latency_ms_p50"][key] = p50
            out["latency_ms_p95"][key] = percentile(times, 95)
            out["sample_images_per_s"][key] = b / (p50 / 1000.0)
    out["peak_mem_mb"], out["memory_kind"] = peak_memory(device)
    return out


def training_speed(summary: dict, batch_size: int) -> dict:
    """Training figures from a Trainer summary: the steady-state images/s (after the first
    step, which pays compilation and warm-up) when the summary has it, else the average."""
    steps, seconds = int(summary["steps"]), float(summary["seconds"])
    steady = summary.get("steady_images_per_s")
    return {
        "train_steps": steps,
        "train_seconds": seconds,
        "train_images_per_s": steady or (steps * batch_size / seconds if seconds > 0 else None),
        "train_first_step_s": summary.get("first_step_seconds"),
    }


# -- FLOPs and utilization ------------------------------------------------------------------
def count_flops(fn) -> int | None:
    """The FLOPs (multiply-adds count 2) of the matmuls, convolutions and attention that
    ``fn()`` runs; None when it ran none that the counter sees (a replayed CUDA graph)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() or None


def train_flops_per_image(model: GenerativeModel, images) -> float | None:
    """FLOPs of one ``train_step`` on ``images`` (uint8, a batch, or a ``core.Batch`` with
    its labels) per image, on a fresh twin of the model (the step updates weights and
    optimizer state)."""
    twin = from_checkpoint_dict(model.checkpoint_dict()).place(model.device).train()
    optimizers = twin.configure_optimizers()
    twin.attach_training(noise_generator=torch.Generator(twin.device).manual_seed(0))
    flops = count_flops(lambda: twin.train_step(images, optimizers))
    n = images.images.shape[0] if isinstance(images, tuple) else images.shape[0]
    return flops / n if flops else None


def sample_flops_per_image(model: GenerativeModel, seed: int = 0, **sampler_options):
    """FLOPs of sampling one image with ``sampler_options``, counted on the eager loop (a
    replayed CUDA graph runs nothing the counter sees)."""
    gen = torch.Generator(device=model.device).manual_seed(int(seed))
    with torch.no_grad(), graphs.eager():
        return count_flops(lambda: model.sample(1, generator=gen, **sampler_options))


#: the matmul that measures a device's peak: side and dtype (CUDA: bf16, what training
#: runs in under autocast and what MFU figures are quoted against; CPU: float32, what zoo
#: runs there, as DESIGN.md's ceilings: ~180 GFLOP/s fp32 on the 2-core CI machine)
PEAK_MATMUL = {"cuda": (8192, torch.bfloat16), "cpu": (2048, torch.float32)}


@functools.cache
def _peak_flops(device: str) -> float | None:
    dev = torch.device(device)
    if dev.type not in PEAK_MATMUL:
        return None
    n, dtype = PEAK_MATMUL[dev.type]
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    times = time_call(lambda: a @ b, dev, repeats=10 if dev.type == "cpu" else 20, warmup=3)
    return 2 * n**3 / (statistics.median(times) / 1000.0)


def peak_flops(device: torch.device) -> float | None:
    """The measured dense matmul FLOP/s of ``device`` (``PEAK_MATMUL``: bf16 8192^3 on
    CUDA, float32 2048^3 on the CPU; median of the timed calls after warm-up), measured
    once per process: the denominator of MFU."""
    return _peak_flops(str(device))


def peak_dtype(device: torch.device) -> str | None:
    entry = PEAK_MATMUL.get(torch.device(device).type)
    return str(entry[1]).removeprefix("torch.") if entry else None


def mfu(flops_per_image: float | None, images_per_s: float | None,
        device: torch.device) -> float | None:
    """Achieved model FLOP/s (per device: divide a global throughput by the number of
    processes first) over the device's measured matmul peak."""
    peak = peak_flops(device)
    if not (peak and flops_per_image and images_per_s):
        return None
    return flops_per_image * images_per_s / peak


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

    from ..core import __version__

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "zoo": __version__, "numpy": numpy.__version__}
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
    peak = peak_flops(device)
    return {
        "device": device_name(device),
        "device_peak_tflops": peak / 1e12 if peak else None,
        "device_peak_dtype": peak_dtype(device),
        "world_size": zdist.world_size(),
        "dtype": dtype,
        "versions": versions(),
        "commit": git_commit(),
        "seed": int(seed),
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }

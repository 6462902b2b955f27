"""Drawing ``n`` samples of a model: in seeded slices over processes, or into files.

``sample_slices``/``draw_samples`` cut the samples into slices of ``batch_size``; slice i
is drawn with its own generator seeded with ``mix_seed(seed, i)``, so it is the same
images whichever process draws it. Under a process group (torchrun) rank r draws slices
r, r + N, ... The metrics (``zoo.metrics.evaluate``), the Trainer's streaming evaluation
and the harness all sample through here; ``zoo.metrics`` re-exports both functions.

``write_samples`` (what ``zoo sample`` calls) draws with one generator, chunk after chunk,
into a PNG grid and/or a ``.npy`` array, in bounded memory.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from . import distributed as zdist
from .core import GenerativeModel, atomic_write, eval_mode
from .errors import ConfigError, MetricsError
from .images import MAX_GRID_IMAGES, grid_size, legible_scale, save_grid, save_labelled_grid
from .limits import gib
from .progress import Progress


def sample_slices(
    model: GenerativeModel, n: int, batch_size: int = 500, seed: int = 0,
    generator: torch.Generator | None = None, progress: bool = False, **sampler_options,
):
    """Yield ``(i, images)`` for this rank's slices of ``n`` samples: slice i holds samples
    ``i * batch_size`` onwards (at most ``batch_size``) drawn with a generator seeded with
    ``mix_seed(base, i)``, where base is ``seed`` or, when ``generator`` is given, one
    number drawn from it. Rank r of N takes slices r, r + N, ...; one process takes all.
    Slice i is the same images whichever process draws it."""
    if n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    base = int(seed)
    if generator is not None:
        base = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    slices = zdist.my_share(-(-n // batch_size))
    mine = sum(min(batch_size, n - i * batch_size) for i in slices)
    with eval_mode(model), torch.no_grad(), Progress(
            f"sample {model.name}", mine, "img", enabled=progress, steps=True,
            estimate=f"sample {model.name}: about {{time}} for {n} images") as bar:
        for i in slices:
            b = min(batch_size, n - i * batch_size)
            gen = torch.Generator(device=model.device).manual_seed(zdist.mix_seed(base, i))
            x = model.sample(b, generator=gen, **sampler_options)
            if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.shape[0] != b:
                raise MetricsError(f"{model.name}.sample({b}) returned "
                                   f"{getattr(x, 'dtype', type(x))} {tuple(x.shape)}")
            bar.drew(b)
            yield i, x


def draw_samples(
    model: GenerativeModel, n: int, batch_size: int = 500, seed: int = 0,
    progress: bool = False, generator: torch.Generator | None = None, **sampler_options,
) -> Tensor:
    """``n`` uint8 samples of ``model`` (on the CPU) in slices of ``batch_size`` (see
    ``sample_slices``; the seed of each slice comes from ``seed``, or from ``generator``
    when given). Under a process group the ranks draw disjoint slices and every rank
    returns all ``n``, in the same order as one process would draw them."""
    mine = {i: x.cpu() for i, x in sample_slices(model, n, batch_size, seed, generator,
                                                  progress, **sampler_options)}
    mine = zdist.gather_dict(mine)
    return torch.cat([mine[i] for i in sorted(mine)])


#: ``write_samples`` asks ``model.sample`` for at most this many images at a time
SAMPLE_CHUNK = 4096

#: keyword arguments of a family's ``sample`` that are not its sampler's options
CALL_OPTIONS = frozenset({"labels", "batch_size", "prefix", "use_cache", "cuda_graph", "noise"})


def sampler_label(model: GenerativeModel, options: dict) -> str:
    """The sampler a ``sample(**options)`` call draws with, as rows name it: ``"unipc(
    clip_x0=True), 10 steps"`` for a DDPM's default, ``"default"`` for a family's only one."""
    if not model.samplers:  # a family that declares none has one way to sample
        return "default"
    return model.parse_sampler({k: v for k, v in options.items()
                                if k not in CALL_OPTIONS}).label()
#: ... and for at most this many bytes of them (fewer images per call when they are large)
CHUNK_BYTES = 256 << 20


@dataclass(frozen=True)
class WrittenSamples:
    """What ``write_samples`` wrote (None where not asked for): the grid PNG of the first
    ``shown`` of the ``n`` samples, the ``.npy`` array and the labels beside it."""

    n: int
    shown: int
    grid: Path | None = None
    array: Path | None = None
    labels: Path | None = None


def npy_path(path: str | Path) -> Path:
    """``path`` as ``numpy.save`` names it: ``.npy`` appended unless it ends so."""
    path = Path(path)
    return path if path.suffix == ".npy" else path.with_name(path.name + ".npy")


def write_samples(
    model: GenerativeModel, n: int, grid: str | Path | None = None, *,
    npy: str | Path | None = None, labels=None, names: list[str] | None = None,
    nrow: int | None = None, scale: int | str = "auto", seed: int = 0,
    generator: torch.Generator | None = None, batch_size: int = SAMPLE_CHUNK,
    progress: bool | None = None, options: dict | None = None,
) -> WrittenSamples:
    """Draw ``n`` samples of ``model`` into a PNG ``grid`` (of the first
    ``MAX_GRID_IMAGES``), a uint8 ``.npy`` array ``[n, C, H, W]`` (``npy``), or both; each
    file appears whole or not at all, and everything is checked (counts, grid size, free
    disk) before the first image is drawn.

    The images are ``model.sample`` calls of at most ``batch_size`` images (and
    ``CHUNK_BYTES``), one after another with one ``generator`` (default: seeded with
    ``seed`` on the model's device), so at most one chunk and the grid sit in memory.
    ``labels`` (one class, or one per image) asks a conditional model for those classes
    and is saved beside the array as ``NAME.labels.npy`` (int64). ``names`` labels the
    grid's rows, each of ``nrow`` images (``save_labelled_grid``) when it shows all n.
    ``scale`` enlarges the grid (``auto``: ``legible_scale``). ``progress``: shown as
    ``zoo.progress.Progress`` shows it, per sampling step or token where the model reports
    them (None: as the enclosing job, else on a terminal). ``options`` are the sampler's, as
    ``model.sample`` takes them (``{"sampler": "ddim", "steps": 50}``), passed as given."""
    request = _request(model, n, grid, npy, labels, names, nrow, scale, batch_size)
    if generator is None:
        generator = torch.Generator(device=model.device).manual_seed(seed)
    draw = _drawer(model, request, generator, progress, options or {})
    if request.array is None:
        shown = draw(None)
    else:
        shown = _write_array(request, draw)
    if request.grid is not None:
        if request.names is not None and request.shown == n:
            save_labelled_grid(torch.cat(shown), request.names, request.grid,
                               nrow=request.nrow, scale=request.scale)
        else:
            save_grid(torch.cat(shown), request.grid, nrow=request.nrow, scale=request.scale)
    return WrittenSamples(n, request.shown, request.grid, request.array, request.labels_file)


@dataclass(frozen=True)
class _Request:
    """A checked ``write_samples`` call: the files, the grid's shape, the chunk size."""

    n: int
    shape: tuple[int, int, int]
    labels: Tensor | None
    grid: Path | None
    array: Path | None
    labels_file: Path | None
    names: list[str] | None
    nrow: int | None
    scale: int
    shown: int
    chunk: int


def _request(model, n, grid, npy, labels, names, nrow, scale, batch_size) -> _Request:
    """The arguments of ``write_samples`` checked, in the order ``zoo sample`` reports them."""
    for value, what in ((n, "n"), (batch_size, "batch_size"), (nrow, "nrow")):
        if value is not None and value < 1:
            raise ConfigError(f"{what} must be >= 1, got {value}")
    if grid is None and npy is None:
        raise ConfigError("write_samples writes a grid, an npy array or both; give grid= or npy=")
    labels = model.check_labels(labels, n)
    if names is not None and (nrow is None or len(names) * nrow != n):
        raise ConfigError(f"a grid of {len(names)} labelled rows takes nrow with "
                          f"{len(names)} * nrow == n ({n}), got nrow={nrow}")
    if grid is not None and n > MAX_GRID_IMAGES and npy is None:
        raise ConfigError(f"{n} samples are more than a grid shows ({MAX_GRID_IMAGES}); "
                          "write them to an array too (npy=PATH; the grid then shows the "
                          f"first {MAX_GRID_IMAGES})")
    c, h, w = model.image_shape
    shown = min(n, MAX_GRID_IMAGES) if grid is not None else 0
    if scale == "auto":  # each image at least LEGIBLE_PIXELS: 8x8 samples drawn 4x
        scale = legible_scale(h, w, shown, nrow)
    if grid is not None:
        grid_size(shown, h, w, nrow, scale)  # refused before drawing, not after
    array = labels_file = None
    if npy is not None:
        array = npy_path(npy)
        _check_disk(array, n * (c * h * w + (8 if labels is not None else 0)))
        if labels is not None:
            labels_file = array.with_name(array.stem + ".labels.npy")
    chunk = max(1, min(batch_size, CHUNK_BYTES // (c * h * w)))
    return _Request(n, (c, h, w), labels, None if grid is None else Path(grid), array,
                    labels_file, names, nrow, scale, shown, chunk)


def _drawer(model, request: _Request, generator, progress, options):
    """``draw(array)``: every chunk drawn in turn, checked, copied into ``array`` (when
    given); returns the first ``request.shown`` images, chunk by chunk. The progress counts
    the model's sampling steps or tokens where it reports them, else images."""
    n, labels, (c, h, w) = request.n, request.labels, request.shape

    def draw(array) -> list[Tensor]:
        kept: list[Tensor] = []
        with Progress(f"sample {model.name}", n, "img", enabled=progress, steps=True,
                      estimate=f"sample {model.name}: about {{time}} for {n} images") as bar:
            for start in range(0, n, request.chunk):
                b = min(request.chunk, n - start)
                if labels is not None:
                    chunk_options = {**options, "labels": labels[start:start + b]}
                else:
                    chunk_options = options
                x = model.sample(b, generator=generator, **chunk_options)
                if tuple(x.shape) != (b, c, h, w) or x.dtype != torch.uint8:
                    raise ConfigError(f"{model.name}.sample({b}) returned {x.dtype} "
                                      f"{tuple(x.shape)}, not uint8 {(b, c, h, w)}")
                x = x.cpu()
                if array is not None:
                    array[start:start + b] = x.numpy()
                taken = sum(g.shape[0] for g in kept)
                if taken < request.shown:
                    kept.append(x[: request.shown - taken])
                bar.drew(b)
        return kept

    return draw


def _write_array(request: _Request, draw) -> list[Tensor]:
    """Draw into a memory-mapped ``.npy`` written atomically, then the labels beside it."""
    import numpy as np
    from numpy.lib.format import open_memmap

    kept: list[Tensor] = []

    def write(tmp) -> None:
        array = open_memmap(tmp, mode="w+", dtype="uint8", shape=(request.n, *request.shape))
        try:
            kept.extend(draw(array))
            array.flush()
        finally:
            del array

    atomic_write(request.array, write)
    if request.labels_file is not None:
        labels = request.labels.cpu().numpy().astype(np.int64)

        def write_labels(tmp) -> None:
            with open(tmp, "wb") as f:
                np.save(f, labels)

        atomic_write(request.labels_file, write_labels)
    return kept


def _check_disk(path: Path, nbytes: int) -> None:
    """Refuse before writing ``nbytes`` to ``path`` when its file system has less room."""
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if nbytes + (1 << 20) > free:
        raise ConfigError(f"{path} would take {gib(nbytes)}, but {folder} has only {gib(free)} "
                          "free; draw fewer samples (-n) or write elsewhere")


__all__ = ["SAMPLE_CHUNK", "WrittenSamples", "draw_samples", "npy_path", "sample_slices",
           "write_samples"]

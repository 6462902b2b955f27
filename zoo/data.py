"""Datasets: find, verify, download and load the canonical files as uint8 tensors.

Files live under ``<root>/<dataset>/`` where the roots are searched in the order
``root`` argument > ``$ZOO_DATA_ROOT`` > ``~/.cache/zoo/data``. Every file is checked
against its official MD5 before it is parsed; a missing file is downloaded (unless
``download=False`` or ``$ZOO_OFFLINE`` is set) into the first root. Decoded tensors are
cached in-process, so a second ``load`` is instant. Your own data (a folder of images or a
``.npy``/``.npz`` array, with options such as ``size``) loads through the same ``load``;
see ``zoo.owndata`` (the spec and its options: ``zoo.dataspec``). ``BatchIterator`` keeps a whole
dataset as one tensor (on the GPU when training there) and draws batches by index gather.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib
import io
import os
import pickle
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .core import Batch, ConfigError, DataError
from .dataspec import (
    DATASET_ALIASES,
    DATASETS,
    UNLABELLED,
    DatasetInfo,
    DatasetSpec,
    FileSpec,
)
from .dataspec import OPTION_ALIASES as DATA_OPTION_ALIASES
from .dataspec import OPTIONS as DATA_OPTIONS
from .owndata import OwnData, fit_tensor, tensor_sha256
from .owndata import decode as decode_own
from .owndata import fingerprint as own_fingerprint

__all__ = [
    "DATASETS",
    "DATA_OPTIONS",
    "DATA_OPTION_ALIASES",
    "UNLABELLED",
    "BatchIterator",
    "DatasetInfo",
    "DatasetSpec",
    "FileSpec",
    "check",
    "clear_cache",
    "content_hash",
    "data_roots",
    "dataset_info",
    "describe",
    "download",
    "find",
    "image_shape",
    "load",
    "spec",
]

DEFAULT_CACHE = "~/.cache/zoo/data"
URL_TIMEOUT_S = 30.0
_CHUNK = 1 << 20


def dataset_info(name: str) -> DatasetInfo:
    """The dataset called ``name``; an unknown name is a ConfigError listing the valid ones."""
    key = str(name).strip().lower()
    key = DATASET_ALIASES.get(key, key)
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    return DATASETS[key]


def _split_files(info: DatasetInfo, split: str) -> tuple[str, ...]:
    if split not in info.split_files:
        raise ConfigError(
            f"unknown split {split!r} for {info.name}; valid splits: {', '.join(info.split_files)}"
        )
    return info.split_files[split]


# -- roots and lookup --------------------------------------------------------------------


def data_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """The directories searched for datasets, in order: ``root``, ``$ZOO_DATA_ROOT``, cache."""
    candidates = []
    if root is not None and str(root) != "":
        candidates.append(Path(root))
    env = os.environ.get("ZOO_DATA_ROOT", "").strip()
    if env:
        candidates.append(Path(env))
    candidates.append(Path(DEFAULT_CACHE))
    roots: list[Path] = []
    for c in candidates:
        p = c.expanduser().absolute()
        if p not in roots:
            roots.append(p)
    return roots


def _locate(info: DatasetInfo, file: str, roots: Sequence[Path]) -> Path | None:
    for r in roots:
        p = r / info.name / file
        if p.is_file():
            return p
    return None


def find(name: str, root: str | os.PathLike | None = None) -> Path | None:
    """The first ``<root>/<name>`` directory that holds every file of the dataset, else None."""
    info = dataset_info(name)
    for r in data_roots(root):
        d = r / info.name
        if all((d / f).is_file() for f in info.files):
            return d
    return None


def _offline() -> bool:
    return os.environ.get("ZOO_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


# -- verification ------------------------------------------------------------------------

_md5_cache: dict[tuple[str, int, int], str] = {}


def _fingerprint(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _md5(path: Path) -> str:
    """MD5 of a file, remembered per (path, size, mtime) so repeat loads skip the hashing."""
    key = _fingerprint(path)
    if key not in _md5_cache:
        with open(path, "rb") as f:
            _md5_cache[key] = hashlib.file_digest(f, "md5").hexdigest()
    return _md5_cache[key]


def _problem(path: Path, spec: FileSpec) -> str | None:
    """What is wrong with ``path`` given its spec, or None when it matches."""
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        kind = "truncated" if size < spec.size else "too large"
        return (
            f"{kind}: {size:,} bytes, expected {spec.size:,} bytes with md5 {spec.md5}"
        )
    got = _md5(path)
    if got != spec.md5:
        return f"corrupt: md5 {got}, expected md5 {spec.md5}"
    return None


def _searched(info: DatasetInfo, file: str, roots: Sequence[Path]) -> str:
    return ", ".join(str(r / info.name / file) for r in roots)


def _verify(info: DatasetInfo, path: Path, roots: Sequence[Path]) -> None:
    problem = _problem(path, info.files[path.name])
    if problem is not None:
        raise DataError(
            f"{info.name} file {path.name} at {path} is {problem}. "
            f"Searched: {_searched(info, path.name, roots)}. "
            f"Fix: delete {path} so it is downloaded again (or run `zoo data download "
            f"{info.name}`), or point ZOO_DATA_ROOT at a directory holding a verified "
            f"{info.name}/{path.name}."
        )


def check(root: str | os.PathLike | None = None) -> list[dict]:
    """Verify every dataset file present in any root: one row per file found."""
    rows = []
    for info in DATASETS.values():
        for r in data_roots(root):
            for file, spec in info.files.items():
                p = r / info.name / file
                if not p.is_file():
                    continue
                try:
                    problem = _problem(p, spec)
                except OSError as e:
                    problem = f"unreadable: {e}"
                rows.append({
                    "dataset": info.name,
                    "file": file,
                    "path": str(p),
                    "ok": problem is None,
                    "detail": f"md5 {spec.md5} ok" if problem is None else problem,
                })
    return rows


# -- download ----------------------------------------------------------------------------


def _mirror_urls(info: DatasetInfo, file: str, mirrors: Sequence[str] | None) -> list[str]:
    """URLs to try for ``file``: ``$ZOO_DATA_MIRROR/<dataset>/<file>`` first, then the bases."""
    urls = []
    env = os.environ.get("ZOO_DATA_MIRROR", "").strip()
    if env:
        urls.append(f"{env.rstrip('/')}/{info.name}/{file}")
    for base in info.mirrors if mirrors is None else mirrors:
        urls.append(f"{base.rstrip('/')}/{file}")
    return urls


def _fetch_one(url: str, dest: Path, spec: FileSpec, progress: bool) -> None:
    """Download ``url`` to ``dest`` via a temp file in the same directory; raise on mismatch."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as r:
            length = r.headers.get("Content-Length")
            if length is not None and spec.size is not None and int(length) != spec.size:
                raise ValueError(f"server sends {int(length):,} bytes, expected {spec.size:,}")
            md5 = hashlib.md5()
            n = 0
            with tqdm(
                total=spec.size or (int(length) if length else None),
                unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, leave=False,
                disable=not progress or not sys.stderr.isatty(),
            ) as bar:
                while chunk := r.read(_CHUNK):
                    n += len(chunk)
                    if spec.size is not None and n > spec.size:
                        raise ValueError(f"server sends more than the expected {spec.size:,} bytes")
                    md5.update(chunk)
                    out.write(chunk)
                    bar.update(len(chunk))
        if md5.hexdigest() != spec.md5:
            raise ValueError(f"got md5 {md5.hexdigest()} ({n:,} bytes), expected md5 {spec.md5}")
        os.replace(tmp, dest)
        _md5_cache[_fingerprint(dest)] = spec.md5
    finally:
        Path(tmp).unlink(missing_ok=True)


def _describe(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return f"cannot connect ({e.reason})"
    return str(e) or type(e).__name__


def _fetch(
    info: DatasetInfo,
    files: Sequence[str],
    target: Path,
    mirrors: Sequence[str] | None,
    progress: bool,
) -> None:
    created = not target.exists()
    try:
        target.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=target).close()
    except OSError as e:
        raise DataError(
            f"cannot write {info.name} files to {target} ({e}); pass a writable root= or set "
            "ZOO_DATA_ROOT to a writable directory"
        ) from None
    try:
        _fetch_files(info, files, target, mirrors, progress)
    finally:
        if created and not any(target.iterdir()):
            target.rmdir()


def _fetch_files(
    info: DatasetInfo,
    files: Sequence[str],
    target: Path,
    mirrors: Sequence[str] | None,
    progress: bool,
) -> None:
    for file in files:
        failures = []
        urls = _mirror_urls(info, file, mirrors)
        for url in urls:
            try:
                _fetch_one(url, target / file, info.files[file], progress)
                break
            except (OSError, ValueError, urllib.error.URLError) as e:
                failures.append(f"{url}: {_describe(e)}")
        else:
            tried = "; ".join(failures) if failures else "no mirror URLs given"
            raise DataError(
                f"could not download {info.name} file {file} (md5 {info.files[file].md5}); "
                f"tried {tried}. Fix: run with network access, set ZOO_DATA_MIRROR to a "
                f"reachable mirror, or copy the file to {target / file}."
            )


def download(
    name: str,
    root: str | os.PathLike | None = None,
    mirrors: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Fetch the files of ``name`` missing from (or corrupt in) ``<first root>/<name>``.

    ``mirrors`` replaces the dataset's base URLs; ``$ZOO_DATA_MIRROR`` (a base holding
    ``<dataset>/<file>``) is tried before them. Returns the dataset's directory.
    """
    info = dataset_info(name)
    target = data_roots(root)[0] / info.name
    todo = [f for f in info.files if not (target / f).is_file()
            or _problem(target / f, info.files[f]) is not None]
    if todo:
        _fetch(info, todo, target, mirrors, progress)
    return target


def _resolve(
    info: DatasetInfo, split: str, root: str | os.PathLike | None, download: bool | None
) -> list[Path]:
    """The verified paths of the files ``split`` needs, downloading missing ones if allowed."""
    files = _split_files(info, split)
    roots = data_roots(root)
    missing = [f for f in files if _locate(info, f, roots) is None]
    if missing:
        allowed = (not _offline()) if download is None else bool(download)
        if allowed:
            try:
                _fetch(info, missing, roots[0] / info.name, None, True)
            except DataError as e:
                places = "; ".join(f"{f}: {_searched(info, f, roots)}" for f in missing)
                raise DataError(f"{e} Searched before downloading: {places}.") from None
        else:
            why = "download=False" if download is False else "ZOO_OFFLINE is set"
            lines = "; ".join(
                f"{f} (md5 {info.files[f].md5}) searched: {_searched(info, f, roots)}"
                for f in missing
            )
            raise DataError(
                f"{info.name} {split} files not found and downloads are off ({why}): {lines}. "
                f"Fix: set ZOO_DATA_ROOT (or pass root=) to a directory holding "
                f"{info.name}/<file>, or run with network access to download "
                f"into {roots[0] / info.name}."
            )
    paths = []
    for f in files:
        p = _locate(info, f, roots)
        assert p is not None
        _verify(info, p, roots)
        paths.append(p)
    return paths


# -- decoding ----------------------------------------------------------------------------


def _parse_idx(raw: bytes, path: Path, magic: int, shape_tail: tuple[int, ...]) -> np.ndarray:
    """An uint8 IDX array (big-endian header: magic, then one uint32 per dimension)."""
    ndim = magic & 0xFF
    head = 4 + 4 * ndim
    got_magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if got_magic != magic or len(raw) < head:
        raise DataError(f"{path} is not an IDX file with magic {magic} (got {got_magic})")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if dims[1:] != shape_tail or len(raw) != head + int(np.prod(dims)):
        expected = "(N, " + ", ".join(map(str, shape_tail)) + ")" if shape_tail else "(N,)"
        raise DataError(
            f"{path} has IDX dims {dims} and {len(raw) - head} data bytes; expected {expected}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(dims)


def _gunzip(path: Path) -> bytes:
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is not a valid gzip file ({e}); delete it and retry") from None


def _decode_idx(info: DatasetInfo, images_path: Path, labels_path: Path) -> tuple[Tensor, Tensor]:
    c, h, w = info.image_shape
    images = _parse_idx(_gunzip(images_path), images_path, 2051, (h, w))
    labels = _parse_idx(_gunzip(labels_path), labels_path, 2049, ())
    return _tensors(info, images.reshape(-1, c, h, w), labels, labels_path)


def _tensors(info: DatasetInfo, images: np.ndarray, labels, where: Path) -> tuple[Tensor, Tensor]:
    x = torch.from_numpy(np.ascontiguousarray(images).copy())
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64).copy())
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{where}: {len(x)} images but {tuple(y.shape)} labels")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= info.num_classes):
        raise DataError(f"{where}: labels outside 0..{info.num_classes - 1}")
    return x, y


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes, latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals a pickled uint8 ndarray needs; anything else is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"): ("numpy", "ndarray"),
        ("numpy", "dtype"): ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        target = self._ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return getattr(importlib.import_module(target[0]), target[1])


_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_MEMBERS = {
    **{f"{_CIFAR_DIR}/data_batch_{i}": ("train", i) for i in range(1, 6)},
    f"{_CIFAR_DIR}/test_batch": ("test", 0),
}


@functools.lru_cache(maxsize=1)
def _read_cifar(path: str, _fingerprint: tuple) -> dict[str, tuple[Tensor, Tensor]]:
    """Both CIFAR-10 splits from one pass over the tarball."""
    info = DATASETS["cifar10"]
    batches: dict[str, dict] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.name not in _CIFAR_MEMBERS or not member.isfile():
                    continue
                f = tar.extractfile(member)
                assert f is not None
                # The tarball's md5 was verified before this point, so these are the official
                # pickles; the unpickler still refuses any global but numpy's array rebuild.
                batches[member.name] = _NumpyOnlyUnpickler(
                    io.BytesIO(f.read()), encoding="bytes"
                ).load()
    except (OSError, EOFError, tarfile.TarError, zlib.error, pickle.UnpicklingError) as e:
        raise DataError(f"{path} cannot be read as the CIFAR-10 tarball ({e})") from None
    missing = sorted(set(_CIFAR_MEMBERS) - set(batches))
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}; it is not the CIFAR-10 tarball")
    out = {}
    c, h, w = info.image_shape
    for split in ("train", "test"):
        names = sorted(n for n, (s, _) in _CIFAR_MEMBERS.items() if s == split)
        xs, ys = [], []
        for n in names:
            d = batches[n]
            x = d.get(b"data") if isinstance(d, dict) else None
            y = d.get(b"labels") if isinstance(d, dict) else None
            if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 \
                    or x.shape[1] != c * h * w or y is None or len(y) != len(x):
                raise DataError(f"{path}: {n} is not a CIFAR-10 batch (b'data' [N, 3072] uint8)")
            xs.append(x.reshape(-1, c, h, w))
            ys.append(np.asarray(y, dtype=np.int64))
        out[split] = _tensors(info, np.concatenate(xs), np.concatenate(ys), Path(path))
    return out


@functools.lru_cache(maxsize=8)
def _decoded(name: str, split: str, fingerprints: tuple) -> tuple[Tensor, Tensor]:
    info = DATASETS[name]
    paths = [Path(fp[0]) for fp in fingerprints]
    if name == "cifar10":
        return _read_cifar(str(paths[0]), fingerprints[0])[split]
    return _decode_idx(info, *paths)


def load(
    name: str | os.PathLike | dict | DatasetSpec,
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool | None = None,
    **options,
) -> tuple[Tensor, Tensor]:
    """Images uint8 ``[N, C, H, W]`` (contiguous) and labels int64 ``[N]`` of one split.

    ``name`` is a built-in dataset, a folder of images or a ``.npy``/``.npz`` file, or a
    spec with options: a string ``path?size=32&channels=3``, a dict ``{"path": ...,
    "size": 32}`` or a ``DatasetSpec``; ``options`` add spec options (see ``zoo.dataspec``).
    Unlabelled images have label -1. The tensors are cached and shared between callers:
    treat them as read-only (clone before modifying in place). ``download=None`` downloads
    missing built-in files unless ``$ZOO_OFFLINE`` is set; a corrupt file is always an
    error, never silently replaced.
    """
    s = spec(name, **options)
    if s.builtin:
        info = DATASETS[s.source]
        paths = _resolve(info, split, root, download)
        fps = tuple(_fingerprint(p) for p in paths)
        if s.transformed:
            return _fitted(s, split, fps)
        return _decoded(info.name, split, fps)
    own = _own(s)
    if split not in own.splits:
        raise ConfigError(f"unknown split {split!r} for {s.source}; valid splits: "
                          f"{', '.join(own.splits)}")
    x, y = own.splits[split]
    if x.shape[0] == 0:
        raise DataError(f"{s.source} has no {split} images (test_size=0); give test_size > 0")
    return x, y


def spec(name: str | os.PathLike | dict | DatasetSpec, **options) -> DatasetSpec:
    """The DatasetSpec of a name, path, ``path?key=value&...`` string or dict, plus options;
    ``str()`` of it is the canonical string (absolute path, options in a fixed order)."""
    return DatasetSpec.parse(name, **options)


def _own(s: DatasetSpec) -> OwnData:
    return decode_own(s, own_fingerprint(s))


@functools.lru_cache(maxsize=4)
def _fitted(s: DatasetSpec, split: str, fingerprints: tuple) -> tuple[Tensor, Tensor]:
    x, y = _decoded(s.source, split, fingerprints)
    return fit_tensor(x, s), y


_sha_cache: dict[tuple, str] = {}


def content_hash(
    name: str | os.PathLike | dict | DatasetSpec, split: str = "train",
    root: str | os.PathLike | None = None,
) -> str:
    """sha256 of a split's shape, pixels and labels: what metrics' reference caches and
    run.json key an own dataset by (it follows the content, not the path or file names)."""
    s = spec(name)
    if not s.builtin:
        load(s, split)
        return _own(s).sha256[split]
    x, y = load(s, split, root)
    key = (str(s), split, x.data_ptr(), tuple(x.shape))
    if key not in _sha_cache:
        _sha_cache[key] = tensor_sha256(x, y)
    return _sha_cache[key]


def image_shape(
    name: str | os.PathLike | dict | DatasetSpec, root: str | os.PathLike | None = None
) -> tuple[int, int, int]:
    """(C, H, W) of a dataset's images (a built-in one's without reading its files)."""
    s = spec(name)
    if s.builtin:
        c, h, w = DATASETS[s.source].image_shape
        return (s.channels or c, *(s.size or (h, w)))
    return tuple(load(s, "train", root)[0].shape[1:])


def describe(
    name: str | os.PathLike | dict | DatasetSpec, root: str | os.PathLike | None = None
) -> dict:
    """What a dataset is: its name, spec, image shape, classes and split sizes."""
    s = spec(name)
    if s.builtin:
        info = DATASETS[s.source]
        return {"name": s.name, "spec": str(s), "image_shape": list(image_shape(s)),
                "classes": list(info.classes), "num_classes": info.num_classes,
                "splits": dict(info.splits)}
    own = _own(s)
    return {"name": s.name, "spec": str(s), "image_shape": list(image_shape(s)),
            "classes": list(own.classes), "num_classes": len(own.classes),
            "splits": {k: int(x.shape[0]) for k, (x, _) in own.splits.items()},
            "sha256": dict(own.sha256)}


def clear_cache() -> None:
    """Forget decoded tensors and remembered checksums (frees memory; tests use it)."""
    _decoded.cache_clear()
    _read_cifar.cache_clear()
    _fitted.cache_clear()
    decode_own.cache_clear()
    _md5_cache.clear()
    _sha_cache.clear()


# -- batches -----------------------------------------------------------------------------


def _epoch_seed(seed: int, epoch: int) -> int:
    digest = hashlib.blake2b(f"zoo.data:{seed}:{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class BatchIterator:
    """Endless shuffled batches from one in-memory tensor, by index gather.

    The permutation of epoch ``e`` depends on ``(seed, e)`` only (drawn on the CPU, so it
    is the same on every device), which makes ``step`` the whole state: an iterator built
    with ``start_step=k`` yields exactly batches k, k+1, ... of an uninterrupted one. With
    ``world_size > 1`` each rank takes its own ``batch_size`` slice of every global batch.
    """

    def __init__(
        self,
        images: Tensor,
        batch_size: int,
        seed: int = 0,
        device: str | torch.device | None = None,
        drop_last: bool = True,
        start_step: int = 0,
        labels: Tensor | None = None,
        *,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not isinstance(images, Tensor) or images.dim() < 1:
            raise DataError("BatchIterator needs a tensor of images [N, ...]")
        n = images.shape[0]
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is outside 0..{world_size - 1} (world_size)")
        if int(batch_size) < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size}")
        if int(batch_size) * world_size > n:
            raise DataError(
                f"batch_size {batch_size}"
                + (f" x world_size {world_size}" if world_size > 1 else "")
                + f" is larger than the dataset ({n} images); use a batch size of at most "
                f"{n // world_size}"
            )
        if world_size > 1 and not drop_last:
            raise DataError("drop_last=False needs world_size=1 (ranks must get equal batches)")
        if start_step < 0:
            raise DataError(f"start_step must be >= 0, got {start_step}")
        if labels is not None and (labels.dim() != 1 or labels.shape[0] != n):
            raise DataError(f"labels of shape {tuple(labels.shape)} do not match {n} images")
        self.device = torch.device(device) if device is not None else images.device
        self.images = images.to(self.device).contiguous()
        self.labels = labels.to(self.device) if labels is not None else None
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.step = int(start_step)
        self._perm_epoch: int | None = None
        self._perm: Tensor | None = None

    @property
    def num_images(self) -> int:
        return self.images.shape[0]

    @property
    def steps_per_epoch(self) -> int:
        per_step = self.batch_size * self.world_size
        if self.drop_last:
            return self.num_images // per_step
        return -(-self.num_images // per_step)

    @property
    def epoch(self) -> int:
        """The epoch the next batch comes from."""
        return self.step // self.steps_per_epoch

    def permutation(self, epoch: int) -> Tensor:
        """The order of epoch ``epoch`` (int64 indices on the iterator's device)."""
        if self._perm_epoch != epoch:
            g = torch.Generator(device="cpu").manual_seed(_epoch_seed(self.seed, epoch))
            self._perm = torch.randperm(self.num_images, generator=g).to(self.device)
            self._perm_epoch = epoch
        assert self._perm is not None
        return self._perm

    def indices(self, step: int) -> Tensor:
        """The dataset indices of batch ``step`` for this rank."""
        epoch, i = divmod(step, self.steps_per_epoch)
        per_step = self.batch_size * self.world_size
        start = i * per_step + self.rank * self.batch_size
        return self.permutation(epoch)[start: start + self.batch_size]

    def __iter__(self) -> Iterator[Tensor | Batch]:
        return self

    def __next__(self) -> Tensor | Batch:
        """The next batch: images alone, or a ``Batch`` (images, labels) when the iterator
        has labels."""
        idx = self.indices(self.step)
        self.step += 1
        x = self.images.index_select(0, idx)
        if self.labels is None:
            return x
        return Batch(x, self.labels.index_select(0, idx))

    def state_dict(self) -> dict:
        return {"step": self.step, "seed": self.seed, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed or \
                state.get("batch_size", self.batch_size) != self.batch_size:
            raise DataError(
                f"iterator state is for seed {state.get('seed')}, batch size "
                f"{state.get('batch_size')}; this iterator has {self.seed}, {self.batch_size}"
            )
        self.step = int(state["step"])

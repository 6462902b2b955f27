"""Your own data as a dataset: a folder of images or a ``.npy``/``.npz`` array, read and fitted.

Which dataset, with which options (``size``, ``fit``, ``channels``, ``test_size``,
``split_seed``, ``layout``), is a ``DatasetSpec`` (``zoo.dataspec``, where the options are
described); this module reads the files a spec names and fits them to its options.

A folder holds images (PNG, JPEG, BMP; grayscale or RGB) directly, or one subfolder per
class (the sorted subfolder names are the labels 0, 1, ...), and optionally ``train/`` and
``test/`` subfolders that are its splits. An array file holds uint8 images ``[N, H, W]``,
``[N, H, W, C]`` or ``[N, C, H, W]``; a ``.npz`` may add ``labels`` (or ``y``), or hold the
splits as ``x_train``/``y_train``/``x_test``/``y_test``. Unlabelled images get label
``UNLABELLED`` (-1).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .core import ConfigError, DataError
from .dataspec import ARRAY_SUFFIXES, DATASETS, UNLABELLED, DatasetSpec
from .dataspec import OPTION_ALIASES as ALIASES  # noqa: F401 - its name here before dataspec
from .dataspec import OPTIONS as OPTIONS
from .limits import check_memory, gib

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
DEFAULT_TEST_SIZE = 0.1
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


# -- the pieces of a decoded dataset ------------------------------------------------------------


@dataclass
class OwnData:
    """A decoded dataset: per split uint8 images [N, C, H, W] and int64 labels, the class
    names (empty when unlabelled) and a sha256 of each split's pixels and labels."""

    splits: dict[str, tuple[Tensor, Tensor]]
    classes: tuple[str, ...]
    sha256: dict[str, str]


def tensor_sha256(images: Tensor, labels: Tensor) -> str:
    """A stable hash of a split: its shape, pixels and labels (independent of file names)."""
    h = hashlib.sha256()
    h.update(repr(tuple(images.shape)).encode())
    h.update(images.contiguous().numpy().tobytes())
    h.update(labels.contiguous().numpy().astype("<i8").tobytes())
    return h.hexdigest()


def fingerprint(spec: DatasetSpec) -> tuple:
    """What identifies the files of an own dataset on disk: (path, size, mtime) of each."""
    path = Path(spec.source)
    if path.is_dir():
        files = [p for p in sorted(path.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
        return tuple((str(p), *_stat(p)) for p in files)
    if path.is_file():
        return ((str(path), *_stat(path)),)
    raise ConfigError(
        f"unknown dataset {spec.source}: no such folder or file; valid datasets: "
        f"{_builtin_names()}, or the path of a folder of images or a .npy/.npz file"
    )


def _stat(p: Path) -> tuple[int, int]:
    st = p.stat()
    return st.st_size, st.st_mtime_ns


def _builtin_names() -> str:
    return ", ".join(DATASETS)


@functools.lru_cache(maxsize=8)
def decode(spec: DatasetSpec, _fingerprint: tuple) -> OwnData:
    """Read, fit and split an own dataset (cached per spec and file fingerprint)."""
    path = Path(spec.source)
    if path.is_dir():
        if spec.layout is not None:
            raise ConfigError("layout applies to .npy/.npz arrays, not to a folder of images")
        parts, classes = _read_folder(path)
    elif path.suffix.lower() in ARRAY_SUFFIXES:
        parts, classes = _read_array(path, spec.layout), ()
    else:
        raise DataError(f"{path} is neither a folder of images nor a .npy/.npz array")
    where = str(path)
    all_images = [im for images, _ in parts.values() for im in images]
    channels = _choose_channels(all_images, spec.channels, where)
    size = _choose_size(parts, spec.size, where)
    fitted = {}
    for split, (images, labels) in parts.items():
        x = _fit_all(images, channels, size, spec.fit or "resize")
        fitted[split] = (x, torch.as_tensor(np.asarray(labels, dtype=np.int64)))
    if set(fitted) == {"train", "test"}:
        if spec.test_size is not None or spec.split_seed is not None:
            raise ConfigError(f"{where} has its own train and test splits, so test_size and "
                              "split_seed do not apply")
    else:
        fitted = _hold_out(fitted["all"], spec, where)
    sha = {split: tensor_sha256(*xy) for split, xy in fitted.items()}
    return OwnData(fitted, classes, sha)


# -- folders ------------------------------------------------------------------------------------

def _visible(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if not p.name.startswith("."))


def _images_in(d: Path, recursive: bool) -> list[Path]:
    found = d.rglob("*") if recursive else d.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(d).parts))


def _read_folder(root: Path) -> tuple[dict, tuple[str, ...]]:
    """{"train"/"test" or "all": (images, label names)} and the sorted class names."""
    subdirs = {p.name: p for p in _visible(root) if p.is_dir()}
    parts = {"train": subdirs["train"], "test": subdirs["test"]} \
        if "train" in subdirs and "test" in subdirs else {"all": root}
    listed = {}
    for split, d in parts.items():
        classdirs = [p for p in _visible(d) if p.is_dir()]
        loose = _images_in(d, recursive=False)
        if classdirs and loose:
            raise DataError(
                f"{d} holds both images ({loose[0].name}, ...) and subfolders "
                f"({', '.join(p.name for p in classdirs[:5])}); put every image in a class "
                "subfolder, or remove the subfolders for unlabelled images"
            )
        if classdirs:
            files = []
            for cd in classdirs:
                inside = _images_in(cd, recursive=True)
                if not inside:
                    raise DataError(f"class folder {cd} holds no images "
                                    f"({', '.join(IMAGE_SUFFIXES)}); remove it or add images")
                files += [(p, cd.name) for p in inside]
        else:
            if not loose:
                raise DataError(f"{d} holds no images ({', '.join(IMAGE_SUFFIXES)} files, or "
                                "one subfolder of them per class)")
            files = [(p, None) for p in loose]
        listed[split] = files
    labelled = {split: any(c is not None for _, c in files) for split, files in listed.items()}
    if len(set(labelled.values())) > 1:
        raise DataError(f"{root}: one of train/ and test/ has class subfolders and the other "
                        "does not; use the same structure in both")
    classes = tuple(sorted({c for files in listed.values() for _, c in files if c is not None}))
    index = {c: i for i, c in enumerate(classes)}
    _check_image_sizes(root, [p for files in listed.values() for p, _ in files])
    out = {}
    for split, files in listed.items():
        images = [(p, _read_image(p)) for p, _ in files]
        labels = [index[c] if c is not None else UNLABELLED for _, c in files]
        out[split] = (images, labels)
    return out, classes


def _check_image_sizes(root: Path, paths: list[Path]) -> None:
    """Refuse, before any pixel is decoded, images whose decoded pixels would pass the memory
    limit all together: each is held at its own size until all are fitted, whatever
    ``size`` asks. Their dimensions and modes come from the headers (PIL opens lazily)."""
    total = 0
    for path in paths:
        with _opened(path) as im:
            w, h = im.size
            total += w * h * (1 if im.mode in _GRAY_MODES else 3)
    check_memory(total, f"decoding the {len(paths):,} images in {root}",
                 "use fewer or smaller images", error=DataError)


@contextlib.contextmanager
def _opened(path: Path):
    """The image at ``path`` opened lazily (its header read, no pixel decoded), 8-bit
    grayscale or colour; a DataError when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # zoo's memory limit, not PIL's bomb warning, decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                raise DataError(f"{path} has {im.mode} pixels (more than 8 bits); zoo reads "
                                "8-bit grayscale or RGB images: convert it to 8 bits")
            yield im
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError,
            Image.DecompressionBombError) as e:
        raise DataError(f"{path} cannot be read as an image ({e}); fix or remove it") from None


def _read_image(path: Path) -> np.ndarray:
    from PIL import ImageOps

    with _opened(path) as raw:
        raw.load()
        im = ImageOps.exif_transpose(raw)  # photos: upright as a viewer shows them
        return np.asarray(im.convert("L" if im.mode in _GRAY_MODES else "RGB"))


# -- arrays -------------------------------------------------------------------------------------

_SPLIT_KEYS = (("x_train", "y_train", "x_test", "y_test"),
               ("train_images", "train_labels", "test_images", "test_labels"))


def _npy_header(f, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the header of the .npy stream ``f`` (left at the data), read
    without the data: a header may claim more than the file holds or memory takes."""
    from numpy.lib import format as npy_format

    try:
        version = npy_format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(f)
        else:
            raise DataError(f"{where} is a .npy of format version {version}, which zoo does "
                            "not read; save it with numpy.save")
    except ValueError as e:
        what = "is not a .npy file (it does not start with numpy's magic bytes)" \
            if "magic" in str(e) else f"has a corrupt .npy header ({e})"
        raise DataError(f"{where} {what}; save the images with numpy.save") from None
    except EOFError:
        raise DataError(f"{where} is too short to be a .npy file; save the images with "
                        "numpy.save") from None
    if dtype.hasobject:
        raise DataError(f"{where} holds Python objects, which cannot be read without running "
                        "code; save plain uint8 arrays with numpy.save / numpy.savez")
    return tuple(shape), dtype


def _check_array_sizes(path: Path) -> list[str]:
    """Read the headers of a .npy or of each array of a .npz and refuse, before reading any
    data, an array whose header claims more bytes than its file holds, or more than the
    memory limit (``zoo.limits``); the names of the .npz's arrays. A .npz member that is no
    ``.npy`` (numpy.savez writes none) is ignored, never inflated."""
    where = str(path)
    total = 0
    try:
        if path.suffix.lower() == ".npy":
            with path.open("rb") as f:
                shape, dtype = _npy_header(f, where)
                held = path.stat().st_size - f.tell()
            arrays = [(where, shape, dtype, held)]
        else:
            arrays = []
            try:
                with zipfile.ZipFile(path) as z:
                    for info in z.infolist():
                        if not info.filename.endswith(".npy"):
                            continue
                        name = info.filename[:-4]
                        with z.open(info) as f:
                            shape, dtype = _npy_header(f, f"{where} ({name})")
                            held = info.file_size - f.tell()
                        arrays.append((name, shape, dtype, held))
            except (zipfile.BadZipFile, zipfile.LargeZipFile) as e:
                raise DataError(f"{where} is not a .npz (zip) archive ({e}); save the images "
                                "with numpy.savez") from None
    except OSError as e:
        raise DataError(f"{where} cannot be read ({e.strerror or e})") from None
    for name, shape, dtype, held in arrays:
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > held:
            label = where if name == where else f"{where} ({name})"
            raise DataError(f"{label}: its header claims an array {shape} of {dtype} "
                            f"({gib(nbytes)}), but the file holds {gib(max(held, 0))} of data; "
                            "it is truncated or corrupt")
        total += nbytes
    check_memory(total, f"reading {where}", "use a smaller array file", error=DataError)
    return [name for name, *_ in arrays]


def _read_array(path: Path, layout: str | None) -> dict:
    names = _check_array_sizes(path)
    try:
        if path.suffix.lower() == ".npy":
            # memory-mapped: the images are read as they are fitted, into one new array
            arrays = {"images": np.load(path, mmap_mode="r", allow_pickle=False)}
        else:  # the checked .npy members only, by their exact names
            from numpy.lib import format as npy_format

            with zipfile.ZipFile(path) as z:
                arrays = {}
                for k in names:
                    with z.open(k + ".npy") as f:
                        arrays[k] = npy_format.read_array(f, allow_pickle=False)
    except ValueError as e:
        if "pickle" not in str(e):
            raise DataError(f"{path} cannot be read as a numpy array file ({e})") from None
        raise DataError(f"{path} cannot be read without running code ({e}); save plain "
                        "uint8 arrays with numpy.save / numpy.savez") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path} cannot be read as a numpy array file ({e})") from None
    pairs = None
    for xtr, ytr, xte, yte in _SPLIT_KEYS:
        if xtr in arrays and xte in arrays:
            pairs = {"train": (xtr, ytr), "test": (xte, yte)}
    if pairs is None:
        x_key = next((k for k in ("images", "x", "arr_0") if k in arrays), None)
        if not arrays:
            raise DataError(f"{path} holds no .npy arrays; save the images with numpy.savez")
        if x_key is None and len(arrays) == 1:
            x_key = next(iter(arrays))
        if x_key is None:
            names = list(arrays)  # a few, not every member of a huge archive
            more = f" and {len(names) - 8:,} more" if len(names) > 8 else ""
            raise DataError(f"{path} holds arrays {', '.join(names[:8])}{more}; name the "
                            "images 'images' (and the labels 'labels'), or give "
                            "x_train/x_test")
        pairs = {"all": (x_key, next((k for k in ("labels", "y") if k in arrays), None))}
    out = {}
    for split, (xk, yk) in pairs.items():
        x = _to_nhwc(arrays[xk], layout, f"{path} ({xk})")
        where = f"{path} ({yk})"
        if yk is not None and yk in arrays:
            y = np.asarray(arrays[yk])
            if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu":
                raise DataError(f"{where}: labels must be integers [N] = [{len(x)}], got "
                                f"{y.dtype} {y.shape}")
            if len(y) and y.min() < 0:
                raise DataError(f"{where}: labels must be >= 0, got {int(y.min())}")
            labels = y.astype(np.int64).tolist()
        else:
            labels = [UNLABELLED] * len(x)
        name = f"{path}[{xk}]"
        out[split] = ([(f"{name}[{i}]", im) for i, im in enumerate(x)], labels)
    return out


def _to_nhwc(x: np.ndarray, layout: str | None, where: str) -> np.ndarray:
    """A uint8 array of images -> [N, H, W] (grayscale) or [N, H, W, 3], by its layout."""
    if x.dtype != np.uint8:
        hint = (" e.g. (x * 255).round().clip(0, 255).astype(np.uint8) for floats in [0, 1]"
                if x.dtype.kind == "f" else "")
        raise DataError(f"{where}: images must be uint8 (0..255), got {x.dtype}; convert "
                        f"them{hint}")
    shape = x.shape
    if layout is None:
        if x.ndim == 3:
            layout = "nhw"
        elif x.ndim == 4:
            last, second = shape[3] in (1, 3), shape[1] in (1, 3)
            if last and second:
                raise DataError(f"{where}: shape {shape} could be [N, H, W, C] or [N, C, H, W]; "
                                "say which with layout=nhwc or layout=nchw")
            if not (last or second):
                raise DataError(f"{where}: shape {shape} has no channel axis of 1 or 3; "
                                "expected [N, H, W], [N, H, W, C] or [N, C, H, W]")
            layout = "nhwc" if last else "nchw"
        else:
            raise DataError(f"{where}: shape {shape} is not [N, H, W], [N, H, W, C] or "
                            "[N, C, H, W]")
    expected_ndim = 3 if layout == "nhw" else 4
    if x.ndim != expected_ndim:
        raise DataError(f"{where}: layout {layout} needs {expected_ndim} dimensions, got {shape}")
    if layout == "nchw":
        x = x.transpose(0, 2, 3, 1)
    if x.ndim == 4:
        if x.shape[3] not in (1, 3):
            raise DataError(f"{where}: {x.shape[3]} channels; zoo takes 1 (grayscale) or 3 (RGB)")
        if x.shape[3] == 1:
            x = x[..., 0]
    if len(x) == 0:
        raise DataError(f"{where} holds no images")
    return x


# -- fitting: channels, size, splits ------------------------------------------------------------


def _choose_channels(images: list, asked: int | None, where: str) -> int:
    n_gray = sum(im.ndim == 2 for _, im in images)
    n_rgb = len(images) - n_gray
    if asked is not None:
        return asked
    if n_gray and n_rgb:
        c = 1 if n_gray > n_rgb else 3
        print(f"zoo.data: {where} mixes {n_rgb} RGB and {n_gray} grayscale images; using "
              f"{c} channel{'s' if c > 1 else ''} (the most common kind). Set channels=1 or "
              "channels=3 to choose", file=sys.stderr)
        return c
    return 1 if n_gray else 3


def _choose_size(parts: dict, asked: tuple[int, int] | None, where: str) -> tuple[int, int] | None:
    if asked is not None:
        return asked
    sizes: dict[tuple[int, int], list] = {}
    for images, _ in parts.values():
        for name, im in images:
            sizes.setdefault(im.shape[:2], []).append(name)
    if len(sizes) > 1:
        common = sorted(sizes.items(), key=lambda kv: -len(kv[1]))
        seen = "; ".join(f"{len(v)} of {h}x{w} (e.g. {v[0]})" for (h, w), v in common[:4])
        (h, w), _ = common[0]
        raise DataError(f"{where} has images of {len(sizes)} sizes: {seen}. Give one size to "
                        f"fit them to, e.g. size={h}x{w} (--set image_size={h} on the command "
                        "line), and fit=resize or fit=crop")
    return None


def _gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma, with the integer rounding of Pillow's convert("L")."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def _fit(im: np.ndarray, size: tuple[int, int], fit: str) -> np.ndarray:
    from PIL import Image

    h, w = size
    if im.shape[:2] == (h, w):
        return im
    pil = Image.fromarray(im)
    if fit == "crop":
        scale = max(h / im.shape[0], w / im.shape[1])
        sh, sw = max(h, round(im.shape[0] * scale)), max(w, round(im.shape[1] * scale))
        if (sh, sw) != im.shape[:2]:
            pil = pil.resize((sw, sh), Image.Resampling.BICUBIC)
        top, left = (sh - h) // 2, (sw - w) // 2
        pil = pil.crop((left, top, left + w, top + h))
    else:
        pil = pil.resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(pil)


def _fit_all(images: list, channels: int, size: tuple[int, int] | None, fit: str) -> Tensor:
    """uint8 [N, C, H, W] of the images converted to ``channels`` and fitted to ``size``,
    written into one array whose size is checked against the memory limit first."""
    def fitted(im: np.ndarray) -> np.ndarray:
        if channels == 1 and im.ndim == 3:
            im = _gray(im)
        elif channels == 3 and im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=2)
        if size is not None:
            im = _fit(im, size, fit)
        return im if im.ndim == 3 else im[..., None]

    if not images:
        raise DataError("no images to decode")
    h, w = size if size is not None else images[0][1].shape[:2]
    n = len(images)
    check_memory(n * channels * h * w, f"{n:,} images of {channels}x{h}x{w}",
                 "choose a smaller size", error=DataError)
    x = np.empty((n, channels, h, w), dtype=np.uint8)
    for i, (_, im) in enumerate(images):
        x[i] = fitted(im).transpose(2, 0, 1)
    return torch.from_numpy(x)


def _hold_out(xy: tuple[Tensor, Tensor], spec: DatasetSpec, where: str) -> dict:
    """A seeded random test split of ``test_size`` images; both parts keep the file order."""
    x, y = xy
    n = x.shape[0]
    size = DEFAULT_TEST_SIZE if spec.test_size is None else spec.test_size
    k = int(size) if size >= 1 else (max(1, round(n * size)) if size > 0 and n > 1 else 0)
    if k >= n:
        raise DataError(f"{where}: test_size={size:g} leaves no training images of {n}")
    g = torch.Generator().manual_seed(spec.split_seed or 0)
    perm = torch.randperm(n, generator=g)
    test = perm[:k].sort().values
    train = perm[k:].sort().values
    return {"train": (x[train].contiguous(), y[train]), "test": (x[test].contiguous(), y[test])}


def fit_tensor(images: Tensor, spec: DatasetSpec) -> Tensor:
    """A built-in dataset's uint8 images fitted to the spec's channels and size."""
    arrays = images.permute(0, 2, 3, 1).numpy()
    items = [(i, a if a.shape[2] == 3 else a[..., 0]) for i, a in enumerate(arrays)]
    c = spec.channels or images.shape[1]
    return _fit_all(items, c, spec.size, spec.fit or "resize")

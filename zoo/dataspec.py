"""What a dataset is: the built-in datasets and their files, and the spec of any dataset.

A dataset is named by a *spec*: a built-in name or a path, plus options. It is written as a
string ``path?size=32&channels=3`` (the CLI's ``--dataset``, run.json), a dict
``{"path": "...", "size": 32}`` (TOML suites, the bench) or a ``DatasetSpec``. Options:

- ``size``: ``32`` or ``32x24`` (height x width); images of another size are fitted to it.
  Without it, all images must share one size.
- ``fit``: ``resize`` (default: scale to the size, bicubic) or ``crop`` (scale keeping the
  aspect ratio until the image covers the size, then cut out the centre).
- ``channels``: 1 or 3. Without it a dataset mixing grayscale and colour images uses the
  most common kind and says so on stderr.
- ``test_size``: the held-out test split of a dataset that has none of its own, a fraction
  (< 1, default 0.1) or a count; ``split_seed`` (default 0) seeds which images it takes.
- ``layout``: ``nhw``, ``nhwc`` or ``nchw`` for an array whose layout is ambiguous.

Both ``zoo.data`` (the built-in datasets) and ``zoo.owndata`` (your own files) import this
module; ``zoo.data`` re-exports its public names.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .core import UNLABELLED as UNLABELLED
from .core import ConfigError

ARRAY_SUFFIXES = (".npy", ".npz")
FITS = ("resize", "crop")
LAYOUTS = ("nhw", "nhwc", "nchw")
#: option names accepted in a spec, and their aliases (``--set image_size=32`` on the CLI)
OPTIONS = ("size", "channels", "fit", "test_size", "split_seed", "layout")
OPTION_ALIASES = {"image_size": "size", "image_channels": "channels", "resize": "fit"}


@dataclass(frozen=True)
class FileSpec:
    """One distribution file: its official MD5 and size in bytes (None = not checked)."""

    md5: str
    size: int | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is and which files make it up.

    ``splits`` maps a split to its number of images; ``split_files`` to the files it needs;
    ``mirrors`` are base URLs tried in order, each holding the files directly.
    """

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    splits: dict[str, int]
    files: dict[str, FileSpec]
    split_files: dict[str, tuple[str, ...]]
    mirrors: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()


_MNIST_SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist",
        image_shape=(1, 28, 28),
        num_classes=10,
        splits={"train": 60000, "test": 10000},
        files={
            "train-images-idx3-ubyte.gz": FileSpec("f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422),
            "train-labels-idx1-ubyte.gz": FileSpec("d53e105ee54ea40749a09fcbcd1e9432", 28881),
            "t10k-images-idx3-ubyte.gz": FileSpec("9fb629c4189551a2d022fa330f9573f3", 1648877),
            "t10k-labels-idx1-ubyte.gz": FileSpec("ec29112dd5afa0611ce80d1b7f02629c", 4542),
        },
        split_files=_MNIST_SPLITS,
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        classes=tuple(str(i) for i in range(10)),
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        image_shape=(1, 28, 28),
        num_classes=10,
        splits={"train": 60000, "test": 10000},
        files={
            "train-images-idx3-ubyte.gz": FileSpec("8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26421880),
            "train-labels-idx1-ubyte.gz": FileSpec("25c81989df183df01b3e8a0aad5dffbe", 29515),
            "t10k-images-idx3-ubyte.gz": FileSpec("bef4ecab320f06d8554ea6380940ec79", 4422102),
            "t10k-labels-idx1-ubyte.gz": FileSpec("bb300cfdad3c16e7a12a480ee83cd310", 5148),
        },
        split_files=_MNIST_SPLITS,
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        ),
        classes=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        image_shape=(3, 32, 32),
        num_classes=10,
        splits={"train": 50000, "test": 10000},
        files={"cifar-10-python.tar.gz": FileSpec("c58f30108f718f92721af3b95e74349a", 170498071)},
        split_files={
            "train": ("cifar-10-python.tar.gz",),
            "test": ("cifar-10-python.tar.gz",),
        },
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        classes=(
            "airplane", "automobile", "bird", "cat", "deer",
            "dog", "frog", "horse", "ship", "truck",
        ),
    ),
}

#: other spellings of the built-in names
DATASET_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
}


@dataclass(frozen=True)
class DatasetSpec:
    """What to load: ``source`` (a built-in name or an absolute path) and its options."""

    source: str
    builtin: bool = False
    size: tuple[int, int] | None = None
    channels: int | None = None
    fit: str | None = None
    test_size: float | None = None
    split_seed: int | None = None
    layout: str | None = None

    @classmethod
    def parse(cls, value, **options) -> DatasetSpec:
        """A spec from a string (``path?size=32``), a dict or a spec, plus ``options``.
        A spec without options is returned as it is: parsed at the edge (the CLI, a suite,
        ``zoo.create``), the object travels down and is never parsed again."""
        if isinstance(value, DatasetSpec) and not options:
            return value
        if isinstance(value, DatasetSpec):
            base, opts = value, {}
        elif isinstance(value, dict):
            opts = dict(value)
            source = opts.pop("path", None) or opts.pop("name", None)
            if not source:
                raise ConfigError(f"a dataset given as a table needs path = '...' (or name), "
                                  f"got {value!r}")
            base = cls._from_source(str(source))
        elif isinstance(value, str | os.PathLike):
            text = os.fspath(value).strip()
            source, _, query = text.partition("?")
            opts = {}
            for item in filter(None, query.split("&")):
                key, sep, val = item.partition("=")
                if not sep:
                    raise ConfigError(f"dataset option {item!r} in {text!r} is not key=value")
                opts[key.strip()] = val.strip()
            base = cls._from_source(source)
        else:
            raise ConfigError(f"a dataset is a name, a path or a table, got {value!r}")
        opts.update(options)
        changes = {}
        for key, val in opts.items():
            name = OPTION_ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
            if name not in OPTIONS:
                raise ConfigError(f"unknown dataset option {key!r}; valid: {', '.join(OPTIONS)}")
            changes[name] = None if val is None else _coerce(name, val)
        spec = dataclasses.replace(base, **changes)
        if spec.builtin:
            bad = [k for k in ("test_size", "split_seed", "layout") if getattr(spec, k) is not None]
            if bad:
                raise ConfigError(f"{', '.join(bad)} do not apply to the built-in dataset "
                                  f"{spec.source} (it has its own splits and format)")
        return spec

    @classmethod
    def _from_source(cls, source: str) -> DatasetSpec:
        key = source.strip().lower()
        key = DATASET_ALIASES.get(key, key)
        if key in DATASETS:
            return cls(source=key, builtin=True)
        if not source.strip():
            raise ConfigError("empty dataset name; give a built-in name or a path")
        return cls(source=str(Path(source.strip()).expanduser().absolute()))

    @property
    def transformed(self) -> bool:
        return self.size is not None or self.channels is not None

    @property
    def name(self) -> str:
        """A short name: the built-in name, or the file or folder name (run dirs, classifiers)."""
        if self.builtin:
            return self.source
        stem = Path(self.source).name
        stem = stem[: -len(Path(stem).suffix)] if Path(stem).suffix in ARRAY_SUFFIXES else stem
        return re.sub(r"[^A-Za-z0-9._-]+", "_", stem) or "data"

    def options(self) -> dict:
        out = {}
        for key in OPTIONS:
            v = getattr(self, key)
            if v is None:
                continue
            if key == "size":
                v = str(v[0]) if v[0] == v[1] else f"{v[0]}x{v[1]}"
            elif key == "test_size" and float(v).is_integer() and v >= 1:
                v = int(v)
            out[key] = v
        return out

    def __str__(self) -> str:
        opts = self.options()
        return self.source + ("?" + "&".join(f"{k}={v}" for k, v in opts.items()) if opts else "")


def _coerce(name: str, value):
    """An option value (typed, or a string from the command line) checked and normalized."""
    text = str(value).strip()
    try:
        if name == "size":
            if isinstance(value, list | tuple):
                h, w = (int(v) for v in value)
            else:
                parts = re.split(r"[x,]", text.lower())
                h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else map(int, parts)
            if h < 1 or w < 1:
                raise ValueError
            return (h, w)
        if name == "channels":
            c = int(text)
            if c not in (1, 3):
                raise ValueError
            return c
        if name == "fit":
            if text not in FITS:
                raise ValueError
            return text
        if name == "layout":
            text = text.lower()
            if text == "auto":
                return None
            if text not in LAYOUTS:
                raise ValueError
            return text
        if name == "test_size":
            v = float(text)
            if not (0 <= v < 1 or (v >= 1 and v.is_integer())):
                raise ValueError
            return v
        if name == "split_seed":
            return int(text)
    except ValueError:
        pass
    expected = {
        "size": "a side like 32 or HxW like 32x24", "channels": "1 or 3",
        "fit": " or ".join(FITS), "layout": "auto, " + ", ".join(LAYOUTS),
        "test_size": "a fraction in [0, 1) or a whole count", "split_seed": "an integer",
    }[name]
    raise ConfigError(f"dataset option {name} must be {expected}, got {value!r}")

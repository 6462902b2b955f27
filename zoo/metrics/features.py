"""Feature extractors for FID, KID, IS and precision/recall, registered with torch-fidelity.

Two kinds, both ``torch_fidelity.FeatureExtractorBase`` subclasses so every metric runs
through one torch-fidelity pipeline on uint8 ``[N, C, H, W]`` batches:

- ``<dataset>-classifier`` (``mnist-classifier``, ``fashion-mnist-classifier``): small CNNs
  trained by ``zoo extractor`` (``zoo.metrics.extractor_training``) and shipped in
  ``weights/`` with a JSON card (dataset, architecture, test accuracy, sha256). Layer
  ``features`` (the penultimate layer) feeds FID/KID/PR; layer ``logits`` feeds IS.
- ``<data>-ssl``: a self-supervised encoder of the same architecture without class
  logits, trained by ``zoo extractor DATA`` on unlabelled data (``zoo.metrics.ssl``); its
  ``features`` feed FID/KID/PR/DC/memorization, IS and the class metrics are refused.
- ``random-encoder``: the same architecture with random weights for a fixed seed, a
  baseline that learned nothing from any data (``--extractor random``).
- ``inception-v3-compat``: torch-fidelity's InceptionV3, the standard FID network. Weights
  come from an explicit path, ``$ZOO_INCEPTION_WEIGHTS``, torch's hub cache, or a download
  when online; they are read with ``weights_only=True`` and checked against the
  architecture, so a truncated or foreign file is a CheckpointError. Grayscale input is
  repeated to three channels.

A number computed with one extractor is never comparable with one from another, so every
result names its extractor and the sha256 of its weights.

An extractor made for a dataset that no shipped classifier fits is kept in a cache keyed
by the content hash of its training split (``$ZOO_CACHE/extractors/<sha256>/`` or
``~/.cache/zoo/extractors/<sha256>/``), where ``resolve_extractor`` finds it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_fidelity import FeatureExtractorBase, FeatureExtractorInceptionV3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from .. import data as zdata
from ..core import CheckpointError, ConfigError, DataError, atomic_write, first_line, torch_load
from ..errors import MetricsError  # defined there so that zoo.sampling can raise it too

WEIGHTS_DIR = Path(__file__).parent / "weights"
INCEPTION = "inception-v3-compat"
#: the name our InceptionV3 wrapper has in torch-fidelity's registry (its own
#: ``inception-v3-compat`` entry takes neither grayscale input nor a safe weights load)
INCEPTION_TF_NAME = "zoo-inception-v3-compat"
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_FILE = INCEPTION_URL.rsplit("/", 1)[1]
#: torch hub convention: the file name carries the first hex digits of its sha256
INCEPTION_SHA256_PREFIX = "6726825d"
CLASSIFIER_SUFFIX = "-classifier"


# -- the classifier ----------------------------------------------------------------------


@dataclass
class ClassifierConfig:
    """Architecture of a metrics classifier (``num_classes=0``: an encoder without class
    logits); stored in its JSON card."""

    in_channels: int = 1
    num_classes: int = 10
    channels: tuple[int, ...] = (32, 64, 128)
    feature_dim: int = 128


class ClassifierNet(nn.Module):
    """A small CNN: conv stages (BN, ReLU, 2x max-pool), global average pool, a hidden
    layer whose activations are the metric features, and the class logits.

    Works for any channel count and image size (the pooling adapts), so the same script
    trains one for every labelled dataset.
    """

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = config.in_channels
        for i, c in enumerate(config.channels):
            convs = 1 if i in (0, len(config.channels) - 1) else 2
            for _ in range(convs):
                layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                           nn.ReLU(inplace=True)]
                c_in = c
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.body = nn.Sequential(*layers)
        self.hidden = nn.Linear(c_in, config.feature_dim)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(config.feature_dim, config.num_classes) \
            if config.num_classes else None

    @staticmethod
    def preprocess(x: Tensor) -> Tensor:
        """uint8 0..255 -> float in [-1, 1]; float input is taken as already scaled."""
        return x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(features [N, feature_dim], logits [N, num_classes] or None without a head)."""
        h = self.body(self.preprocess(x))
        features = F.relu(self.hidden(h.mean(dim=(2, 3))))
        return features, None if self.head is None else self.head(self.dropout(features))


def save_bytes(state_dict: dict) -> bytes:
    """A state dict as torch.save bytes, independent of the file name (so the hash is too)."""
    import io

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, buf)
    return buf.getvalue()


_sha_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, remembered per (path, size, mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        with open(p, "rb") as f:
            _sha_cache[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _sha_cache[key]


def classifier_names() -> list[str]:
    """Names of the classifiers shipped in the package (one JSON card + weights each)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob(f"*{CLASSIFIER_SUFFIX}.json"))


def classifier_card(name_or_path: str | os.PathLike) -> tuple[dict, Path]:
    """The JSON card and weights path of a shipped classifier name or a ``.pt`` file."""
    text = str(name_or_path)
    if text.endswith(".pt") or os.sep in text:
        weights = Path(text)
        card_path = weights.with_suffix(".json")
    else:
        weights = WEIGHTS_DIR / f"{text}.pt"
        card_path = WEIGHTS_DIR / f"{text}.json"
        if not card_path.is_file():
            raise ConfigError(
                f"unknown feature extractor {text!r}; available: "
                f"{', '.join(available_extractors())}"
            )
    if not card_path.is_file():
        raise CheckpointError(
            f"classifier weights {weights} have no JSON card {card_path} (write both with "
            "`zoo extractor DATA --out DIR`)"
        )
    try:
        card = json.loads(card_path.read_text())
        ClassifierConfig(**{**card["config"], "channels": tuple(card["config"]["channels"])})
        missing = [k for k in ("name", "sha256", "image_shape") if k not in card]
        if missing:
            raise KeyError(", ".join(missing))
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{card_path} is not a classifier card ({e})") from None
    return card, weights


def load_classifier(name_or_path: str | os.PathLike) -> tuple[ClassifierNet, dict]:
    """A classifier in eval mode and its card; the weights must match the card's sha256."""
    card, weights = classifier_card(name_or_path)
    if not weights.is_file():
        raise CheckpointError(f"classifier weights {weights} do not exist")
    sha = file_sha256(weights)
    if sha != card["sha256"]:
        raise CheckpointError(
            f"classifier weights {weights} have sha256 {sha}, but its card says "
            f"{card['sha256']}; the file was changed or truncated"
        )
    cfg = card["config"]
    net = ClassifierNet(ClassifierConfig(**{**cfg, "channels": tuple(cfg["channels"])}))
    state = torch_load(weights, "classifier weights")
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError) as e:
        raise CheckpointError(
            f"classifier weights {weights} do not match its card: {first_line(e)}"
        ) from None
    net.eval().requires_grad_(False)
    return net, card


class ClassifierExtractor(FeatureExtractorBase):
    """torch-fidelity extractor over a ClassifierNet: layers ``features`` and ``logits``."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        self.net, self.card = load_classifier(feature_extractor_weights_path or name)
        self.net.to(memory_format=torch.channels_last)  # faster convolutions on the CPU
        self.image_shape = tuple(self.card["image_shape"])

    @staticmethod
    def get_provided_features_list():
        return ("features", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 1, 28, 28, dtype=torch.uint8)

    def forward(self, x):
        if not torch.is_tensor(x) or x.dtype != torch.uint8 or x.dim() != 4:
            raise ConfigError(f"{self.name} takes uint8 [N, C, H, W] images")
        if "logits" in self.features_list and self.net.head is None:
            raise ConfigError(f"{self.name} is an encoder without class logits; IS and the "
                              "class metrics need a classifier extractor")
        if tuple(x.shape[1:]) != self.image_shape:
            raise ConfigError(
                f"{self.name} was trained on images of shape {self.image_shape}, "
                f"got {tuple(x.shape[1:])}; use the extractor of the dataset you compare with"
            )
        features, logits = self.net(x.contiguous(memory_format=torch.channels_last))
        out = {"features": features, "logits": logits}
        return tuple(out[k].float() for k in self.features_list)


# -- extractors made for a dataset: the cache, the random baseline ---------------------------

RANDOM = "random-encoder"
RANDOM_SEED = 0


def extractor_cache() -> Path:
    """Where extractors made for a dataset live: ``$ZOO_CACHE/extractors`` or
    ``~/.cache/zoo/extractors``, one folder per content hash of a training split."""
    env = os.environ.get("ZOO_CACHE", "").strip()
    return (Path(env) if env else Path("~/.cache/zoo")).expanduser() / "extractors"


def cached_extractor(dataset, root: str | os.PathLike | None = None) -> Path | None:
    """The weights of the extractor made for ``dataset`` (keyed by the content hash of
    its training split, so a moved or renamed copy finds it too), or None."""
    try:
        folder = extractor_cache() / zdata.content_hash(dataset, "train", root)
    except DataError:  # its files are missing or unreadable: nothing was made from them
        return None
    for card in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        if card.with_suffix(".pt").is_file():
            return card.with_suffix(".pt")
    return None


def write_extractor(out: Path, name: str, blob: bytes, card: dict) -> Path:
    """An extractor's weights and JSON card, each written whole and readable by every user
    (they may be installed as package data); returns the weights' path."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / f"{name}.pt", lambda tmp: Path(tmp).write_bytes(blob))
    text = json.dumps(card, indent=2) + "\n"
    atomic_write(out / f"{name}.json", lambda tmp: Path(tmp).write_text(text))
    for suffix in (".pt", ".json"):
        os.chmod(out / f"{name}{suffix}", 0o644)
    return out / f"{name}.pt"


def random_extractor(image_shape, seed: int = RANDOM_SEED) -> Path:
    """The weights of ``random-encoder`` for images of ``image_shape``: the classifiers'
    architecture without a head, He-initialised from ``seed`` (written to the cache once)."""
    c, h, w = (int(v) for v in image_shape)
    weights = extractor_cache() / f"random-{c}x{h}x{w}-seed{seed}" / f"{RANDOM}.pt"
    if weights.is_file() and weights.with_suffix(".json").is_file():
        return weights
    config = ClassifierConfig(in_channels=c, num_classes=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ClassifierNet(config)
        for m in net.modules():  # variance-preserving, so the features are neither 0 nor huge
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    blob = save_bytes(net.state_dict())
    card = {"name": RANDOM, "kind": "random", "image_shape": [c, h, w],
            "config": {**dataclasses.asdict(config), "channels": list(config.channels)},
            "seed": seed, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob),
            "torch": torch.__version__}
    return write_extractor(weights.parent, RANDOM, blob, card)


# -- InceptionV3 ---------------------------------------------------------------------------


def _hub_inception_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def find_inception_weights(path: str | os.PathLike | None = None) -> Path | None:
    """The InceptionV3 weights on disk: ``path`` > ``$ZOO_INCEPTION_WEIGHTS`` > hub cache.

    A path that is given (argument or variable) but missing is an error rather than a
    silent fall-back. Returns None when nothing is given and the hub cache has no copy.
    """
    for given, where in ((path, "the given path"),
                         (os.environ.get("ZOO_INCEPTION_WEIGHTS", "").strip() or None,
                          "$ZOO_INCEPTION_WEIGHTS")):
        if given:
            p = Path(given).expanduser()
            if not p.is_file():
                raise CheckpointError(f"InceptionV3 weights {p} ({where}) do not exist")
            return p
    hub = _hub_inception_path()
    return hub if hub.is_file() else None


def _offline() -> bool:
    return os.environ.get("ZOO_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def inception_weights(path: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """A local InceptionV3 weights file, downloading it into torch's hub cache if needed."""
    found = find_inception_weights(path)
    if found is not None:
        return found
    hub = _hub_inception_path()
    how = (
        f"set ZOO_INCEPTION_WEIGHTS to a copy of {INCEPTION_FILE} (from {INCEPTION_URL}), "
        f"put it at {hub}, or use a classifier extractor ({', '.join(classifier_names())})"
    )
    if _offline():
        raise MetricsError(f"InceptionV3 weights not found and ZOO_OFFLINE is set; {how}")
    try:
        hub.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(INCEPTION_URL, str(hub), progress=progress)
    except Exception as e:  # noqa: BLE001 - urllib/http raise many types
        raise MetricsError(f"InceptionV3 weights could not be downloaded ({e}); {how}") from None
    return hub


class InceptionExtractor(FeatureExtractorInceptionV3):
    """torch-fidelity's InceptionV3 with a safe, checked weights load and grayscale input."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        path = inception_weights(feature_extractor_weights_path, kwargs.get("verbose", False))
        # Read once with weights_only=True: a truncated file or one holding code is refused
        # here with a clear error, before torch-fidelity reads the (now vetted) file itself.
        state = torch_load(path, "InceptionV3 weights")
        if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
            raise CheckpointError(f"InceptionV3 weights {path} are not a state dict of tensors")
        del state
        self._weights_path = path
        super().__init__(name, features_list, feature_extractor_weights_path=str(path), **kwargs)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        except RuntimeError as e:
            raise CheckpointError(
                f"{self._weights_path} does not hold torch-fidelity's InceptionV3 weights: "
                f"{first_line(e)}"
            ) from None

    def forward(self, x):
        if torch.is_tensor(x) and x.dim() == 4 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return super().forward(x)


def _register() -> None:
    if INCEPTION_TF_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(INCEPTION_TF_NAME, InceptionExtractor)
    for name in classifier_names():
        if name not in FEATURE_EXTRACTORS_REGISTRY:
            register_feature_extractor(name, ClassifierExtractor)


_register()


# -- choosing an extractor -----------------------------------------------------------------


def available_extractors() -> list[str]:
    return [INCEPTION, *classifier_names()]


@dataclass(frozen=True)
class Extractor:
    """A resolved feature extractor: what every result row records about it."""

    name: str  #: public name, e.g. ``mnist-classifier`` or ``inception-v3-compat``
    tf_name: str  #: its name in torch-fidelity's registry
    weights: str  #: path of the weights file
    sha256: str  #: sha256 of the weights file
    choice: str  #: why this extractor was used (explicit, or the default and its reason)
    layers: dict = dataclasses.field(default_factory=dict)  #: metric -> feature layer
    official: bool | None = None  #: InceptionV3: whether these are the standard weights
    kind: str = "inception"  #: inception, classifier, ssl (an encoder) or random

    @property
    def logits(self) -> bool:
        """Whether it has class logits (IS's layer); an encoder has features only."""
        return "isc" in self.layers

    def tf_kwargs(self) -> dict:
        """The keyword arguments that select this extractor in torch_fidelity.calculate_metrics."""
        return {"feature_extractor": self.tf_name, "feature_extractor_weights_path": self.weights}

    def record(self) -> dict:
        out = {"extractor": self.name, "extractor_weights_sha256": self.sha256,
               "extractor_choice": self.choice, "extractor_kind": self.kind}
        if self.kind != "inception":
            out["extractor_weights"] = self.weights
        if self.official is not None:
            out["extractor_official_weights"] = self.official
        return out

    def build(self, layers: tuple[str, ...] | list[str], device=None) -> FeatureExtractorBase:
        """An instance of the torch-fidelity extractor producing ``layers``, in eval mode."""
        cls = FEATURE_EXTRACTORS_REGISTRY[self.tf_name]
        module = cls(self.tf_name, list(layers), feature_extractor_weights_path=self.weights)
        module.requires_grad_(False).eval()
        return module.to(device) if device is not None else module


def _classifier(spec, choice: str) -> Extractor:
    """A classifier, encoder or random extractor from its card; an encoder has no class
    logits, so no IS layer (``Extractor.logits`` is False)."""
    card, weights = classifier_card(spec)
    name = card["name"]
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(name, ClassifierExtractor)
    elif FEATURE_EXTRACTORS_REGISTRY[name] is not ClassifierExtractor:
        raise ConfigError(f"classifier name {name!r} is taken by another torch-fidelity extractor")
    metrics = ("isc", "fid", "kid", "prc") if card["config"].get("num_classes") else \
        ("fid", "kid", "prc")
    return Extractor(
        name=name, tf_name=name, weights=str(weights), sha256=card["sha256"], choice=choice,
        layers={m: ClassifierExtractor.get_default_feature_layer_for_metric(m) for m in metrics},
        kind=card.get("kind", "classifier"),
    )


def _inception(path: Path, choice: str) -> Extractor:
    sha = file_sha256(path)
    official = sha.startswith(INCEPTION_SHA256_PREFIX)
    if not official:
        print(f"zoo.metrics: warning: InceptionV3 weights {path} are not the standard ones "
              f"(sha256 {sha[:12]}...); numbers are not comparable with published FIDs",
              file=sys.stderr)
    return Extractor(
        name=INCEPTION, tf_name=INCEPTION_TF_NAME, weights=str(path), sha256=sha, choice=choice,
        layers={m: FeatureExtractorInceptionV3.get_default_feature_layer_for_metric(m)
                for m in ("isc", "fid", "kid", "prc")},
        official=official,
    )


def make_extractor_hint(ds) -> str:
    """The one command that makes an extractor for dataset ``ds`` (a classifier where it
    has labels, else a self-supervised encoder), cached where ``zoo eval`` finds it."""
    import shlex

    return (f"make one for it with `zoo extractor {shlex.quote(str(ds))}` (then found "
            "without flags), or pass --extractor auto to make it now")


def resolve_extractor(
    extractor: str | os.PathLike | None,
    dataset: str | None,
    inception_weights_path: str | os.PathLike | None = None,
    announce: bool = True,
) -> Extractor:
    """Turn an extractor name (or None = the default for ``dataset``) into an Extractor.

    Names: ``inception-v3-compat``, ``<dataset>-classifier``, ``classifier`` (the one of
    ``dataset``), ``random`` (``random-encoder``), ``auto`` (the one made for ``dataset``)
    or the path of an extractor ``.pt`` with its JSON card. The default: where no shipped
    classifier fits the dataset, the extractor made for it (``zoo extractor DATA``, found
    in the cache by the content hash of its training split); else InceptionV3 when its
    weights are on disk (explicit path, ``$ZOO_INCEPTION_WEIGHTS`` or the hub cache), else
    the dataset's classifier, else InceptionV3 downloaded. The choice is printed to stderr
    (when ``announce``) and recorded in the Extractor, never silent.
    """
    ds = zdata.spec(dataset) if dataset is not None else None
    # a shipped classifier fits its built-in dataset as distributed (not resized copies)
    own = f"{ds.name}{CLASSIFIER_SUFFIX}" if ds is not None and ds.builtin \
        and not ds.transformed else None
    if extractor is not None:
        return _explicit(str(extractor), ds, own, inception_weights_path)
    found = find_inception_weights(inception_weights_path)
    cached = cached_extractor(ds) if ds is not None and own not in classifier_names() \
        else None
    if cached is not None:
        ext = _classifier(cached, f"default: the extractor made for this data (cached at "
                          f"{cached.parent}, keyed by its content hash)")
    elif found is not None:
        ext = _inception(found, f"default: InceptionV3 weights found at {found}")
    elif own in classifier_names():
        ext = _classifier(own, "default: InceptionV3 weights not found (set "
                          "ZOO_INCEPTION_WEIGHTS or pass extractor='inception-v3-compat' to "
                          "download them), so the dataset's classifier is used")
    else:
        try:
            path = inception_weights(None)
        except MetricsError as e:
            if ds is None:
                raise
            raise MetricsError(f"no feature extractor for {ds}: {make_extractor_hint(ds)}. "
                               f"(zoo ships no classifier for it, and {e})") from None
        ext = _inception(path, f"default: no classifier is shipped for {dataset!r}, "
                         "InceptionV3 weights downloaded")
    if announce:
        print(f"zoo.metrics: feature extractor {ext.name} (sha256 {ext.sha256[:12]}); "
              f"{ext.choice}", file=sys.stderr)
    return ext


def _explicit(spec: str, ds, own: str | None, inception_weights_path) -> Extractor:
    """The extractor a name or path asks for (see ``resolve_extractor``)."""
    if spec == INCEPTION:
        return _inception(inception_weights(inception_weights_path), "explicit")
    if spec in ("random", "auto"):
        if ds is None:
            raise ConfigError(f"extractor {spec!r} needs the dataset it measures")
        if spec == "random":
            return _classifier(random_extractor(zdata.image_shape(ds)),
                               f"explicit: random weights (seed {RANDOM_SEED})")
        cached = cached_extractor(ds)
        if cached is None:
            raise MetricsError(f"no extractor was made for {ds}; {make_extractor_hint(ds)}")
        return _classifier(cached, f"explicit (auto): the extractor made for this data "
                           f"(cached at {cached.parent})")
    if spec == "classifier":
        if own not in classifier_names():
            raise ConfigError(f"no classifier is shipped for dataset {ds}; "
                              f"available: {', '.join(classifier_names())}"
                              + (f". Or {make_extractor_hint(ds)}" if ds else ""))
        spec = own
    return _classifier(spec, "explicit")

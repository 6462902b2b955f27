"""The GenerativeModel interface, its option helpers and the checkpoint format.

Every public tensor is uint8 ``[N, C, H, W]``; each model maps to its own space inside.
A checkpoint is one file: a dict of plain data (config as a JSON string, the image shape,
the class's import path) and the state dict, loaded with ``weights_only=True`` so that
loading one never runs code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
import warnings
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

# the errors live in zoo.errors; re-exported here, the usual place to import them from
from .errors import (
    CheckpointError,
    ConfigError,
    LikelihoodUnavailable,
    first_line,
)
from .errors import DataError as DataError
from .errors import TrainingDiverged as TrainingDiverged
from .errors import ZooError as ZooError
from .files import atomic_write
from .limits import check_memory
from .options import FALSE_WORDS as FALSE_WORDS
from .options import TRUE_WORDS as TRUE_WORDS
from .options import choices, choose_sampler, parse_value
from .options import option_flag as option_flag
from .options import option_number as option_number
from .readers import parse_json
from .runtime import TrainingRuntime

__version__ = "0.1.0"
CHECKPOINT_FORMAT = "zoo-model"
MODEL_FILE = "model.pt"  # a run directory's trained model (the EMA weights)
CHECKPOINT_VERSION = 1
UNLABELLED = -1  # the label of an image whose dataset has none


def adam(params, *, decoupled: bool = False, **kwargs) -> torch.optim.Optimizer:
    """Adam (AdamW when ``decoupled``) with torch's fused implementation: one kernel for all
    parameters per step on CUDA, one fused loop on the CPU. Every family builds its
    optimizers here, so all train with the fast path on every device."""
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    return cls(params, fused=True, **kwargs)


def save_torch(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` through ``atomic_write``. A failure to write (a full disk,
    a file-size limit) is raised as the OSError behind it, which torch's writer reports as
    an opaque RuntimeError."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            try:
                torch.save(obj, f)
            except RuntimeError as e:
                if isinstance(e.__context__, OSError):
                    raise e.__context__ from None
                raise

    atomic_write(path, write)


#: the first bytes of torch's legacy (pre-zip) format: pickle protocol 2, then its magic number
_LEGACY_TORCH_HEAD = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def _not_torch(head: bytes) -> str | None:
    """What a file is, in words, when its first bytes show it is not a torch file (None when
    it may be one: a zip archive or a pickle)."""
    if not head:
        return "it is empty"
    if head.startswith(b"PK") or head.startswith(b"\x80"):
        return None
    if head.startswith(b"\x93NUMPY"):
        return "it is a numpy .npy array"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"it starts with the bytes {head[:8].hex(' ')}"
    if text.isprintable() or all(c.isprintable() or c.isspace() for c in text):
        return "it holds text"
    return f"it starts with the bytes {head[:8].hex(' ')}"


def torch_load(path: str | os.PathLike, what: str = "checkpoint") -> dict:
    """``torch.load`` with ``weights_only=True`` of a file that must hold a dict, turning
    every failure into a CheckpointError that says what the file is."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    try:
        with path.open("rb") as f:
            head = f.read(len(_LEGACY_TORCH_HEAD))
    except OSError as e:
        raise CheckpointError(f"{what} {path} cannot be read ({e.strerror or e})") from None
    kind = _not_torch(head)
    if kind is not None:
        raise CheckpointError(f"{what} {path} is not a torch file ({kind}); give a file that "
                              "zoo wrote (model.pt or checkpoint.pt)")
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            names = None  # a truncated archive: torch says so below
        if names is not None and not any(n.endswith("/data.pkl") for n in names):
            npz = " (a .npz of numpy arrays?)" if any(n.endswith(".npy") for n in names) else ""
            raise CheckpointError(f"{what} {path} is not a torch file: a zip archive without "
                                  f"torch's data.pkl{npz}")
    try:
        with warnings.catch_warnings():  # e.g. about a pickle protocol: the error says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types here
        text = str(e)
        if "GLOBAL" in text or "Unsupported global" in text:
            raise CheckpointError(
                f"{what} {path} holds Python objects that would run code when loaded; "
                "zoo refuses to load it (only tensors and plain data are accepted)"
            ) from None
        if "Invalid magic number" in text and not head.startswith(_LEGACY_TORCH_HEAD):
            raise CheckpointError(
                f"{what} {path} cannot be read: it is a plain Python pickle, not a torch file "
                "(zoo never unpickles those: unpickling can run code)") from None
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        # torch's weights-only errors open with a paragraph about torch 2.6; the cause follows
        reason = next((ln for ln in lines if "Unsupported" in ln), None) or first_line(e)
        raise CheckpointError(
            f"{what} {path} cannot be read ({reason[:200]}); it is truncated or corrupt"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{what} {path} holds a {type(state).__name__}, not the dict of a "
                              "zoo checkpoint")
    return state


def config_to_dict(config: Any) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(cls: type, data: dict) -> Any:
    """Build the dataclass ``cls`` from ``data``, each value parsed as its field's type
    (``zoo.options.parse_value``); unknown keys and bad values are a ConfigError."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a {cls.__qualname__} is a mapping of options, got "
                          f"{type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for {cls.__qualname__}; "
            f"valid options: {', '.join(fields)}"
        )
    kwargs = {}
    for k, v in data.items():
        # the one parser: types and finiteness as for --set (ranges: the model)
        try:
            kwargs[k] = parse_value(v, fields[k].type, k)
        except ConfigError:
            if not (isinstance(v, str) and choices(fields[k].type)):
                raise
            kwargs[k] = v  # an unknown choice: the model names it with its valid values
    return cls(**kwargs)


class Batch(NamedTuple):
    """A training batch: uint8 images [N, C, H, W] and int64 labels [N], -1 where the
    dataset has none. What the data layer yields and ``train_step`` takes."""

    images: Tensor
    labels: Tensor

    @classmethod
    def unlabelled(cls, images: Tensor) -> Batch:
        n = images.shape[0] if isinstance(images, Tensor) and images.dim() > 0 else 0
        dev = images.device if isinstance(images, Tensor) else None
        return cls(images, torch.full((n,), UNLABELLED, dtype=torch.long, device=dev))


class GenerativeModel(TrainingRuntime, nn.Module):
    """One interface for every family: uint8 images in, uint8 images out.

    A family (``tests/test_family_contract.py`` checks each point over every registered
    model):

    - sets ``family``, ``likelihood`` ("exact", "bound" or None), ``Config`` (a dataclass
      whose defaults build a model for ``mnist``) and ``samplers``; a class-conditional
      family names its config fields ``conditional`` and ``num_classes``;
    - builds every optimizer with ``zoo.core.adam`` in ``configure_optimizers``;
    - in ``train_step``, validates with ``check_batch``, updates through ``optimize``, draws
      all its randomness with ``batch_randn``/``batch_rand``/``batch_randint`` (never the
      global generator: DDP ranks must draw what one process draws), and computes its
      losses in the ``forward`` of the modules ``ddp_modules`` names (default: the whole
      model), called through ``wrapped(name)``;
    - in ``sample``, accepts ``generator``, ``labels`` (checked with ``check_labels``) and
      ``batch_size`` (how many images one network call takes; the harness times with it);
    - implements ``nll`` when ``likelihood`` is set, else lets it raise
      LikelihoodUnavailable;
    - saves and loads through ``save``/``load`` (a family may finish its weights on save).

    What the Trainer attaches for a run (DDP wrappers, per-batch noise, the shard) comes from
    ``zoo.runtime.TrainingRuntime``.
    """

    family: ClassVar[str]
    likelihood: ClassVar[str | None] = None
    Config: ClassVar[type]
    #: the family's samplers (``zoo.options.SamplerOptions`` classes)
    samplers: ClassVar[tuple[type, ...]] = ()
    #: the sampler options a ``sample`` call that names no sampler uses (its own options
    #: override them); {}: the first of ``samplers`` at its defaults
    default_sampler: ClassVar[dict] = {}
    #: the family's colour in the report's figures
    color: ClassVar[str] = "#7f7f7f"

    def __init__(self, config: Any, image_shape: Iterable[int]):
        super().__init__()
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ConfigError(f"image_shape must be (C, H, W) of positive ints, got {image_shape}")
        self.config = config
        self.image_shape = image_shape
        self.name = type(self).__name__.lower()
        #: set by the Trainer: max gradient norm applied in ``optimize`` (None = off)
        self.grad_clip: float | None = None
        self.attach_training()  # detached until the Trainer attaches DDP, noise, shard

    # -- the interface -------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(self, x: Batch | Tensor, optimizers: dict[str, torch.optim.Optimizer]) -> dict:
        """One full update on a batch (a ``Batch``, or bare uint8 images: unlabelled; see
        ``check_batch``); returns the losses as floats."""
        raise NotImplementedError

    def sample(self, n: int, *, generator: torch.Generator | None = None,
               labels: Tensor | None = None, batch_size: int | None = None,
               **options) -> Tensor:
        """n uint8 images; ``options`` are the sampler's (``parse_sampler``); ``labels``
        (int64 [n]) asks a class-conditional model for those classes; ``batch_size`` caps
        the images one network call takes (the family's default when None)."""
        raise NotImplementedError

    @property
    def conditional(self) -> bool:
        """Whether the model takes class labels (``sample(labels=...)``)."""
        return bool(getattr(self.config, "conditional", False))

    @property
    def num_classes(self) -> int | None:
        """The classes a conditional model generates (labels 0..num_classes-1); None for
        an unconditional one. ``num_classes`` itself stands for "no class" (the null label
        a model trained with label dropout samples unconditionally from)."""
        return int(self.config.num_classes) if self.conditional else None

    def drop_labels(self, labels: Tensor, p: float) -> Tensor:
        """Labels with a share ``p`` replaced by the null label ``num_classes`` (label
        dropout: one model learns the conditional and the unconditional distribution, what
        classifier-free guidance needs), drawn from the batch noise stream."""
        if p <= 0:
            return labels
        keep = self.batch_rand(labels.shape[0]).to(labels.device) >= p
        return torch.where(keep, labels, torch.full_like(labels, self.num_classes))

    def parse_sampler(self, options, also=()):
        """The sampler options of a ``sample`` call, parsed once into the sampler's class
        (see ``zoo.options.choose_sampler``) and bound to this model; without a ``sampler``
        they complete ``default_sampler``."""
        if "sampler" not in options:
            options = {**self.default_sampler, **options}
        return choose_sampler(self.samplers, options, self.name, also).bind(self)

    def nll(self, x: Tensor, **options) -> Tensor:
        """Negative log-likelihood in bits per dimension of 8-bit data, one value per image."""
        raise LikelihoodUnavailable(
            f"{self.name} ({self.family}) defines no likelihood, so it has no NLL"
        )

    def describe_nll(self, **options) -> str:
        """What ``nll(x, **options)`` computes, in words (printed beside the figure)."""
        return self.likelihood or "none"

    def check_loaded(self, source: str) -> None:
        """Called once a checkpoint's weights are loaded: a model whose weights carry their
        own check (a latent model's autoencoder hash) raises a CheckpointError here."""

    def ema_module(self) -> nn.Module:
        """The part whose weights the Trainer averages (EMA) and uses for sampling."""
        return self

    # -- helpers shared by the families ----------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def convolutional(self) -> bool:
        """Whether the model has convolutions (then channels_last pays on CUDA)."""
        return any(isinstance(m, nn.modules.conv._ConvNd) for m in self.modules())

    def place(self, device: str | torch.device, channels_last: bool | None = None):
        """Move to ``device``; 4-D weights go channels_last when ``channels_last`` is true,
        or when it is None and the model is convolutional and ``device`` is CUDA (tensor
        cores want NHWC; the results are the same up to float rounding), and back to the
        plain layout otherwise. Returns self."""
        device = torch.device(device)
        self.to(device)
        if channels_last is None:
            channels_last = device.type == "cuda" and self.convolutional
        self.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        return self

    @property
    def dims(self) -> int:
        c, h, w = self.image_shape
        return c * h * w

    def check_batch(self, batch) -> Batch:
        """A training batch (a ``Batch``, or bare uint8 images: unlabelled) validated, on
        the model's device; a conditional model refuses labels outside its classes (an
        unlabelled image, -1, among them)."""
        if not isinstance(batch, Batch):
            batch = Batch.unlabelled(batch)
        images = self.check_images(batch.images)
        labels = batch.labels.to(images.device, non_blocking=True)
        # checked where it costs no device sync: labels that arrive on the CPU (a direct
        # train_step call); the Trainer checks its whole label set once before training
        if self.conditional and labels.numel() and batch.labels.device.type == "cpu":
            lo, hi = batch.labels.aminmax()
            if int(lo) < 0 or int(hi) >= self.num_classes:
                raise ConfigError(
                    f"{self.name} is class-conditional ({self.num_classes} classes) but got "
                    f"labels {int(lo)}..{int(hi)}"
                    + (" (-1: images without a label)" if int(lo) == UNLABELLED else "")
                    + "; train it on labelled data, or unconditionally")
        return Batch(images, labels)

    def check_labels(self, labels, n: int) -> Tensor | None:
        """``sample``'s labels as int64 [n] on the model's device: one class for every
        image (an int) or one per image; refused by a model that is not class-conditional
        and outside 0..num_classes-1."""
        if labels is None:
            return None
        if not self.conditional:
            raise ConfigError(
                f"{self.name} is not class-conditional, so sample() takes no labels; "
                "sample without labels=, or use a model trained conditionally"
            )
        try:  # a class number beyond int64 overflows the conversion
            if isinstance(labels, int) and not isinstance(labels, bool):
                labels = torch.full((n,), labels, dtype=torch.long)
            labels = torch.as_tensor(labels, device=self.device)
        except (OverflowError, RuntimeError, TypeError, ValueError) as e:
            raise ConfigError(f"labels must lie in 0..{self.num_classes - 1} ({self.name} "
                              f"has {self.num_classes} classes) and be integers; they cannot "
                              f"be read as such ({first_line(e)[:80]})") from None
        if labels.dim() != 1 or labels.shape[0] != n or labels.is_floating_point():
            raise ConfigError(f"labels must be {n} integers (one per image), got "
                              f"{labels.dtype} {tuple(labels.shape)}")
        if n and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ConfigError(f"labels must lie in 0..{self.num_classes - 1} ({self.name} "
                              f"has {self.num_classes} classes), got "
                              f"{int(labels.min())}..{int(labels.max())}")
        return labels.long()

    def check_images(self, x: Tensor) -> Tensor:
        """Validate a public uint8 batch and move it to the model's device."""
        if not isinstance(x, Tensor) or x.dtype != torch.uint8:
            raise ConfigError(
                f"{self.name} takes uint8 image tensors [N, C, H, W] with values 0..255, "
                f"got {getattr(x, 'dtype', type(x).__name__)}"
            )
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ConfigError(
                f"{self.name} was built for images of shape {self.image_shape}, "
                f"got a batch of shape {tuple(x.shape)}"
            )
        return x.to(self.device, non_blocking=True)

    def optimize(self, loss: Tensor, optimizer: torch.optim.Optimizer, params=None) -> None:
        """zero_grad, backward, clip (the Trainer's ``grad_clip``) and step; refuses NaN/Inf.

        Under DDP the NaN check is collective (``check_finite``): when the loss of any rank
        is not finite, every rank raises before ``backward`` (so none is left waiting)."""
        self.check_finite(loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            if params is None:
                params = [p for g in optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        optimizer.step()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- checkpoints ---------------------------------------------------------------------
    def checkpoint_dict(self) -> dict:
        cls = type(self)
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "class": f"{cls.__module__}:{cls.__qualname__}",
            "name": self.name,
            "config": json.dumps(config_to_dict(self.config)),
            "image_shape": list(self.image_shape),
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write config (JSON) and weights to one file, atomically."""
        save_torch(self.checkpoint_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu"):
        """Load a model file onto ``map_location`` (channels_last there when ``place``
        chooses it: convolutional models on CUDA)."""
        return from_checkpoint_dict(torch_load(path), source=str(path), expect=cls).place(
            map_location
        )


def weights_bytes(cls: type, config: Any, image_shape: Iterable[int]) -> tuple[int, int] | None:
    """(parameter count, bytes of parameters and buffers) of ``cls(config, image_shape)``,
    counted on a model built on the meta device (no memory); None when the class cannot be
    built there. Config errors propagate; sizes whose count overflows are a ConfigError."""
    try:
        with torch.device("meta"):
            model = cls(config, image_shape)
    except ZooError:
        raise
    except Exception as e:  # noqa: BLE001 - a family that cannot be built on meta: not counted
        if "overflow" in str(e).lower():
            raise ConfigError(f"{cls.__name__}'s weights would be too many to count "
                              f"({first_line(e)[:120]}), far past zoo's memory limit; choose "
                              "smaller sizes") from None
        return None
    params = sum(p.numel() for p in model.parameters())
    nbytes = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    return params, nbytes


def build_model(cls: type, config: Any, image_shape: Iterable[int]) -> GenerativeModel:
    """``cls(config, image_shape)``, refused with a ConfigError before allocating when its
    weights would pass zoo's memory limit (``zoo.limits``), or when torch cannot build it."""
    image_shape = tuple(image_shape)
    size = weights_bytes(cls, config, image_shape)
    if size is not None:
        check_memory(size[1], f"{cls.__name__}'s weights ({size[0]:,} parameters)",
                     "choose smaller sizes (widths, depth, channels) or smaller images")
    try:
        return cls(config, image_shape)
    except (RuntimeError, ValueError, TypeError, OverflowError) as e:
        raise ConfigError(f"{cls.__name__} cannot be built from this config "
                          f"({first_line(e)[:200]})") from None


def state_dict_mismatch(expected: Mapping[str, Tensor], found) -> str | None:
    """The first way ``found`` (a state dict read from a file) fails to fit ``expected`` (the
    module's own), in words: a missing or unexpected key, a value that is not a tensor, another
    shape or kind of dtype. None when it fits."""
    if not isinstance(found, Mapping):
        return f"the weights are a {type(found).__name__}, not a dict of tensors"
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (the first: {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (the first: {str(unexpected[0])!r})")
        return "tensors " + " and ".join(parts)
    for k, want in expected.items():
        got = found[k]
        if not isinstance(got, Tensor):
            return f"{k} is a {type(got).__name__}, not a tensor"
        if got.layout != torch.strided:
            return f"{k} is a {got.layout} tensor, not a dense one"
        if tuple(got.shape) != tuple(want.shape):
            return f"{k} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        if got.is_floating_point() != want.is_floating_point() or got.is_complex():
            return f"{k} has dtype {got.dtype}, expected {want.dtype}"
    return None


def first_non_finite(tensors: Mapping[str, Tensor]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity (None if none)."""
    for k, v in tensors.items():
        if isinstance(v, Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            return k
    return None


def model_class(path: Any, source: str = "checkpoint") -> type:
    """The GenerativeModel subclass that a checkpoint's ``class`` ("zoo.models.vae:VAE")
    names; anything else (not under zoo.models, missing, not a model class) is refused."""
    module_name, _, qualname = str(path).partition(":")
    if not module_name.startswith("zoo.models.") or not qualname:
        raise CheckpointError(f"{source} names class {path!r}, not a zoo model")
    try:
        obj = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError, TypeError):
        raise CheckpointError(
            f"{source} was written for {path}, which this zoo does not have") from None
    config = getattr(obj, "Config", None)
    if not (isinstance(obj, type) and issubclass(obj, GenerativeModel)
            and obj is not GenerativeModel and dataclasses.is_dataclass(config)):
        raise CheckpointError(f"{source} names {path!r}, which is not a zoo model class")
    return obj


def from_checkpoint_dict(
    ckpt: dict, source: str = "checkpoint", expect: type | None = None
) -> GenerativeModel:
    """Rebuild a model from ``checkpoint_dict()`` output, checking every part before use:
    the class, the config (as ``zoo.create`` checks it, and its size against the memory
    limit), every tensor's name, shape and dtype, and that the weights are finite."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{source} is not a zoo model checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{source} has checkpoint version {ckpt.get('version')}; "
            f"this zoo reads version {CHECKPOINT_VERSION}"
        )
    model_cls = model_class(ckpt.get("class", ""), source)
    qualname = model_cls.__qualname__
    if expect is not None and expect is not GenerativeModel and not issubclass(model_cls, expect):
        raise CheckpointError(f"{source} holds a {qualname}, not a {expect.__qualname__}")
    for key in ("config", "image_shape", "state_dict"):
        if key not in ckpt:
            raise CheckpointError(f"{source} has no {key!r} entry; it is not a complete zoo "
                                  "model checkpoint")
    try:
        if not isinstance(ckpt["config"], str):
            raise ConfigError(f"the config is a {type(ckpt['config']).__name__}, not JSON text")
        config = config_from_dict(model_cls.Config,
                                  parse_json(ckpt["config"], "the config JSON"))
        shape = ckpt["image_shape"]
        if not isinstance(shape, list | tuple) or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in shape):
            raise ConfigError(f"image_shape must be a list of 3 integers, got {shape!r}")
        model = build_model(model_cls, config, shape)
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source} has an invalid config: {e}") from None
    model.name = str(ckpt.get("name", model.name))
    state = ckpt["state_dict"]
    problem = state_dict_mismatch(model.state_dict(), state)
    if problem is not None:
        raise CheckpointError(f"{source} does not match its model's weights: {problem}")
    bad = first_non_finite(state)
    if bad is not None:
        raise CheckpointError(
            f"{source} holds non-finite weights (NaN or Inf), the first in {bad}; the run "
            "diverged or the file is corrupt: use an earlier checkpoint")
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{source} does not match its model's weights: {first_line(e)}") from None
    model.check_loaded(source)
    return model


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model name: its class, config overrides, and per-dataset overrides.

    Each family module lists its names in a module-level ``MODELS`` dict; the registry
    collects them.
    """

    cls: type
    description: str
    defaults: dict = dataclasses.field(default_factory=dict)
    dataset_defaults: dict = dataclasses.field(default_factory=dict)


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    """``module`` in eval mode inside the block; its training flag as before after it."""
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)

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
import tempfile
from collections.abc import Iterable
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
from .options import FALSE_WORDS as FALSE_WORDS
from .options import TRUE_WORDS as TRUE_WORDS
from .options import choose_sampler
from .options import option_flag as option_flag
from .options import option_number as option_number
from .runtime import TrainingRuntime

CHECKPOINT_FORMAT = "zoo-model"
CHECKPOINT_VERSION = 1
UNLABELLED = -1  # the label of an image whose dataset has none


def adam(params, *, decoupled: bool = False, **kwargs) -> torch.optim.Optimizer:
    """Adam (AdamW when ``decoupled``) with torch's fused implementation: one kernel for all
    parameters per step on CUDA, one fused loop on the CPU. Every family builds its
    optimizers here, so all train with the fast path on every device."""
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    return cls(params, fused=True, **kwargs)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` and rename the result onto ``path``; readers never see half.

    The file is fsynced before the rename and the directory after it (where the system
    allows), so a power loss leaves the previous version or the new one, never an empty or
    partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # not every system can open or sync a directory
        _fsync(path.parent)


def _fsync(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def torch_load(path: str | os.PathLike, what: str = "checkpoint") -> dict:
    """``torch.load`` with ``weights_only=True``, turning every failure into CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types here
        msg = first_line(e)
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(
                f"{what} {path} holds Python objects that would run code when loaded; "
                "zoo refuses to load it (only tensors and plain data are accepted)"
            ) from None
        raise CheckpointError(
            f"{what} {path} cannot be read ({msg}); it is truncated or not a torch file"
        ) from None


def config_to_dict(config: Any) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(cls: type, data: dict) -> Any:
    """Build the dataclass ``cls`` from ``data``; unknown keys are a ConfigError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for {cls.__qualname__}; "
            f"valid options: {', '.join(fields)}"
        )
    kwargs = {}
    for k, v in data.items():
        default = getattr(cls(), k) if _has_default(fields[k]) else None
        kwargs[k] = tuple(v) if isinstance(default, tuple) and isinstance(v, list) else v
    return cls(**kwargs)


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


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

    Subclasses set ``family``, ``likelihood`` and ``Config`` (a dataclass with defaults)
    and implement ``configure_optimizers``, ``train_step``, ``sample`` and (unless
    ``likelihood`` is None) ``nll``. What the Trainer attaches for a run (DDP wrappers,
    per-batch noise, the shard) comes from ``zoo.runtime.TrainingRuntime``.
    """

    family: ClassVar[str]
    likelihood: ClassVar[str | None] = None
    Config: ClassVar[type]
    #: the family's samplers (``zoo.options.SamplerOptions`` classes), the first the default
    samplers: ClassVar[tuple[type, ...]] = ()
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
               labels: Tensor | None = None, **options) -> Tensor:
        """n uint8 images; ``options`` are the sampler's (``parse_sampler``); ``labels``
        (int64 [n]) asks a class-conditional model for those classes."""
        raise NotImplementedError

    @property
    def conditional(self) -> bool:
        """Whether the model takes class labels (``sample(labels=...)``)."""
        return bool(getattr(self.config, "conditional", False))

    def parse_sampler(self, options, also=()):
        """The sampler options of a ``sample`` call, parsed once into the sampler's class
        (see ``zoo.options.choose_sampler``) and bound to this model."""
        return choose_sampler(self.samplers, options, self.name, also).bind(self)

    def nll(self, x: Tensor, **options) -> Tensor:
        """Negative log-likelihood in bits per dimension of 8-bit data, one value per image."""
        raise LikelihoodUnavailable(
            f"{self.name} ({self.family}) defines no likelihood, so it has no NLL"
        )

    def describe_nll(self, **options) -> str:
        """What ``nll(x, **options)`` computes, in words (printed beside the figure)."""
        return self.likelihood or "none"

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
        the model's device."""
        if not isinstance(batch, Batch):
            batch = Batch.unlabelled(batch)
        images = self.check_images(batch.images)
        return Batch(images, batch.labels.to(images.device, non_blocking=True))

    def check_labels(self, labels, n: int) -> Tensor | None:
        """``sample``'s labels: refused by a model that is not class-conditional."""
        if labels is None:
            return None
        if not self.conditional:
            raise ConfigError(
                f"{self.name} is not class-conditional, so sample() takes no labels; "
                "sample without labels=, or use a model trained conditionally"
            )
        labels = torch.as_tensor(labels, device=self.device)
        if labels.dim() != 1 or labels.shape[0] != n or labels.is_floating_point():
            raise ConfigError(f"labels must be {n} integers (one per image), got "
                              f"{labels.dtype} {tuple(labels.shape)}")
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


def from_checkpoint_dict(
    ckpt: dict, source: str = "checkpoint", expect: type | None = None
) -> GenerativeModel:
    """Rebuild a model from ``checkpoint_dict()`` output, checking every part."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{source} is not a zoo model checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{source} has checkpoint version {ckpt.get('version')}; "
            f"this zoo reads version {CHECKPOINT_VERSION}"
        )
    module_name, _, qualname = str(ckpt.get("class", "")).partition(":")
    if not module_name.startswith("zoo.models."):
        raise CheckpointError(f"{source} names class {ckpt.get('class')!r}, not a zoo model")
    try:
        model_cls = getattr(importlib.import_module(module_name), qualname)
    except (ImportError, AttributeError):
        raise CheckpointError(
            f"{source} was written for {ckpt['class']}, which this zoo does not have"
        ) from None
    if expect is not None and expect is not GenerativeModel and not issubclass(model_cls, expect):
        raise CheckpointError(f"{source} holds a {qualname}, not a {expect.__qualname__}")
    try:
        config = config_from_dict(model_cls.Config, json.loads(ckpt["config"]))
        model = model_cls(config, tuple(ckpt["image_shape"]))
    except (ConfigError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source} has an invalid config: {e}") from None
    model.name = ckpt.get("name", model.name)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(
            f"{source} does not match its model's weights: {first_line(e)}") from None
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

"""A self-supervised feature extractor for unlabelled images (``<data>-ssl``), and
``make``: what ``zoo extractor DATA`` runs (a classifier where the data has labels, this
encoder where it has none or ``unlabelled`` is asked for), cached by the content hash of
the training split so that ``zoo eval``, ``zoo bench`` and the harness find it.

The objective is SimCLR's NT-Xent (Chen et al. 2020): two augmented views of each image,
pulled together against the other 2B - 2 views of the batch. Chosen over BYOL (a second,
momentum network: twice the forward passes on a CPU budget) and VICReg (its variance and
covariance terms want a wide expander, 2048+ units, to work): NT-Xent trains a small
encoder well at batch 128 with a 64-unit projector, needs one network, and its loss has
a reference point (log(2B - 1) when the views are not told apart at all).

The augmentations suit 28x28 and 32x32 images, made in one batched affine resampling
and a per-image colour matrix (fast on a CPU, seeded): a random resized crop (35-100% of
the area, aspect 3/4-4/3) moved by up to ``shift`` pixels more, mirror flips only where
they keep the content (off for digits; ``hflip`` for yours), for RGB colour jitter
(brightness, contrast, saturation, hue as a rotation in YIQ) and 20% grayscale, for
grayscale brightness and contrast, and Gaussian noise. Colour and crop are the two that
matter most for SimCLR; without colour jitter a network tells views apart by their colour
histogram alone.

The encoder is ``features.ClassifierNet`` without a head (``num_classes=0``), so its file
and card load through the classifiers' machinery; its ``features`` layer (the pooled
representation, before the projector, which is thrown away) feeds FID, KID,
precision/recall, density/coverage and memorization. It has no class logits, so IS and the
class metrics are refused with it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import data as zdata
from ..core import ConfigError, DataError, atomic_write
from ..progress import Progress
from . import extractor_training as et
from .features import (
    ClassifierConfig,
    ClassifierNet,
    cached_extractor,
    extractor_cache,
    save_bytes,
    write_extractor,
)

OBJECTIVE = "simclr-nt-xent"


@dataclasses.dataclass
class SSLOptions:
    steps: int = 600
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.2
    projection_dim: int = 64
    min_scale: float = 0.35  # the smallest crop, as a share of the image's area
    shift: int = 2
    noise: float = 0.05  # the largest standard deviation of the added noise, in [0, 1] units
    hflip: bool | None = None  # None: on unless the dataset is in et.NO_FLIP
    seed: int = 0
    threads: int = 0  # 0: torch's default
    device: str = "cpu"
    bf16: bool = True
    channels: tuple[int, ...] = (32, 64, 128)
    feature_dim: int = 128
    limit: int | None = None  # the first N training images only (smoke tests)


def check(opts: SSLOptions) -> None:
    """Refuse options that cannot train (a ConfigError naming the option)."""
    if opts.steps < 1 or opts.batch_size < 2:
        raise ConfigError("--steps must be >= 1 and --batch-size >= 2 (each image's other "
                          "view is told apart from the rest of the batch)")
    if not (0 < opts.lr < math.inf and 0 < opts.temperature < math.inf):
        raise ConfigError("--lr and --temperature must be positive numbers")
    if not 0 < opts.min_scale <= 1:
        raise ConfigError(f"--min-scale must be in (0, 1], got {opts.min_scale}")
    if opts.limit is not None and opts.limit < 2:
        raise ConfigError("--limit must be >= 2")
    if not opts.channels or min(opts.channels) < 1 or opts.feature_dim < 1:
        raise ConfigError("--channels and --feature-dim must be positive")


# -- augmentations -------------------------------------------------------------------------------

_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _crops(n: int, h: int, w: int, opts: SSLOptions, hflip: bool, gen) -> Tensor:
    """[n, 2, 3] affine matrices (output -> input coordinates in [-1, 1]) of random resized
    crops, shifted by up to ``opts.shift`` pixels more and mirrored where allowed."""
    area = _uniform(n, opts.min_scale, 1.0, gen)
    ratio = torch.exp(_uniform(n, math.log(3 / 4), math.log(4 / 3), gen))
    sx, sy = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)
    tx = (1 - sx + 2 * opts.shift / w) * _uniform(n, -1, 1, gen)
    ty = (1 - sy + 2 * opts.shift / h) * _uniform(n, -1, 1, gen)
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0) if hflip else 1.0
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sx * flip, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy, ty
    return theta


def _colour(n: int, gen: torch.Generator) -> Tensor:
    """[n, 3, 3] colour matrices: saturation and hue jitter (in YIQ) on 80% of the images,
    grayscale on 20%."""
    sat = torch.where(torch.rand(n, generator=gen) < 0.8, _uniform(n, 0.6, 1.4, gen),
                      torch.ones(n))
    sat = torch.where(torch.rand(n, generator=gen) < 0.2, torch.zeros(n), sat)
    hue = _uniform(n, -0.1, 0.1, gen) * 2 * math.pi
    cos, sin = torch.cos(hue) * sat, torch.sin(hue) * sat
    m = torch.zeros(n, 3, 3)
    m[:, 0, 0] = 1
    m[:, 1, 1], m[:, 1, 2], m[:, 2, 1], m[:, 2, 2] = cos, -sin, sin, cos
    return torch.linalg.inv(_YIQ) @ m @ _YIQ


def augment(x: Tensor, opts: SSLOptions, hflip: bool, gen: torch.Generator) -> Tensor:
    """One random view of each uint8 image, as float in [-1, 1] (the encoder's input)."""
    n, c, h, w = x.shape
    x = x.float() / 255
    grid = F.affine_grid(_crops(n, h, w, opts, hflip, gen).to(x.device), [n, c, h, w],
                         align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if c == 3:
        x = torch.einsum("nij,njhw->nihw", _colour(n, gen).to(x.device), x)
    bright = _uniform(n, 0.6, 1.4, gen).to(x.device)[:, None, None, None]
    contrast = _uniform(n, 0.6, 1.4, gen).to(x.device)[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean * bright
    sigma = _uniform(n, 0, opts.noise, gen).to(x.device)[:, None, None, None]
    x = x + sigma * torch.randn(x.shape, generator=gen).to(x.device)
    return (x.clamp(0, 1) * 2 - 1).contiguous(memory_format=torch.channels_last)


# -- the objective -------------------------------------------------------------------------------


def nt_xent(z: Tensor, temperature: float) -> Tensor:
    """SimCLR's loss of ``z`` [2B, D], rows i and i + B the two views of one image."""
    z = F.normalize(z.float(), dim=1)
    b = z.shape[0] // 2
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(-math.inf)
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(sim, target)


class _Projector(nn.Sequential):
    def __init__(self, d_in: int, d_out: int):
        super().__init__(nn.Linear(d_in, d_in), nn.ReLU(inplace=True), nn.Linear(d_in, d_out))


def train(dataset, opts: SSLOptions, out: Path, root: str | None = None) -> dict:
    """Train one encoder on the training split's images (labels ignored) and write its
    weights and card to ``out``; returns the card."""
    with et.deterministic(opts.threads):
        return _train(dataset, opts, out, root)


def _train(dataset, opts: SSLOptions, out: Path, root: str | None) -> dict:
    torch.manual_seed(opts.seed)
    device = torch.device(opts.device)
    ds = zdata.spec(dataset)
    hflip = ds.name not in et.NO_FLIP if opts.hflip is None else opts.hflip
    images = zdata.load(ds, "train", root=root)[0]
    data_sha256 = zdata.content_hash(ds, "train", root)
    if opts.limit is not None:
        images = images[:opts.limit]
    if len(images) < 2:
        raise DataError(f"{ds}: {len(images)} training image(s); self-supervised training "
                        "needs at least 2")
    config = ClassifierConfig(in_channels=images.shape[1], num_classes=0,
                              channels=tuple(opts.channels), feature_dim=opts.feature_dim)
    net = ClassifierNet(config).to(device, memory_format=torch.channels_last)
    start = time.perf_counter()
    loss = _fit(net, images, opts, hflip, device, ds.name)
    seconds = time.perf_counter() - start
    blob = save_bytes(net.state_dict())
    name = f"{ds.name}-ssl"
    card = {
        "name": name, "kind": "ssl", "dataset": str(ds), "dataset_sha256": data_sha256,
        "image_shape": list(images.shape[1:]),
        "config": {**dataclasses.asdict(config), "channels": list(config.channels)},
        "objective": OBJECTIVE, "steps": opts.steps, "seed": opts.seed,
        "final_loss": round(loss, 5), "chance_loss": round(math.log(2 * opts.batch_size - 1), 5),
        "train_images": len(images),
        "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob),
        "parameters": sum(p.numel() for p in net.parameters()),
        "train": {**dataclasses.asdict(opts), "channels": list(opts.channels), "hflip": hflip,
                  "threads": torch.get_num_threads(), "seconds": round(seconds, 1)},
        "torch": torch.__version__, "machine": platform.machine(), "command": "zoo extractor",
    }
    write_extractor(out, name, blob, card)
    print(f"{name}: {OBJECTIVE} loss {loss:.4f} after {opts.steps} steps (chance "
          f"{card['chance_loss']:.2f}), sha256 {card['sha256'][:12]}, {seconds:.0f} s -> "
          f"{out / name}.pt", file=sys.stderr)
    return card


def _fit(net: ClassifierNet, images: Tensor, opts: SSLOptions, hflip: bool, device,
         what: str) -> float:
    """AdamW under a cosine schedule with warm-up, ``opts.steps`` batches of two views each
    (seeded order); returns the mean loss of the last 10% of the steps."""
    proj = _Projector(net.config.feature_dim, opts.projection_dim).to(device)
    params = [*net.parameters(), *proj.parameters()]
    opt = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    warm = max(1, opts.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5
                                              * (1 + math.cos(math.pi * s / opts.steps)))
    gen = torch.Generator().manual_seed(opts.seed)
    batch = min(opts.batch_size, len(images))
    tail = max(1, opts.steps // 10)
    losses = torch.zeros(opts.steps, device=device)  # kept on the device: no sync per step
    net.train()
    perm, at = torch.randperm(len(images), generator=gen), 0
    with Progress(f"{what} {OBJECTIVE}", total=opts.steps, unit="step") as bar:
        for step in range(opts.steps):
            if at + batch > len(images):
                perm, at = torch.randperm(len(images), generator=gen), 0
            x = images[perm[at:at + batch]].to(device)
            at += batch
            views = torch.cat([augment(x, opts, hflip, gen), augment(x, opts, hflip, gen)])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts.bf16):
                z = proj(net(views)[0])
            loss = nt_xent(z, opts.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses[step] = loss.detach()
            bar.update()
            if (step + 1) % 50 == 0:
                bar.note(loss=f"{losses[step + 1 - 50:step + 1].mean().item():.3f}")
    net.eval()
    return losses[-tail:].mean().item()


# -- zoo extractor DATA --------------------------------------------------------------------------


def has_labels(dataset, root: str | None = None) -> bool:
    """Whether every image of the training split has a class (and there are two or more)."""
    y = zdata.load(dataset, "train", root=root)[1]
    return y.numel() > 0 and int(y.min()) >= 0 and int(y.max()) >= 1


def make(dataset, out: Path | None = None, *, unlabelled: bool = False,
         ssl: SSLOptions | None = None, classifier: et.TrainOptions | None = None,
         root: str | None = None) -> tuple[dict, Path]:
    """The extractor of ``dataset``: its classifier where it has labels (and not
    ``unlabelled``), else a self-supervised encoder; written to ``out`` (None: the cache
    only) and registered in the cache under the training split's content hash, replacing
    what was made for the same data before. Returns (card, weights in the cache)."""
    ds = zdata.spec(dataset)
    key = zdata.content_hash(ds, "train", root)
    cache = extractor_cache() / key
    target = out if out is not None else cache
    if unlabelled or not has_labels(ds, root):
        card = train(ds, ssl or SSLOptions(), target, root)
    else:
        card = et.train(str(ds), classifier or et.TrainOptions(), target, root)
    name = card["name"]
    if target != cache:
        cache.mkdir(parents=True, exist_ok=True)
        for suffix in (".pt", ".json"):
            atomic_write(cache / f"{name}{suffix}",
                         lambda tmp, s=suffix: shutil.copyfile(target / f"{name}{s}", tmp))
    for old in cache.iterdir():  # one extractor per data: the newest made
        if old.suffix in (".pt", ".json") and old.stem != name:
            old.unlink(missing_ok=True)
    return card, cache / f"{name}.pt"


def ensure(dataset, root: str | None = None) -> Path:
    """The cached extractor of ``dataset``, made now with the defaults when there is none
    (``--extractor auto``)."""
    found = cached_extractor(dataset, root)
    if found is not None:
        return found
    print(f"zoo.metrics: no extractor was made for {zdata.spec(dataset)}; making one "
          "(zoo extractor DATA)", file=sys.stderr)
    return make(dataset, root=root)[1]

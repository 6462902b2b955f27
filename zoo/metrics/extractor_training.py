"""Train a metrics classifier (``<dataset>-classifier``), the extractor zoo ships for
FID/KID/IS/PR on MNIST and Fashion-MNIST, and what ``zoo extractor DATA`` makes for
labelled data (unlabelled data gets a self-supervised encoder, ``zoo.metrics.ssl``).

    zoo extractor ./my_images --out extractors
    zoo extractor train --dataset mnist --dataset fashion-mnist --out zoo/metrics/weights

For each dataset: train ``zoo.metrics.features.ClassifierNet`` on the train split
(deterministic: fixed seed, deterministic algorithms, fixed thread count; bf16 autocast,
channels-last), measure the test accuracy in float32, and write
``<out>/<dataset>-classifier.pt`` (the state dict) and ``<dataset>-classifier.json``
(architecture, accuracy, training options, sha256 of the weights). Works for any
labelled dataset ``zoo.data.load`` returns, any channel count or image size: a built-in
name, or your own folder with one subfolder per class (or a .npz with labels), with
options as in ``path?size=32``; its classifier is ``<folder name>-classifier``, used by
``zoo eval RUN --extractor DIR/<folder name>-classifier.pt`` (or found without the flag in
the cache ``zoo extractor`` also writes). Mirror flips are used except
for datasets whose classes they change (digits; ``hflip=False`` for yours if so).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import data as zdata
from ..core import ConfigError, DataError
from .features import ClassifierConfig, ClassifierNet, save_bytes, write_extractor

#: datasets whose labels a mirror image changes
NO_FLIP = {"mnist"}


@dataclasses.dataclass
class TrainOptions:
    epochs: int = 6
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    shift: int = 2
    hflip: bool | None = None  # None: on unless the dataset is in NO_FLIP
    seed: int = 0
    threads: int = 0  # 0: torch's default
    device: str = "cpu"
    bf16: bool = True  # bf16 autocast for training (2.4x faster on an avx512_bf16 CPU)
    channels: tuple[int, ...] = (32, 64, 128)
    feature_dim: int = 128
    limit: int | None = None  # the first N images of each split only (smoke tests)


def augment(x: torch.Tensor, shift: int, hflip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random integer translations of up to ``shift`` pixels (zero fill) and mirror flips."""
    n, _, h, w = x.shape
    if shift:
        padded = F.pad(x, (shift, shift, shift, shift))
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
        rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)
        cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)
        idx = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if hflip:
        flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)[:, None, None, None]
        x = torch.where(flip, x.flip(-1), x)
    return x


@torch.no_grad()
def accuracy(net: ClassifierNet, images: torch.Tensor, labels: torch.Tensor, device) -> float:
    net.eval()
    correct = 0
    for start in range(0, len(images), 1000):
        x = images[start:start + 1000].to(device)
        correct += (net(x)[1].argmax(1).cpu() == labels[start:start + 1000]).sum().item()
    return correct / len(images)


@contextlib.contextmanager
def deterministic(threads: int | None = None):
    """Deterministic algorithms (and ``threads`` torch threads, when given) for the block;
    both restored after it: an extractor's training is the same for a seed."""
    before, n = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    try:
        torch.use_deterministic_algorithms(True)
        if threads:
            torch.set_num_threads(threads)
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        torch.set_num_threads(n)


def train(dataset: str, opts: TrainOptions, out: Path, root: str | None = None) -> dict:
    """Train one classifier and write its weights and card; returns the card."""
    with deterministic(opts.threads):
        return _train(dataset, opts, out, root)


def _train(dataset: str, opts: TrainOptions, out: Path, root: str | None) -> dict:
    torch.manual_seed(opts.seed)
    device = torch.device(opts.device)
    ds = zdata.spec(dataset)
    hflip = ds.name not in NO_FLIP if opts.hflip is None else opts.hflip
    (x_train, y_train), (x_test, y_test), own_sha256, num_classes = _labelled(ds, opts, root)
    config = ClassifierConfig(in_channels=x_train.shape[1], num_classes=num_classes,
                              channels=tuple(opts.channels), feature_dim=opts.feature_dim)
    net = ClassifierNet(config).to(device, memory_format=torch.channels_last)
    start = time.perf_counter()
    _fit(net, dataset, opts, hflip, (x_train, y_train), (x_test, y_test), device)
    seconds = time.perf_counter() - start
    acc = accuracy(net, x_test, y_test, device)
    blob = save_bytes(net.state_dict())
    name = f"{ds.name}-classifier"
    card = {
        "name": name,
        "dataset": str(ds),
        **({"dataset_sha256": own_sha256} if own_sha256 else {}),
        "image_shape": list(x_train.shape[1:]),
        "config": {**dataclasses.asdict(config), "channels": list(config.channels)},
        "test_accuracy": round(acc, 5),
        "test_images": len(x_test),
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
        "parameters": sum(p.numel() for p in net.parameters()),
        "train": {**dataclasses.asdict(opts), "channels": list(opts.channels), "hflip": hflip,
                  "threads": torch.get_num_threads(), "seconds": round(seconds, 1)},
        "torch": torch.__version__,
        "machine": platform.machine(),
        "kind": "classifier",
        "command": "zoo extractor",
    }
    write_extractor(out, name, blob, card)
    print(f"{name}: test accuracy {acc:.4f}, {len(blob) / 1024:.0f} KiB, sha256 "
          f"{card['sha256']}, {seconds:.0f} s -> {out / name}.pt", file=sys.stderr)
    return card


def _labelled(ds, opts: TrainOptions, root: str | None):
    """The train and test splits (each ``(images, labels)``, cut to ``opts.limit``), the
    sha256 of an own dataset's training split (None for a built-in one) and the number of
    classes; a DataError where there are no labels or fewer than two classes."""
    x_train, y_train = zdata.load(ds, "train", root=root)
    x_test, y_test = zdata.load(ds, "test", root=root)
    if min(int(y_train.min()), int(y_test.min())) < 0:
        raise DataError(
            f"{ds}: its images have no labels, and a classifier needs them. Put the images in "
            "one subfolder per class (the folder names are the classes), or save the labels "
            "with the images: numpy.savez(path, images=..., labels=...)"
        )
    own_sha256 = None if ds.builtin else zdata.tensor_sha256(x_train, y_train)
    if opts.limit is not None:
        x_train, y_train = x_train[:opts.limit], y_train[:opts.limit]
        x_test, y_test = x_test[:opts.limit], y_test[:opts.limit]
    num_classes = zdata.dataset_info(ds.source).num_classes if ds.builtin else \
        max(int(y_train.max()), int(y_test.max())) + 1
    if num_classes < 2:
        raise DataError(f"{ds}: a classifier needs at least 2 classes, the labels have "
                         f"{num_classes}")
    return (x_train, y_train), (x_test, y_test), own_sha256, num_classes


def _fit(net, dataset: str, opts: TrainOptions, hflip: bool, train, test, device) -> None:
    """SGD with Nesterov momentum under a one-cycle schedule, ``opts.epochs`` passes over
    ``train`` in seeded order; the loss and the test accuracy printed after each epoch."""
    (x_train, y_train), (x_test, y_test) = train, test
    steps_per_epoch = len(x_train) // opts.batch_size
    if steps_per_epoch < 1:
        raise DataError(f"{dataset}: {len(x_train)} training images is less than one batch "
                        f"of {opts.batch_size} (--batch-size)")
    opt = torch.optim.SGD(net.parameters(), lr=opts.lr, momentum=0.9, nesterov=True,
                          weight_decay=opts.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=opts.lr, total_steps=steps_per_epoch * opts.epochs, pct_start=0.15)
    gen = torch.Generator().manual_seed(opts.seed)
    start = time.perf_counter()
    for epoch in range(opts.epochs):
        net.train()
        perm = torch.randperm(len(x_train), generator=gen)
        loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
        for i in range(steps_per_epoch):
            idx = perm[i * opts.batch_size:(i + 1) * opts.batch_size]
            x = augment(x_train[idx].to(device), opts.shift, hflip, gen)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts.bf16):
                logits = net(x)[1]
            loss = F.cross_entropy(logits.float(), y_train[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach()
        acc = accuracy(net, x_test, y_test, device)
        print(f"{dataset} epoch {epoch + 1}/{opts.epochs}: loss "
              f"{loss_sum.item() / steps_per_epoch:.4f} test accuracy {acc:.4f} "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)


def check(opts: TrainOptions) -> None:
    """Refuse options that cannot train (a ConfigError naming the option)."""
    if opts.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {opts.epochs}")
    if not (opts.lr > 0 and opts.lr < float("inf")):
        raise ConfigError(f"--lr must be a positive number, got {opts.lr}")
    if opts.batch_size < 1 or opts.limit is not None and opts.limit < 1:
        raise ConfigError("--batch-size and --limit must be >= 1")
    if not opts.channels or min(opts.channels) < 1 or opts.feature_dim < 1:
        raise ConfigError("--channels and --feature-dim must be positive")

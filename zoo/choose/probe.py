"""A preset's speed on the device, measured before the plan: a few training steps and one
small batch of samples from a freshly built model (``plan.Probe``)."""

from __future__ import annotations

import time

import torch

from .. import data as zdata
from .. import registry
from ..bench import timing
from ..errors import TrainingDiverged, ZooError
from .plan import Probe
from .presets import Preset

#: timed training steps after the first, and images sampled
STEPS = 2
IMAGES = 32  # a batch as large as the evaluation's makes sampling cheaper per image


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fresh(preset: Preset, dataset, images, labels, device):
    torch.manual_seed(0)
    model = registry.create(preset.model, dataset=dataset, **preset.config).place(device)
    batches = zdata.BatchIterator(images, preset.batch_size, seed=0, device=device,
                                  labels=labels if model.conditional else None)
    return model, batches


def train_flops(preset: Preset, dataset, images: torch.Tensor, labels,
                device: torch.device) -> float | None:
    """The counted training FLOPs per image of a fresh model of ``preset``."""
    model, batches = _fresh(preset, dataset, images, labels, device)
    return timing.train_flops_per_image(model, next(iter(batches)))


def probe(preset: Preset, dataset, images: torch.Tensor, labels, device: torch.device,
          flops: float | None = None) -> Probe:
    """Time ``STEPS`` training steps (after a first, timed apart) and ``IMAGES`` samples with
    the default sampler of a fresh model of ``preset`` on ``device``; ``flops``: its
    training FLOPs per image, when counted (``train_flops``)."""
    model, batches = _fresh(preset, dataset, images, labels, device)
    model.train()
    optimizers = model.configure_optimizers()
    model.attach_training(noise_generator=torch.Generator(device).manual_seed(0))
    it = iter(batches)
    times = []
    try:  # a diverging candidate is timed on the steps it made: the tournament stops it
        for _ in range(1 + STEPS):
            t = time.perf_counter()
            model.train_step(next(it), optimizers)
            _sync(device)
            times.append(time.perf_counter() - t)
    except TrainingDiverged:
        times.append(time.perf_counter() - t)
    first, rest = times[0], times[1:] or times
    model.eval()
    gen = torch.Generator(device).manual_seed(0)
    kwargs = {"labels": torch.zeros(IMAGES, dtype=torch.long)} if model.conditional else {}
    t3 = time.perf_counter()
    try:
        with torch.no_grad():
            model.sample(IMAGES, generator=gen, **kwargs)
        _sync(device)
        image_seconds = (time.perf_counter() - t3) / IMAGES
    except ZooError:  # a diverged model's samples are not finite: it is stopped anyway
        image_seconds = 0.0
    return Probe(step_seconds=sum(rest) / len(rest), image_seconds=image_seconds,
                 first_step_seconds=first, flops_per_image=flops)

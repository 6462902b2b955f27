"""Micro-benchmarks: one training step and one sampling call per family at fixed sizes.

    pytest benchmarks/test_micro.py --benchmark-enable --benchmark-autosave
    pytest benchmarks/test_micro.py --benchmark-enable --benchmark-compare   # against the last

The test suite runs each once, untimed (``--benchmark-disable`` in pyproject.toml), and
checks the output. Sizes are the models' defaults on MNIST shapes (28x28x1) with the batch
sizes below; the images are random uint8 so no dataset is read.
"""

from __future__ import annotations

import pytest
import torch

import zoo

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# (model, train batch, sample batch, sampler options)
CASES = [
    ("vae-conv", 128, 64, {}),
    ("gan-dcgan", 64, 64, {}),
    ("ar-transformer", 16, 2, {"temperature": 1.0}),
    ("ddpm", 32, 8, {"sampler": "ddim", "steps": 10, "eta": 0.0}),
]
IDS = [c[0] for c in CASES]


def _model(name: str, device: str):
    torch.manual_seed(0)
    return zoo.create(name, dataset="mnist").to(device)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, train_batch, sample_batch, options", CASES, ids=IDS)
def test_train_step(benchmark, name, train_batch, sample_batch, options, device):
    model = _model(name, device)
    model.train()
    optimizers = model.configure_optimizers()
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (train_batch, 1, 28, 28), generator=gen,
                      dtype=torch.uint8).to(device)

    def step() -> dict:
        losses = model.train_step(x, optimizers)
        _sync(device)
        return losses

    losses = benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    assert losses and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    benchmark.extra_info.update({"model": name, "batch_size": train_batch, "device": device,
                                 "params": model.num_parameters()})


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, train_batch, sample_batch, options", CASES, ids=IDS)
def test_sample_call(benchmark, name, train_batch, sample_batch, options, device):
    model = _model(name, device)
    model.eval()
    gen = torch.Generator(device=device).manual_seed(0)

    def sample() -> torch.Tensor:
        out = model.sample(sample_batch, generator=gen, **options)
        _sync(device)
        return out

    out = benchmark.pedantic(sample, rounds=3, warmup_rounds=1)
    assert out.shape == (sample_batch, 1, 28, 28) and out.dtype == torch.uint8
    benchmark.extra_info.update({"model": name, "batch_size": sample_batch, "device": device,
                                 "options": options, "params": model.num_parameters()})

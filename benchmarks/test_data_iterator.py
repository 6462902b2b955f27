"""Throughput of ``BatchIterator`` on MNIST train at batch 128 (images/s in extra_info)."""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from zoo import data

BATCH = 128
BATCHES_PER_ROUND = 200
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_batch_iterator_throughput(benchmark, device):
    images, labels = data.load("mnist", "train")
    it = iter(data.BatchIterator(images, BATCH, seed=0, device=device, labels=labels))
    seconds: list[float] = []

    def take_batches() -> torch.Tensor:
        start = time.perf_counter()
        for _ in range(BATCHES_PER_ROUND):
            x, _ = next(it)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        return x

    last = benchmark.pedantic(take_batches, rounds=20, warmup_rounds=2)
    assert last.shape == (BATCH, 1, 28, 28) and last.dtype == torch.uint8
    per_round = statistics.median(seconds[2:] or seconds)
    benchmark.extra_info.update({
        "device": device,
        "batch_size": BATCH,
        "batches_per_round": BATCHES_PER_ROUND,
        "images_per_s": round(BATCH * BATCHES_PER_ROUND / per_round),
    })

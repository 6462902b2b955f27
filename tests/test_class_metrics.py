"""Per-class metrics (class_accuracy, intra_fid, class_tv) and ``zoo sample --labels``,
measured on stand-in conditional models that return real MNIST training images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from zoo import data as zdata
from zoo.core import ConfigError, GenerativeModel
from zoo.metrics import classes, evaluate, registry
from zoo.metrics.fidelity import balanced_labels, compute_metrics
from zoo.metrics.features import resolve_extractor

pytestmark = pytest.mark.usefixtures("mnist_available")


@dataclass
class _Config:
    conditional: bool = True
    num_classes: int = 10
    ignore_labels: bool = False


class RealImages(GenerativeModel):
    """A stand-in conditional model: ``sample(n, labels=...)`` returns MNIST training
    images of the requested classes (or, with ``ignore_labels``, of any class)."""

    family = "realimages"
    Config = _Config

    def __init__(self, config=None):
        super().__init__(config or _Config(), (1, 28, 28))
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.images, self.labels = zdata.load("mnist", "train")

    def sample(self, n, *, generator=None, labels=None, **options):
        labels = self.check_labels(labels, n).cpu() if self.conditional else None
        if labels is None or self.config.ignore_labels:
            pick = torch.randint(0, self.images.shape[0], (n,), generator=generator)
        else:
            pick = torch.empty(n, dtype=torch.long)
            for c in labels.unique():
                pool = (self.labels == c).nonzero().flatten()
                where = (labels == c).nonzero().flatten()
                pick[where] = pool[torch.randint(0, pool.numel(), (where.numel(),),
                                                 generator=generator)]
        return self.images[pick].clone()


@pytest.fixture(scope="module")
def mnist_available():
    try:
        zdata.load("mnist", "test")
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"MNIST not available: {e}")



"""uint8 image batches to PNG grids."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image

from .core import ConfigError, atomic_write


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """Tile uint8 ``[N, C, H, W]`` into one uint8 ``[C, H', W']`` image with a gray border."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ConfigError(
            f"a grid takes uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
        )
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / nrow))
    grid = torch.full(
        (c, rows * (h + padding) + padding, nrow * (w + padding) + padding), 128, dtype=torch.uint8
    )
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, y:y + h, x:x + w] = images[i]
    return grid


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 1):
    """Write a PNG grid of uint8 images (``scale`` enlarges small images, nearest-neighbour)."""
    grid = make_grid(images.detach().cpu(), nrow)
    array = grid.permute(1, 2, 0).numpy()
    img = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
    return path

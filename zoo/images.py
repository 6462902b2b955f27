"""uint8 image batches to PNG grids."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image

from .core import ConfigError, atomic_write
from .options import check_range

#: the most images one grid shows (64 x 64)
MAX_GRID_IMAGES = 4096
#: the largest enlargement of a grid
MAX_SCALE = 64
#: the most pixels of a grid PNG: Pillow's decompression-bomb limit, so it opens without a
#: warning in Pillow and in the viewers built on it
MAX_GRID_PIXELS = 89_478_485


def grid_size(n: int, height: int, width: int, nrow: int | None = None, scale: int = 1,
              padding: int = 2) -> tuple[int, int]:
    """(height, width) in pixels of the grid PNG of ``n`` images, refused with a ConfigError
    past ``MAX_GRID_IMAGES`` images, ``MAX_SCALE`` or ``MAX_GRID_PIXELS`` pixels."""
    check_range(n, "the number of grid images", least=0, most=MAX_GRID_IMAGES)
    if nrow is not None:
        check_range(nrow, "nrow (images per grid row)", least=1)
    check_range(scale, "scale", least=1, most=MAX_SCALE)
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / nrow))
    size = ((rows * (height + padding) + padding) * scale,
            (nrow * (width + padding) + padding) * scale)
    if size[0] * size[1] > MAX_GRID_PIXELS:
        raise ConfigError(
            f"a grid of {n} images of {height}x{width} in rows of {nrow} at scale {scale} "
            f"would be {size[1]}x{size[0]} pixels, more than {MAX_GRID_PIXELS:,}; lower "
            "--scale or --nrow, or show fewer images")
    return size


#: the fewest pixels an image of a grid spans after ``legible_scale``
LEGIBLE_PIXELS = 28
#: the enlargement of grids of images already that large
DEFAULT_SCALE = 2


def legible_scale(height: int, width: int, n: int = 1, nrow: int | None = None) -> int:
    """The grid enlargement that makes each image at least ``LEGIBLE_PIXELS`` wide and high
    (nearest-neighbour; ``DEFAULT_SCALE`` for images that are already), lowered where the
    grid of ``n`` images would pass ``MAX_GRID_PIXELS``: 8x8 images are drawn 4x (32 px)."""
    scale = min(MAX_SCALE, max(DEFAULT_SCALE, math.ceil(LEGIBLE_PIXELS / min(height, width))))
    nrow = nrow or max(1, math.ceil(math.sqrt(max(n, 1))))
    rows = max(1, math.ceil(n / nrow))
    while scale > 1 and ((rows * (height + 2) + 2) * scale) * (
            (nrow * (width + 2) + 2) * scale) > MAX_GRID_PIXELS:
        scale -= 1
    return scale


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """Tile uint8 ``[N, C, H, W]`` into one uint8 ``[C, H', W']`` image with a gray border."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ConfigError(
            f"a grid takes uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
        )
    n, c, h, w = images.shape
    grid_size(n, h, w, nrow, 1, padding)
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
    if images.dim() == 4:
        grid_size(images.shape[0], images.shape[2], images.shape[3], nrow, scale)
    grid = make_grid(images.detach().cpu(), nrow)
    array = grid.permute(1, 2, 0).numpy()
    img = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
    return path


#: the text of a row label, in pixels of the saved (scaled) grid
LABEL_FONT_SIZE = 14


#: the widest row label, in multiples of its font size (about 20 characters); longer ones
#: (a long folder name) are cut to fit and end in an ellipsis
LABEL_MAX_EMS = 10


def fit_label(text, font, max_width: float) -> str:
    """``text`` on one line (runs of whitespace, newlines too, as one space), cut to at most
    ``max_width`` pixels in ``font`` with a trailing ellipsis when it is longer."""
    from PIL import ImageFont

    text, dots = " ".join(str(text).split()), "\u2026"
    if not isinstance(font, ImageFont.FreeTypeFont):  # the bitmap font: Latin-1 alone
        text, dots = text.encode("latin-1", "replace").decode("latin-1"), "..."
    if font.getlength(text) <= max_width:
        return text
    while text and font.getlength(text.rstrip() + dots) > max_width:
        text = text[:-1]
    return text.rstrip() + dots


def _font(size: int):
    from PIL import ImageFont

    try:  # Pillow >= 10.1 with FreeType: a scalable font; else the fixed bitmap font
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def save_labelled_grid(images: torch.Tensor, row_labels: list[str], path: str | Path,
                       nrow: int, scale: int = 1, font_size: int = LABEL_FONT_SIZE) -> Path:
    """A PNG grid with one row per entry of ``row_labels``, each row's label written left of
    it (black on white): ``images`` are ``len(row_labels) * nrow`` uint8 images, row by row.
    A label wider than ``LABEL_MAX_EMS`` font sizes is cut to fit (``fit_label``). The grid
    itself is ``save_grid``'s, pixel for pixel, to the right of a label column."""
    from PIL import ImageDraw

    n = images.shape[0]
    if images.dim() != 4 or n != len(row_labels) * nrow:
        raise ConfigError(f"a labelled grid of {len(row_labels)} rows of {nrow} takes "
                          f"{len(row_labels) * nrow} images, got {tuple(images.shape)}")
    grid_size(n, images.shape[2], images.shape[3], nrow, scale)
    grid = make_grid(images.detach().cpu(), nrow)
    array = grid.permute(1, 2, 0).numpy()
    img = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    row_h = (images.shape[2] + 2) * scale
    size = min(font_size, max(8, row_h - 4))
    font = _font(size)
    row_labels = [fit_label(t, font, LABEL_MAX_EMS * size) for t in row_labels]
    widths = [font.getbbox(t)[2] for t in row_labels]
    margin = max(widths, default=0) + 8
    out = Image.new(img.mode, (img.width + margin, img.height),
                    255 if img.mode == "L" else (255, 255, 255))
    out.paste(img, (margin, 0))
    draw = ImageDraw.Draw(out)
    ink = 0 if img.mode == "L" else (0, 0, 0)
    for r, text in enumerate(row_labels):
        top, bottom = font.getbbox(text)[1::2]
        y = 2 * scale + r * row_h + (images.shape[2] * scale - (bottom + top)) // 2
        draw.text((4, y), text, fill=ink, font=font)
    path = Path(path)
    atomic_write(path, lambda tmp: out.save(tmp, format="PNG"))
    return path

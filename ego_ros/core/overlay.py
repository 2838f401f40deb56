"""Seeing what was remembered: the selected patches drawn over the reference view (Fig. 3).

The token grid ``(rows, cols)`` is mapped uniformly onto the image: token ``i`` covers the
pixel block of row ``i // cols`` and column ``i % cols``, with block edges at
``round(k * H / rows)`` so every pixel belongs to exactly one token even when the image size is
not a multiple of the grid. Backends pass the grid of the image as the LLM saw it (after any
patch merging), and the image at the size they fed the vision tower (or any size with the same
aspect ratio).

Unselected patches are dimmed, selected ones keep their pixels and get a thin outline on their
border, so the memory reads at a glance and the selected content stays visible.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["OUTLINE_RGB", "draw_selection_overlay", "save_overlay"]

log = logging.getLogger(__name__)

OUTLINE_RGB = (255, 200, 0)  # amber: visible on both the dimmed and the natural image


def _edges(size: int, cells: int) -> np.ndarray:
    return np.round(np.arange(cells + 1) * size / cells).astype(np.int64)  # [cells + 1]


def draw_selection_overlay(
    image: np.ndarray,
    indices: Sequence[int],
    grid: tuple[int, int],
    alpha: float = 0.5,
    outline: tuple[int, int, int] = OUTLINE_RGB,
    thickness: int | None = None,
) -> np.ndarray:
    """Return a copy of ``image`` with the selected token patches highlighted.

    Args:
        image: ``[H, W, 3]`` uint8 RGB reference view.
        indices: selected token indices in row-major order on ``grid``.
        grid: ``(rows, cols)`` of the token grid; ``rows * cols`` must exceed every index, and
            each cell must span at least one pixel.
        alpha: how much to dim unselected patches (0 leaves them, 1 blacks them out).
        outline: RGB colour of the border drawn on each selected patch.
        thickness: border width in pixels; default about 1/16 of a patch, at least 1.

    Returns:
        ``[H, W, 3]`` uint8 RGB image. Pixels of selected patches away from their border are
        exactly the input pixels.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be [H, W, 3] uint8 RGB, got {img.dtype} {img.shape}")
    try:
        rows, cols = (int(g) for g in grid)
    except (TypeError, ValueError):
        raise ValueError(f"grid must be (rows, cols), got {grid!r}") from None
    height, width = img.shape[:2]
    if rows < 1 or cols < 1 or rows > height or cols > width:
        raise ValueError(
            f"grid {grid!r} does not fit a {height}x{width} image (need 1 <= rows <= H, "
            "1 <= cols <= W)"
        )
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    selected = np.asarray(list(indices), dtype=np.int64).reshape(-1)  # [K]
    if selected.size and (selected.min() < 0 or selected.max() >= rows * cols):
        raise ValueError(
            f"indices must lie in [0, {rows * cols}) for grid {grid!r}, got "
            f"[{selected.min()}, {selected.max()}]"
        )
    y_edges, x_edges = _edges(height, rows), _edges(width, cols)
    cell_min = int(min(np.diff(y_edges).min(), np.diff(x_edges).min()))
    border = max(1, cell_min // 16) if thickness is None else int(thickness)
    if border < 1:
        raise ValueError(f"thickness must be a positive integer, got {thickness!r}")

    keep = np.zeros(rows * cols, dtype=bool)  # [rows * cols]
    keep[selected] = True
    keep_grid = keep.reshape(rows, cols)  # [rows, cols]
    row_of_pixel = np.searchsorted(y_edges, np.arange(height), side="right") - 1  # [H]
    col_of_pixel = np.searchsorted(x_edges, np.arange(width), side="right") - 1  # [W]
    keep_pixels = keep_grid[row_of_pixel[:, None], col_of_pixel[None, :]]  # [H, W]

    dimmed = np.round(img.astype(np.float32) * (1.0 - float(alpha))).astype(np.uint8)  # [H, W, 3]
    out = np.where(keep_pixels[..., None], img, dimmed)  # [H, W, 3]
    colour = np.asarray(outline, dtype=np.uint8)  # [3]
    for idx in np.flatnonzero(keep):
        r, c = divmod(int(idx), cols)
        y0, y1, x0, x1 = y_edges[r], y_edges[r + 1], x_edges[c], x_edges[c + 1]
        b = min(border, (y1 - y0 + 1) // 2, (x1 - x0 + 1) // 2)
        out[y0 : y0 + b, x0:x1] = colour
        out[y1 - b : y1, x0:x1] = colour
        out[y0:y1, x0 : x0 + b] = colour
        out[y0:y1, x1 - b : x1] = colour
    return out


def save_overlay(path: Path | str, image: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG (OpenCV, imported here so the core needs no cv2)."""
    import cv2  # optional heavy dependency, only needed to write files

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be [H, W, 3] uint8 RGB, got {img.dtype} {img.shape}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"overlay path must end in .png, got {path}")
    if not cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write overlay image {path} (does the folder exist?)")
    log.info("wrote overlay %s", path)
    return path

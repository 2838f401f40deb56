"""The selected-patch overlay (paper Fig. 3) on real arrays and real PNG files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ego_ros.core.overlay import OUTLINE_RGB, draw_selection_overlay, save_overlay

H, W, GRID = 64, 48, (4, 3)  # 16x16-pixel patches
SELECTED = [0, 5, 11]


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(20, 256, size=(H, W, 3), dtype=np.uint8)


def _cell(idx: int, margin: int = 0) -> tuple[slice, slice]:
    r, c = divmod(idx, GRID[1])
    return (
        slice(r * 16 + margin, (r + 1) * 16 - margin),
        slice(c * 16 + margin, (c + 1) * 16 - margin),
    )


def test_overlay_keeps_selected_dims_the_rest(image: np.ndarray) -> None:
    out = draw_selection_overlay(image, SELECTED, GRID, alpha=0.5, thickness=2)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.shares_memory(out, image)
    dimmed = np.round(image.astype(np.float32) * 0.5).astype(np.uint8)
    for idx in range(GRID[0] * GRID[1]):
        inner = _cell(idx, margin=2)
        if idx in SELECTED:
            assert np.array_equal(out[inner], image[inner]), idx
            rows, cols = _cell(idx)
            assert (out[rows.start, cols] == OUTLINE_RGB).all()  # top border
            assert (out[rows.stop - 1, cols] == OUTLINE_RGB).all()  # bottom border
            assert (out[rows, cols.start + 1] == OUTLINE_RGB).all()  # left border, 2 px
        else:
            assert np.array_equal(out[_cell(idx)], dimmed[_cell(idx)]), idx


def test_overlay_alpha_zero_and_no_selection(image: np.ndarray) -> None:
    assert np.array_equal(draw_selection_overlay(image, [], GRID, alpha=0.0), image)
    black = draw_selection_overlay(image, [], GRID, alpha=1.0)
    assert not black.any()


def test_overlay_uneven_grid_covers_every_pixel() -> None:
    img = np.full((50, 37, 3), 200, dtype=np.uint8)
    out = draw_selection_overlay(img, [4], (3, 3), alpha=0.5, thickness=1)
    values = {tuple(px) for px in out.reshape(-1, 3)}
    assert values == {(200, 200, 200), (100, 100, 100), OUTLINE_RGB}
    # Patch 4 is the middle one: rows round(50/3)=17..33, cols 12..25; its inside is intact.
    assert (out[18:32, 13:24] == 200).all()
    assert (out[:16, :] != 200).all() and (out[35:, :] != 200).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"indices": [12]}, r"\[0, 12\)"),
        ({"indices": [-1]}, r"\[0, 12\)"),
        ({"grid": (0, 3)}, "grid"),
        ({"grid": (65, 3)}, "grid"),
        ({"grid": 4}, "grid"),
        ({"alpha": 1.5}, "alpha"),
        ({"thickness": 0}, "thickness"),
    ],
)
def test_overlay_rejects_bad_inputs(image: np.ndarray, kwargs, message) -> None:
    args = {"image": image, "indices": SELECTED, "grid": GRID, **kwargs}
    with pytest.raises(ValueError, match=message):
        draw_selection_overlay(**args)


@pytest.mark.parametrize(
    "bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3))]
)
def test_overlay_rejects_bad_images(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        draw_selection_overlay(bad, [0], (2, 2))


def test_save_overlay_writes_readable_png(image: np.ndarray, tmp_path: Path) -> None:
    out = draw_selection_overlay(image, SELECTED, GRID)
    path = save_overlay(tmp_path / "overlay.png", out)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert np.array_equal(cv2.cvtColor(back, cv2.COLOR_BGR2RGB), out)  # RGB kept, lossless
    with pytest.raises(ValueError, match=".png"):
        save_overlay(tmp_path / "overlay.jpg", out)
    with pytest.raises(OSError, match="missing"):
        save_overlay(tmp_path / "missing" / "overlay.png", out)

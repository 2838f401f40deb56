"""Layer selection (paper §3.4): which LLM layers' keyword attention finds the object.

Once per model, on a calibration set of (image, binary object mask) pairs:

1. the model describes the main foreground object of each image (``prompts.calibration``);
   while it decodes, the attention rows of each generated token over the image's tokens are
   captured at *every* layer (the decode-time capture ``introduce_view`` uses);
2. per layer, the importance of each visual token is Eq. 3 restricted to that one layer (mean
   over heads and keyword tokens), and its top-``K`` tokens (``K = k_ratio * N_r``) are compared
   with the tokens the mask covers: ``overlap_l = |topK_l ∩ object| / K``;
3. overlaps are averaged over the set; the best ``L`` layers are kept.

The result is written to a small JSON calibration file keyed by the model's fingerprint, so a
file made for one checkpoint is never applied to another. ``resolve_layers`` is what
introduction calls: explicit layers, else the calibration file, else the documented
mid-to-late fallback (``introduce.default_layers``).

This module takes the backend duck-typed (``ego_ros.backends.base.LVLMBackend``) and depends on
torch and numpy only; reading image files (``load_calibration_folder``) imports OpenCV lazily.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ego_ros.core.introduce import default_layers, image_prefix, keyword_attention
from ego_ros.core.memory import ModelFingerprint
from ego_ros.core.prompts import prompts_for
from ego_ros.core.selection import importance_from_attention
from ego_ros.core.store import atomic_write_bytes

__all__ = [
    "CALIBRATION_VERSION",
    "CalibrationError",
    "CalibrationResult",
    "calibrate",
    "default_calibration_path",
    "default_num_layers_keep",
    "layer_overlaps",
    "load_calibration",
    "load_calibration_folder",
    "mask_to_token_mask",
    "resolve_layers",
    "save_calibration",
    "synthetic_calibration_set",
]

log = logging.getLogger(__name__)

CALIBRATION_VERSION = 1
CACHE_ENV = "EGO_ROS_CACHE"  # same variable as the tiny-model cache (ego_ros.backends.tiny)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MASK_SUFFIX = "_mask"
MASK_DIR = "masks"
# Answer budget for the "describe the main foreground object" question: a few words.
CALIBRATION_MAX_NEW_TOKENS = 16

Sample = tuple[np.ndarray, np.ndarray]  # (RGB uint8 [H, W, 3], mask bool [H, W])


class CalibrationError(ValueError):
    """A calibration file or calibration set cannot be used; the message says what to fix."""


def default_num_layers_keep(num_layers: int) -> int:
    """How many layers calibration keeps by default: a quarter of the model's layers, at least
    one and at most 8 (7 of Qwen2.5-VL-7B's 28, 8 of a 36- or 48-layer model). A quarter
    matches the width of the mid-to-late fallback range; beyond 8 layers Eq. 3's mean only
    blurs the best layers' maps."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be positive, got {num_layers!r}")
    return min(8, max(1, round(0.25 * num_layers)))


# --------------------------------------------------------------------------------------------
# Masks and overlaps
# --------------------------------------------------------------------------------------------


def _edges(size: int, cells: int) -> np.ndarray:
    # Same uniform cell layout as ego_ros.core.overlay: edges at round(k * size / cells).
    return np.round(np.arange(cells + 1) * size / cells).astype(np.int64)  # [cells + 1]


def mask_to_token_mask(mask: np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
    """Which tokens of a ``(rows, cols)`` token grid lie on the object.

    The grid is laid uniformly over the mask (cell edges at ``round(k * H / rows)``, the layout
    the overlay uses, so a resized image maps the same way). A token is an object token when
    **at least half** of its cell's pixels are in the mask: a token mostly made of background
    describes the background, and a half threshold neither grows nor shrinks the object on
    average.

    Args:
        mask: ``[H, W]`` boolean (or 0/1, nonzero = object) array at image resolution.
        grid: ``(rows, cols)`` with ``1 <= rows <= H`` and ``1 <= cols <= W``.

    Returns:
        ``[rows * cols]`` bool tensor in row-major token order.
    """
    m = np.asarray(mask)
    if m.ndim != 2 or min(m.shape) < 1:
        raise ValueError(f"mask must be a 2-D [H, W] array, got shape {m.shape}")
    rows, cols = (int(g) for g in grid)
    height, width = m.shape
    if not (1 <= rows <= height and 1 <= cols <= width):
        raise ValueError(f"grid {grid!r} does not fit a {height}x{width} mask")
    # Integral image: the object pixel count of any cell in O(1).
    integral = np.zeros((height + 1, width + 1), dtype=np.int64)  # [H + 1, W + 1]
    integral[1:, 1:] = (m != 0).astype(np.int64).cumsum(0).cumsum(1)
    ys, xs = _edges(height, rows), _edges(width, cols)
    y0, y1 = ys[:-1, None], ys[1:, None]  # [rows, 1]
    x0, x1 = xs[None, :-1], xs[None, 1:]  # [1, cols]
    inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    area = (y1 - y0) * (x1 - x0)  # [rows, cols]
    return torch.from_numpy((2 * inside >= area).reshape(-1))  # [rows * cols]


def _capture_rows(backend, visual, max_new_tokens: int) -> dict[int, torch.Tensor]:
    """Per layer, the keyword rows of the "describe the object" answer over the image's tokens
    (``[H, N_w, N_r]``) for an encoded image ``visual``: introduction's own capture, on every
    layer."""
    state, span, (question,) = image_prefix(backend, visual,
                                            [prompts_for(backend.family).calibration])
    layers = list(range(backend.num_layers))
    return keyword_attention(backend, question, state, span, layers, max_new_tokens).rows


def _overlaps(backend, image: np.ndarray, mask: np.ndarray, k_ratio: float,
              max_new_tokens: int) -> tuple[torch.Tensor | None, int, int]:
    """``(overlaps [L] or None, object tokens, N_r)``; ``None`` (and no generation) when the
    mask covers no token or every token, since such a sample cannot rank layers."""
    if not 0.0 < k_ratio <= 1.0:
        raise ValueError(f"k_ratio must be in (0, 1], got {k_ratio!r}")
    if np.asarray(mask).shape != np.asarray(image).shape[:2]:
        raise ValueError(f"mask shape {np.asarray(mask).shape} differs from the image's "
                         f"{np.asarray(image).shape[:2]}")
    visual = backend.encode_images([image])[0]
    _, rows, cols = visual.grid
    on_object = mask_to_token_mask(mask, (rows, cols))  # [N_r]
    num_visual, num_object = rows * cols, int(on_object.sum())
    if num_object in (0, num_visual):
        return None, num_object, num_visual
    rows_per_layer = _capture_rows(backend, visual, max_new_tokens)
    k = max(1, math.floor(k_ratio * num_visual + 1e-9))
    overlaps = torch.zeros(backend.num_layers, dtype=torch.float32)  # [L]
    for layer, attn in rows_per_layer.items():
        importance = importance_from_attention([attn], torch.arange(num_visual))  # [N_r]
        top = torch.sort(importance, descending=True, stable=True).indices[:k]  # [K]
        overlaps[layer] = on_object[top].float().mean()
    return overlaps, num_object, num_visual


def layer_overlaps(backend, image: np.ndarray, mask: np.ndarray, k_ratio: float = 0.2, *,
                   max_new_tokens: int = CALIBRATION_MAX_NEW_TOKENS) -> torch.Tensor:
    """Overlap of each layer's top-``K`` tokens with the object, for one image.

    ``K = max(1, floor(k_ratio * N_r))``; a layer's top-``K`` are its ``K`` highest-importance
    tokens (Eq. 3 with that layer alone, ties to the lower index). Returns ``[num_layers]``
    float32 in ``[0, 1]``: the fraction of the top-``K`` that are object tokens
    (``mask_to_token_mask``). A mask covering no token gives zeros and one covering every token
    gives ones (without running the model).
    """
    overlaps, num_object, _ = _overlaps(backend, image, mask, k_ratio, max_new_tokens)
    if overlaps is None:
        return torch.full((backend.num_layers,), 1.0 if num_object else 0.0)  # [L]
    return overlaps


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationResult:
    """The outcome of calibrating one model.

    layers: the kept layers in ascending order (the order introduction uses them).
    ranking: every layer, best first (ties to the lower layer); ``layers`` is its head, sorted.
    scores: mean overlap per layer, index = layer.
    """

    layers: tuple[int, ...]
    ranking: tuple[int, ...]
    scores: tuple[float, ...]
    num_samples: int
    fingerprint: ModelFingerprint
    k_ratio: float = 0.2
    created: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.scores)
        if n < 1:
            raise ValueError("CalibrationResult.scores must have one score per layer")
        if sorted(self.ranking) != list(range(n)):
            raise ValueError(f"CalibrationResult.ranking must order layers 0..{n - 1}, "
                             f"got {self.ranking!r}")
        if not self.layers or any(not 0 <= x < n for x in self.layers) \
                or list(self.layers) != sorted(set(self.layers)):
            raise ValueError(f"CalibrationResult.layers must be distinct ascending layers in "
                             f"[0, {n}), got {self.layers!r}")
        if self.num_samples < 1:
            raise ValueError(f"CalibrationResult.num_samples must be positive, "
                             f"got {self.num_samples!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": CALIBRATION_VERSION,
            "fingerprint": self.fingerprint.to_dict(),
            "layers": list(self.layers),
            "ranking": list(self.ranking),
            "scores": [float(s) for s in self.scores],
            "num_samples": self.num_samples,
            "k_ratio": self.k_ratio,
            "created": self.created,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibrationResult:
        return cls(
            layers=tuple(int(x) for x in data["layers"]),
            ranking=tuple(int(x) for x in data["ranking"]),
            scores=tuple(float(s) for s in data["scores"]),
            num_samples=int(data["num_samples"]),
            fingerprint=ModelFingerprint.from_dict(data["fingerprint"]),
            k_ratio=float(data.get("k_ratio", 0.2)),
            created=float(data.get("created", 0.0)),
            source=str(data.get("source", "")),
        )


def calibrate(backend, samples: Iterable[Sample], num_layers_keep: int | None = None,
              progress: Callable[[int], None] | None = None, *, k_ratio: float = 0.2,
              source: str = "", max_new_tokens: int = CALIBRATION_MAX_NEW_TOKENS,
              ) -> CalibrationResult:
    """Rank the backend's layers by mean top-``K`` / mask overlap over ``samples``.

    ``num_layers_keep`` defaults to ``default_num_layers_keep(num_layers)``. ``progress`` is
    called with the number of samples done after each one. Samples whose mask covers no token
    or every token cannot tell layers apart and are skipped (logged); if none is left the call
    raises ``CalibrationError``.
    """
    num_layers = int(backend.num_layers)
    keep = default_num_layers_keep(num_layers) if num_layers_keep is None else num_layers_keep
    if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= num_layers:
        raise ValueError(f"num_layers_keep must be in [1, {num_layers}], got {keep!r}")
    total = torch.zeros(num_layers, dtype=torch.float64)  # [L]
    used = 0
    for i, (image, mask) in enumerate(samples):
        overlaps, num_object, num_visual = _overlaps(backend, image, mask, k_ratio,
                                                     max_new_tokens)
        if overlaps is None:
            log.warning("calibration sample %d skipped: its mask covers %d of %d tokens", i,
                        num_object, num_visual)
        else:
            total += overlaps.double()
            used += 1
        if progress is not None:
            progress(i + 1)
    if used == 0:
        raise CalibrationError("no usable calibration sample: every mask covered no token or "
                               "every token (objects must cover some but not all of the image)")
    scores = (total / used).float()  # [L]
    ranking = tuple(int(x) for x in torch.sort(scores, descending=True, stable=True).indices)
    layers = tuple(sorted(ranking[:keep]))
    log.info("calibrated %d layers on %d samples: keep %s (scores %s)", num_layers, used,
             layers, [round(float(s), 3) for s in scores])
    return CalibrationResult(layers, ranking, tuple(float(s) for s in scores), used,
                             backend.fingerprint, k_ratio, time.time(), source)


# --------------------------------------------------------------------------------------------
# Calibration files
# --------------------------------------------------------------------------------------------


def default_calibration_path(fingerprint: ModelFingerprint, cache_dir: Path | str | None = None,
                             ) -> Path:
    """``<cache>/calibration/<family>-<config_hash[:16]>.json``, the cache being ``cache_dir``,
    else ``$EGO_ROS_CACHE``, else ``~/.cache/ego_ros``. Keyed by the fingerprint, so each
    checkpoint finds its own file and never another model's."""
    if cache_dir is not None:
        root = Path(cache_dir).expanduser()
    else:
        env = os.environ.get(CACHE_ENV)
        root = Path(env).expanduser() if env else Path.home() / ".cache" / "ego_ros"
    return root / "calibration" / f"{fingerprint.family}-{fingerprint.config_hash[:16]}.json"


def save_calibration(result: CalibrationResult, path: Path | str) -> Path:
    """Write ``result`` as JSON at ``path`` atomically (temporary file, fsync, rename); creates
    the folder. A crash leaves either the previous file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(result.to_dict(), indent=1, ensure_ascii=False).encode("utf-8")
    atomic_write_bytes(path, data + b"\n")
    log.info("wrote calibration %s: layers %s", path, result.layers)
    return path


def load_calibration(path: Path | str, fingerprint: ModelFingerprint | None) -> CalibrationResult:
    """Read a calibration file; refuse it when it was made for another model than
    ``fingerprint`` (``None`` skips the check, e.g. to inspect a file)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CalibrationError(f"calibration file {path} does not exist; run "
                               "'ego-ros calibrate' or leave the option out") from None
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{path}: unreadable calibration file ({exc})") from exc
    try:
        version = int(data.get("version", 0))
        if version > CALIBRATION_VERSION:
            raise ValueError(f"version {version} is newer than this ego_ros reads")
        result = CalibrationResult.from_dict(data)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise CalibrationError(f"{path}: not a valid calibration file ({exc})") from exc
    if fingerprint is not None and not fingerprint.matches(result.fingerprint):
        raise CalibrationError(
            f"{path} was calibrated for model {result.fingerprint}, not for the loaded model "
            f"{fingerprint}; layer rankings do not transfer between models. Run "
            "'ego-ros calibrate' with this model.")
    return result


def resolve_layers(backend, explicit: Sequence[int] | None = None,
                   calibration_path: Path | str | None = None) -> tuple[tuple[int, ...], str]:
    """The layers introduction should use, and where they came from.

    In order: ``explicit`` layers (source ``"explicit"``); the file ``calibration_path`` (must
    exist); the default calibration file of the backend's fingerprint if there is one (source
    ``"calibration:<path>"``); else ``introduce.default_layers`` (source
    ``"default (mid-to-late)"``). Layers out of the model's range are an error.
    """
    num_layers = int(backend.num_layers)

    def checked(layers: Sequence[int], what: str) -> tuple[int, ...]:
        out = tuple(int(x) for x in layers)
        bad = [x for x in out if not 0 <= x < num_layers]
        if not out or bad or len(set(out)) != len(out):
            raise CalibrationError(f"{what}: layers {list(out)} must be distinct and within "
                                   f"[0, {num_layers}) for this {num_layers}-layer model")
        return tuple(sorted(out))

    if explicit is not None:
        return checked(explicit, "explicit layers"), "explicit"
    path = Path(calibration_path) if calibration_path is not None else \
        default_calibration_path(backend.fingerprint)
    if calibration_path is not None or path.is_file():
        result = load_calibration(path, backend.fingerprint)
        return checked(result.layers, str(path)), f"calibration:{path}"
    return default_layers(num_layers), "default (mid-to-late)"


# --------------------------------------------------------------------------------------------
# Calibration sets
# --------------------------------------------------------------------------------------------

# Synthetic images keep every background pixel's channels <= _BG_MAX and give every object
# pixel a channel >= _OBJ_MIN, so the drawn object is recoverable from the pixels alone
# (max channel > _SPLIT) and tests can check that the mask is exact.
_BG_MAX = 170
_OBJ_MIN = 188
_SPLIT = 179


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a random ``cells x cells`` lattice, bilinearly upsampled."""
    lattice = rng.random((cells + 1, cells + 1))  # [c + 1, c + 1]
    y = np.linspace(0, cells, h)[:, None]  # [H, 1]
    x = np.linspace(0, cells, w)[None, :]  # [1, W]
    y0, x0 = np.minimum(y.astype(int), cells - 1), np.minimum(x.astype(int), cells - 1)
    fy, fx = y - y0, x - x0
    top = lattice[y0, x0] * (1 - fx) + lattice[y0, x0 + 1] * fx  # [H, W]
    bottom = lattice[y0 + 1, x0] * (1 - fx) + lattice[y0 + 1, x0 + 1] * fx  # [H, W]
    return top * (1 - fy) + bottom * fy  # [H, W]


def _shape_mask(rng: np.random.Generator, h: int, w: int, scale: tuple[float, float],
                kind: str) -> np.ndarray:
    """A filled ellipse, rotated rectangle or star-shaped polygon, sampled at pixel centres."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5  # [H, W] each
    size = min(h, w)
    r1, r2 = (rng.uniform(*scale) * size for _ in range(2))
    margin = max(r1, r2)
    cy = rng.uniform(min(margin, h / 2), max(h - margin, h / 2))
    cx = rng.uniform(min(margin, w / 2), max(w - margin, w / 2))
    theta = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)  # [H, W]
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)  # [H, W]
    if kind == "ellipse":
        return (u / r1) ** 2 + (v / r2) ** 2 <= 1.0
    if kind == "rectangle":
        return (np.abs(u) <= r1 * 0.8) & (np.abs(v) <= r2 * 0.8)
    # Star-shaped polygon: vertices at sorted angles and random radii around the centre; a
    # pixel is inside when its radius is below the polygon's edge along its angle.
    n = int(rng.integers(5, 9))
    # Angles spread around the circle (each gap < 2 * 2pi / n < pi), so the centre is inside.
    angles = (np.arange(n) + rng.uniform(0.15, 0.85, n)) * (2 * np.pi / n)
    radii = rng.uniform(0.85, 1.2, n) * max(r1, r2)
    px, py = radii * np.cos(angles), radii * np.sin(angles)  # [n] each
    phi = np.arctan2(v, u) % (2 * np.pi)  # [H, W]
    rho = np.hypot(u, v)  # [H, W]
    inside = np.zeros((h, w), dtype=bool)
    for i in range(n):
        j = (i + 1) % n
        a0, a1 = angles[i], angles[j] + (2 * np.pi if j == 0 else 0.0)
        in_wedge = ((phi >= a0) & (phi < a1)) | ((phi + 2 * np.pi >= a0) & (phi + 2 * np.pi < a1))
        # Edge from vertex i to j: points p = P_i + t (P_j - P_i); the ray at angle phi meets it
        # at radius |P_i x P_j| / |d x (P_j - P_i)| with d = (cos phi, sin phi).
        ex, ey = px[j] - px[i], py[j] - py[i]
        cross = abs(px[i] * py[j] - py[i] * px[j])
        denom = np.abs(np.cos(phi) * ey - np.sin(phi) * ex) + 1e-12
        inside |= in_wedge & (rho <= cross / denom)
    return inside


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A binary pattern (stripes, checker or dots) deciding between two colours, ``[H, W]``."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    period = rng.uniform(6, 20)
    kind = rng.integers(0, 3)
    if kind == 0:
        theta = rng.uniform(0, np.pi)
        return ((xx * np.cos(theta) + yy * np.sin(theta)) // (period / 2)) % 2 == 0
    if kind == 1:
        return ((xx // period) + (yy // period)) % 2 == 0
    return np.hypot(xx % period - period / 2, yy % period - period / 2) < period / 3.5


def _synthetic_sample(rng: np.random.Generator, size: tuple[int, int]) -> Sample:
    h, w = size
    # Background: smooth colour field + fine noise + darker distractor shapes, channels <= 170.
    base = rng.uniform(20, 120, 3)
    field = _smooth_noise(rng, h, w, int(rng.integers(3, 8)))[..., None]  # [H, W, 1]
    bg = base * (0.5 + field) + rng.normal(0, 8, (h, w, 3))  # [H, W, 3]
    for _ in range(int(rng.integers(3, 7))):
        kind = ("ellipse", "rectangle", "polygon")[int(rng.integers(0, 3))]
        clutter = _shape_mask(rng, h, w, (0.06, 0.18), kind)
        pattern = _texture(rng, h, w)
        c1, c2 = rng.uniform(0, _BG_MAX, 3), rng.uniform(0, _BG_MAX, 3)
        bg[clutter] = np.where(pattern[clutter, None], c1, c2)
    image = np.clip(bg, 0, _BG_MAX)
    # Object: bright two-colour texture (each colour has a channel >= 200) on a large shape.
    kind = ("ellipse", "rectangle", "polygon")[int(rng.integers(0, 3))]
    mask = _shape_mask(rng, h, w, (0.18, 0.32), kind)
    colours = []
    for _ in range(2):
        colour = rng.uniform(0, 255, 3)
        colour[int(rng.integers(0, 3))] = rng.uniform(200, 255)
        colours.append(colour)
    pattern = _texture(rng, h, w)[..., None]  # [H, W, 1]
    obj = np.where(pattern, colours[0], colours[1]) + rng.normal(0, 4, (h, w, 3))  # [H, W, 3]
    obj = np.clip(obj, 0, 255)
    obj_max = obj.max(axis=2, keepdims=True)
    obj = np.where(obj_max < _OBJ_MIN, obj + (_OBJ_MIN - obj_max), obj)  # keep one bright channel
    image = np.where(mask[..., None], obj, image)
    return np.round(image).astype(np.uint8), mask


def synthetic_calibration_set(n: int, seed: int = 0, size: tuple[int, int] = (224, 224),
                              ) -> list[Sample]:
    """``n`` images of one textured object (filled ellipse, rotated rectangle or star polygon
    with stripes, checks or dots) on a cluttered textured background, with exact masks.

    Deterministic: sample ``i`` depends only on ``(seed, i, size)`` (so a longer set starts
    with a shorter one). Background pixels never exceed 170 in any channel and every object
    pixel has a channel of at least 188, so ``mask == image.max(-1) > 179`` exactly; the
    object covers roughly 5-40% of the image, so it spans several tokens of any grid.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"synthetic calibration set size must be a positive integer, got {n!r}")
    h, w = (int(s) for s in size)
    if h < 32 or w < 32:
        raise ValueError(f"synthetic image size must be at least 32x32, got {size!r}")
    children = np.random.SeedSequence(seed).spawn(n)
    return [_synthetic_sample(np.random.default_rng(child), (h, w)) for child in children]


def _read_image(path: Path) -> np.ndarray:
    import cv2  # optional heavy dependency, only needed to read files

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise CalibrationError(f"{path}: cannot read this image (missing, unreadable or not an "
                               "image format OpenCV knows)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _read_mask(path: Path) -> np.ndarray:
    import cv2

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise CalibrationError(f"{path}: cannot read this mask image")
    return raw != 0 if raw.ndim == 2 else (raw != 0).any(axis=2)


def load_calibration_folder(folder: Path | str) -> list[Sample]:
    """A calibration set from a folder of images with binary object masks.

    Accepted layouts (per image, the first mask found is used; any nonzero mask pixel, in any
    channel, is object):

    * ``DIR/NAME.jpg`` with ``DIR/masks/NAME.png`` (the layout a COCO subset is exported to);
    * ``DIR/NAME.jpg`` with ``DIR/NAME_mask.png`` beside it.

    Images are the files directly in ``DIR`` ending in .jpg, .jpeg, .png, .bmp or .webp (files
    ending in ``_mask.png`` are masks, not images), sorted by name. A missing mask, a mask of
    another size than its image or an empty mask is an error naming the files.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CalibrationError(f"calibration folder {root} does not exist or is not a folder")
    images = sorted(p for p in root.iterdir()
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                    and not p.stem.endswith(MASK_SUFFIX))
    if not images:
        raise CalibrationError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    samples: list[Sample] = []
    for image_path in images:
        candidates = (root / MASK_DIR / f"{image_path.stem}.png",
                      root / f"{image_path.stem}{MASK_SUFFIX}.png")
        mask_path = next((c for c in candidates if c.is_file()), None)
        if mask_path is None:
            raise CalibrationError(f"{image_path}: no mask; expected {candidates[0]} or "
                                   f"{candidates[1]}")
        image, mask = _read_image(image_path), _read_mask(mask_path)
        if mask.shape != image.shape[:2]:
            raise CalibrationError(
                f"{mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is "
                f"{image.shape[1]}x{image.shape[0]}; masks must have the image's size")
        if not mask.any():
            raise CalibrationError(f"{mask_path}: the mask is empty (no nonzero pixel)")
        samples.append((image, mask))
    log.info("calibration folder %s: %d images", root, len(samples))
    return samples

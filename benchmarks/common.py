"""Small helpers shared by the benchmark scripts: timing, host description, test scenes, tables.

Why these choices:

- Ratios, not absolute times, are what the benchmarks report, so every variant that enters a
  ratio is timed in the same run, *interleaved* (round 1 runs A, B, C; round 2 runs A, B, C;
  ...). A machine shared with other jobs changes speed over seconds; interleaving spreads such
  drifts over all variants instead of penalising whichever ran during the busy spell.
- Medians of several repeats after warm-up rounds: the first calls pay for lazy
  initialisation (kernel selection, allocator growth, first prefix-cache fill), and medians
  ignore the odd descheduled repeat.
- On CUDA the clock only means something after ``torch.cuda.synchronize()``; ``sync`` is
  called before each start and stop.
- Scenes are generated (textured wall and table, a patterned object) rather than random noise
  so a vision tower sees image statistics closer to a camera frame's; token counts depend only
  on the frame size.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timing:
    """Wall-clock samples of one variant, in milliseconds."""

    samples_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    def to_dict(self) -> dict[str, float | int]:
        return {"median_ms": round(self.median_ms, 3), "min_ms": round(self.min_ms, 3),
                "repeats": len(self.samples_ms)}


def _no_sync() -> None:
    return None


def interleaved(variants: Mapping[str, Callable[[], object]], *, repeats: int, warmup: int,
                sync: Callable[[], None] = _no_sync) -> dict[str, Timing]:
    """Time each variant ``repeats`` times after ``warmup`` untimed rounds, round-robin.

    Returns one :class:`Timing` per variant name, in the order given.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    sync()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            sync()
            started = time.perf_counter()
            fn()
            sync()
            samples[name].append((time.perf_counter() - started) * 1000.0)
    return {name: Timing(tuple(s)) for name, s in samples.items()}


def cuda_sync(device) -> Callable[[], None]:
    """A ``sync`` for :func:`interleaved`: waits for ``device``'s queue on CUDA, else nothing."""
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        return lambda: torch.cuda.synchronize(device)
    return _no_sync


def random_shapes_backend(size: str, family: str, *, device: str = "auto", dtype: str = "auto",
                          depth_divisor: int = 1):
    """A backend over random weights with a real checkpoint's shapes (``--size`` /
    ``--random``), built in memory; its path is a label naming the size and depth."""
    from ego_ros.backends.base import BackendConfig
    from ego_ros.backends.loading import random_backend

    label = f"<random {size}, depth / {depth_divisor}>"
    return random_backend(family, size, BackendConfig(label, family=family, device=device,
                                                      dtype=dtype),
                          depth_divisor=depth_divisor)


def cpu_name() -> str:
    """The CPU's marketing name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def host_info(device=None) -> dict[str, object]:
    """What the numbers were measured on: CPU, cores, torch threads, accelerator, versions."""
    import torch
    import transformers

    info: dict[str, object] = {
        "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    if device is not None and getattr(device, "type", "") == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else math.nan


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bilinearly."""
    coarse = rng.random((cells + 1, cells + 1))
    ys = np.linspace(0, cells, h)
    xs = np.linspace(0, cells, w)
    y0 = np.floor(ys).astype(int).clip(0, cells - 1)
    x0 = np.floor(xs).astype(int).clip(0, cells - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = coarse[y0][:, x0]
    b = coarse[y0][:, x0 + 1]
    c = coarse[y0 + 1][:, x0]
    d = coarse[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy  # [h, w]


def scene(seed: int, size: tuple[int, int] = (480, 640), *, objects: Sequence[int] = (0,),
          object_scale: float = 0.35) -> np.ndarray:
    """An RGB uint8 frame ``[H, W, 3]``: a textured wall above a table, with patterned objects.

    ``objects`` are object identities: the same identity always has the same colours, shape and
    pattern (so a reference view and a query frame show "the same thing"), placed at a
    position and scale that depend on ``seed``.
    """
    h, w = size
    rng = np.random.default_rng(seed)
    wall = rng.integers(90, 200, 3)
    table = rng.integers(60, 150, 3)
    shade = _smooth_noise(rng, h, w, 6)[..., None]  # [h, w, 1]
    horizon = int(h * rng.uniform(0.45, 0.6))
    img = np.empty((h, w, 3), dtype=np.float64)
    img[:horizon] = wall
    img[horizon:] = table
    img *= 0.75 + 0.5 * shade
    img += rng.normal(0, 6, img.shape)  # sensor noise
    yy, xx = np.mgrid[0:h, 0:w]
    for k, identity in enumerate(objects):
        look = np.random.default_rng(10_000 + identity)
        body, stripe = look.integers(30, 256, 3), look.integers(0, 256, 3)
        period = int(look.integers(6, 18))
        radius = object_scale * min(h, w) / 2 * rng.uniform(0.8, 1.2)
        cy = rng.uniform(radius, h - radius)
        cx = (k + 0.5) * w / len(objects) + rng.uniform(-0.1, 0.1) * w / len(objects)
        if identity % 3 == 0:  # ellipse
            inside = ((yy - cy) / radius) ** 2 + ((xx - cx) / (0.7 * radius)) ** 2 <= 1
        elif identity % 3 == 1:  # box
            inside = (abs(yy - cy) <= radius) & (abs(xx - cx) <= 0.8 * radius)
        else:  # diamond
            inside = abs(yy - cy) / radius + abs(xx - cx) / radius <= 1
        striped = ((yy + identity * xx // 3) // period) % 2 == 0
        img[inside & striped] = body
        img[inside & ~striped] = stripe
    return np.clip(img, 0, 255).astype(np.uint8)


def format_table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A plain-text table with left-aligned first column and right-aligned others."""
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        parts = [row[0].ljust(widths[0])] + [c.rjust(wd) for c, wd in zip(row[1:], widths[1:])]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * wd for wd in widths))
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.2f}"
    return str(value)

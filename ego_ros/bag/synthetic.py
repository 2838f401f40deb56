"""A generated camera stream with known objects, so everything runs without any dataset.

    labels = make_synthetic_bag(Path("/tmp/synthetic_bag"), seed=0, compressed=True)

The scene is a large generated "room" (a textured wall and table with muted clutter) holding
three distinct objects, each a concept with a neutral name so that its name says nothing about
its looks (the model has to recognise it from its memory, not from the word):

- ``kiro``: a red mug with white horizontal stripes and a handle,
- ``tavi``: a blue ball with yellow dots,
- ``nox``: a green star with a dark green checker pattern.

A virtual camera pans and zooms over the room along a smooth path through a wide overview, a
close-up of every object (in a seed-dependent order) and a stretch of empty room, so objects
enter and leave the view. Ground truth comes from geometry: an object is visible in a frame
when at least half of its box lies inside the view (its clipped box is recorded). Each object
also gets reference views (a clean render, a crop from the room, rotated/scaled renders on
plain backgrounds), a multiple-choice question and reference captions. Everything derives
from one ``numpy`` generator seeded with ``seed``: the same seed gives the same bag.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from ego_ros.bag.io import (
    DEFAULT_START_NS,
    DEFAULT_TOPIC,
    image_topic,
    staged_bag_dir,
    write_image_bag,
)
from ego_ros.bag.labels import (
    BagLabels,
    Box,
    CaptionLabel,
    ConceptLabel,
    FrameLabel,
    RefView,
    SourceInfo,
    VqaItem,
    save_labels,
    write_reference,
)

__all__ = [
    "OBJECTS",
    "ObjectSpec",
    "SyntheticConfig",
    "make_synthetic_bag",
    "write_synthetic_bag",
]

logger = logging.getLogger(__name__)

_NS = 1_000_000_000
_REF_SIZE = 256
# An object counts as visible when this fraction of its box is inside the view.
_VISIBLE_FRACTION = 0.5
_MIN_VISIBLE_PX = 8

Sprite = tuple[np.ndarray, np.ndarray]  # rgb [S, S, 3] uint8, alpha [S, S] float32 in 0..1


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and timing of a synthetic bag; validated on construction."""

    seed: int = 0
    num_frames: int = 150
    fps: float = 15.0
    width: int = 640
    height: int = 480
    compressed: bool = False
    storage: Literal["sqlite3", "mcap"] = "sqlite3"
    topic: str = DEFAULT_TOPIC
    frame_id: str = "camera"
    refs_per_concept: int = 5
    start_ns: int = DEFAULT_START_NS

    def __post_init__(self) -> None:
        checks = [
            ("num_frames", self.num_frames >= 2, "must be >= 2"),
            ("fps", self.fps > 0, "must be > 0"),
            ("width", self.width >= 64, "must be >= 64 px"),
            ("height", self.height >= 48, "must be >= 48 px"),
            ("refs_per_concept", 1 <= self.refs_per_concept <= 20, "must be in 1..20"),
            ("storage", self.storage in ("sqlite3", "mcap"), "must be 'sqlite3' or 'mcap'"),
            ("start_ns", self.start_ns >= 0, "must be >= 0"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise ValueError(f"SyntheticConfig.{name}={getattr(self, name)!r} {why}")


# ----------------------------------------------------------------------------------------------
# Objects
# ----------------------------------------------------------------------------------------------


def _alpha(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.float32) / 255.0


def _draw_mug(size: int) -> Sprite:
    s = size
    rgb = np.zeros((s, s, 3), np.uint8)
    mask = np.zeros((s, s), np.uint8)
    red, white, dark = (205, 28, 32), (245, 245, 245), (120, 10, 14)
    x0, x1, top, bottom = int(0.16 * s), int(0.68 * s), int(0.18 * s), int(0.84 * s)
    cx, ax, ay = (x0 + x1) // 2, (x1 - x0) // 2, int(0.07 * s)
    body = np.zeros_like(mask)
    cv2.rectangle(body, (x0, top), (x1, bottom), 255, -1)
    cv2.ellipse(body, (cx, bottom), (ax, ay), 0, 0, 360, 255, -1, cv2.LINE_AA)
    rgb[body > 0] = red
    stripe = max(2, s // 14)
    rows = (np.arange(s) // stripe) % 2 == 1
    stripes = (body > 0) & rows[:, None] & (np.arange(s)[:, None] > top + ay)
    rgb[stripes] = white
    handle = np.zeros_like(mask)
    cv2.ellipse(
        handle,
        (x1, int(0.5 * s)),
        (int(0.15 * s), int(0.2 * s)),
        0,
        -90,
        90,
        255,
        max(3, s // 16),
        cv2.LINE_AA,
    )
    rgb[handle > 0] = red
    rim = np.zeros_like(mask)
    cv2.ellipse(rim, (cx, top), (ax, ay), 0, 0, 360, 255, -1, cv2.LINE_AA)
    rgb[rim > 0] = dark
    cv2.ellipse(rgb, (cx, top), (ax, ay), 0, 0, 360, red, max(2, s // 40), cv2.LINE_AA)
    mask = np.maximum.reduce([body, handle, rim])
    return rgb, _alpha(mask)


def _draw_ball(size: int) -> Sprite:
    s = size
    mask = np.zeros((s, s), np.uint8)
    center, radius = (s // 2, s // 2), int(0.44 * s)
    cv2.circle(mask, center, radius, 255, -1, cv2.LINE_AA)
    rgb = np.zeros((s, s, 3), np.uint8)
    rgb[:] = (28, 70, 210)
    step = max(6, int(0.16 * s))
    dot = max(2, int(0.045 * s))
    for row, y in enumerate(range(step // 2, s, step)):
        offset = step // 2 if row % 2 else 0
        for x in range(offset + step // 4, s, step):
            cv2.circle(rgb, (x, y), dot, (250, 215, 30), -1, cv2.LINE_AA)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    dist = np.hypot(xx - 0.35 * s, yy - 0.35 * s) / (1.2 * s)  # [S, S]
    shade = np.clip(1.15 - dist, 0.55, 1.0)[:, :, None]  # [S, S, 1]
    rgb = np.clip(rgb.astype(np.float32) * shade, 0, 255).astype(np.uint8)
    return rgb, _alpha(mask)


def _draw_star(size: int) -> Sprite:
    s = size
    angles = np.deg2rad(np.arange(10) * 36.0 - 90.0)
    radii = np.where(np.arange(10) % 2 == 0, 0.47 * s, 0.2 * s)
    pts = np.stack([s / 2 + radii * np.cos(angles), s / 2 + radii * np.sin(angles)], axis=1)
    poly = np.round(pts).astype(np.int32)[None]  # [1, 10, 2]
    mask = np.zeros((s, s), np.uint8)
    cv2.fillPoly(mask, poly, 255, cv2.LINE_AA)
    cell = max(3, s // 11)
    yy, xx = np.mgrid[0:s, 0:s]
    checker = ((yy // cell + xx // cell) % 2 == 0)[:, :, None]  # [S, S, 1]
    rgb = np.where(checker, np.uint8([40, 175, 55]), np.uint8([12, 95, 30])).astype(np.uint8)
    cv2.polylines(rgb, poly, True, (8, 60, 20), max(2, s // 40), cv2.LINE_AA)
    return rgb, _alpha(mask)


@dataclass(frozen=True)
class ObjectSpec:
    """A synthetic concept: name, looks, a drawing function and one A/B question about it."""

    name: str
    description: str
    draw: Callable[[int], Sprite]
    relative_size: float  # sprite side as a fraction of the output height
    question: str  # with {name}
    right: str
    wrong: str


OBJECTS: tuple[ObjectSpec, ...] = (
    ObjectSpec(
        "kiro",
        "a red mug with white horizontal stripes",
        _draw_mug,
        0.36,
        "What pattern is on {name}?",
        "horizontal stripes",
        "polka dots",
    ),
    ObjectSpec(
        "tavi",
        "a blue ball with yellow dots",
        _draw_ball,
        0.30,
        "What colour is {name}?",
        "blue",
        "red",
    ),
    ObjectSpec(
        "nox",
        "a green star with a dark green checker pattern",
        _draw_star,
        0.34,
        "What shape is {name}?",
        "a star",
        "a circle",
    ),
)


# ----------------------------------------------------------------------------------------------
# Scene
# ----------------------------------------------------------------------------------------------


def _sprite(spec: ObjectSpec, size: int) -> Sprite:
    """The object at ``size`` px, drawn at >= 192 px and shrunk, so that its pattern looks the
    same (only smaller) in small frames instead of the dots or stripes swallowing it."""
    draw_size = max(size, 192)
    rgb, alpha = spec.draw(draw_size)
    if draw_size == size:
        return rgb, alpha
    shape = (size, size)
    return (
        cv2.resize(rgb, shape, interpolation=cv2.INTER_AREA),
        cv2.resize(alpha, shape, interpolation=cv2.INTER_AREA),
    )


@dataclass(frozen=True)
class _Placed:
    spec: ObjectSpec
    sprite: Sprite
    xy: tuple[int, int]  # top-left corner of the sprite in the world
    box: tuple[float, float, float, float]  # tight world box of the visible object


def _muted(rng: np.random.Generator, lo: int = 60, hi: int = 200) -> np.ndarray:
    """A low-saturation colour, so clutter never looks like one of the objects."""
    base = rng.uniform(lo, hi)
    return np.clip(base + rng.uniform(-18, 18, size=3), 0, 255)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1], ``[h, w]``: random grid upsampled bicubically."""
    grid = rng.uniform(-1, 1, size=(cells, max(2, cells * w // max(h, 1)))).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    wall_h = int(h * rng.uniform(0.5, 0.62))
    world = np.zeros((h, w, 3), np.float32)
    wall = _muted(rng, 150, 215)
    floor = _muted(rng, 90, 150) * np.float32([1.0, 0.9, 0.78])  # a warm table top
    world[:wall_h] = wall
    world[wall_h:] = floor
    blotches = _smooth_noise(rng, h, w, 6)[:, :, None] * 14  # [h, w, 1]
    grain = _smooth_noise(rng, h, w, 60)[:, :, None] * 6  # [h, w, 1]
    rows = np.arange(h, dtype=np.float32)[:, None, None]
    wood = np.where(rows >= wall_h, np.sin(rows * 0.09 + blotches * 0.4) * 8, 0.0)
    world = world + blotches + grain + wood
    for _ in range(int(rng.integers(7, 12))):
        colour = tuple(float(c) for c in _muted(rng, 40, 220))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        a, b = int(rng.integers(w // 40, w // 9)), int(rng.integers(h // 30, h // 7))
        if rng.random() < 0.5:
            cv2.rectangle(world, (x - a, y - b), (x + a, y + b), colour, -1, cv2.LINE_AA)
            cv2.rectangle(world, (x - a, y - b), (x + a, y + b), (60.0, 60.0, 60.0), 2)
        else:
            cv2.ellipse(world, (x, y), (a, b), 0, 0, 360, colour, -1, cv2.LINE_AA)
    cv2.line(world, (0, wall_h), (w, wall_h), (70.0, 65.0, 60.0), 3, cv2.LINE_AA)
    return np.clip(world, 0, 255).astype(np.uint8)


def _place_objects(
    rng: np.random.Generator, world: np.ndarray, cfg: SyntheticConfig
) -> list[_Placed]:
    h, w = world.shape[:2]
    placed: list[_Placed] = []
    margin = int(0.1 * cfg.height)
    for spec in OBJECTS:
        size = max(16, int(spec.relative_size * cfg.height))
        sprite = _sprite(spec, size)
        ys, xs = np.nonzero(sprite[1] > 0.5)
        for _ in range(500):
            x = int(rng.integers(margin, w - size - margin))
            y = int(rng.integers(margin, h - size - margin))
            box = (x + xs.min(), y + ys.min(), x + xs.max() + 1.0, y + ys.max() + 1.0)
            gap = 0.25 * size
            if all(
                box[2] + gap < p.box[0]
                or p.box[2] + gap < box[0]
                or box[3] + gap < p.box[1]
                or p.box[3] + gap < box[1]
                for p in placed
            ):
                break
        else:
            raise RuntimeError("could not place synthetic objects apart; use a larger frame")
        rgb, alpha = sprite
        region = world[y : y + size, x : x + size].astype(np.float32)  # [S, S, 3]
        a = alpha[:, :, None]  # [S, S, 1]
        world[y : y + size, x : x + size] = (a * rgb + (1 - a) * region).astype(np.uint8)
        placed.append(_Placed(spec, sprite, (x, y), tuple(float(v) for v in box)))
    return placed


def _camera_path(
    rng: np.random.Generator, placed: list[_Placed], world_hw: tuple[int, int], cfg: SyntheticConfig
) -> np.ndarray:
    """Per-frame camera ``(cx, cy, view_w)`` in world pixels, ``[num_frames, 3]``."""
    h, w = world_hw
    aspect = cfg.height / cfg.width

    def clamp(cx: float, cy: float, vw: float) -> tuple[float, float, float]:
        vw = min(vw, w, h / aspect)
        vh = vw * aspect
        return (
            float(np.clip(cx, vw / 2, w - vw / 2)),
            float(np.clip(cy, vh / 2, h - vh / 2)),
            float(vw),
        )

    keys = [clamp(w / 2, h / 2, w * rng.uniform(0.85, 0.95))]  # overview
    for i in rng.permutation(len(placed)):
        x0, y0, x1, y1 = placed[i].box
        jitter = rng.uniform(-0.12, 0.12, size=2) * (x1 - x0)
        zoom = cfg.width * rng.uniform(0.75, 1.05)
        keys.append(clamp((x0 + x1) / 2 + jitter[0], (y0 + y1) / 2 + jitter[1], zoom))
    empty_view = None
    for _ in range(300):
        vw = cfg.width * rng.uniform(0.7, 0.9)
        cand = clamp(rng.uniform(0, w), rng.uniform(0, h), vw)
        if not any(_visible_box(p.box, cand, cfg) for p in placed):
            empty_view = cand
            break
    if empty_view is not None:
        keys.insert(int(rng.integers(1, len(keys) + 1)), empty_view)
    keys.append(keys[0])  # back to the overview: objects leave the close-up again
    key_arr = np.asarray(keys, dtype=np.float64)  # [K, 3]
    t = np.linspace(0.0, len(keys) - 1.0, cfg.num_frames)
    seg = np.minimum(t.astype(int), len(keys) - 2)
    u = t - seg
    u = u * u * (3 - 2 * u)  # smoothstep: ease in and out of each key view
    return key_arr[seg] * (1 - u)[:, None] + key_arr[seg + 1] * u[:, None]  # [N, 3]


def _view_transform(
    cam: tuple[float, float, float], cfg: SyntheticConfig
) -> tuple[float, float, float]:
    """(scale, origin_x, origin_y): image = (world - origin) * scale."""
    cx, cy, vw = cam
    vh = vw * cfg.height / cfg.width
    return cfg.width / vw, cx - vw / 2, cy - vh / 2


def _visible_box(
    box: tuple[float, float, float, float], cam: tuple[float, float, float], cfg: SyntheticConfig
) -> tuple[float, float, float, float] | None:
    """The object's clipped box in image pixels when it counts as visible, else None."""
    scale, ox, oy = _view_transform(cam, cfg)
    x0, y0, x1, y1 = (
        (box[0] - ox) * scale,
        (box[1] - oy) * scale,
        (box[2] - ox) * scale,
        (box[3] - oy) * scale,
    )
    cx0, cy0 = max(x0, 0.0), max(y0, 0.0)
    cx1, cy1 = min(x1, float(cfg.width)), min(y1, float(cfg.height))
    if cx1 - cx0 < _MIN_VISIBLE_PX or cy1 - cy0 < _MIN_VISIBLE_PX:
        return None
    inside = (cx1 - cx0) * (cy1 - cy0) / ((x1 - x0) * (y1 - y0))
    return (cx0, cy0, cx1, cy1) if inside >= _VISIBLE_FRACTION else None


def _render(
    world: np.ndarray,
    half: np.ndarray,
    cam: tuple[float, float, float],
    cfg: SyntheticConfig,
    gain: float,
) -> np.ndarray:
    scale, ox, oy = _view_transform(cam, cfg)
    src = world
    if scale < 0.7:  # sample the half-resolution world to avoid aliasing the stripes
        src, scale, ox, oy = half, scale * 2, ox / 2, oy / 2
    m = np.float32([[scale, 0, -ox * scale], [0, scale, -oy * scale]])  # [2, 3]
    frame = cv2.warpAffine(
        src, m, (cfg.width, cfg.height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    return cv2.convertScaleAbs(frame, alpha=gain)


# ----------------------------------------------------------------------------------------------
# Reference views, questions, captions
# ----------------------------------------------------------------------------------------------


def _ref_render(
    placed: _Placed, rng: np.random.Generator, variant: int, world: np.ndarray
) -> tuple[np.ndarray, str]:
    size = _REF_SIZE
    if variant == 1:  # the object in the room, cropped with some context
        x0, y0, x1, y1 = placed.box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        half = 0.8 * max(x1 - x0, y1 - y0)
        h, w = world.shape[:2]
        half = min(half, cx, cy, w - cx, h - cy)
        crop = world[int(cy - half) : int(cy + half), int(cx - half) : int(cx + half)]
        return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA), "synthetic:crop"
    if variant == 0:
        angle, scale, bg, shift = 0.0, 0.8, np.float32([236, 236, 236]), (0.0, 0.0)
    else:
        angle = float(rng.uniform(-25, 25))
        scale = float(rng.uniform(0.5, 0.85))
        bg = np.float32(_muted(rng, 170, 245))
        shift = tuple(float(v) for v in rng.uniform(-0.12, 0.12, size=2) * size)
    rgb, alpha = placed.spec.draw(size)
    m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    m[:, 2] += shift
    rgb_t = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR)
    a = cv2.warpAffine(alpha, m, (size, size), flags=cv2.INTER_LINEAR)[:, :, None]  # [S, S, 1]
    view = a * rgb_t.astype(np.float32) + (1 - a) * bg
    source = "synthetic:plain" if variant == 0 else f"synthetic:render(angle={angle:.0f})"
    return np.clip(view, 0, 255).astype(np.uint8), source


def _position_word(box: tuple[float, float, float, float], width: int) -> str:
    centre = (box[0] + box[2]) / 2 / width
    if centre < 0.36:
        return "on the left"
    return "on the right" if centre > 0.64 else "in the centre"


def _questions(
    rng: np.random.Generator, frames: list[FrameLabel], width: int
) -> tuple[list[VqaItem], list[CaptionLabel]]:
    """One A/B question per object (on its largest view) and captions for up to ~8 frames."""
    vqa: list[VqaItem] = []
    for spec in OBJECTS:
        best = max(
            ((f, b) for f in frames for b in f.boxes if b.concept == spec.name),
            key=lambda fb: (fb[1].xyxy[2] - fb[1].xyxy[0]) * (fb[1].xyxy[3] - fb[1].xyxy[1]),
            default=None,
        )
        if best is None:
            continue
        right_letter = "A" if rng.random() < 0.5 else "B"
        texts = [spec.right, spec.wrong] if right_letter == "A" else [spec.wrong, spec.right]
        vqa.append(
            VqaItem(
                stamp_ns=best[0].stamp_ns,
                concept=spec.name,
                question=spec.question.format(name=spec.name),
                options={"A": texts[0], "B": texts[1]},
                answer=right_letter,
            )
        )
    described = {s.name: s.description for s in OBJECTS}
    with_objects = [f for f in frames if f.concepts]
    stride = max(1, len(with_objects) // 8)
    captions: list[CaptionLabel] = []
    for frame in with_objects[::stride]:
        parts = [
            f"{b.concept}, {described[b.concept]}, {_position_word(b.xyxy, width)}"
            for b in frame.boxes
        ]
        names = " and ".join(frame.concepts)
        captions.append(
            CaptionLabel(frame.stamp_ns, ("; ".join(parts), f"A room with {names} in view"))
        )
    return vqa, captions


def make_synthetic_bag(
    out: Path,
    seed: int = 0,
    num_frames: int = 150,
    fps: float = 15.0,
    width: int = 640,
    height: int = 480,
    compressed: bool = False,
    *,
    storage: Literal["sqlite3", "mcap"] = "sqlite3",
    topic: str = DEFAULT_TOPIC,
    frame_id: str = "camera",
    refs_per_concept: int = 5,
    start_ns: int = DEFAULT_START_NS,
) -> BagLabels:
    """Write a synthetic camera bag with ground truth to ``out``; returns its labels.

    The default is 10 s of 640x480 at 15 fps (raw Image: about 140 MB; ``compressed=True``
    writes JPEG CompressedImage, a few MB). Refuses to overwrite an existing ``out``.
    """
    cfg = SyntheticConfig(
        seed=seed,
        num_frames=num_frames,
        fps=fps,
        width=width,
        height=height,
        compressed=compressed,
        storage=storage,
        topic=topic,
        frame_id=frame_id,
        refs_per_concept=refs_per_concept,
        start_ns=start_ns,
    )
    return write_synthetic_bag(out, cfg)


def write_synthetic_bag(out: Path, cfg: SyntheticConfig) -> BagLabels:
    """Write the synthetic bag described by ``cfg`` to ``out``; returns its labels."""
    rng = np.random.default_rng(cfg.seed)
    world_h, world_w = int(2.4 * cfg.height), int(2.4 * cfg.width)
    world = _background(rng, world_h, world_w)
    placed = _place_objects(rng, world, cfg)
    half = cv2.pyrDown(world)
    path = _camera_path(rng, placed, (world_h, world_w), cfg)  # [N, 3]
    gains = 1.0 + 0.04 * np.sin(np.arange(cfg.num_frames) * rng.uniform(0.2, 0.5))
    stamps = [cfg.start_ns + round(i * _NS / cfg.fps) for i in range(cfg.num_frames)]

    frames: list[FrameLabel] = []
    for i, cam in enumerate(path):
        boxes = []
        for p in placed:
            vis = _visible_box(p.box, tuple(cam), cfg)
            if vis is not None:
                boxes.append(Box(p.spec.name, tuple(round(float(v), 1) for v in vis)))
        frames.append(FrameLabel(stamps[i], tuple(b.concept for b in boxes), tuple(boxes)))

    def stream() -> Iterator[tuple[np.ndarray, int, str]]:
        for i, cam in enumerate(path):
            yield _render(world, half, tuple(cam), cfg, float(gains[i])), stamps[i], cfg.frame_id

    vqa, captions = _questions(rng, frames, cfg.width)
    with staged_bag_dir(Path(out)) as staging:
        write_image_bag(
            staging, stream(), cfg.topic, compressed=cfg.compressed, storage=cfg.storage
        )
        concepts = []
        for p in placed:
            refs: list[RefView] = []
            for k in range(cfg.refs_per_concept):
                view, source = _ref_render(p, rng, k, world)
                refs.append(write_reference(staging, p.spec.name, f"ref_{k}", view, source))
            concepts.append(ConceptLabel(p.spec.name, tuple(refs), p.spec.description))
        labels = BagLabels(
            topic=image_topic(cfg.topic, cfg.compressed),
            concepts=tuple(concepts),
            frames=tuple(frames),
            vqa=tuple(vqa),
            captions=tuple(captions),
            source=SourceInfo(
                dataset="synthetic",
                seed=cfg.seed,
                refs=cfg.refs_per_concept,
                details={
                    "generator": "ego_ros.bag.synthetic/1",
                    "width": cfg.width,
                    "height": cfg.height,
                    "fps": cfg.fps,
                    "num_frames": cfg.num_frames,
                    "visible_fraction": _VISIBLE_FRACTION,
                },
            ),
        )
        save_labels(staging, labels)
    logger.info(
        "synthetic bag %s: %d frames, concepts %s", out, cfg.num_frames, labels.concept_names
    )
    return labels

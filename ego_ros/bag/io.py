"""Camera bags on disk: write and read rosbag2 folders of Image/CompressedImage without ROS.

Everything here goes through the pure-Python ``rosbags`` library, so bags can be made and read on
a laptop with no ROS installation, while the result is a real rosbag2 folder (``metadata.yaml``
plus an sqlite3 ``.db3`` or an ``.mcap`` file, message definitions and type hashes embedded)
that stock ``ros2 bag info`` / ``ros2 bag play`` accept. Pixels are RGB ``uint8`` arrays
``[H, W, 3]`` on the Python side whatever the recorded encoding.

    frames = [(rgb, stamp_ns, "camera"), ...]
    write_image_bag(Path("demo_bag"), frames, compressed=True)
    for frame in read_image_bag(Path("demo_bag")):
        ...

The converters (:func:`image_msg_to_rgb`, :func:`compressed_msg_to_rgb`) are duck-typed on the
message fields, so they work on ``rosbags`` message objects and on rclpy messages alike. They
check each frame's declared size before decoding it, as the node does: a bag is a file anyone
may hand over, and a 49 KB PNG can declare a 1.2 GB image. The limit is an
:class:`~ego_ros.imaging.ImageLimits` (default :data:`~ego_ros.imaging.DEFAULT_LIMITS`: the
node's default ``image.max_pixels``, 4096x4096); a frame over it is a :class:`BagError`.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from ego_ros.imaging import (
    DEFAULT_LIMITS,
    ImageConversionError,
    ImageLimits,
    compressed_to_rgb,
    raw_to_rgb,
)

__all__ = [
    "COMPRESSED_IMAGE_TYPE",
    "DEFAULT_START_NS",
    "DEFAULT_TOPIC",
    "IMAGE_EXTENSIONS",
    "IMAGE_TYPE",
    "BadFrame",
    "BagError",
    "BagFrame",
    "bag_info",
    "compressed_codec",
    "compressed_msg_to_rgb",
    "frames_from_video",
    "from_images",
    "from_video",
    "image_files",
    "image_msg_to_rgb",
    "image_topic",
    "images_from_dir",
    "load_rgb",
    "read_image_bag",
    "resize_max_side",
    "staged_bag_dir",
    "write_image_bag",
]

logger = logging.getLogger(__name__)

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
DEFAULT_TOPIC = "/camera/image_raw"
# Bags made from image folders and videos get fixed, plausible wall-clock stamps (2023-11-14)
# rather than "now", so the same input always gives the same bag.
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# Newest rosbag2 metadata format, the one Jazzy's rosbag2 (0.26) writes and reads.
_BAG_VERSION = 9
_NS = 1_000_000_000

# What a camera driver typically offers (reliable, volatile, keep last 10): a reliable publisher
# matches both reliable and best-effort (sensor-data) subscribers when the bag is played back.
_CAMERA_QOS = Qos(
    QosHistory.KEEP_LAST,
    10,
    QosReliability.RELIABLE,
    QosDurability.VOLATILE,
    QosTime(0, 0),
    QosTime(0, 0),
    QosLiveliness.AUTOMATIC,
    QosTime(0, 0),
    False,
)


class BagError(RuntimeError):
    """A bag could not be written or read; the message says what to change."""


@dataclass(frozen=True)
class BagFrame:
    """One camera frame from a bag.

    ``stamp_ns`` is the header stamp (when the camera saw it; what ground truth is keyed on),
    ``log_time_ns`` the time the recorder received it (what playback timing follows), and
    ``encoding`` the recorded pixel encoding ("rgb8", "bgr8", "mono8", ...) or, for
    CompressedImage, the codec ("jpeg", "png").
    """

    rgb: np.ndarray  # [H, W, 3] uint8
    stamp_ns: int
    frame_id: str
    log_time_ns: int
    encoding: str


@functools.cache
def _typestore() -> Typestore:
    """The Jazzy type store, built once (building it generates code for every message type)."""
    return get_typestore(Stores.ROS2_JAZZY)


# ----------------------------------------------------------------------------------------------
# Pixel conversions (duck-typed on message fields)
# ----------------------------------------------------------------------------------------------

def image_msg_to_rgb(msg: Any, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Pixels of a ``sensor_msgs/Image`` as RGB ``[H, W, 3] uint8`` (``ego_ros.imaging``: the
    node's converter, so a frame decodes the same live and from a bag), within ``limits``."""
    try:
        return raw_to_rgb(msg, limits=limits)
    except ImageConversionError as exc:
        raise BagError(str(exc)) from exc


def compressed_codec(fmt: str) -> str:
    """The codec named by a CompressedImage ``format`` ("rgb8; jpeg compressed bgr8" -> "jpeg")."""
    lowered = fmt.lower()
    if "png" in lowered:
        return "png"
    if "jpeg" in lowered or "jpg" in lowered:
        return "jpeg"
    return lowered.strip() or "unknown"


def compressed_msg_to_rgb(msg: Any, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Pixels of a ``sensor_msgs/CompressedImage`` (JPEG or PNG) as RGB ``[H, W, 3] uint8``;
    the size its header declares must be within ``limits`` (checked before decoding)."""
    try:
        return compressed_to_rgb(msg, limits=limits)
    except ImageConversionError as exc:
        raise BagError(str(exc)) from exc


def _check_rgb(rgb: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise BagError(f"{what} must be a uint8 array [H, W, 3], got {arr.dtype} {arr.shape}")
    return arr


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


@contextmanager
def staged_bag_dir(out: Path) -> Iterator[Path]:
    """Build a bag folder next to ``out`` and move it into place only when complete.

    Yields a path that does not exist yet (the rosbags writer insists on creating it). A crash
    or error leaves no half-written bag at ``out``; refusing an existing ``out`` up front keeps
    a user's recording from being overwritten.
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(
            f"bag folder {out} already exists; choose another output path or delete it first"
        )
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    holder = parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    holder.mkdir()
    staging = holder / out.name
    try:
        yield staging
        if not staging.is_dir():
            raise BagError(f"nothing was written for bag {out}")
        if out.exists():
            raise FileExistsError(f"bag folder {out} appeared while writing; not overwriting it")
        os.rename(staging, out)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def _image_message(rgb: np.ndarray, stamp_ns: int, frame_id: str, encoding: str) -> Any:
    types = _typestore().types
    header = _header(stamp_ns, frame_id)
    if encoding == "mono8":
        arr = np.asarray(rgb)
        gray = arr if arr.ndim == 2 else cv2.cvtColor(_check_rgb(arr, "frame"), cv2.COLOR_RGB2GRAY)
        if gray.dtype != np.uint8:
            raise BagError(f"mono8 frames must be uint8, got {gray.dtype}")
        pixels = np.ascontiguousarray(gray)  # [H, W]
        channels = 1
    else:
        arr = _check_rgb(rgb, "frame")
        pixels = np.ascontiguousarray(arr if encoding == "rgb8" else arr[:, :, ::-1])  # [H, W, 3]
        channels = 3
    height, width = pixels.shape[:2]
    return types[IMAGE_TYPE](
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels,
        data=pixels.reshape(-1),
    )


def _compressed_message(
    rgb: np.ndarray, stamp_ns: int, frame_id: str, codec: str, jpeg_quality: int
) -> Any:
    bgr = cv2.cvtColor(_check_rgb(rgb, "frame"), cv2.COLOR_RGB2BGR)
    if codec == "jpeg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    else:
        ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise BagError(f"OpenCV could not encode a {bgr.shape} frame as {codec}")
    # The format string image_transport's compressed publisher writes for an rgb8 source, so
    # its subscriber (and rqt/RViz) decode it back to rgb8.
    return _typestore().types[COMPRESSED_IMAGE_TYPE](
        header=_header(stamp_ns, frame_id),
        format=f"rgb8; {codec} compressed bgr8",
        data=np.asarray(buf, dtype=np.uint8).reshape(-1),
    )


def _header(stamp_ns: int, frame_id: str) -> Any:
    types = _typestore().types
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0 or stamp_ns // _NS >= 2**31:
        raise BagError(f"stamp {stamp_ns} ns does not fit a ROS 2 Time (int32 seconds, >= 0)")
    stamp = types["builtin_interfaces/msg/Time"](sec=stamp_ns // _NS, nanosec=stamp_ns % _NS)
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=str(frame_id))


def image_topic(topic: str, compressed: bool) -> str:
    """The topic frames are written on: ``<topic>/compressed`` for CompressedImage, as
    image_transport names it (unless ``topic`` already ends that way)."""
    if compressed and not topic.endswith("/compressed"):
        return f"{topic}/compressed"
    return topic


def write_image_bag(
    out: Path,
    frames: Iterable[tuple[np.ndarray, int, str]],
    topic: str = DEFAULT_TOPIC,
    *,
    compressed: bool = False,
    compressed_format: Literal["jpeg", "png"] = "jpeg",
    storage: Literal["sqlite3", "mcap"] = "sqlite3",
    encoding: Literal["rgb8", "bgr8", "mono8"] = "rgb8",
    jpeg_quality: int = 90,
) -> int:
    """Write ``(rgb [H, W, 3] uint8, stamp_ns, frame_id)`` frames as a rosbag2 folder at ``out``.

    Raw frames become ``sensor_msgs/msg/Image`` in ``encoding``; with ``compressed`` they become
    ``sensor_msgs/msg/CompressedImage`` on ``<topic>/compressed`` (the image_transport naming),
    JPEG or PNG. Each message is logged at its header stamp. Returns the number of frames.
    Refuses to overwrite an existing ``out``.
    """
    if storage not in ("sqlite3", "mcap"):
        raise BagError(f"storage must be 'sqlite3' or 'mcap', got {storage!r}")
    if encoding not in ("rgb8", "bgr8", "mono8"):
        raise BagError(f"encoding must be 'rgb8', 'bgr8' or 'mono8', got {encoding!r}")
    if compressed_format not in ("jpeg", "png"):
        raise BagError(f"compressed_format must be 'jpeg' or 'png', got {compressed_format!r}")
    if not 1 <= int(jpeg_quality) <= 100:
        raise BagError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    if not topic.startswith("/"):
        raise BagError(f"topic must be an absolute ROS name starting with '/', got {topic!r}")
    topic = image_topic(topic, compressed)
    msgtype = COMPRESSED_IMAGE_TYPE if compressed else IMAGE_TYPE
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    typestore = _typestore()
    count = 0
    with staged_bag_dir(Path(out)) as staging:
        with Writer(staging, version=_BAG_VERSION, storage_plugin=plugin) as writer:
            conn = writer.add_connection(
                topic, msgtype, typestore=typestore, offered_qos_profiles=[_CAMERA_QOS]
            )
            for rgb, stamp_ns, frame_id in frames:
                if compressed:
                    msg = _compressed_message(
                        rgb, stamp_ns, frame_id, compressed_format, int(jpeg_quality)
                    )
                else:
                    msg = _image_message(rgb, stamp_ns, frame_id, encoding)
                writer.write(conn, int(stamp_ns), typestore.serialize_cdr(msg, msgtype))
                count += 1
        if count == 0:
            raise BagError(f"no frames to write to {out}")
    logger.info("wrote %d frames to %s (%s on %s, %s)", count, out, msgtype, topic, storage)
    return count


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def _open_reader(path: Path) -> AnyReader:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bag {path} does not exist")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise BagError(f"{path} is not a rosbag2 folder (no metadata.yaml)")
    try:
        # Bags recorded by Humble and older carry no message definitions: fall back to Jazzy's.
        return AnyReader([path], default_typestore=_typestore())
    except AnyReaderError as exc:
        raise BagError(f"cannot open bag {path}: {exc}") from exc


def _image_topics(reader: AnyReader) -> dict[str, str]:
    return {
        name: info.msgtype
        for name, info in reader.topics.items()
        if info.msgtype in (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
    }


def _pick_topic(reader: AnyReader, path: Path, topic: str | None) -> tuple[str, str]:
    topics = _image_topics(reader)
    if topic is not None:
        if topic not in topics:
            raise BagError(
                f"bag {path} has no Image/CompressedImage topic {topic!r}; "
                f"image topics: {sorted(topics) or 'none'}"
            )
        return topic, topics[topic]
    if len(topics) != 1:
        if not topics:
            raise BagError(
                f"bag {path} has no sensor_msgs Image or CompressedImage topic "
                f"(topics: {sorted(reader.topics)})"
            )
        raise BagError(
            f"bag {path} has {len(topics)} image topics; choose one with topic=: "
            + ", ".join(f"{name} ({typ})" for name, typ in sorted(topics.items()))
        )
    return next(iter(topics.items()))


@dataclass(frozen=True)
class BadFrame:
    """A message of an image topic that could not be read: where it is and why."""

    topic: str
    index: int  # position among the topic's messages, from 0
    log_time_ns: int
    stamp_ns: int | None  # header stamp, when the message itself could be deserialised
    reason: str


def read_image_bag(path: Path, topic: str | None = None,
                   on_bad_frame: Callable[[BadFrame], None] | None = None,
                   limits: ImageLimits = DEFAULT_LIMITS) -> Iterator[BagFrame]:
    """Frames of one Image or CompressedImage topic of any rosbag2 (sqlite3 or MCAP), in log order.

    With ``topic=None`` the bag must have exactly one image topic; otherwise the error lists the
    candidates. Frames are decoded lazily, one at a time, so long bags stream. A message that
    cannot be deserialised or decoded raises :class:`BagError`, or, with ``on_bad_frame``, is
    handed to it as a :class:`BadFrame` and skipped. A frame whose declared size is outside
    ``limits`` is refused before it is decoded.
    """
    path = Path(path)
    reader = _open_reader(path)
    try:
        with reader:
            name, msgtype = _pick_topic(reader, path, topic)
            conns = [c for c in reader.connections if c.topic == name]
            for index, (conn, log_time, raw) in enumerate(reader.messages(connections=conns)):
                msg: Any = None
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                    if msgtype == COMPRESSED_IMAGE_TYPE:
                        rgb = compressed_msg_to_rgb(msg, limits)
                        encoding = compressed_codec(str(msg.format))
                    else:
                        rgb = image_msg_to_rgb(msg, limits)
                        encoding = str(msg.encoding)
                except Exception as exc:  # any defect of one message: CDR, pixels, codec
                    if on_bad_frame is None:
                        raise BagError(f"{path}: message {index} on {name} cannot be read: "
                                       f"{exc if isinstance(exc, BagError) else repr(exc)}"
                                       ) from exc
                    header = getattr(msg, "header", None)
                    stamp_ns = (int(header.stamp.sec) * _NS + int(header.stamp.nanosec)
                                if header is not None else None)
                    reason = str(exc) if isinstance(exc, BagError) else (
                        f"{type(exc).__name__}: {exc}")
                    on_bad_frame(BadFrame(name, index, int(log_time), stamp_ns, reason))
                    continue
                stamp = msg.header.stamp
                yield BagFrame(
                    rgb=rgb,
                    stamp_ns=int(stamp.sec) * _NS + int(stamp.nanosec),
                    frame_id=str(msg.header.frame_id),
                    log_time_ns=int(log_time),
                    encoding=encoding,
                )
    except AnyReaderError as exc:
        raise BagError(f"cannot read bag {path}: {exc}") from exc


def bag_info(path: Path) -> dict[str, Any]:
    """Summary of a bag: storage, topics (type, message count), start/end/duration in ns.

    ``start_ns``/``end_ns`` are the log times of the first and last message, so
    ``duration_ns`` matches what ``ros2 bag info`` prints.
    """
    path = Path(path)
    reader = _open_reader(path)
    try:
        with reader:
            topics = [
                {"name": name, "type": info.msgtype, "count": int(info.msgcount)}
                for name, info in sorted(reader.topics.items())
            ]
            count = int(reader.message_count)
            start = int(reader.start_time) if count else 0
            # rosbags' end_time is one past the last message; report the last message's time.
            end = int(reader.end_time) - 1 if count else 0
    except AnyReaderError as exc:
        raise BagError(f"cannot read bag {path}: {exc}") from exc
    suffixes = {p.suffix for p in path.iterdir()} if path.is_dir() else {path.suffix}
    return {
        "path": str(path),
        "storage": "mcap" if ".mcap" in suffixes else "sqlite3",
        "message_count": count,
        "topics": topics,
        "image_topics": sorted(
            t["name"] for t in topics if t["type"] in (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE)
        ),
        "start_ns": start,
        "end_ns": end,
        "duration_ns": max(0, end - start),
    }


# ----------------------------------------------------------------------------------------------
# Image folders and videos
# ----------------------------------------------------------------------------------------------


def _natural_key(path: Path) -> list[Any]:
    """Sort key that puts frame_2 before frame_10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def image_files(dirs: Sequence[Path] | Path) -> list[Path]:
    """Image files (jpg/jpeg/png/bmp) of each folder in natural order, folders in given order."""
    folders = [Path(dirs)] if isinstance(dirs, (str, Path)) else [Path(d) for d in dirs]
    files: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {folder} does not exist or is not a folder")
        found = sorted(
            (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
            key=_natural_key,
        )
        if not found:
            raise BagError(f"no {'/'.join(IMAGE_EXTENSIONS)} images in {folder}")
        files.extend(found)
    return files


def load_rgb(path: Path, max_side: int | None = None) -> np.ndarray:
    """Read an image file as RGB ``[H, W, 3] uint8``, shrunk so its longer side <= max_side."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise BagError(f"cannot read image {path} (not an image OpenCV can decode?)")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return resize_max_side(rgb, max_side)


def resize_max_side(rgb: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink (never enlarge) so the longer side is at most ``max_side``; keeps aspect ratio."""
    if max_side is None:
        return rgb
    if max_side < 1:
        raise BagError(f"max_side must be >= 1, got {max_side}")
    height, width = rgb.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return rgb
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def images_from_dir(
    dirs: Sequence[Path] | Path, max_side: int | None = None
) -> Iterator[np.ndarray]:
    """RGB frames of the image files in ``dirs`` (see :func:`image_files` for the order)."""
    for path in image_files(dirs):
        yield load_rgb(path, max_side)


def frames_from_video(path: Path, fps: float | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """``(rgb [H, W, 3], offset_ns)`` frames of a video file, read with OpenCV.

    ``fps=None`` keeps every frame at the video's own timing; a lower ``fps`` keeps the first
    frame of each 1/fps slot and stamps it at the slot start, so a 30 fps video at ``fps=5``
    gives every sixth frame, 200 ms apart.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    if fps is not None and fps <= 0:
        raise BagError(f"fps must be > 0, got {fps}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise BagError(f"OpenCV cannot open video {path} (unsupported container or codec?)")
    try:
        src_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not np.isfinite(src_fps) or src_fps <= 0:
            if fps is None:
                raise BagError(f"video {path} does not report its frame rate; pass fps explicitly")
            src_fps = fps
        last_slot = -1
        index = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            t_ns = round(index * _NS / src_fps)
            index += 1
            if fps is None:
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), t_ns
                continue
            slot = int(t_ns * fps // _NS)
            if slot > last_slot:
                last_slot = slot
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), round(slot * _NS / fps)
        if index == 0:
            raise BagError(f"video {path} has no readable frames")
    finally:
        cap.release()


def from_images(
    dirs: Sequence[Path] | Path,
    out: Path,
    topic: str = DEFAULT_TOPIC,
    fps: float = 15.0,
    compressed: bool = False,
    *,
    frame_id: str = "camera",
    start_ns: int = DEFAULT_START_NS,
    max_side: int | None = None,
    storage: Literal["sqlite3", "mcap"] = "sqlite3",
) -> int:
    """Bag of the images in ``dirs`` as a camera stream at ``fps``; returns the frame count."""
    if fps <= 0:
        raise BagError(f"fps must be > 0, got {fps}")
    frames = (
        (rgb, start_ns + round(i * _NS / fps), frame_id)
        for i, rgb in enumerate(images_from_dir(dirs, max_side))
    )
    return write_image_bag(out, frames, topic, compressed=compressed, storage=storage)


def from_video(
    path: Path,
    out: Path,
    topic: str = DEFAULT_TOPIC,
    fps: float | None = None,
    compressed: bool = False,
    *,
    frame_id: str = "camera",
    start_ns: int = DEFAULT_START_NS,
    max_side: int | None = None,
    storage: Literal["sqlite3", "mcap"] = "sqlite3",
) -> int:
    """Bag of a video file's frames (optionally resampled to ``fps``); returns the frame count."""
    frames = (
        (resize_max_side(rgb, max_side), start_ns + offset, frame_id)
        for rgb, offset in frames_from_video(path, fps)
    )
    return write_image_bag(out, frames, topic, compressed=compressed, storage=storage)

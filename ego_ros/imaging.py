"""Camera image decoding without ROS: message fields in, RGB ``[H, W, 3] uint8`` out.

Shared by the node (``ego_ros.ros.convert``, rclpy messages) and the bag tools
(``ego_ros.bag.io``, rosbags messages): both message kinds have the same fields, so one
duck-typed converter serves both and a frame decodes the same way live and offline.

Supported ``sensor_msgs/Image`` encodings (exact ROS strings):

- ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``
- ``mono16`` / ``16UC1`` (``is_bigendian`` honoured), scaled to 8 bits by 255/65535, rounded
- ``yuv422`` / ``uyvy`` (U Y0 V Y1) and ``yuv422_yuy2`` / ``yuyv`` (Y0 U Y1 V), decoded as
  ITU-R BT.601 limited range like OpenCV (and so cv_bridge); 4:2:2 needs an even width
- ``8UC3`` and ``8UC1``, generic OpenCV types, taken as ``bgr8`` and ``mono8``

``step`` (bytes per row) is honoured, so row-padded images decode correctly; bytes beyond
``step * height`` are ignored. Every result is a fresh C-contiguous array that never aliases
the message's data. ``sensor_msgs/CompressedImage`` JPEG and PNG are decoded with OpenCV.

Every frame's declared size is checked against an :class:`ImageLimits` (pixel cap, smallest
side; :data:`DEFAULT_LIMITS` unless the caller passes its own) before a pixel is touched:
for raw images from ``width`` and ``height``, for compressed ones from the PNG or JPEG header
(``ego_ros.image_header``), so a small file declaring a huge image is never decoded. Other
compressed formats are refused. A refused size raises :class:`FrameSizeError`, a kind of
:class:`ImageConversionError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ego_ros.image_header import (
    DEFAULT_LIMITS,
    FrameSizeError,
    ImageConversionError,
    ImageLimits,
    declared_size,
)

__all__ = [
    "DEFAULT_LIMITS",
    "SUPPORTED_ENCODINGS",
    "FrameSizeError",
    "ImageConversionError",
    "ImageLimits",
    "compressed_to_rgb",
    "raw_to_rgb",
    "validated_bytes",
]


@dataclass(frozen=True)
class _Encoding:
    bytes_per_pixel: int
    channels: int  # channels as stored; 2 for packed YUV 4:2:2 (one Y plus half a chroma pair)
    cv_code: int | None  # cv2.cvtColor code to RGB; None = already RGB (rgb8) or special (mono16)


_ENCODINGS: dict[str, _Encoding] = {
    "rgb8": _Encoding(3, 3, None),
    "bgr8": _Encoding(3, 3, cv2.COLOR_BGR2RGB),
    "8UC3": _Encoding(3, 3, cv2.COLOR_BGR2RGB),
    "rgba8": _Encoding(4, 4, cv2.COLOR_RGBA2RGB),
    "bgra8": _Encoding(4, 4, cv2.COLOR_BGRA2RGB),
    "mono8": _Encoding(1, 1, cv2.COLOR_GRAY2RGB),
    "8UC1": _Encoding(1, 1, cv2.COLOR_GRAY2RGB),
    "mono16": _Encoding(2, 1, None),
    "16UC1": _Encoding(2, 1, None),
    "yuv422": _Encoding(2, 2, cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": _Encoding(2, 2, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": _Encoding(2, 2, cv2.COLOR_YUV2RGB_YUYV),
    "yuyv": _Encoding(2, 2, cv2.COLOR_YUV2RGB_YUYV),
}
_YUV422 = frozenset({"yuv422", "uyvy", "yuv422_yuy2", "yuyv"})

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)


def raw_to_rgb(msg: Any, flat: np.ndarray | None = None, *,
               limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` (rclpy or rosbags) into a fresh ``[H, W, 3] uint8`` RGB
    array; :class:`ImageConversionError` for an unknown encoding, a malformed message or a
    size outside ``limits``. ``flat`` is the data as :func:`validated_bytes` returned it, when
    the caller checked it (``limits`` included)."""
    encoding = str(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if flat is None:
        flat = validated_bytes(msg, encoding, height, width, step, False, limits)  # [N] uint8
    spec = _ENCODINGS[encoding]  # known: checked by validated_bytes
    rows = flat[: step * height].reshape(height, step)  # [H, step], zero-copy view
    pixels = rows[:, : width * spec.bytes_per_pixel]  # [H, W * bpp], rows may be strided
    if encoding in ("mono16", "16UC1"):
        big = bool(msg.is_bigendian)
        mono = pixels.view(">u2" if big else "<u2").astype(np.uint16)  # [H, W] native order
        mono8 = cv2.convertScaleAbs(mono, alpha=255.0 / 65535.0)  # [H, W] uint8, rounded
        return cv2.cvtColor(mono8, cv2.COLOR_GRAY2RGB)  # [H, W, 3]
    if encoding in _YUV422 and width % 2:
        raise ImageConversionError(
            f"encoding {encoding!r} packs pixel pairs and needs an even width, got width={width}"
        )
    shaped = pixels.reshape(height, width, spec.channels)  # [H, W, C], still a view
    if spec.cv_code is None:  # rgb8
        return shaped.copy()  # C-contiguous, never aliases msg.data
    src = shaped[:, :, 0] if spec.channels == 1 else shaped  # cv2 wants [H, W] for one channel
    return cv2.cvtColor(src, spec.cv_code)  # [H, W, 3], a new buffer


def validated_bytes(
    msg: Any, encoding: str, height: int, width: int, step: int, bridge_decodes: bool,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> np.ndarray:
    """Check the message geometry and its declared size against ``limits``, and return its
    data as a flat uint8 view (no copy).

    An encoding unknown here is left to cv_bridge when it will decode the frame (it knows more,
    e.g. Bayer patterns); the row-length check then needs cv_bridge's own knowledge.
    """
    if height <= 0 or width <= 0:
        raise ImageConversionError(
            f"image has zero size: width={width}, height={height} (encoding {encoding!r})"
        )
    limits.check(width, height, f"sensor_msgs/Image ({encoding!r})")
    spec = _ENCODINGS.get(encoding)
    if spec is None and not bridge_decodes:
        raise ImageConversionError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(_ENCODINGS)}"
        )
    if spec is not None and step < width * spec.bytes_per_pixel:
        raise ImageConversionError(
            f"step={step} is shorter than one row of {encoding!r} pixels: width={width} x "
            f"{spec.bytes_per_pixel} bytes = {width * spec.bytes_per_pixel}"
        )
    try:
        flat = np.frombuffer(msg.data, dtype=np.uint8)  # [N] zero-copy view of the message
    except (TypeError, ValueError) as exc:
        raise ImageConversionError(f"image data is not a byte buffer: {exc}") from exc
    if flat.size < step * height:
        raise ImageConversionError(
            f"image data truncated: {flat.size} bytes < step={step} x height={height} = "
            f"{step * height} (encoding {encoding!r}, width={width})"
        )
    return flat


def compressed_to_rgb(msg: Any, *, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode a JPEG/PNG ``sensor_msgs/CompressedImage`` into ``[H, W, 3] uint8`` RGB.

    The size the PNG/JPEG header declares is checked against ``limits`` first
    (:class:`FrameSizeError`); data that is neither PNG nor JPEG is refused whatever
    ``format`` says. Grey images come back as three equal channels and alpha is dropped.
    Depth images from ``compressed_depth_image_transport`` (format containing
    ``compressedDepth``) are refused.
    """
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower():
        raise ImageConversionError(f"compressed depth images are not supported (format {fmt!r})")
    try:
        buf = np.frombuffer(msg.data, dtype=np.uint8)  # [N] zero-copy
    except (TypeError, ValueError) as exc:
        raise ImageConversionError(f"compressed image data is not a byte buffer: {exc}") from exc
    if buf.size == 0:
        raise ImageConversionError(f"compressed image is empty (format {fmt!r})")
    try:
        declared = declared_size(buf)
    except ImageConversionError as exc:
        raise type(exc)(f"{exc} (format {fmt!r}, {buf.size} bytes)") from None
    limits.check(declared.width, declared.height, f"{declared.codec.upper()} header")
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # [H, W, 3] BGR or None
    if bgr is None:
        raise ImageConversionError(
            f"cannot decode compressed image: {buf.size} bytes, format {fmt!r}, "
            f"first bytes {bytes(buf[:8]).hex()}"
        )
    # EXIF orientation may swap the sides; the pixel count is what the header declared.
    if sorted(bgr.shape[:2]) != sorted((declared.height, declared.width)):
        raise ImageConversionError(
            f"{declared.codec.upper()} header declares {declared.width}x{declared.height} but "
            f"decoded to {bgr.shape[1]}x{bgr.shape[0]} (format {fmt!r})"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # [H, W, 3]

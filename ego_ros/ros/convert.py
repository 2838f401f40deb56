"""Conversions between ROS 2 image/time messages and NumPy RGB arrays.

The node receives ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` and the engine wants
``[H, W, 3] uint8`` RGB arrays. On a full ROS 2 install ``cv_bridge`` is used when it imports and
passes a one-off self-check; the PyPI ROS wheels have no ``cv_bridge`` for ROS 2 (and the PyPI
package of that name is a ROS 1 port that breaks on NumPy 2), so the module carries its own
converter. Both paths validate the message's geometry first, so a malformed frame always raises
:class:`ImageConversionError` with the same message, whichever converter is active.

The own converter supports (exact ROS encoding strings):

- ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``
- ``mono16`` (``is_bigendian`` honoured), scaled to 8 bits by 255/65535 with rounding
- ``yuv422`` / ``uyvy`` (byte order U Y0 V Y1) and ``yuv422_yuy2`` / ``yuyv`` (Y0 U Y1 V),
  decoded as ITU-R BT.601 limited ("video") range, as OpenCV and hence ``cv_bridge`` do;
  4:2:2 needs an even width
- ``8UC3`` and ``8UC1``, the generic OpenCV types some drivers publish, taken as ``bgr8`` and
  ``mono8`` (OpenCV's own channel order); ``cv_bridge`` refuses to colour-convert these, so they
  always go through the own converter.

``step`` (bytes per row, ``>= width * bytes_per_pixel``) is honoured, so row-padded images
decode correctly; bytes of ``data`` beyond ``step * height`` are ignored. Every returned array is
a fresh C-contiguous ``[H, W, 3] uint8`` buffer that never aliases ``msg.data``: the node keeps
frames in a ring buffer long after the message object is gone or reused.

Before any pixel is decoded, the size a frame declares (``width``/``height``, or the PNG/JPEG
header of a compressed one) is checked against an :class:`ImageLimits`: a pixel cap and the
smallest side (the node passes ``image.max_pixels`` and the model's minimum). A refused frame
raises :class:`FrameSizeError`, a kind of :class:`ImageConversionError`.
"""

from __future__ import annotations

import array
import functools
import logging
from typing import Any

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ego_ros.imaging import (  # noqa: F401 (errors, limits, SUPPORTED_ENCODINGS: API)
    DEFAULT_LIMITS,
    SUPPORTED_ENCODINGS,
    FrameSizeError,
    ImageConversionError,
    ImageLimits,
    compressed_to_rgb,
    raw_to_rgb,
    validated_bytes,
)

_LOG = logging.getLogger(__name__)

_NS_PER_S = 1_000_000_000
_INT32_MAX = 2**31 - 1


# Encodings cv_bridge will not colour-convert ("not a color format"): always decoded here.
_OWN_ONLY = frozenset({"8UC3", "8UC1"})


# --------------------------------------------------------------------------- raw images


def image_msg_to_rgb(msg: Image, *, prefer_cv_bridge: bool = True,
                     limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` into a fresh ``[H, W, 3] uint8`` RGB array.

    ``prefer_cv_bridge=False`` forces the project's own converter (tests use it to exercise that
    code on machines where ``cv_bridge`` exists). Raises :class:`ImageConversionError` for an
    unknown encoding, zero width/height, a ``step`` shorter than a row of pixels, or ``data``
    shorter than ``step * height``; :class:`FrameSizeError` (a kind of it) when
    ``width x height`` is outside ``limits``, whichever converter is active.
    """
    encoding = str(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    bridge = _cv_bridge() if prefer_cv_bridge and encoding not in _OWN_ONLY else None
    flat = validated_bytes(msg, encoding, height, width, step, bridge is not None,
                           limits)  # [N] uint8
    if bridge is not None:
        return _via_cv_bridge(bridge, msg, flat)
    return raw_to_rgb(msg, flat)  # already validated: no second pass over the message


def _via_cv_bridge(bridge: tuple[Any, type], msg: Image, flat: np.ndarray) -> np.ndarray:
    converter, bridge_error = bridge
    try:
        out = np.asarray(converter.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    except bridge_error as exc:
        raise ImageConversionError(f"cv_bridge cannot convert {msg.encoding!r}: {exc}") from exc
    except Exception as exc:  # cv2.error, or a bridge bug on an odd frame: still a bad frame
        raise ImageConversionError(f"cv_bridge failed on {msg.encoding!r}: "
                                   f"{type(exc).__name__}: {exc}") from exc
    expected = (int(msg.height), int(msg.width), 3)
    if out.shape != expected or out.dtype != np.uint8:
        raise ImageConversionError(
            f"cv_bridge returned {out.dtype} {out.shape} for {msg.encoding!r}, "
            f"expected uint8 {expected}"
        )
    if not out.flags.c_contiguous or np.may_share_memory(out, flat):
        out = out.copy()  # cv_bridge returns a view of msg.data when no conversion is needed
    return out


@functools.lru_cache(maxsize=1)
def _cv_bridge() -> tuple[Any, type] | None:
    """``(CvBridge(), CvBridgeError)`` when a working ROS 2 cv_bridge is importable, else None.

    Any failure on import falls back to the own converter (a missing package, a broken install,
    or the ROS 1 port from PyPI). The bridge must also decode a tiny padded bgr8 probe exactly:
    that rejects the ROS 1 port, which imports but fails at run time under NumPy 2.
    """
    try:
        from cv_bridge import CvBridge, CvBridgeError
    except Exception as exc:  # any import failure means "no bridge", never a crash
        _LOG.debug("cv_bridge not usable (%s: %s); using the own converter", type(exc).__name__,
                   exc)
        return None
    probe_rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)  # [2, 3, 3]
    probe = rgb_to_image_msg(probe_rgb, encoding="bgr8")
    padded = np.zeros((2, probe.step + 4), np.uint8)  # [H, step + 4]
    padded[:, : probe.step] = np.frombuffer(probe.data, np.uint8).reshape(2, probe.step)
    probe.step += 4
    probe.data = array.array("B", padded.tobytes())
    try:
        bridge = CvBridge()
        ok = np.array_equal(np.asarray(bridge.imgmsg_to_cv2(probe, "rgb8")), probe_rgb)
    except Exception as exc:  # a broken bridge is not fatal: the own converter takes over
        _LOG.warning("cv_bridge imported but failed a self-check (%s: %s); using the own "
                     "converter", type(exc).__name__, exc)
        return None
    if not ok:
        _LOG.warning("cv_bridge decoded a probe image wrongly; using the own converter")
        return None
    _LOG.info("using cv_bridge for sensor_msgs/Image conversion")
    return bridge, CvBridgeError


def rgb_to_image_msg(
    rgb: np.ndarray, encoding: str = "rgb8", header: Header | None = None
) -> Image:
    """Build a ``sensor_msgs/Image`` (``rgb8`` or ``bgr8``, unpadded) from ``[H, W, 3] uint8``."""
    _check_rgb(rgb)
    if encoding == "rgb8":
        pixels = np.ascontiguousarray(rgb)  # [H, W, 3]
    elif encoding == "bgr8":
        pixels = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)  # [H, W, 3]
    else:
        raise ValueError(f"encoding must be 'rgb8' or 'bgr8', got {encoding!r}")
    height, width = rgb.shape[:2]
    msg = Image()
    if header is not None:
        msg.header = _copy_header(header)
    msg.height, msg.width, msg.encoding = height, width, encoding
    msg.is_bigendian = 0
    msg.step = width * 3
    msg.data = array.array("B", pixels.tobytes())
    return msg


# --------------------------------------------------------------------------- compressed images


def compressed_msg_to_rgb(msg: CompressedImage, *,
                          limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode a JPEG/PNG ``sensor_msgs/CompressedImage`` into ``[H, W, 3] uint8`` RGB (grey
    comes back as three equal channels; ``compressedDepth`` images and other formats are
    refused). The size its header declares is checked against ``limits`` before decoding
    (:class:`FrameSizeError`)."""
    return compressed_to_rgb(msg, limits=limits)


def rgb_to_compressed_msg(
    rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90, header: Header | None = None
) -> CompressedImage:
    """Encode ``[H, W, 3] uint8`` RGB as a JPEG (``quality`` 1..100) or PNG message."""
    _check_rgb(rgb)
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)  # [H, W, 3]
    if fmt == "jpeg":
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"quality must be in 1..100, got {quality}")
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif fmt == "png":
        ok, encoded = cv2.imencode(".png", bgr)
    else:
        raise ValueError(f"fmt must be 'jpeg' or 'png', got {fmt!r}")
    if not ok:
        raise ValueError(f"OpenCV failed to encode a {rgb.shape} image as {fmt}")
    msg = CompressedImage()
    if header is not None:
        msg.header = _copy_header(header)
    msg.format = fmt
    msg.data = array.array("B", encoded.tobytes())
    return msg


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or (
        rgb.shape[2] != 3
    ):
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"rgb must be a uint8 array of shape [H, W, 3], got {got}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"rgb has zero size: shape {rgb.shape}")


def _copy_header(header: Header) -> Header:
    return Header(stamp=Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec),
                  frame_id=header.frame_id)


# --------------------------------------------------------------------------- time


def stamp_to_ns(stamp: Time) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds (exact, no float rounding)."""
    return int(stamp.sec) * _NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds -> ``builtin_interfaces/Time``; ``sec`` must fit its int32 field."""
    sec, nanosec = divmod(int(ns), _NS_PER_S)
    if not 0 <= sec <= _INT32_MAX:
        raise ValueError(f"time {ns} ns is outside builtin_interfaces/Time (0..{_INT32_MAX} s)")
    return Time(sec=sec, nanosec=nanosec)

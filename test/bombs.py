"""Hostile compressed frames for the size-limit tests: small files that declare huge images.

``png_bomb(20000, 20000)`` is a complete, valid 1-bit grey PNG of 20000x20000 black pixels:
about 49 KB on the wire, 1.2 GB as the RGB array OpenCV would decode it to (2.4 GB peak).
``jpeg_declaring`` patches the frame header of a real small JPEG, so the data is what a
decoder would start on. ``png_of`` / ``compressed_msg`` wrap bytes as a CompressedImage.
"""

from __future__ import annotations

import array
import functools
import struct
import zlib

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


@functools.cache
def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit grey PNG of ``width`` x ``height`` zero pixels, deflated at level 9
    (cached: the 20000x20000 one takes a quarter of a second to build)."""
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    deflate = zlib.compressobj(9)
    body = b"".join(deflate.compress(row * min(1000, height - done))
                    for done in range(0, height, 1000)) + deflate.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body)
            + _chunk(b"IEND", b""))


def encoded(rgb: np.ndarray, ext: str, params: tuple[int, ...] = ()) -> bytes:
    """``rgb`` ([H, W, 3] uint8) encoded by OpenCV as ``ext`` (".png", ".jpg", ".bmp", ...)."""
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[..., ::-1]), list(params))
    assert ok, ext
    return buf.tobytes()


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real 16x16 baseline JPEG whose SOF0 header is patched to ``width`` x ``height``."""
    data = bytearray(encoded(np.zeros((16, 16, 3), np.uint8), ".jpg"))
    at = data.index(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height, width
    data[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def compressed_msg(data: bytes, fmt: str = "png", frame_id: str = "") -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.header.frame_id = frame_id
    msg.data = array.array("B", data)
    return msg

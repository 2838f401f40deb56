"""Image and time conversions (ego_ros.ros.convert) on hand-built messages.

Messages are packed here byte by byte from a known RGB image, independently of the module's
own encoders, so a decoding bug cannot cancel out against an encoding bug.
"""

from __future__ import annotations

import array
import struct
import time

import cv2
import numpy as np
import pytest
from bombs import compressed_msg, encoded, jpeg_declaring, png_bomb
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ego_ros.image_header import DEFAULT_MAX_PIXELS, declared_size
from ego_ros.ros.convert import (
    DEFAULT_LIMITS,
    FrameSizeError,
    ImageConversionError,
    ImageLimits,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
    ns_to_stamp,
    rgb_to_compressed_msg,
    rgb_to_image_msg,
    stamp_to_ns,
)

H, W = 6, 8


def known_rgb(height: int = H, width: int = W, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def pair_rgb() -> np.ndarray:
    """Pixels equal in horizontal pairs, so 4:2:2 chroma subsampling loses nothing."""
    half = known_rgb(H, W // 2, seed=1)  # [H, W/2, 3]
    return np.repeat(half, 2, axis=1)  # [H, W, 3]


def make_msg(encoding: str, rows: np.ndarray, pad: int, bigendian: bool = False) -> Image:
    """An Image from packed rows ``[H, W * bpp] uint8``, with ``pad`` garbage bytes per row."""
    height, row_bytes = rows.shape
    padded = np.full((height, row_bytes + pad), 0xAB, np.uint8)  # [H, step]
    padded[:, :row_bytes] = rows
    msg = Image()
    msg.height, msg.encoding, msg.is_bigendian = height, encoding, int(bigendian)
    msg.step = row_bytes + pad
    msg.data = array.array("B", padded.tobytes())
    return msg


def bt601_yuv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ITU-R BT.601 limited-range Y, U, V planes ``[H, W]`` (float) of an RGB image."""
    r, g, b = (rgb[..., k].astype(np.float64) for k in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    return y, u, v


def pack_422(rgb: np.ndarray, order: str) -> np.ndarray:
    """Packed 4:2:2 rows ``[H, W * 2]``: ``order`` 'UYVY' or 'YUYV'."""
    y, u, v = (np.clip(np.rint(p), 0, 255).astype(np.uint8) for p in bt601_yuv(rgb))
    out = np.empty((rgb.shape[0], rgb.shape[1] // 2, 4), np.uint8)  # [H, W/2, 4]
    y0, y1, uu, vv = y[:, 0::2], y[:, 1::2], u[:, 0::2], v[:, 0::2]
    parts = (uu, y0, vv, y1) if order == "UYVY" else (y0, uu, y1, vv)
    for k, part in enumerate(parts):
        out[..., k] = part
    return out.reshape(rgb.shape[0], -1)


def encode(encoding: str, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(packed rows, expected RGB, tolerance) for one encoding of ``rgb``."""
    height, width = rgb.shape[:2]
    grey = rgb[..., 1]  # [H, W] a known grey image
    alpha = np.full((height, width, 1), 7, np.uint8)
    if encoding == "rgb8":
        return rgb.reshape(height, -1), rgb, 0
    if encoding in ("bgr8", "8UC3"):
        return rgb[..., ::-1].reshape(height, -1), rgb, 0
    if encoding == "rgba8":
        return np.concatenate([rgb, alpha], 2).reshape(height, -1), rgb, 0
    if encoding == "bgra8":
        return np.concatenate([rgb[..., ::-1], alpha], 2).reshape(height, -1), rgb, 0
    if encoding in ("mono8", "8UC1"):
        return grey, np.repeat(grey[..., None], 3, 2), 0
    if encoding in ("yuv422", "uyvy"):
        return pack_422(rgb, "UYVY"), rgb, 4
    if encoding in ("yuv422_yuy2", "yuyv"):
        return pack_422(rgb, "YUYV"), rgb, 4
    raise AssertionError(encoding)


ENCODINGS_8BIT = ["rgb8", "bgr8", "8UC3", "rgba8", "bgra8", "mono8", "8UC1"]
ENCODINGS_422 = ["yuv422", "uyvy", "yuv422_yuy2", "yuyv"]


@pytest.mark.parametrize("prefer_cv_bridge", [True, False], ids=["auto", "own"])
@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("encoding", ENCODINGS_8BIT + ENCODINGS_422)
def test_encodings_decode_to_known_rgb(encoding, pad, prefer_cv_bridge):
    rgb = pair_rgb() if encoding in ENCODINGS_422 else known_rgb()
    rows, expected, tol = encode(encoding, rgb)
    msg = make_msg(encoding, rows, pad)
    msg.width = W
    out = image_msg_to_rgb(msg, prefer_cv_bridge=prefer_cv_bridge)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - expected.astype(int))
    assert diff.max() <= tol, f"{encoding}: max error {diff.max()}"


@pytest.mark.parametrize("pad", [0, 3])  # 3: rows start on odd addresses
@pytest.mark.parametrize("bigendian", [False, True], ids=["le", "be"])
def test_mono16_honours_endianness_and_scales_to_8bit(bigendian, pad):
    values = np.random.default_rng(2).integers(0, 65536, (H, W), dtype=np.uint16)
    values[0, :4] = [0, 65535, 257, 32896]  # exact points of 255/65535 scaling: 0, 255, 1, 128
    rows = values.astype(">u2" if bigendian else "<u2").view(np.uint8).reshape(H, -1)
    msg = make_msg("mono16", rows, pad, bigendian)
    msg.width = W
    out = image_msg_to_rgb(msg, prefer_cv_bridge=False)
    expected = np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)  # [H, W]
    assert np.array_equal(out[0, :4, 0], [0, 255, 1, 128])
    assert np.abs(out.astype(int) - expected[..., None].astype(int)).max() <= 1
    assert np.array_equal(out[..., 0], out[..., 2])  # grey


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "yuv422"])
def test_output_is_contiguous_and_does_not_alias_message(encoding):
    rgb = pair_rgb()
    rows, expected, tol = encode(encoding, rgb)
    msg = make_msg(encoding, rows, 0)
    msg.width = W
    out = image_msg_to_rgb(msg)
    assert out.flags.c_contiguous and out.flags.writeable
    assert not np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    before = out.copy()
    for i in range(len(msg.data)):
        msg.data[i] = 255 - msg.data[i]  # reusing the message must not change the frame
    assert np.array_equal(out, before)


def test_module_encoders_round_trip():
    rgb = known_rgb(48, 64)
    header = Header(stamp=Time(sec=12, nanosec=345), frame_id="camera_optical")
    for encoding in ("rgb8", "bgr8"):
        msg = rgb_to_image_msg(rgb, encoding=encoding, header=header)
        assert (msg.encoding, msg.width, msg.height, msg.step) == (encoding, 64, 48, 192)
        assert msg.header.frame_id == "camera_optical" and msg.header.stamp.nanosec == 345
        assert np.array_equal(image_msg_to_rgb(msg), rgb)
    bgr_bytes = np.frombuffer(rgb_to_image_msg(rgb, "bgr8").data, np.uint8)
    assert np.array_equal(bgr_bytes[:3], rgb[0, 0, ::-1])
    with pytest.raises(ValueError, match="mono8"):
        rgb_to_image_msg(rgb, encoding="mono8")
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        rgb_to_image_msg(rgb[..., 0])


# --------------------------------------------------------------------------- malformed frames


def good_msg() -> Image:
    return rgb_to_image_msg(known_rgb(), "bgr8")


def test_step_shorter_than_row_is_rejected():
    msg = good_msg()
    msg.step = W * 3 - 1
    with pytest.raises(ImageConversionError, match=rf"step={W * 3 - 1}.*width={W}.*{W * 3}"):
        image_msg_to_rgb(msg)


@pytest.mark.parametrize("prefer_cv_bridge", [True, False], ids=["auto", "own"])
def test_unknown_encoding_is_rejected(prefer_cv_bridge):
    msg = good_msg()
    msg.encoding = "xyz_unknown16"
    with pytest.raises(ImageConversionError, match="xyz_unknown16"):
        image_msg_to_rgb(msg, prefer_cv_bridge=prefer_cv_bridge)


def test_truncated_data_is_rejected():
    msg = good_msg()
    msg.data = msg.data[:-1]
    size = H * W * 3
    with pytest.raises(ImageConversionError, match=rf"truncated.*{size - 1} bytes.*{size}"):
        image_msg_to_rgb(msg)
    msg.data = array.array("B")
    with pytest.raises(ImageConversionError, match="truncated: 0 bytes"):
        image_msg_to_rgb(msg)


@pytest.mark.parametrize(("width", "height"), [(0, H), (W, 0), (0, 0)])
def test_zero_size_is_rejected(width, height):
    msg = good_msg()
    msg.width, msg.height = width, height
    with pytest.raises(ImageConversionError, match=f"zero size: width={width}, height={height}"):
        image_msg_to_rgb(msg)


def test_odd_width_422_is_rejected():
    msg = make_msg("yuyv", np.zeros((2, 3 * 2), np.uint8), 0)
    msg.width = 3
    with pytest.raises(ImageConversionError, match="even width.*width=3"):
        image_msg_to_rgb(msg, prefer_cv_bridge=False)


def test_conversion_error_is_a_value_error():
    assert issubclass(ImageConversionError, ValueError)


# --------------------------------------------------------------------------- compressed


def smooth_rgb(height: int = 48, width: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1).astype(np.uint8)  # [H, W, 3]


def test_png_round_trip_is_exact():
    rgb = known_rgb(48, 64)
    msg = rgb_to_compressed_msg(rgb, fmt="png", header=Header(frame_id="cam"))
    assert msg.format == "png" and msg.header.frame_id == "cam"
    assert np.array_equal(compressed_msg_to_rgb(msg), rgb)


def test_jpeg_round_trip_within_tolerance():
    rgb = smooth_rgb()
    msg = rgb_to_compressed_msg(rgb, fmt="jpeg", quality=95)
    assert msg.format == "jpeg" and bytes(msg.data[:2]) == b"\xff\xd8"  # JPEG SOI marker
    out = compressed_msg_to_rgb(msg)
    assert out.shape == rgb.shape and out.flags.c_contiguous
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 3.0


def test_grey_png_from_another_encoder_decodes_to_three_channels():
    grey = smooth_rgb()[..., 0]
    ok, encoded = cv2.imencode(".png", grey)
    assert ok
    msg = CompressedImage(format="mono8; png compressed mono8")
    msg.data = array.array("B", encoded.tobytes())
    out = compressed_msg_to_rgb(msg)
    assert out.shape == (48, 64, 3)
    assert np.array_equal(out[..., 0], grey) and np.array_equal(out[..., 2], grey)


@pytest.mark.parametrize(
    ("fmt", "payload", "text"),
    [
        ("jpeg", b"", "empty"),
        ("jpeg", b"\x00\x01not an image at all", r"not a PNG or JPEG.*'jpeg', 21 bytes"),
        ("png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 10, "PNG truncated: 18 bytes"),
        # a valid header, then no pixel data: refused by the decoder
        ("png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x08\x00\x00\x00\x08"
         + b"\x00" * 9, "cannot decode.*png"),
        ("16UC1; compressedDepth png", b"\x00" * 20, "compressed depth"),
    ],
)
def test_undecodable_compressed_is_rejected(fmt, payload, text):
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", payload)
    with pytest.raises(ImageConversionError, match=text):
        compressed_msg_to_rgb(msg)


def test_compressed_encoder_validates_arguments():
    with pytest.raises(ValueError, match="'webp'"):
        rgb_to_compressed_msg(smooth_rgb(), fmt="webp")
    with pytest.raises(ValueError, match="quality.*0"):
        rgb_to_compressed_msg(smooth_rgb(), quality=0)


# --------------------------------------------------------------------------- declared size limits


def _app1_orientation(jpeg: bytes, orientation: int) -> bytes:
    """``jpeg`` with an EXIF APP1 segment (big-endian TIFF, one Orientation tag) after SOI."""
    tiff = (b"MM\x00\x2a" + struct.pack(">IH", 8, 1)
            + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0))
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def _with_fill_bytes(jpeg: bytes) -> bytes:
    """Fill bytes (0xff 0xff) before the first marker after SOI: legal, decoders skip them."""
    return jpeg[:2] + b"\xff\xff" + jpeg[2:]


@pytest.mark.parametrize(("ext", "params", "shape"), [
    (".png", (), (48, 64)), (".png", (), (1, 3000)), (".jpg", (), (48, 64)),
    (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1), (33, 17)),
    (".jpg", (cv2.IMWRITE_JPEG_RST_INTERVAL, 1), (40, 24)),
], ids=["png", "png-wide", "jpeg", "jpeg-progressive", "jpeg-restart"])
def test_declared_size_matches_what_opencv_decodes(ext, params, shape):
    data = encoded(known_rgb(*shape), ext, params)
    size = declared_size(data)
    assert (size.codec, size.height, size.width) == (ext.strip(".").replace("jpg", "jpeg"),
                                                     *shape)
    assert compressed_msg_to_rgb(compressed_msg(data)).shape == (*shape, 3)
    padded = _with_fill_bytes(data) if ext == ".jpg" else data
    assert declared_size(array.array("B", padded)) == size  # any byte buffer


def test_exif_rotated_jpeg_is_accepted_with_its_sides_swapped():
    data = _app1_orientation(encoded(smooth_rgb(48, 64), ".jpg"), 6)  # rotate 90 degrees
    assert (declared_size(data).width, declared_size(data).height) == (64, 48)
    assert compressed_msg_to_rgb(compressed_msg(data)).shape == (64, 48, 3)


def test_png_bomb_is_refused_before_decoding():
    """49 KB declaring 20000x20000: OpenCV would spend ~4 s and 2.4 GB decoding it."""
    bomb = png_bomb(20000, 20000)
    assert len(bomb) < 100_000
    limits = ImageLimits(DEFAULT_MAX_PIXELS, 8, "image.max_pixels")
    started = time.perf_counter()
    with pytest.raises(FrameSizeError, match=r"PNG header declares 20000x20000 = 400,000,000 "
                       r"pixels, over the limit of 16,777,216 \(image.max_pixels\)"):
        compressed_msg_to_rgb(compressed_msg(bomb, "png"), limits=limits)
    assert time.perf_counter() - started < 0.5  # refused from the header, never decoded
    with pytest.raises(FrameSizeError, match="20000x20000"):  # the default cap refuses it too
        compressed_msg_to_rgb(compressed_msg(bomb, "png"))


def test_default_pixel_cap_is_4096_squared_inclusive():
    assert DEFAULT_LIMITS.max_pixels == 4096 * 4096
    ok = compressed_msg_to_rgb(compressed_msg(png_bomb(4096, 4096)))
    assert ok.shape == (4096, 4096, 3)
    with pytest.raises(FrameSizeError, match="4097x4096"):
        compressed_msg_to_rgb(compressed_msg(png_bomb(4097, 4096)))


def test_jpeg_declaring_a_huge_frame_is_refused():
    with pytest.raises(FrameSizeError, match="JPEG header declares 30000x20000"):
        compressed_msg_to_rgb(compressed_msg(jpeg_declaring(30000, 20000), "jpeg"))
    # the format string is not trusted: the bytes say JPEG
    with pytest.raises(FrameSizeError, match="JPEG header"):
        compressed_msg_to_rgb(compressed_msg(jpeg_declaring(30000, 20000), "png"))


@pytest.mark.parametrize(("ext", "start"), [(".bmp", "424d"), (".webp", "52494646"),
                                            (".tiff", "49492a00"), (".ppm", "5036")])
def test_formats_other_than_png_and_jpeg_are_refused(ext, start):
    data = encoded(known_rgb(16, 16), ext)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
    with pytest.raises(ImageConversionError, match=f"not a PNG or JPEG \\(first bytes {start}"):
        compressed_msg_to_rgb(compressed_msg(data, "jpeg"))


def _jpeg_segments_then(tail: bytes) -> bytes:
    return b"\xff\xd8\xff\xe0\x00\x04ab" + tail  # SOI, an APP0 of 2 bytes, then ``tail``


@pytest.mark.parametrize(("data", "text"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIDAT" + b"\x00" * 13, "does not start with an IHDR"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + b"\x00" * 13, "PNG declares zero size"),
    (_jpeg_segments_then(b"junk\xff\xc0"), "byte 8 is 0x6a where a marker"),
    (_jpeg_segments_then(b"\xff\xda\x00\x08"), "marker 0xda at byte 9 before any frame"),
    (_jpeg_segments_then(b"\xff\xd9"), "marker 0xd9 .* before any frame header"),
    (_jpeg_segments_then(b"\xff\xc0\x00\x11\x08\x00\x00\x01\x00\x03"), "zero height"),
    (_jpeg_segments_then(b"\xff\xc0\x00\x11\x08"), r"frame header \(0xc0\) truncated"),
    (_jpeg_segments_then(b"\xff\xe1\x00\x01"), "length 1"),
    (_jpeg_segments_then(b"\xff\xe1\x10\x00"), "JPEG truncated: no frame header"),
    (_jpeg_segments_then(b"\xff\xd0\xff"), "truncated inside a marker"),
])
def test_unreadable_headers_are_refused_with_the_reason(data, text):
    with pytest.raises(ImageConversionError, match=text):
        compressed_msg_to_rgb(compressed_msg(data, "jpeg"))


@pytest.mark.parametrize("prefer_cv_bridge", [True, False], ids=["auto", "own"])
def test_raw_frames_over_the_cap_or_under_the_minimum_side_are_refused(prefer_cv_bridge):
    limits = ImageLimits(max_pixels=48 * 64, min_side=8, name="image.max_pixels")
    rgb = known_rgb(48, 64)
    assert np.array_equal(image_msg_to_rgb(rgb_to_image_msg(rgb), limits=limits,
                                           prefer_cv_bridge=prefer_cv_bridge), rgb)
    big = rgb_to_image_msg(known_rgb(48, 65))  # complete data, one column too many
    with pytest.raises(FrameSizeError, match=r"sensor_msgs/Image \('rgb8'\) declares 65x48 = "
                       r"3,120 pixels, over the limit of 3,072 \(image.max_pixels\)"):
        image_msg_to_rgb(big, limits=limits, prefer_cv_bridge=prefer_cv_bridge)
    lying = rgb_to_image_msg(rgb)  # declares 20000x20000 with 9 KB of data: refused by size
    lying.width = lying.height = 20000
    lying.step = 60000
    with pytest.raises(FrameSizeError, match="20000x20000"):
        image_msg_to_rgb(lying, prefer_cv_bridge=prefer_cv_bridge)  # default cap
    thin = rgb_to_image_msg(known_rgb(7, 64))
    with pytest.raises(FrameSizeError, match="64x7 pixels, under the model's minimum of 8 on"):
        image_msg_to_rgb(thin, limits=limits, prefer_cv_bridge=prefer_cv_bridge)
    assert image_msg_to_rgb(thin, prefer_cv_bridge=prefer_cv_bridge).shape == (7, 64, 3)


def test_compressed_frames_under_the_minimum_side_are_refused():
    limits = ImageLimits(min_side=8)
    for shape in ((4, 4), (7, 100)):
        data = encoded(known_rgb(*shape), ".png")
        with pytest.raises(FrameSizeError, match="under the model's minimum of 8 on each side"):
            compressed_msg_to_rgb(compressed_msg(data), limits=limits)
    assert compressed_msg_to_rgb(compressed_msg(encoded(known_rgb(8, 8), ".jpg")),
                                 limits=limits).shape == (8, 8, 3)


@pytest.mark.parametrize(("kwargs", "text"), [
    ({"max_pixels": 0}, r"ImageLimits.max_pixels must be an integer in \[1, 1073741824\], got 0"),
    ({"max_pixels": 2**31}, "max_pixels.*got 2147483648"),
    ({"max_pixels": 1.5}, "max_pixels.*got 1.5"),
    ({"min_side": True}, "min_side.*got True"),
    ({"max_pixels": 63, "min_side": 8}, "min_side=8 admits no image under max_pixels=63"),
])
def test_image_limits_are_validated(kwargs, text):
    with pytest.raises(ValueError, match=text):
        ImageLimits(**kwargs)


def test_size_errors_are_conversion_errors():
    assert issubclass(FrameSizeError, ImageConversionError)


# --------------------------------------------------------------------------- time


@pytest.mark.parametrize("ns", [0, 1, 999_999_999, 1_000_000_000, 1_732_600_000_123_456_789])
def test_stamp_ns_round_trip_is_exact(ns):
    stamp = ns_to_stamp(ns)
    assert 0 <= stamp.nanosec < 1_000_000_000
    assert stamp_to_ns(stamp) == ns


def test_stamp_conversion_values_and_range():
    assert stamp_to_ns(Time(sec=3, nanosec=5)) == 3_000_000_005
    assert (ns_to_stamp(2_500_000_000).sec, ns_to_stamp(2_500_000_000).nanosec) == (2, 500_000_000)
    with pytest.raises(ValueError, match="-1 ns"):
        ns_to_stamp(-1)
    with pytest.raises(ValueError, match="outside"):
        ns_to_stamp(2**31 * 1_000_000_000)

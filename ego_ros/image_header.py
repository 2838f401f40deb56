"""Image size limits, and the size a PNG or JPEG declares, read before any pixel is decoded.

Data flow (``ego_ros.imaging`` calls this for every frame)::

    CompressedImage.data --declared_size--> signature: PNG or JPEG, anything else refused
        PNG:  the IHDR chunk (always the first) -> width, height
        JPEG: walk the marker segments by their lengths to the first SOFn -> width, height
    --check_size(ImageLimits)--> refused (FrameSizeError) or decoded by OpenCV
    sensor_msgs/Image: width and height are fields of the message -> check_size, the same way

Why before decoding: a compressed frame's size on the wire says nothing about its size in
memory. A 49 KB PNG that declares 20000x20000 one-bit pixels decodes to a 1.2 GB RGB array
(2.4 GB peak inside OpenCV), so a camera topic anyone can publish to could exhaust the node's
memory in a few frames. The header parse is strict: it follows the segments exactly as
libpng and libjpeg do and refuses anything it cannot follow (garbage between JPEG segments,
a missing IHDR, truncated data), so the size checked is the size the decoder would allocate.
"""

from __future__ import annotations

from dataclasses import dataclass

# Default pixel cap: 4096x4096, above any robot camera's frame (4K UHD is 3840x2160).
DEFAULT_MAX_PIXELS = 4096 * 4096
# Largest cap allowed: OpenCV's own decoder limit (CV_IO_MAX_IMAGE_PIXELS, 2^30).
MAX_PIXELS_LIMIT = 1 << 30

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"  # SOI and the first byte of the next marker (OpenCV's test)
# Frame headers: SOF0-3, 5-7, 9-11, 13-15 (C4 is DHT, C8 reserved, CC is DAC).
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD,
                       0xCE, 0xCF})
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field


class ImageConversionError(ValueError):
    """A message that cannot be turned into an RGB image; the text names the problem.
    (Defined here, the lowest image module; ``ego_ros.imaging`` exports it.)"""


class ImageHeaderError(ImageConversionError):
    """Compressed data whose declared size cannot be read; the text says why."""


class FrameSizeError(ImageConversionError):
    """An image whose declared size is outside :class:`ImageLimits`; the text names the limit."""


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on one image's declared size, checked before its pixels are decoded.

    ``max_pixels`` caps width x height (a decoded RGB frame takes 3 bytes per pixel);
    ``min_side`` is the smallest width and height accepted (the node uses the model's minimum,
    :data:`ego_ros.backends.base.MIN_IMAGE_SIDE`, so frames that would fail every clip are
    refused at conversion). ``name`` is how errors name the cap (the node: ``image.max_pixels``).
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = 1
    name: str = "max_pixels"

    def __post_init__(self) -> None:
        for field, low, high in (("max_pixels", 1, MAX_PIXELS_LIMIT),
                                 ("min_side", 1, MAX_PIXELS_LIMIT)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"ImageLimits.{field} must be an integer in [{low}, {high}], "
                                 f"got {value!r}")
        if self.min_side * self.min_side > self.max_pixels:
            raise ValueError(f"ImageLimits.min_side={self.min_side} admits no image under "
                             f"max_pixels={self.max_pixels} ({self.min_side}x{self.min_side} "
                             "is more)")

    def check(self, width: int, height: int, what: str) -> None:
        """FrameSizeError when a ``width`` x ``height`` image (``what``: where the size comes
        from, e.g. "PNG header") is over the cap or under the minimum side."""
        pixels = width * height
        if pixels > self.max_pixels:
            raise FrameSizeError(
                f"{what} declares {width}x{height} = {pixels:,} pixels, over the limit of "
                f"{self.max_pixels:,} ({self.name}); refused before decoding")
        if min(width, height) < self.min_side:
            raise FrameSizeError(
                f"{what} declares {width}x{height} pixels, under the model's minimum of "
                f"{self.min_side} on each side (the model would fail on it)")


DEFAULT_LIMITS = ImageLimits()


@dataclass(frozen=True)
class DeclaredSize:
    """What a compressed image's header says: ``codec`` ("png" or "jpeg"), width, height."""

    codec: str
    width: int
    height: int


def declared_size(data) -> DeclaredSize:
    """The codec and size a PNG or JPEG declares; ImageHeaderError for any other data (other
    formats are refused: only PNG and JPEG headers are parsed, so only they are decoded).
    ``data`` is any C-contiguous byte buffer (bytes, array.array, a uint8 NumPy array)."""
    data = memoryview(data).cast("B")  # bytes-like, indexing gives Python ints
    head = bytes(data[:8])
    if head.startswith(_PNG_SIGNATURE):
        return _png_size(data)
    if head.startswith(_JPEG_SIGNATURE):
        return _jpeg_size(data)
    raise ImageHeaderError(f"not a PNG or JPEG (first bytes {head.hex()}); only those "
                           "compressed formats are supported")


def _u16(data, at: int) -> int:
    return (data[at] << 8) | data[at + 1]


def _png_size(data) -> DeclaredSize:
    # signature (8) | length (4) = 13 | "IHDR" | width (4) | height (4) | ...  (big-endian)
    if len(data) < 24:
        raise ImageHeaderError(f"PNG truncated: {len(data)} bytes, its header needs 24")
    length = int.from_bytes(data[8:12], "big")
    kind = bytes(data[12:16])
    if kind != b"IHDR" or length != 13:
        raise ImageHeaderError(f"PNG does not start with an IHDR chunk (first chunk "
                               f"{kind!r}, length {length}); libpng would refuse it")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if width == 0 or height == 0:
        raise ImageHeaderError(f"PNG declares zero size: {width}x{height}")
    return DeclaredSize("png", width, height)


def _jpeg_size(data) -> DeclaredSize:
    """Walk the segments after SOI, by their length fields, to the first frame header."""
    size, at = len(data), 2
    while True:
        if at >= size:
            raise ImageHeaderError(f"JPEG truncated: no frame header (SOFn) in {size} bytes")
        if data[at] != 0xFF:
            raise ImageHeaderError(f"JPEG corrupt: byte {at} is 0x{data[at]:02x} where a "
                                   "marker (0xff) must start")
        while at < size and data[at] == 0xFF:  # fill bytes before a marker
            at += 1
        if at >= size:
            raise ImageHeaderError("JPEG truncated inside a marker")
        marker = data[at]
        at += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD8, 0xD9, 0xDA):  # SOI again, EOI, SOS: no frame header came first
            raise ImageHeaderError(f"JPEG has marker 0x{marker:02x} at byte {at - 1} before "
                                   "any frame header (SOFn)")
        if at + 2 > size:
            raise ImageHeaderError(f"JPEG truncated in the length of marker 0x{marker:02x}")
        length = _u16(data, at)
        if length < 2:
            raise ImageHeaderError(f"JPEG marker 0x{marker:02x} has length {length} (< 2)")
        if marker in _JPEG_SOF:
            # length (2) | precision (1) | height (2) | width (2) | components ...
            if length < 8 or at + 7 > size:
                raise ImageHeaderError(f"JPEG frame header (0x{marker:02x}) truncated")
            height, width = _u16(data, at + 3), _u16(data, at + 5)
            if width == 0 or height == 0:
                raise ImageHeaderError(
                    f"JPEG declares {width}x{height}: a zero height (set later by a DNL "
                    "marker) or width is not supported")
            return DeclaredSize("jpeg", width, height)
        at += length


__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_LIMIT",
    "DeclaredSize",
    "FrameSizeError",
    "ImageConversionError",
    "ImageHeaderError",
    "ImageLimits",
    "declared_size",
]

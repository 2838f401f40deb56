"""The worker's wire format: a small JSON header plus raw array bytes, one ZeroMQ frame each.

A message is a list of frames ``[header, *buffers]``:

- ``header`` = the 4 magic bytes ``b"EGO1"`` followed by a UTF-8 JSON object::

      {"v": 1, "kind": "req", "id": "3f2a-7", "method": "recognize",
       "params": {...}, "arrays": [{"dtype": "uint8", "shape": [480, 640, 3]}, ...]}

  ``kind`` is one of ``req`` (client -> worker call), ``rep`` (its result), ``err`` (its failure;
  params ``{"type": ..., "message": ...}``), ``ping``/``pong`` (liveness) and ``hello`` (the
  readiness handshake, asked and answered with the same kind). ``id`` pairs a reply with its
  request so a client can drop stale replies.
- one frame per entry of ``arrays``: the array's bytes, C order, little-endian, nothing else.

Why this and not pickle: a worker may be reached from another machine, and unpickling network
bytes runs arbitrary code. Here nothing from the payload is ever executed or imported; the
decoder only accepts an allow-list of dtypes and checks every length against the header, so a
malformed or hostile message is a :class:`WireError`, not a crash or an allocation bomb.
Why raw frames: images are most of the bytes, and ZeroMQ sends a buffer without copying it.

JSON floats may be NaN or +-Infinity (a recognition score is NaN when the mode gives none): the
header is written with ``allow_nan=True`` and Python's parser accepts ``NaN``/``Infinity``.
Other JSON parsers may need that enabled; the format is defined as "JSON plus these constants".

bfloat16 has no NumPy dtype. On the wire it is raw 2-byte words tagged ``"bfloat16"``. It can be
sent from a ``torch.Tensor``, an ``ml_dtypes`` array or :class:`BFloat16Words`; :func:`decode`
returns it as a ``torch.bfloat16`` tensor when torch can be imported (``bfloat16="auto"``) and
otherwise as the ``np.uint16`` words (which :attr:`Message.dtypes` still tags ``"bfloat16"``).
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAGIC = b"EGO1"
PROTOCOL_VERSION = 1
KINDS = frozenset({"req", "rep", "err", "ping", "pong", "hello"})
# Little-endian on the wire whatever the host; "bfloat16" is carried as 2-byte words.
NUMPY_DTYPES = frozenset(
    {
        "bool",
        "uint8",
        "int8",
        "uint16",
        "int16",
        "uint32",
        "int32",
        "uint64",
        "int64",
        "float16",
        "float32",
        "float64",
    }
)
ALLOWED_DTYPES = NUMPY_DTYPES | {"bfloat16"}
_HEADER_KEYS = frozenset({"v", "kind", "id", "method", "params", "arrays"})
_MAX_TEXT = 256  # characters of an id or a method name
_BFLOAT16_MODES = ("auto", "torch", "words")
# peek_id on a header too long to parse: the id as encode() writes it, near the start.
_ID_PREFIX_BYTES = 1024
_ID_IN_PREFIX = re.compile(r'^\{"v":\d+,"kind":"\w+","id":"([^"\\]{1,' + str(_MAX_TEXT) + '})"')


class WireError(ValueError):
    """A message that does not follow the wire format (or would exceed the configured limits)."""


@dataclass(frozen=True)
class WireLimits:
    """Bounds a decoder enforces before allocating anything; the encoder enforces the same.

    ``max_bytes`` bounds the whole message (header plus all array bytes): a frame of 640x480 RGB
    is 0.9 MB, so the 256 MiB default leaves room for long clips while refusing absurd requests.
    The RPC sockets accept frames up to twice ``max_bytes`` (``serving.common.transport_limit``),
    so a message over the limit is answered with a WireError naming its size.
    """

    max_bytes: int = 256 * 1024 * 1024
    max_arrays: int = 256
    max_header_bytes: int = 4 * 1024 * 1024
    max_ndim: int = 8

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_arrays", "max_header_bytes", "max_ndim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"WireLimits.{name} must be a positive integer, got {value!r}")


DEFAULT_LIMITS = WireLimits()


@dataclass(frozen=True)
class BFloat16Words:
    """bfloat16 data held as its raw 16-bit words, for sending without torch."""

    words: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.words, np.ndarray) or self.words.dtype != np.uint16:
            got = getattr(self.words, "dtype", type(self.words).__name__)
            raise ValueError(f"BFloat16Words.words must be a np.uint16 array, got {got}")


@dataclass(frozen=True)
class Message:
    """A decoded message. ``arrays`` are read-only views of the received frames (zero-copy)."""

    kind: str
    id: str
    method: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    arrays: tuple[Any, ...] = ()  # np.ndarray, or torch.Tensor for bfloat16 (see module doc)
    dtypes: tuple[str, ...] = ()  # wire dtype tag of each array


def _as_wire_array(value: Any, index: int) -> tuple[str, np.ndarray]:
    """(dtype tag, C-contiguous little-endian array) for one outgoing array."""
    if isinstance(value, BFloat16Words):
        return "bfloat16", np.asarray(value.words, order="C").astype("<u2", copy=False)
    torch = sys.modules.get("torch")  # only if the caller already uses torch; never import it
    if torch is not None and isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu").contiguous()
        if tensor.dtype == torch.bfloat16:
            words = tensor.view(torch.int16).numpy().view(np.uint16)
            return "bfloat16", words.astype("<u2", copy=False)
        value = tensor.numpy()
    if not isinstance(value, np.ndarray):
        raise WireError(
            f"array {index}: expected a numpy array or torch tensor, got {type(value).__name__}"
        )
    if value.dtype.name == "bfloat16" and value.dtype.itemsize == 2:  # ml_dtypes.bfloat16
        return "bfloat16", np.asarray(value, order="C").view(np.uint16).astype("<u2", copy=False)
    name = value.dtype.name
    if name not in NUMPY_DTYPES:
        raise WireError(
            f"array {index}: dtype {value.dtype} is not allowed on the wire; "
            f"allowed: {sorted(ALLOWED_DTYPES)}"
        )
    array = np.asarray(value, order="C")  # copies only non-contiguous input; keeps 0-d
    return name, array.astype(array.dtype.newbyteorder("<"), copy=False)


def _dumps(header: dict[str, Any]) -> bytes:
    try:
        text = json.dumps(header, allow_nan=True, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise WireError(f"params are not JSON-serialisable: {exc}") from exc
    return MAGIC + text.encode("utf-8")


def _check_text(what: str, value: Any, allow_empty: bool) -> str:
    if not isinstance(value, str) or len(value) > _MAX_TEXT or (not value and not allow_empty):
        raise WireError(f"{what} must be a {'' if allow_empty else 'non-empty '}string of at "
                        f"most {_MAX_TEXT} characters, got {value!r:.80}")
    return value


def encode(
    kind: str,
    msg_id: str,
    method: str = "",
    params: dict[str, Any] | None = None,
    arrays: Sequence[Any] = (),
    *,
    limits: WireLimits = DEFAULT_LIMITS,
) -> list[bytes | memoryview]:
    """Frames of one message, ready for ``send_multipart(frames, copy=False)``.

    Array frames are memoryviews of the (C-contiguous, little-endian) arrays: contiguous input
    is not copied, so do not modify an array until the call that sends it has returned.
    """
    if not isinstance(kind, str) or kind not in KINDS:
        raise WireError(f"kind must be one of {sorted(KINDS)}, got {kind!r:.80}")
    _check_text("id", msg_id, allow_empty=False)
    _check_text("method", method, allow_empty=kind != "req")
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise WireError(f"params must be a dict, got {type(params).__name__}")
    if len(arrays) > limits.max_arrays:
        raise WireError(f"{len(arrays)} arrays exceed the limit of {limits.max_arrays}")
    specs: list[dict[str, Any]] = []
    buffers: list[memoryview] = []
    total = 0
    for index, value in enumerate(arrays):
        tag, array = _as_wire_array(value, index)
        if array.ndim > limits.max_ndim:
            raise WireError(f"array {index}: {array.ndim} dims exceed limit {limits.max_ndim}")
        specs.append({"dtype": tag, "shape": list(array.shape)})
        buffers.append(memoryview(array.reshape(-1).view(np.uint8)))
        total += array.nbytes
    header = _dumps(
        {"v": PROTOCOL_VERSION, "kind": kind, "id": msg_id, "method": method,
         "params": params, "arrays": specs}
    )
    if len(header) > limits.max_header_bytes:
        raise WireError(f"header of {len(header)} bytes exceeds {limits.max_header_bytes}")
    if total + len(header) > limits.max_bytes:
        raise WireError(f"message of {total + len(header)} bytes exceeds {limits.max_bytes}")
    return [header, *buffers]


def _view(frame: Any) -> memoryview:
    """A byte view of a frame: bytes, bytearray, memoryview or a zmq.Frame (``.buffer``)."""
    buffer = getattr(frame, "buffer", frame)
    try:
        view = memoryview(buffer)
    except TypeError as exc:
        raise WireError(f"frame of type {type(frame).__name__} is not a byte buffer") from exc
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _parse_header(view: memoryview, limits: WireLimits) -> dict[str, Any]:
    if view.nbytes < len(MAGIC) or bytes(view[: len(MAGIC)]) != MAGIC:
        raise WireError(f"bad magic {bytes(view[:len(MAGIC)])!r}: not an ego_ros message "
                        f"(expected {MAGIC!r})")
    if view.nbytes > limits.max_header_bytes:
        raise WireError(f"header of {view.nbytes} bytes exceeds {limits.max_header_bytes}")
    try:
        header = json.loads(bytes(view[len(MAGIC):]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"header is not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise WireError(f"header must be a JSON object, got {type(header).__name__}")
    return header


def _check_shape(index: int, shape: Any, limits: WireLimits) -> tuple[int, ...]:
    if not isinstance(shape, list) or len(shape) > limits.max_ndim:
        raise WireError(f"array {index}: shape must be a list of at most {limits.max_ndim} "
                        f"integers, got {shape!r:.80}")
    for dim in shape:
        # bool is an int subclass; NaN/Infinity parse as floats and fail here too.
        if isinstance(dim, bool) or not isinstance(dim, int) or not 0 <= dim <= limits.max_bytes:
            raise WireError(f"array {index}: shape entry {dim!r} is not an integer in "
                            f"[0, {limits.max_bytes}]")
    return tuple(shape)


def _to_bfloat16(words: np.ndarray, mode: str) -> Any:
    if mode == "words" or (mode == "auto" and importlib.util.find_spec("torch") is None):
        return words
    import torch  # optional: only a bfloat16 payload needs it

    return torch.from_numpy(np.array(words, copy=True).view(np.int16)).view(torch.bfloat16)


def decode(
    frames: Sequence[Any], *, limits: WireLimits = DEFAULT_LIMITS, bfloat16: str = "auto"
) -> Message:
    """Validate and decode the frames of one message (see the module doc for the format).

    ``bfloat16``: ``"auto"`` (torch tensor if torch is importable, else uint16 words),
    ``"torch"`` (require torch) or ``"words"`` (always uint16 words). Raises :class:`WireError`
    for anything that is not a well-formed message within ``limits``.
    """
    if bfloat16 not in _BFLOAT16_MODES:
        raise ValueError(f"bfloat16 must be one of {_BFLOAT16_MODES}, got {bfloat16!r}")
    if not frames:
        raise WireError("empty message: no header frame")
    if len(frames) - 1 > limits.max_arrays:
        raise WireError(f"{len(frames) - 1} array frames exceed the limit of {limits.max_arrays}")
    views = [_view(f) for f in frames]
    total = sum(v.nbytes for v in views)
    if total > limits.max_bytes:
        raise WireError(f"message of {total} bytes exceeds {limits.max_bytes}")
    header = _parse_header(views[0], limits)
    unknown = set(header) - _HEADER_KEYS
    missing = {"v", "kind", "id"} - set(header)
    if unknown or missing:
        raise WireError(f"header keys: unknown {sorted(unknown)}, missing {sorted(missing)}")
    version = header["v"]
    if isinstance(version, bool) or not isinstance(version, int) or version != PROTOCOL_VERSION:
        raise WireError(f"protocol version {version!r} is not supported (this side speaks "
                        f"{PROTOCOL_VERSION}); update ego_ros on both ends")
    kind = header["kind"]
    if not isinstance(kind, str) or kind not in KINDS:  # a list or object is not hashable
        raise WireError(f"kind must be one of {sorted(KINDS)}, got {kind!r:.80}")
    msg_id = _check_text("id", header["id"], allow_empty=False)
    method = _check_text("method", header.get("method", ""), allow_empty=kind != "req")
    params = header.get("params", {})
    if not isinstance(params, dict):
        raise WireError(f"params must be a JSON object, got {type(params).__name__}")
    specs = header.get("arrays", [])
    if not isinstance(specs, list) or len(specs) != len(views) - 1:
        count = len(specs) if isinstance(specs, list) else specs
        raise WireError(f"header describes {count!r:.40} arrays but {len(views) - 1} array "
                        "frames arrived")
    arrays: list[Any] = []
    dtypes: list[str] = []
    for index, (spec, view) in enumerate(zip(specs, views[1:])):
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape"}:
            raise WireError(f"array {index}: spec must be {{'dtype', 'shape'}}, got {spec!r:.80}")
        tag = spec["dtype"]
        if not isinstance(tag, str) or tag not in ALLOWED_DTYPES:
            raise WireError(f"array {index}: dtype {tag!r:.40} is not allowed; "
                            f"allowed: {sorted(ALLOWED_DTYPES)}")
        shape = _check_shape(index, spec["shape"], limits)
        dtype = np.dtype("<u2" if tag == "bfloat16" else tag).newbyteorder("<")
        expected = math.prod(shape) * dtype.itemsize
        if expected != view.nbytes:
            raise WireError(f"array {index}: shape {list(shape)} of {tag} needs {expected} "
                            f"bytes but its frame has {view.nbytes}")
        array = np.frombuffer(view, dtype=dtype).reshape(shape)
        array.flags.writeable = False  # a view of the frame, whoever owns its memory
        arrays.append(_to_bfloat16(array, bfloat16) if tag == "bfloat16" else array)
        dtypes.append(tag)
    return Message(kind, msg_id, method, params, tuple(arrays), tuple(dtypes))


def peek_id(frames: Sequence[Any]) -> str:
    """Best-effort request id of a message that failed to decode ("" if none can be read).

    Lets a server address its error reply to the right request, so the client fails at once
    with the reason instead of waiting for its timeout. A header too long to parse is searched
    for the id in its first bytes only (where :func:`encode` writes it), in bounded time.
    """
    try:
        view = _view(frames[0])
        if bytes(view[: len(MAGIC)]) != MAGIC:
            return ""
        if view.nbytes > DEFAULT_LIMITS.max_header_bytes:
            prefix = bytes(view[len(MAGIC): len(MAGIC) + _ID_PREFIX_BYTES]).decode("utf-8",
                                                                             "replace")
            found = _ID_IN_PREFIX.search(prefix)
            return found.group(1) if found else ""
        header = json.loads(bytes(view[len(MAGIC):]).decode("utf-8"))
        msg_id = header.get("id") if isinstance(header, dict) else None
        return msg_id if isinstance(msg_id, str) and 0 < len(msg_id) <= _MAX_TEXT else ""
    except (WireError, IndexError, UnicodeDecodeError, ValueError, RecursionError):
        return ""

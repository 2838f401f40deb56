"""The worker wire format: round trips of every dtype, and every malformed message refused."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import zmq

from ego_ros.serving.wire import (
    ALLOWED_DTYPES,
    MAGIC,
    NUMPY_DTYPES,
    BFloat16Words,
    WireError,
    WireLimits,
    decode,
    encode,
    peek_id,
)

RNG = np.random.default_rng(0)


def _random(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "bool":
        return np.asarray(RNG.random(shape) > 0.5)
    if dtype.startswith("float"):
        return np.asarray(RNG.standard_normal(shape)).astype(dtype)
    info = np.iinfo(dtype)
    return np.asarray(RNG.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True))


def _header(frames: list) -> dict:
    return json.loads(bytes(frames[0])[len(MAGIC):])


def _with_header(frames: list, **changes) -> list:
    header = {**_header(frames), **changes}
    return [MAGIC + json.dumps(header).encode(), *frames[1:]]


@pytest.mark.parametrize("dtype", sorted(NUMPY_DTYPES))
def test_every_numpy_dtype_round_trips(dtype: str) -> None:
    arrays = [_random(dtype, (4, 5, 3)), _random(dtype, ()), _random(dtype, (0, 3))]
    frames = encode("req", "a-1", "m", {"k": 1}, arrays)
    msg = decode(frames)
    assert msg.dtypes == (dtype,) * 3
    for sent, got in zip(arrays, msg.arrays):
        assert got.dtype == sent.dtype and got.shape == sent.shape
        np.testing.assert_array_equal(got, sent)


def test_header_fields_nan_and_unicode_params_round_trip() -> None:
    params = {"score": math.nan, "inf": -math.inf, "name": "Anna's mug ☕",
              "nested": [1, {"a": None}]}
    msg = decode(encode("rep", "id-7", "recognize", params))
    assert (msg.kind, msg.id, msg.method, msg.arrays) == ("rep", "id-7", "recognize", ())
    assert math.isnan(msg.params["score"]) and msg.params["inf"] == -math.inf
    assert msg.params["name"] == params["name"] and msg.params["nested"] == params["nested"]


def test_bfloat16_from_torch_round_trips_bit_exactly() -> None:
    tensor = torch.randn(3, 7).to(torch.bfloat16)
    tensor[0, 0] = float("nan")
    msg = decode(encode("rep", "i", arrays=[tensor]))
    assert msg.dtypes == ("bfloat16",)
    got = msg.arrays[0]
    assert isinstance(got, torch.Tensor) and got.dtype == torch.bfloat16 and got.shape == (3, 7)
    assert torch.equal(got.view(torch.int16), tensor.view(torch.int16))
    got.add_(1)  # decoded tensors are writable copies, not views of the network buffer

    words = decode(encode("rep", "i", arrays=[tensor]), bfloat16="words").arrays[0]
    assert words.dtype == np.uint16
    np.testing.assert_array_equal(words, tensor.view(torch.int16).numpy().view(np.uint16))
    # uint16 words sent back with their tag are the same bfloat16 values again
    again = decode(encode("rep", "i", arrays=[BFloat16Words(np.array(words))])).arrays[0]
    assert torch.equal(again.view(torch.int16), tensor.view(torch.int16))


def test_bfloat16_empty_and_scalar() -> None:
    arrays = [torch.zeros(0, 4, dtype=torch.bfloat16), torch.tensor(1.5, dtype=torch.bfloat16)]
    got = decode(encode("rep", "i", arrays=arrays)).arrays
    assert got[0].shape == (0, 4) and got[1].shape == () and got[1].item() == 1.5


def test_other_torch_dtypes_are_sent_as_numpy() -> None:
    tensor = torch.arange(6, dtype=torch.float16).reshape(2, 3)
    msg = decode(encode("rep", "i", arrays=[tensor]))
    assert msg.dtypes == ("float16",)
    np.testing.assert_array_equal(msg.arrays[0], tensor.numpy())


def test_non_contiguous_fortran_and_big_endian_inputs() -> None:
    base = np.arange(2 * 6 * 4, dtype=np.float32).reshape(2, 6, 4)
    arrays = [base[:, ::2, 1:], np.asfortranarray(base[0]), base.astype(">f4"), base[::-1]]
    msg = decode(encode("req", "x", "m", arrays=arrays))
    for sent, got in zip(arrays, msg.arrays):
        np.testing.assert_array_equal(got, sent)
        assert got.dtype.byteorder in ("<", "=", "|")  # little-endian whatever came in


def test_contiguous_arrays_are_not_copied_and_decoded_arrays_are_read_only() -> None:
    image = np.zeros((48, 64, 3), np.uint8)
    frames = encode("req", "x", "m", arrays=[image])
    assert np.shares_memory(np.asarray(frames[1]), image)
    got = decode(frames).arrays[0]
    assert not got.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        got[0, 0, 0] = 1


def test_decodes_real_zmq_frames_without_copy() -> None:
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://wire-test")
        b.connect("inproc://wire-test")
        image = RNG.integers(0, 256, (120, 160, 3), dtype=np.uint8)
        a.send_multipart(encode("req", "z", "recognize", {"n": 1}, [image]), copy=False)
        msg = decode(b.recv_multipart(copy=False))
        np.testing.assert_array_equal(msg.arrays[0], image)
        assert msg.params == {"n": 1}
    finally:
        a.close(0)
        b.close(0)
        ctx.term()


def _good() -> list:
    return encode("req", "id-1", "recognize", {"a": 1}, [np.zeros((2, 3), np.float32)])


MALFORMED = {
    "empty message": lambda: [],
    "wrong magic": lambda: [b"EGO2" + bytes(_good()[0])[4:], *_good()[1:]],
    "no magic at all": lambda: [b"{}"],
    "version 2": lambda: _with_header(_good(), v=2),
    "version as bool": lambda: _with_header(_good(), v=True),
    "version missing": lambda: [MAGIC + b'{"kind":"req","id":"x","method":"m"}'],
    "malformed json": lambda: [MAGIC + b'{"v": 1, "kind": ', *_good()[1:]],
    "not utf-8": lambda: [MAGIC + b'{"v": 1, "id": "\xff\xfe"}'],
    "header is a list": lambda: [MAGIC + b"[1, 2]"],
    "unknown header key": lambda: _with_header(_good(), exec="import os"),
    "unknown kind": lambda: _with_header(_good(), kind="call"),
    "empty id": lambda: _with_header(_good(), id=""),
    "id not a string": lambda: _with_header(_good(), id=5),
    "request without method": lambda: _with_header(_good(), method=""),
    "params not an object": lambda: _with_header(_good(), params=[1]),
    "dtype not allowed": lambda: _with_header(
        _good(), arrays=[{"dtype": "object", "shape": [2, 3]}]),
    "dtype with byte order": lambda: _with_header(
        _good(), arrays=[{"dtype": ">f4", "shape": [2, 3]}]),
    "dtype not a string": lambda: _with_header(
        _good(), arrays=[{"dtype": ["float32"], "shape": [2, 3]}]),
    "byte length mismatch": lambda: [_good()[0], bytes(_good()[1]) + b"\0"],
    "shape mismatch": lambda: _with_header(_good(), arrays=[{"dtype": "float32", "shape": [3, 3]}]),
    "negative dim": lambda: _with_header(_good(), arrays=[{"dtype": "float32", "shape": [-2, -3]}]),
    "float dim": lambda: _with_header(_good(), arrays=[{"dtype": "float32", "shape": [2.0, 3]}]),
    "bool dim": lambda: _with_header(_good(), arrays=[{"dtype": "float32", "shape": [True, 6]}]),
    "NaN dim": lambda: [_good()[0].replace(b"[2,3]", b"[NaN,3]"), _good()[1]],
    "Infinity dim": lambda: [_good()[0].replace(b"[2,3]", b"[Infinity,3]"), _good()[1]],
    "huge dims": lambda: _with_header(
        _good(), arrays=[{"dtype": "float32", "shape": [2**40, 2**40, 0]}]),
    "too many dims": lambda: _with_header(
        _good(), arrays=[{"dtype": "uint8", "shape": [1] * 9 + [24]}]),
    "shape not a list": lambda: _with_header(_good(), arrays=[{"dtype": "float32", "shape": 6}]),
    "extra spec key": lambda: _with_header(
        _good(), arrays=[{"dtype": "float32", "shape": [2, 3], "offset": 0}]),
    "more frames than specs": lambda: [*_good(), b"1234"],
    "fewer frames than specs": lambda: [_good()[0]],
    "arrays not a list": lambda: _with_header(_good(), arrays={"dtype": "float32"}),
    "frame not a buffer": lambda: [_good()[0], 12345],
    # Every header field with a JSON type it must not have (unhashable ones included): a
    # WireError, never a TypeError/AttributeError that would escape a server's error handling.
    "kind as list": lambda: _with_header(_good(), kind=["req"]),
    "kind as object": lambda: _with_header(_good(), kind={"req": 1}),
    "kind as number": lambda: _with_header(_good(), kind=1),
    "kind as null": lambda: _with_header(_good(), kind=None),
    "version as list": lambda: _with_header(_good(), v=[1]),
    "version as object": lambda: _with_header(_good(), v={"1": 1}),
    "version as string": lambda: _with_header(_good(), v="1"),
    "version as float": lambda: _with_header(_good(), v=1.5),
    "id as object": lambda: _with_header(_good(), id={"a": 1}),
    "id as list": lambda: _with_header(_good(), id=["x"]),
    "id as null": lambda: _with_header(_good(), id=None),
    "method as list": lambda: _with_header(_good(), method=["recognize"]),
    "method as object": lambda: _with_header(_good(), method={"m": 1}),
    "params as string": lambda: _with_header(_good(), params="{}"),
    "params as null": lambda: _with_header(_good(), params=None),
    "arrays as string": lambda: _with_header(_good(), arrays="float32"),
    "arrays as null": lambda: _with_header(_good(), arrays=None),
    "array spec as list": lambda: _with_header(_good(), arrays=[["float32", [2, 3]]]),
    "array spec as string": lambda: _with_header(_good(), arrays=["float32"]),
    "dtype as object": lambda: _with_header(
        _good(), arrays=[{"dtype": {"float32": 1}, "shape": [2, 3]}]),
    "shape as object": lambda: _with_header(
        _good(), arrays=[{"dtype": "float32", "shape": {"2": 3}}]),
    "shape entry as list": lambda: _with_header(
        _good(), arrays=[{"dtype": "float32", "shape": [[2], 3]}]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_messages_raise_wire_error(case: str) -> None:
    with pytest.raises(WireError):
        decode(MALFORMED[case]())


def test_limits_are_enforced_on_decode() -> None:
    frames = encode("req", "x", "m", arrays=[np.zeros(100, np.uint8)] * 3)
    with pytest.raises(WireError, match="array frames exceed"):
        decode(frames, limits=WireLimits(max_arrays=2))
    with pytest.raises(WireError, match="exceeds 200"):
        decode(frames, limits=WireLimits(max_bytes=200))
    with pytest.raises(WireError, match="header of"):
        decode(frames, limits=WireLimits(max_header_bytes=16))
    assert len(decode(frames, limits=WireLimits(max_bytes=1000)).arrays) == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"arrays": [np.array(["a"], dtype=object)]}, "not allowed"),
        ({"arrays": [np.zeros(2, np.complex64)]}, "not allowed"),
        ({"arrays": [[1, 2, 3]]}, "numpy array or torch tensor"),
        ({"params": {"s": {1, 2}}}, "JSON"),
        ({"params": [1]}, "dict"),
        ({"arrays": [np.zeros(4, np.uint8)] * 3, "limits": WireLimits(max_arrays=2)}, "limit"),
        ({"arrays": [np.zeros(4096, np.uint8)], "limits": WireLimits(max_bytes=1024)}, "exceeds"),
        ({"arrays": [np.zeros((1,) * 9, np.uint8)]}, "dims"),
    ],
)
def test_encode_refuses_what_decode_would_refuse(kwargs: dict, match: str) -> None:
    with pytest.raises(WireError, match=match):
        encode("req", "x", "m", **kwargs)


def test_encode_checks_kind_id_and_method() -> None:
    with pytest.raises(WireError, match="kind"):
        encode("call", "x", "m")
    with pytest.raises(WireError, match="kind"):
        encode(["req"], "x", "m")  # unhashable: still a WireError
    with pytest.raises(WireError, match="id"):
        encode("req", "", "m")
    with pytest.raises(WireError, match="method"):
        encode("req", "x", "")
    assert decode(encode("ping", "x")).method == ""  # only requests need a method


def test_wire_error_messages_say_what_is_wrong() -> None:
    with pytest.raises(WireError, match="protocol version 2"):
        decode(_with_header(_good(), v=2))
    with pytest.raises(WireError, match=r"needs 24 bytes but its frame has 25"):
        decode([_good()[0], bytes(_good()[1]) + b"\0"])
    with pytest.raises(WireError, match="dtype 'object' is not allowed"):
        decode(MALFORMED["dtype not allowed"]())


def test_limits_validate_their_fields() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        WireLimits(max_bytes=0)
    with pytest.raises(ValueError, match="max_ndim"):
        WireLimits(max_ndim=True)
    with pytest.raises(ValueError, match="bfloat16"):
        decode(_good(), bfloat16="fp32")
    with pytest.raises(ValueError, match="uint16"):
        BFloat16Words(np.zeros(3, np.int16))


def test_peek_id_reads_what_it_can() -> None:
    assert peek_id(_with_header(_good(), v=9)) == "id-1"
    assert peek_id([b"garbage"]) == "" and peek_id([]) == ""
    assert {"bfloat16"} | NUMPY_DTYPES == ALLOWED_DTYPES

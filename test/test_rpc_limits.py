"""Size limits over real ZeroMQ sockets: an oversized message is answered with its size, promptly,
and the worker serves on; a frame beyond the transport bound is still never buffered.

The server runs with a 1 MiB wire limit (so the socket accepts frames up to 2 MiB, see
``serving.common.transport_limit``). A bare DEALER socket plays a client that does not check
sizes itself (another implementation, or a misconfigured one).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from ego_ros.serving.common import transport_limit
from ego_ros.serving.rpc import RpcClient, RpcServer
from ego_ros.serving.wire import WireError, WireLimits, decode, encode

MIB = 1024 * 1024
SMALL = WireLimits(max_bytes=MIB)
LARGE = WireLimits(max_bytes=16 * MIB, max_header_bytes=16 * MIB)


class Echo:
    """Handler: ``count`` returns the number of array bytes; ``blob`` returns ``n`` bytes."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, method: str, params: dict[str, Any], arrays: tuple[Any, ...]
                 ) -> tuple[dict[str, Any], list[Any]]:
        self.calls += 1
        if method == "blob":
            return {}, [np.zeros(int(params["n"]), np.uint8)]
        return {"bytes": sum(int(a.nbytes) for a in arrays)}, []


@pytest.fixture
def small_server() -> Iterator[tuple[RpcServer, Echo]]:
    handler = Echo()
    server = RpcServer(handler, "tcp://127.0.0.1:*", {"count", "blob"}, limits=SMALL).start()
    yield server, handler
    server.close()


@pytest.fixture
def raw_socket(small_server) -> Iterator[zmq.Socket]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(small_server[0].endpoint)
    yield sock
    sock.close(0)
    ctx.term()


def _still_serves(endpoint: str) -> None:
    with RpcClient(endpoint, timeout_s=5, limits=SMALL) as client:
        assert client.call("count", {}, [np.zeros(1000, np.uint8)])[0] == {"bytes": 1000}


def test_an_oversized_request_is_answered_with_its_size_and_the_worker_serves_on(
        small_server, raw_socket) -> None:
    server, handler = small_server
    frames = encode("req", "big-1", "count", {}, [np.ones(MIB + MIB // 2, np.uint8)],
                    limits=LARGE)
    started = time.monotonic()
    raw_socket.send_multipart(frames, copy=False)
    assert raw_socket.poll(5000), "the worker must answer an oversized request"
    reply = decode(raw_socket.recv_multipart())
    elapsed = time.monotonic() - started
    assert (reply.kind, reply.id, reply.params["type"]) == ("err", "big-1", "WireError")
    size = sum(memoryview(f).nbytes for f in frames)
    assert reply.params["message"] == f"message of {size} bytes exceeds {MIB}"
    assert elapsed < 2.0
    assert handler.calls == 0  # refused before the handler
    _still_serves(server.endpoint)


def test_a_header_too_long_to_parse_gets_the_error_under_its_own_id(raw_socket,
                                                                     small_server) -> None:
    # 1.5 MiB of question text: over the 1 MiB wire limit, parsed for its id from the prefix.
    frames = encode("req", "long-1", "count", {"question": "x" * (MIB + MIB // 2)},
                    limits=LARGE)
    raw_socket.send_multipart(frames, copy=False)
    assert raw_socket.poll(5000)
    reply = decode(raw_socket.recv_multipart())
    assert (reply.kind, reply.id) == ("err", "long-1")
    assert "exceeds" in reply.params["message"]


def test_a_header_over_the_default_header_limit_is_answered_under_its_id() -> None:
    # The default limits: a 5 MiB header passes the message limit but not the 4 MiB header one.
    server = RpcServer(Echo(), "tcp://127.0.0.1:*", {"count"}).start()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        sock.connect(server.endpoint)
        sock.send_multipart(encode("req", "hdr-1", "count", {"q": "y" * (5 * MIB)},
                                   limits=LARGE), copy=False)
        assert sock.poll(5000)
        reply = decode(sock.recv_multipart())
        assert (reply.kind, reply.id) == ("err", "hdr-1")
        assert "header of" in reply.params["message"]
    finally:
        sock.close(0)
        ctx.term()
        server.close()


def test_a_frame_beyond_the_transport_bound_is_dropped_unbuffered_and_serving_goes_on(
        small_server, raw_socket) -> None:
    server, handler = small_server
    too_big = transport_limit(SMALL) + 1
    raw_socket.send_multipart(encode("req", "huge-1", "count", {},
                                     [np.zeros(too_big, np.uint8)], limits=LARGE), copy=False)
    assert not raw_socket.poll(500)  # libzmq dropped the connection: nothing to answer with
    assert handler.calls == 0
    _still_serves(server.endpoint)


def test_a_client_with_larger_limits_is_refused_before_sending(small_server) -> None:
    server, handler = small_server
    with RpcClient(server.endpoint, timeout_s=5, limits=LARGE) as client:
        started = time.monotonic()
        with pytest.raises(WireError, match=f"exceeds the worker's limit of {MIB} bytes"):
            client.call("count", {}, [np.zeros(3 * MIB, np.uint8)])
        assert time.monotonic() - started < 2.0
        assert client.server_info["max_bytes"] == MIB
        assert client.call("count", {}, [np.zeros(10, np.uint8)])[0] == {"bytes": 10}
    assert handler.calls == 1


def test_an_oversized_reply_is_reported_with_its_size_not_as_a_lost_connection() -> None:
    server = RpcServer(Echo(), "tcp://127.0.0.1:*", {"blob"}, limits=LARGE).start()
    try:
        with RpcClient(server.endpoint, timeout_s=5, limits=SMALL) as client:
            started = time.monotonic()
            with pytest.raises(WireError, match=f"exceeds {MIB}"):
                client.call("blob", {"n": MIB + MIB // 2})
            assert time.monotonic() - started < 2.0
            assert client.call("blob", {"n": 10})[1][0].nbytes == 10
    finally:
        server.close()

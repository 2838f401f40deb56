"""The worker transport over real ZeroMQ sockets: RemoteEngine <-> RpcServer <-> an engine.

The real engine is not needed to test the transport, so the callee is FakeEngine below: a small
engine with real, deterministic logic (a concept is the mean grey level of its views; a clip
scores by its distance to it), used both in-process and behind the worker, and compared.
Run as a script (`python test/test_rpc.py ENDPOINT`) it is the worker the kill test kills.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from ego_ros.core.types import (
    AnswerResult,
    ConceptInfo,
    ConceptScore,
    IntroduceResult,
    RecognitionResult,
    SkippedConcept,
)
from ego_ros.serving.remote import ENGINE_METHODS, RemoteEngine, serve_engine
from ego_ros.serving.rpc import (
    CurveClientKeys,
    CurveServerKeys,
    RemoteError,
    RpcClient,
    RpcServer,
    WorkerUnavailable,
    generate_curve_keys,
    is_local_endpoint,
)
from ego_ros.serving.wire import MAGIC, decode


class FakeEngine:
    """Deterministic engine with EgoEngine's public API; ``ask("block", ...)`` waits for
    ``release`` so tests can hold a request in flight."""

    def __init__(self) -> None:
        self._means: dict[str, float] = {}
        self._infos: dict[str, ConceptInfo] = {}
        self.calls: collections.Counter[str] = collections.Counter()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def introduce(self, name: str, images: list[np.ndarray], replace: bool = False
                  ) -> IntroduceResult:
        self.calls["introduce"] += 1
        if name in self._means and not replace:
            raise ValueError(f"concept {name!r} already exists; pass replace=True")
        self._means[name] = float(np.mean([img.mean() for img in images]))
        keywords = [[f"tone{int(img.mean()) // 32}", "thing"] for img in images]
        self._infos[name] = ConceptInfo(name, 4 * len(images), len(images), keywords,
                                        1.7e9 + len(self._infos))
        return IntroduceResult(name, 4 * len(images), len(images), keywords,
                               [round(100 * float(img[..., 0].mean()) / 255, 3) for img in images],
                               [False] * len(images), [1, 3], 0.25)

    def _present(self, frames: list[np.ndarray], concepts: list[str] | None
                 ) -> tuple[list[str], dict[str, float]]:
        names = sorted(self._means) if concepts is None else concepts
        for name in names:
            if name not in self._means:
                raise KeyError(f"unknown concept {name!r}")
        mean = float(np.mean([f.mean() for f in frames]))
        return names, {n: 1.0 - abs(mean - self._means[n]) / 255 for n in names}

    def recognize(self, frames: list[np.ndarray], mode: str = "per-concept", clip: bool = False,
                  concepts: list[str] | None = None, caption: bool = False
                  ) -> RecognitionResult:
        self.calls["recognize"] += 1
        names, scores = self._present(frames, concepts)
        results = [ConceptScore(n, scores[n] > 0.95, scores[n] if mode == "per-concept"
                                else math.nan) for n in names]
        text = "a scene with " + ", ".join(r.name for r in results if r.present) if caption else ""
        return RecognitionResult(results, names, mode, text, len(frames) + (0.5 if clip else 0))

    def ask(self, question: str, frames: list[np.ndarray], clip: bool = False,
            concepts: list[str] | None = None,
            options: dict[str, str] | None = None) -> AnswerResult:
        self.calls["ask"] += 1
        if question == "block":
            self.entered.set()
            self.release.wait(60)
        names, scores = self._present(frames, concepts)
        seen = [n for n in names if scores[n] > 0.95]
        return AnswerResult(f"{question} -> {', '.join(seen) or 'nothing known'}", seen, names,
                            2.0 if clip else 1.0, choice=max(options) if options else None)

    def caption(self, frames: list[np.ndarray], clip: bool = False,
                concepts: list[str] | None = None) -> AnswerResult:
        self.calls["caption"] += 1
        names, scores = self._present(frames, concepts)
        seen = [n for n in names if scores[n] > 0.95]
        return AnswerResult(f"a picture of {' and '.join(seen) or 'something'}", seen, names)

    def forget(self, name: str) -> bool:
        self.calls["forget"] += 1
        self._infos.pop(name, None)
        return self._means.pop(name, None) is not None

    def concepts(self) -> list[ConceptInfo]:
        self.calls["concepts"] += 1
        return [self._infos[n] for n in sorted(self._infos)]

    def skipped_concepts(self) -> list[SkippedConcept]:
        self.calls["skipped_concepts"] += 1
        return []

    def health(self) -> dict[str, Any]:
        self.calls["health"] += 1
        return {"ok": True, "concepts": len(self._means), "last_latency_ms": math.nan}


def frames(grey: int, n: int = 2, h: int = 24, w: int = 32) -> list[np.ndarray]:
    """n HxWx3 uint8 frames around ``grey`` with a gradient, so the bytes are not uniform."""
    ramp = np.linspace(-8, 8, w, dtype=np.float32)[None, :, None]  # [1, W, 1]
    base = np.clip(grey + ramp + np.arange(3)[None, None, :], 0, 255)  # [1, W, 3]
    return [np.broadcast_to(base + i, (h, w, 3)).astype(np.uint8) for i in range(n)]


def dump(result: Any) -> str:
    """NaN-safe comparable form of a result (dataclass, list of them, or plain value)."""
    if isinstance(result, list):
        return json.dumps([dump(r) for r in result])
    data = result.to_dict() if hasattr(result, "to_dict") else result
    return json.dumps(data, sort_keys=True, allow_nan=True)


def free_tcp_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def served():
    engine = FakeEngine()
    server = serve_engine(engine, "tcp://127.0.0.1:*", info={"model": "fake"}).start()
    yield engine, server
    engine.release.set()
    server.close()


def test_every_method_matches_the_in_process_engine(tmp_path: Path) -> None:
    local, worker = FakeEngine(), FakeEngine()
    server = serve_engine(worker, f"ipc://{tmp_path}/w.sock", info={"model": "fake-1"}).start()
    try:
        with RemoteEngine(server.endpoint, timeout_s=5) as remote:
            steps = [
                lambda e: e.introduce("mug", frames(200, 3)),
                lambda e: e.introduce("anna", frames(40)),
                lambda e: e.introduce("mug", frames(190, 1), replace=True),
                lambda e: e.recognize(frames(192)),
                lambda e: e.recognize(frames(201, n=4, h=480, w=640)),  # zero-copy sized
                lambda e: e.recognize(frames(45, 4), mode="joint", clip=True, concepts=["anna"],
                                      caption=True),
                lambda e: e.ask("where is my mug?", frames(191), clip=True),
                lambda e: e.ask("who is here?", frames(41), concepts=["anna", "mug"]),
                lambda e: e.ask("where?", frames(41), options={"A": "here", "B": "there"}),
                lambda e: e.caption(frames(41, 3), clip=True),
                lambda e: e.caption(frames(199), concepts=["mug"]),
                lambda e: e.concepts(),
                lambda e: e.forget("anna"),
                lambda e: e.forget("anna"),
                lambda e: e.concepts(),
            ]
            for step in steps:
                mine, theirs = step(local), step(remote)
                assert type(theirs) is type(mine)
                assert dump(theirs) == dump(mine)
            health = remote.health()
            assert health["ok"] is True and math.isnan(health["last_latency_ms"])
            assert remote.server_info["info"] == {"model": "fake-1"}
            assert set(remote.server_info["methods"]) == ENGINE_METHODS
            assert remote.healthy and remote.last_ok is not None
        assert worker.calls == local.calls + collections.Counter(health=1)
    finally:
        server.close()


def test_several_clients_at_once(served) -> None:
    engine, server = served
    local = FakeEngine()
    for e in (engine, local):
        e.introduce("mug", frames(200))
        e.introduce("anna", frames(60))
    errors: list[str] = []

    def client(k: int) -> None:
        with RemoteEngine(server.endpoint, timeout_s=10) as remote:
            for i in range(5):
                clip = frames(20 * k + 10 * i, n=3)
                got, expected = remote.recognize(clip, caption=True), local.recognize(clip,
                                                                                    caption=True)
                if dump(got) != dump(expected):
                    errors.append(f"client {k} call {i}: {got} != {expected}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert engine.calls["recognize"] == 20


def test_errors_are_reported_and_the_server_keeps_serving(served) -> None:
    engine, server = served
    with RemoteEngine(server.endpoint, timeout_s=5) as remote:
        remote.introduce("mug", frames(200))
        with pytest.raises(RemoteError, match="ghost") as err:
            remote.recognize(frames(10), concepts=["ghost"])
        assert err.value.type_name == "KeyError" and err.value.method == "recognize"
        with pytest.raises(RemoteError, match="replace=True") as err:
            remote.introduce("mug", frames(10))
        assert err.value.type_name == "ValueError"
        with pytest.raises(ValueError, match=r"frames\[0\] must be an HxWx3 uint8"):
            remote.recognize([np.zeros((4, 4), np.uint8)])  # refused before the network
        assert remote.healthy  # an error reply still proves the worker is alive
        assert [c.name for c in remote.concepts()] == ["mug"]
    with RpcClient(server.endpoint, timeout_s=5) as client:
        for method, params, arrays, type_name in [
            ("shutdown", {}, [], "UnknownMethod"),
            ("forget", {"name": 3}, [], "TypeError"),
            ("forget", {"name": "mug", "force": True}, [], "ValueError"),
            ("recognize", {"mode": "joint", "clip": False, "concepts": None, "caption": False},
             [np.zeros((2, 2), np.float32)], "ValueError"),
            ("concepts", {}, [np.zeros((2, 2, 3), np.uint8)], "ValueError"),
        ]:
            with pytest.raises(RemoteError) as err:
                client.call(method, params, arrays)
            assert err.value.type_name == type_name, (method, params)
        assert client.call("forget", {"name": "mug"}) == ({"result": True}, [])
    assert engine.calls["forget"] == 1  # the refused calls never reached the engine


def test_a_malformed_request_gets_an_error_reply_with_its_id(served) -> None:
    _, server = served
    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    try:
        raw.connect(server.endpoint)
        raw.send(MAGIC + b'{"v": 2, "kind": "req", "id": "raw-1", "method": "health"}')
        assert raw.poll(5000)
        reply = decode(raw.recv_multipart())
        assert (reply.kind, reply.id, reply.params["type"]) == ("err", "raw-1", "WireError")
        assert "protocol version 2" in reply.params["message"]
    finally:
        raw.close(0)
        ctx.term()
    with RemoteEngine(server.endpoint, timeout_s=5) as remote:
        assert remote.health()["ok"]


BAD_HEADERS = {
    "kind as list": {"v": 1, "kind": ["req"], "id": "bad-1", "method": "health"},
    "kind as object": {"v": 1, "kind": {"req": 1}, "id": "bad-2", "method": "health"},
    "id as object": {"v": 1, "kind": "req", "id": {"x": 1}, "method": "health"},
    "method as list": {"v": 1, "kind": "req", "id": "bad-4", "method": ["health"]},
    "params as string": {"v": 1, "kind": "req", "id": "bad-5", "method": "health",
                         "params": "{}"},
    "arrays as string": {"v": 1, "kind": "req", "id": "bad-6", "method": "health",
                         "arrays": "uint8"},
    "array spec as list": {"v": 1, "kind": "req", "id": "bad-7", "method": "health",
                           "arrays": [["uint8", [1]]]},
    "version as list": {"v": [1], "kind": "req", "id": "bad-8", "method": "health"},
}


def test_headers_of_the_wrong_json_types_never_stop_the_server(served) -> None:
    """Each malformed header gets a WireError reply (addressed by its id where it has one);
    afterwards ordinary calls still work, from the same raw socket and from a client."""
    _, server = served
    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    try:
        raw.connect(server.endpoint)
        for case, header in BAD_HEADERS.items():
            body = MAGIC + json.dumps(header).encode()
            raw.send_multipart([body, b"\0"] if "arrays" in header else [body])
            assert raw.poll(5000), f"{case}: no reply (server loop died?)"
            reply = decode(raw.recv_multipart())
            assert (reply.kind, reply.params["type"]) == ("err", "WireError"), case
            expected_id = header["id"] if isinstance(header["id"], str) else "?"
            assert reply.id == expected_id, case
        raw.send(MAGIC + json.dumps({"v": 1, "kind": "ping", "id": "ok-1"}).encode())
        assert raw.poll(5000)
        assert decode(raw.recv_multipart()).kind == "pong"
    finally:
        raw.close(0)
        ctx.term()
    assert server.alive
    with RemoteEngine(server.endpoint, timeout_s=5) as remote:
        assert remote.health()["ok"]
    with RpcClient(server.endpoint, timeout_s=5) as client:
        assert client.call("concepts") == ({"result": []}, [])


class _FaultyStatusServer(RpcServer):
    """A server whose status report fails once: stands for any bug hit while handling one
    message on the socket thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures = 0

    def _status(self) -> dict[str, Any]:
        if self.failures == 0:
            self.failures += 1
            raise RuntimeError("status report failed")
        return super()._status()


def test_an_error_while_handling_one_message_does_not_stop_the_server(caplog) -> None:
    from ego_ros.serving.remote import engine_handler

    server = _FaultyStatusServer(engine_handler(FakeEngine()), "tcp://127.0.0.1:*",
                                 ENGINE_METHODS).start()
    try:
        with caplog.at_level(logging.ERROR, logger="ego_ros.serving.rpc"), RpcClient(
                server.endpoint, timeout_s=5, connect_timeout_s=0.5) as client:
            with pytest.raises(WorkerUnavailable):  # that message got no answer
                client.ping(0.5)
            assert client.ping(5)["busy"] is None  # the next one does
            assert client.call("concepts") == ({"result": []}, [])
        assert server.failures == 1 and server.alive
        assert "status report failed" in caplog.text
    finally:
        server.close()
    assert not server.alive


def test_a_worker_exits_non_zero_when_its_server_dies(served) -> None:
    from ego_ros.serving.worker import supervise

    _, server = served
    stop = threading.Event()
    assert server.alive
    threading.Timer(0.3, server.close).start()  # the server stops while nobody asked it to
    assert supervise(server, stop, poll_s=0.05) == 1
    assert not server.alive
    stop.set()
    assert supervise(server, stop, poll_s=0.05) == 0  # a requested stop is a clean exit


def test_ping_is_answered_while_a_long_request_runs_and_the_queue_is_bounded() -> None:
    engine = FakeEngine()
    engine.introduce("mug", frames(200))
    engine.release.clear()
    server = serve_engine(engine, "tcp://127.0.0.1:*", max_pending=1).start()
    results: dict[str, Any] = {}
    remotes = [RemoteEngine(server.endpoint, timeout_s=20) for _ in range(3)]
    try:
        held = threading.Thread(target=lambda: results.update(
            ask=remotes[0].ask("block", frames(200))))
        held.start()
        assert engine.entered.wait(10)
        status = remotes[1].ping()
        assert status["busy"] == "ask" and "ask" not in results  # answered mid-request
        queued = threading.Thread(target=lambda: results.update(rec=remotes[2].recognize(
            frames(200))))
        queued.start()
        deadline = time.monotonic() + 10
        while remotes[1].ping()["queued"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(RemoteError) as err:  # running one + one queued = full
            remotes[1].concepts()
        assert err.value.type_name == "ServerBusy"
        assert remotes[1].wait_ready(5)["busy"] == "ask"
        engine.release.set()
        held.join(10)
        queued.join(10)
        assert results["ask"].answer == "block -> mug"
        assert results["rec"].concepts[0].present
    finally:
        engine.release.set()
        for remote in remotes:
            remote.close()
        server.close()


def test_server_closed_mid_request_then_restarted_on_the_same_endpoint() -> None:
    endpoint = free_tcp_endpoint()
    first = FakeEngine()
    first.release.clear()
    server = serve_engine(first, endpoint).start()
    remote = RemoteEngine(endpoint, timeout_s=3, connect_timeout_s=3)
    try:
        remote.introduce("mug", frames(200))
        closer = threading.Thread(target=lambda: (first.entered.wait(10), server.close()))
        closer.start()
        start = time.monotonic()
        with pytest.raises(WorkerUnavailable, match=endpoint):
            remote.ask("block", frames(200))
        assert time.monotonic() - start < 3 + 2
        assert not remote.healthy
        closer.join(10)
        first.release.set()

        second = FakeEngine()
        second.introduce("anna", frames(60))
        restarted = serve_engine(second, endpoint).start()
        try:
            assert [c.name for c in remote.concepts()] == ["anna"]  # same client object
            assert remote.healthy
        finally:
            restarted.close()
        # Restarted while the client was idle: ZeroMQ reconnects, the client says hello again.
        third = FakeEngine()
        with serve_engine(third, endpoint):
            assert remote.forget("anna") is False and third.calls["forget"] == 1
    finally:
        first.release.set()
        remote.close()
        server.close()


def test_a_late_reply_is_never_taken_for_a_later_request(served) -> None:
    engine, server = served
    engine.introduce("mug", frames(200))
    engine.release.clear()
    with RemoteEngine(server.endpoint, timeout_s=0.5) as remote:
        start = time.monotonic()
        with pytest.raises(WorkerUnavailable, match="did not answer ask within 0.5 s"):
            remote.ask("block", frames(200))
        assert time.monotonic() - start < 0.5 + 2
        assert not remote.healthy
        engine.release.set()  # the abandoned ask now completes and its reply goes nowhere
        for grey in (200, 10):
            got = remote.recognize(frames(grey))
            assert isinstance(got, RecognitionResult)
            assert got.concepts[0].present == (grey == 200)
        assert remote.healthy


def _spawn_worker(endpoint: str, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, __file__, endpoint], stdout=out, stderr=out)


def test_worker_process_killed_mid_request_then_restarted(tmp_path: Path) -> None:
    endpoint = free_tcp_endpoint()
    log = tmp_path / "worker.log"
    procs = [_spawn_worker(endpoint, log)]
    remote = RemoteEngine(endpoint, timeout_s=4, connect_timeout_s=2)
    observer = RpcClient(endpoint, timeout_s=4)
    try:
        remote.wait_ready(60)
        remote.introduce("mug", frames(200))
        outcome: dict[str, Any] = {}

        def ask() -> None:
            try:
                remote.ask("block", frames(200))
            except WorkerUnavailable as exc:
                outcome["error"], outcome["at"] = exc, time.monotonic()

        caller = threading.Thread(target=ask)
        caller.start()
        deadline = time.monotonic() + 10
        while (busy := observer.ping()["busy"]) != "ask" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert busy == "ask"  # the worker is inside the request when it dies
        procs[0].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        caller.join(10)
        assert isinstance(outcome.get("error"), WorkerUnavailable)
        assert outcome["at"] - killed < 4 + 2
        assert not remote.healthy

        procs.append(_spawn_worker(endpoint, log))
        remote.wait_ready(60)
        assert remote.concepts() == []  # a fresh worker, reached by the same client object
        remote.introduce("anna", frames(60))
        assert remote.recognize(frames(60)).concepts[0].present
        procs[1].send_signal(signal.SIGTERM)  # a clean shutdown of serve_forever()
        assert procs[1].wait(10) == 0, log.read_text()[-2000:]
        assert "stopped serving" in log.read_text()
    finally:
        remote.close()
        observer.close()
        for proc in procs:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize(
    "bind",
    ["tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://192.168.1.20:5555", "tcp://eth0:5555",
     "tcp://[::]:5555", "ws://127.0.0.1:5555"],
)
def test_non_loopback_bind_without_keys_is_refused(bind: str) -> None:
    with pytest.raises(ValueError, match="needs CurveZMQ keys"):
        serve_engine(FakeEngine(), bind)


def test_loopback_endpoints_are_recognised() -> None:
    for endpoint in ["tcp://127.0.0.1:1", "tcp://127.3.2.1:9", "tcp://localhost:5",
                     "tcp://[::1]:5", "ipc:///tmp/x.sock", "inproc://x"]:
        assert is_local_endpoint(endpoint), endpoint
    with pytest.raises(ValueError, match="not a ZeroMQ endpoint"):
        is_local_endpoint("127.0.0.1:5555")


def test_nothing_listening_raises_worker_unavailable_in_time() -> None:
    with RemoteEngine(free_tcp_endpoint(), connect_timeout_s=0.3) as remote:
        start = time.monotonic()
        with pytest.raises(WorkerUnavailable, match="did not answer hello within 0.3 s"):
            remote.concepts()
        assert time.monotonic() - start < 0.3 + 2
        assert not remote.healthy and remote.last_ok is None


def test_curve_lets_in_allowed_clients_only(tmp_path: Path) -> None:
    server_pub, server_sec = generate_curve_keys(tmp_path / "server", "worker")
    ok_pub, ok_sec = generate_curve_keys(tmp_path / "clients", "robot1")
    _, stranger_sec = generate_curve_keys(tmp_path / "strangers", "robot2")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / ok_pub.name).write_bytes(ok_pub.read_bytes())
    keys = CurveServerKeys(server_sec, allowed)
    with pytest.raises(ValueError, match="allow_nonlocal=True"):
        serve_engine(FakeEngine(), "tcp://0.0.0.0:*", curve=keys)
    with pytest.raises(ValueError, match="secret_key_file"):
        CurveServerKeys(server_pub, allowed)  # a public certificate only
    with pytest.raises(ValueError, match="server_public_key_file"):
        CurveClientKeys(ok_sec, tmp_path / "missing.key")

    engine = FakeEngine()
    server = serve_engine(engine, "tcp://0.0.0.0:*", curve=keys, allow_nonlocal=True).start()
    endpoint = "tcp://127.0.0.1:" + server.endpoint.rsplit(":", 1)[1]
    try:
        with RemoteEngine(endpoint, timeout_s=5,
                          curve=CurveClientKeys(ok_sec, server_pub)) as remote:
            remote.introduce("mug", frames(200))
            assert [c.name for c in remote.concepts()] == ["mug"]
        calls = sum(engine.calls.values())
        for curve in (CurveClientKeys(stranger_sec, server_pub), None):
            with RemoteEngine(endpoint, connect_timeout_s=1.0, curve=curve) as intruder:
                start = time.monotonic()
                with pytest.raises(WorkerUnavailable):
                    intruder.forget("mug")
                assert time.monotonic() - start < 1.0 + 2
                assert intruder.server_info is None  # got nothing, not even the hello
        assert sum(engine.calls.values()) == calls  # nothing reached the engine
    finally:
        server.close()


def test_heartbeat_tracks_worker_health(served) -> None:
    _, server = served
    with RpcClient(server.endpoint, heartbeat_s=0.1, connect_timeout_s=1.0) as client:
        deadline = time.monotonic() + 10
        while not client.healthy and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.healthy and client.last_ok is not None  # no call made: the heartbeat
        server.close()
        while client.healthy and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not client.healthy


def test_configuration_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        RpcClient("tcp://127.0.0.1:5555", timeout_s=0)
    with pytest.raises(ValueError, match="heartbeat_s"):
        RpcClient("tcp://127.0.0.1:5555", heartbeat_s=-1)
    with pytest.raises(ValueError, match="introduce_timeout_s"):
        RemoteEngine("tcp://127.0.0.1:5555", introduce_timeout_s=0)
    with pytest.raises(ValueError, match="methods"):
        RpcServer(lambda m, p, a: ({}, []), "tcp://127.0.0.1:5555", set())
    with pytest.raises(ValueError, match="info"):
        serve_engine(FakeEngine(), "tcp://127.0.0.1:5555", info={"bad": object()})
    with pytest.raises(OSError, match="cannot bind tcp://127.0.0.1:port"):
        serve_engine(FakeEngine(), "tcp://127.0.0.1:port").start()  # reported by start()


def _serve(endpoint: str) -> None:
    """The worker process of the kill test: FakeEngine behind an RpcServer until SIGTERM."""
    logging.basicConfig(level=logging.INFO)
    engine = FakeEngine()
    engine.release.clear()  # ask("block") hangs until the process is killed
    server = serve_engine(engine, endpoint)
    signal.signal(signal.SIGTERM, lambda *_: server.close())
    server.serve_forever()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    _serve(sys.argv[1])

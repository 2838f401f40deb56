"""The DEALER side of the worker RPC: :class:`RpcClient` (see ``rpc.py`` for the protocol)."""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from ego_ros.serving.common import (
    CurveClientKeys,
    RemoteError,
    RpcError,
    WorkerMismatch,
    WorkerUnavailable,
    _positive,
    is_local_endpoint,
    transport_limit,
)
from ego_ros.serving.wire import (
    DEFAULT_LIMITS,
    PROTOCOL_VERSION,
    Message,
    WireError,
    WireLimits,
    decode,
    encode,
)

logger = logging.getLogger("ego_ros.serving.rpc")


_CLIENT_EVENTS = (zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                  | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


class RpcClient:
    """Calls an :class:`RpcServer`; thread-safe (one call at a time per client).

    ``timeout_s`` bounds each call's wait for its reply; ``connect_timeout_s`` bounds the
    ``hello`` handshake done before the first call and after any failure. ``heartbeat_s > 0``
    adds ZeroMQ-level heartbeats (a silent peer is dropped after three intervals) and a
    background thread that pings the worker when idle (or says ``hello`` when a handshake is
    due), keeping :attr:`healthy` and :attr:`server_info` current. :attr:`last_ok` is the
    ``time.monotonic()`` of the last answer, None before any; :attr:`server_info_at` that of
    the last ``hello``.
    ``check_hello(params)`` vets every handshake: a ValueError it raises refuses the worker
    (:class:`WorkerMismatch` with its message) until a handshake passes.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        heartbeat_s: float = 0.0,
        curve: CurveClientKeys | None = None,
        limits: WireLimits = DEFAULT_LIMITS,
        check_hello: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        is_local_endpoint(endpoint)  # validates the form
        self._check_hello = check_hello
        self._mismatch = ""  # why the last handshake's worker was refused
        self.endpoint = endpoint
        self._timeout_s = _positive("timeout_s", timeout_s)
        self._connect_timeout_s = _positive("connect_timeout_s", connect_timeout_s)
        if isinstance(heartbeat_s, bool) or not isinstance(heartbeat_s, (int, float)) \
                or heartbeat_s < 0:
            raise ValueError(f"heartbeat_s must be >= 0 seconds (0 = off), got {heartbeat_s!r}")
        self._heartbeat_s = float(heartbeat_s)
        self._curve = curve
        self._limits = limits
        self._ctx = zmq.Context()
        self._lock = threading.Lock()
        self._sock: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._ids = itertools.count(1)
        self._tag = uuid.uuid4().hex[:8]
        self._need_hello = True
        self._healthy = False
        self._closed = threading.Event()
        self.last_ok: float | None = None
        self.server_info: dict[str, Any] | None = None
        self.server_info_at: float | None = None  # time.monotonic() of that hello
        self._heartbeat: threading.Thread | None = None
        if self._heartbeat_s > 0:
            self._heartbeat = threading.Thread(target=self._heartbeat_loop, daemon=True,
                                               name="ego-rpc-heartbeat")
            self._heartbeat.start()

    @property
    def healthy(self) -> bool:
        """True when the last exchange with the worker succeeded, no disconnect was seen and
        the worker passed ``check_hello``."""
        return self._healthy and not self._mismatch

    # -- public calls -----------------------------------------------------------------------
    def call(self, method: str, params: dict[str, Any] | None = None, arrays: Sequence[Any] = (),
             timeout_s: float | None = None) -> tuple[dict[str, Any], list[Any]]:
        """Run ``method`` on the worker; returns its (params, arrays).

        Raises :class:`WorkerUnavailable` (no answer in time, connection lost, refused),
        :class:`RemoteError` (the worker reported an error) or :class:`WireError` (bad input).
        """
        with self._lock:
            self._check_open()
            self._read_events()
            if self._need_hello:
                self._hello_locked(self._connect_timeout_s)
            timeout = self._timeout_s if timeout_s is None else _positive("timeout_s", timeout_s)
            reply = self._exchange("req", method, params, arrays, timeout, "rep")
            return reply.params, list(reply.arrays)

    def hello(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Readiness handshake: the worker's protocol, methods, model info and status."""
        with self._lock:
            self._check_open()
            return self._hello_locked(timeout_s or self._connect_timeout_s)

    def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """Retry :meth:`hello` until the worker answers or ``timeout_s`` passes (start-up)."""
        deadline = time.monotonic() + _positive("timeout_s", timeout_s)
        while True:
            remaining = deadline - time.monotonic()
            try:
                return self.hello(max(0.05, min(remaining, self._connect_timeout_s)))
            except WorkerMismatch:
                raise  # it answered: waiting longer changes nothing
            except WorkerUnavailable:
                if time.monotonic() >= deadline:
                    raise

    def ping(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Liveness probe answered even while the worker runs a request: its status
        (``busy`` method or None, ``queued`` count, ``uptime_s``) plus ``rtt_s``."""
        with self._lock:
            self._check_open()
            start = time.monotonic()
            reply = self._exchange("ping", "", None, (), timeout_s or self._connect_timeout_s,
                                   "pong")
            return {**reply.params, "rtt_s": time.monotonic() - start}

    def close(self) -> None:
        """Stop the heartbeat, close the socket and release the ZeroMQ context (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        with self._lock:
            self._reset()
            self._ctx.term()

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (called with the lock held) ----------------------------------------------
    def _check_open(self) -> None:
        if self._closed.is_set():
            raise RuntimeError(f"RpcClient for {self.endpoint} is closed")

    def _hello_locked(self, timeout_s: float) -> dict[str, Any]:
        reply = self._exchange("hello", "", {}, (), timeout_s, "hello")
        if reply.params.get("protocol") != PROTOCOL_VERSION:
            raise WireError(f"worker at {self.endpoint} speaks protocol "
                            f"{reply.params.get('protocol')!r}, this client {PROTOCOL_VERSION}")
        self.server_info, self.server_info_at = reply.params, time.monotonic()
        if self._check_hello is not None:
            try:
                self._check_hello(reply.params)
            except ValueError as exc:
                self._mismatch = str(exc)
                self._reset()  # the next call says hello again: a matching worker may be back
                raise WorkerMismatch(self._mismatch) from None
            self._mismatch = ""
        self._need_hello = False
        return reply.params

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.reconnect_ivl = 100
            sock.reconnect_ivl_max = 2000  # a restarted worker is found within ~2 s
            # An oversized reply is received and refused by the decoder with its size, rather
            # than dropped by libzmq with the connection (see common.transport_limit).
            sock.maxmsgsize = transport_limit(self._limits)
            if "[" in self.endpoint:
                sock.ipv6 = True
            if self._heartbeat_s > 0:
                sock.heartbeat_ivl = int(self._heartbeat_s * 1000)
                sock.heartbeat_timeout = int(self._heartbeat_s * 3000)
            if self._curve is not None:
                public, secret = zmq.auth.load_certificate(str(self._curve.secret_key_file))
                server_public, _ = zmq.auth.load_certificate(
                    str(self._curve.server_public_key_file))
                sock.curve_secretkey = secret
                sock.curve_publickey = public
                sock.curve_serverkey = server_public
            self._monitor = sock.get_monitor_socket(_CLIENT_EVENTS)
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock

    def _reset(self) -> None:
        """Forget the socket (lazy pirate): the next call connects afresh and says hello."""
        if self._sock is not None:
            self._sock.disable_monitor()
            self._sock.close(linger=0)
        if self._monitor is not None:
            self._monitor.close(linger=0)
        self._sock = self._monitor = None
        self._need_hello = True

    def _fail(self, text: str) -> WorkerUnavailable:
        # Warn on the transition only: a heartbeat against a dead worker must not flood the log.
        logger.log(logging.WARNING if self._healthy else logging.DEBUG, "%s", text)
        self._healthy = False
        self._reset()
        return WorkerUnavailable(text)

    def _read_events(self) -> str:
        """Drain connection events; return why the connection is unusable ("" if it is fine)."""
        problem = ""
        while self._monitor is not None:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            kind = event["event"]
            if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                problem = ("refused this client's CurveZMQ key (is its public key in the "
                           "worker's allowed-clients folder?)")
            elif kind in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                          zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                problem = problem or ("security handshake failed (CurveZMQ on one side only, "
                                      "or the wrong worker public key?)")
            elif kind == zmq.EVENT_DISCONNECTED:
                problem = problem or "connection lost"
        if problem:
            self._healthy = False
            self._need_hello = True
        return problem

    def _exchange(self, kind: str, method: str, params: dict[str, Any] | None,
                  arrays: Sequence[Any], timeout_s: float, expect: str) -> Message:
        what = method or kind
        sock = self._socket()
        msg_id = f"{self._tag}-{next(self._ids)}"
        frames = encode(kind, msg_id, method, params, arrays, limits=self._limits)
        self._check_worker_limit(frames, what)
        try:
            sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            raise self._fail(f"worker at {self.endpoint}: send queue full for {what}") from None
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._fail(f"worker at {self.endpoint} did not answer {what} within "
                                 f"{timeout_s:.1f} s")
            ready = dict(poller.poll(remaining * 1000))
            if self._monitor in ready:
                problem = self._read_events()
                if problem:
                    raise self._fail(f"worker at {self.endpoint}: {problem} during {what}")
            if sock not in ready:
                continue
            raw = sock.recv_multipart(copy=False)
            try:
                reply = decode(raw, limits=self._limits)
            except WireError as exc:
                self._fail(f"worker at {self.endpoint} sent a malformed reply to {what}")
                raise WireError(f"malformed reply from {self.endpoint} to {what}: {exc}") from exc
            if reply.id != msg_id:
                logger.debug("dropping stale reply %s (waiting for %s)", reply.id, msg_id)
                continue
            self._healthy = True
            self.last_ok = time.monotonic()
            if reply.kind == "err":
                raise RemoteError(method, str(reply.params.get("type", "Error")),
                                  str(reply.params.get("message", "")))
            if reply.kind != expect:
                raise WireError(f"worker at {self.endpoint} answered {what} with "
                                f"{reply.kind!r}, expected {expect!r}")
            return reply

    def _check_worker_limit(self, frames: Sequence[Any], what: str) -> None:
        """Refuse, before sending, a request over the limit the worker announced in ``hello``
        (a client configured with larger limits than its worker): it would be refused anyway,
        after the transfer, or dropped unanswered beyond the worker's transport limit."""
        limit = (self.server_info or {}).get("max_bytes")
        if isinstance(limit, bool) or not isinstance(limit, int):
            return
        size = sum(memoryview(f).nbytes for f in frames)
        if size > limit:
            raise WireError(f"{what} request of {size} bytes exceeds the worker's limit of "
                            f"{limit} bytes (WireLimits.max_bytes at {self.endpoint}); send "
                            "fewer or smaller images")

    def _heartbeat_loop(self) -> None:
        while not self._closed.wait(self._heartbeat_s):
            if self.last_ok is not None and time.monotonic() - self.last_ok < self._heartbeat_s:
                continue  # recent traffic proves liveness
            if not self._lock.acquire(blocking=False):
                continue  # a call is in flight; its outcome updates the state
            try:
                if not self._closed.is_set():
                    self._read_events()
                    wait_s = min(self._connect_timeout_s, self._heartbeat_s)
                    if self._need_hello:  # (re)connected: learn the worker's info right away
                        self._hello_locked(wait_s)
                    else:
                        self._exchange("ping", "", None, (), wait_s, "pong")
            except (RpcError, WireError) as exc:
                logger.debug("heartbeat to %s failed: %s", self.endpoint, exc)
            finally:
                self._lock.release()

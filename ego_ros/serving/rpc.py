"""Request/reply over ZeroMQ for the GPU worker: a ROUTER server and a DEALER client.

The server runs one request at a time through its handler (the GPU does one inference at a
time) in a worker thread, while its socket thread keeps answering ``ping`` and ``hello`` and
queueing requests from any number of clients (several nodes may share one worker). ZeroMQ
sockets are not thread-safe, so only the socket thread touches the ROUTER; the worker thread
hands each encoded reply back over an inproc PAIR socket, which also wakes the socket loop.

The client puts a timeout on every receive. After a timeout or a lost connection it discards
its socket and makes a new one on the next call ("lazy pirate"): the new socket has a new
identity, so a late reply to an abandoned request can never be matched to a later one (ids are
checked as well). ZeroMQ reconnects by itself; the client re-does the ``hello`` handshake after
any failure so it always knows what it is talking to.

Security: the server binds to loopback (or ipc/inproc) unless told otherwise. Any other address
needs ``allow_nonlocal=True`` *and* CurveZMQ keys; the server then only lets in clients whose
public key is in an allowed-clients directory (ZAP, ``zmq.auth.thread.ThreadAuthenticator``).
Key files are pyzmq's certificate format (see :func:`generate_curve_keys`).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from ego_ros.serving.client import RpcClient
from ego_ros.serving.common import (
    CurveClientKeys,
    CurveServerKeys,
    RemoteError,
    RpcError,
    WorkerMismatch,
    WorkerUnavailable,
    generate_curve_keys,
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
    peek_id,
)

logger = logging.getLogger(__name__)

# Re-exported: the server, the client and what they share are used together as one module.
__all__ = ["CurveClientKeys", "CurveServerKeys", "Handler", "RemoteError", "RpcClient",
           "RpcError", "RpcServer", "WorkerMismatch", "WorkerUnavailable", "generate_curve_keys",
           "is_local_endpoint"]

# handler(method, params, arrays) -> (result params, result arrays)
Handler = Callable[[str, dict[str, Any], tuple[Any, ...]], tuple[dict[str, Any], Sequence[Any]]]

_POLL_MS = 100  # how often the server loop checks for close()
_MAX_ERROR_TEXT = 2000  # characters of an exception message sent back to a client


class RpcServer:
    """Serves ``handler`` to any number of :class:`RpcClient` over a ROUTER socket.

    ``methods`` are the request methods the handler accepts; anything else is answered with an
    ``UnknownMethod`` error without reaching it. ``info`` (JSON) is returned by ``hello``, e.g.
    the model and its fingerprint; a callable is called for each ``hello`` (from the socket
    thread: it must be quick and never block), for info that changes. At most ``max_pending``
    requests wait behind the running one; more are answered with a ``ServerBusy`` error. Use
    :meth:`start` (background thread) or :meth:`serve_forever` (this thread), then
    :meth:`close`. A closed server cannot restart; make a new one (it may bind the same
    endpoint).
    """

    def __init__(
        self,
        handler: Handler,
        bind: str = "tcp://127.0.0.1:5555",
        methods: frozenset[str] | set[str] = frozenset(),
        *,
        info: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
        curve: CurveServerKeys | None = None,
        allow_nonlocal: bool = False,
        limits: WireLimits = DEFAULT_LIMITS,
        max_pending: int = 16,
    ) -> None:
        if not methods or not all(isinstance(m, str) and m for m in methods):
            raise ValueError(f"methods must be a non-empty set of names, got {methods!r}")
        if not is_local_endpoint(bind):
            if curve is None:
                raise ValueError(
                    f"refusing to bind {bind}: a non-loopback address needs CurveZMQ keys "
                    "(curve=CurveServerKeys(...)) so that only known clients get in; bind "
                    "tcp://127.0.0.1:PORT or ipc:// for a worker on the same machine")
            if not allow_nonlocal:
                raise ValueError(f"refusing to bind {bind}: a non-loopback address must be "
                                 "asked for explicitly with allow_nonlocal=True")
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 0:
            raise ValueError(f"max_pending must be an integer >= 0, got {max_pending!r}")
        self._info = info if callable(info) else dict(info or {})
        try:
            json.dumps(self._hello_info(), allow_nan=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"info must be JSON-serialisable: {exc}") from exc
        self._handler = handler
        self._bind = bind
        self._methods = frozenset(methods)
        self._curve = curve
        self._limits = limits
        self._max_pending = max_pending
        self._jobs: queue.Queue[tuple[bytes, Message] | None] = queue.Queue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._setup_error: BaseException | None = None
        self._busy: str | None = None  # method being handled, for ping/hello
        self._started = time.monotonic()
        self._ctx: zmq.Context | None = None  # the rest is created by _setup()
        self._auth: ThreadAuthenticator | None = None
        self._router: zmq.Socket | None = None
        self._results: zmq.Socket | None = None
        self._worker: threading.Thread | None = None
        self.endpoint = bind  # the bound endpoint once running (a "*" port resolved)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> RpcServer:
        """Bind and serve in a background thread; returns once bound (raises if binding failed)."""
        if self._thread is not None:
            raise RuntimeError("RpcServer.start() called twice")
        self._thread = threading.Thread(target=self._run_in_thread, name="ego-rpc-server",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"RpcServer did not bind {self._bind} within {timeout_s} s")
        if self._setup_error is not None:
            raise self._setup_error
        return self

    def serve_forever(self) -> None:
        """Bind and serve in this thread until :meth:`close` is called (from another thread
        or a signal handler)."""
        try:
            self._setup()
            self._loop()
        finally:
            self._teardown()

    @property
    def alive(self) -> bool:
        """True while :meth:`start`'s threads serve; False once they stopped, on :meth:`close`
        or on an error (logged), so a supervisor can tell a dead server from a quiet one."""
        threads = (self._thread, self._worker)
        return (self._thread is not None and not self._stop.is_set()
                and all(t is not None and t.is_alive() for t in threads))

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop serving and release the endpoint. A handler still running is left to finish."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def __enter__(self) -> RpcServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run_in_thread(self) -> None:
        try:
            self.serve_forever()
        except BaseException as exc:
            if self._ready.is_set():
                logger.exception("server on %s stopped on an error", self.endpoint)
            else:
                self._setup_error = exc  # raised by start() in the caller's thread
        finally:
            self._ready.set()

    def _setup(self) -> None:
        if self._ctx is not None:
            raise RuntimeError("an RpcServer serves once; create a new one to serve again")
        self._ctx = zmq.Context()
        router = self._ctx.socket(zmq.ROUTER)
        self._router = router
        router.linger = 0
        # Frames over this are dropped unanswered by libzmq; up to it, the decoder answers a
        # message over the wire limit with its size (see common.transport_limit for why).
        router.maxmsgsize = transport_limit(self._limits)
        if "[" in self._bind:
            router.ipv6 = True
        if self._curve is not None:
            self._auth = ThreadAuthenticator(self._ctx, log=logger.getChild("zap"))
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(self._curve.allowed_clients_dir))
            public, secret = zmq.auth.load_certificate(str(self._curve.secret_key_file))
            router.curve_secretkey = secret
            router.curve_publickey = public
            router.curve_server = True
        self._bind_with_retry(router)
        self.endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        address = f"inproc://ego-rpc-results-{uuid.uuid4().hex}"
        self._results = self._ctx.socket(zmq.PAIR)
        self._results.linger = 0
        self._results.bind(address)
        self._worker = threading.Thread(target=self._work, args=(address,),
                                        name="ego-rpc-handler", daemon=True)
        self._worker.start()
        self._started = time.monotonic()
        logger.info("serving %s on %s (curve=%s)", sorted(self._methods), self.endpoint,
                    self._curve is not None)
        self._ready.set()

    def _bind_with_retry(self, router: zmq.Socket, retry_s: float = 2.0) -> None:
        """Bind, waiting briefly if a just-closed worker's listener still holds the port."""
        deadline = time.monotonic() + retry_s
        while True:
            try:
                router.bind(self._bind)
                return
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                    raise OSError(f"cannot bind {self._bind}: {exc}") from exc
                time.sleep(0.05)

    def _teardown(self) -> None:
        self._stop.set()
        if self._ctx is None:
            return
        for sock in (self._router, self._results):
            if sock is not None:
                sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self._jobs.put(None)
        worker = self._worker
        if worker is not None and worker.is_alive():
            worker.join(1.0)
        if worker is not None and worker.is_alive():
            # The handler is stuck (e.g. a long inference): the context can only be terminated
            # once its PAIR socket is closed, so let a helper thread do it afterwards.
            logger.warning("handler still running %r at shutdown; releasing it later", self._busy)
            threading.Thread(target=lambda: (worker.join(), self._ctx.term()), daemon=True,
                             name="ego-rpc-reaper").start()
        else:
            self._ctx.term()
        if self._ready.is_set():
            logger.info("stopped serving on %s", self.endpoint)

    # -- socket thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._results, zmq.POLLIN)
        while not self._stop.is_set():
            ready = dict(poller.poll(_POLL_MS))
            if self._results in ready:
                self._forward_results()
            if self._router in ready:
                for _ in range(100):  # bounded, so results are forwarded between bursts
                    try:
                        frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    try:
                        self._on_message(frames)
                    except Exception:  # one bad message must never stop the server
                        logger.exception("failed to handle a message on %s; serving on",
                                         self.endpoint)

    def _forward_results(self) -> None:
        while True:
            try:
                frames = self._results.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                self._router.send_multipart(frames, copy=False)  # unknown peer: dropped
            except zmq.Again:
                logger.warning("dropped a reply: the client's queue is full")
            except zmq.ZMQError as exc:
                if exc.errno == zmq.ETERM:
                    raise
                logger.warning("dropped a reply: %s", exc)

    def _reply(self, identity: bytes, kind: str, msg_id: str, method: str,
               params: dict[str, Any]) -> None:
        frames = encode(kind, msg_id or "?", method, params, limits=self._limits)
        self._router.send_multipart([identity, *frames], copy=False)

    def _hello_info(self) -> dict[str, Any]:
        if not callable(self._info):
            return self._info
        try:
            info = dict(self._info())
            json.dumps(info, allow_nan=True)
            return info
        except Exception as exc:  # a hello must still be answered
            logger.error("hello info failed: %s: %s", type(exc).__name__, exc)
            return {"error": f"{type(exc).__name__}: {exc}"}

    def _status(self) -> dict[str, Any]:
        return {"busy": self._busy, "queued": self._jobs.qsize(),
                "uptime_s": round(time.monotonic() - self._started, 3)}

    def _on_message(self, frames: list[zmq.Frame]) -> None:
        identity, body = frames[0].bytes, frames[1:]
        if not body:
            return
        try:
            msg = decode(body, limits=self._limits, bfloat16="auto")
        except WireError as exc:
            logger.warning("rejected a malformed message: %s", exc)
            self._reply(identity, "err", peek_id(body), "",
                        {"type": "WireError", "message": str(exc)})
            return
        if msg.kind == "ping":
            self._reply(identity, "pong", msg.id, "", self._status())
        elif msg.kind == "hello":
            info = {"protocol": PROTOCOL_VERSION, "methods": sorted(self._methods),
                    "max_bytes": self._limits.max_bytes, "info": self._hello_info(),
                    **self._status()}
            self._reply(identity, "hello", msg.id, "", info)
        elif msg.kind != "req":
            self._reply(identity, "err", msg.id, msg.method,
                        {"type": "WireError", "message": f"a server does not accept {msg.kind!r}"})
        elif msg.method not in self._methods:
            self._reply(identity, "err", msg.id, msg.method,
                        {"type": "UnknownMethod", "message": f"no method {msg.method!r}; this "
                         f"worker serves {sorted(self._methods)}"})
        elif self._jobs.qsize() >= self._max_pending:
            self._reply(identity, "err", msg.id, msg.method,
                        {"type": "ServerBusy", "message": f"{self._jobs.qsize()} requests "
                         "already wait for this worker; try again later"})
        else:
            self._jobs.put((identity, msg))

    # -- handler thread ---------------------------------------------------------------------
    def _work(self, address: str) -> None:
        sock = self._ctx.socket(zmq.PAIR)
        sock.linger = 0
        sock.connect(address)
        try:
            while True:
                job = self._jobs.get()
                if job is None or self._stop.is_set():
                    return
                identity, msg = job
                frames = self._execute(msg)
                try:  # never block: after close() nobody reads the other end
                    sock.send_multipart([identity, *frames], flags=zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    logger.warning("dropped the reply to %s: server closing", msg.method)
        finally:
            sock.close(linger=0)

    def _execute(self, msg: Message) -> list[Any]:
        self._busy = msg.method
        try:
            params, arrays = self._handler(msg.method, msg.params, msg.arrays)
            if not isinstance(params, dict):
                raise TypeError(f"handler returned {type(params).__name__} params, not a dict")
            return encode("rep", msg.id, msg.method, params, arrays, limits=self._limits)
        except Exception as exc:  # the client gets the type and message; the log the traceback
            logger.error("%s failed: %s: %s", msg.method, type(exc).__name__, exc, exc_info=True)
            text = str(exc)[:_MAX_ERROR_TEXT]
            return encode("err", msg.id, msg.method, {"type": type(exc).__name__, "message": text},
                          limits=self._limits)
        finally:
            self._busy = None

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

import ipaddress
import itertools
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

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

# handler(method, params, arrays) -> (result params, result arrays)
Handler = Callable[[str, dict[str, Any], tuple[Any, ...]], tuple[dict[str, Any], Sequence[Any]]]

_POLL_MS = 100  # how often the server loop checks for close()
_MAX_ERROR_TEXT = 2000  # characters of an exception message sent back to a client


class RpcError(RuntimeError):
    """Base of the errors a client call raises besides :class:`WireError`."""


class WorkerUnavailable(RpcError):  # noqa: N818 - the name the engine API documents
    """The worker did not answer in time, the connection was lost, or it refused this client."""


class RemoteError(RpcError):
    """The worker answered the request with an error (its exception type and message)."""

    def __init__(self, method: str, type_name: str, message: str) -> None:
        super().__init__(f"worker failed {method or 'request'}: {type_name}: {message}")
        self.method = method
        self.type_name = type_name
        self.remote_message = message


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _load_cert(path: Path, need_secret: bool, field_name: str) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise ValueError(f"{field_name}: no key file at {path}")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{field_name}: {path} is not a ZeroMQ certificate: {exc}") from exc
    if need_secret and not secret:
        raise ValueError(f"{field_name}: {path} holds no secret key (use the *.key_secret file)")
    return public, secret


@dataclass(frozen=True)
class CurveServerKeys:
    """The worker's CurveZMQ identity and the public keys of the clients it lets in."""

    secret_key_file: Path  # the worker's certificate with its secret key (*.key_secret)
    allowed_clients_dir: Path  # public certificates (*.key) of allowed clients; read at start

    def __post_init__(self) -> None:
        _load_cert(Path(self.secret_key_file), True, "CurveServerKeys.secret_key_file")
        if not Path(self.allowed_clients_dir).is_dir():
            raise ValueError(
                f"CurveServerKeys.allowed_clients_dir: {self.allowed_clients_dir} is not a folder"
            )


@dataclass(frozen=True)
class CurveClientKeys:
    """A client's CurveZMQ identity and the worker's public key it expects."""

    secret_key_file: Path  # this client's certificate with its secret key (*.key_secret)
    server_public_key_file: Path  # the worker's public certificate (*.key)

    def __post_init__(self) -> None:
        _load_cert(Path(self.secret_key_file), True, "CurveClientKeys.secret_key_file")
        _load_cert(Path(self.server_public_key_file), False,
                   "CurveClientKeys.server_public_key_file")


def generate_curve_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """Write a new key pair as ``name.key`` (public) and ``name.key_secret``; return both paths.

    Copy a client's ``.key`` into the worker's allowed-clients folder to let it in, and give
    clients the worker's ``.key``. Keep ``.key_secret`` files private.
    """
    Path(directory).mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(directory), name)
    return Path(public), Path(secret)


def is_local_endpoint(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on a loopback address (127.x.x.x, ::1, localhost)."""
    transport, sep, address = endpoint.partition("://")
    if not sep:
        raise ValueError(f"endpoint {endpoint!r} is not a ZeroMQ endpoint such as "
                         "tcp://127.0.0.1:5555 or ipc:///tmp/ego-worker.sock")
    if transport in ("ipc", "inproc"):
        return True
    if transport != "tcp":
        return False
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface or a host name: not provably local
        return False


class RpcServer:
    """Serves ``handler`` to any number of :class:`RpcClient` over a ROUTER socket.

    ``methods`` are the request methods the handler accepts; anything else is answered with an
    ``UnknownMethod`` error without reaching it. ``info`` (JSON) is returned by ``hello``, e.g.
    the model and its fingerprint. At most ``max_pending`` requests wait behind the running one;
    more are answered with a ``ServerBusy`` error. Use :meth:`start` (background thread) or
    :meth:`serve_forever` (this thread), then :meth:`close`. A closed server cannot restart;
    make a new one (it may bind the same endpoint).
    """

    def __init__(
        self,
        handler: Handler,
        bind: str = "tcp://127.0.0.1:5555",
        methods: frozenset[str] | set[str] = frozenset(),
        *,
        info: dict[str, Any] | None = None,
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
        self._info = dict(info or {})
        try:
            json.dumps(self._info, allow_nan=True)
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
        router.maxmsgsize = self._limits.max_bytes  # refuse absurd frames before allocating
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
                    "info": self._info, **self._status()}
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


_CLIENT_EVENTS = (zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                  | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


class RpcClient:
    """Calls an :class:`RpcServer`; thread-safe (one call at a time per client).

    ``timeout_s`` bounds each call's wait for its reply; ``connect_timeout_s`` bounds the
    ``hello`` handshake done before the first call and after any failure. ``heartbeat_s > 0``
    adds ZeroMQ-level heartbeats (a silent peer is dropped after three intervals) and a
    background thread that pings the worker when idle, keeping :attr:`healthy` current.
    :attr:`last_ok` is the ``time.monotonic()`` of the last answer, None before any.
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
    ) -> None:
        is_local_endpoint(endpoint)  # validates the form
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
        self._heartbeat: threading.Thread | None = None
        if self._heartbeat_s > 0:
            self._heartbeat = threading.Thread(target=self._heartbeat_loop, daemon=True,
                                               name="ego-rpc-heartbeat")
            self._heartbeat.start()

    @property
    def healthy(self) -> bool:
        """True when the last exchange with the worker succeeded and no disconnect was seen."""
        return self._healthy

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
        self.server_info = reply.params
        self._need_hello = False
        return reply.params

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.reconnect_ivl = 100
            sock.reconnect_ivl_max = 2000  # a restarted worker is found within ~2 s
            sock.maxmsgsize = self._limits.max_bytes
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

    def _heartbeat_loop(self) -> None:
        while not self._closed.wait(self._heartbeat_s):
            if self.last_ok is not None and time.monotonic() - self.last_ok < self._heartbeat_s:
                continue  # recent traffic proves liveness
            if not self._lock.acquire(blocking=False):
                continue  # a call is in flight; its outcome updates the state
            try:
                if not self._closed.is_set():
                    self._read_events()
                    self._exchange("ping", "", None, (),
                                   min(self._connect_timeout_s, self._heartbeat_s), "pong")
            except (RpcError, WireError) as exc:
                logger.debug("heartbeat to %s failed: %s", self.endpoint, exc)
            finally:
                self._lock.release()

"""What the RPC server and client share: their errors, CurveZMQ keys, endpoint checks, and
the per-frame limit they give ZeroMQ (:func:`transport_limit`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from ego_ros.serving.wire import WireLimits

# Why the socket limit is larger than the message limit. ZeroMQ's ZMQ_MAXMSGSIZE bounds each
# *frame* a socket accepts, and a peer that sends a larger frame is disconnected inside libzmq
# before the application sees a byte: nobody can answer it, and the sender only sees its
# connection drop (or, with a bare socket, waits for a timeout). So the wire limit
# (``WireLimits.max_bytes``, the whole message) is enforced by the decoder, which answers with a
# WireError naming the size, and the socket gets TRANSPORT_FACTOR times that: a request up to
# that much too large is received, refused with that error and freed. Only a frame beyond it is
# still dropped unanswered, and an RpcClient never sends one (it checks its own limits and the
# limit the worker announces in ``hello`` before sending). Memory stays bounded per frame, at
# TRANSPORT_FACTOR * max_bytes (512 MiB by default), the price of answering. ZeroMQ bounds frames,
# not the number of frames of one message: what keeps an unknown peer from sending many is the
# endpoint (loopback) or CurveZMQ, whose handshake comes before any message is accepted.
TRANSPORT_FACTOR = 2


def transport_limit(limits: WireLimits) -> int:
    """The ZMQ_MAXMSGSIZE (bytes per frame) of a socket whose messages obey ``limits``."""
    return TRANSPORT_FACTOR * limits.max_bytes


class RpcError(RuntimeError):
    """Base of the errors a client call raises besides :class:`WireError`."""


class WorkerUnavailable(RpcError):  # noqa: N818 - the name the engine API documents
    """The worker did not answer in time, the connection was lost, or it refused this client."""


class WorkerMismatch(WorkerUnavailable):
    """The worker answered the handshake but serves another model or store than expected: the
    client refuses every call until a worker that matches answers."""


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
    # pyzmq writes both with the umask's mode (often world-readable): the secret is private.
    Path(secret).chmod(0o600)
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

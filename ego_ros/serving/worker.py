"""The GPU worker: one model and one concept store served to any number of nodes over ZeroMQ.

    ego-ros worker --model /models/Qwen2.5-VL-7B-Instruct --store ~/.ego_ros/store \\
        --bind tcp://127.0.0.1:5555

Loads the backend, opens the store and builds an ``EgoEngine``, then serves the engine's public
methods with :class:`~ego_ros.serving.rpc.RpcServer` (``engine_handler``): one inference at a
time, ``ping``/``hello`` answered even mid-inference, a bounded queue behind. Nodes connect with
``engine.endpoint`` set to the same address.

The worker binds to loopback unless told otherwise. Binding any other address needs
``--allow-nonlocal`` *and* CurveZMQ keys (``--curve-secret`` with the worker's key pair,
``--curve-clients`` with the public keys of the nodes allowed in); unauthenticated clients are
refused. SIGINT and SIGTERM stop it cleanly (the endpoint is released for a restart). A worker
whose server stops on an error exits with status 1, so a supervisor can restart it.

Remote workers (CurveZMQ keys)::

    # on the GPU machine: the worker's pair, and a folder for the robots' public keys
    ego-ros worker --gen-keys ~/ego_keys                    # worker.key, worker.key_secret
    # on each robot: its own pair; copy robot1.key (public) into the worker's ~/ego_keys/clients
    ego-ros worker --gen-keys ~/ego_keys --key-name robot1
    ego-ros worker --bind tcp://0.0.0.0:5555 --allow-nonlocal \\
        --curve-secret ~/ego_keys/worker.key_secret --curve-clients ~/ego_keys/clients

The robot's node sets ``engine.curve_secret_key_file`` to its ``robot1.key_secret`` and
``engine.curve_server_key_file`` to a copy of the worker's ``worker.key``. Only public ``.key``
files ever travel; keep ``.key_secret`` files private.

Without ``--model`` the embedded tiny random-weight model is used (demos and tests only: its
outputs are meaningless). Heavy imports (torch, transformers) happen in :func:`run_worker`, so
``--help`` is instant.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_BIND = "tcp://127.0.0.1:5555"
DEFAULT_STORE = "~/.ego_ros/store"
TINY_FAMILY = "qwen2_5_vl"


@dataclass(frozen=True)
class WorkerConfig:
    """What the worker loads and where it listens; validated on construction.

    ``model`` None = the embedded tiny model. ``curve_secret`` is the worker's certificate with
    its secret key and ``curve_clients`` the folder of allowed clients' public certificates;
    both or neither.
    """

    model: Path | None = None
    store: Path = Path(DEFAULT_STORE)
    bind: str = DEFAULT_BIND
    family: str = "auto"
    dtype: str = "auto"
    device: str = "auto"
    max_image_tokens: int = 0  # 0 = the checkpoint's own limit
    max_in_context: int = 10
    max_new_tokens: int = 48
    threshold: float = 0.5
    max_pending: int = 16
    allow_pickle_weights: bool = False
    allow_nonlocal: bool = False
    curve_secret: Path | None = None
    curve_clients: Path | None = None

    def __post_init__(self) -> None:
        if self.model is not None:
            object.__setattr__(self, "model", Path(self.model).expanduser())
        object.__setattr__(self, "store", Path(self.store).expanduser())
        if "://" not in self.bind:
            raise ValueError(f"WorkerConfig.bind {self.bind!r} is not a ZeroMQ endpoint such as "
                             f"{DEFAULT_BIND}")
        for name in ("max_in_context", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"WorkerConfig.{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.max_pending, bool) or not isinstance(self.max_pending, int) or (
                self.max_pending < 0):
            raise ValueError(f"WorkerConfig.max_pending must be an integer >= 0, "
                             f"got {self.max_pending!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"WorkerConfig.threshold must be in [0, 1], got {self.threshold!r}")
        if (self.curve_secret is None) != (self.curve_clients is None):
            raise ValueError("WorkerConfig: give both curve_secret and curve_clients (CurveZMQ "
                             "needs the worker's key pair and the allowed clients' keys)")


def build_engine(config: WorkerConfig) -> Any:
    """Load the model and the store into an ``EgoEngine`` (seconds to minutes on a real model);
    the engine's ``backend.config.path`` is the folder actually loaded (the tiny model's when
    ``config.model`` is None)."""
    from ego_ros.backends.base import BackendConfig
    from ego_ros.backends.loading import load_backend
    from ego_ros.core.engine import EgoEngine, EngineConfig
    from ego_ros.core.scoring import Thresholds
    from ego_ros.core.store import MemoryStore

    model = config.model
    if model is None:
        from ego_ros.backends.tiny import ensure_tiny_model

        model = ensure_tiny_model(TINY_FAMILY)
        log.warning("no --model given: serving the embedded tiny model %s (random weights, "
                    "meaningless outputs)", model)
    backend = load_backend(BackendConfig(model, family=config.family, dtype=config.dtype,
                                         device=config.device,
                                         max_image_tokens=config.max_image_tokens or None,
                                         allow_pickle_weights=config.allow_pickle_weights))
    store = MemoryStore(config.store, backend.fingerprint)
    engine_config = EngineConfig(thresholds=Thresholds(default=config.threshold),
                                 max_in_context=config.max_in_context,
                                 max_new_tokens=config.max_new_tokens)
    return EgoEngine(backend, store, engine_config)


def run_worker(config: WorkerConfig, stop: threading.Event | None = None) -> int:
    """Serve until ``stop`` is set (or SIGINT/SIGTERM when called from the main thread)."""
    from ego_ros.serving.remote import serve_engine, worker_info
    from ego_ros.serving.rpc import CurveServerKeys, is_local_endpoint

    if not is_local_endpoint(config.bind):  # refuse before spending minutes on the model
        if config.curve_secret is None:
            raise ValueError(f"refusing to bind {config.bind}: a non-loopback address needs "
                             "CurveZMQ keys (--curve-secret and --curve-clients) so that only "
                             "known nodes get in; use tcp://127.0.0.1:PORT on one machine")
        if not config.allow_nonlocal:
            raise ValueError(f"refusing to bind {config.bind}: a non-loopback address must be "
                             "asked for with --allow-nonlocal")
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    curve = (CurveServerKeys(config.curve_secret, config.curve_clients)
             if config.curve_secret is not None else None)
    prepare_ipc_endpoint(config.bind)
    engine = build_engine(config)
    if stop.is_set():
        return 0
    health = engine.health()
    info = worker_info(engine, handshake_info(engine, config, health))
    server = serve_engine(engine, config.bind, info=info, curve=curve,
                          allow_nonlocal=config.allow_nonlocal, max_pending=config.max_pending)
    server.start()
    log.info("ego worker ready on %s (%s on %s, %d concepts)", server.endpoint,
             health["family"], health["device"], health["concepts"])
    try:
        status = supervise(server, stop)
    finally:
        server.close()
    log.info("ego worker on %s stopped", server.endpoint)
    return status


def handshake_info(engine: Any, config: WorkerConfig, health: dict[str, Any]) -> dict[str, Any]:
    """What the worker says about itself in every ``hello``: the model folder it loaded and
    the store it opened (absolute, resolved paths), the model's fingerprint, and the engine
    settings. A node compares ``model`` and ``store`` with its own parameters and refuses a
    worker that serves others (``ego_ros.serving.remote.WorkerExpectation``)."""
    fingerprint = engine.backend.fingerprint
    return {"family": health["family"], "device": health["device"], "dtype": health["dtype"],
            "model": str(Path(engine.backend.config.path).expanduser().resolve()),
            "tiny": config.model is None, "store": str(config.store.resolve()),
            "fingerprint": fingerprint.to_dict(), "fingerprint_text": str(fingerprint),
            "max_in_context": config.max_in_context, "max_new_tokens": config.max_new_tokens,
            "threshold": config.threshold}


def prepare_ipc_endpoint(bind: str) -> None:
    """For an ``ipc://`` endpoint, create its folder (mode 0700) if missing; refuse a folder
    that another user owns or others may write to (they could replace the socket)."""
    import os
    import stat

    if not bind.startswith("ipc://"):
        return
    folder = Path(bind[len("ipc://"):]).parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ValueError(f"refusing to bind {bind}: its folder {folder} belongs to another "
                         "user or is writable by others; remove it or bind elsewhere")


def supervise(server: Any, stop: threading.Event, poll_s: float = 0.5) -> int:
    """Wait until ``stop`` is set (0) or the started ``server`` stops serving on its own (1).

    A server whose threads died (an error it logged) would otherwise leave a process that
    looks alive but answers nobody; exiting non-zero lets ``ego-ros up``, ``ros2 launch``
    (respawn) or systemd notice and restart it.
    """
    while not stop.wait(poll_s):
        if not server.alive:
            log.error("the server on %s stopped serving unexpectedly (see the error above); "
                      "exiting", server.endpoint)
            return 1
    return 0


# -- command line (shared by ``ego-ros worker`` and ``ego_worker``, ego_ros.ros.worker_node) ------
def _flag(text: str) -> bool:
    """A flag's optional value: ``--allow-pickle-weights [true|false]`` (what launch passes)."""
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in ("true", "1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, default=None,
                        help="LVLM checkpoint folder (default: the embedded tiny model, random "
                             "weights, for demos and tests)")
    parser.add_argument("--store", type=Path, default=Path(DEFAULT_STORE),
                        help="concept memory folder (default: %(default)s)")
    parser.add_argument("--bind", default=DEFAULT_BIND,
                        help="ZeroMQ endpoint to listen on (default: %(default)s)")
    parser.add_argument("--family", default="auto",
                        help="model family: auto, qwen2_5_vl or internvl (default: auto)")
    parser.add_argument("--dtype", default="auto",
                        help="auto, float32, bfloat16 or float16 (default: auto)")
    parser.add_argument("--device", default="auto",
                        help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--max-image-tokens", type=int, default=0,
                        help="cap on one image's visual tokens (Qwen2.5-VL); 0 = the "
                             "checkpoint's own limit (default)")
    parser.add_argument("--max-in-context", type=int, default=10,
                        help="most concepts in one context (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=48,
                        help="budget of answers and captions (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="default decision threshold on scores (default: %(default)s)")
    parser.add_argument("--max-pending", type=int, default=16,
                        help="requests that may queue behind the running one (default: "
                             "%(default)s)")
    parser.add_argument("--allow-pickle-weights", nargs="?", const=True, default=False,
                        type=_flag, metavar="BOOL",
                        help="load a --model folder that has only pickled .bin weights "
                             "(unpickling can run code from the file: only for checkpoints "
                             "you trust); default: safetensors weights only")
    parser.add_argument("--allow-nonlocal", action="store_true",
                        help="allow a non-loopback --bind (requires the --curve-* keys)")
    parser.add_argument("--curve-secret", type=Path, default=None,
                        help="the worker's CurveZMQ certificate with its secret key")
    parser.add_argument("--curve-clients", type=Path, default=None,
                        help="folder of allowed clients' public CurveZMQ certificates")
    parser.add_argument("--gen-keys", type=Path, default=None, metavar="DIR",
                        help="write a new CurveZMQ key pair into DIR (NAME.key public, "
                             "NAME.key_secret private; NAME from --key-name) and exit, "
                             "serving nothing. Make one for the worker and one per node; see "
                             "'Remote workers' above")
    parser.add_argument("--key-name", default="worker", metavar="NAME",
                        help="file name of the pair --gen-keys writes (default: %(default)s)")


def generate_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """``--gen-keys``: write the pair ``name.key`` / ``name.key_secret`` into ``directory``.

    Refuses to overwrite an existing pair: replacing a worker's keys would lock out every
    node configured with the old public key.
    """
    from ego_ros.serving.rpc import generate_curve_keys

    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"--key-name {name!r} must be a plain file name such as 'worker'")
    directory = Path(directory).expanduser()
    existing = [p for p in (directory / f"{name}.key", directory / f"{name}.key_secret")
                if p.exists()]
    if existing:
        raise ValueError(f"{existing[0]} already exists; remove it or choose another "
                         "--key-name")
    return generate_curve_keys(directory, name)


def config_from_args(args: argparse.Namespace) -> WorkerConfig:
    return WorkerConfig(model=args.model, store=args.store, bind=args.bind, family=args.family,
                        dtype=args.dtype, device=args.device,
                        max_image_tokens=args.max_image_tokens,
                        max_in_context=args.max_in_context,
                        max_new_tokens=args.max_new_tokens, threshold=args.threshold,
                        max_pending=args.max_pending,
                        allow_pickle_weights=args.allow_pickle_weights,
                        allow_nonlocal=args.allow_nonlocal,
                        curve_secret=args.curve_secret, curve_clients=args.curve_clients)


def main(argv: list[str] | None = None) -> int:
    """``python -m ego_ros.serving.worker``: the worker without ROS, like ``ego-ros worker``.
    (The ``ego_worker`` console script is :mod:`ego_ros.ros.worker_node`: the same options,
    logging to /rosout.)"""
    parser = argparse.ArgumentParser(prog="ego_worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    args = parser.parse_args(argv)
    # A server logs its life cycle (ready, stopped) by default; -v adds debug output.
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from ego_ros.backends.base import BackendError
    from ego_ros.core.store import StoreError

    try:
        if args.gen_keys is not None:
            for path in generate_keys(args.gen_keys, args.key_name):
                print(path)
            return 0
        return run_worker(config_from_args(args))
    except (ValueError, OSError, BackendError, StoreError) as exc:
        # start-up: options, model, store (e.g. a corrupt manifest): a message, no traceback
        print(f"ego_worker: error: cannot start: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

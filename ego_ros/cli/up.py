"""Start ego_node (and, if asked, its engine worker) where ``ros2 launch`` is not available.

    ego-ros up --params-file config/ego.yaml --use-worker --ros-args -r image:=/camera/image_raw

What ``launch/ego.launch.py`` does, for machines with the pip-installed ROS 2 (no launch
system): the node runs as a child process with ``--ros-args --params-file FILE`` plus whatever
follows ``--ros-args`` here (which must come last). With ``--use-worker`` an ``ego_worker``
is started first with the node's effective ``model.*``, ``store.dir`` and engine values: the
file's, then the ``-p``/``--param`` and ``--params-file`` of ``--ros-args`` in order, as rcl
applies them to the node. It is bound to ``--worker-bind`` (else the effective
``engine.endpoint``, else the namespace's default :func:`default_endpoint`), gets the node's
namespace (its logs reach /rosout as ``<namespace>/ego_worker``), and the node is pointed at
it once it answers the handshake; the node refuses a worker that serves another model or
store than its parameters name.

Ctrl-C or SIGTERM stops the children (SIGINT, then SIGTERM, then SIGKILL after
``--stop-timeout``) and exits 0. If a child exits on its own, the others are stopped and the
exit status is 1. Children get SIGTERM if this process dies without cleaning up (Linux).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ego_ros.cli.common import CliError

log = logging.getLogger(__name__)

NODE_NAME = "ego_node"
WORKER_NAME = "ego_worker"  # the worker's ROS executable and node name (its /rosout logger)
_PR_SET_PDEATHSIG = 1
_NAMESPACE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*")
_MAX_IPC_PATH = 100  # bytes; a Unix socket path holds 107


def default_endpoint(namespace: str = "") -> str:
    """The worker endpoint of a node in ``namespace`` when none is configured: a Unix socket
    ``ipc:///tmp/ego_ros-<uid>/worker[.<ns parts joined by dots>].sock``.

    Deterministic (the node, the launch file and ``ego-ros up`` derive the same one), distinct
    per namespace (dots are not allowed in ROS names, so no two namespaces share a path; a
    path too long for a socket uses the first 16 hex digits of the namespace's SHA-256
    instead), private to the user (the worker creates the folder with mode 0700 and refuses
    one that another user owns) and on this machine only: a worker elsewhere needs a tcp://
    ``worker_endpoint`` / ``--worker-bind`` and CurveZMQ keys.
    """
    ns = namespace.strip("/")
    if ns and not _NAMESPACE.fullmatch(ns):
        raise CliError(f"namespace {namespace!r} is not a valid ROS namespace (letters, digits, "
                       "underscores, separated by '/')")
    folder = f"/tmp/ego_ros-{os.getuid()}"
    path = f"{folder}/worker{'.' + ns.replace('/', '.') if ns else ''}.sock"
    if len(path.encode()) > _MAX_IPC_PATH:
        path = f"{folder}/worker.{hashlib.sha256(ns.encode()).hexdigest()[:16]}.sock"
    return f"ipc://{path}"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``up`` on the top-level subparsers."""
    parser = sub.add_parser(
        "up",
        help="run ego_node (and its worker) without ros2 launch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--params-file", type=Path, required=True, metavar="FILE",
                        help="ROS 2 parameters file for ego_node (e.g. config/ego.yaml)")
    parser.add_argument("--use-worker", action="store_true",
                        help="run the model in an ego_worker child process")
    parser.add_argument("--worker-bind", default="", metavar="ENDPOINT",
                        help="worker endpoint (default: the node's engine.endpoint, else "
                             f"{default_endpoint()} in the root namespace, "
                             f"{default_endpoint('robot1')} in /robot1)")
    parser.add_argument("--worker-ready-timeout", type=float, default=300.0, metavar="S",
                        help="longest wait for the worker to load its model (default: "
                             "%(default)s)")
    parser.add_argument("--stop-timeout", type=float, default=10.0, metavar="S",
                        help="grace period for children to stop before they are killed "
                             "(default: %(default)s)")
    parser.add_argument("--ros-args", dest="ros_args", nargs=argparse.REMAINDER, default=[],
                        help="everything after this goes to the node's --ros-args (put last)")
    parser.set_defaults(func=run)
    return parser


def node_parameters(path: Path, node_name: str = NODE_NAME, namespace: str = ""
                    ) -> dict[str, Any]:
    """The ``ros__parameters`` for ``node_name`` (in ``namespace``) in a ROS 2 parameters
    file, flattened to dotted names: ``/**`` entries first, then ``/**/NODE``, then the
    node's own section (by name or fully qualified), each overriding the ones before, as rcl
    applies them. Other wildcard patterns are not matched."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CliError(f"cannot read the parameters file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CliError(f"{path} is not a ROS 2 parameters file (top level is not a mapping)")
    flat: dict[str, Any] = {}
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    keys = ["/**", f"/**/{node_name}", f"{ns}/{node_name}"]
    if not ns:
        keys.insert(2, node_name)
    for key in dict.fromkeys(keys):
        section = data.get(key)
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            _flatten(section["ros__parameters"], "", flat)
    return flat


def _flatten(tree: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            _flatten(value, f"{name}.", out)
        else:
            out[name] = value


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies (Linux prctl)."""
    # Elsewhere than Linux there is no prctl: children are still stopped by a normal shutdown.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class _Children:
    """The started child processes, stopped together."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        # Own session: a terminal's Ctrl-C reaches only this process, which stops the children
        # in order instead of all of them racing.
        proc = subprocess.Popen(cmd, start_new_session=True, preexec_fn=_die_with_parent)
        self.procs[name] = proc
        log.info("started %s (pid %d): %s", name, proc.pid, " ".join(cmd))
        return proc

    def exited(self) -> tuple[str, int] | None:
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                return name, code
        return None

    def stop(self, timeout_s: float) -> None:
        """SIGINT (ROS nodes shut down cleanly on it), then SIGTERM, then SIGKILL."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            alive = [(n, p) for n, p in reversed(self.procs.items()) if p.poll() is None]
            if not alive:
                return
            for name, proc in alive:
                log.info("sending %s to %s (pid %d)", sig.name, name, proc.pid)
                proc.send_signal(sig)
            deadline = time.monotonic() + timeout_s
            for _, proc in alive:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(max(0.0, deadline - time.monotonic()))


def _wait_for_worker(endpoint: str, children: _Children, stop: threading.Event,
                     timeout_s: float) -> None:
    from ego_ros.serving.rpc import RpcClient, WorkerUnavailable

    deadline = time.monotonic() + timeout_s
    with RpcClient(endpoint, timeout_s=1.0, connect_timeout_s=1.0) as client:
        while not stop.is_set():
            try:
                client.hello(1.0)
                log.info("worker ready on %s", endpoint)
                return
            except WorkerUnavailable:
                pass
            ended = children.exited()
            if ended is not None:
                raise CliError(f"the worker exited with status {ended[1]} before it was ready "
                               "(see its log above)")
            if time.monotonic() > deadline:
                raise CliError(f"the worker did not answer on {endpoint} within {timeout_s} s")


# Node parameters that configure the model and store, and the worker flag each becomes.
WORKER_OPTIONS = {"model.path": "--model", "store.dir": "--store", "model.family": "--family",
                  "model.dtype": "--dtype", "model.device": "--device",
                  "model.max_image_tokens": "--max-image-tokens",
                  "model.allow_pickle_weights": "--allow-pickle-weights",
                  "recognition.max_in_context": "--max-in-context",
                  "engine.max_new_tokens": "--max-new-tokens",
                  "recognition.threshold": "--threshold"}


def worker_arguments(params: dict[str, Any], endpoint: str) -> list[str]:
    """``ego-ros worker`` flags serving what the node's parameters describe, bound to
    ``endpoint``: the worker loads the model and store the node would have loaded itself.

    Shared by ``ego-ros up --use-worker`` and ``launch/ego.launch.py use_worker:=true``, so
    one parameters file configures both. Empty values are left to the worker's defaults.
    """
    args = ["--bind", endpoint]
    for name, flag in WORKER_OPTIONS.items():
        value = params.get(name)
        if value is not None and str(value).strip() != "":
            args += [flag, str(value)]
    return args


def _worker_command(params: dict[str, Any], endpoint: str, namespace: str) -> list[str]:
    ros = ["--ros-args", "-r", f"__node:={WORKER_NAME}"]
    if namespace.strip("/"):
        ros += ["-r", f"__ns:=/{namespace.strip('/')}"]
    return [sys.executable, "-m", "ego_ros.ros.worker_node", *worker_arguments(params, endpoint),
            *ros]


def _yaml_value(text: str) -> Any:
    """A ``-p name:=value`` value as rcl reads it (YAML: 0.5 a double, true a bool, ...)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


_VALUED_ROS_FLAGS = {"-p", "--param", "-r", "--remap", "--params-file", "-e", "--enclave",
                     "--log-level", "--log-config-file", "--log-file-name"}


def _rule(token: str, node_name: str) -> tuple[str, str] | None:
    """``[node:]name:=value`` -> (name, value) when it applies to ``node_name``."""
    name, sep, value = token.partition(":=")
    if not sep:
        raise CliError(f"--ros-args: {token!r} is not NAME:=VALUE")
    target, colon, name = name.rpartition(":")
    if colon and target != node_name:
        return None
    return name, value


def effective_parameters(params_file: Path, ros_args: list[str]) -> tuple[dict[str, Any], str]:
    """The node's parameters as rcl will give them: ``params_file``, then ``--ros-args``'s
    ``--params-file FILE`` and ``-p/--param NAME:=VALUE`` in order (a later one wins), each
    file's sections chosen by the node's name and namespace (``-r __node:=``/``__ns:=``).
    Returns (parameters, namespace)."""
    tokens = [t for t in ros_args if t not in ("--ros-args", "--")]
    pairs, i = [], 0
    while i < len(tokens):
        if tokens[i] in _VALUED_ROS_FLAGS and i + 1 < len(tokens):
            pairs.append((tokens[i], tokens[i + 1]))
            i += 2
        else:  # a flag without a value (--disable-rosout-logs, ...)
            i += 1
    node_name, namespace = NODE_NAME, ""
    for flag, value in pairs:  # the names first: they choose the files' sections
        if flag in ("-r", "--remap"):
            rule = _rule(value, NODE_NAME)
            if rule and rule[0] in ("__node", "__name"):
                node_name = rule[1]
            elif rule and rule[0] == "__ns":
                namespace = rule[1]
    params = node_parameters(params_file, node_name, namespace)
    for flag, value in pairs:
        if flag == "--params-file":
            params.update(node_parameters(Path(value), node_name, namespace))
        elif flag in ("-p", "--param"):
            rule = _rule(value, node_name)
            if rule:
                params[rule[0]] = _yaml_value(rule[1])
    return params, namespace


def run(args: argparse.Namespace) -> int:
    """Start the children, supervise them, stop them on a signal or when one ends."""
    if not args.params_file.is_file():
        raise CliError(f"no parameters file at {args.params_file}")
    package = logging.getLogger("ego_ros")
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)  # say which children run, with their pids
    params, namespace = effective_parameters(args.params_file, list(args.ros_args))
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    children = _Children()
    status = 0
    try:
        node_cmd = [sys.executable, "-m", "ego_ros.ros.node", "--ros-args", "--params-file",
                    str(args.params_file)]
        if args.use_worker:
            endpoint = (args.worker_bind or str(params.get("engine.endpoint") or "")
                        or default_endpoint(namespace))
            children.start("worker", _worker_command(params, endpoint, namespace))
            _wait_for_worker(endpoint, children, stop, args.worker_ready_timeout)
            endpoint_args = ["--ros-args", "-p", f"engine.endpoint:={endpoint}",
                             "-p", "engine.check_worker:=true"]
        else:
            endpoint_args = []
        if not stop.is_set():  # the endpoint last: it must be the one the worker binds
            children.start(NODE_NAME, node_cmd + list(args.ros_args) + endpoint_args)
        while not stop.wait(0.2):
            ended = children.exited()
            if ended is not None:
                log.error("%s exited unexpectedly with status %d; stopping the rest", *ended)
                status = 1
                break
    finally:
        children.stop(args.stop_timeout)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        log.info("stopped on %s", signal.Signals(received[0]).name)
    return status

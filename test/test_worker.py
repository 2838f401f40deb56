"""The node with a real ``ego-ros worker`` process, and ``ego-ros up`` supervising its children.

The worker runs the tiny model in a subprocess on a free loopback port; the node runs in this
process on the harness executor. The worker is SIGKILLed while it introduces a concept: the
node must stay up, fail the service call with a clear message, report the worker on
/diagnostics, and resume recognitions once a new worker binds the same port.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rosutil import RELIABLE_QOS, Collector, ros_harness, wait_for, wait_future, wait_service
from test_node import Camera, check_stamps, ego_node, raw_msgs, wait_status

from ego_interfaces.msg import Recognition
from ego_interfaces.srv import IntroduceConcept, ListConcepts
from ego_ros.cli.main import main as cli_main
from ego_ros.ros.convert import stamp_to_ns
from ego_ros.serving.rpc import RpcClient, WorkerUnavailable

ROOT = Path(__file__).resolve().parents[1]


def free_tcp_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def start_worker(model: Path, store: Path, endpoint: str, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "ego_ros.cli.main", "worker", "--model", str(model),
             "--store", str(store), "--bind", endpoint, "--device", "cpu"],
            stdout=out, stderr=out, cwd=ROOT)


def wait_worker_ready(endpoint: str, proc: subprocess.Popen, log: Path) -> None:
    with RpcClient(endpoint, timeout_s=2.0, connect_timeout_s=1.0) as client:
        def ready() -> bool:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                return bool(client.hello(1.0))
            except WorkerUnavailable:
                return False

        wait_for(ready, 90.0, f"worker on {endpoint}")


@pytest.mark.parametrize("command,option", [("up", "--params-file"), ("worker", "--bind")])
def test_help(command, option, capsys):
    with pytest.raises(SystemExit) as exited:
        cli_main([command, "--help"])
    assert exited.value.code == 0
    assert option in capsys.readouterr().out


@pytest.mark.parametrize("argv,expected", [
    (["worker", "--bind", "tcp://0.0.0.0:5599"], "--curve-secret"),
    (["worker", "--bind", "tcp://192.168.1.20:5599", "--curve-secret", "k", "--curve-clients",
      "d"], "--allow-nonlocal"),
    (["up", "--params-file", "/nonexistent/ego.yaml"], "no parameters file"),
])
def test_refusals_come_before_anything_starts(argv, expected, capsys):
    assert cli_main(argv) == 2
    assert expected in capsys.readouterr().err


def test_node_survives_a_killed_worker_and_resumes_with_a_new_one(tiny_model_dirs, tmp_path):
    endpoint, log, store = free_tcp_endpoint(), tmp_path / "worker.log", tmp_path / "store"
    model = tiny_model_dirs["qwen2_5_vl"]
    procs = [start_worker(model, store, endpoint, log)]
    try:
        wait_worker_ready(endpoint, procs[0], log)
        with ros_harness() as ros, RpcClient(endpoint, timeout_s=2.0) as observer, ego_node(
                ros, model, tmp_path / "unused",
                **{"engine.endpoint": endpoint, "engine.timeout_s": 10.0,
                   "engine.introduce_timeout_s": 30.0, "engine.connect_timeout_s": 0.5,
                   "clip.period_s": 0.4, "clip.num_frames": 2, "clip.window_s": 0.5,
                   "introduce.num_frames": 1}):
            client = ros.node("client")
            recognitions, diagnostics = Collector(), Collector()
            client.create_subscription(Recognition, "/ego_node/recognition", recognitions,
                                       RELIABLE_QOS)
            client.create_subscription(DiagnosticArray, "/diagnostics", diagnostics,
                                       RELIABLE_QOS)
            introduce = client.create_client(IntroduceConcept, "/ego_node/introduce_concept")
            listing = client.create_client(ListConcepts, "/ego_node/list_concepts")
            wait_service(introduce)
            wait_service(listing)
            camera = Camera(client, raw_msgs((120, 160))).start()
            try:
                for rec in recognitions.wait(2, timeout_s=30.0):
                    check_stamps(rec, camera, max_frames=2)

                # Kill the worker while it is inside an introduction.
                call = introduce.call_async(IntroduceConcept.Request(name="mug"))
                wait_for(lambda: observer.ping()["busy"] == "introduce", 20.0,
                         "the worker to start the introduction")
                procs[0].send_signal(signal.SIGKILL)
                reply = wait_future(call, timeout_s=30.0 + 5.0, what="introduce_concept")
                assert not reply.success
                assert "worker is unavailable" in reply.message
                assert endpoint in reply.message and "ego-ros worker" in reply.message
                _, message, values = wait_status(diagnostics, "engine",
                                                 lambda level, _m, _v: level == 2)  # ERROR
                assert "unavailable" in message and values["worker_healthy"] == "False"
                # The node is still serving while the worker is down.
                assert wait_future(listing.call_async(ListConcepts.Request()),
                                   timeout_s=15.0).names == []

                procs.append(start_worker(model, store, endpoint, log))
                wait_worker_ready(endpoint, procs[1], log)
                restarted = time.time_ns()
                rec = wait_for(lambda: next((m for m in recognitions.messages
                                             if stamp_to_ns(m.clip_end) > restarted), None),
                               30.0, "a recognition from the new worker")
                check_stamps(rec, camera, max_frames=2)
                wait_status(diagnostics, "engine", lambda level, _m, _v: level == 0)  # OK
            finally:
                camera.stop()
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(20) == 0, log.read_text()[-3000:]
        assert "stopped serving" in log.read_text()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


class _Up:
    """``ego-ros up`` as a subprocess, its stderr collected line by line."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "ego_ros.cli.main", "up", *args],
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     text=True, cwd=ROOT)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def child_pid(self, name: str) -> int:
        match = wait_for(lambda: re.search(rf"started {name} \(pid (\d+)\)", self.text()),
                         120.0, f"ego-ros up to start {name}")
        return int(match.group(1))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)


def write_params(path: Path, model: Path, store: Path, endpoint: str = "") -> Path:
    path.write_text(f"""ego_node:
  ros__parameters:
    model.path: "{model}"
    store.dir: "{store}"
    model.device: "cpu"
    engine.endpoint: "{endpoint}"
    clip.period_s: 0.5
""")
    return path


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_up_with_worker_starts_and_stops_cleanly_on_sigterm(tiny_model_dirs, tmp_path):
    params = write_params(tmp_path / "ego.yaml", tiny_model_dirs["qwen2_5_vl"],
                          tmp_path / "store", free_tcp_endpoint())
    up = _Up(["--params-file", str(params), "--use-worker"])
    try:
        worker_pid, node_pid = up.child_pid("worker"), up.child_pid("ego_node")
        with ros_harness() as ros:
            listing = ros.node("client").create_client(ListConcepts, "/ego_node/list_concepts")
            wait_service(listing, timeout_s=60.0)
            reply = wait_future(listing.call_async(ListConcepts.Request()), timeout_s=15.0)
            assert list(reply.names) == []  # answered by the node, through the worker
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(30) == 0, up.text()[-3000:]
        assert gone(worker_pid) and gone(node_pid)
        assert "stopped on SIGTERM" in up.text()
    finally:
        up.close()


def test_up_exits_nonzero_when_the_node_dies(tiny_model_dirs, tmp_path):
    params = write_params(tmp_path / "ego.yaml", tiny_model_dirs["qwen2_5_vl"],
                          tmp_path / "store")
    up = _Up(["--params-file", str(params), "--ros-args", "-p", "clip.period_s:=0.7"])
    try:
        node_pid = up.child_pid("ego_node")
        assert "clip.period_s:=0.7" in up.text()  # --ros-args passed on to the node
        os.kill(node_pid, signal.SIGKILL)
        assert up.proc.wait(30) == 1, up.text()[-3000:]
        assert "ego_node exited unexpectedly" in up.text()
    finally:
        up.close()

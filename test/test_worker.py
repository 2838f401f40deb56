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


def test_worker_flags_come_from_the_parameters_file(tmp_path):
    """``ego-ros up`` and the launch file give the worker the file's model and store: the
    ``/**`` section, overridden by the node's own (namespaced) section."""
    from ego_ros.cli.up import node_parameters, worker_arguments

    path = tmp_path / "ego.yaml"
    path.write_text("""/**:
  ros__parameters:
    model.path: "/models/a"
    model.family: "qwen2_5_vl"
    model.dtype: "bfloat16"
    model.device: "cuda:1"
    store.dir: "~/store"
    recognition.threshold: 0.7
    engine.endpoint: ""
/robot1/ego_node:
  ros__parameters:
    model.path: "/models/b"
""")
    args = worker_arguments(node_parameters(path, "ego_node", "robot1"), "tcp://127.0.0.1:7")
    flags = dict(zip(args[::2], args[1::2]))
    assert flags == {"--bind": "tcp://127.0.0.1:7", "--model": "/models/b",
                     "--family": "qwen2_5_vl", "--dtype": "bfloat16", "--device": "cuda:1",
                     "--store": "~/store", "--threshold": "0.7"}
    assert node_parameters(path)["model.path"] == "/models/a"  # no namespace: /** only
    # the shipped file: every worker option it sets is one the worker accepts
    shipped = worker_arguments(node_parameters(ROOT / "config" / "ego.yaml"), "ipc:///tmp/x")
    from ego_ros.serving.worker import add_arguments, config_from_args

    parser = __import__("argparse").ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(shipped))
    assert config.model is None and config.store.name == "store"  # empty model.path: tiny


def test_launch_file_compiles_and_the_readme_uses_its_arguments():
    import ast
    import py_compile

    launch = ROOT / "launch" / "ego.launch.py"
    py_compile.compile(str(launch), doraise=True)
    declared = {node.args[0].value for node in ast.walk(ast.parse(launch.read_text()))
                if isinstance(node, ast.Call) and getattr(node.func, "id", "")
                == "DeclareLaunchArgument"}
    assert {"camera_topic", "model_path", "use_worker", "params_file"} <= declared
    used = set()
    for text in (launch.read_text(), (ROOT / "README.md").read_text()):
        # a command with its backslash-continued lines
        for line in re.findall(r"ros2 launch ego_ros ego\.launch\.py(?:\\\n|[^\n])*", text):
            used |= set(re.findall(r"(\w+):=", line))
    assert {"camera_topic", "model_path"} <= used and used <= declared, used - declared
    assert '"ego-ros"' not in launch.read_text()  # not on PATH after a colcon install


def test_gen_keys_writes_a_usable_pair_and_never_overwrites(tmp_path, capsys):
    from ego_ros.serving.rpc import CurveClientKeys

    assert cli_main(["worker", "--gen-keys", str(tmp_path), "--key-name", "robot1"]) == 0
    public, secret = (Path(p) for p in capsys.readouterr().out.split())
    assert (public.name, secret.name) == ("robot1.key", "robot1.key_secret")
    assert cli_main(["worker", "--gen-keys", str(tmp_path)]) == 0  # worker.key(_secret)
    capsys.readouterr()
    keys = CurveClientKeys(secret, tmp_path / "worker.key")  # loads both certificates
    assert keys.server_public_key_file.is_file()
    before = secret.read_bytes()
    assert cli_main(["worker", "--gen-keys", str(tmp_path), "--key-name", "robot1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert secret.read_bytes() == before


def test_a_corrupt_store_stops_the_worker_with_a_message(tiny_model_dirs, tmp_path, capsys):
    store = tmp_path / "store"
    store.mkdir()
    (store / "manifest.json").write_text('{"format": "something else"}')
    argv = ["worker", "--model", str(tiny_model_dirs["qwen2_5_vl"]), "--store", str(store),
            "--device", "cpu", "--bind", free_tcp_endpoint()]
    status: list[int] = []
    # a thread: run_worker installs signal handlers only in the main thread
    runner = threading.Thread(target=lambda: status.append(cli_main(argv)))
    runner.start()
    runner.join(120)
    assert status == [2]
    err = capsys.readouterr().err
    assert "cannot start" in err and "manifest" in err and "Traceback" not in err

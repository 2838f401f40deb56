"""The worker as ROS users run it: ``ego_worker``'s log on /rosout under its namespace, a
default endpoint per namespace, ``ego-ros up`` giving the worker the node's effective
parameters (``--ros-args`` included), and the node refusing a worker that serves another model
or store (``engine.check_worker``).

Real processes, real ZeroMQ sockets, real DDS (/rosout, services) in the test's own
ROS_DOMAIN_ID. The launch file is checked by reading it (and, where the ``launch`` packages are
importable, by evaluating it); the real ``ros2 launch`` runs in the tests that use
../shared/ros2-tools.
"""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from rcl_interfaces.msg import Log
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosutil import Collector, ros_harness, wait_for, wait_future, wait_service
from test_node import ego_node
from test_rpc import FakeEngine, free_tcp_endpoint
from test_worker import _Up

from ego_interfaces.srv import ListConcepts
from ego_ros.cli.common import CliError
from ego_ros.cli.up import WORKER_NAME, default_endpoint, effective_parameters
from ego_ros.serving.remote import serve_engine
from ego_ros.serving.rpc import RpcClient, WorkerUnavailable

ROOT = Path(__file__).resolve().parents[1]
ROSOUT_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)


def hello(endpoint: str, proc: subprocess.Popen | None = None, timeout_s: float = 120.0
          ) -> dict:
    """The worker's handshake, waiting for it to come up."""
    with RpcClient(endpoint, timeout_s=2.0, connect_timeout_s=1.0) as client:
        def answer():
            if proc is not None:
                assert proc.poll() is None, f"exited with {proc.returncode}"
            try:
                return client.hello(1.0)
            except WorkerUnavailable:
                return None

        return wait_for(answer, timeout_s, f"a worker on {endpoint}")


def test_default_endpoint_is_one_unix_socket_per_namespace():
    root, robot1, arm = (default_endpoint(ns) for ns in ("", "/robot1", "robot1/arm"))
    assert len({root, robot1, arm, default_endpoint("robot1_arm")}) == 4
    assert root.startswith("ipc:///tmp/ego_ros-") and root.endswith("/worker.sock")
    assert robot1.endswith("/worker.robot1.sock") and arm.endswith("/worker.robot1.arm.sock")
    assert default_endpoint("/robot1/") == robot1  # deterministic, slashes normalised
    long = default_endpoint("/".join(["fleet_member_with_a_long_name"] * 6))
    assert len(long) - len("ipc://") <= 100 and long != default_endpoint("other")
    with pytest.raises(CliError, match="not a valid ROS namespace"):
        default_endpoint("robot 1")


def test_effective_parameters_follow_ros_args_in_order(tmp_path):
    params = tmp_path / "ego.yaml"
    params.write_text('/**:\n  ros__parameters:\n    model.path: "/a"\n    store.dir: "/s"\n'
                      "    recognition.threshold: 0.5\n"
                      '/robot2/ego_node:\n  ros__parameters:\n    store.dir: "/s2"\n')
    extra = tmp_path / "extra.yaml"
    extra.write_text('/**:\n  ros__parameters:\n    model.path: "/c"\n')
    values, namespace = effective_parameters(params, [
        "-r", "__ns:=/robot2", "-p", "model.path:=/b", "--params-file", str(extra),
        "--log-level", "debug", "-p", "recognition.threshold:=0.75", "-p",
        "other_node:store.dir:=/nope"])
    assert namespace == "/robot2"
    assert values["model.path"] == "/c"  # the later --params-file wins over the earlier -p
    assert values["store.dir"] == "/s2"  # the namespaced section; the other node's -p ignored
    assert values["recognition.threshold"] == 0.75  # typed like rcl (YAML)


def test_ego_worker_logs_to_rosout_and_reports_what_it_serves(tiny_model_dirs, tmp_path):
    endpoint = default_endpoint(f"/robot_{tmp_path.name[-6:].replace('-', '_')}")
    model, store = tiny_model_dirs["internvl"], tmp_path / "store"
    with ros_harness() as ros:
        logs = Collector()
        ros.node("listener").create_subscription(Log, "/rosout", logs, ROSOUT_QOS)
        proc = subprocess.Popen(
            [sys.executable, "-m", "ego_ros.ros.worker_node", "--model", str(model), "--store",
             str(store), "--bind", endpoint, "--device", "cpu", "--ros-args", "-r",
             f"__node:={WORKER_NAME}", "-r", "__ns:=/robot9"], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            info = hello(endpoint, proc)["info"]
            ready = wait_for(lambda: next((m for m in logs.messages if "ego worker ready"
                                           in m.msg), None), 30.0, "the worker's log on /rosout")
            assert ready.name == "robot9.ego_worker" and ready.level == Log.INFO
            assert endpoint in ready.msg
            assert info["model"] == str(model.resolve()) and info["tiny"] is False
            assert info["store"] == str(store.resolve())
            assert info["fingerprint"]["family"] == "internvl"
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert "Traceback" not in proc.stderr.read()


def test_up_gives_the_worker_the_ros_args_model_and_store(tiny_model_dirs, tmp_path):
    """``ego-ros up --use-worker --ros-args -p model.path:=...``: the worker loads that model
    and store, not the file's, binds the namespace's default endpoint, and the node (which
    checks the worker) serves through it."""
    params = tmp_path / "ego.yaml"
    params.write_text(f'/**:\n  ros__parameters:\n    model.path: "{tiny_model_dirs["qwen2_5_vl"]}"'
                      f'\n    store.dir: "{tmp_path / "file_store"}"\n    model.device: "cpu"\n')
    model, store = tiny_model_dirs["internvl"], tmp_path / "arg_store"
    namespace = f"/up_{tmp_path.name[-6:].replace('-', '_')}"
    up = _Up(["--params-file", str(params), "--use-worker", "--ros-args", "-p",
              f"model.path:={model}", "-p", f"store.dir:={store}", "-r", f"__ns:={namespace}"])
    try:
        info = hello(default_endpoint(namespace))["info"]
        assert info["model"] == str(model.resolve()) and info["store"] == str(store.resolve())
        up.child_pid("ego_node")
        with ros_harness() as ros:
            listing = ros.node("client").create_client(ListConcepts,
                                                       f"{namespace}/ego_node/list_concepts")
            wait_service(listing, timeout_s=60.0)
            reply = wait_future(listing.call_async(ListConcepts.Request()), timeout_s=15.0)
            assert reply.success, reply.message
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(30) == 0, up.text()[-3000:]
    finally:
        up.close()


def test_the_node_refuses_a_worker_serving_another_model_or_store(tmp_path):
    endpoint = free_tcp_endpoint()
    mine, store = tmp_path / "my_model", tmp_path / "store"
    wrong = {"model": str(tmp_path / "other_model"), "tiny": False, "store": str(store)}
    right = {"model": str(mine.resolve()), "tiny": False, "store": str(store.resolve())}
    check = {"engine.endpoint": endpoint, "engine.check_worker": True,
             "engine.connect_timeout_s": 0.5, "engine.timeout_s": 2.0,
             "tasks.recognize": False}

    def listing_reply(listing):
        return wait_future(listing.call_async(ListConcepts.Request()), timeout_s=15.0)

    with ros_harness() as ros:
        # at start: a worker that answers and serves another model stops the node
        with serve_engine(FakeEngine(), endpoint, info=wrong), pytest.raises(
                ValueError, match="refusing the worker") as refused, ego_node(ros, mine, store,
                                                                             **check):
            pass
        text = str(refused.value)
        assert "other_model" in text and "my_model" in text and "model.path" in text
        # started while no worker is up: a wrong worker is refused at every call, and the
        # right one is served once it takes the endpoint
        with ego_node(ros, mine, store, **check):
            listing = ros.node("client").create_client(ListConcepts, "/ego_node/list_concepts")
            wait_service(listing)
            with serve_engine(FakeEngine(), endpoint, info={**right, "store": "/elsewhere"}):
                reply = listing_reply(listing)
            assert not reply.success
            assert "refusing the worker" in reply.message and "store.dir" in reply.message
            with serve_engine(FakeEngine(), endpoint, info=right):
                reply = wait_for(lambda: (r := listing_reply(listing)).success and r, 20.0,
                                 "a listing through the matching worker")
            assert list(reply.names) == []
        # engine.check_worker off (the default): any worker is used, as before
        with serve_engine(FakeEngine(), endpoint, info=wrong), ego_node(
                ros, mine, store, **{**check, "engine.check_worker": False}):
            listing = ros.node("client2").create_client(ListConcepts, "/ego_node/list_concepts")
            wait_service(listing)
            assert listing_reply(listing).success


def _launch_calls() -> list[ast.Call]:
    tree = ast.parse((ROOT / "launch" / "ego.launch.py").read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", "") == "Node"]


def test_launch_file_respawns_the_worker_node_under_the_namespace():
    """Read without the launch package: the worker is an ego_worker Node (its log on /rosout
    under the namespace) with respawn and a delay; the default endpoint is derived."""
    worker = next(c for c in _launch_calls()
                  if any(k.arg == "executable" and getattr(k.value, "value", "") == "ego_worker"
                         for k in c.keywords))
    keywords = {k.arg: k.value for k in worker.keywords}
    assert isinstance(keywords["respawn"], ast.Constant) and keywords["respawn"].value is True
    assert "respawn_delay" in keywords and "namespace" in keywords
    text = (ROOT / "launch" / "ego.launch.py").read_text()
    assert "default_endpoint(namespace)" in text and "tcp://127.0.0.1:5555" not in text
    assert '"engine.check_worker"] = True' in text


def test_launch_description_evaluates_with_the_launch_package(tmp_path):
    pytest.importorskip("launch_ros", reason="the launch packages are not in this environment "
                                             "(../shared/ros2-tools has them)")
    import importlib.util

    from launch import LaunchContext

    spec = importlib.util.spec_from_file_location("ego_launch", ROOT / "launch" / "ego.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.generate_launch_description().entities  # builds without the package index
    params = tmp_path / "ego.yaml"
    params.write_text('/**:\n  ros__parameters:\n    model.path: "/m"\n    store.dir: "/s"\n')
    context = LaunchContext()
    context.launch_configurations.update({
        "params_file": str(params), "camera_topic": "/cam", "model_path": "", "store_dir": "",
        "namespace": "robot4", "use_worker": "true", "worker_endpoint": ""})
    worker, node = module._setup(context)
    assert worker._ExecuteLocal__respawn is True  # launch 3.4 keeps them private
    assert worker._ExecuteLocal__respawn_delay == module.WORKER_RESPAWN_DELAY_S
    arguments = [a[0].text if isinstance(a, list) else str(a)
                 for a in worker._Node__arguments]
    flags = dict(zip(arguments[::2], arguments[1::2]))
    assert flags["--bind"] == default_endpoint("robot4")
    assert flags["--model"] == "/m" and flags["--store"] == "/s"

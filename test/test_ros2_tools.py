"""The package as a robotics engineer uses it: built with colcon, started with ``ros2 launch``,
driven with the ``ros2`` CLI, stopped with Ctrl-C.

    tools: ../shared/ros2-tools/install.sh PREFIX   (once per session, into a temporary folder)
    repository files --copy--> WS/src/ego_ros --colcon build--> WS/install   (once per session)
    ros2 launch ego_ros ego.launch.py (in-process / use_worker:=true), tiny model
        <-- ros2 topic pub /image      --> ros2 topic echo ~/recognition
        <-- ros2 service call ~/introduce_concept (from the captured frames)
        <-- ros2 param set (refused, then accepted) / ros2 param get
    SIGINT to ros2 launch --> every process "finished cleanly", nothing red
    colcon test --pytest-args <one test file> --> colcon test-result counts them

The tools are found through ``EGO_ROS2_TOOLS`` (the folder holding ``install.sh``) or as
``shared/ros2-tools`` beside the repository or one of its parent folders. Without them, or when
their installation fails (no cmake or compiler, no package index), every test here is skipped
with the reason. Traffic stays on this run's ROS_DOMAIN_ID (test/conftest.py) and on
localhost; the ``ros2`` daemon is stopped at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RED = ("[ERROR]", "[FATAL]", "Traceback", "context is invalid", "process has died")
# Not part of the package: what a fresh clone would not have either.
_NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", "*.egg-info",
                                     ".pytest_cache", ".ruff_cache", ".cache", "ego_demo",
                                     ".whl", "device-out", "out", "build", "install", "log")


def _find_tools() -> Path | None:
    given = os.environ.get("EGO_ROS2_TOOLS")
    if given:
        return Path(given) if (Path(given) / "install.sh").is_file() else None
    for folder in ROOT.parents:
        candidate = folder / "shared" / "ros2-tools"
        if (candidate / "install.sh").is_file():
            return candidate
    return None


def _run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float
         ) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _sourced(env: dict[str, str], *scripts: Path) -> dict[str, str]:
    """``env`` after sourcing ``scripts`` in bash, as a shell user would."""
    line = " && ".join(f". '{s}'" for s in scripts) + " && env -0"
    out = subprocess.run(["bash", "-c", line], env=env, capture_output=True, check=True,
                         timeout=60).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


@dataclass(frozen=True)
class Workspace:
    path: Path
    env: dict[str, str]  # tools and the workspace's install/ sourced

    def ros2(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return _run(["ros2", *args], self.env, self.path, timeout)


@pytest.fixture(scope="session")
def ros2_tools(tmp_path_factory) -> Iterator[dict[str, str]]:
    """Environment with the real ROS 2 tools on top of this interpreter's environment."""
    tools = _find_tools()
    if tools is None:
        given = os.environ.get("EGO_ROS2_TOOLS")
        pytest.skip(f"the ROS 2 tools are not here: EGO_ROS2_TOOLS={given} has no install.sh"
                    if given else "the ROS 2 tools are not here: no EGO_ROS2_TOOLS and no "
                    f"shared/ros2-tools beside {ROOT} or its parents "
                    "(see ../shared/ros2-tools/README.md)")
    prefix = tmp_path_factory.mktemp("ros2-tools")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        done = _run(["bash", str(tools / "install.sh"), str(prefix), sys.executable], env,
                    prefix, 600)
    except subprocess.TimeoutExpired:
        pytest.skip(f"installing the ROS 2 tools from {tools} took over 600 s")
    if done.returncode != 0:
        pytest.skip(f"installing the ROS 2 tools from {tools} failed: "
                    f"{(done.stdout + done.stderr)[-1500:]}")
    env = _sourced(env, prefix / "env.sh")
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_LOG_DIR=str(prefix / "log"),
               ROS_DOMAIN_ID=os.environ["ROS_DOMAIN_ID"])
    yield env
    _run(["ros2", "daemon", "stop"], env, prefix, 60)  # one may have been spawned for this domain


@pytest.fixture(scope="session")
def workspace(ros2_tools, tmp_path_factory) -> Workspace:
    """Both packages built by colcon, as the README's robot instructions do (once a session)."""
    ws = tmp_path_factory.mktemp("ws")
    shutil.copytree(ROOT, ws / "src" / "ego_ros", ignore=_NOT_COPIED, symlinks=True)
    build = _run([sys.executable, "-m", "colcon", "build", "--base-paths", "src/ego_ros",
                  "src/ego_ros/ego_interfaces"], ros2_tools, ws, 600)
    assert build.returncode == 0, (build.stdout + build.stderr)[-3000:]
    assert "2 packages finished" in build.stdout, build.stdout[-2000:]
    return Workspace(ws, _sourced(ros2_tools, ws / "install" / "local_setup.sh"))


def _free_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def _image_yaml(size: int = 64) -> str:
    """A sensor_msgs/Image as ``ros2 topic pub`` takes it (unstamped: the node uses arrival)."""
    data = ",".join(str((i * 37 + i // 192 * 11) % 256) for i in range(size * size * 3))
    return (f"{{height: {size}, width: {size}, encoding: rgb8, step: {3 * size}, "
            f"data: [{data}]}}")


class Launch:
    """``ros2 launch`` in its own session (a terminal's Ctrl-C reaches it alone), output
    collected; a camera publishing with ``ros2 topic pub``."""

    def __init__(self, ws: Workspace, *args: str) -> None:
        self.ws = ws
        self.proc = subprocess.Popen(["ros2", "launch", "ego_ros", "ego.launch.py", *args],
                                     env=ws.env, cwd=ws.path, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.camera: subprocess.Popen | None = None

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def start_camera(self) -> None:
        self.camera = subprocess.Popen(
            ["ros2", "topic", "pub", "-r", "10", "/image", "sensor_msgs/msg/Image",
             _image_yaml()], env=self.ws.env, cwd=self.ws.path, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)

    def recognition(self, timeout: float = 90.0) -> dict:
        """The next Recognition, as ``ros2 topic echo --once`` prints it."""
        echo = self.ws.ros2("topic", "echo", "--once", "/ego_node/recognition",
                            "ego_interfaces/msg/Recognition", timeout=timeout)
        assert echo.returncode == 0, echo.stdout + echo.stderr + self.text()[-2000:]
        return yaml.safe_load(echo.stdout.split("\n---")[0])

    def interrupt(self, timeout: float = 60.0) -> int:
        """Ctrl-C (SIGINT) to ros2 launch; its exit status."""
        self.proc.send_signal(signal.SIGINT)
        status = self.proc.wait(timeout)
        self._reader.join(10)
        return status

    def close(self) -> None:
        for proc in (self.camera, self.proc):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the launch's session: its children too
                proc.wait(10)


@pytest.fixture
def launch(workspace) -> Iterator:
    started: list[Launch] = []

    def start(*args: str) -> Launch:
        started.append(Launch(workspace, *args))
        return started[-1]

    yield start
    for item in started:
        item.close()


def _assert_clean_exit(launch: Launch, status: int, processes: tuple[str, ...]) -> None:
    text = launch.text()
    assert status == 0, text[-3000:]
    for name in processes:
        assert re.search(rf"\[{name}-\d+\]: process has finished cleanly", text), text[-3000:]
    red = [line for line in text.splitlines() if any(word in line for word in RED)]
    assert not red, text[-3000:]


def test_launch_in_process_driven_by_the_ros2_cli(launch, workspace, tiny_model_dirs, tmp_path):
    ego = launch(f"model_path:={tiny_model_dirs['qwen2_5_vl']}", f"store_dir:={tmp_path}")
    ego.start_camera()
    first = ego.recognition()
    assert first["num_frames"] >= 1 and first["concepts"] == []
    assert first["clip_end"]["sec"] > 0

    # Teach from the frames the node has just captured (no images in the request).
    taught = workspace.ros2("service", "call", "/ego_node/introduce_concept",
                            "ego_interfaces/srv/IntroduceConcept",
                            "{name: 'my mug', num_frames: 2}", timeout=120.0)
    assert "success=True" in taught.stdout and "num_views=2" in taught.stdout, (
        taught.stdout + taught.stderr + ego.text()[-2000:])
    for _ in range(3):  # a clip cut before the introduction finished may still come first
        names = [c["name"] for c in ego.recognition()["concepts"]]
        if names:
            break
    assert names == ["my mug"]

    # Parameters: a window the frame-age limit would cut short is refused, a good value taken.
    refused = workspace.ros2("param", "set", "--no-daemon", "--timeout", "20", "/ego_node",
                             "clip.max_age_s", "0.5")
    assert "Setting parameter failed" in refused.stderr, refused.stdout + refused.stderr
    assert "clip.window_s (2.0) exceeds clip.max_age_s (0.5)" in refused.stderr
    accepted = workspace.ros2("param", "set", "--no-daemon", "--timeout", "20", "/ego_node",
                              "clip.period_s", "0.7")
    assert "Set parameter successful" in accepted.stdout, accepted.stdout + accepted.stderr
    for name, value in (("clip.period_s", "0.7"), ("clip.max_age_s", "2.5")):
        got = workspace.ros2("param", "get", "--no-daemon", "--timeout", "20", "/ego_node", name)
        assert f"Double value is: {value}" in got.stdout, got.stdout + got.stderr

    _assert_clean_exit(ego, ego.interrupt(), ("ego_node",))


def test_launch_with_the_worker(launch, tiny_model_dirs, tmp_path):
    ego = launch(f"model_path:={tiny_model_dirs['qwen2_5_vl']}", f"store_dir:={tmp_path}",
                 "use_worker:=true", f"worker_endpoint:={_free_endpoint()}")
    ego.start_camera()
    rec = ego.recognition(timeout=120.0)  # answered through the worker
    assert rec["num_frames"] >= 1
    assert re.search(r"\[ego_worker-\d+\]: process started", ego.text()), ego.text()[-2000:]
    _assert_clean_exit(ego, ego.interrupt(), ("ego_node", "ego_worker"))


def test_colcon_test_runs_the_pytest_suite_and_counts_it(workspace):
    subset = "test/test_stream.py"
    collected = _run([sys.executable, "-m", "pytest", "--collect-only", "-q", subset],
                     dict(os.environ), ROOT, 120)
    expected = int(re.search(r"(\d+) tests? collected", collected.stdout).group(1))
    # launch_testing's pytest plugins (on PYTHONPATH with the tools) predate pytest 9's hooks
    plugins_off = [" -pno:launch_testing", " -pno:launch_ros", " -pno:launch_pytest"]
    started = time.monotonic()
    tested = _run([sys.executable, "-m", "colcon", "test", "--base-paths", "src/ego_ros",
                   "src/ego_ros/ego_interfaces", "--packages-select", "ego_ros",
                   "--pytest-args", *plugins_off, subset], workspace.env, workspace.path, 300)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    result = _run([sys.executable, "-m", "colcon", "test-result", "--all"], workspace.env,
                  workspace.path, 60)
    summary = re.search(r"Summary: (\d+) tests, (\d+) errors, (\d+) failures, (\d+) skipped",
                        result.stdout)
    assert summary, result.stdout + result.stderr
    assert summary.groups() == (str(expected), "0", "0", "0"), (
        result.stdout, time.monotonic() - started)

"""``ego_node`` stopped with Ctrl-C while a clip is in flight: exit status 0, nothing red.

The node runs as a subprocess (``python -m ego_ros.ros.node``, what the ``ego_node`` console
script, ``ros2 launch`` and ``ego-ros up`` start) with the tiny model, captions on and a short
clip period, so its inference thread is always busy; a camera node in this process streams
frames over real DDS. SIGINT is sent right after a Recognition arrives, when the next clip is
already being captioned. Before the fix rclpy's signal handler shut the context down under
that clip: ``clip failed: RCLError: Failed to publish: publisher's context is invalid``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosutil import RELIABLE_QOS, Collector, ros_harness, wait_for, wait_matched
from sensor_msgs.msg import Image

from ego_interfaces.msg import Recognition
from ego_ros.ros.convert import ns_to_stamp, rgb_to_image_msg

ROOT = Path(__file__).resolve().parents[1]
RED = ("[ERROR]", "[FATAL]", "Traceback", "Failed to publish", "context is invalid")


def test_sigint_while_a_caption_is_in_flight_exits_cleanly(tiny_model_dirs, tmp_path):
    cmd = [sys.executable, "-m", "ego_ros.ros.node", "--ros-args",
           "-p", f"model.path:={tiny_model_dirs['qwen2_5_vl']}", "-p", f"store.dir:={tmp_path}",
           "-p", "model.device:=cpu", "-p", "tasks.caption:=true", "-p", "clip.period_s:=0.2",
           "-p", "clip.num_frames:=2", "-p", "clip.window_s:=0.5",
           "-p", "qos.reliability:=reliable", "-p", "engine.max_new_tokens:=16"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    stop_camera = threading.Event()
    try:
        with ros_harness() as ros:
            node = ros.node("camera")
            pub = node.create_publisher(Image, "/image", QoSProfile(
                depth=5, reliability=ReliabilityPolicy.RELIABLE))
            got = Collector()
            node.create_subscription(Recognition, "/ego_node/recognition", got, RELIABLE_QOS)
            msg = rgb_to_image_msg(np.random.default_rng(0).integers(
                0, 255, (120, 160, 3), dtype=np.uint8), "rgb8")

            def stream() -> None:
                while not stop_camera.is_set():
                    msg.header.stamp = ns_to_stamp(time.time_ns())
                    pub.publish(msg)
                    stop_camera.wait(0.05)

            wait_matched(pub, timeout_s=120.0)  # the node is up once it subscribes
            camera = threading.Thread(target=stream, daemon=True)
            camera.start()
            first = got.wait(1, timeout_s=60.0)[0]
            assert first.caption  # captions on: each clip keeps the model busy
            count = len(got.messages)
            wait_for(lambda: len(got.messages) > count, 30.0, "the next Recognition")
            proc.send_signal(signal.SIGINT)  # the clip after it is already being captioned
            status = proc.wait(60)
            stop_camera.set()
            camera.join(5)
        reader.join(5)
        output = "".join(lines)
        assert status == 0, output[-3000:]
        red = [line for line in output.splitlines() if any(word in line for word in RED)]
        assert not red, output[-3000:]
    finally:
        stop_camera.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

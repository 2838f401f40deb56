"""Memory bound of a real ``ego_node`` process under compressed-frame bombs (issue 11, item 1).

The node runs the tiny model in its own process (``python -m ego_ros.ros.node``, what
``ego_node`` and ``ego-ros up`` start), subscribed to ``image/compressed``. A camera thread
publishes normal JPEG frames the whole time; once recognitions flow, a second publisher on the
same topic sends PNG bombs (49 KB each, declaring 20000x20000: 1.2 GB decoded) and PNGs too
small for the model. The node's resident memory (``VmRSS``) and its peak (``VmHWM``), read
from ``/proc``, must grow by less than ``MAX_GROWTH`` while every bad frame is counted on
/diagnostics, and Recognitions of clips cut after the last bomb must still arrive.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bombs import compressed_msg, encoded, png_bomb
from diagnostic_msgs.msg import DiagnosticArray
from rosutil import RELIABLE_QOS, Collector, ros_harness, wait_for
from sensor_msgs.msg import CompressedImage
from test_node import FRAME_ID, Camera, check_stamps, scene_frames, wait_status

from ego_interfaces.msg import Recognition
from ego_ros.ros.convert import rgb_to_compressed_msg, stamp_to_ns

ROOT = Path(__file__).resolve().parents[1]
MAX_GROWTH = 300 * 2**20  # bytes of RSS (and of peak RSS) the bombs may add
BOMBS, SMALL = 20, 5

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(),
                                reason="reads resident memory from /proc (Linux)")


def memory(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of process ``pid``, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024  # "123456 kB"
    return out


def start_node(model: Path, store: Path, params: Path, log: Path) -> subprocess.Popen:
    params.write_text(f"""/**:
  ros__parameters:
    model.path: "{model}"
    store.dir: "{store}"
    model.device: "cpu"
    image.compressed: true
    qos.reliability: "reliable"
    qos.depth: 50
    clip.period_s: 0.3
    clip.num_frames: 2
    clip.window_s: 0.5
    diagnostics.period_s: 0.25
""")
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "ego_ros.ros.node", "--ros-args",
                                 "--params-file", str(params)], stdout=out, stderr=out, cwd=ROOT)


def test_png_bombs_leave_a_running_node_bounded_and_publishing(tiny_model_dirs, tmp_path):
    log = tmp_path / "node.log"
    node = start_node(tiny_model_dirs["qwen2_5_vl"], tmp_path / "store", tmp_path / "ego.yaml",
                      log)
    try:
        with ros_harness() as ros:
            client = ros.node("client")
            recognitions, diagnostics = Collector(), Collector()
            client.create_subscription(Recognition, "/ego_node/recognition", recognitions,
                                       RELIABLE_QOS)
            client.create_subscription(DiagnosticArray, "/diagnostics", diagnostics,
                                       RELIABLE_QOS)
            good = [rgb_to_compressed_msg(f, "jpeg") for f in scene_frames(3, (240, 320))]
            for msg in good:
                msg.header.frame_id = FRAME_ID
            camera = Camera(client, good, rate_hz=20.0, topic="/image/compressed",
                            qos=RELIABLE_QOS)
            attacker = client.create_publisher(CompressedImage, "/image/compressed",
                                               RELIABLE_QOS)

            def alive() -> None:
                assert node.poll() is None, log.read_text()[-3000:]

            wait_for(lambda: (alive(), camera.pub.get_subscription_count() >= 1)[1], 120.0,
                     "the node's image subscription")
            camera.start()
            try:
                recognitions.wait(3, timeout_s=60.0)
                before = memory(node.pid)

                def bounded() -> None:
                    alive()
                    now = memory(node.pid)
                    assert now["VmHWM"] - before["VmHWM"] < MAX_GROWTH, (before, now)
                    assert now["VmRSS"] - before["VmRSS"] < MAX_GROWTH, (before, now)

                bomb = compressed_msg(png_bomb(20000, 20000), "png", "bomb")
                small = compressed_msg(encoded(scene_frames(1, (4, 4))[0], ".png"), "png",
                                       "small")
                assert len(bomb.data) < 100_000
                for i in range(BOMBS):
                    attacker.publish(bomb)
                    if i % (BOMBS // SMALL) == 0:
                        attacker.publish(small)
                    time.sleep(0.05)
                    bounded()
                bad = str(BOMBS + SMALL)
                _, message, values = wait_status(
                    diagnostics, "camera input",
                    lambda _l, _m, v: (bounded(), v["frames_refused_size"] == bad)[1],
                    timeout_s=30.0)
                assert values["conversion_errors"] == bad
                assert "20000x20000" in values["last_conversion_error"] or (
                    "4x4" in values["last_conversion_error"])
                after_bombs = time.time_ns()
                later = wait_for(lambda: (bounded(), [
                    r for r in recognitions.messages
                    if stamp_to_ns(r.clip_start) > after_bombs])[1], 30.0,
                    "recognitions of clips cut after the bombs")
                check_stamps(later[0], camera, max_frames=2)
                bounded()
            finally:
                camera.stop()
        node.send_signal(signal.SIGINT)
        assert node.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(10)

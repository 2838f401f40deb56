"""Frame size limits where they are configured and applied: the node's parameters, the bag
reader's default cap, and a live node (raw frames over real DDS) refusing frames over
``image.max_pixels`` or under the model's minimum side while its buffer keeps to
``buffer.max_bytes``. The compressed-bomb memory proof on a node process is in
``test_memory_bounds.py``; the header parsing itself in ``test_convert.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from bombs import png_bomb
from diagnostic_msgs.msg import DiagnosticArray
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosutil import RELIABLE_QOS, Collector, ros_harness
from test_node import FRAME_ID, Camera, check_stamps, ego_node, raw_msgs, wait_status

from ego_interfaces.msg import Recognition
from ego_ros.backends.base import MIN_IMAGE_SIDE
from ego_ros.bag.io import BagError, read_image_bag, write_image_bag
from ego_ros.imaging import ImageLimits
from ego_ros.ros.convert import stamp_to_ns
from ego_ros.ros.params import settings_from_parameters

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
REMOTE = {"engine.endpoint": "tcp://127.0.0.1:5999"}  # no model is loaded for these checks


def test_image_parameters_are_validated_and_mapped():
    settings = settings_from_parameters(REMOTE)
    assert settings.image_limits == ImageLimits(4096 * 4096, MIN_IMAGE_SIDE, "image.max_pixels")
    assert settings.buffer_max_bytes == 1 << 30
    with pytest.raises(ValueError, match=r"buffer.max_bytes \(50000000\) cannot hold one frame "
                       r"of image.max_pixels \(16777216 pixels x 3 bytes = 50331648\)"):
        settings_from_parameters({**REMOTE, "buffer.max_bytes": 50_000_000})
    with pytest.raises(ValueError, match=r"image.max_pixels must be in \[64, 1073741824\], "
                       "got 10"):
        settings_from_parameters({**REMOTE, "image.max_pixels": 10})
    with pytest.raises(ValueError, match="buffer.max_bytes must be a int"):
        settings_from_parameters({**REMOTE, "buffer.max_bytes": 1.0e9})
    small = settings_from_parameters({**REMOTE, "image.max_pixels": 64 * 64,
                                      "buffer.max_bytes": 1 << 20})
    assert (small.image_limits.max_pixels, small.buffer_max_bytes) == (4096, 1 << 20)


def _bag_with(path: Path, payloads: list[bytes]) -> Path:
    types = TYPESTORE.types
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn = writer.add_connection("/camera/image/compressed",
                                     "sensor_msgs/msg/CompressedImage", typestore=TYPESTORE)
        for i, data in enumerate(payloads):
            header = types["std_msgs/msg/Header"](
                stamp=types["builtin_interfaces/msg/Time"](sec=10 + i, nanosec=0), frame_id="f")
            msg = types["sensor_msgs/msg/CompressedImage"](
                header=header, format="png", data=np.frombuffer(data, np.uint8))
            writer.write(conn, 10**9 * (10 + i),
                         TYPESTORE.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
    return path


def test_the_bag_reader_refuses_bombs_with_its_default_cap(tmp_path):
    bag = _bag_with(tmp_path / "bomb_bag", [png_bomb(64, 48), png_bomb(20000, 20000)])
    frames = read_image_bag(bag)
    assert next(frames).rgb.shape == (48, 64, 3)
    started = time.perf_counter()
    with pytest.raises(BagError, match="PNG header declares 20000x20000 = 400,000,000 pixels"):
        next(frames)
    assert time.perf_counter() - started < 1.0  # refused from the header, never decoded
    # a caller's own limits apply to raw frames as well
    raw = tmp_path / "raw_bag"
    write_image_bag(raw, [(np.zeros((48, 64, 3), np.uint8), 10**9, "f")])
    with pytest.raises(BagError, match="64x48 = 3,072 pixels, over the limit of 3,000"):
        list(read_image_bag(raw, limits=ImageLimits(max_pixels=3000)))


def test_node_refuses_oversized_and_undersized_raw_frames_and_keeps_its_byte_budget(
        tiny_model_dirs, tmp_path):
    """A 1 MiB buffer of 230 KB frames holds four; frames over 320x240 pixels or under the
    model's 8-pixel side are refused and counted, and recognitions go on from the good ones."""
    good = raw_msgs((240, 320))
    big = raw_msgs((240, 321))[0]  # complete data, 240 pixels over the cap
    thin = raw_msgs((6, 320))[0]  # every clip with it would fail in the model
    for msg in (big, thin):
        msg.header.frame_id = "bad"
    stream = [good[0], big, good[1], thin, good[2]]
    budget = 1 << 20
    with ros_harness() as ros, ego_node(
            ros, tiny_model_dirs["qwen2_5_vl"], tmp_path / "store",
            **{"image.max_pixels": 320 * 240, "buffer.max_bytes": budget,
               "clip.period_s": 0.3, "clip.num_frames": 2, "clip.window_s": 0.5,
               "qos.reliability": "reliable", "qos.depth": 50, "diagnostics.period_s": 0.2}):
        client = ros.node("client")
        recognitions, diagnostics = Collector(), Collector()
        client.create_subscription(Recognition, "/ego_node/recognition", recognitions,
                                   RELIABLE_QOS)
        client.create_subscription(DiagnosticArray, "/diagnostics", diagnostics, RELIABLE_QOS)
        camera = Camera(client, stream, rate_hz=25.0, qos=RELIABLE_QOS).start()
        try:
            recognitions.wait(3, timeout_s=60.0)
        finally:
            camera.stop()
        for rec in recognitions.messages:
            check_stamps(rec, camera, max_frames=2)  # never a refused frame
            assert rec.header.frame_id == FRAME_ID and stamp_to_ns(rec.clip_end) > 0
        sent, bad = str(sum(camera.published.values())), str(camera.published["bad"])
        level, message, values = wait_status(
            diagnostics, "camera input", lambda _l, _m, v: v["frames_received"] == sent)
        assert values["conversion_errors"] == values["frames_refused_size"] == bad
        assert level == 1 and f"({bad} refused for their size)" in message  # WARN
        assert "over the limit of 76,800 (image.max_pixels)" in message or (
            "under the model's minimum of 8" in message)
        assert int(values["buffered_frames"]) == 4  # 4 x 230,400 bytes <= 1 MiB < 5 x
        assert int(values["buffered_bytes"]) == 4 * 240 * 320 * 3 <= budget
        assert int(values["buffer_evicted_by_bytes"]) > 0

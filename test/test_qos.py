"""The camera subscription's QoS over real DDS: ``qos.reliability auto`` matches the camera,
follows a change of publishers, a forced mismatch and lost frames are reported on /diagnostics;
the delivery estimate from header stamps on its own.

The subscription's reliability is read back from the ROS graph
(``get_subscriptions_info_by_topic``), as ``ros2 topic info -v`` shows it, not from the node's
own attributes.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosutil import RELIABLE_QOS, Collector, ros_harness, wait_for
from test_node import SENSOR_QOS, Camera, ego_node, raw_msgs, wait_status

from ego_ros.ros.convert import ns_to_stamp
from ego_ros.ros.diagnostics import OK, WARN
from ego_ros.ros.qos import DeliveryMeter, choose_reliability

CAMERA_RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
QUIET = {"tasks.recognize": False}  # the camera path only: no model work competing for CPU


def node_reliability(probe, topic: str = "/image") -> ReliabilityPolicy | None:
    """The reliability of ego_node's subscription on ``topic``, as the graph reports it."""
    for info in probe.get_subscriptions_info_by_topic(topic):
        if info.node_name == "ego_node":
            return info.qos_profile.reliability
    return None


def test_auto_receives_from_a_best_effort_camera_that_starts_later(tiny_model_dirs, tmp_path):
    with ros_harness() as ros, ego_node(ros, tiny_model_dirs["qwen2_5_vl"], tmp_path / "s",
                                        **QUIET) as node:
        probe = ros.node("probe")
        assert node.image_reliability == "none"  # no publisher yet: no subscription
        assert "no publisher seen yet" in node.diagnostics()[0].message
        camera = Camera(ros.node("camera"), raw_msgs(), rate_hz=20.0, qos=SENSOR_QOS).start()
        try:
            wait_for(lambda: node_reliability(probe) == ReliabilityPolicy.BEST_EFFORT, 10.0,
                     "ego_node subscribed best effort")
            wait_for(lambda: node._input_rate.total >= 5, 10.0, "frames from the camera")
        finally:
            camera.stop()


def test_auto_subscribes_reliable_to_a_reliable_camera_and_follows_a_change(
        tiny_model_dirs, tmp_path):
    with ros_harness() as ros:
        probe = ros.node("probe")
        camera = Camera(ros.node("camera"), raw_msgs(), rate_hz=20.0, qos=CAMERA_RELIABLE)
        wait_for(lambda: probe.get_publishers_info_by_topic("/image"), 10.0, "the camera")
        with ego_node(ros, tiny_model_dirs["qwen2_5_vl"], tmp_path / "s", **QUIET) as node:
            assert node_reliability(probe) == ReliabilityPolicy.RELIABLE  # at start
            camera.start()
            try:
                wait_for(lambda: node._input_rate.total >= 5, 10.0, "frames from the camera")
                # a best-effort publisher joins: a reliable subscription would get nothing
                # from it, so the node subscribes again, best effort
                ros.node("camera2").create_publisher(type(camera.frames[0]), "/image",
                                                     SENSOR_QOS)
                wait_for(lambda: node_reliability(probe) == ReliabilityPolicy.BEST_EFFORT,
                         10.0, "ego_node subscribed again, best effort")
                before = node._input_rate.total
                wait_for(lambda: node._input_rate.total >= before + 5, 10.0,
                         "frames after the change")
            finally:
                camera.stop()


def test_forced_reliable_against_a_best_effort_camera_is_reported(tiny_model_dirs, tmp_path):
    with ros_harness() as ros, ego_node(ros, tiny_model_dirs["qwen2_5_vl"], tmp_path / "s",
                                        **QUIET, **{"qos.reliability": "reliable"}) as node:
        assert node.image_reliability == "reliable"  # forced: subscribed at once
        diagnostics = Collector()
        ros.node("monitor").create_subscription(DiagnosticArray, "/diagnostics", diagnostics,
                                                RELIABLE_QOS)
        ros.node("camera").create_publisher(type(raw_msgs()[0]), "/image", SENSOR_QOS)
        level, message, values = wait_status(
            diagnostics, "camera input", lambda _l, _m, v: v["incompatible_publishers"] == "1")
        assert level == WARN[0]
        assert "best effort" in message and "qos.reliability" in message
        assert node._input_rate.total == 0


def test_lost_frames_are_reported_from_header_stamps(tiny_model_dirs, tmp_path):
    """A 30 Hz camera of which only 2 frames in 5 arrive (the others 'lost'): the stamps
    show the camera's rate, and the camera status warns with the delivered share."""
    with ros_harness() as ros, ego_node(ros, tiny_model_dirs["qwen2_5_vl"], tmp_path / "s",
                                        **QUIET):
        diagnostics = Collector()
        ros.node("monitor").create_subscription(DiagnosticArray, "/diagnostics", diagnostics,
                                                RELIABLE_QOS)
        msgs = raw_msgs((96, 128))
        pub = ros.node("camera").create_publisher(type(msgs[0]), "/image", CAMERA_RELIABLE)
        wait_for(lambda: pub.get_subscription_count() >= 1, 10.0, "ego_node's subscription")
        stop = threading.Event()

        def publish() -> None:
            start, k = time.time_ns(), 0
            while not stop.is_set():
                stamp = start + k * 1_000_000_000 // 30
                if k % 5 in (0, 1):
                    msg = msgs[k % len(msgs)]
                    msg.header.stamp = ns_to_stamp(stamp)
                    pub.publish(msg)
                k += 1
                stop.wait(max(0.0, (stamp + 1_000_000_000 // 30 - time.time_ns()) / 1e9))

        thread = threading.Thread(target=publish, daemon=True)
        thread.start()
        try:
            level, message, values = wait_status(
                diagnostics, "camera input", lambda _l, _m, v: v["delivered_share"] != "",
                timeout_s=20.0)
        finally:
            stop.set()
            thread.join(5.0)
        assert level == WARN[0], message
        assert float(values["delivered_share"]) == pytest.approx(0.4, abs=0.08)
        assert float(values["camera_rate_hz"]) == pytest.approx(30.0, rel=0.1)
        assert "lost in transport" in message and "header stamps" in message
        assert values["reliability"] == "reliable"


def stamps(rate_hz: float, keep, count: int, jitter_s: float = 0.0, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        if keep(k, rng):
            out.append(int(1e18 + k * 1e9 / rate_hz + rng.uniform(-jitter_s, jitter_s) * 1e9))
    return out


@pytest.mark.parametrize("keep,declared,expected,camera_hz", [
    (lambda k, r: True, 0.0, 1.0, 30.0),  # every frame
    (lambda k, r: r.random() < 0.3, 0.0, 0.3, 30.0),  # random loss: some pairs still arrive
    (lambda k, r: k % 3 == 0, 30.0, 1 / 3, 30.0),  # periodic loss: needs the declared rate
    (lambda k, r: k % 3 == 0, 0.0, 1.0, 10.0),  # ... the stamps alone see a 10 Hz camera
])
def test_delivery_estimate_from_stamps(keep, declared, expected, camera_hz):
    meter = DeliveryMeter(window=400)
    for stamp in stamps(30.0, keep, 1000, jitter_s=0.002):
        meter.add(stamp)
    delivery = meter.estimate(declared)
    assert delivery.delivered == pytest.approx(expected, abs=0.06)
    assert delivery.camera_rate_hz == pytest.approx(camera_hz, rel=0.1)


def test_delivery_estimate_ignores_pauses_and_unstamped_frames():
    meter = DeliveryMeter()
    assert meter.estimate() is None
    for stamp in stamps(30.0, lambda k, r: True, 20) + [int(1e18 + 5e9 + k * 1e9 / 30)
                                                          for k in range(20)]:
        meter.add(stamp)  # 20 frames, a 4 s pause, 20 frames: the pause is not loss
        meter.add(0)  # unstamped: ignored
    assert meter.estimate().delivered == pytest.approx(1.0, abs=0.01)


def test_choose_reliability():
    R, B = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT
    assert choose_reliability("auto", []) is None
    assert choose_reliability("auto", [R, R]) == R
    assert choose_reliability("auto", [R, B]) == B
    assert choose_reliability("reliable", [B]) == R
    assert choose_reliability("best_effort", []) == B
    with pytest.raises(ValueError, match="qos.reliability"):
        choose_reliability("fast", [])


def test_a_node_forced_best_effort_still_gets_frames_and_reports_ok(tiny_model_dirs, tmp_path):
    with ros_harness() as ros, ego_node(ros, tiny_model_dirs["qwen2_5_vl"], tmp_path / "s",
                                        **QUIET, **{"qos.reliability": "best_effort"}) as node:
        diagnostics = Collector()
        ros.node("monitor").create_subscription(DiagnosticArray, "/diagnostics", diagnostics,
                                                RELIABLE_QOS)
        camera = Camera(ros.node("camera"), raw_msgs((96, 128)), rate_hz=20.0,
                        qos=SENSOR_QOS).start()
        try:
            level, message, values = wait_status(
                diagnostics, "camera input", lambda _l, _m, v: v["delivered_share"] != "")
        finally:
            camera.stop()
        assert level == OK[0], message
        assert float(values["delivered_share"]) > 0.8
        assert node.image_reliability == "best_effort"

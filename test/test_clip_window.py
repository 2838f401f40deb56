"""clip.window_s against clip.max_age_s: a window the staleness limit would cut short is
refused (at start and at run time), and the shipped defaults let clips span their window."""

from __future__ import annotations

from pathlib import Path

import pytest
from rclpy.parameter import Parameter
from rosutil import ros_harness

from ego_ros.cli.up import node_parameters
from ego_ros.ros.params import SPECS, stream_settings

ROOT = Path(__file__).resolve().parents[1]


def test_a_window_longer_than_the_frame_age_limit_is_refused():
    # clip.max_age_s drops frames received longer ago: a 2 s window would get ~1 s clips.
    with pytest.raises(ValueError, match=r"clip\.window_s \(2\.0\) exceeds clip\.max_age_s "
                                         r"\(1\.0\)"):
        stream_settings({"clip.window_s": 2.0, "clip.max_age_s": 1.0})
    assert stream_settings({"clip.window_s": 1.0, "clip.max_age_s": 1.0}).clip.window_s == 1.0
    # single-frame clips need no window at all
    assert stream_settings({"clip.num_frames": 1, "clip.window_s": 0.0,
                            "clip.max_age_s": 0.5}).clip.max_age_s == 0.5


def test_the_shipped_defaults_are_consistent():
    window, max_age = SPECS["clip.window_s"].default, SPECS["clip.max_age_s"].default
    assert window < max_age  # a margin: the window's oldest frame is still usable at the cut
    shipped = node_parameters(ROOT / "config" / "ego.yaml")
    assert shipped["clip.window_s"] == window and shipped["clip.max_age_s"] == max_age
    stream_settings(shipped)  # the whole shipped file validates


def test_live_evaluation_parameters_cover_long_windows():
    from ego_ros.core.engine import EngineConfig
    from ego_ros.eval.live import LiveSettings
    from ego_ros.eval.live import node_parameters as live_parameters
    from ego_ros.eval.offline import EvalConfig

    for frames, window in ((16, 0.0), (4, 3.0)):  # derived 1.6 s window; an explicit 3 s one
        params = live_parameters(None, Path("/tmp/store"), EvalConfig(clip_frames=frames),
                                 EngineConfig(), False, LiveSettings(window_s=window),
                                 endpoint="tcp://127.0.0.1:9")
        assert params["clip.max_age_s"] >= params["clip.window_s"] > 0
        stream_settings({k: v for k, v in params.items() if k in SPECS})


def test_a_running_node_refuses_the_pair_and_keeps_its_settings(tmp_path):
    from ego_ros.ros.node import EgoNode

    with ros_harness() as ros:  # a worker endpoint: no model is loaded
        node = EgoNode(context=ros.context, parameter_overrides=[
            Parameter("engine.endpoint", value="tcp://127.0.0.1:9")])
        try:
            (result,) = node.set_parameters([Parameter("clip.max_age_s", value=1.0)])
            assert not result.successful
            assert "clip.window_s (2.0) exceeds clip.max_age_s (1.0)" in result.reason
            assert node.get_parameter("clip.max_age_s").value == 2.5
            result = node.set_parameters_atomically([Parameter("clip.window_s", value=3.0),
                                                     Parameter("clip.max_age_s", value=3.5)])
            assert result.successful, result.reason  # validated as a whole: both together
        finally:
            node.destroy_node()

"""``bag play`` resolves a topic's type from its fixed table only: a real rosbag2 bag (written
with rosbags) whose connection claims a hostile or unsupported type is refused, and nothing
named by the bag is imported.

``this/msg/System`` would run the standard library's ``this`` module (it prints the Zen of
Python on import) if the player imported what the bag names; ``os/msg/system`` names a module
every process has; ``geometry_msgs/msg/Twist`` is a real ROS type the player does not publish.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from ego_ros.bag.play import MESSAGE_TYPES, PlayConfig, PlayError, play_bag
from ego_ros.cli.main import main


def write_bag(out: Path, topic: str, msgtype: str) -> Path:
    """A one-message rosbag2 bag whose connection on ``topic`` claims ``msgtype``."""
    store = get_typestore(Stores.ROS2_JAZZY)
    if msgtype not in store.types:
        store.register(get_types_from_msg("string data", msgtype))
    msg = store.types[msgtype]
    fields = {"data": "rm -rf /"} if msgtype.split("/")[0] != "geometry_msgs" else {
        "linear": store.types["geometry_msgs/msg/Vector3"](0.0, 0.0, 0.0),
        "angular": store.types["geometry_msgs/msg/Vector3"](0.0, 0.0, 0.0)}
    with Writer(out, version=9) as writer:
        conn = writer.add_connection(topic, msgtype, typestore=store)
        writer.write(conn, 1_700_000_000_000_000_000, store.serialize_cdr(msg(**fields), msgtype))
    return out


HOSTILE = ["this/msg/System", "os/msg/system", "geometry_msgs/msg/Twist"]


@pytest.mark.parametrize("msgtype", HOSTILE)
def test_a_type_outside_the_table_is_refused_and_nothing_is_imported(
        tmp_path: Path, msgtype: str, capsys) -> None:
    package = msgtype.split("/")[0]
    before = set(sys.modules)
    if package == "this":
        assert "this" not in before, "another test imported 'this'; this check needs it unloaded"
    bag = write_bag(tmp_path / "bag", "/evil", msgtype)
    with pytest.raises(PlayError) as exc:
        play_bag(bag, PlayConfig(topic="/evil"))
    message = str(exc.value)
    assert msgtype in message
    assert "sensor_msgs/msg/Image" in message and "sensor_msgs/msg/CompressedImage" in message
    new = set(sys.modules) - before
    assert not [m for m in new if m == package or m.startswith(package + ".")], sorted(new)
    assert "rclpy" not in new or "rclpy" in before  # refused before any ROS start-up
    assert "Beautiful is better than ugly" not in capsys.readouterr().out


def test_the_cli_refuses_it_with_a_message_not_a_traceback(tmp_path: Path, capsys) -> None:
    bag = write_bag(tmp_path / "bag", "/evil", "this/msg/System")
    assert main(["bag", "play", str(bag), "--topic", "/evil"]) == 2
    captured = capsys.readouterr()
    assert "publishes only" in captured.err and "'this/msg/System'" in captured.err
    assert "Traceback" not in captured.err and "Beautiful is better" not in captured.out
    assert "this" not in sys.modules


def test_the_table_is_what_play_publishes() -> None:
    assert set(MESSAGE_TYPES) == {"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"}

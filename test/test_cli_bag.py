"""``ego-ros bag``: every subcommand on real files, and ``bag play`` over real DDS.

Bags are real rosbag2 folders in ``tmp_path``; what the commands print is parsed as JSON and
checked against what the bag readers see. ``play`` publishes to a subscriber in a separate
rclpy Context of this process, so the messages really cross DDS.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosgraph_msgs.msg import Clock
from rosutil import RELIABLE_QOS, Collector, ros_harness, wait_for
from sensor_msgs.msg import CompressedImage, Image

from ego_ros.bag.io import compressed_msg_to_rgb, read_image_bag
from ego_ros.bag.labels import load_labels
from ego_ros.bag.play import PlayConfig, PlayError, play_bag
from ego_ros.cli.main import main

NS = 1_000_000_000


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict | None, str]:
    """Run ``ego-ros ARGV``; (exit code, the JSON printed on stdout or None, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.strip()]
    return code, (json.loads(lines[-1]) if lines else None), err


def pattern(i: int, h: int = 40, w: int = 56) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(xx * 3 + 25 * i) % 256, (yy * 5 + 10 * i) % 256,
                     np.full_like(xx, 40 * i % 256)], axis=2).astype(np.uint8)


def write_pngs(folder: Path, start: int, count: int) -> list[np.ndarray]:
    folder.mkdir(parents=True)
    images = []
    for i in range(start, start + count):
        rgb = pattern(i)
        # frame_10 after frame_9: natural order, not lexical
        assert cv2.imwrite(str(folder / f"frame_{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        images.append(rgb)
    return images


@pytest.fixture(scope="module")
def synthetic_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small compressed synthetic bag made through the CLI (6 frames, 160x120)."""
    out = tmp_path_factory.mktemp("synthetic") / "bag"
    assert main(["bag", "synthetic", "--out", str(out), "--frames", "6", "--width", "160",
                 "--height", "120", "--compressed", "--refs", "1", "--seed", "4"]) == 0
    return out


# ----------------------------------------------------------------------------------------------
# Writers and info
# ----------------------------------------------------------------------------------------------


def test_synthetic_then_info_round_trip(synthetic_bag: Path, capsys) -> None:
    code, info, _ = run_cli(capsys, "bag", "info", synthetic_bag)
    assert code == 0
    assert info["message_count"] == 6
    assert info["image_topics"] == ["/camera/image_raw/compressed"]
    assert info["topics"] == [{"name": "/camera/image_raw/compressed",
                               "type": "sensor_msgs/msg/CompressedImage", "count": 6}]
    labels = info["labels"]
    assert labels["dataset"] == "synthetic" and labels["seed"] == 4
    assert labels["labelled_frames"] == 6
    assert labels["concepts"] == {"kiro": 1, "tavi": 1, "nox": 1}
    frames = list(read_image_bag(synthetic_bag))
    assert [f.stamp_ns for f in frames] == [f.stamp_ns for f in load_labels(synthetic_bag).frames]
    assert info["start_ns"] == frames[0].log_time_ns and info["end_ns"] == frames[-1].log_time_ns
    assert all(f.rgb.shape == (120, 160, 3) for f in frames)


def test_synthetic_prints_what_it_wrote(tmp_path: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "bag", "synthetic", "--out", tmp_path / "b", "--frames", "3",
                           "--width", "96", "--height", "64", "--refs", "2",
                           "--topic", "/cam/image")
    assert code == 0
    assert out["frames"] == 3 and out["topic"] == "/cam/image" and out["compressed"] is False
    assert out["labels"]["concepts"] == {"kiro": 2, "tavi": 2, "nox": 2}
    assert [f.encoding for f in read_image_bag(tmp_path / "b")] == ["rgb8"] * 3


def test_from_images_keeps_pixels_order_and_timing(tmp_path: Path, capsys) -> None:
    first = write_pngs(tmp_path / "a", 8, 3)  # frame_8, frame_9, frame_10
    second = write_pngs(tmp_path / "b", 0, 2)
    code, out, _ = run_cli(capsys, "bag", "from-images", tmp_path / "a", tmp_path / "b",
                           "--out", tmp_path / "bag", "--fps", "5")
    assert code == 0 and out["frames"] == 5 and out["topic"] == "/camera/image_raw"
    frames = list(read_image_bag(tmp_path / "bag"))
    for frame, expected in zip(frames, first + second, strict=True):
        np.testing.assert_array_equal(frame.rgb, expected)
    assert np.diff([f.stamp_ns for f in frames]).tolist() == [NS // 5] * 4

    code, out, _ = run_cli(capsys, "bag", "from-images", tmp_path / "a", "--out",
                           tmp_path / "cbag", "--compressed", "--storage", "mcap")
    assert code == 0 and out["topic"] == "/camera/image_raw/compressed"
    code, info, _ = run_cli(capsys, "bag", "info", tmp_path / "cbag")
    assert info["storage"] == "mcap" and info["message_count"] == 3 and info["labels"] is None


def test_from_video(tmp_path: Path, capsys) -> None:
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (56, 40))
    assert writer.isOpened()
    for i in range(6):
        writer.write(cv2.cvtColor(pattern(i), cv2.COLOR_RGB2BGR))
    writer.release()
    code, out, _ = run_cli(capsys, "bag", "from-video", video, "--out", tmp_path / "bag",
                           "--fps", "5")
    assert code == 0 and out["frames"] == 3  # 10 fps resampled to 5 fps
    stamps = [f.stamp_ns for f in read_image_bag(tmp_path / "bag")]
    assert np.diff(stamps).tolist() == [NS // 5] * 2


def make_myvlm(root: Path) -> Path:
    """A MyVLM-shaped folder: <concept>/*.jpg, captions.json, one VQA file."""
    for c, (name, count) in enumerate((("mug", 4), ("teddy", 3))):
        folder = root / name
        folder.mkdir(parents=True)
        files = [f"{name}_{i}.jpg" for i in range(count)]
        for i, fname in enumerate(files):
            rgb = np.full((60, 80, 3), (200 if c == 0 else 40, 60 + 30 * i, 90), np.uint8)
            assert cv2.imwrite(str(folder / fname), rgb)
        (folder / "captions.json").write_text(json.dumps(
            {f: [f"{name} on a shelf, picture {i}"] for i, f in enumerate(files)}))
        if name == "mug":
            (folder / "additional_llava_vqa_data.json").write_text(json.dumps(
                {f: [["What is sks?", "sks is a mug."]] for f in files}))
    return root


def test_from_dataset_split_and_ground_truth(tmp_path: Path, capsys) -> None:
    root = make_myvlm(tmp_path / "myvlm")
    code, out, _ = run_cli(capsys, "bag", "from-dataset", root, "--layout", "myvlm", "--refs",
                           "1", "--seed", "3", "--out", tmp_path / "bag")
    assert code == 0
    assert out["compressed"] is True and out["frames"] == (4 - 1) + (3 - 1)
    assert out["labels"]["concepts"] == {"mug": 1, "teddy": 1}
    labels = load_labels(tmp_path / "bag")
    queried = {f.source for f in labels.frames}
    for concept in labels.concepts:
        (ref,) = concept.refs
        assert (tmp_path / "bag" / ref.file).is_file()
        photo = ref.source.split(":", 1)[1]  # "myvlm:mug/mug_2.jpg" -> "mug/mug_2.jpg"
        assert photo not in queried, "a reference view leaked into the queries"
    assert all(f.concepts == (f.source.split("/")[0],) for f in labels.frames)
    assert {q.question for q in labels.vqa} == {"What is mug?"}
    assert len(labels.captions) == len(labels.frames)
    # same seed, same split and order
    code, again, _ = run_cli(capsys, "bag", "from-dataset", root, "--refs", "1", "--seed", "3",
                             "--out", tmp_path / "bag2")
    assert code == 0
    assert [f.source for f in load_labels(tmp_path / "bag2").frames] == \
        [f.source for f in labels.frames]


# ----------------------------------------------------------------------------------------------
# Hostile and missing paths: exit 2 with a message, no traceback
# ----------------------------------------------------------------------------------------------


def test_bad_paths_exit_2_with_a_message(tmp_path: Path, synthetic_bag: Path, capsys) -> None:
    (tmp_path / "file.txt").write_text("not an image, not a video, not a bag")
    (tmp_path / "empty").mkdir()
    pngs = tmp_path / "pngs"
    write_pngs(pngs, 0, 1)
    cases = [
        (("bag", "from-images", tmp_path / "missing", "--out", tmp_path / "o1"), "does not exist"),
        (("bag", "from-images", tmp_path / "empty", "--out", tmp_path / "o2"), "no "),
        (("bag", "from-images", pngs, "--out", synthetic_bag), "already exists"),
        (("bag", "from-images", pngs, "--out", tmp_path / "file.txt" / "bag"), "file.txt"),
        (("bag", "from-video", tmp_path / "file.txt", "--out", tmp_path / "o3"), "OpenCV"),
        (("bag", "from-video", tmp_path / "nope.mp4", "--out", tmp_path / "o4"),
         "does not exist"),
        (("bag", "from-dataset", tmp_path / "empty", "--refs", "1", "--out", tmp_path / "o5"),
         "no concept folders"),
        (("bag", "from-dataset", tmp_path / "missing", "--refs", "1", "--out", tmp_path / "o6"),
         "does not exist"),
        (("bag", "info", tmp_path / "missing"), "does not exist"),
        (("bag", "info", tmp_path / "empty"), "not a rosbag2 bag folder"),
        (("bag", "play", tmp_path / "empty"), "not a rosbag2 bag folder"),
        (("bag", "play", tmp_path / "missing"), "does not exist"),
        (("bag", "play", synthetic_bag, "--topic", "/nope"), "no topic '/nope'"),
    ]
    for argv, message in cases:
        code, out, err = run_cli(capsys, *argv)
        assert code == 2, argv
        assert out is None, argv
        assert message in err and "Traceback" not in err, (argv, err)
    for leftover in ("o1", "o2", "o3", "o4", "o5", "o6"):
        assert not (tmp_path / leftover).exists(), f"a failed command left {leftover} behind"


def test_bad_numbers_are_refused_by_the_parser(tmp_path: Path, capsys) -> None:
    for argv in (("bag", "synthetic", "--out", tmp_path / "s", "--fps", "0"),
                 ("bag", "play", tmp_path, "--rate", "-1"),
                 ("bag", "from-dataset", tmp_path, "--refs", "zero", "--out", tmp_path / "d")):
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in argv])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "must be > 0" in err or "expected an integer, got 'zero'" in err, err
    code, _, err = run_cli(capsys, "bag", "synthetic", "--out", tmp_path / "s", "--width", "10")
    assert code == 2 and "width" in err


# ----------------------------------------------------------------------------------------------
# Playback over DDS
# ----------------------------------------------------------------------------------------------


def test_play_publishes_the_recorded_frames_and_clock(synthetic_bag: Path, capsys) -> None:
    recorded = list(read_image_bag(synthetic_bag))
    with ros_harness() as ros:
        node = ros.node("bag_listener")
        frames, ticks = Collector(), Collector()
        node.create_subscription(CompressedImage, "/camera/image_raw/compressed", frames,
                                 RELIABLE_QOS)
        node.create_subscription(Clock, "/clock", ticks, RELIABLE_QOS)
        code, out, err = run_cli(capsys, "bag", "play", synthetic_bag, "--rate", "10", "--clock",
                                 "--wait-subscribers", "1")
        assert code == 0, err
        got = frames.wait(len(recorded))
        wait_for(lambda: ticks.messages, what="a /clock message")
    assert out["messages"] == len(recorded) and out["loops"] == 1
    assert [m.header.stamp.sec * NS + m.header.stamp.nanosec for m in got] == \
        [f.stamp_ns for f in recorded]
    assert all(m.header.frame_id == "camera" for m in got)
    for msg, frame in zip(got, recorded):
        np.testing.assert_array_equal(compressed_msg_to_rgb(msg), frame.rgb)
    clock_ns = [t.clock.sec * NS + t.clock.nanosec for t in ticks.messages]
    assert clock_ns == sorted(clock_ns)
    assert recorded[0].log_time_ns <= clock_ns[0] and clock_ns[-1] <= recorded[-1].log_time_ns


def test_play_loops_until_stopped(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_pngs(tmp_path / "pngs", 0, 3)
    assert main(["bag", "from-images", str(tmp_path / "pngs"), "--out", str(bag),
                 "--fps", "30"]) == 0
    stop = threading.Event()
    with ros_harness() as ros:
        got = Collector()
        ros.node("loop_listener").create_subscription(Image, "/camera/image_raw", got,
                                                      RELIABLE_QOS)
        stats: list = []
        player = threading.Thread(target=lambda: stats.append(play_bag(
            bag, PlayConfig(rate=4.0, loop=True, wait_subscribers=1), stop)))
        player.start()
        try:
            got.wait(7, timeout_s=20.0)  # more than two passes of three frames
        finally:
            stop.set()
            player.join(timeout=10.0)
    assert not player.is_alive()
    assert stats[0].loops >= 2 and stats[0].messages >= 7
    stamps = [m.header.stamp.sec * NS + m.header.stamp.nanosec for m in got.messages[:6]]
    assert stamps[:3] == stamps[3:6], "the second pass replays the same frames"


def test_play_refuses_bad_settings(synthetic_bag: Path) -> None:
    with pytest.raises(ValueError, match="rate"):
        PlayConfig(rate=0)
    with pytest.raises(PlayError, match="subscriber"):
        play_bag(synthetic_bag, PlayConfig(wait_subscribers=1, wait_timeout_s=0.3,
                                           topic="/camera/image_raw/compressed"))

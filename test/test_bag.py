"""Camera bags: round trips through real rosbag2 files and rosbags' readers; labels; synthetic bags.

Every bag here is a real sqlite3 or MCAP rosbag2 folder written to ``tmp_path``; frames written
by the project are read back through the project's reader and through ``rosbags`` directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosReliability
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from ruamel.yaml import YAML

from ego_ros.bag.io import (
    BagError,
    bag_info,
    from_images,
    from_video,
    read_image_bag,
    write_image_bag,
)
from ego_ros.bag.labels import (
    BagLabels,
    ConceptLabel,
    FrameLabel,
    LabelsError,
    RefView,
    SourceInfo,
    VqaItem,
    labels_path,
    load_labels,
    reference_images,
    save_labels,
    write_reference,
)
from ego_ros.bag.synthetic import make_synthetic_bag

T0 = 1_700_000_123 * 10**9 + 456
TYPESTORE = get_typestore(Stores.ROS2_JAZZY)


def smooth_frames(n: int, h: int = 48, w: int = 64) -> list[np.ndarray]:
    """Smooth colour ramps (JPEG-friendly), different per frame."""
    yy, xx = np.mgrid[0:h, 0:w]
    return [
        np.stack(
            [(xx * 4 + 20 * i) % 256, (yy * 5 + 40 * i) % 256, np.full_like(xx, 60 + 30 * i)],
            axis=2,
        ).astype(np.uint8)
        for i in range(n)
    ]


def frame_tuples(images: list[np.ndarray]) -> list[tuple[np.ndarray, int, str]]:
    return [(img, T0 + i * 66_666_667, f"cam_{i % 2}") for i, img in enumerate(images)]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_raw_round_trip(tmp_path: Path, storage: str, encoding: str) -> None:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (24, 40, 3), dtype=np.uint8) for _ in range(4)]
    if encoding == "mono8":  # grey frames survive mono8 exactly
        images = [np.repeat(img[:, :, :1], 3, axis=2) for img in images]
    written = frame_tuples(images)
    bag = tmp_path / "bag"
    assert write_image_bag(bag, written, storage=storage, encoding=encoding) == 4

    frames = list(read_image_bag(bag))
    assert len(frames) == 4
    for (img, stamp, frame_id), frame in zip(written, frames):
        np.testing.assert_array_equal(frame.rgb, img)
        assert frame.stamp_ns == stamp
        assert frame.log_time_ns == stamp
        assert frame.frame_id == frame_id
        assert frame.encoding == encoding
        assert frame.rgb.flags.writeable  # a fresh array, not a view into the bag's bytes
    suffix = ".mcap" if storage == "mcap" else ".db3"
    assert (bag / f"bag{suffix}").is_file()


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_compressed_round_trip_jpeg_close_png_exact(tmp_path: Path, storage: str) -> None:
    images = smooth_frames(3)
    written = frame_tuples(images)
    write_image_bag(tmp_path / "jpeg", written, compressed=True, storage=storage, jpeg_quality=95)
    write_image_bag(
        tmp_path / "png", written, compressed=True, compressed_format="png", storage=storage
    )

    jpeg = list(read_image_bag(tmp_path / "jpeg"))
    png = list(read_image_bag(tmp_path / "png"))
    assert [f.encoding for f in jpeg] == ["jpeg"] * 3
    assert [f.encoding for f in png] == ["png"] * 3
    for img, j, p in zip(images, jpeg, png):
        assert j.rgb.shape == img.shape
        assert np.abs(j.rgb.astype(int) - img.astype(int)).mean() < 4.0
        np.testing.assert_array_equal(p.rgb, img)
    assert [f.stamp_ns for f in jpeg] == [s for _, s, _ in written]
    info = bag_info(tmp_path / "jpeg")
    assert info["image_topics"] == ["/camera/image_raw/compressed"]
    assert info["storage"] == storage


def test_bag_is_read_by_rosbags_own_readers(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_image_bag(bag, frame_tuples(smooth_frames(3)), topic="/front/image")
    write_image_bag(
        tmp_path / "cbag", frame_tuples(smooth_frames(2)), topic="/front/image", compressed=True
    )

    meta = YAML(typ="safe").load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9
    assert meta["storage_identifier"] == "sqlite3"
    assert meta["message_count"] == 3
    [topic] = meta["topics_with_message_count"]
    assert topic["topic_metadata"]["name"] == "/front/image"
    assert topic["topic_metadata"]["type"] == "sensor_msgs/msg/Image"
    assert topic["topic_metadata"]["type_description_hash"].startswith("RIHS01_")
    assert topic["topic_metadata"]["offered_qos_profiles"][0]["reliability"] == "reliable"

    with Reader(bag) as reader:
        [conn] = reader.connections
        assert conn.msgtype == "sensor_msgs/msg/Image"
        assert conn.ext.offered_qos_profiles[0].reliability == QosReliability.RELIABLE
        assert reader.message_count == 3
    with AnyReader([bag]) as reader:  # types come from the bag's embedded definitions
        msgs = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()]
    assert [m.encoding for m in msgs] == ["rgb8"] * 3
    assert [m.header.frame_id for m in msgs] == ["cam_0", "cam_1", "cam_0"]
    assert msgs[1].header.stamp.sec * 10**9 + msgs[1].header.stamp.nanosec == T0 + 66_666_667
    with AnyReader([tmp_path / "cbag"]) as reader:
        assert reader.topics["/front/image/compressed"].msgtype == "sensor_msgs/msg/CompressedImage"
        formats = [reader.deserialize(r, c.msgtype).format for c, _, r in reader.messages()]
    assert formats == ["rgb8; jpeg compressed bgr8"] * 2


def _write_foreign_bag(path: Path, storage: StoragePlugin, images: dict[str, list]) -> None:
    """A bag written with rosbags alone: padded rows, other encodings, a non-image topic."""
    image_cls = TYPESTORE.types["sensor_msgs/msg/Image"]
    header_cls = TYPESTORE.types["std_msgs/msg/Header"]
    time_cls = TYPESTORE.types["builtin_interfaces/msg/Time"]
    string_cls = TYPESTORE.types["std_msgs/msg/String"]
    with Writer(path, version=9, storage_plugin=storage) as writer:
        log = writer.add_connection("/log", "std_msgs/msg/String", typestore=TYPESTORE)
        writer.write(log, T0, TYPESTORE.serialize_cdr(string_cls(data="hi"), "std_msgs/msg/String"))
        for topic, msgs in images.items():
            conn = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=TYPESTORE)
            for i, (encoding, rows, width, step, big) in enumerate(msgs):
                header = header_cls(stamp=time_cls(sec=10 + i, nanosec=5), frame_id="f")
                msg = image_cls(
                    header=header,
                    height=rows.shape[0],
                    width=width,
                    encoding=encoding,
                    is_bigendian=big,
                    step=step,
                    data=rows.reshape(-1),
                )
                writer.write(conn, T0 + i, TYPESTORE.serialize_cdr(msg, "sensor_msgs/msg/Image"))


def _padded(pixels: np.ndarray, pad: int) -> np.ndarray:
    """Rows of ``pixels`` (as bytes) followed by ``pad`` garbage bytes each: ``[H, step]``."""
    h = pixels.shape[0]
    raw = pixels.reshape(h, -1).view(np.uint8).reshape(h, -1)
    return np.concatenate([raw, np.full((h, pad), 0xAB, np.uint8)], axis=1)


@pytest.mark.parametrize("storage", [StoragePlugin.SQLITE3, StoragePlugin.MCAP])
def test_padded_step_and_encodings_from_foreign_bag(tmp_path: Path, storage: StoragePlugin) -> None:
    rng = np.random.default_rng(2)
    h, w = 5, 7
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((h, w, 1), 9, np.uint8)], axis=2)
    gray16 = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    msgs = [
        ("rgb8", _padded(rgb, 11), w, w * 3 + 11, 0),
        ("bgra8", _padded(bgra, 4), w, w * 4 + 4, 0),
        ("mono16", _padded(gray16.astype("<u2"), 2), w, w * 2 + 2, 0),
        ("mono16", _padded(gray16.astype(">u2"), 6), w, w * 2 + 6, 1),
    ]
    bag = tmp_path / "foreign"
    _write_foreign_bag(bag, storage, {"/cam/image": msgs})

    frames = list(read_image_bag(bag))  # the String topic is not a candidate
    assert [f.encoding for f in frames] == ["rgb8", "bgra8", "mono16", "mono16"]
    np.testing.assert_array_equal(frames[0].rgb, rgb)
    np.testing.assert_array_equal(frames[1].rgb, rgb)
    # the node's scaling (ego_ros.imaging): 255/65535, rounded
    gray8 = np.rint(gray16.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)
    expected_gray = np.repeat(gray8[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(frames[2].rgb, expected_gray)
    np.testing.assert_array_equal(frames[3].rgb, expected_gray)
    assert [f.stamp_ns for f in frames] == [(10 + i) * 10**9 + 5 for i in range(4)]
    assert [f.log_time_ns for f in frames] == [T0 + i for i in range(4)]


def test_topic_choice_errors_and_refusals(tmp_path: Path) -> None:
    img = np.zeros((2, 3, 3), np.uint8)
    msg = ("rgb8", img, 3, 9, 0)
    bag = tmp_path / "two"
    _write_foreign_bag(bag, StoragePlugin.SQLITE3, {"/a/image": [msg], "/b/image": [msg, msg]})

    with pytest.raises(BagError, match=r"2 image topics.*/a/image.*/b/image"):
        list(read_image_bag(bag))
    assert len(list(read_image_bag(bag, topic="/b/image"))) == 2
    with pytest.raises(BagError, match="no Image/CompressedImage topic '/log'"):
        list(read_image_bag(bag, topic="/log"))
    info = bag_info(bag)
    assert {t["name"]: t["count"] for t in info["topics"]} == {
        "/a/image": 1,
        "/b/image": 2,
        "/log": 1,
    }
    assert info["start_ns"] == T0 and info["end_ns"] == T0 + 1 and info["duration_ns"] == 1

    with pytest.raises(FileExistsError, match="already exists"):
        write_image_bag(bag, [(img, T0, "f")])
    with pytest.raises(BagError, match="uint8 array"):
        write_image_bag(tmp_path / "bad", [(img.astype(np.float32), T0, "f")])
    assert not (tmp_path / "bad").exists()  # nothing half-written left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two"]


def test_from_images_natural_order_and_timing(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    images = smooth_frames(3, 20, 30)
    for name, img in zip(["frame_2.png", "frame_10.png", "frame_1.png"], images):
        cv2.imwrite(str(folder / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("not an image")

    assert from_images([folder], tmp_path / "bag", fps=4.0, start_ns=T0) == 3
    frames = list(read_image_bag(tmp_path / "bag"))
    # natural order: frame_1, frame_2, frame_10
    for frame, expected in zip(frames, [images[2], images[0], images[1]]):
        np.testing.assert_array_equal(frame.rgb, expected)
    assert [f.stamp_ns - T0 for f in frames] == [0, 250_000_000, 500_000_000]
    assert {f.frame_id for f in frames} == {"camera"}


def test_from_video_resamples(tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    assert writer.isOpened()
    for i in range(10):
        writer.write(np.full((24, 32, 3), 20 * i, np.uint8))
    writer.release()

    assert from_video(video, tmp_path / "all", start_ns=T0) == 10
    assert from_video(video, tmp_path / "half", fps=5.0, start_ns=T0, compressed=True) == 5
    half = list(read_image_bag(tmp_path / "half"))
    assert [f.stamp_ns - T0 for f in half] == [i * 200_000_000 for i in range(5)]
    # the kept frames are 0, 2, 4, ...: brightness 0, 40, 80, ...
    means = [f.rgb.mean() for f in half]
    assert means == pytest.approx([40.0 * i for i in range(5)], abs=4.0)


# ----------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------


def _labels(bag: Path) -> BagLabels:
    ref = write_reference(bag, "Anna's mug", "view", smooth_frames(1)[0], "test")
    return BagLabels(
        topic="/camera/image_raw",
        concepts=(
            ConceptLabel("Anna's mug", (ref, RefView(index=1, source="bag frame"))),
            ConceptLabel("ball", (RefView(index=0),)),
        ),
        frames=(
            FrameLabel(T0, ("Anna's mug",)),
            FrameLabel(T0 + 66_666_667, ("Anna's mug", "ball")),
            FrameLabel(T0 + 133_333_334, ()),
        ),
        vqa=(
            VqaItem(T0, "Anna's mug", "What colour?", "B", {"A": "red", "B": "blue"}),
            VqaItem(T0, "ball", "Where is ball?", "On the table."),
        ),
        source=SourceInfo("test", seed=3, refs=1, details={"k": [1, 2]}),
    )


def test_labels_save_load_round_trip_and_references(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    images = smooth_frames(3)
    write_image_bag(bag, frame_tuples(images))
    labels = _labels(bag)
    assert labels.concepts[0].refs[0].file.startswith("ego_refs/anna-s-mug-")
    save_labels(bag, labels)

    loaded = load_labels(bag)
    assert loaded == labels
    assert loaded.vqa[0].multiple_choice and not loaded.vqa[1].multiple_choice
    views = reference_images(bag, loaded, "Anna's mug")
    np.testing.assert_array_equal(views[0], images[0])  # the PNG reference, exact
    np.testing.assert_array_equal(views[1], images[1])  # frame index 1 of the bag
    assert len(reference_images(bag, loaded, "Anna's mug", limit=1)) == 1
    # the extra files do not disturb rosbags
    with Reader(bag) as reader:
        assert reader.message_count == 3


def test_labels_validation_names_the_problem(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_image_bag(bag, frame_tuples(smooth_frames(3)))
    labels = _labels(bag)
    save_labels(bag, labels)
    doc = json.loads(labels_path(bag).read_text())

    def broken(mutate) -> str:
        bad = json.loads(json.dumps(doc))
        mutate(bad)
        labels_path(bag).write_text(json.dumps(bad))
        with pytest.raises(LabelsError) as err:
            load_labels(bag)
        return str(err.value)

    assert "frames[1].stamp_ns must be int" in broken(lambda d: d["frames"][1].update(stamp_ns="x"))
    assert "not in concepts" in broken(lambda d: d["frames"][0].update(concepts=["ghost"]))
    assert "version 9 is not supported" in broken(lambda d: d.update(version=9))
    assert "not one of the option letters" in broken(lambda d: d["vqa"][0].update(answer="C"))
    assert "not an ego labels file" in broken(lambda d: d.update(format="other"))
    assert "inside the bag folder" in broken(
        lambda d: d["concepts"]["ball"]["refs"][0].update(file="../x.png", index=None)
    )
    labels_path(bag).write_text(json.dumps(doc))
    (bag / labels.concepts[0].refs[0].file).unlink()
    with pytest.raises(LabelsError, match="is missing from bag folder"):
        load_labels(bag)
    with pytest.raises(FileNotFoundError, match="no ground truth"):
        load_labels(tmp_path)


# ----------------------------------------------------------------------------------------------
# Synthetic bags
# ----------------------------------------------------------------------------------------------

SMALL = {"num_frames": 24, "fps": 12.0, "width": 160, "height": 120}


def _colour_fraction(rgb: np.ndarray, concept: str) -> float:
    """Fraction of pixels with the object's dominant hue (muted backgrounds never reach it)."""
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    masks = {
        "kiro": r - np.maximum(g, b) > 60,
        "tavi": b - np.maximum(r, g) > 50,
        "nox": g - np.maximum(r, b) > 50,
    }
    return float(masks[concept].mean()) if rgb.size else 0.0


def test_synthetic_bag_is_deterministic_and_labels_match_frames(tmp_path: Path) -> None:
    a = make_synthetic_bag(tmp_path / "a", seed=7, **SMALL)
    b = make_synthetic_bag(tmp_path / "b", seed=7, **SMALL)
    c = make_synthetic_bag(tmp_path / "c", seed=8, **SMALL)
    assert a == b == load_labels(tmp_path / "a")
    assert a != c
    frames_a = list(read_image_bag(tmp_path / "a"))
    frames_b = list(read_image_bag(tmp_path / "b"))
    frames_c = list(read_image_bag(tmp_path / "c"))
    np.testing.assert_array_equal(frames_a[0].rgb, frames_b[0].rgb)
    assert not np.array_equal(frames_a[0].rgb, frames_c[0].rgb)
    assert (tmp_path / "a/ego_refs").is_dir()

    assert [f.stamp_ns for f in frames_a] == [f.stamp_ns for f in a.frames]
    assert frames_a[0].rgb.shape == (120, 160, 3)
    names = a.concept_names
    assert names == ["kiro", "tavi", "nox"]
    for name in names:  # every object enters and leaves the view
        present = [name in f.concepts for f in a.frames]
        assert any(present) and not all(present), name
    for frame, label in zip(frames_a, a.frames):
        for box in label.boxes:  # the object's colour fills a good part of its box
            x0, y0, x1, y1 = (int(round(v)) for v in box.xyxy)
            assert _colour_fraction(frame.rgb[y0:y1, x0:x1], box.concept) > 0.15, (label, box)
        for name in set(names) - set(label.concepts):  # absent: at most a sliver at the edge
            assert _colour_fraction(frame.rgb, name) < 0.05, (label.stamp_ns, name)

    assert len(a.vqa) == 3 and all(q.answer in q.options for q in a.vqa)
    assert all(q.concept in a.frame_by_stamp()[q.stamp_ns].concepts for q in a.vqa)
    assert a.captions and all(
        any(n in cap.captions[0] for n in a.frame_by_stamp()[cap.stamp_ns].concepts)
        for cap in a.captions
    )
    for name in names:
        views = reference_images(tmp_path / "a", a, name)
        assert len(views) == 5
        assert _colour_fraction(views[0], name) > 0.1


def test_synthetic_compressed_mcap(tmp_path: Path) -> None:
    labels = make_synthetic_bag(tmp_path / "s", seed=1, compressed=True, storage="mcap", **SMALL)
    assert labels.topic == "/camera/image_raw/compressed"
    info = bag_info(tmp_path / "s")
    assert info["storage"] == "mcap"
    assert info["image_topics"] == [labels.topic]
    assert info["message_count"] == SMALL["num_frames"]
    assert info["duration_ns"] == round((SMALL["num_frames"] - 1) * 1e9 / SMALL["fps"])
    with pytest.raises(ValueError, match="SyntheticConfig.num_frames=1"):
        make_synthetic_bag(tmp_path / "t", num_frames=1)

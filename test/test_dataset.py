"""MyVLM importer on a small generated folder of the same shape; the real copy when present."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from ego_ros.bag.dataset import DatasetError, bag_from_dataset, scan_myvlm, split_references
from ego_ros.bag.io import load_rgb, read_image_bag
from ego_ros.bag.labels import load_labels, reference_images

# concept -> (dominant RGB colour, photo file names)
CONCEPTS = {
    "red_cup": ((200, 40, 40), [f"red_cup_{i}.jpg" for i in range(1, 8)]),
    "blue_toy": ((40, 60, 200), [f"blue_toy_{i}.jpg" for i in range(1, 7)] + ["blue_toy_7.png"]),
    "bo": ((40, 170, 60), [f"{i}.jpg" for i in range(6)]),  # MyVLM's bare-number names
}


def _photo(colour: tuple[int, int, int], index: int) -> np.ndarray:
    """A smooth image dominated by ``colour`` with a per-photo pattern, 96x72 (RGB)."""
    yy, xx = np.mgrid[0:72, 0:96]
    base = np.array(colour, np.float32)[None, None, :]
    ramp = (np.sin(xx / (6.0 + index) + yy / 9.0) * 25.0)[:, :, None]
    return np.clip(base + ramp, 0, 255).astype(np.uint8)


def make_fake_myvlm(root: Path, concepts: dict = CONCEPTS) -> Path:
    root.mkdir(parents=True)
    for name, (colour, files) in concepts.items():
        folder = root / name
        folder.mkdir()
        for i, fname in enumerate(files):
            cv2.imwrite(str(folder / fname), cv2.cvtColor(_photo(colour, i), cv2.COLOR_RGB2BGR))
        captions = {f: [f"{name} on a desk, photo {i}"] for i, f in enumerate(files)}
        (folder / "captions.json").write_text(json.dumps(captions, indent=1))
        if name == "red_cup":
            vqa = {
                f: [
                    ["What color is sks?", "sks in the image is red."],
                    ["Is sks's handle up?", "no"],
                ]
                for f in files
            }
            (folder / "additional_llava_vqa_data.json").write_text(json.dumps(vqa))
    (root / "empty_folder").mkdir()  # no photos: not a concept
    (root / "README.txt").write_text("a stray file at the root")
    return root


@pytest.fixture()
def fake_root(tmp_path: Path) -> Path:
    return make_fake_myvlm(tmp_path / "myvlm")


def test_scan_reads_the_layout(fake_root: Path) -> None:
    concepts = {c.name: c for c in scan_myvlm(fake_root)}
    assert sorted(concepts) == ["blue_toy", "bo", "red_cup"]
    assert [p.name for p in concepts["bo"].photos] == [f"{i}.jpg" for i in range(6)]
    assert concepts["blue_toy"].photos[-1].name == "blue_toy_7.png"
    assert concepts["red_cup"].vqa["red_cup_3.jpg"][0] == (
        "What color is sks?",
        "sks in the image is red.",
    )
    assert concepts["bo"].captions["2.jpg"] == ("bo on a desk, photo 2",)
    assert concepts["bo"].vqa == {}


@pytest.mark.parametrize("refs", [1, 5])
def test_split_is_deterministic_and_never_leaks(fake_root: Path, refs: int) -> None:
    first = split_references(fake_root, refs, seed=3)
    assert first == split_references(fake_root, refs, seed=3)
    for name, (references, queries) in first.items():
        all_photos = {fake_root / name / f for f in CONCEPTS[name][1]}
        assert len(references) == refs
        assert not set(references) & set(queries)
        assert set(references) | set(queries) == all_photos
        assert len(queries) == len(all_photos) - refs
    splits = {
        tuple(tuple(p.name for p in split_references(fake_root, refs, seed=s)["red_cup"][0]))
        for s in range(8)
    }
    assert len(splits) > 1  # the seed matters


def test_split_of_a_concept_ignores_other_folders(fake_root: Path, tmp_path: Path) -> None:
    before = split_references(fake_root, 1, seed=0)
    more = tmp_path / "more"
    shutil.copytree(fake_root, more)
    extra = more / "aaa_first"
    extra.mkdir()
    for i in range(3):
        cv2.imwrite(str(extra / f"{i}.jpg"), _photo((90, 90, 90), i))
    after = split_references(more, 1, seed=0)
    for name in CONCEPTS:
        assert [p.name for p in after[name][0]] == [p.name for p in before[name][0]]


def test_split_errors(fake_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"'bo' has 6 photos; --views 6 needs at least 7"):
        split_references(fake_root, 6, seed=0)
    with pytest.raises(DatasetError, match="views must be an integer >= 1"):
        split_references(fake_root, 0, seed=0)
    with pytest.raises(DatasetError, match="unknown dataset layout 'coco'"):
        split_references(fake_root, 1, layout="coco")
    (fake_root / "bo" / "captions.json").write_text('{"0.jpg": "not a list"}')
    with pytest.raises(DatasetError, match=r"captions.json: captions of '0.jpg' must be a list"):
        scan_myvlm(fake_root)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DatasetError, match="no concept folders with images"):
        scan_myvlm(tmp_path / "nothing")


def test_bag_from_dataset_labels_match_frames(fake_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "bag"
    labels = bag_from_dataset(fake_root, out, refs=1, seed=5, fps=4.0, max_side=64)
    assert load_labels(out) == labels
    splits = split_references(fake_root, 1, seed=5)
    total = sum(len(files) for _, files in CONCEPTS.values())
    assert len(labels.frames) == total - 3

    frames = list(read_image_bag(out))
    assert [f.stamp_ns for f in frames] == [f.stamp_ns for f in labels.frames]
    assert np.diff([f.stamp_ns for f in frames]).tolist() == [250_000_000] * (len(frames) - 1)
    assert {f.encoding for f in frames} == {"jpeg"}
    seen_concepts = []
    for frame, label in zip(frames, labels.frames):
        concept, photo_name = label.source.split("/")
        assert label.concepts == (concept,)
        photo = fake_root / concept / photo_name
        assert photo not in splits[concept][0]  # never a reference
        expected = load_rgb(photo, max_side=64)
        assert frame.rgb.shape == expected.shape == (48, 64, 3)
        assert np.abs(frame.rgb.astype(int) - expected.astype(int)).mean() < 6.0
        seen_concepts.append(concept)
    assert seen_concepts != sorted(seen_concepts)  # shuffled, not grouped by concept

    by_stamp = labels.frame_by_stamp()
    assert len(labels.captions) == len(labels.frames)
    for cap in labels.captions:
        concept = by_stamp[cap.stamp_ns].concepts[0]
        assert cap.captions[0].startswith(f"{concept} on a desk")
    red_frames = [f for f in labels.frames if f.concepts == ("red_cup",)]
    assert len(labels.vqa) == 2 * len(red_frames)
    assert {q.question for q in labels.vqa} == {
        "What color is red_cup?",
        "Is red_cup's handle up?",
    }
    assert all(q.options is None and not q.multiple_choice for q in labels.vqa)
    assert {q.answer for q in labels.vqa} == {"red_cup in the image is red.", "no"}

    assert labels.source.dataset == "myvlm" and labels.source.refs == 1
    assert labels.source.seed == 5
    for concept, (references, _) in splits.items():
        [ref] = labels.concept(concept).refs
        assert ref.source == f"myvlm:{concept}/{references[0].name}"
        [view] = reference_images(out, labels, concept)
        assert view.shape == (48, 64, 3)  # larger than max_side: re-encoded smaller
        np.testing.assert_allclose(
            view.mean(axis=(0, 1)), load_rgb(references[0], 64).mean(axis=(0, 1)), atol=3
        )


def test_bag_from_dataset_is_deterministic_and_copies_small_refs(
    fake_root: Path, tmp_path: Path
) -> None:
    a = bag_from_dataset(fake_root, tmp_path / "a", refs=5, seed=1, compressed=False)
    b = bag_from_dataset(fake_root, tmp_path / "b", refs=5, seed=1, compressed=False)
    c = bag_from_dataset(fake_root, tmp_path / "c", refs=5, seed=2, compressed=False)
    assert a.frames == b.frames and a.concepts == b.concepts
    assert a.frames != c.frames
    assert a.topic == "/camera/image_raw"
    frames = list(read_image_bag(tmp_path / "a"))
    assert len(frames) == len(a.frames) == 2 + 2 + 1
    for frame, label in zip(frames, a.frames):  # raw frames: exact decoded photo pixels
        np.testing.assert_array_equal(frame.rgb, load_rgb(fake_root / label.source))
    for concept in CONCEPTS:
        refs = a.concept(concept).refs
        assert len(refs) == 5
        for ref in refs:  # photos within max_side are copied byte for byte
            original = fake_root / ref.source.split(":", 1)[1]
            assert (tmp_path / "a" / ref.file).read_bytes() == original.read_bytes()
    with pytest.raises(FileExistsError):
        bag_from_dataset(fake_root, tmp_path / "a", refs=1)

"""Dataset importers on tiny copies of each published layout (test/dataset_fixtures.py).

Each layout is imported into a real rosbag2 bag, which stock ``rosbags`` opens and decodes; the
labels are checked against what the fixture's files say (concepts, groups, VQA options and
answers, placeholders). The split rule is checked to depend only on file names and seed, to be
recorded with the file names and to be reusable; old label files still load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dataset_fixtures import (
    RAP_PAIRS,
    TIM_PAIRS,
    TIM_SINGLE_TEST,
    YOLLAVA_CONCEPTS,
    YOLLAVA_TEST,
    make_rap_multi,
    make_this_is_my,
    make_yollava,
    make_yollava_text_qa,
    tiny_image,
)
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from ego_ros.bag.importers import DatasetError, bag_from_dataset
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
)

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)


def _find_myvlm() -> Path:
    """``EGO_ROS_MYVLM``, else ``shared/datasets/myvlm`` beside the checkout or a folder above."""
    if os.environ.get("EGO_ROS_MYVLM"):
        return Path(os.environ["EGO_ROS_MYVLM"])
    repo = Path(__file__).resolve().parents[1]
    for folder in (repo, *repo.parents):
        if (folder / "shared" / "datasets" / "myvlm").is_dir():
            return folder / "shared" / "datasets" / "myvlm"
    return repo / "shared" / "datasets" / "myvlm"


MYVLM = _find_myvlm()


def read_with_rosbags(bag: Path, labels: BagLabels) -> None:
    """Stock rosbags opens the bag; its messages decode to the labelled frames, in order."""
    with Reader(bag) as reader:
        assert reader.message_count == len(labels.frames)
        [conn] = [c for c in reader.connections if c.topic == labels.topic]
        stamps = []
        for connection, _, raw in reader.messages(connections=[conn]):
            msg = TYPESTORE.deserialize_cdr(raw, connection.msgtype)
            stamps.append(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
        assert connection.msgtype == "sensor_msgs/msg/CompressedImage"
        assert msg.format.endswith("jpeg compressed bgr8") and len(msg.data) > 0
    assert stamps == [f.stamp_ns for f in labels.frames]


def ref_names(labels: BagLabels) -> dict[str, list[str]]:
    return {c.name: [r.source for r in c.refs] for c in labels.concepts}


# ----------------------------------------------------------------------------------------------
# Yo'LLaVA
# ----------------------------------------------------------------------------------------------


def test_yollava_train_test_visual_and_text_qa(tmp_path: Path) -> None:
    repo = make_yollava(tmp_path / "YoLLaVA")
    text_qa = make_yollava_text_qa(tmp_path / "RAP-MLLM" / "eval" / "yollava-text-only-qa.json")
    labels = bag_from_dataset(repo, tmp_path / "bag", layout="yollava", views=5, seed=0,
                              text_qa=text_qa, max_side=None)
    assert load_labels(tmp_path / "bag") == labels
    read_with_rosbags(tmp_path / "bag", labels)

    assert labels.concept_names == sorted(YOLLAVA_CONCEPTS)
    for concept, sources in ref_names(labels).items():  # references: own train images only
        assert len(sources) == 5
        assert all(s.startswith(f"yollava:train/{concept}/") for s in sources)
        assert labels.split.references[concept] == tuple(s.split(":", 1)[1] for s in sources)
    assert "train" in labels.split.rule and labels.split.views == 5
    # queries: every test image, positive for its own concept
    assert sorted(f.source for f in labels.frames) == sorted(
        f"test/{c}/{n}.png" for c, ns in YOLLAVA_TEST.items() for n in ns)
    assert all(f.concepts == (f.source.split("/")[1],) and f.group == "" for f in labels.frames)

    by_source = {f.stamp_ns: f.source for f in labels.frames}
    vqa = {by_source[q.stamp_ns]: q for q in labels.vqa}
    assert len(labels.vqa) == 6 and len(vqa) == 6
    q = vqa["test/shiba-gray/10.png"]
    assert (q.question, q.options, q.answer) == (
        "What animal does shiba-gray resemble?", {"A": "Mouse", "B": "Dog"}, "B")
    assert q.concepts == ("shiba-gray",) and q.concept == "shiba-gray"
    assert q.source == "yollava-visual-qa.json"
    assert vqa["test/shiba-gray/0.png"].question == \
        "What is the pattern on the top of shiba-gray's head?"
    assert not any("sks" in q.question for q in labels.vqa)
    duck = vqa["test/brown-duck/0.png"]  # the published "B" (Crocodile) is corrected
    assert duck.options == {"A": "Duck", "B": "Crocodile"} and duck.answer == "A"
    assert labels.source.details["corrections"] == ["brown-duck/0.png: B -> A"]

    assert [(t.concepts, t.question, t.options, t.answer) for t in labels.text_qa] == [
        (("bo",), "Is bo a dog or a cat?", {"A": "Dog", "B": "Cat"}, "A"),
        (("bo",), "What is bo's breed?", {"A": "Corgi", "B": "Shiba inu"}, "B"),
        (("brown-duck",), "Is brown-duck shaped like a rectangle?", {"A": "No", "B": "Yes"},
         "A")]

    kept = bag_from_dataset(repo / "yollava-data", tmp_path / "bag_kept", layout="yollava",
                            views=1, fix_known_errors=False)
    assert [q.answer for q in kept.vqa if q.question.startswith("What type of animal")] == ["B"]
    assert kept.source.details["corrections"] == [] and kept.text_qa == ()


def test_yollava_errors_name_the_file_and_entry(tmp_path: Path) -> None:
    repo = make_yollava(tmp_path / "YoLLaVA")
    with pytest.raises(DatasetError, match=r"'bo' has 6 candidate reference image\(s\); "
                                           r"--views 7 needs at least 7"):
        bag_from_dataset(repo, tmp_path / "b1", layout="yollava", views=7)
    qa = repo / "yollava-data" / "yollava-visual-qa.json"
    doc = json.loads(qa.read_text())
    doc["bo"]["./yollava-data/test/bo/1.png"]["correct_answer"] = "C"
    qa.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"correct_answer 'C' is not one of the option letters"):
        bag_from_dataset(repo, tmp_path / "b2", layout="yollava", views=1)
    doc["bo"] = {"./yollava-data/test/bo/9.png": doc["shiba-gray"]["./yollava-data/test/"
                                                                    "shiba-gray/3.png"]}
    qa.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"image './yollava-data/test/bo/9.png' does not exist"):
        bag_from_dataset(repo, tmp_path / "b3", layout="yollava", views=1)
    assert not (tmp_path / "b3").exists()
    with pytest.raises(DatasetError, match="is not a Yo'LLaVA folder: it has no train or test"):
        bag_from_dataset(tmp_path, tmp_path / "b4", layout="yollava", views=1)


# ----------------------------------------------------------------------------------------------
# This-Is-My-Img
# ----------------------------------------------------------------------------------------------


def test_this_is_my_single_keeps_groups_and_targets(tmp_path: Path) -> None:
    root = make_this_is_my(tmp_path / "This-is-My-Img")
    labels = bag_from_dataset(root, tmp_path / "bag", layout="this-is-my", views=1, seed=4)
    read_with_rosbags(tmp_path / "bag", labels)
    assert labels.concept_names == ["Alexs hat", "Reynards keyboard", "Reynards work chair"]
    assert all(r.startswith(f"this-is-my:train/{c}/") for c, rs in ref_names(labels).items()
               for r in rs)
    frames = {f.source: f for f in labels.frames}
    assert len(frames) == sum(len(files) for *_, files in TIM_SINGLE_TEST)
    hat = frames["test/Positive/Alexs hat-hat/0.png"]
    assert (hat.concepts, hat.group, hat.target) == (("Alexs hat",), "positive", "Alexs hat")
    double = frames["test/Positive/Reynards keyboard-keyboard/1_double.png"]
    assert double.concepts == ("Reynards keyboard", "Reynards work chair")
    for source, group in (("test/Fake/Alexs hat-hat/0.png", "fake"),
                          ("test/Negative (Hard)/Reynards keyboard-keyboard/0.png",
                           "negative-hard"),
                          ("test/Negative (Other)/Alexs hat-hat/0.png", "negative-other")):
        frame = frames[source]
        assert frame.concepts == () and frame.group == group  # a negative of that kind ...
        assert frame.target == source.split("/")[2].split("-")[0]  # ... for its labelled concept
    summary = {g: sum(1 for f in labels.frames if f.group == g)
               for g in ("positive", "fake", "negative-hard", "negative-other")}
    assert summary == {"positive": 5, "fake": 1, "negative-hard": 2, "negative-other": 1}

    by_stamp = {f.stamp_ns: f.source for f in labels.frames}
    assert sorted((by_stamp[q.stamp_ns], q.question, q.answer) for q in labels.vqa) == [
        ("test/Negative (Hard)/Reynards keyboard-keyboard/1.png",
         "Is Reynards keyboard in the image?", "B"),
        ("test/Positive/Alexs hat-hat/0.png", "What color is Alexs hat?", "A")]
    assert labels.source.details["vqa_skipped_reference_images"] == [
        "this-is-my-visual-qa.json:./train/Alexs hat/0.png"]

    tiny_image(root / "Single-concept" / "test" / "Positive" / "Zaks dog-dog" / "0.png", "z")
    with pytest.raises(DatasetError, match=r"label 'Zaks dog' is not a concept of the train"):
        bag_from_dataset(root, tmp_path / "b1", layout="this-is-my", views=1)
    shutil.rmtree(root / "Single-concept" / "test" / "Positive" / "Zaks dog-dog")
    tiny_image(root / "Single-concept" / "test" / "Blurry" / "Alexs hat-hat" / "0.png", "b")
    with pytest.raises(DatasetError, match=r"Blurry: unknown test group; expected one of Positive"):
        bag_from_dataset(root, tmp_path / "b2", layout="this-is-my", views=1)


def test_this_is_my_multi_pairs_and_multi_concept_vqa(tmp_path: Path) -> None:
    root = make_this_is_my(tmp_path / "This-is-My-Img")
    labels = bag_from_dataset(root, tmp_path / "bag", layout="this-is-my", part="multi",
                              views=5)
    read_with_rosbags(tmp_path / "bag", labels)
    assert labels.concept_names == ["Alex", "Alexs hat", "Nikki", "Nikkis car"]
    assert sorted((f.source, f.concepts) for f in labels.frames) == sorted(
        (f"test/{pair}/{name}", tuple(pair.split("_and_")))
        for pair, files in TIM_PAIRS.items() for name in files)
    open_q, choice_q = sorted(labels.vqa, key=lambda q: q.multiple_choice)
    assert open_q.concepts == ("Alex", "Alexs hat") and open_q.concept == "Alex"
    assert (open_q.question, open_q.answer, open_q.options) == (
        "Where are Alex and Alexs hat?", "Alex and Alexs hat are in a park.", None)
    assert choice_q.concepts == ("Nikki", "Nikkis car") and choice_q.answer == "A"
    assert choice_q.source == "this-is-my-visual-qa-multi-concept.json"
    doc = json.loads(labels_path(tmp_path / "bag").read_text())
    assert doc["version"] == 2
    assert sorted(tuple(q["concepts"]) for q in doc["vqa"]) == [
        ("Alex", "Alexs hat"), ("Nikki", "Nikkis car")]


# ----------------------------------------------------------------------------------------------
# RAP multi-concept
# ----------------------------------------------------------------------------------------------


def test_rap_multi_pairs_index_and_concept_database(tmp_path: Path) -> None:
    data, db = make_rap_multi(tmp_path / "RAP-MLLM")
    labels = bag_from_dataset(data, tmp_path / "bag", layout="rap-multi", views=1,
                              references=db)
    read_with_rosbags(tmp_path / "bag", labels)
    assert labels.concept_names == ["Anya", "Baby_Q", "Bond", "Bull_dog"]
    assert ref_names(labels)["Baby_Q"] == ["rap-multi:Baby_Q.png"]  # relative to --references
    assert labels.concept("Anya").description == "Anya is a character."
    assert len(labels.frames) == sum(RAP_PAIRS.values())
    for frame in labels.frames:  # names with underscores survive the pair split
        pair = frame.source.split("/")[0]
        assert frame.concepts == tuple(pair.split("_and_"))
    assert labels.source.details["unindexed_images"] == 1
    assert labels.source.details["index"].endswith("multi_concept_test.json")

    with pytest.raises(DatasetError, match="needs reference views from elsewhere"):
        bag_from_dataset(data, tmp_path / "b1", layout="rap-multi", views=1)
    with pytest.raises(DatasetError, match=r"'Anya' has 1 candidate reference image\(s\); "
                                           r"--views 5 needs at least 5"):
        bag_from_dataset(data, tmp_path / "b2", layout="rap-multi", views=5, references=db)
    index = json.loads((data / "multi_concept_test.json").read_text())
    index["./data/query-image-2-concepts/Anya_and_Bond/Anya_and_Bond_9.jpg"] = ["<Anya>"]
    (data / "multi_concept_test.json").write_text(json.dumps(index))
    with pytest.raises(DatasetError, match=r"Anya_and_Bond_9.jpg' is not in"):
        bag_from_dataset(data, tmp_path / "b3", layout="rap-multi", views=1, references=db)
    with pytest.raises(DatasetError, match="layout 'myvlm' does not take references"):
        bag_from_dataset(data, tmp_path / "b4", layout="myvlm", views=1, references=db)


# ----------------------------------------------------------------------------------------------
# The split: fixed, recorded, reusable
# ----------------------------------------------------------------------------------------------


def _rule(seed: int, concept: str, names: list[str], views: int) -> list[str]:
    """The documented rule, computed here independently of the code under test."""
    return sorted(names, key=lambda n: hashlib.sha256(
        f"ego-views/v1/{seed}/{concept}/{n}".encode()).hexdigest())[:views]


def test_split_depends_only_on_files_and_seed_and_is_recorded(tmp_path: Path) -> None:
    repo = make_yollava(tmp_path / "a" / "YoLLaVA")
    first = bag_from_dataset(repo, tmp_path / "bag1", layout="yollava", views=5, seed=3)
    for concept, count in YOLLAVA_CONCEPTS.items():
        expected = _rule(3, concept, [f"{n}.png" for n in range(count)], 5)
        assert [Path(s).name for s in first.split.references[concept]] == expected
    # another user: same files, copied elsewhere, written in another order, one stray concept
    other = tmp_path / "b" / "elsewhere"
    shutil.copytree(repo / "yollava-data", other, ignore=shutil.ignore_patterns("*.json"))
    for png in sorted((other / "train").rglob("*.png"), reverse=True):
        png.write_bytes(png.read_bytes())
    for n in range(6):
        tiny_image(other / "train" / "aaa" / f"{n}.png", f"aaa{n}")
    second = bag_from_dataset(other, tmp_path / "bag2", layout="yollava", views=5, seed=3)
    assert {c: second.split.references[c] for c in YOLLAVA_CONCEPTS} == \
        dict(first.split.references)
    assert [f.source for f in second.frames if "aaa" not in f.source] == \
        [f.source for f in first.frames]
    seeds = {bag_from_dataset(repo, tmp_path / f"s{s}", layout="yollava", views=1,
                              seed=s).split.references["shiba-gray"] for s in range(6)}
    assert len(seeds) > 1  # the seed matters
    # the recorded split is reused as is, whatever the seed
    again = bag_from_dataset(repo, tmp_path / "bag3", layout="yollava", split_from=tmp_path /
                             "bag1", seed=11)
    assert {c: again.split.references[c] for c in YOLLAVA_CONCEPTS} == \
        dict(first.split.references)
    assert again.split.rule.startswith("recorded")
    with pytest.raises(DatasetError, match="has no reference views for concept 'aaa'"):
        bag_from_dataset(other, tmp_path / "bag4", layout="yollava",
                         split_from=labels_path(tmp_path / "bag1"))


def test_cli_from_dataset_end_to_end(tmp_path: Path) -> None:
    repo = make_yollava(tmp_path / "YoLLaVA")
    text_qa = make_yollava_text_qa(tmp_path / "text-only.json")
    cmd = [sys.executable, "-m", "ego_ros.cli.main", "bag", "from-dataset", str(repo),
           "--layout", "yollava", "--views", "1", "--seed", "2", "--text-qa", str(text_qa),
           "--out", str(tmp_path / "bag")]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["bag"] == str(tmp_path / "bag") and out["compressed"] is True
    assert out["frames"] == sum(len(ns) for ns in YOLLAVA_TEST.values())
    assert out["labels"]["concepts"] == {c: 1 for c in sorted(YOLLAVA_CONCEPTS)}
    assert (out["labels"]["vqa"], out["labels"]["text_qa"]) == (6, 3)
    assert out["labels"]["split"].startswith("sha256(ego-views/v1/")
    labels = load_labels(tmp_path / "bag")
    assert labels.source.dataset == "yollava" and labels.source.seed == 2
    read_with_rosbags(tmp_path / "bag", labels)

    run = subprocess.run([*cmd[:5], str(tmp_path), "--layout", "rap-multi", "--views", "1",
                          "--out", str(tmp_path / "bag2")], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "no pair folders" in run.stderr


# ----------------------------------------------------------------------------------------------
# Labels: multi-concept questions, old files
# ----------------------------------------------------------------------------------------------


def test_vqa_items_name_all_their_concepts_and_old_labels_load(tmp_path: Path) -> None:
    single = VqaItem(5, "mug", "Where is mug?", "A", {"A": "x", "B": "y"})
    assert single.concepts == ("mug",) and single.concept == "mug"
    pair = VqaItem(5, "", "Are A and B here?", "yes", concepts=("A", "B"))
    assert pair.concept == "A" and pair.concepts == ("A", "B")
    with pytest.raises(LabelsError, match="is not the first of concepts"):
        VqaItem(5, "B", "q?", "a", concepts=("A", "B"))
    with pytest.raises(LabelsError, match="names no concept"):
        VqaItem(5, "", "q?", "a")
    ref = RefView(index=0)
    with pytest.raises(LabelsError, match=r"names unknown concepts \['B'\]"):
        BagLabels("/t", (ConceptLabel("A", (ref,)),), (FrameLabel(5, ("A",)),),
                  SourceInfo("x"), vqa=(pair,))

    repo = make_yollava(tmp_path / "YoLLaVA")
    bag = tmp_path / "bag"
    labels = bag_from_dataset(repo, bag, layout="yollava", views=1)
    doc = json.loads(labels_path(bag).read_text())
    v1 = {k: v for k, v in doc.items() if k not in ("split", "text_qa")}  # as version 1 wrote it
    v1["version"] = 1
    v1["vqa"] = [{"stamp_ns": q["stamp_ns"], "concept": q["concepts"][0],
                  "question": q["question"], "options": q["options"], "answer": q["answer"]}
                 for q in doc["vqa"]]
    v1["frames"] = [{k: v for k, v in f.items() if k not in ("group", "target")}
                    for f in doc["frames"]]
    labels_path(bag).write_text(json.dumps(v1))
    old = load_labels(bag)
    assert old.split is None and old.version == 2
    assert [(q.concepts, q.question, q.answer) for q in old.vqa] == \
        [(q.concepts, q.question, q.answer) for q in labels.vqa]
    assert old.frames == labels.frames and old.concepts == labels.concepts


# ----------------------------------------------------------------------------------------------
# The real MyVLM copy, when this machine has it
# ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(not MYVLM.is_dir(), reason=f"no MyVLM copy at {MYVLM}")
def test_real_myvlm_copy_imports_with_a_recorded_split(tmp_path: Path) -> None:
    labels = bag_from_dataset(MYVLM, tmp_path / "bag", layout="myvlm", views=5, seed=0,
                              max_side=64)
    concepts = sorted(p.name for p in MYVLM.iterdir() if p.is_dir())
    assert labels.concept_names == concepts
    photos = sum(1 for c in concepts for p in (MYVLM / c).iterdir() if p.suffix == ".jpg")
    assert len(labels.frames) == photos - 5 * len(concepts)
    queried = {f.source for f in labels.frames}
    for concept in concepts:
        chosen = labels.split.references[concept]
        assert len(chosen) == 5 and not set(chosen) & queried
        names = [p.name for p in (MYVLM / concept).iterdir() if p.suffix == ".jpg"]
        assert [Path(c).name for c in chosen] == _rule(0, concept, names, 5)
    assert labels.vqa and all(q.options is None and "sks" not in q.question for q in labels.vqa)
    assert len(labels.captions) == len(labels.frames)


# ----------------------------------------------------------------------------------------------
# Offline evaluation asks a multi-concept question with every concept it names
# ----------------------------------------------------------------------------------------------


def test_offline_vqa_puts_all_of_a_questions_concepts_in_context(tmp_path: Path, tiny_backends,
                                                                 one_torch_thread) -> None:
    from ego_ros.core.engine import EgoEngine, EngineConfig
    from ego_ros.core.introduce import IntroduceConfig
    from ego_ros.core.store import MemoryStore
    from ego_ros.eval.offline import EvalConfig, run_offline

    class Recording(EgoEngine):
        """The real engine; it notes which concepts each question was asked with."""

        asked: list[tuple[str, tuple[str, ...]]] = []

        def ask(self, question, frames, clip=False, concepts=None, options=None):
            self.asked.append((question, tuple(concepts or ())))
            return super().ask(question, frames, clip=clip, concepts=concepts, options=options)

    root = make_this_is_my(tmp_path / "This-is-My-Img")
    bag = tmp_path / "bag"
    labels = bag_from_dataset(root, bag, layout="this-is-my", part="multi", views=1)
    backend = tiny_backends["qwen2_5_vl"]
    short = EngineConfig(max_new_tokens=4, introduce=IntroduceConfig(
        area_max_new_tokens=4, keywords_max_new_tokens=6))  # the wiring, not the answers
    engine = Recording(backend, MemoryStore(tmp_path / "store", backend.fingerprint), short)
    records = run_offline(engine, bag, EvalConfig(refs=1, tasks=("vqa",), progress=False))
    assert len(records.vqa) == len(labels.vqa) == 2
    assert sorted(engine.asked) == [
        ("Where are Alex and Alexs hat?", ("Alex", "Alexs hat")),
        ("Who is next to the car?", ("Nikki", "Nikkis car"))]

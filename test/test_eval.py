"""Offline evaluation on a small synthetic bag with the tiny Qwen2.5-VL, and the report.

The tiny model's weights are random, so the figures themselves mean nothing; what is checked is
the protocol's wiring: which queries were asked about which concepts, that the aggregated
figures equal :mod:`ego_ros.eval.metrics` applied to the recorded predictions, and that the
report folder holds what it promises (strict JSON, Markdown linking real PNG pictures).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from ego_ros.bag.io import from_images
from ego_ros.bag.labels import load_labels
from ego_ros.bag.synthetic import make_synthetic_bag
from ego_ros.cli import eval as eval_cli
from ego_ros.cli.main import main
from ego_ros.core.engine import EgoEngine
from ego_ros.core.store import MemoryStore
from ego_ros.eval import offline
from ego_ros.eval.metrics import (
    caption_recall,
    labels_from_sets,
    recognition_metrics,
    vqa_accuracy,
)
from ego_ros.eval.offline import EvalConfig, run_offline
from ego_ros.eval.report import (
    PLOT_FILES,
    CaptionRecord,
    EvalRecords,
    RecognitionRecord,
    VqaRecord,
    compute_metrics,
    summary,
    write_report,
)

FAMILY = "qwen2_5_vl"


def _no_constants(name: str) -> None:
    raise AssertionError(f"report.json holds the non-standard JSON constant {name}")


def read_strict_json(path: Path) -> dict:
    return json.loads(path.read_text("utf-8"), parse_constant=_no_constants)


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "bag"
    make_synthetic_bag(out, seed=0, num_frames=6, width=320, height=240, compressed=True,
                       refs_per_concept=2)
    return out


@pytest.fixture(scope="module")
def cli_run(bag: Path, tiny_model_dirs: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One ``ego-ros eval`` run: its stdout summary, report folder and stderr."""
    out = tmp_path_factory.mktemp("report") / "report"
    argv = ["eval", "--bag", str(bag), "--model", str(tiny_model_dirs[FAMILY]), "--out",
            str(out), "--refs", "1", "--device", "cpu", "--dtype", "float32"]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    assert code == 0, stderr.getvalue()
    return {"summary": json.loads(stdout.getvalue()), "out": out, "argv": argv}


# ----------------------------------------------------------------------------------------------
# The command, end to end
# ----------------------------------------------------------------------------------------------


def test_summary_has_the_figures(cli_run: dict, bag: Path) -> None:
    s = cli_run["summary"]
    labels = load_labels(bag)
    assert s["report_dir"] == str(cli_run["out"])
    assert s["mode"] == "offline" and s["frames_evaluated"] == len(labels.frames) == 6
    assert s["concepts"] == 3
    for key in ("precision", "recall", "f1"):
        assert 0.0 <= s["recognition"][key] <= 1.0
    assert set(s["vqa"]) == {"accuracy", "questions", "open_ended"}
    assert s["vqa"]["questions"] == len(labels.vqa) > 0
    assert 0.0 <= s["vqa"]["accuracy"] <= 1.0
    assert s["caption"]["captions"] == len(labels.captions) > 0
    assert 0.0 <= s["caption"]["recall"] <= 1.0
    assert 0.0 <= s["latency_ms"]["p50"] <= s["latency_ms"]["p90"] <= s["latency_ms"]["p99"]


def test_report_folder(cli_run: dict) -> None:
    out: Path = cli_run["out"]
    report = read_strict_json(out / "report.json")
    assert report["recognition"]["f1"] == pytest.approx(cli_run["summary"]["recognition"]["f1"])
    assert report["details"]["model_note"].startswith("tiny model with RANDOM weights")
    assert report["teach"] == {c: {"views": 1, "tokens": report["teach"][c]["tokens"],
                                   "elapsed_s": report["teach"][c]["elapsed_s"]}
                               for c in ("kiro", "tavi", "nox")}
    assert (out / "store" / "manifest.json").is_file()  # taught into a fresh store in OUT
    markdown = (out / "report.md").read_text("utf-8")
    assert "| precision | recall | F1 | mean AP |" in markdown
    for name in PLOT_FILES.values():
        assert f"]({name})" in markdown
        picture = cv2.imread(str(out / name))
        assert picture is not None, f"{name} is not a readable image"
        assert picture.shape[0] > 200 and picture.shape[1] > 300
        assert picture.std() > 5, f"{name} is blank"


def test_aggregation_equals_metrics_on_recorded_predictions(cli_run: dict, bag: Path) -> None:
    out: Path = cli_run["out"]
    report = read_strict_json(out / "report.json")
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    labels = load_labels(bag)
    concepts = labels.concept_names
    rec = [r for r in rows if r["task"] == "recognition"]
    by_stamp = labels.frame_by_stamp()
    # every labelled frame was asked about every concept, with a score
    assert [r["stamp_ns"] for r in rec] == [f.stamp_ns for f in labels.frames]
    for row in rec:
        assert sorted(row["truth"]) == sorted(by_stamp[row["stamp_ns"]].concepts)
        assert set(row["present"]) == set(row["scores"]) == set(concepts)
        assert all(0.0 <= v <= 1.0 for v in row["scores"].values())
    y_true = labels_from_sets([set(r["truth"]) for r in rec], concepts)
    y_pred = {c: [r["present"][c] for r in rec] for c in concepts}
    expected = recognition_metrics(y_true, y_pred)
    got = report["recognition"]
    for key in ("precision", "recall", "f1"):
        assert got[key] == pytest.approx(expected[key])
    for c in concepts:
        for key in ("tp", "fp", "fn", "tn"):
            assert got["per_concept"][c][key] == expected["per_concept"][c][key]
        assert len(report["pr_curves"][c]["precision"]) >= 1

    # paper protocol: every query asked about every co-occurring group with the group's
    # memories alone; a query is a predicted positive of a group when all of it was found
    groups = offline.concept_groups(labels)
    assert groups, "the synthetic bag shows concepts together"
    asked = [r for r in rows if r["task"] == "multi_concept"]
    assert [(r["stamp_ns"], tuple(r["group"])) for r in asked] == [
        (r["stamp_ns"], g) for r in rec for g in groups]
    multi = [frozenset(r["truth"]) for r in asked]
    y_true = {" + ".join(g): [set(g) <= set(r["truth"]) for r in asked if tuple(r["group"]) == g]
              for g in groups}
    y_pred = {" + ".join(g): [all(r["present"][c] for c in g) for r in asked
                              if tuple(r["group"]) == g] for g in groups}
    assert report["multi_concept"]["f1"] == pytest.approx(recognition_metrics(y_true, y_pred)["f1"])
    assert report["protocol"] == "paper" and report["memory"] == "ego"
    assert all(r["protocol"] == "paper" and r["memory"] == "ego" for r in rows)
    assert len(multi) == len(rec) * len(groups)

    vqa = [r for r in rows if r["task"] == "vqa"]
    assert len(vqa) == len(labels.vqa)
    assert report["vqa"]["accuracy"] == pytest.approx(
        vqa_accuracy([r["choice"] for r in vqa], [r["answer"] for r in vqa]))
    caps = [r for r in rows if r["task"] == "caption" and r["truth"]]
    assert report["caption"]["recall"] == pytest.approx(
        caption_recall([r["mentioned"] for r in caps], [r["truth"] for r in caps]))


def test_refuses_to_overwrite_and_bad_inputs(cli_run: dict, bag: Path, tmp_path: Path,
                                             tiny_model_dirs: dict, capsys) -> None:
    model = str(tiny_model_dirs[FAMILY])
    cases = [
        (cli_run["argv"], "already holds a report"),
        (["eval", "--bag", str(tmp_path / "nope"), "--model", model, "--out", str(tmp_path)],
         "does not exist"),
        (["eval", "--bag", str(bag), "--model", str(tmp_path / "nomodel"), "--out",
          str(tmp_path / "r")], "does not exist"),
        (["eval", "--bag", str(bag), "--model", model, "--out", str(tmp_path / "r"),
          "--tasks", "recognition,dancing"], "--tasks"),
        (["eval", "--bag", str(bag), "--model", model, "--out", str(tmp_path / "r"),
          "--refs", "0"], "--refs must be >= 1"),
        (["eval", "--bag", str(bag), "--model", model, "--out", str(tmp_path / "r"),
          "--clip-frames", "0"], "--clip-frames must be >= 1"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert message in captured.err, (argv, captured.err)
        assert captured.out == ""
    assert not (tmp_path / "r").exists()


def test_overwrite_replaces_the_report_and_the_store(cli_run: dict, bag: Path,
                                                     tiny_model_dirs: dict,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "again"
    shutil.copytree(cli_run["out"], out)
    (out / "notes.txt").write_text("mine")
    stale = out / "store" / "stale.bin"
    stale.write_bytes(b"left by an older run")
    argv = ["eval", "--bag", str(bag), "--model", str(tiny_model_dirs[FAMILY]), "--out",
            str(out), "--overwrite", "--refs", "1", "--max-frames", "2", "--tasks",
            "recognition", "--no-progress", "--device", "cpu"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(argv) == 0
    assert json.loads(stdout.getvalue())["queries"] == 2
    report = read_strict_json(out / "report.json")
    assert report["queries"] == 2 and report["vqa"] is None and report["caption"] is None
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["task"] for r in rows].count("recognition") == 2
    assert {r["task"] for r in rows} == {"recognition", "multi_concept"}
    assert not stale.exists(), "the old store was reused"
    assert (out / "notes.txt").read_text() == "mine", "--overwrite removed a foreign file"


def test_a_bag_without_ground_truth_is_refused(tmp_path: Path, tiny_model_dirs: dict,
                                               capsys) -> None:
    images = tmp_path / "images"
    images.mkdir()
    assert cv2.imwrite(str(images / "a.png"), np.zeros((16, 16, 3), np.uint8))
    from_images(images, tmp_path / "bag")
    code = main(["eval", "--bag", str(tmp_path / "bag"), "--model",
                 str(tiny_model_dirs[FAMILY]), "--out", str(tmp_path / "r")])
    assert code == 2 and "no ground truth" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("ego_ros.eval.live") is not None,
                    reason="the live mode is installed; its own tests cover it")
def test_live_mode_without_the_node_says_so(bag: Path, tiny_model_dirs: dict, tmp_path: Path,
                                            capsys) -> None:
    code = main(["eval", "--bag", str(bag), "--model", str(tiny_model_dirs[FAMILY]), "--out",
                 str(tmp_path / "r"), "--mode", "live"])
    assert code == 2
    assert "--mode live needs the ROS node" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# The run itself (API): clips, tasks
# ----------------------------------------------------------------------------------------------


def test_clips_use_consecutive_frames_and_the_union_of_their_concepts(
        bag: Path, tiny_backends: dict, tmp_path: Path) -> None:
    backend = tiny_backends[FAMILY]
    engine = EgoEngine(backend, MemoryStore(tmp_path / "store", backend.fingerprint))
    config = EvalConfig(refs=1, clip_frames=4, tasks=("recognition",), progress=False)
    records = run_offline(engine, bag, config)
    labels = load_labels(bag)
    frames = labels.frames
    (clip,) = records.recognition  # 6 frames: one clip of 4, the remainder of 2 is not queried
    assert clip.frame_stamps == tuple(f.stamp_ns for f in frames[:4])
    assert clip.stamp_ns == frames[3].stamp_ns
    assert set(clip.truth) == {c for f in frames[:4] for c in f.concepts}
    assert set(clip.scores) == set(labels.concept_names)
    assert records.labelled_frames == 4 and records.clip_frames == 4
    assert records.vqa == () and records.captions == ()
    assert [t.views for t in records.teach] == [1, 1, 1]
    assert sorted(engine.store.names()) == sorted(labels.concept_names)


def test_config_and_task_parsing() -> None:
    assert offline.TASKS == eval_cli.TASKS
    assert offline.RECOGNITION_MODES == eval_cli.RECOGNITION_MODES
    assert offline.parse_tasks(" vqa, recognition,vqa ") == ("vqa", "recognition")
    with pytest.raises(ValueError, match="tasks"):
        offline.parse_tasks("recognition,sing")
    from ego_ros.core.strategies import STRATEGIES
    from ego_ros.eval.protocols import PROTOCOLS

    assert tuple(PROTOCOLS) == eval_cli.PROTOCOLS
    assert tuple(STRATEGIES) == eval_cli.STRATEGIES
    for bad in ({"refs": 0}, {"clip_frames": 0}, {"tasks": ()}, {"recognition_mode": "all"},
                {"max_frames": 0}, {"protocol": "lab"}):
        field = next(iter(bad))
        with pytest.raises(ValueError, match=f"EvalConfig.{field}"):
            EvalConfig(**bad)


# ----------------------------------------------------------------------------------------------
# Metrics and report from hand-made records (no model)
# ----------------------------------------------------------------------------------------------


def hand_records() -> EvalRecords:
    def rec(i: int, truth: tuple[str, ...], present: dict, scores: dict) -> RecognitionRecord:
        return RecognitionRecord(i, (i,), truth, present, scores, 10.0 + i)

    nan = math.nan
    return EvalRecords(
        mode="offline",
        concepts=("a", "b"),
        recognition=(
            rec(1, ("a", "b"), {"a": True, "b": True}, {"a": 0.9, "b": 0.8}),
            rec(2, ("a",), {"a": True, "b": True}, {"a": 0.7, "b": 0.6}),
            rec(3, (), {"a": False, "b": False}, {"a": 0.2, "b": nan}),
            rec(4, ("b", "a"), {"a": True}, {"a": 0.8}),  # b not in context: absent
        ),
        vqa=(
            VqaRecord(1, "a", "q?", {"A": "x", "B": "y"}, "A", "A", "A", 5.0),
            VqaRecord(2, "a", "q?", {"A": "x", "B": "y"}, "B", "hmm", None, 6.0),
            VqaRecord(3, "b", "free?", None, "an answer", "words", None, 7.0),
        ),
        captions=(
            CaptionRecord(1, ("a", "b"), "a and b", ("a", "b"), 20.0),
            CaptionRecord(2, ("a",), "b only", ("b",), 21.0),
            CaptionRecord(3, (), "nothing", (), 22.0),
        ),
        labelled_frames=4,
    )


def test_metrics_from_hand_made_records() -> None:
    m = compute_metrics(hand_records())
    rec = m["recognition"]
    # a: tp 3 (1, 2, 4), fp 0; b: tp 1 (1), fp 1 (2), fn 1 (4)
    assert rec["per_concept"]["a"]["precision"] == 1.0 and rec["per_concept"]["a"]["recall"] == 1.0
    assert rec["per_concept"]["b"]["precision"] == 0.5 and rec["per_concept"]["b"]["recall"] == 0.5
    assert rec["precision"] == pytest.approx(0.75) and rec["f1"] == pytest.approx(0.75)
    assert rec["per_concept"]["a"]["ap"] == pytest.approx(1.0)
    assert m["pr_curves"]["b"]["num_nan"] == 2  # the NaN score and the missing one
    multi = m["multi_concept"]
    assert list(multi["per_concept"]) == ["a + b"]
    assert multi["per_concept"]["a + b"]["tp"] == 1 and multi["per_concept"]["a + b"]["fn"] == 1
    assert m["vqa"]["questions"] == 2 and m["vqa"]["accuracy"] == 0.5
    assert m["vqa"]["unparsed"] == 1 and m["vqa"]["open_ended"] == 1
    assert m["caption"]["scored"] == 2 and m["caption"]["recall_per_query"] == 0.5
    assert m["caption"]["false_mention_rate"] == pytest.approx(1 / 3)
    assert m["latency_ms"]["recognition"]["n"] == 4
    s = summary(m, Path("/tmp/x"))
    assert s["recognition"]["f1"] == rec["f1"] and s["report_dir"] == "/tmp/x"


def test_report_is_strict_json_and_handles_missing_scores(tmp_path: Path) -> None:
    records = hand_records()
    paths = write_report(records, tmp_path)
    report = read_strict_json(paths["json"])
    assert report["recognition"]["per_concept"]["a"]["ap"] == pytest.approx(1.0)
    assert report["vqa"]["per_concept"]["a"] == 0.5
    lines = paths["predictions"].read_text().splitlines()
    assert len(lines) == 4 + 3 + 3
    assert json.loads(lines[2])["scores"]["b"] is None  # NaN written as null
    for key in PLOT_FILES:
        assert cv2.imread(str(paths[key])) is not None

    joint = EvalRecords("live", ("a",), recognition=(
        RecognitionRecord(1, (1,), ("a",), {"a": True}, {"a": math.nan}, 1.0),), dropped=2)
    m = compute_metrics(joint)
    assert math.isnan(m["recognition"]["mean_ap"]) and m["dropped"] == 2
    assert write_report(joint, tmp_path / "joint")["pr_curves"].is_file()


def test_records_are_validated() -> None:
    with pytest.raises(ValueError, match="mode"):
        EvalRecords("online", ("a",))
    with pytest.raises(ValueError, match="unknown concepts"):
        EvalRecords("offline", ("a",), recognition=(
            RecognitionRecord(1, (1,), ("z",), {}, {}, 1.0),))

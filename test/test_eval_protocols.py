"""Evaluation protocols, memory strategies in one ``ego-ros eval`` run, and bad bag frames.

Contexts are counted where they reach the model: the real tiny backend's ``embed`` (the
soft-prompt seam every prefix goes through) is wrapped to record the memory blocks it receives,
and each block is traced back to the stored concept memory it holds.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Writer

from ego_ros.backends.base import Visual
from ego_ros.bag.io import BagError, _typestore, read_image_bag
from ego_ros.bag.labels import load_labels
from ego_ros.bag.synthetic import make_synthetic_bag
from ego_ros.cli.main import main
from ego_ros.core.engine import EgoEngine, EngineConfig
from ego_ros.core.store import MemoryStore
from ego_ros.eval.offline import EvalConfig, concept_groups, run_offline
from ego_ros.eval.protocols import PROTOCOLS, get_protocol, parse_protocols
from ego_ros.eval.report import compute_metrics, write_report

FAMILY = "qwen2_5_vl"


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("protocols") / "bag"
    make_synthetic_bag(out, seed=0, num_frames=4, width=320, height=240, compressed=True,
                       refs_per_concept=1)
    return out


def _record_contexts(backend, store: MemoryStore, monkeypatch) -> list[tuple[str, ...]]:
    """Every prefix the backend embeds that holds memories: the names whose stored rows its
    memory blocks are (one entry per embed call, one name per block)."""
    contexts: list[tuple[str, ...]] = []
    real = backend.embed

    def owner(block: Visual) -> str:
        for name in store.names():
            memory = store.get(name)
            for v in range(memory.num_views):
                rows = memory.view_tokens(v)
                if rows.shape == block.tokens.shape and torch.equal(rows, block.tokens.cpu()):
                    return name
        raise AssertionError("a memory block holds rows of no stored concept")

    def embed(segments, start_pos=0):
        blocks = [s for s in segments if isinstance(s, Visual) and s.kind == "memory"]
        if blocks:
            contexts.append(tuple(owner(b) for b in blocks))
        return real(segments, start_pos)

    monkeypatch.setattr(backend, "embed", embed)
    return contexts


def test_protocol_objects() -> None:
    assert set(PROTOCOLS) == {"paper", "robot"}
    paper, robot = get_protocol("paper"), get_protocol("robot")
    assert paper.recognition_contexts(["a", "b"]) == [("a",), ("b",)]
    assert robot.recognition_contexts(["a", "b"]) == [None]
    assert paper.group_contexts([("a", "b")]) == [("a", "b")] and robot.group_contexts([]) == []
    assert paper.vqa_context(("b",)) == ("b",) and robot.vqa_context(("b",)) is None
    assert paper.caption_context(["a", "b"]) == ("a", "b")
    assert parse_protocols("robot, paper") == ("robot", "paper")
    with pytest.raises(ValueError, match="unknown protocol"):
        get_protocol("lab")
    with pytest.raises(ValueError, match="protocols must be"):
        parse_protocols("paper,lab")


@pytest.mark.parametrize("protocol", ["paper", "robot"])
def test_memories_in_context_per_question(protocol, bag, tiny_backends, tmp_path, monkeypatch,
                                          one_torch_thread) -> None:
    """paper: each recognition question holds exactly one concept's memory, each group
    question its pair's; robot: every question holds every concept's memory."""
    backend = tiny_backends[FAMILY]
    labels = load_labels(bag)
    concepts, groups = labels.concept_names, concept_groups(labels)
    assert len(concepts) == 3 and groups  # the synthetic bag shows some concepts together
    store = MemoryStore(tmp_path / "store", backend.fingerprint)
    engine = EgoEngine(backend, store, EngineConfig(prefix_cache_size=0))  # every prefix embedded
    config = EvalConfig(refs=1, tasks=("recognition",), protocol=protocol, progress=False)
    records_teach = run_offline(engine, bag, config, labels).teach  # teach outside the count
    contexts = _record_contexts(backend, store, monkeypatch)
    records = run_offline(engine, bag, config, labels, teach=records_teach)

    queries = len(records.recognition)
    assert queries == len(labels.frames) == 4
    if protocol == "paper":
        per_query = [(c,) for c in concepts] + [tuple(g) for g in groups]
        assert contexts == per_query * queries
        assert all(len(set(c)) == len(c) for c in contexts)
        assert [len(c) for c in contexts].count(1) == queries * len(concepts)
        assert len(records.groups) == queries * len(groups)
    else:
        assert contexts == [tuple(sorted(concepts))] * queries
        assert records.groups == ()
    for rec in records.recognition:  # every (query, concept) pair asked and scored
        assert set(rec.present) == set(rec.scores) == set(concepts)
    metrics = compute_metrics(records)
    assert metrics["protocol"] == protocol and metrics["memory"] == "ego"
    assert metrics["recognition"]["pairs_not_in_context"] == 0

    # VQA items with their own concept alone (paper) or every concept (robot); captions with
    # every concept under both
    contexts.clear()
    config = EvalConfig(refs=1, tasks=("vqa", "caption"), protocol=protocol, progress=False)
    records = run_offline(engine, bag, config, labels, teach=records_teach)
    caption_stamps = {c.stamp_ns for c in labels.captions}
    expected = []
    for frame in labels.frames:
        for item in (v for v in labels.vqa if v.stamp_ns == frame.stamp_ns):
            expected.append((item.concept,) if protocol == "paper" else tuple(sorted(concepts)))
        if frame.stamp_ns in caption_stamps:
            expected.append(tuple(sorted(concepts)))
    assert records.vqa and records.captions and contexts == expected


def _named_rows(rows: list[dict], memory: str, protocol: str, task: str) -> list[dict]:
    return [r for r in rows
            if r["memory"] == memory and r["protocol"] == protocol and r["task"] == task]


def test_eval_scores_every_strategy_on_the_same_queries(bag, tiny_model_dirs, tmp_path) -> None:
    strategies = ("ego", "uniform", "full", "full+keywords", "keywords", "fixed-k",
                  "description", "reference-images")
    out = tmp_path / "report"
    argv = ["eval", "--bag", str(bag), "--model", str(tiny_model_dirs[FAMILY]), "--out",
            str(out), "--refs", "1", "--max-frames", "2", "--tasks", "recognition",
            "--memory", ",".join(strategies), "--protocol", "paper,robot", "--no-progress",
            "--device", "cpu", "--dtype", "float32"]
    stdout = io.StringIO()
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(stdout):
            assert main(argv) == 0
    finally:
        torch.set_num_threads(torch_threads)
    summary = json.loads(stdout.getvalue())
    pairs = [(m, p) for m in strategies for p in ("paper", "robot")]
    assert [(r["memory"], r["protocol"]) for r in summary["runs"]] == pairs
    report = json.loads((out / "report.json").read_text())
    assert (report["memory"], report["protocol"]) == ("ego", "paper")  # the first run on top
    runs = {(r["memory"], r["protocol"]): r for r in report["runs"]}
    assert list(runs) == pairs

    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    first = [r["stamp_ns"] for r in _named_rows(rows, "ego", "paper", "recognition")]
    assert len(first) == 2
    labels = load_labels(bag)
    for memory, protocol in pairs:
        asked = _named_rows(rows, memory, protocol, "recognition")
        assert [r["stamp_ns"] for r in asked] == first, (memory, protocol)  # the same queries
        assert all(set(r["scores"]) == set(labels.concept_names) for r in asked)
        assert runs[(memory, protocol)]["queries"] == 2
        assert runs[(memory, protocol)]["recognition"]["f1"] is not None

    # the in-context token budget of each strategy (Table 3), and its own store
    budget = {m: runs[(m, "paper")]["in_context_tokens"] for m in strategies}
    for memory in strategies:
        assert budget[memory] == runs[(memory, "robot")]["in_context_tokens"]
        for tokens in budget[memory]["per_concept"].values():
            n = tokens["view_tokens"]
            if memory in ("full", "full+keywords", "reference-images"):
                assert tokens["visual"] == n
            elif memory == "keywords":
                assert tokens["visual"] == 0 and tokens["text"] > 0
            else:
                assert 0 < tokens["visual"] < n
        folder = out / ("store" if memory == "ego" else f"store-{memory}")
        assert (folder / "manifest.json").is_file(), memory
        store = MemoryStore(folder)
        assert sorted(store.names()) == sorted(labels.concept_names)
    assert budget["uniform"]["per_concept"] == budget["fixed-k"]["per_concept"]  # both K
    markdown = (out / "report.md").read_text()
    assert "## Runs (memory strategy x protocol, same queries)" in markdown
    assert "| reference-images | robot |" in markdown
    assert "## Recognition (protocol `paper`, memory `ego`)" in markdown


def _copy_with_corrupt_frame(src: Path, dst: Path, bad_index: int) -> tuple[str, int]:
    """A copy of bag ``src`` (labels and reference views too) whose message ``bad_index``
    carries a truncated JPEG; returns (topic, the bad frame's stamp)."""
    store = _typestore()
    dst.parent.mkdir(parents=True, exist_ok=True)
    stamp = -1
    with AnyReader([src], default_typestore=store) as reader, Writer(dst, version=9) as writer:
        (conn,) = [c for c in reader.connections if c.msgtype.endswith("CompressedImage")]
        out = writer.add_connection(conn.topic, conn.msgtype, typestore=store)
        for i, (_, log_time, raw) in enumerate(reader.messages(connections=[conn])):
            if i == bad_index:
                msg = reader.deserialize(raw, conn.msgtype)
                msg.data = np.frombuffer(bytes(msg.data[:40]) + b"garbage", np.uint8)
                stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
                raw = store.serialize_cdr(msg, conn.msgtype)
            writer.write(out, log_time, raw)
    shutil.copy(src / "ego_labels.json", dst / "ego_labels.json")
    shutil.copytree(src / "ego_refs", dst / "ego_refs")
    return conn.topic, stamp


def test_a_corrupt_frame_is_skipped_counted_and_named(bag, tiny_backends, tmp_path,
                                                      one_torch_thread) -> None:
    corrupt = tmp_path / "corrupt_bag"
    topic, stamp = _copy_with_corrupt_frame(bag, corrupt, bad_index=1)
    with pytest.raises(BagError, match=f"message 1 on {topic}"):
        list(read_image_bag(corrupt))  # without a handler the reader names the message
    backend = tiny_backends[FAMILY]
    engine = EgoEngine(backend, MemoryStore(tmp_path / "store", backend.fingerprint))
    labels = load_labels(corrupt)
    config = EvalConfig(refs=1, tasks=("recognition", "vqa"), progress=False)
    records = run_offline(engine, corrupt, config, labels)
    (skipped,) = records.skipped
    assert (skipped.topic, skipped.index, skipped.stamp_ns) == (topic, 1, stamp)
    # the frame-size check reads the JPEG header first, so a truncated JPEG is named as such
    assert skipped.reason.startswith("decode: ") and "truncated" in skipped.reason.lower()
    queried = [r.stamp_ns for r in records.recognition]
    assert queried == [f.stamp_ns for f in labels.frames if f.stamp_ns != stamp]
    assert records.labelled_frames == len(labels.frames) - 1
    assert all(v.stamp_ns != stamp for v in records.vqa)
    paths = write_report(records, tmp_path / "report")
    report = json.loads(paths["json"].read_text())
    assert report["skipped_frames"] == {"count": 1, "frames": [
        {"topic": topic, "index": 1, "stamp_ns": stamp, "reason": skipped.reason}]}
    markdown = paths["markdown"].read_text()
    assert "## Skipped frames" in markdown and f"| {topic} | 1 | {stamp} |" in markdown


def test_a_frame_the_model_refuses_is_skipped_and_named(bag, tiny_backends, tmp_path,
                                                        one_torch_thread) -> None:
    """A frame that decodes but that the model cannot take (4x4 pixels) is skipped with the
    model's reason; the rest of the run goes on."""
    from ego_ros.bag.io import write_image_bag

    labels = load_labels(bag)
    frames = [(f.rgb, f.stamp_ns, f.frame_id) for f in read_image_bag(bag)]
    tiny = np.zeros((4, 4, 3), np.uint8)
    frames[2] = (tiny, frames[2][1], frames[2][2])
    small = tmp_path / "small_bag"
    write_image_bag(small, frames, labels.topic.removesuffix("/compressed"), compressed=True)
    shutil.copy(bag / "ego_labels.json", small / "ego_labels.json")
    shutil.copytree(bag / "ego_refs", small / "ego_refs")
    backend = tiny_backends[FAMILY]
    engine = EgoEngine(backend, MemoryStore(tmp_path / "store", backend.fingerprint))
    records = run_offline(engine, small, EvalConfig(refs=1, tasks=("recognition",),
                                                    progress=False))
    (skipped,) = records.skipped
    assert (skipped.index, skipped.stamp_ns) == (2, frames[2][1])
    assert "4x4" in skipped.reason  # the model's own message (or the decoder's, if it refuses)
    assert len(records.recognition) == len(labels.frames) - 1

"""Live evaluation: a real ego_node (in this process, its own ROS context) fed by a real bag
player over DDS, taught through its service, scored from its Recognition messages."""

from __future__ import annotations

import pytest

from ego_ros.backends.base import BackendConfig
from ego_ros.bag.io import bag_info, read_image_bag
from ego_ros.bag.labels import load_labels
from ego_ros.bag.synthetic import make_synthetic_bag
from ego_ros.core.engine import EngineConfig
from ego_ros.eval.live import LiveSettings, run_live
from ego_ros.eval.offline import EvalConfig


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory):
    out = tmp_path_factory.mktemp("live") / "bag"
    make_synthetic_bag(out, seed=3, num_frames=30, fps=10, width=320, height=240,
                       compressed=True)
    return out


def test_live_replay_scores_one_record_per_clip(small_bag, tiny_model_dirs, tmp_path):
    """Recognition from the node's stream, and VQA: each labelled question put to ~/ask about
    its own frame (named by stamp) while the stream is being recognized."""
    from ego_ros.eval.report import compute_metrics

    labels = load_labels(small_bag)
    config = EvalConfig(refs=1, tasks=("recognition", "vqa"), progress=False)
    records = run_live(
        bag=small_bag, labels=labels,
        backend_config=BackendConfig(tiny_model_dirs["qwen2_5_vl"], device="cpu"),
        store_dir=tmp_path / "store", config=config,
        engine_config=EngineConfig(max_in_context=len(labels.concepts)),
        live=LiveSettings(period_s=0.4, tail_s=2.0))
    info = bag_info(small_bag)
    assert records.mode == "live"
    assert [t.concept for t in records.teach] == labels.concept_names
    assert records.recognition, "the node published no recognition for the replayed bag"
    received = records.details["recognitions_received"]
    assert len(records.recognition) <= received
    # ~3 s of bag at one clip per 0.4 s: a clip per period (give or take start-up and drops)
    assert 3 <= received <= 12
    stamps = {f.stamp_ns for f in read_image_bag(small_bag)}
    for rec in records.recognition:
        assert info["start_ns"] <= rec.stamp_ns <= info["end_ns"]
        assert rec.stamp_ns in stamps  # the clip's last frame is a bag frame
        assert set(rec.frame_stamps) <= stamps
        # every concept was asked about (the paper's protocol) and scored
        assert set(rec.present) == set(labels.concept_names)
        assert all(0.0 <= s <= 1.0 for s in rec.scores.values())
        truth = {c for f in labels.frames if f.stamp_ns in rec.frame_stamps for c in f.concepts}
        assert set(rec.truth) == truth
    assert labels.vqa  # file reference views: every labelled question is asked
    assert records.details["questions_expected"] == len(labels.vqa)
    assert records.details["questions_asked"] == len(labels.vqa)
    assert records.details["questions_failed"] == 0, records.details["question_failures"]
    key = lambda v: (v.stamp_ns, v.concept)  # noqa: E731
    assert sorted(map(key, records.vqa)) == sorted(map(key, labels.vqa))
    for asked in records.vqa:
        item = next(v for v in labels.vqa if key(v) == key(asked))
        assert (asked.question, asked.options, asked.answer) == (
            item.question, dict(item.options), item.answer)
        assert asked.multiple_choice and 0 < asked.latency_ms < 1000 * records.elapsed_s
        assert asked.choice is None or asked.choice in asked.options
    vqa = compute_metrics(records)["vqa"]
    assert vqa["questions"] == len(labels.vqa) and 0.0 <= vqa["accuracy"] <= 1.0


def test_live_and_offline_evaluate_the_same_labelled_frames(small_bag, tiny_model_dirs,
                                                           tmp_path):
    """Every frame the live run scored is a frame the offline run scored, with the same
    ground truth (live sees a subset: the frames the node sampled)."""
    from ego_ros.backends.loading import load_backend
    from ego_ros.core.engine import EgoEngine
    from ego_ros.core.store import MemoryStore
    from ego_ros.eval.offline import run_offline

    labels = load_labels(small_bag)
    config = EvalConfig(refs=1, tasks=("recognition",), progress=False)
    backend_config = BackendConfig(tiny_model_dirs["qwen2_5_vl"], device="cpu")
    engine_config = EngineConfig(max_in_context=len(labels.concepts))
    live = run_live(bag=small_bag, labels=labels, backend_config=backend_config,
                    store_dir=tmp_path / "live", config=config, engine_config=engine_config,
                    live=LiveSettings(period_s=0.4, tail_s=2.0))
    backend = load_backend(backend_config)
    engine = EgoEngine(backend, MemoryStore(tmp_path / "off", backend.fingerprint),
                       engine_config)
    offline = run_offline(engine, small_bag, config, labels)
    off_truth = {r.stamp_ns: set(r.truth) for r in offline.recognition}
    assert live.recognition
    for rec in live.recognition:
        for stamp in rec.frame_stamps:
            assert stamp in off_truth
        assert set(rec.truth) == set().union(*(off_truth[s] for s in rec.frame_stamps))


def test_reference_frames_of_the_bag_are_never_scored(small_bag):
    """Labels whose reference views are bag frames (by index): clips spanning those frames
    are left out, as offline mode never queries them."""
    import dataclasses

    from ego_interfaces.msg import ConceptDetection, Recognition
    from ego_ros.bag.labels import RefView
    from ego_ros.eval.live import _match, reference_stamps
    from ego_ros.ros.convert import ns_to_stamp, stamp_to_ns

    labels = load_labels(small_bag)
    by_index = dataclasses.replace(labels, concepts=tuple(
        dataclasses.replace(c, refs=(RefView(index=2 * i), RefView(index=2 * i + 1)))
        for i, c in enumerate(labels.concepts)))
    bag_stamps = [f.stamp_ns for f in read_image_bag(small_bag)]
    refs = reference_stamps(small_bag, by_index, refs=1)  # the first view of each concept
    assert refs == {bag_stamps[2 * i] for i in range(len(labels.concepts))}
    assert reference_stamps(small_bag, labels, refs=None) == set()  # file views: none

    labelled = {f.stamp_ns for f in labels.frames}
    scored = next(s for s in bag_stamps if s in labelled and s not in refs)
    taught = next(s for s in sorted(refs) if s in labelled)

    def clip(start: int, end: int) -> Recognition:
        return Recognition(clip_start=ns_to_stamp(start), clip_end=ns_to_stamp(end),
                           concepts=[ConceptDetection(name=n, score=0.5, present=False)
                                     for n in labels.concept_names])

    messages = [clip(taught, taught), clip(scored, scored), clip(min(refs), max(refs) + 1)]
    recognition, _, spanning = _match(messages, by_index, stamp_to_ns, refs)
    assert [r.frame_stamps for r in recognition] == [(scored,)]
    assert spanning == 2
    recognition, _, spanning = _match(messages, by_index, stamp_to_ns)  # nothing excluded
    assert len(recognition) == 3 and spanning == 0


def test_eval_cli_live_mode_uses_a_running_worker(small_bag, tmp_path, capsys):
    """``ego-ros eval --mode live --endpoint``: the node talks to the worker, which is taught
    the bag's concepts; the report notes that the worker serves the tiny model."""
    import json

    from test_rpc import FakeEngine

    from ego_ros.cli.main import main
    from ego_ros.serving.remote import serve_engine

    engine = FakeEngine()
    with serve_engine(engine, "tcp://127.0.0.1:*", info={"model": "tiny"}) as server:
        code = main(["eval", "--bag", str(small_bag), "--mode", "live", "--endpoint",
                     server.endpoint, "--out", str(tmp_path / "r"), "--refs", "1",
                     "--tasks", "recognition", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["queries"] > 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    details = report["details"]
    assert details["engine_endpoint"] == server.endpoint
    assert "RANDOM weights" in details["model_note"]
    assert engine.calls["introduce"] == len(load_labels(small_bag).concepts)
    assert engine.calls["recognize"] >= 1


def test_eval_cli_endpoint_needs_live_mode_and_model_needs_one_or_the_other(
        small_bag, tmp_path, capsys):
    from ego_ros.cli.main import main

    base = ["eval", "--bag", str(small_bag), "--out", str(tmp_path / "r")]
    assert main([*base, "--endpoint", "tcp://127.0.0.1:9"]) == 2
    assert "--endpoint is for --mode live" in capsys.readouterr().err
    assert main(base) == 2
    assert "--model is required" in capsys.readouterr().err
    assert main([*base, "--mode", "live", "--endpoint", "127.0.0.1:9"]) == 2
    assert "not a ZeroMQ endpoint" in capsys.readouterr().err

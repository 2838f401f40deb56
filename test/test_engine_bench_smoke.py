"""The inference benchmark runs end to end (``--quick``) and reports every number it promises.

Wall-clock values are never compared with each other here (the machine is shared); the test
checks that each measurement exists, is a positive finite number, and that the facts the
ratios rest on hold: token counts, retrieval narrowing the context to 10, the prefix cache
being hit with reuse on and never with reuse off.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
VARIANTS = {"plain", "plain_per_concept_10", "ego_per_concept_10", "ego_per_concept_10_no_reuse",
            "ego_per_concept_10_unbatched", "ego_one_question_10", "ego_one_question_10_no_reuse",
            "ego_one_concept", "ego_joint_10_first_token", "reference_images_10"}
RATIOS = {"overhead_per_concept_10", "overhead_per_concept_10_no_reuse",
          "memories_cost_per_concept_10", "questions_cost_per_concept_10",
          "overhead_one_question_10", "overhead_one_question_10_no_reuse",
          "overhead_one_concept", "overhead_joint_10_first_token", "reference_speedup",
          "reference_speedup_no_reuse", "prefix_reuse_speedup_per_concept_10",
          "prefix_reuse_speedup_one_question_10", "batching_speedup_per_concept_10",
          "scaling_20_vs_10",
          "scaling_recognize_20_vs_10"}
QUERY_TOKENS = {"qwen2_5_vl": 140, "internvl": 64}  # a 640x480 frame on each tiny model


@pytest.fixture(scope="module")
def quick_run(tiny_model_dirs) -> dict:
    out = subprocess.run(
        [sys.executable, str(BENCH_DIR / "bench_inference.py"), "--quick", "--json",
         "--repeats", "1", "--warmup", "0", "--sizes", "1,10,20"],
        capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_quick_run_reports_every_measurement(quick_run):
    assert quick_run["benchmark"] == "inference"
    assert quick_run["host"]["cpu"]
    assert quick_run["settings"]["sizes"] == [1, 10, 20]
    assert [r["family"] for r in quick_run["results"]] == list(QUERY_TOKENS)
    for result in quick_run["results"]:
        assert set(result["latency_ms"]) == VARIANTS
        for timing in result["latency_ms"].values():
            assert timing["repeats"] == 1
            assert 0 < timing["min_ms"] <= timing["median_ms"] < math.inf
        assert set(result["ratios"]) == RATIOS
        assert all(0 < v < math.inf for v in result["ratios"].values())
        assert len(result["targets"]) == 3
        assert all(isinstance(t["met"], bool) for t in result["targets"])


def test_quick_run_measures_what_it_claims(quick_run):
    for result in quick_run["results"]:
        tokens = result["tokens"]
        assert tokens["query"] == QUERY_TOKENS[result["family"]]
        assert tokens["reference_images_10"] == 10 * tokens["query"]  # same frame size
        assert 0 < tokens["memories_10"] < tokens["reference_images_10"]
        rows = result["scaling"]
        assert [r["stored"] for r in rows] == [1, 10, 20]
        assert [r["considered"] for r in rows] == [1, 10, 10]  # retrieval keeps 10
        assert all(r["one_question_ms"] > 0 and r["recognize_ms"] > 0 for r in rows)
        assert result["prefix_cache"]["reuse_hits"] > 0
        assert result["prefix_cache"]["no_reuse_hits"] == 0


def test_text_report_shows_tables_and_targets(quick_run, tmp_path):
    """``--report`` prints the tables of a saved ``--json`` run (how the GPU check prints
    them) without measuring anything; an unreadable file is a clear error."""
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(quick_run))
    out = subprocess.run([sys.executable, str(BENCH_DIR / "bench_inference.py"), "--report",
                          str(saved)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for needle in ("x plain", "reference_images_10", "1 question ms", "overhead_per_concept_10",
                   "target vs reference images >= 4x", "host: "):
        assert needle in out.stdout
    assert out.stdout.count("== ") == len(quick_run["results"])
    bad = subprocess.run([sys.executable, str(BENCH_DIR / "bench_inference.py"), "--report",
                          str(tmp_path / "none.json")], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode != 0 and "cannot read" in bad.stderr


def test_plain_per_concept_baseline_asks_egos_questions(monkeypatch, tiny_backends):
    """The no-memory baseline of the per-concept protocol asks the same questions the same
    way: its score for each name equals the plain model asked that one question."""
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    import bench_inference
    import common

    from ego_ros.core.prompts import prompts_for

    for backend in tiny_backends.values():
        prompts = prompts_for(backend.family)
        names = bench_inference.NAMES[:4]
        frame = common.scene(7, (120, 160), objects=(0,))
        scores = bench_inference.PlainPerConcept(backend, prompts, names)(frame)
        assert len(scores) == len(names)
        for name, score in zip(names, scores):
            alone = bench_inference.PlainModel(backend, prompts, name)(frame)
            assert score == pytest.approx(alone, abs=1e-5)


def test_interleaved_timing_runs_every_variant_round_robin(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    import common

    calls: list[str] = []
    timings = common.interleaved({"a": lambda: calls.append("a"),
                                  "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert list(timings) == ["a", "b"]
    assert all(len(t.samples_ms) == 3 and t.median_ms >= 0 for t in timings.values())
    with pytest.raises(ValueError, match="repeats"):
        common.interleaved({"a": lambda: None}, repeats=0, warmup=0)


def test_generated_scenes_keep_an_objects_look(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    import common

    a = common.scene(1, (120, 160), objects=(4,))
    assert a.shape == (120, 160, 3) and a.dtype.name == "uint8"
    assert (a == common.scene(1, (120, 160), objects=(4,))).all()  # deterministic
    assert not (a == common.scene(2, (120, 160), objects=(4,))).all()  # placement varies


def test_a_subset_of_variants_and_no_scaling(tiny_model_dirs):
    """``--variants`` times only those (plus the ratios they make), ``--sizes none`` skips the
    scaling stores; bad choices are refused before anything is built."""
    out = subprocess.run(
        [sys.executable, str(BENCH_DIR / "bench_inference.py"), "--quick", "--json",
         "--family", "internvl", "--repeats", "1", "--warmup", "0", "--sizes", "none",
         "--variants", "plain,ego_per_concept_10"],
        capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    (result,) = json.loads(out.stdout)["results"]
    assert set(result["latency_ms"]) == {"plain", "ego_per_concept_10"}
    assert set(result["ratios"]) == {"overhead_per_concept_10"}
    assert result["scaling"] == [] and result["size"] == "tiny" and result["layers"] == 4
    met = {t["ratio"]: t["met"] for t in result["targets"]}
    assert met["reference_speedup"] is None and isinstance(met["overhead_per_concept_10"], bool)
    for bad, message in ((["--variants", "ego_per_concept_10"], "must include plain"),
                         (["--size", "huge"], "unknown --size 'huge'"),
                         (["--size", "qwen2.5-vl-3b", "--model", "/nowhere"], "--model"),
                         (["--depth-divisor", "4"], "real --size only"),
                         (["--size", "qwen2.5-vl-7b", "--family", "internvl"], "not internvl")):
        run = subprocess.run([sys.executable, str(BENCH_DIR / "bench_inference.py"), *bad],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and message in run.stderr, run.stderr

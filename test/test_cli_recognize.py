"""``ego-ros recognize``, ``ask`` and ``caption`` end to end: real tiny models, a store built
with the engine, PNG files on disk, the CLI run as a separate process.

The main paths of each command run as a subprocess, the way a user or a script calls them; the
clip variants and the error paths run the same CLI code in-process through ``main`` (no
interpreter start-up, which costs seconds per call).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ego_ros.cli.main import main

NAMES = ["kiro", "tavi"]


def _frame(seed: int, size: int = 224) -> np.ndarray:
    """A textured background with one bright object: RGB uint8 ``[size, size, 3]``."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
    y, x = rng.integers(10, size // 2, 2)
    img[y:y + size // 3, x:x + size // 3] = rng.integers(140, 256, 3, dtype=np.uint8)
    return img


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("cli_images")
    paths = []
    for i in range(3):
        path = folder / f"frame {i}.png"  # a space, as in real file names
        assert cv2.imwrite(str(path), cv2.cvtColor(_frame(10 + i), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def stores(tiny_backends, tmp_path_factory) -> dict[str, Path]:
    """A store per family holding ``kiro`` and ``tavi``, introduced with the engine."""
    from ego_ros.core.engine import EgoEngine, EngineConfig
    from ego_ros.core.introduce import IntroduceConfig
    from ego_ros.core.store import MemoryStore

    short = EngineConfig(introduce=IntroduceConfig(area_max_new_tokens=4,
                                                   keywords_max_new_tokens=6))
    root = tmp_path_factory.mktemp("cli_stores")
    for family, backend in tiny_backends.items():
        engine = EgoEngine(backend, MemoryStore(root / family, backend.fingerprint), short)
        for seed, name in enumerate(NAMES):
            engine.introduce(name, [_frame(seed)])
    return {family: root / family for family in tiny_backends}


def _cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ego_ros.cli.main", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def _lines(out: subprocess.CompletedProcess) -> list[dict]:
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def _common(family, tiny_model_dirs, stores) -> list[object]:
    # short generations: the text of a random model is noise, its length only costs time
    return ["--model", tiny_model_dirs[family], "--store", stores[family],
            "--max-new-tokens", "6"]


def test_recognize_prints_one_json_line_per_image(tiny_model_dirs, stores, images):
    out = _lines(_cli("recognize", *_common("qwen2_5_vl", tiny_model_dirs, stores),
                      images[0], images[1], "--threshold", "0", "--caption"))
    assert len(out) == 2
    for path, result in zip(images, out):
        assert set(result) == {"images", "concepts", "considered", "mode", "caption",
                               "latency_ms"}
        assert result["images"] == [str(path)]
        assert result["mode"] == "per-concept"
        assert result["considered"] == NAMES
        assert [c["name"] for c in result["concepts"]] == NAMES
        for concept in result["concepts"]:
            assert 0.0 <= concept["score"] <= 1.0
            assert concept["present"] is True  # every score is >= threshold 0
        assert isinstance(result["caption"], str)
        assert result["latency_ms"] > 0


def _main_lines(capsys, *args: object) -> list[dict]:
    """The CLI run in-process (no interpreter start-up): its JSON lines."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return [json.loads(line) for line in captured.out.splitlines()]


def test_recognize_clip_joint_on_qwen_gives_null_scores(tiny_model_dirs, stores, images,
                                                        capsys):
    out = _main_lines(capsys, "recognize", *_common("qwen2_5_vl", tiny_model_dirs, stores),
                      *images, "--clip", "--mode", "joint")
    assert len(out) == 1  # the images are one clip
    (result,) = out
    assert result["images"] == [str(p) for p in images]
    assert result["mode"] == "joint"
    assert "caption" not in result
    assert [c["name"] for c in result["concepts"]] == NAMES
    assert all(c["score"] is None and isinstance(c["present"], bool)
               for c in result["concepts"])


def test_recognize_clip_on_internvl_with_chosen_concepts(tiny_model_dirs, stores, images,
                                                        capsys):
    out = _main_lines(capsys, "recognize", *_common("internvl", tiny_model_dirs, stores),
                      images[0], images[1], "--clip", "--concepts", "tavi")
    (result,) = out
    assert result["considered"] == ["tavi"]
    (concept,) = result["concepts"]
    assert concept["name"] == "tavi"
    assert 0.0 <= concept["score"] <= 1.0
    assert concept["present"] == (concept["score"] >= 0.5)  # the default threshold


def test_ask_prints_an_answer(tiny_model_dirs, stores, images):
    (result,) = _lines(_cli("ask", *_common("internvl", tiny_model_dirs, stores),
                            "--question", "Is kiro on the table?", images[0]))
    assert set(result) == {"images", "answer", "concepts", "considered", "latency_ms"}
    assert isinstance(result["answer"], str) and result["answer"]
    assert set(result["concepts"]) <= set(NAMES)
    assert result["considered"] == NAMES


def test_caption_prints_a_caption(tiny_model_dirs, stores, images):
    (result,) = _lines(_cli("caption", *_common("qwen2_5_vl", tiny_model_dirs, stores),
                            "--concepts", "tavi", images[2]))
    assert set(result) == {"images", "caption", "concepts", "considered", "latency_ms"}
    assert isinstance(result["caption"], str) and result["caption"]
    assert result["considered"] == ["tavi"]


def test_missing_image_exits_2_naming_the_path(tiny_model_dirs, stores, tmp_path):
    missing = tmp_path / "no such frame.png"
    out = _cli("recognize", *_common("qwen2_5_vl", tiny_model_dirs, stores), missing)
    assert out.returncode == 2
    assert str(missing) in out.stderr
    assert out.stdout == ""
    assert "Traceback" not in out.stderr


# -- errors, in-process ---------------------------------------------------------------------------
def _main_error(capsys, *args: object) -> str:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.out == ""
    return captured.err


def test_unknown_concept_exits_2_and_lists_the_stored_ones(tiny_model_dirs, stores, images,
                                                           capsys):
    err = _main_error(capsys, "recognize", *_common("qwen2_5_vl", tiny_model_dirs, stores),
                      images[0], "--concepts", "kiro,bob")
    assert "'bob'" in err and "kiro, tavi" in err


def test_memories_of_another_model_are_skipped(tiny_model_dirs, stores, images, capsys):
    """Issue 11 item 5: another model's memories never enter the context and never stop the
    command; they are skipped (with a warning naming the fix) and nothing is considered."""
    code = main(["caption", "--model", str(tiny_model_dirs["internvl"]),
                 "--store", str(stores["qwen2_5_vl"]), str(images[0])])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (result,) = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    assert result["considered"] == []


@pytest.mark.parametrize("command, extra, expected", [
    ("ask", ["--question", "  "], "--question is empty"),
    ("recognize", ["--threshold", "1.5"], "--threshold must be between 0 and 1"),
    ("recognize", ["--max-in-context", "0"], "--max-in-context must be >= 1"),
    ("ask", ["-q", "Where?", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    ("caption", ["--concepts", " , "], "--concepts must name at least one concept"),
])
def test_bad_options_exit_2(tiny_model_dirs, stores, images, capsys, command, extra, expected):
    err = _main_error(capsys, command, *_common("qwen2_5_vl", tiny_model_dirs, stores),
                      images[0], *extra)
    assert expected in err


def test_missing_store_folder_exits_2(tiny_model_dirs, images, tmp_path, capsys):
    err = _main_error(capsys, "recognize", "--model", tiny_model_dirs["qwen2_5_vl"],
                      "--store", tmp_path / "nowhere", images[0])
    assert str(tmp_path / "nowhere") in err and "ego-ros introduce" in err


def test_mode_choices_match_the_engine():
    from ego_ros.cli.recognize import MODES
    from ego_ros.core.engine import MODES as ENGINE_MODES

    assert tuple(MODES) == tuple(ENGINE_MODES)


def test_ask_options_parse_and_errors():
    from ego_ros.cli.ask import _options
    from ego_ros.cli.common import CliError

    assert _options([]) is None
    assert _options(["a=on the table", "B = on the floor"]) == {"A": "on the table",
                                                               "B": "on the floor"}
    for bad in (["A=x"], ["A=x", "A=y"], ["AB=x", "C=y"], ["A:x", "B=y"], ["A=", "B=y"]):
        with pytest.raises(CliError):
            _options(bad)

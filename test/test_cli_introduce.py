"""``ego-ros introduce``, ``concepts`` and ``calibrate`` end to end on a tiny model.

The main paths run as real subprocesses (``python -m ego_ros.cli.main``), so argument parsing,
JSON on stdout, exit codes and files on disk are what a user gets. Follow-up commands (a
replacing introduce, introduce after calibrate, the ``concepts`` actions) run in-process through
the same ``main(argv)``, which saves an interpreter start and the torch imports each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ego_ros.cli.main import main
from ego_ros.core.calibration import load_calibration, synthetic_calibration_set
from ego_ros.core.introduce import introduce_concept
from ego_ros.core.store import MemoryStore

INTRODUCE_KEYS = {"name", "num_tokens", "num_views", "keywords", "area_percent",
                  "area_defaulted", "layers", "layers_source", "elapsed_s"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    # One torch thread: the tiny model gains nothing from more, and on a busy shared machine
    # spinning thread pools slow every subprocess down several-fold.
    env = dict(os.environ, EGO_ROS_CACHE=str(cache), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "ego_ros.cli.main", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def _json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _run(capsys, *args) -> tuple[int, dict | None, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else None), captured.err


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model_dirs):
    """A folder with a reference image (PNG) and an empty cache; the tiny Qwen model path."""
    import cv2

    root = tmp_path_factory.mktemp("cli")
    image = synthetic_calibration_set(1, seed=9, size=(224, 280))[0][0]
    assert cv2.imwrite(str(root / "ref.png"), image[..., ::-1])
    (root / "cache").mkdir()
    return root, tiny_model_dirs["qwen2_5_vl"], image


def test_introduce_stores_adds_views_and_replaces(workdir, capsys):
    import cv2

    root, model, image = workdir
    store = root / "store"
    common = ("introduce", "--model", model, "--store", store, "--name", "my mug")
    first = _json(_cli(*common, root / "ref.png", "--overlay", root / "ov.png",
                       cache=root / "cache"))
    assert set(first) >= INTRODUCE_KEYS
    assert first["name"] == "my mug" and first["num_views"] == 1
    assert first["layers_source"] == "default (mid-to-late)" and first["layers"] == [2]
    assert len(first["keywords"]) == len(first["area_percent"]) == 1
    stored = MemoryStore(store).get("my mug")
    assert stored.num_tokens == first["num_tokens"] > 0
    overlay = cv2.imread(str(root / "ov.png"))
    assert overlay is not None and overlay.shape == image.shape
    assert not np.array_equal(overlay[..., ::-1], image)  # patches dimmed and outlined

    second = _json(_cli(*common, root / "ref.png", root / "ref.png", "--overlay",
                        root / "two.png", "--layers", "1,3", cache=root / "cache"))
    assert second["num_views"] == 3 and second["new_views"] == 2
    assert second["layers"] == [1, 3] and second["layers_source"] == "explicit"
    assert second["num_tokens"] == 3 * first["num_tokens"]  # same image, same K_c per view
    assert [Path(p).name for p in second["overlays"]] == ["two-1.png", "two-2.png"]
    assert all(Path(p).is_file() for p in second["overlays"])

    # In-process (same main(), no second interpreter start) to keep this file fast.
    code, third, err = _run(capsys, *common, root / "ref.png", "--replace")
    assert code == 0, err
    assert third["num_views"] == 1 and third["replaced"] is True
    assert MemoryStore(store).get("my mug").num_views == 1


def test_errors_exit_2_with_a_message(workdir):
    root, model, _ = workdir
    hostile = _cli("introduce", "--model", model, "--store", root / "s", "--name", "../x\u202e",
                   root / "ref.png", cache=root / "cache")
    assert hostile.returncode == 2 and hostile.stdout == ""
    assert "concept name" in hostile.stderr and "Traceback" not in hostile.stderr
    missing = _cli("introduce", "--model", root / "no-model", "--store", root / "s", "--name",
                   "x", root / "ref.png", cache=root / "cache")
    assert missing.returncode == 2 and str(root / "no-model") in missing.stderr
    assert not (root / "s").exists()  # nothing written on failure


def test_calibrate_writes_a_file_that_introduce_uses(workdir, capsys, monkeypatch):
    root, model, _ = workdir
    cache = root / "cal-cache"
    cal = _json(_cli("calibrate", "--model", model, "--synthetic", "2", "--layers-keep", "2",
                     cache=cache))
    path = Path(cal["path"])
    assert path.parent == cache / "calibration" and path.is_file()
    assert cal["num_samples"] == 2 and len(cal["scores"]) == 4 and len(cal["layers"]) == 2
    assert load_calibration(path, None).layers == tuple(cal["layers"])
    monkeypatch.setenv("EGO_ROS_CACHE", str(cache))
    code, out, err = _run(capsys, "introduce", "--model", model, "--store", root / "cal-store",
                          "--name", "thing", root / "ref.png")
    assert code == 0, err
    assert out["layers_source"] == f"calibration:{path}"
    assert out["layers"] == cal["layers"]


def test_concepts_list_show_export_import_forget(tmp_path, tiny_backends, tiny_model_dirs,
                                                  make_scene, capsys):
    backend = tiny_backends["qwen2_5_vl"]
    store_a, store_b = tmp_path / "a", tmp_path / "b"
    memory, _ = introduce_concept(backend, "Anna's mug", [make_scene(1), make_scene(2)], [2])
    MemoryStore(store_a, backend.fingerprint).put(memory)

    code, listed, _ = _run(capsys, "concepts", "list", "--store", store_a)
    assert code == 0
    assert [(c["name"], c["num_tokens"], c["num_views"]) for c in listed["concepts"]] == [
        ("Anna's mug", memory.num_tokens, 2)]
    code, shown, _ = _run(capsys, "concepts", "show", "Anna's mug", "--store", store_a)
    assert shown["views"][0]["indices"] == memory.views[0].indices.tolist()
    assert shown["views"][1]["grid"] == list(memory.views[1].grid)
    assert shown["fingerprint"] == backend.fingerprint.to_dict()

    exported = tmp_path / "mug.safetensors"
    code, out, _ = _run(capsys, "concepts", "export", "Anna's mug", exported, "--store", store_a)
    assert code == 0 and exported.is_file() and out["bytes"] == exported.stat().st_size
    code, out, _ = _run(capsys, "concepts", "import", exported, "--store", store_b,
                        "--name", "mug 2", "--model", tiny_model_dirs["qwen2_5_vl"])
    assert code == 0 and out["fingerprint_checked"] is True
    imported = MemoryStore(store_b, backend.fingerprint).get("mug 2")
    assert np.array_equal(imported.tokens.numpy(), memory.tokens.numpy())
    code, _, err = _run(capsys, "concepts", "import", exported, "--store", store_b,
                        "--model", tiny_model_dirs["internvl"])
    assert code == 2 and "made by model" in err
    assert MemoryStore(store_b).names() == ["mug 2"]

    code, out, _ = _run(capsys, "concepts", "forget", "Anna's mug", "--store", store_a)
    assert code == 0 and out["remaining"] == []
    code, _, err = _run(capsys, "concepts", "show", "Anna's mug", "--store", store_a)
    assert code == 2 and "no concept named" in err


def test_cli_entry_point_lists_concepts(tmp_path, workdir):
    root, _, _ = workdir
    proc = subprocess.run([sys.executable, "-m", "ego_ros.cli.main", "concepts", "list",
                           "--store", str(tmp_path / "empty")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["concepts"] == []


def test_help_starts_with_a_pasteable_example(capsys):
    for command in ("introduce", "concepts", "calibrate"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        assert f"ego-ros {command} " in capsys.readouterr().out


def test_config_only_fingerprint_equals_the_loaded_models(tiny_backends, tiny_model_dirs):
    """``concepts import --model`` checks memories without loading weights; its fingerprint
    must be the one the loaded backend stamps on memories."""
    import argparse

    from ego_ros.cli._model import model_fingerprint

    for family, path in tiny_model_dirs.items():
        args = argparse.Namespace(model=path, family="auto", dtype="auto", device="cpu")
        assert model_fingerprint(args) == tiny_backends[family].fingerprint


def test_concepts_rebind_after_a_config_only_change(tmp_path, tiny_backends, tiny_model_dirs,
                                                     make_scene, capsys):
    """A transformers upgrade can add config keys: the same weights then get another
    fingerprint and the store refuses its memories, saying how to re-label them; ``concepts
    rebind`` does, and the upgraded model recognizes with them. Another family is refused."""
    backend = tiny_backends["qwen2_5_vl"]
    memory, _ = introduce_concept(backend, "mug", [make_scene(1)], [2])
    store = tmp_path / "store"
    MemoryStore(store, backend.fingerprint).put(memory)
    upgraded = tmp_path / "upgraded"
    upgraded.mkdir()
    for item in Path(tiny_model_dirs["qwen2_5_vl"]).iterdir():
        (upgraded / item.name).symlink_to(item)
    config = json.loads((upgraded / "config.json").read_text())
    (upgraded / "config.json").unlink()
    (upgraded / "config.json").write_text(json.dumps({**config, "a_new_default": True}))
    image = tmp_path / "q.png"
    import cv2

    assert cv2.imwrite(str(image), make_scene(3))
    # A foreign memory no longer stops the command (issue 11 item 5): it is skipped.
    code, out, err = _run(capsys, "recognize", "--model", upgraded, "--store", store, image)
    assert code == 0 and "mug" not in [c["name"] for c in out["concepts"]]

    code, _, err = _run(capsys, "concepts", "rebind", "--store", store,
                        "--model", tiny_model_dirs["internvl"])
    assert code == 2 and "made by model" in err and "concepts rebind" not in err
    code, out, _ = _run(capsys, "concepts", "rebind", "--store", store, "--model", upgraded)
    assert code == 0 and out["rebound"] == ["mug"]
    assert out["fingerprint"] != backend.fingerprint.to_dict()
    code, out, _ = _run(capsys, "concepts", "rebind", "mug", "--store", store,
                        "--model", upgraded)
    assert code == 0 and out["rebound"] == []
    code, out, err = _run(capsys, "recognize", "--model", upgraded, "--store", store, image)
    assert code == 0, err
    assert [c["name"] for c in out["concepts"]] == ["mug"]
    rebound = MemoryStore(store).get("mug")
    assert np.array_equal(rebound.tokens.numpy(), memory.tokens.numpy())

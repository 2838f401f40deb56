"""Pickled weights are refused unless the user opts in (BackendConfig.allow_pickle_weights,
``model.allow_pickle_weights``, ``--allow-pickle-weights``).

The folders are the real tiny Qwen2.5-VL model re-saved with its weights as a pickle
(``pytorch_model.bin``, what ``save_pretrained(safe_serialization=False)`` wrote before
transformers 5), and hand-made folders whose pickle would leave a marker file if it were ever
unpickled.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ego_ros.backends.base import BackendConfig, BackendError
from ego_ros.backends.loading import load_backend
from ego_ros.cli.main import main

OPTION = "allow_pickle_weights"


def pickled_copy(model_dir: Path, out: Path) -> Path:
    """``model_dir`` with ``model.safetensors`` replaced by ``pytorch_model.bin`` (same keys)."""
    shutil.copytree(model_dir, out, ignore=shutil.ignore_patterns("model.safetensors*"))
    torch.save(load_file(model_dir / "model.safetensors"), out / "pytorch_model.bin")
    return out


class _Marker:
    """Unpickling this creates ``path``: the proof that a file was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def hostile_folder(model_dir: Path, out: Path, weights: str = "pytorch_model.bin",
                   config_extra: dict | None = None) -> tuple[Path, Path]:
    """A folder with the tiny model's config and a ``weights`` pickle that leaves a marker."""
    shutil.copytree(model_dir, out, ignore=shutil.ignore_patterns("model.safetensors*"))
    marker = out.parent / f"{out.name}-was-unpickled"
    (out / weights).write_bytes(pickle.dumps(_Marker(marker)))
    if config_extra:
        config = json.loads((out / "config.json").read_text())
        (out / "config.json").write_text(json.dumps({**config, **config_extra}))
    return out, marker


@pytest.fixture(scope="module")
def qwen_dir(tiny_model_dirs) -> Path:
    return tiny_model_dirs["qwen2_5_vl"]


def test_a_folder_with_only_pickled_weights_is_refused_naming_the_option(qwen_dir, tmp_path):
    folder = pickled_copy(qwen_dir, tmp_path / "bin_model")
    with pytest.raises(BackendError) as exc:
        load_backend(BackendConfig(folder, device="cpu", dtype="float32"))
    message = str(exc.value)
    assert "pytorch_model.bin" in message and "safetensors" in message
    assert "model.allow_pickle_weights" in message and "--allow-pickle-weights" in message


def test_the_opt_in_loads_the_same_model(qwen_dir, tmp_path, tiny_backends):
    folder = pickled_copy(qwen_dir, tmp_path / "bin_model")
    backend = load_backend(BackendConfig(folder, device="cpu", dtype="float32",
                                         allow_pickle_weights=True))
    reference = tiny_backends["qwen2_5_vl"]
    assert backend.fingerprint == reference.fingerprint
    ours = backend.adapter.model.state_dict()
    theirs = reference.adapter.model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.parametrize("case", ["bin only", "config names a .bin", "index names .bin shards"])
def test_a_hostile_pickle_is_never_unpickled(qwen_dir, tmp_path, case):
    if case == "bin only":
        folder, marker = hostile_folder(qwen_dir, tmp_path / "m")
    elif case == "config names a .bin":
        # transformers follows config.json's transformers_weights before use_safetensors
        folder, marker = hostile_folder(qwen_dir, tmp_path / "m", "adapter_model.bin",
                                        {"transformers_weights": "adapter_model.bin"})
        shutil.copy(qwen_dir / "model.safetensors", folder)  # even beside safe weights
    else:
        folder, marker = hostile_folder(qwen_dir, tmp_path / "m", "shard-1.bin")
        (folder / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": {"lm_head.weight": "shard-1.bin"}}))
    with pytest.raises(BackendError, match=OPTION):
        load_backend(BackendConfig(folder, device="cpu", dtype="float32"))
    assert not marker.exists()


def test_a_folder_without_weights_says_so(qwen_dir, tmp_path):
    folder = tmp_path / "empty"
    shutil.copytree(qwen_dir, folder, ignore=shutil.ignore_patterns("model.safetensors*"))
    with pytest.raises(BackendError, match="has no weights"):
        load_backend(BackendConfig(folder, device="cpu"))


def test_the_option_must_be_a_bool():
    with pytest.raises(ValueError, match="model.allow_pickle_weights"):
        BackendConfig("/x", allow_pickle_weights="yes")


def test_cli_refuses_then_accepts_with_the_flag(qwen_dir, tmp_path, capsys):
    import cv2

    folder = pickled_copy(qwen_dir, tmp_path / "bin_model")
    frame = tmp_path / "frame.png"
    cv2.imwrite(str(frame), np.full((32, 32, 3), 120, np.uint8))
    argv = ["introduce", "--model", str(folder), "--store", str(tmp_path / "store"),
            "--device", "cpu", "--name", "grey card", str(frame)]
    assert main(argv) == 2
    assert "--allow-pickle-weights" in capsys.readouterr().err
    assert main([*argv, "--allow-pickle-weights"]) == 0


def test_worker_and_node_parameters_carry_the_opt_in(qwen_dir, tmp_path):
    from ego_ros.cli.up import worker_arguments
    from ego_ros.ros.params import PARAMS, settings_from_parameters
    from ego_ros.serving.worker import WorkerConfig, add_arguments, build_engine, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    folder = pickled_copy(qwen_dir, tmp_path / "bin_model")
    base = ["--model", str(folder), "--store", str(tmp_path / "store"), "--device", "cpu"]
    assert not config_from_args(parser.parse_args(base)).allow_pickle_weights
    assert config_from_args(parser.parse_args([*base, "--allow-pickle-weights"])
                            ).allow_pickle_weights
    with pytest.raises(BackendError, match="--allow-pickle-weights"):
        build_engine(WorkerConfig(model=folder, store=tmp_path / "store", device="cpu"))
    assert build_engine(WorkerConfig(model=folder, store=tmp_path / "store", device="cpu",
                                     allow_pickle_weights=True)).health()["ok"]

    values = {spec.name: spec.default for spec in PARAMS}
    values.update({"model.path": str(folder), "model.allow_pickle_weights": True})
    assert settings_from_parameters(values).backend.allow_pickle_weights
    # ego-ros up / the launch file pass the node's parameter on to the worker
    for value in (True, False):
        args = worker_arguments({**values, "model.allow_pickle_weights": value}, "ipc:///tmp/x")
        assert config_from_args(parser.parse_args(args)).allow_pickle_weights is value

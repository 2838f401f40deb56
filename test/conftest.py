"""Test-wide set-up: isolate ROS 2 traffic of this run and share the tiny models."""

from __future__ import annotations

import os

import numpy as np
import pytest

# Before anything imports rclpy: a domain of our own and localhost-only discovery, so parallel
# runs on one machine (or a robot on the same network) never see our traffic.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


FAMILIES = ("qwen2_5_vl", "internvl")


@pytest.fixture(scope="session")
def tiny_model_dirs() -> dict:
    """Both offline tiny models, built once per cache (``EGO_ROS_CACHE`` or ~/.cache/ego_ros)."""
    from ego_ros.backends.tiny import ensure_tiny_model

    return {family: ensure_tiny_model(family) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_backends(tiny_model_dirs) -> dict:
    """Loaded backends of both tiny models (float32, CPU), shared by the whole session."""
    from ego_ros.backends.base import BackendConfig
    from ego_ros.backends.loading import load_backend

    return {f: load_backend(BackendConfig(p, device="cpu", dtype="float32"))
            for f, p in tiny_model_dirs.items()}


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture
def backend(tiny_backends, family):
    return tiny_backends[family]


def scene_image(seed: int = 0, size: tuple[int, int] = (224, 224)) -> np.ndarray:
    """A deterministic RGB test image: a textured background with a bright square object."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
    y, x = h // 4 + seed % 7, w // 3 + seed % 11
    img[y:y + h // 3, x:x + w // 3] = rng.integers(150, 255, 3, dtype=np.uint8)
    return img


@pytest.fixture
def make_scene():
    """``make_scene(seed=0, size=(224, 224))`` -> a deterministic RGB test image."""
    return scene_image


@pytest.fixture
def one_torch_thread():
    """Tiny models gain nothing from several threads, and on a busy shared CPU spinning thread
    pools make them several times slower; restore the setting for other test files."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""Memory strategies (ablation baselines, ``ego_ros.core.strategies``) on the tiny models.

Each strategy's selection is what it claims, and what the backend receives in context is what
it claims: the real engine and backend run; the backend's ``embed`` (the soft-prompt seam) and
``render`` are wrapped only to record what passes through them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ego_ros.backends.base import Visual
from ego_ros.core.engine import EgoEngine, EngineConfig
from ego_ros.core.introduce import IntroduceConfig
from ego_ros.core.selection import SelectionConfig, memory_size
from ego_ros.core.store import MemoryStore
from ego_ros.core.strategies import (
    DESCRIPTION_PROMPT,
    STRATEGIES,
    evenly_spaced,
    get_strategy,
    memory_keywords,
    parse_strategies,
)

NAME = "red box"


@pytest.fixture
def seen(backend, monkeypatch):
    """Records every prompt rendered and every segment list embedded by the real backend."""
    log = {"render": [], "embed": []}
    real_render, real_embed = backend.render, backend.embed

    def render(content, visuals):
        log["render"].append(content)
        return real_render(content, visuals)

    def embed(segments, start_pos=0):
        log["embed"].append(list(segments))
        return real_embed(segments, start_pos)

    monkeypatch.setattr(backend, "render", render)
    monkeypatch.setattr(backend, "embed", embed)
    return log


def _engine(backend, tmp_path, strategy: str) -> EgoEngine:
    config = EngineConfig(introduce=IntroduceConfig(strategy=strategy), prefix_cache_size=0)
    return EgoEngine(backend, MemoryStore(tmp_path / strategy, backend.fingerprint), config)


def _blocks(segment_lists, kind: str) -> list[Visual]:
    return [s for segs in segment_lists for s in segs if isinstance(s, Visual) and s.kind == kind]


def test_evenly_spaced_and_names() -> None:
    for n, k in ((64, 12), (35, 7), (10, 10), (9, 1), (100, 33)):
        idx = evenly_spaced(n, k)
        assert idx.numel() == k and idx.dtype == torch.int64
        gaps = set(torch.diff(idx).tolist())
        assert gaps <= {n // k, -(-n // k)}, (n, k, gaps)  # as even as integers allow
        assert int(idx[0]) < n / k and int(idx[-1]) >= n - n / k  # spans the whole grid
    with pytest.raises(ValueError, match="k must be"):
        evenly_spaced(4, 5)
    assert parse_strategies(" uniform,ego,uniform ") == ("uniform", "ego")
    with pytest.raises(ValueError, match="memory strategies"):
        parse_strategies("ego,best")
    with pytest.raises(ValueError, match="IntroduceConfig.strategy"):
        IntroduceConfig(strategy="random")
    assert get_strategy("ego").cache_prefix and not get_strategy("reference-images").cache_prefix


def test_each_strategy_selects_and_injects_what_it_claims(backend, tmp_path, make_scene, seen,
                                                          one_torch_thread) -> None:
    image, frame = make_scene(3), make_scene(5)
    full = backend.encode_images([image])[0]  # [N_r, D]: the view's visual tokens
    n = full.num_tokens
    sel = SelectionConfig()
    k = memory_size(100.0, n, sel.ratio, sel.min_tokens)  # the cap K
    memories, results, contexts = {}, {}, {}
    for name in STRATEGIES:
        engine = _engine(backend, tmp_path, name)
        seen["render"].clear()
        results[name] = engine.introduce(NAME, [image])
        introduced_with = "".join(seen["render"])
        memories[name] = memory = engine.store.get(NAME)
        (view,) = memory.views
        assert view.grid[0] * view.grid[1] == n
        # the stored rows are the projector's, bit for bit
        assert torch.equal(memory.tokens, full.tokens[view.indices].cpu()), name
        assert (DESCRIPTION_PROMPT in introduced_with) == (name == "description"), name
        seen["render"].clear()
        seen["embed"].clear()
        result = engine.recognize([frame])
        assert [s.name for s in result.concepts] == [NAME]
        contexts[name] = ("".join(seen["render"]), _blocks(seen["embed"], "memory"),
                          _blocks(seen["embed"], "image"), engine.memory_footprint(NAME))

    # the selections
    k_c = sel.memory_size(results["ego"].area_percent[0], n)[0]
    ego = memories["ego"].views[0].indices
    assert ego.numel() == k_c <= k
    assert torch.equal(memories["uniform"].views[0].indices, evenly_spaced(n, k))
    for name in ("full", "full+keywords", "reference-images"):
        assert torch.equal(memories[name].views[0].indices, torch.arange(n)), name
    fixed = memories["fixed-k"].views[0].indices
    assert fixed.numel() == k
    # the same attention ranks both (greedy decoding is deterministic): Ego's top-K_c are the
    # first of fixed-k's top-K
    assert set(ego.tolist()) <= set(fixed.tolist())
    assert torch.equal(memories["keywords"].views[0].indices, ego)  # kept for retrieval only
    assert memories["description"].views[0].indices.numel() == k_c

    # what the backend received in context
    for name, (prompt, memory_blocks, images, budget) in contexts.items():
        memory = memories[name]
        words = ", ".join(memory_keywords(memory, backend.special_tokens)) or "(no keywords)"
        assert budget["view_tokens"] == n
        if name == "keywords":
            assert memory_blocks == [] and len(images) == 1  # the query only: no visual memory
            assert f"{NAME}: {words}\n" in prompt
            assert budget["visual"] == 0 and budget["text"] > 0
        elif name == "reference-images":
            # the whole reference image, re-encoded (kind "image", every grid cell), then the
            # query: no stored rows in context
            assert memory_blocks == [] and len(images) == 2
            ref = images[0]
            assert ref.num_tokens == n and torch.equal(ref.coords, full.coords)
            torch.testing.assert_close(ref.tokens, full.tokens)
            assert budget["visual"] == n
        else:
            (block,) = memory_blocks
            assert torch.equal(block.tokens.cpu(), memory.tokens)
            expected = {"ego": k_c, "uniform": k, "fixed-k": k, "full": n,
                        "full+keywords": n, "description": memory.num_tokens}[name]
            assert block.num_tokens == budget["visual"] == expected, name
            item = f"{NAME}: <ego:m0> {words}\n" if name == "full+keywords" else (
                f"{NAME}: <ego:m0>\n")
            assert item in prompt, name


def test_reference_images_are_encoded_for_every_question(backend, tmp_path, make_scene,
                                                         monkeypatch, one_torch_thread) -> None:
    image = make_scene(6)
    # a prefix cache configured: the strategy itself turns reuse off
    cached = EgoEngine(backend, MemoryStore(tmp_path / "c", backend.fingerprint),
                       EngineConfig(introduce=IntroduceConfig(strategy="reference-images")))
    cached.introduce(NAME, [image])
    calls = []
    real = backend.encode_images

    def encode(images):
        calls.append(sum(np.array_equal(img, image) for img in images))
        return real(images)

    monkeypatch.setattr(backend, "encode_images", encode)
    for _ in range(2):
        cached.recognize([make_scene(7)])
    assert sum(calls) == 2  # once per question even with a prefix cache configured
    assert cached.stats["prefix_hits"] == 0
    fresh = EgoEngine(backend, MemoryStore(tmp_path / "c", backend.fingerprint),
                      EngineConfig(introduce=IntroduceConfig(strategy="reference-images")))
    with pytest.raises(ValueError, match="re-encodes the reference images"):
        fresh.recognize([make_scene(7)])  # loaded from the store: no images to re-encode

"""Concept retrieval by mean max-sim in the embedding space."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ego_ros.core.retrieval import ConceptIndex


def _reference_score(memory: torch.Tensor, query: torch.Tensor) -> float:
    """Mean over memory tokens of the best cosine to any query token, one token at a time."""
    best = []
    for m in memory.double():
        best.append(max(F.cosine_similarity(m, q.double(), dim=0).item() for q in query))
    return sum(best) / len(best)


def _random_memories(n: int, tokens: int, dim: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {f"concept_{i:04d}": torch.randn(tokens, dim, generator=gen) for i in range(n)}


def test_memory_made_from_the_query_ranks_first_among_1000() -> None:
    gen = torch.Generator().manual_seed(1)
    dim = 64
    query = torch.randn(196, dim, generator=gen)  # a 14x14 token grid
    memories = _random_memories(1000, 20, dim, seed=2)
    # The query's own concept: 20 of its tokens (scaled, as projector rows differ in norm).
    memories["mine"] = query[torch.randperm(196, generator=gen)[:20]] * 3.0
    # A decoy built from a quarter of the query's tokens plus noise, so the winner is not the
    # only concept with some overlap.
    decoy = torch.randn(20, dim, generator=gen)
    decoy[:5] = query[:5]
    memories["decoy"] = decoy
    index = ConceptIndex.from_memories(memories)
    assert len(index) == 1002 and index.num_rows == 1002 * 20
    ranked = index.rank(query, k=5)
    assert [name for name, _ in ranked[:2]] == ["mine", "decoy"]
    assert ranked[0][1] == pytest.approx(1.0, abs=1e-5)
    assert len(ranked) == 5
    assert all(a[1] >= b[1] for a, b in zip(ranked, ranked[1:]))


def test_scores_match_a_per_token_reference() -> None:
    memories = _random_memories(6, 7, 16, seed=3)
    memories["short"] = torch.randn(1, 16, generator=torch.Generator().manual_seed(4))
    query = torch.randn(9, 16, generator=torch.Generator().manual_seed(5))
    index = ConceptIndex.from_memories(memories, chunk_rows=5)  # chunk boundaries inside concepts
    scores = index.scores(query)
    assert set(scores) == set(memories)
    for name, memory in memories.items():
        assert scores[name] == pytest.approx(_reference_score(memory, query), abs=1e-5)


def test_ties_are_ordered_by_name_whatever_the_insertion_order() -> None:
    shared = torch.randn(4, 8, generator=torch.Generator().manual_seed(6))
    query = torch.randn(3, 8, generator=torch.Generator().manual_seed(7))
    names = ["zeta", "alpha", "mu", "beta"]
    for order in (names, names[::-1]):
        index = ConceptIndex.from_memories({n: shared.clone() for n in order})
        ranked = index.rank(query)
        assert [n for n, _ in ranked] == ["alpha", "beta", "mu", "zeta"]
        assert len({s for _, s in ranked}) == 1


def test_incremental_add_and_remove_match_a_fresh_build() -> None:
    memories = _random_memories(40, 5, 12, seed=8)
    query = torch.randn(10, 12, generator=torch.Generator().manual_seed(9))
    index = ConceptIndex(dim=12)
    for name, memory in memories.items():
        index.add(name, memory)
    removed = [f"concept_{i:04d}" for i in range(0, 40, 3)]
    for name in removed:
        index.remove(name)
    replaced = torch.randn(2, 12, generator=torch.Generator().manual_seed(10))
    index.add("concept_0001", replaced)  # replace an existing concept's memory
    index.add("late", memories["concept_0003"].clone())  # reuses a freed slot
    expected = {k: v for k, v in memories.items() if k not in removed}
    expected["concept_0001"] = replaced
    expected["late"] = memories["concept_0003"]
    fresh = ConceptIndex.from_memories(expected)
    got, want = index.rank(query), fresh.rank(query)
    assert [n for n, _ in got] == [n for n, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-6)
    assert index.num_rows == sum(v.shape[0] for v in expected.values())
    assert "concept_0000" not in index and "late" in index


def test_removing_most_concepts_compacts_and_keeps_scores() -> None:
    memories = _random_memories(20, 3, 8, seed=11)
    query = torch.randn(4, 8, generator=torch.Generator().manual_seed(12))
    index = ConceptIndex.from_memories(memories)
    before = index.scores(query)
    for i in range(15):
        index.remove(f"concept_{i:04d}")
    # compacted whenever dead rows outnumbered live ones: never more dead than live rows
    assert index.num_rows == 15 and index._size <= 2 * index.num_rows < 60
    after = index.scores(query)
    assert set(after) == {f"concept_{i:04d}" for i in range(15, 20)}
    for name, score in after.items():
        assert score == pytest.approx(before[name], abs=1e-6)
    index.add("new", memories["concept_0000"])
    assert index.scores(query)["new"] == pytest.approx(before["concept_0000"], abs=1e-6)


def test_empty_index_and_k_bounds() -> None:
    index = ConceptIndex(dim=4)
    query = torch.ones(2, 4)
    assert index.rank(query, k=3) == []
    empty = ConceptIndex.from_memories({}, dim=4)
    assert len(empty) == 0 and empty.rank(query) == []
    index.add("a", torch.ones(1, 4))
    assert index.rank(query, k=0) == []
    assert [n for n, _ in index.rank(query, k=10)] == ["a"]
    with pytest.raises(ValueError, match="k must be"):
        index.rank(query, k=-1)


def test_low_precision_memories_and_large_width() -> None:
    dim = 3584  # Qwen2.5-VL-7B hidden size
    memories = {k: v.to(torch.bfloat16) for k, v in _random_memories(30, 20, dim, 13).items()}
    query = memories["concept_0007"].float()[::2]  # half of one concept's tokens
    index = ConceptIndex.from_memories(memories)
    assert index._rows.dtype == torch.float32
    assert index.rank(query, k=1)[0][0] == "concept_0007"


@pytest.mark.parametrize(
    ("tokens", "match"),
    [
        (torch.zeros(0, 4), r"shape \[N>0, 4\]"),
        (torch.zeros(3, 5), r"shape \[N>0, 4\]"),
        (torch.zeros(4), r"shape \[N>0, 4\]"),
        (torch.tensor([[1.0, float("nan"), 0.0, 0.0]]), "NaN"),
    ],
)
def test_bad_memories_are_refused_with_the_concept_name(tokens, match) -> None:
    index = ConceptIndex(dim=4)
    with pytest.raises(ValueError, match=match) as info:
        index.add("anna", tokens)
    assert "anna" in str(info.value)


def test_bad_queries_and_unknown_names() -> None:
    index = ConceptIndex.from_memories({"a": torch.ones(2, 4)})
    with pytest.raises(ValueError, match="query tokens"):
        index.rank(torch.ones(3, 5))
    with pytest.raises(ValueError, match="query tokens"):
        index.rank(torch.ones(0, 4))
    with pytest.raises(KeyError, match="nobody"):
        index.remove("nobody")
    with pytest.raises(ValueError, match="dim=5"):
        ConceptIndex.from_memories({"a": torch.ones(2, 4)}, dim=5)
    with pytest.raises(ValueError, match="dim"):
        ConceptIndex(dim=0)


def test_callers_tensors_are_not_modified() -> None:
    single = torch.full((2, 4), 3.0)
    ConceptIndex.from_memories({"a": single})
    index = ConceptIndex(dim=4)
    index.add("b", single)
    assert torch.equal(single, torch.full((2, 4), 3.0))


def test_near_ties_within_float_noise_are_ordered_by_name() -> None:
    # Two concepts whose scores differ only by float32 rounding noise still tie by name.
    base = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    query = torch.tensor([[1.0, 2.0, 3.0, 4.5]])
    index = ConceptIndex.from_memories({"b": base, "a": base * (1 + 1e-7)})
    assert [n for n, _ in index.rank(query)] == ["a", "b"]


def test_coarse_to_fine_keeps_the_exact_top_and_exact_scores():
    """With a pool, the concepts returned carry their exact scores, and on a query made from
    one concept's own tokens that concept still ranks first among 1,000."""
    gen = torch.Generator().manual_seed(7)
    memories = {f"c{i:04d}": torch.randn(20, 64, generator=gen) for i in range(1000)}
    index = ConceptIndex.from_memories(memories)
    target = memories["c0421"]
    query = torch.cat([target[:12] + 0.05 * torch.randn(12, 64, generator=gen),
                       torch.randn(100, 64, generator=gen)])  # [112, 64]
    exact = dict(index.rank(query))
    pooled = index.rank(query, k=10, pool=64)
    assert pooled[0][0] == "c0421"
    for name, score in pooled:
        assert score == pytest.approx(exact[name], abs=1e-5)
    # small stores (fewer concepts than the pool) are always ranked exactly
    few = ConceptIndex.from_memories({n: memories[n] for n in list(memories)[:30]})
    assert few.rank(query, k=5, pool=64) == few.rank(query, k=5)
    # the centroid cache follows adds and removes
    index.remove("c0421")
    assert all(n != "c0421" for n, _ in index.rank(query, k=10, pool=64))
    index.add("c0421", target)
    assert index.rank(query, k=1, pool=64)[0][0] == "c0421"
    with pytest.raises(ValueError, match="pool"):
        index.rank(query, k=1, pool=0)


def test_pooled_scores_gather_rows_of_uneven_and_moved_memories():
    """The pooled search gathers each kept concept's rows in one product: memories of uneven
    lengths, rows left dead by a removal and a replaced memory must all score exactly."""
    gen = torch.Generator().manual_seed(3)
    memories = {f"c{i:03d}": torch.randn(1 + i % 9, 16, generator=gen) for i in range(120)}
    index = ConceptIndex.from_memories(memories)
    index.remove("c007")  # dead rows in the middle of the buffer
    index.add("c011", torch.randn(13, 16, generator=gen))  # moved to the end, longer
    query = torch.randn(30, 16, generator=gen)
    exact = dict(index.rank(query))
    pooled = index.rank(query, k=None, pool=40)
    assert len(pooled) == 40 and "c007" not in dict(pooled)
    for name, score in pooled:
        assert score == pytest.approx(exact[name], abs=1e-6)
    centroids, names, _, _ = index._centroids()
    for row, name in zip(centroids, names):
        start, end = index._span[index._slot_of[name]]
        mean = index._rows[start:end].mean(dim=0)
        assert torch.allclose(row, mean / mean.norm(), atol=1e-6)

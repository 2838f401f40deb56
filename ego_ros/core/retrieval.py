"""Ranking stored concepts by similarity to a query in the LLM embedding space (paper §3.5).

When more concepts are known than fit in the context, the engine keeps the ones whose memories
look most like the query frame. Memories are already visual tokens in the LLM embedding space,
and so are the query's projector outputs, so the comparison needs no extra model.

Measure ("mean max-sim"): every token is L2-normalised; for concept ``c`` with memory tokens
``m_1..m_N`` and query tokens ``q_1..q_M``::

    score(c) = mean_i  max_j  cos(m_i, q_j)

It asks "is each remembered patch visible somewhere in the query?". Taking the max over the
query makes the score indifferent to how much else the frame shows (clutter, other objects);
taking the mean over the memory makes concepts with many and few tokens comparable and
rewards matching *all* highlights of a concept rather than one generic patch. Scores lie in
[-1, 1].

Cost per query: one ``[N_q, D] x [D, sum N_c]`` matmul (done in row chunks to bound memory),
a max over the query axis and one segment mean (``index_add_``) over all memory rows. All
memory tokens live in one float32 matrix, so 1,000 concepts x 20 tokens is one matmul.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
import torch.nn.functional as F

__all__ = ["ConceptIndex"]

log = logging.getLogger(__name__)

# Scores closer than this many decimals count as tied (float32 has about 7 significant digits).
_TIE_DECIMALS = 6


class ConceptIndex:
    """All concepts' memory tokens stacked into one normalised float32 matrix, for ranking.

    Rows are appended into a buffer with doubling capacity, so :meth:`add` is amortised O(new
    rows); :meth:`remove` marks rows dead (owner ``-1``) and the buffer is compacted once dead
    rows outnumber live ones. Not thread-safe: the engine calls it under its own lock.
    """

    def __init__(self, dim: int, device: torch.device | str = "cpu", chunk_rows: int = 16384):
        if dim <= 0:
            raise ValueError(f"ConceptIndex.dim must be positive, got {dim}")
        if chunk_rows <= 0:
            raise ValueError(f"ConceptIndex.chunk_rows must be positive, got {chunk_rows}")
        self.dim = dim
        self.device = torch.device(device)
        self.chunk_rows = chunk_rows
        self._rows = torch.empty(0, dim, dtype=torch.float32, device=self.device)  # [cap, D]
        self._owner = torch.empty(0, dtype=torch.long, device=self.device)  # [cap] slot or -1
        self._size = 0  # rows in use (live and dead)
        self._dead = 0
        self._slot_of: dict[str, int] = {}
        self._names: list[str | None] = []  # slot -> name, None when free
        self._span: list[tuple[int, int]] = []  # slot -> (first row, end row)
        self._free: list[int] = []
        # (centroids [C, D], names, first rows [C], row counts [C]), until the next change
        self._centroid_cache: (tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor]
                               | None) = None

    @classmethod
    def from_memories(
        cls,
        memories: Mapping[str, torch.Tensor],
        device: torch.device | str | None = None,
        chunk_rows: int = 16384,
        dim: int | None = None,
    ) -> ConceptIndex:
        """Build from ``{name: memory tokens [N_c, D]}`` with a single concatenation.

        ``device`` defaults to the device of the first memory (CPU when there is none);
        ``dim`` is needed only to build an empty index from an empty mapping."""
        items = list(memories.items())
        if not items:
            if dim is None:
                raise ValueError("ConceptIndex.from_memories: no memories and no dim given; "
                                 "pass dim= to build an empty index")
            return cls(dim, "cpu" if device is None else device, chunk_rows)
        first = items[0][1]
        if dim is not None and dim != first.shape[-1]:
            raise ValueError(f"ConceptIndex.from_memories: dim={dim} but the memory of "
                             f"{items[0][0]!r} has width {first.shape[-1]}")
        index = cls(first.shape[-1], first.device if device is None else device, chunk_rows)
        for name, tokens in items:
            index._check(name, tokens)
        # One concatenation, then normalisation in place: peak memory is one copy of the rows.
        rows = torch.cat([t.to(index.device, torch.float32) for _, t in items])  # [sum N_c, D]
        index._rows = index._normalise_(rows, dict(items))
        index._size = rows.shape[0]
        owners, start = [], 0
        for slot, (name, tokens) in enumerate(items):
            n = tokens.shape[0]
            index._slot_of[name] = slot
            index._names.append(name)
            index._span.append((start, start + n))
            owners.append(torch.full((n,), slot, dtype=torch.long))
            start += n
        index._owner = torch.cat(owners).to(index.device)  # [sum N_c]
        return index

    def _check(self, name: str, tokens: torch.Tensor) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"ConceptIndex: concept name must be a non-empty string, got {name!r}")
        if tokens.dim() != 2 or tokens.shape[0] == 0 or tokens.shape[1] != self.dim:
            raise ValueError(
                f"ConceptIndex: memory of {name!r} must have shape [N>0, {self.dim}], "
                f"got {tuple(tokens.shape)}"
            )

    @staticmethod
    def _normalise_(rows: torch.Tensor, memories: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """L2-normalise float32 ``rows`` in place; refuse NaN/inf naming the concept."""
        if not torch.isfinite(rows).all():
            bad = next(n for n, t in memories.items() if not torch.isfinite(t).all())
            raise ValueError(f"ConceptIndex: memory of {bad!r} holds NaN or inf values")
        norms = torch.linalg.vector_norm(rows, dim=-1, keepdim=True)  # [M, 1]
        return rows.div_(norms.clamp_min_(1e-12))  # zero rows stay zero (cosine 0)

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, name: object) -> bool:
        return name in self._slot_of

    @property
    def names(self) -> list[str]:
        """Concept names in the order they were (last) added."""
        return list(self._slot_of)

    @property
    def num_rows(self) -> int:
        """Live memory rows (all concepts' tokens)."""
        return self._size - self._dead

    def add(self, name: str, tokens: torch.Tensor) -> None:
        """Add a concept, or replace its memory if the name is already indexed."""
        self._check(name, tokens)
        self._centroid_cache = None
        block = tokens.to(self.device, torch.float32, copy=True)  # [N_c, D], never the caller's
        block = self._normalise_(block, {name: tokens})
        if name in self._slot_of:
            self.remove(name)
        n = block.shape[0]
        if self._size + n > self._rows.shape[0]:
            capacity = max(2 * self._rows.shape[0], self._size + n, 64)
            rows = torch.empty(capacity, self.dim, dtype=torch.float32, device=self.device)
            owner = torch.full((capacity,), -1, dtype=torch.long, device=self.device)
            rows[: self._size] = self._rows[: self._size]
            owner[: self._size] = self._owner[: self._size]
            self._rows, self._owner = rows, owner
        slot = self._free.pop() if self._free else len(self._names)
        if slot == len(self._names):
            self._names.append(name)
            self._span.append((0, 0))
        self._names[slot] = name
        self._slot_of[name] = slot
        self._span[slot] = (self._size, self._size + n)
        self._rows[self._size : self._size + n] = block
        self._owner[self._size : self._size + n] = slot
        self._size += n

    def remove(self, name: str) -> None:
        """Forget a concept; raises ``KeyError`` naming it when it is not indexed."""
        if name not in self._slot_of:
            raise KeyError(f"ConceptIndex: no concept named {name!r}")
        self._centroid_cache = None
        slot = self._slot_of.pop(name)
        start, end = self._span[slot]
        self._owner[start:end] = -1
        self._dead += end - start
        self._names[slot] = None
        self._free.append(slot)
        if self._dead > self.num_rows:
            self._compact()

    def _compact(self) -> None:
        """Drop dead rows; keeps each concept's rows contiguous and its slot."""
        live = self._owner[: self._size] >= 0  # [size]
        self._rows = self._rows[: self._size][live]  # [live, D], a fresh tensor
        self._owner = self._owner[: self._size][live]  # [live]
        self._size, self._dead = self._rows.shape[0], 0
        start = 0
        for slot in sorted(self._slot_of.values(), key=lambda s: self._span[s][0]):
            n = self._span[slot][1] - self._span[slot][0]
            self._span[slot] = (start, start + n)
            start += n
        log.debug("ConceptIndex compacted to %d rows for %d concepts", self._size, len(self))

    def scores(self, query_tokens: torch.Tensor) -> dict[str, float]:
        """Mean max-sim score of every indexed concept for one query ``[N_q, D]``."""
        if query_tokens.dim() != 2 or query_tokens.shape[1] != self.dim or not len(query_tokens):
            raise ValueError(f"ConceptIndex: query tokens must have shape [N>0, {self.dim}], "
                             f"got {tuple(query_tokens.shape)}")
        if not self._slot_of:
            return {}
        q = F.normalize(query_tokens.to(self.device, torch.float32), dim=-1)  # [N_q, D]
        best = torch.empty(self._size, dtype=torch.float32, device=self.device)  # [M]
        for lo in range(0, self._size, self.chunk_rows):
            hi = min(lo + self.chunk_rows, self._size)
            sims = self._rows[lo:hi] @ q.T  # [m, N_q]
            best[lo:hi] = sims.amax(dim=1)
        slots = len(self._names)
        owner = self._owner[: self._size].clone()  # [M]
        owner[owner < 0] = slots  # dead rows go to a spare bin
        sums = torch.zeros(slots + 1, dtype=torch.float32, device=self.device)
        sums.index_add_(0, owner, best)  # [slots + 1]
        counts = torch.tensor([e - s for s, e in self._span] + [1], dtype=torch.float32)
        means = (sums.cpu() / counts.clamp_min(1)).tolist()
        return {name: means[slot] for name, slot in self._slot_of.items()}

    def rank(self, query_tokens: torch.Tensor, k: int | None = None,
             pool: int | None = None) -> list[tuple[str, float]]:
        """The top-``k`` concepts (all when ``k`` is None) as ``(name, score)``, best first.

        With ``pool`` (and more concepts than that), the search is coarse to fine: every
        concept is first scored by its *centroid* (the normalised mean of its memory tokens)
        against the query tokens, max over the query, and only the best ``pool`` concepts are
        scored exactly (mean max-sim over all their tokens). The pre-filter costs one
        ``[concepts, D] x [D, N_q]`` product instead of ``[memory tokens, D] x [D, N_q]``; the
        exact scores of the returned concepts are unchanged, and a concept that is missed must
        rank below ``pool`` others by centroid.

        Ties are ordered by name, so the ranking is deterministic. Scores are compared rounded
        to ``_TIE_DECIMALS`` decimals: float32 sums on a GPU (``index_add_`` with atomics) may
        differ in the last bits between runs, and identical memories must still tie."""
        if k is not None and k < 0:
            raise ValueError(f"ConceptIndex.rank: k must be >= 0 or None, got {k}")
        if pool is not None and pool < 1:
            raise ValueError(f"ConceptIndex.rank: pool must be >= 1 or None, got {pool}")
        if pool is not None and len(self) > pool:
            scores = self._pooled_scores(query_tokens, pool)
        else:
            scores = self.scores(query_tokens)
        ranked = sorted(scores.items(), key=lambda kv: (-round(kv[1], _TIE_DECIMALS), kv[0]))
        return ranked if k is None else ranked[:k]

    def _centroids(self) -> tuple[torch.Tensor, list[str], torch.Tensor, torch.Tensor]:
        """Per live concept: its normalised mean memory token ``[C, D]``, the names, and the
        first row and row count of its memory ``[C]`` each; cached until the next
        add/remove."""
        if self._centroid_cache is None:
            names = list(self._slot_of)
            spans = [self._span[self._slot_of[n]] for n in names]
            starts = torch.tensor([s for s, _ in spans], dtype=torch.long, device=self.device)
            counts = torch.tensor([e - s for s, e in spans], dtype=torch.long,
                                  device=self.device)
            owner = torch.repeat_interleave(torch.arange(len(names), device=self.device),
                                            counts)  # [R] concept of each live row
            sums = torch.zeros(len(names), self.dim, device=self.device)
            sums.index_add_(0, owner, self._rows[_row_index(starts, counts, owner)])
            cents = F.normalize(sums / counts[:, None], dim=-1)  # [C, D]
            self._centroid_cache = (cents, names, starts, counts)
        return self._centroid_cache

    def _pooled_scores(self, query_tokens: torch.Tensor, pool: int) -> dict[str, float]:
        """Exact scores of the ``pool`` concepts whose centroids best match the query: the
        kept concepts' rows are gathered and scored in one product, whatever ``pool``."""
        q = F.normalize(query_tokens.to(self.device, torch.float32), dim=-1)  # [N_q, D]
        cents, names, starts, counts = self._centroids()
        coarse = (cents @ q.T).amax(dim=1)  # [C]
        keep = torch.topk(coarse, min(pool, len(names))).indices  # [P]
        kept_counts = counts[keep]  # [P]
        owner = torch.repeat_interleave(torch.arange(len(keep), device=self.device),
                                        kept_counts)  # [R] kept concept of each row
        rows = self._rows[_row_index(starts[keep], kept_counts, owner)]  # [R, D]
        best = (rows @ q.T).amax(dim=1)  # [R]
        sums = torch.zeros(len(keep), dtype=torch.float32, device=self.device)
        sums.index_add_(0, owner, best)  # [P]
        means = (sums / kept_counts).tolist()
        return {names[i]: m for i, m in zip(keep.tolist(), means)}


def _row_index(starts: torch.Tensor, counts: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """Row numbers ``[R]`` of consecutive spans (``starts``, ``counts`` ``[P]``), where
    ``owner`` ``[R]`` names the span of each output row (``repeat_interleave`` of the counts)."""
    first = torch.cumsum(counts, 0) - counts  # [P] where each span begins in the output
    return starts[owner] + torch.arange(owner.numel(), device=owner.device) - first[owner]

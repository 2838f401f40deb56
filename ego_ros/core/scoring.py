"""Calibrated recognition scores from yes/no token probabilities, and decision thresholds.

The paper decides recognition from the generated word. A score lets a user pick a precision /
recall trade-off per concept and draw PR curves: ``score = P(yes) / (P(yes) + P(no))`` read from
the logits of the first answer token, where ``P(yes)`` sums the probability of every spelling of
"yes" the tokenizer has ("Yes", " yes", "YES", ...), and likewise for "no".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

__all__ = ["Thresholds", "answer_variants", "decide", "yes_no_score"]

# Finite stand-in for +-inf logits (a logits processor may write -inf). Large enough to dominate
# any real logit, small enough that logsumexp over a few of them stays finite in float32.
_BIG = 1e30


def answer_variants(word: str) -> tuple[str, ...]:
    """Spellings of an answer word a tokenizer may emit first: "yes" -> ("yes", "Yes", "YES",
    " yes", " Yes", " YES"). A backend maps those with a single-token encoding to ids."""
    forms = dict.fromkeys((word.lower(), word.capitalize(), word.upper()))
    return tuple(forms) + tuple(" " + f for f in forms)


def _check_ids(ids: Sequence[int], what: str, vocab: int) -> list[int]:
    unique = sorted({int(i) for i in ids})
    if not unique:
        raise ValueError(f"{what}: need at least one token id, got none")
    bad = [i for i in unique if not 0 <= i < vocab]
    if bad:
        raise ValueError(f"{what}: token ids {bad} are outside the vocabulary of size {vocab}")
    return unique


def yes_no_score(
    logits: torch.Tensor, yes_ids: Sequence[int], no_ids: Sequence[int]
) -> torch.Tensor:
    """``P(yes) / (P(yes) + P(no))`` from next-token logits ``[V]`` or ``[B, V]``.

    Computed as ``sigmoid(logsumexp(logits[yes]) - logsumexp(logits[no]))`` in float32: the
    softmax normaliser cancels, so no full softmax is needed and nothing under- or overflows.
    Duplicate ids count once; ``yes_ids`` and ``no_ids`` must not share an id.

    Extreme inputs: +-inf logits are replaced by +-1e30 first, so a row where yes and no are
    both masked to -inf (or both +inf) scores 0.5 (no evidence either way) instead of NaN. A NaN
    logit among the yes/no ids gives a NaN score for that row (the model itself failed; a NaN
    score is how ``ConceptScore`` says "no score").

    Returns a float32 tensor of shape ``[]`` for ``[V]`` input, ``[B]`` for ``[B, V]``.
    """
    if logits.dim() not in (1, 2):
        raise ValueError(f"logits: expected shape [V] or [B, V], got {tuple(logits.shape)}")
    vocab = logits.shape[-1]
    yes = _check_ids(yes_ids, "yes_ids", vocab)
    no = _check_ids(no_ids, "no_ids", vocab)
    shared = sorted(set(yes) & set(no))
    if shared:
        raise ValueError(f"yes_ids and no_ids share token ids {shared}; a token cannot be both")
    device = logits.device
    x = logits.to(torch.float32)  # [..., V]
    x_yes = x.index_select(-1, torch.tensor(yes, device=device))  # [..., n_yes]
    x_no = x.index_select(-1, torch.tensor(no, device=device))  # [..., n_no]
    x_yes = torch.nan_to_num(x_yes, nan=math.nan, posinf=_BIG, neginf=-_BIG)
    x_no = torch.nan_to_num(x_no, nan=math.nan, posinf=_BIG, neginf=-_BIG)
    log_odds = torch.logsumexp(x_yes, dim=-1) - torch.logsumexp(x_no, dim=-1)  # [] or [B]
    return torch.sigmoid(log_odds)


def _check_threshold(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where}: threshold must be a number in [0, 1], got {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{where}: threshold must be in [0, 1], got {value}")
    return value


def decide(score: float, threshold: float = 0.5) -> bool:
    """Present iff ``score >= threshold``. A NaN score (no score available) is never present."""
    threshold = _check_threshold(threshold, "decide(threshold)")
    score = float(score)
    return not math.isnan(score) and score >= threshold


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds: ``default`` for every concept, ``per_concept`` overrides by name.

    Immutable: ``per_concept`` is stored as a read-only mapping; use :meth:`with_override` /
    :meth:`without_override` to derive a changed copy.
    """

    default: float = 0.5
    per_concept: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "default", _check_threshold(self.default, "Thresholds.default"))
        checked: dict[str, float] = {}
        for name, value in dict(self.per_concept).items():
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"Thresholds.per_concept: concept name must be a non-empty "
                                 f"string, got {name!r}")
            checked[name] = _check_threshold(value, f"Thresholds.per_concept[{name!r}]")
        object.__setattr__(self, "per_concept", MappingProxyType(checked))

    def __getitem__(self, name: str) -> float:
        """The threshold for ``name``: its override, else the default."""
        return self.per_concept.get(name, self.default)

    def decide(self, name: str, score: float) -> bool:
        return decide(score, self[name])

    def with_override(self, name: str, value: float) -> Thresholds:
        return Thresholds(self.default, {**self.per_concept, name: value})

    def without_override(self, name: str) -> Thresholds:
        return Thresholds(self.default, {k: v for k, v in self.per_concept.items() if k != name})

    def to_dict(self) -> dict[str, Any]:
        return {"default": self.default, "per_concept": dict(self.per_concept)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Thresholds:
        unknown = set(data) - {"default", "per_concept"}
        if unknown:
            raise ValueError(f"Thresholds: unknown fields {sorted(unknown)}")
        return cls(data.get("default", 0.5), data.get("per_concept", {}))

    def __hash__(self) -> int:
        return hash((self.default, tuple(sorted(self.per_concept.items()))))

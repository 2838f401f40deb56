"""Evaluation protocols: which concepts are in context for each question of an evaluation.

    protocol = get_protocol("paper")
    for names in protocol.recognition_contexts(concepts):     # one context per entry
        engine.recognize(frames, concepts=names)               # None: every known concept
    for group in protocol.group_contexts(groups): ...          # multi-concept questions
    engine.ask(question, frames, concepts=protocol.vqa_context(item_concepts))
    engine.caption(frames, concepts=protocol.caption_context(concepts))

``paper`` (Ego §4.1): "the query is constructed based on a known ground-truth concept ... no
retrieval is necessary". Every (query, concept) recognition question has that concept's memory
alone in context; every co-occurring group of concepts (a pair) is asked about with the group's
memories; every VQA item with its own concept(s); captioning alone must pick the right concept
among all of the dataset's (with retrieval when they exceed ``max_in_context``).

``robot``: what ``ego_node`` does: every known concept in context for every question, narrowed
by retrieval to ``max_in_context``; multi-concept figures come from those same answers.

A protocol is one small named object; adding one touches no other (register it in
``PROTOCOLS``). The report names the protocol of every figure.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PROTOCOLS", "PaperProtocol", "Protocol", "RobotProtocol", "get_protocol",
           "parse_protocols"]

Context = tuple[str, ...] | None  # the concepts put in context; None: every known one


@dataclass(frozen=True)
class Protocol(ABC):
    """Base: the context of each kind of question (see the module doc)."""

    name: str = ""
    summary: str = ""

    @abstractmethod
    def recognition_contexts(self, concepts: Sequence[str]) -> list[Context]:
        ...

    @abstractmethod
    def group_contexts(self, groups: Sequence[tuple[str, ...]]) -> list[tuple[str, ...]]:
        """Contexts of the multi-concept questions (none: the groups are scored from the
        recognition answers)."""
        ...

    @abstractmethod
    def vqa_context(self, item_concepts: Sequence[str]) -> Context:
        ...

    @abstractmethod
    def caption_context(self, concepts: Sequence[str]) -> Context:
        ...

    def prefixes(self, num_concepts: int, num_groups: int) -> int:
        """Distinct memory prefixes one query needs (so an engine can cache them all)."""
        return 1


@dataclass(frozen=True)
class PaperProtocol(Protocol):
    name: str = "paper"
    summary: str = ("each recognition and VQA question with its own concept's memory alone "
                    "(a group's memories for multi-concept questions); captions with every "
                    "concept, retrieval above max_in_context (Ego §4.1)")

    def recognition_contexts(self, concepts: Sequence[str]) -> list[Context]:
        return [(c,) for c in concepts]

    def group_contexts(self, groups: Sequence[tuple[str, ...]]) -> list[tuple[str, ...]]:
        return [tuple(g) for g in groups]

    def vqa_context(self, item_concepts: Sequence[str]) -> Context:
        return tuple(item_concepts)

    def caption_context(self, concepts: Sequence[str]) -> Context:
        return tuple(concepts)

    def prefixes(self, num_concepts: int, num_groups: int) -> int:
        return num_concepts + num_groups + 1


@dataclass(frozen=True)
class RobotProtocol(Protocol):
    name: str = "robot"
    summary: str = ("every known concept in context for every question, retrieval above "
                    "max_in_context (what ego_node does)")

    def recognition_contexts(self, concepts: Sequence[str]) -> list[Context]:
        return [None]

    def group_contexts(self, groups: Sequence[tuple[str, ...]]) -> list[tuple[str, ...]]:
        return []

    def vqa_context(self, item_concepts: Sequence[str]) -> Context:
        return None

    def caption_context(self, concepts: Sequence[str]) -> Context:
        return None


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (PaperProtocol(), RobotProtocol())}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown protocol {name!r}; choose from "
                         f"{', '.join(PROTOCOLS)}") from None


def parse_protocols(text: str) -> tuple[str, ...]:
    """``"paper,robot"`` -> ``("paper", "robot")``; unknown or none is an error."""
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown or not names:
        raise ValueError(f"protocols must be a comma-separated subset of "
                         f"{','.join(PROTOCOLS)}, got {text!r}")
    return names

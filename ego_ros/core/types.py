"""Typed results of the engine's public operations.

These are the engine's API, shared by the in-process engine, the ZeroMQ worker client and the
ROS node. Each has ``to_dict``/``from_dict`` with JSON-compatible values (floats may be NaN;
the wire format carries them as JSON ``NaN`` which Python's json accepts).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

import numpy as np


def _from_dict(cls, data: dict[str, Any]):
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    return cls(**data)


@dataclass(frozen=True)
class ConceptScore:
    """One concept's recognition result for one image or clip."""

    name: str
    present: bool
    score: float = math.nan  # P(yes) / (P(yes) + P(no)); NaN when the mode gives no score

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConceptScore:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class RecognitionResult:
    concepts: list[ConceptScore]
    considered: list[str]  # the concepts put in context (retrieval may keep fewer than stored)
    mode: str = "per-concept"  # "per-concept" or "joint"
    caption: str = ""
    latency_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["concepts"] = [c.to_dict() for c in self.concepts]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecognitionResult:
        data = dict(data)
        data["concepts"] = [ConceptScore.from_dict(c) for c in data.get("concepts", [])]
        return _from_dict(cls, data)


@dataclass(frozen=True)
class AnswerResult:
    """Answer to a question, or a caption (``answer`` then holds the caption)."""

    answer: str
    concepts: list[str]  # known concept names the text mentions
    considered: list[str] = field(default_factory=list)
    latency_ms: float = 0.0
    choice: str | None = None  # the option letter, for a multiple-choice question

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnswerResult:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class IntroduceResult:
    name: str
    num_tokens: int  # memory tokens stored for the concept, all views
    num_views: int  # views stored for the concept, all views
    keywords: list[list[str]]  # per new view
    area_percent: list[float]  # per new view
    area_defaulted: list[bool]  # per new view: True when the answer could not be parsed
    layers: list[int]
    elapsed_s: float
    # per new view: {"indices": [...], "grid": [rows, cols]}, enough to draw the overlay of
    # the selected patches on the reference image the caller sent
    selected: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IntroduceResult:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class ConceptInfo:
    name: str
    num_tokens: int
    num_views: int
    keywords: list[list[str]]
    created: float  # unix time

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConceptInfo:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class SkippedConcept:
    """A stored concept the engine left out at load: a memory made by another model, a corrupt
    or missing file, a malformed manifest entry. It is never used; ``forget`` removes it."""

    name: str
    reason: str  # what is wrong, and the fix

    def __post_init__(self) -> None:
        for key in ("name", "reason"):
            if not isinstance(getattr(self, key), str):
                raise ValueError(f"SkippedConcept.{key} must be a string, "
                                 f"got {type(getattr(self, key)).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SkippedConcept:
        return _from_dict(cls, data)


class EngineLike(Protocol):
    """The engine's public API (``ego_ros.core.engine.EgoEngine`` and :class:`RemoteEngine`)."""

    def introduce(self, name: str, images: list[np.ndarray], replace: bool = False
                  ) -> IntroduceResult: ...
    def recognize(self, frames: list[np.ndarray], mode: str = "per-concept", clip: bool = False,
                  concepts: list[str] | None = None, caption: bool = False
                  ) -> RecognitionResult: ...
    def ask(self, question: str, frames: list[np.ndarray], clip: bool = False,
            concepts: list[str] | None = None,
            options: dict[str, str] | None = None) -> AnswerResult: ...
    def caption(self, frames: list[np.ndarray], clip: bool = False,
                concepts: list[str] | None = None) -> AnswerResult: ...
    def forget(self, name: str) -> bool: ...
    def concepts(self) -> list[ConceptInfo]: ...
    def skipped_concepts(self) -> list[SkippedConcept]: ...
    def health(self) -> dict[str, Any]: ...

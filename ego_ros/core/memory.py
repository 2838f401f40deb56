"""Concept memories (paper §3.2) and the fingerprint of the model that made them.

A concept memory is the visual tokens selected from a concept's reference views, in the LLM
embedding space of one specific model, plus the concept's name. Those vectors mean nothing to
another model (other width, other embedding space), so every memory carries a
``ModelFingerprint`` and stores refuse to hand a memory to a model whose fingerprint differs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ego_ros.core.names import validate_concept_name
from ego_ros.core.selection import ViewSelection, check_grid, check_indices, concat_views
from ego_ros.core.types import ConceptInfo

__all__ = [
    "VOLATILE_CONFIG_KEYS",
    "ConceptMemory",
    "FingerprintMismatch",
    "ModelFingerprint",
    "ViewInfo",
    "fingerprint_from_config",
]

log = logging.getLogger(__name__)

# Config keys left out of the fingerprint hash, at every nesting level (text_config,
# vision_config, ...). They describe how a checkpoint was saved or is being run, not the
# weights: the library version that wrote it, the dtype it was loaded in (a bfloat16 and a
# float32 load of the same checkpoint share an embedding space), the attention kernel and
# runtime output switches. Keys starting with "_" (``_name_or_path``, ``_commit_hash``,
# ``_attn_implementation_autoset``, ...) are transformers' private/runtime attributes and are
# dropped too, so moving a checkpoint folder does not change its fingerprint.
VOLATILE_CONFIG_KEYS = frozenset(
    {
        "transformers_version",
        "torch_dtype",
        "dtype",
        "attn_implementation",
        "use_cache",
        "output_attentions",
        "output_hidden_states",
        "return_dict",
    }
)


class FingerprintMismatch(ValueError):  # noqa: N818 (name fixed by the issue)
    """A memory was made by a different model than the one asking for it."""

    def __init__(self, what: str, expected: ModelFingerprint, found: ModelFingerprint,
                 stored: bool = True) -> None:
        """``stored``: ``what`` is a memory in a store (which ``concepts rebind`` can re-label
        when only the config differs), not one being added or imported."""
        same_shape = (found.family, found.hidden_size) == (expected.family, expected.hidden_size)
        hint = (
            " If it is the same checkpoint and only its config changed (a transformers upgrade "
            "can add config keys), 'ego-ros concepts rebind --model DIR --store DIR' "
            "re-labels the stored memories; otherwise re-introduce the concept with this model."
            if same_shape and stored else " Re-introduce the concept with this model."
        )
        super().__init__(
            f"{what} was made by model {found} but this store serves model {expected}; "
            "memories live in one model's embedding space and cannot be used by another."
            + hint
        )
        self.expected = expected
        self.found = found


@dataclass(frozen=True)
class ModelFingerprint:
    """Identity of the model whose embedding space a memory lives in.

    family: the backend's model family ("qwen2_5_vl", "internvl", ...).
    hidden_size: the LLM width ``D`` of the memory tokens.
    config_hash: SHA-256 (hex) of the canonical config JSON, see ``fingerprint_from_config``.
    """

    family: str
    hidden_size: int
    config_hash: str

    def __post_init__(self) -> None:
        if not isinstance(self.family, str) or not self.family:
            raise ValueError(
                f"ModelFingerprint.family must be a non-empty string, got {self.family!r}"
            )
        if (
            isinstance(self.hidden_size, bool)
            or not isinstance(self.hidden_size, int)
            or self.hidden_size < 1
        ):
            raise ValueError(
                f"ModelFingerprint.hidden_size must be a positive integer, got {self.hidden_size!r}"
            )
        h = self.config_hash
        if not isinstance(h, str) or not h or any(c not in "0123456789abcdef" for c in h):
            raise ValueError(
                f"ModelFingerprint.config_hash must be a lowercase hex string, got {h!r}"
            )

    def matches(self, other: ModelFingerprint) -> bool:
        return self == other

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "hidden_size": self.hidden_size,
            "config_hash": self.config_hash,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelFingerprint:
        try:
            return cls(str(data["family"]), int(data["hidden_size"]), str(data["config_hash"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a model fingerprint: {data!r} ({exc})") from None

    def __str__(self) -> str:
        return f"{self.family}(hidden_size={self.hidden_size}, config={self.config_hash[:12]})"


def _strip_volatile(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            str(k): _strip_volatile(v)
            for k, v in value.items()
            if not str(k).startswith("_") and str(k) not in VOLATILE_CONFIG_KEYS
        }
    if isinstance(value, list | tuple):
        return [_strip_volatile(v) for v in value]
    return value


def fingerprint_from_config(
    family: str, hidden_size: int, config_dict: Mapping[str, Any]
) -> ModelFingerprint:
    """Fingerprint a model from its config dict (e.g. ``model.config.to_dict()``).

    The hash is SHA-256 of the config serialised as canonical JSON: keys sorted, no whitespace,
    ``VOLATILE_CONFIG_KEYS`` and ``_``-prefixed keys removed at every level, values that JSON
    cannot represent (e.g. a ``torch.dtype``) written as ``str()``. Two loads of the same
    checkpoint, from any folder and in any dtype, get the same fingerprint.
    """
    canonical = json.dumps(
        _strip_volatile(config_dict), sort_keys=True, separators=(",", ":"), default=str
    )
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return ModelFingerprint(family=family, hidden_size=hidden_size, config_hash=digest)


@dataclass(frozen=True, eq=False)
class ViewInfo:
    """How one reference view contributed to a memory (everything but its tokens).

    indices: ``[K_c]`` int64 positions of the kept tokens in the view's token grid, ascending.
    grid: ``(rows, cols)`` of the view's token grid.
    """

    indices: Tensor
    grid: tuple[int, int]
    keywords: tuple[str, ...]
    area_percent: float
    area_defaulted: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", check_grid(self.grid, "ViewInfo"))
        check_indices(self.indices, self.grid, "ViewInfo.indices")
        object.__setattr__(self, "indices", self.indices.to(torch.int64))
        object.__setattr__(self, "keywords", tuple(str(k) for k in self.keywords))
        area = float(self.area_percent)
        if not math.isfinite(area):
            raise ValueError(f"ViewInfo.area_percent must be finite, got {self.area_percent!r}")
        object.__setattr__(self, "area_percent", area)
        object.__setattr__(self, "area_defaulted", bool(self.area_defaulted))

    @property
    def num_tokens(self) -> int:
        return int(self.indices.numel())

    def to_meta(self) -> dict[str, Any]:
        """JSON-compatible metadata (the indices travel as a tensor, not here)."""
        return {
            "grid": list(self.grid),
            "keywords": list(self.keywords),
            "area_percent": self.area_percent,
            "area_defaulted": self.area_defaulted,
            "num_tokens": self.num_tokens,
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], indices: Tensor) -> ViewInfo:
        return cls(
            indices=indices,
            grid=tuple(meta["grid"]),
            keywords=tuple(meta["keywords"]),
            area_percent=float(meta["area_percent"]),
            area_defaulted=bool(meta["area_defaulted"]),
        )

    @classmethod
    def from_selection(cls, view: ViewSelection) -> ViewInfo:
        return cls(
            indices=view.indices.detach().cpu(),
            grid=view.grid,
            keywords=tuple(view.keywords),
            area_percent=view.area_percent,
            area_defaulted=view.area_defaulted,
        )


@dataclass(frozen=True, eq=False)
class ConceptMemory:
    """One concept's memory: its name and the selected visual tokens of all its views.

    tokens: ``[N, D]`` in the model's embedding space, dtype as produced (kept on save).
    view_ids: ``[N]`` int64, which view each row came from; rows of a view are contiguous and
        views appear in order, so ``tokens[view_ids == v]`` is view ``v``'s memory.
    views: per view, how its rows were selected.
    layers: the LLM layers whose attention ranked the tokens.
    created: unix time the concept was first introduced.
    """

    name: str
    tokens: Tensor
    view_ids: Tensor
    views: tuple[ViewInfo, ...]
    layers: tuple[int, ...]
    fingerprint: ModelFingerprint
    created: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", validate_concept_name(self.name))
        object.__setattr__(self, "views", tuple(self.views))
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        object.__setattr__(self, "created", float(self.created))
        if not isinstance(self.fingerprint, ModelFingerprint):
            raise ValueError(
                f"ConceptMemory.fingerprint must be a ModelFingerprint, got {self.fingerprint!r}"
            )
        t = self.tokens
        if t.dim() != 2 or not t.is_floating_point():
            raise ValueError(
                f"ConceptMemory {self.name!r}: tokens must be a floating [N, D] tensor, "
                f"got {t.dtype} {tuple(t.shape)}"
            )
        if t.shape[1] != self.fingerprint.hidden_size:
            raise ValueError(
                f"ConceptMemory {self.name!r}: tokens have width {t.shape[1]} but the model "
                f"fingerprint says hidden_size={self.fingerprint.hidden_size}"
            )
        if t.shape[0] == 0 or any(v.num_tokens == 0 for v in self.views):
            raise ValueError(f"ConceptMemory {self.name!r}: every view needs at least one token")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"ConceptMemory {self.name!r}: tokens hold NaN or infinity")
        if not self.views:
            raise ValueError(f"ConceptMemory {self.name!r}: needs at least one view")
        ids = self.view_ids
        if ids.dim() != 1 or ids.is_floating_point() or ids.numel() != t.shape[0]:
            raise ValueError(
                f"ConceptMemory {self.name!r}: view_ids must be [N={t.shape[0]}] integers, "
                f"got {ids.dtype} {tuple(ids.shape)}"
            )
        ids = ids.to(torch.int64)
        counts = [v.num_tokens for v in self.views]
        expected = torch.repeat_interleave(
            torch.arange(len(counts)), torch.tensor(counts, dtype=torch.int64)
        )  # [N]
        if not torch.equal(ids.cpu(), expected):
            raise ValueError(
                f"ConceptMemory {self.name!r}: view_ids do not match the per-view token counts "
                f"{counts} (rows of each view must be contiguous and in view order)"
            )
        object.__setattr__(self, "view_ids", ids)

    @classmethod
    def from_views(
        cls,
        name: str,
        views: Sequence[ViewSelection],
        layers: Sequence[int],
        fingerprint: ModelFingerprint,
        created: float | None = None,
    ) -> ConceptMemory:
        """Build a memory from per-view selections (concatenated in the given order)."""
        tokens, view_ids = concat_views(views)  # [sum K_c, D], [sum K_c]
        return cls(
            name=name,
            tokens=tokens,
            view_ids=view_ids,
            views=tuple(ViewInfo.from_selection(v) for v in views),
            layers=tuple(layers),
            fingerprint=fingerprint,
            created=time.time() if created is None else created,
        )

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def num_views(self) -> int:
        return len(self.views)

    def view_tokens(self, view: int) -> Tensor:
        """The rows of view ``view``: ``[K_c, D]``."""
        if not 0 <= view < self.num_views:
            raise IndexError(f"{self.name!r} has {self.num_views} views, asked for view {view}")
        return self.tokens[self.view_ids.to(self.tokens.device) == view]  # [K_c, D]

    def add_views(self, other: ConceptMemory) -> ConceptMemory:
        """A new memory with ``other``'s views appended after this one's (view ids renumbered).

        Both must come from the same model; ``other``'s tokens take this memory's dtype. The
        name and creation time are this memory's; the layers become the sorted union, recording
        every layer that ranked some of the rows.
        """
        if not self.fingerprint.matches(other.fingerprint):
            raise FingerprintMismatch(
                f"new views for concept {self.name!r}", self.fingerprint, other.fingerprint
            )
        if other.tokens.dtype != self.tokens.dtype:
            # The fingerprint ignores dtype on purpose (a bf16 GPU robot and an fp32 CPU tool
            # share memories): new views take the stored dtype.
            log.info("concept %r: %s views stored as %s", self.name, other.tokens.dtype,
                     self.tokens.dtype)
        layers = tuple(sorted(set(self.layers) | set(other.layers)))
        if layers != self.layers:
            log.info("concept %r: views ranked with layers %s added", self.name, other.layers)
        new = other.tokens.to(self.tokens.device, self.tokens.dtype)
        tokens = torch.cat([self.tokens, new], dim=0)  # [N+M, D]
        view_ids = torch.cat(
            [self.view_ids, other.view_ids.to(self.view_ids.device) + self.num_views]
        )  # [N+M]
        return ConceptMemory(
            name=self.name,
            tokens=tokens,
            view_ids=view_ids,
            views=self.views + other.views,
            layers=layers,
            fingerprint=self.fingerprint,
            created=self.created,
        )

    def renamed(self, name: str) -> ConceptMemory:
        """The same memory under another name (e.g. when importing under a new name)."""
        return ConceptMemory(
            name=name,
            tokens=self.tokens,
            view_ids=self.view_ids,
            views=self.views,
            layers=self.layers,
            fingerprint=self.fingerprint,
            created=self.created,
        )

    def to_info(self) -> ConceptInfo:
        return ConceptInfo(
            name=self.name,
            num_tokens=self.num_tokens,
            num_views=self.num_views,
            keywords=[list(v.keywords) for v in self.views],
            created=self.created,
        )

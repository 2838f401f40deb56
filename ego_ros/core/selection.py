"""Which visual tokens of a reference view become the concept memory (paper §3.2-3.3).

The selection is three small, model-free steps that the backends feed with tensors they
captured from the LVLM:

1. ``importance_from_attention``: Eq. 3, the mean over selected layers, heads and keyword
   tokens of the attention from each keyword token to each visual token.
2. ``memory_size``: how many tokens to keep, ``K_c = min(K, alpha_c * N_r / 100)`` with the
   per-view cap ``K = ratio * N_r`` (§3.3), clamped to a configurable minimum.
3. ``select_tokens``: the top-``K_c`` tokens by importance, returned in their original order
   (the paper's ``P^ordered``), so the memory keeps the spatial order the LLM saw.

Several reference views are selected independently and concatenated (``concat_views``), with a
``view_id`` per row so later stages (store, overlay, retrieval) know which view a row came from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_AREA_PERCENT",
    "SelectionConfig",
    "ViewSelection",
    "check_grid",
    "check_indices",
    "concat_views",
    "importance_from_attention",
    "memory_size",
    "select_tokens",
]

# Area used when the model's answer to "what percentage of the image does the subject cover?"
# cannot be parsed. 20% equals the default cap ratio (0.2), so an unparsable answer makes
# K_c = K: the memory falls back to the paper's fixed-size memory (its "default size K"
# ablation) instead of guessing a small or large object. Results report the fallback.
DEFAULT_AREA_PERCENT = 20.0

# Tolerance for floating-point noise before flooring token counts (e.g. 0.2 * 35 = 7.000000001).
_FLOOR_EPS = 1e-9


def _as_layer_list(rows: Sequence[Tensor] | Tensor) -> list[Tensor]:
    """Normalise the accepted attention inputs to a list of ``[H, N_w, T]`` tensors."""
    if isinstance(rows, Tensor):
        if rows.dim() == 3:  # one layer: [H, N_w, T]
            return [rows]
        if rows.dim() == 4:  # stacked layers: [L, H, N_w, T]
            return list(rows.unbind(0))
        raise ValueError(
            f"attention rows: expected a [H, N_w, T] or [L, H, N_w, T] tensor, "
            f"got shape {tuple(rows.shape)}"
        )
    layers = list(rows)
    for i, layer in enumerate(layers):
        if not isinstance(layer, Tensor) or layer.dim() != 3:
            shape = tuple(layer.shape) if isinstance(layer, Tensor) else type(layer).__name__
            raise ValueError(f"attention rows[{i}]: expected a [H, N_w, T] tensor, got {shape}")
    return layers


def importance_from_attention(rows: Sequence[Tensor] | Tensor, visual_index: Tensor) -> Tensor:
    """Importance of each visual token (paper Eq. 3).

    Args:
        rows: per selected layer, the softmax rows of the keyword queries over all key
            positions, each ``[H, N_w, T]`` (or all layers stacked as ``[L, H, N_w, T]``).
            Layers may differ in head count; keyword count and sequence length must agree.
        visual_index: positions of the ``N_r`` visual tokens in the sequence, ``[N_r]`` integer
            (or a ``[T]`` boolean mask).

    Returns:
        ``I`` of shape ``[N_r]``, float32: for each visual token, the mean over layers of the
        mean over heads and keyword tokens of the attention it receives. Accumulation is in
        float32 whatever the input dtype, because bfloat16 sums over thousands of heads x
        keywords lose the small differences the ranking depends on.
    """
    layers = _as_layer_list(rows)
    if not layers:
        raise ValueError("attention rows: no layers given; select at least one layer")
    num_keywords, seq_len = layers[0].shape[1], layers[0].shape[2]
    if num_keywords == 0:
        raise ValueError("attention rows: no keyword tokens (N_w == 0); nothing to rank with")
    for i, layer in enumerate(layers):
        if layer.shape[1:] != (num_keywords, seq_len):
            raise ValueError(
                f"attention rows[{i}]: shape {tuple(layer.shape)} disagrees with layer 0 "
                f"[H, {num_keywords}, {seq_len}] in keyword count or sequence length"
            )
        if layer.shape[0] == 0:
            raise ValueError(f"attention rows[{i}]: zero heads")

    index = visual_index.to(layers[0].device)
    if index.dtype == torch.bool:
        if index.shape != (seq_len,):
            raise ValueError(
                f"visual_index: boolean mask must have shape [{seq_len}], got {tuple(index.shape)}"
            )
        index = index.nonzero().squeeze(1)  # [N_r]
    if index.dim() != 1 or index.is_floating_point():
        raise ValueError(
            f"visual_index: expected a 1-D integer tensor, got {index.dtype} {tuple(index.shape)}"
        )
    if index.numel() == 0:
        raise ValueError("visual_index: no visual tokens")
    lo, hi = int(index.min()), int(index.max())
    if lo < 0 or hi >= seq_len:
        raise ValueError(f"visual_index: positions must lie in [0, {seq_len}), got [{lo}, {hi}]")

    total = torch.zeros(index.numel(), dtype=torch.float32, device=index.device)  # [N_r]
    for layer in layers:
        visual = layer.index_select(-1, index).to(torch.float32)  # [H, N_w, N_r]
        total += visual.mean(dim=(0, 1))  # [N_r]
    return total / len(layers)  # [N_r]


def _floor(x: float) -> int:
    return math.floor(x + _FLOOR_EPS)


def memory_size(
    alpha_percent: float, num_visual: int, ratio: float = 0.2, min_tokens: int = 1
) -> int:
    """Number of tokens ``K_c`` to keep for one view (paper §3.3).

    ``K = floor(ratio * N_r)`` is the per-view cap and ``floor(alpha * N_r / 100)`` the number
    of whole patches the subject is estimated to cover; ``K_c`` is the smaller of the two,
    clamped to ``[min_tokens, N_r]``. Flooring never exceeds the cap nor the estimated area;
    ``min_tokens`` keeps tiny or zero area estimates from producing an empty memory.
    ``alpha_percent`` outside ``[0, 100]`` is clamped (models do answer "120%").
    """
    if isinstance(num_visual, bool) or not isinstance(num_visual, int) or num_visual < 1:
        raise ValueError(f"num_visual must be a positive integer, got {num_visual!r}")
    if isinstance(min_tokens, bool) or not isinstance(min_tokens, int) or min_tokens < 1:
        raise ValueError(f"min_tokens must be a positive integer, got {min_tokens!r}")
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not (0.0 < ratio <= 1.0):
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
    if (
        isinstance(alpha_percent, bool)
        or not isinstance(alpha_percent, int | float)
        or not math.isfinite(alpha_percent)
    ):
        raise ValueError(f"alpha_percent must be a finite number, got {alpha_percent!r}")
    alpha = min(max(float(alpha_percent), 0.0), 100.0)
    cap = _floor(ratio * num_visual)
    area = _floor(alpha * num_visual / 100.0)
    return min(max(min(cap, area), min_tokens), num_visual)


def select_tokens(importance: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` most important tokens, in ascending (original) order.

    Implements ``P^ordered = sort_asc(argsort_desc(I)[:k])``. Ties are broken towards the lower
    index (a stable descending sort), so the same importance always yields the same memory.
    Returns an int64 tensor ``[k]`` on the importance's device.
    """
    if importance.dim() != 1:
        raise ValueError(f"importance: expected a 1-D tensor, got shape {tuple(importance.shape)}")
    n = importance.numel()
    if isinstance(k, bool) or not isinstance(k, int) or not (1 <= k <= n):
        raise ValueError(f"k must be an integer in [1, {n}], got {k!r}")
    if torch.isnan(importance).any():
        raise ValueError("importance contains NaN; check the captured attention rows")
    order = torch.sort(importance, descending=True, stable=True).indices  # [N_r]
    return torch.sort(order[:k]).values.to(torch.int64)  # [k]


@dataclass(frozen=True)
class SelectionConfig:
    """How many and which tokens to keep per reference view.

    ratio: per-view cap ``K = ratio * N_r`` (paper: 20% of the visual tokens).
    min_tokens: lower bound on ``K_c`` so that a tiny or zero area estimate still leaves a usable
        memory (4 tokens is about a 2x2 patch block).
    default_area_percent: ``alpha_c`` used when the area answer cannot be parsed; see
        ``DEFAULT_AREA_PERCENT``.
    layers: LLM layers whose attention ranks tokens; ``None`` means "from the calibration file,
        or the backend's documented fallback".
    """

    ratio: float = 0.2
    min_tokens: int = 4
    default_area_percent: float = DEFAULT_AREA_PERCENT
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if (
            isinstance(self.ratio, bool)
            or not isinstance(self.ratio, int | float)
            or not (0.0 < self.ratio <= 1.0)
        ):
            raise ValueError(f"SelectionConfig.ratio must be in (0, 1], got {self.ratio!r}")
        if (
            isinstance(self.min_tokens, bool)
            or not isinstance(self.min_tokens, int)
            or self.min_tokens < 1
        ):
            raise ValueError(
                f"SelectionConfig.min_tokens must be a positive integer, got {self.min_tokens!r}"
            )
        area = self.default_area_percent
        if (
            isinstance(area, bool)
            or not isinstance(area, int | float)
            or not (0.0 <= area <= 100.0)
        ):
            raise ValueError(
                f"SelectionConfig.default_area_percent must be in [0, 100], got {area!r}"
            )
        if self.layers is not None:
            layers = tuple(self.layers)
            bad = [x for x in layers if isinstance(x, bool) or not isinstance(x, int) or x < 0]
            if not layers or bad or len(set(layers)) != len(layers):
                raise ValueError(
                    "SelectionConfig.layers must be None or a non-empty list of distinct "
                    f"non-negative layer indices, got {self.layers!r}"
                )
            object.__setattr__(self, "layers", layers)

    def memory_size(self, alpha_percent: float | None, num_visual: int) -> tuple[int, bool]:
        """``(K_c, defaulted)``: the token count for a view, using the default area when the
        parsed area is ``None``; ``defaulted`` says whether the default was used."""
        defaulted = alpha_percent is None
        alpha = self.default_area_percent if alpha_percent is None else alpha_percent
        return memory_size(alpha, num_visual, self.ratio, self.min_tokens), defaulted


def check_grid(grid: Any, owner: str) -> tuple[int, int]:
    """Validate a token grid ``(rows, cols)`` of positive integers; errors name ``owner``."""
    try:
        h, w = grid
    except (TypeError, ValueError):
        raise ValueError(f"{owner}.grid must be (rows, cols), got {grid!r}") from None
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{owner}.grid must be two positive integers, got {grid!r}")
    return int(h), int(w)


@dataclass(frozen=True, eq=False)
class ViewSelection:
    """The tokens selected from one reference view and how they were chosen.

    tokens: ``[K_c, D]`` visual tokens in LLM embedding space (projector output).
    indices: ``[K_c]`` their positions among the view's ``N_r`` visual tokens, ascending.
    grid: ``(rows, cols)`` of the view's token grid, ``rows * cols == N_r``.
    """

    tokens: Tensor
    indices: Tensor
    grid: tuple[int, int]
    keywords: list[str]
    area_percent: float
    area_defaulted: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", check_grid(self.grid, "ViewSelection"))
        if self.tokens.dim() != 2:
            raise ValueError(
                f"ViewSelection.tokens must be [K_c, D], got shape {tuple(self.tokens.shape)}"
            )
        check_indices(self.indices, self.grid, "ViewSelection.indices")
        if self.indices.numel() != self.tokens.shape[0]:
            raise ValueError(
                f"ViewSelection: {self.indices.numel()} indices for {self.tokens.shape[0]} tokens"
            )
        object.__setattr__(self, "keywords", [str(k) for k in self.keywords])
        object.__setattr__(self, "area_percent", float(self.area_percent))
        object.__setattr__(self, "area_defaulted", bool(self.area_defaulted))


def check_indices(indices: Tensor, grid: tuple[int, int], what: str) -> None:
    """Validate selected indices: 1-D integer, strictly ascending, inside the token grid."""
    if indices.dim() != 1 or indices.is_floating_point() or indices.dtype == torch.bool:
        raise ValueError(
            f"{what} must be a 1-D integer tensor, got {indices.dtype} {tuple(indices.shape)}"
        )
    if indices.numel() == 0:
        return
    n = grid[0] * grid[1]
    if int(indices.min()) < 0 or int(indices.max()) >= n:
        raise ValueError(f"{what} must lie in [0, {n}) for grid {grid}, got {indices.tolist()}")
    if indices.numel() > 1 and not bool((indices[1:] > indices[:-1]).all()):
        raise ValueError(f"{what} must be strictly ascending (original order), got {indices}")


def concat_views(views: Sequence[ViewSelection]) -> tuple[Tensor, Tensor]:
    """Concatenate per-view selections into one memory (paper §3.2, several views).

    Returns ``(tokens [sum K_c, D], view_id [sum K_c] int64)``; ``view_id[i]`` is the position
    in ``views`` of the view row ``i`` came from.
    """
    if not views:
        raise ValueError("concat_views: no views given")
    first = views[0].tokens
    for v, view in enumerate(views):
        t = view.tokens
        if t.shape[1] != first.shape[1] or t.dtype != first.dtype or t.device != first.device:
            raise ValueError(
                f"concat_views: view {v} tokens are [{t.shape[0]}, {t.shape[1]}] {t.dtype} on "
                f"{t.device}, view 0 is [*, {first.shape[1]}] {first.dtype} on {first.device}"
            )
    tokens = torch.cat([view.tokens for view in views], dim=0)  # [sum K_c, D]
    counts = torch.tensor([view.tokens.shape[0] for view in views], device=first.device)
    view_id = torch.repeat_interleave(
        torch.arange(len(views), device=first.device), counts
    )  # [sum K_c]
    return tokens, view_id.to(torch.int64)

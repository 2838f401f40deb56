"""Keyword-to-visual attention capture without materialising attention matrices.

The paper's importance score (Eq. 3) needs, at a few selected LLM layers, the softmax rows of
the *keyword* queries over the *visual* keys. Asking transformers for ``output_attentions``
forces the eager kernel and returns a ``[B, H, T, T]`` matrix for every layer. Instead the
text model's attention implementation is switched to ``"ego_sdpa"``, registered here with
transformers' ``AttentionInterface``: it computes the layer output with the stock SDPA kernel,
and, while a :class:`AttentionCapture` is active and the layer is one of the selected ones,
additionally computes ``softmax(q_w k^T / sqrt(d))`` for the requested query rows only.
Queries and keys arrive there with rotary embeddings applied (Qwen's M-RoPE included) and with
the KV cache already concatenated, so the rows are exactly the eager attention's rows.

Peak extra memory per capture call: ``H * N_q * T`` float32 scores for one layer at a time
(plus float32 views of the call's queries and keys, ``(H * N_q + H_kv * T) * d``; grouped
query heads share their KV head without copying it), then reduced to the visual columns and
kept: ``H * N_q * N_r`` per selected layer. Eager ``output_attentions`` holds
``L * H * T * T``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

ATTN_IMPLEMENTATION = "ego_sdpa"

_state = threading.local()


@dataclass
class AttentionCapture:
    """Records keyword-query attention rows over visual keys at selected layers.

    ``visual_index`` are key positions (in the sequence including any cache) of the visual
    tokens. Each call of a selected layer appends ``[H, q, N_r]`` float32 rows for the query
    positions ``query_rows`` of that call (``None``: all rows of the call, e.g. decode steps).
    """

    layers: frozenset[int]
    visual_index: torch.Tensor  # [N_r] long
    query_rows: torch.Tensor | None = None  # rows within the current call, or None for all
    rows: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # layer -> [[H, q, N_r]]

    def __enter__(self) -> AttentionCapture:
        if getattr(_state, "capture", None) is not None:
            raise RuntimeError("an AttentionCapture is already active in this thread")
        _state.capture = self
        return self

    def __exit__(self, *exc) -> None:
        _state.capture = None

    def stacked(self, layer: int) -> torch.Tensor:
        """All rows recorded at ``layer`` concatenated over calls: ``[H, total_q, N_r]``."""
        chunks = self.rows.get(layer)
        if not chunks:
            raise KeyError(f"no attention recorded at layer {layer}")
        return torch.cat(chunks, dim=1)


def _record(capture: AttentionCapture, module, query: torch.Tensor, key: torch.Tensor) -> None:
    # query [B, H, q, d], key [B, Hkv, T, d]; batch 1 during introduction.
    q = query[0]
    if capture.query_rows is not None:
        q = q[:, capture.query_rows.to(q.device), :]  # [H, n, d]
    heads, n, dim = q.shape
    if n == 0:
        return
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    scaling = getattr(module, "scaling", dim ** -0.5)
    # Grouped-query attention without repeating the keys: the query heads sharing a KV head
    # are stacked as extra rows, so the only new tensor is the scores, never a key copy.
    qg = q.float().reshape(kv_heads, groups * n, dim)  # [Hkv, g*n, d]
    scores = torch.matmul(qg, key[0].float().transpose(1, 2)) * scaling  # [Hkv, g*n, T]
    scores = scores.reshape(heads, n, -1)  # [H, n, T]
    total, q_len = key.shape[2], query.shape[2]
    # Causal mask in cache coordinates: query row i sits at absolute position T - q_len + i.
    rows_abs = torch.arange(q_len, device=q.device) + (total - q_len)
    if capture.query_rows is not None:
        rows_abs = rows_abs[capture.query_rows.to(q.device)]
    allowed = torch.arange(total, device=q.device)[None, :] <= rows_abs[:, None]  # [n, T]
    scores = scores.masked_fill(~allowed[None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)  # [H, n, T]
    visual = capture.visual_index.to(probs.device)
    capture.rows.setdefault(module.layer_idx, []).append(probs[:, :, visual].cpu())  # [H, n, N_r]


def ego_sdpa_attention(module, query, key, value, attention_mask, **kwargs):
    """SDPA attention that also feeds an active :class:`AttentionCapture`."""
    capture: AttentionCapture | None = getattr(_state, "capture", None)
    if capture is not None and getattr(module, "layer_idx", None) in capture.layers:
        _record(capture, module, query, key)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def register() -> str:
    """Register ``ego_sdpa`` with transformers (idempotent) and return its name."""
    if ATTN_IMPLEMENTATION not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTN_IMPLEMENTATION, ego_sdpa_attention)
    # The mask builder must know the implementation too: for an unknown one transformers
    # builds no mask at all, and SDPA's top-left ``is_causal`` is wrong after a cached prefix.
    if ATTN_IMPLEMENTATION not in AttentionMaskInterface._global_mapping:
        AttentionMaskInterface.register(ATTN_IMPLEMENTATION,
                                        ALL_MASK_ATTENTION_FUNCTIONS._global_mapping["sdpa"])
    return ATTN_IMPLEMENTATION


"""Concept introduction (paper §3.1–3.3): from reference views to a concept memory.

Per view, with the LVLM behind ``backend`` (see ``ego_ros.backends.base.LVLMBackend``):

1. the view is encoded once, and the chat prefix up to and including the image is prefilled
   once; the two questions below branch from that shared key/value state;
2. area: the model estimates the percentage of the image the main subject covers -> ``alpha``;
3. keywords: the model lists keywords; while it decodes, the attention rows of each generated
   token (as it is fed back) over the image's tokens are captured at the selected layers; the
   rows of keyword tokens (punctuation, template and special tokens dropped) give the
   importance of each visual token (Eq. 3);
4. ``K_c = min(ratio * N_r, alpha * N_r / 100)`` (at least ``min_tokens``); the top-``K_c``
   tokens, in their original order, are the view's memory: the projector's output rows.

The cost per view is one image encoding, one prefill and the two short generations: about
the cost of one "describe the image" answer of the same length.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ego_ros.core.memory import ConceptMemory
from ego_ros.core.parsing import clean_keywords, keyword_token_mask, parse_area_percent
from ego_ros.core.prompts import prompts_for
from ego_ros.core.selection import (
    SelectionConfig,
    ViewSelection,
    importance_from_attention,
    select_tokens,
)

log = logging.getLogger(__name__)


def default_layers(num_layers: int) -> tuple[int, ...]:
    """Fallback layers when a model has no calibration: the mid-to-late range
    ``[round(0.5 L), round(0.75 L))`` (at least one layer), where prior work finds visual
    information flows into text (paper §3.4, refs [9, 13, 16])."""
    lo = round(0.5 * num_layers)
    hi = max(lo + 1, round(0.75 * num_layers))
    return tuple(range(lo, min(hi, num_layers)))


@dataclass(frozen=True)
class IntroduceConfig:
    """Generation budgets for the two introduction questions, plus the selection rule."""

    selection: SelectionConfig = SelectionConfig()
    area_max_new_tokens: int = 16  # room for "It covers approximately 40%" digit by digit
    keywords_max_new_tokens: int = 24

    def __post_init__(self) -> None:
        for name in ("area_max_new_tokens", "keywords_max_new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"IntroduceConfig.{name} must be a positive integer, got {value!r}")


@dataclass
class ViewTrace:
    """What happened for one view (for overlays, logs and tests)."""

    selection: ViewSelection
    importance: torch.Tensor  # [N_r]
    keyword_token_ids: list[int]
    keyword_rows: torch.Tensor  # rows of the generated answer that are keyword tokens
    generated_ids: list[int]
    area_text: str
    keywords_text: str
    prompt_length: int  # tokens before the keyword answer (image prefix + question)
    visual_span: tuple[int, int]


def introduce_view(backend, image: np.ndarray, layers: Sequence[int],
                   config: IntroduceConfig = IntroduceConfig()) -> ViewTrace:
    """Select the memory tokens of one reference view (RGB uint8 ``[H, W, 3]``)."""
    prompts = prompts_for(backend.family)
    visual = backend.encode_images([image])[0]
    t, rows, cols = visual.grid
    # One prefix for both questions: everything up to and including the image.
    area_segments = backend.render("<ego:img>" + prompts.area, {"img": visual})
    kw_segments = backend.render("<ego:img>" + prompts.keywords, {"img": visual})
    split = next(i for i, seg in enumerate(kw_segments) if seg is visual) + 1
    prefix = backend.embed(kw_segments[:split])
    _, state = backend.forward(prefix, None)
    span = prefix.visual_spans[-1]

    area_gen = backend.generate(area_segments[split:], state,
                                max_new_tokens=config.area_max_new_tokens)
    alpha = parse_area_percent(area_gen.text)

    capture = backend.attention_capture(layers, torch.arange(*span))
    kw_gen = backend.generate(kw_segments[split:], state,
                              max_new_tokens=config.keywords_max_new_tokens, capture=capture)
    mask = keyword_token_mask(backend.token_strings(kw_gen.token_ids), backend.special_tokens)
    keyword_rows = torch.tensor([i for i, keep in enumerate(mask) if keep], dtype=torch.long)
    num_visual = span[1] - span[0]
    if keyword_rows.numel() > 0:
        rows_per_layer = [capture.stacked(layer)[:, keyword_rows, :] for layer in layers]
        importance = importance_from_attention(rows_per_layer, torch.arange(num_visual))
    else:
        # No keyword survived (e.g. the model answered only punctuation): fall back to all
        # generated tokens, or uniform importance when nothing was generated; logged.
        if kw_gen.token_ids:
            log.warning("no keyword tokens in %r; ranking with all generated tokens",
                        kw_gen.text)
            rows_per_layer = [capture.stacked(layer) for layer in layers]
            importance = importance_from_attention(rows_per_layer, torch.arange(num_visual))
        else:
            log.warning("the model generated no keywords; the memory keeps the first tokens "
                        "of the view (uniform importance)")
            importance = torch.ones(num_visual)
    k, defaulted = config.selection.memory_size(alpha, num_visual)
    indices = select_tokens(importance, k)
    keywords = clean_keywords(kw_gen.text)
    selection = ViewSelection(
        tokens=visual.tokens[indices.to(visual.tokens.device)].detach().cpu().clone(),
        indices=indices.cpu(),
        grid=(rows, cols),
        keywords=keywords,
        area_percent=config.selection.default_area_percent if alpha is None else alpha,
        area_defaulted=defaulted,
    )
    kw_ids = [kw_gen.token_ids[i] for i in keyword_rows.tolist()]
    return ViewTrace(selection, importance, kw_ids, keyword_rows, kw_gen.token_ids,
                     area_gen.text, kw_gen.text, kw_gen.prompt_length, span)


def introduce_concept(backend, name: str, images: Sequence[np.ndarray], layers: Sequence[int],
                      config: IntroduceConfig = IntroduceConfig(),
                      ) -> tuple[ConceptMemory, list[ViewTrace]]:
    """Build the memory of concept ``name`` from one or more reference views."""
    if not images:
        raise ValueError("introduce: no reference views given")
    started = time.perf_counter()
    traces = [introduce_view(backend, img, layers, config) for img in images]
    memory = ConceptMemory.from_views(name, [t.selection for t in traces], layers,
                                      backend.fingerprint)
    log.info("introduced %r: %d views, %d tokens in %.2f s", memory.name, len(traces),
             memory.num_tokens, time.perf_counter() - started)
    return memory, traces

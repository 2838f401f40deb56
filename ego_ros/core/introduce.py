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

``IntroduceConfig.strategy`` names a :mod:`ego_ros.core.strategies` entry (default ``ego``,
the method): the ablation baselines change only which answer ranks the tokens (step 3) and
which indices step 4 keeps.

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

from ego_ros.core import limits
from ego_ros.core.memory import ConceptMemory
from ego_ros.core.names import validate_concept_name
from ego_ros.core.parsing import clean_keywords, keyword_token_mask, parse_area_percent
from ego_ros.core.prompts import prompts_for
from ego_ros.core.selection import SelectionConfig, ViewSelection, importance_from_attention
from ego_ros.core.strategies import DEFAULT_STRATEGY, get_strategy, view_choice

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
    """Generation budgets for the two introduction questions, the selection rule and the
    memory strategy (``ego``, or an ablation baseline of :mod:`ego_ros.core.strategies`)."""

    selection: SelectionConfig = SelectionConfig()
    area_max_new_tokens: int = 16  # room for "It covers approximately 40%" digit by digit
    keywords_max_new_tokens: int = 24
    strategy: str = DEFAULT_STRATEGY

    def __post_init__(self) -> None:
        try:
            get_strategy(self.strategy)
        except ValueError as exc:
            raise ValueError(f"IntroduceConfig.strategy: {exc}") from None
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


@dataclass
class KeywordAttention:
    """What one answer's keywords attended to in the image (paper Eq. 3 input).

    rows: per layer, ``[H, N_w, N_r]`` attention of the keyword tokens over the image tokens.
    keyword_rows: which generated tokens those are (empty when none was generated and the
    last prompt token stood in for them).
    """

    rows: dict[int, torch.Tensor]
    generated_ids: list[int]
    keyword_rows: torch.Tensor
    text: str
    prompt_length: int


def image_prefix(backend, visual, questions: Sequence[str]):
    """Prefill the chat prefix up to and including the image ``visual`` once, for several
    questions about it: ``(state, visual span, [question segments after the image])``."""
    rendered = [backend.render("<ego:img>" + q, {"img": visual}) for q in questions]
    split = next(i for i, seg in enumerate(rendered[0]) if seg is visual) + 1
    prefix = backend.embed(rendered[0][:split])
    _, state = backend.forward(prefix, None)
    return state, prefix.visual_spans[-1], [segments[split:] for segments in rendered]


def keyword_attention(backend, question: list, state, span: tuple[int, int],
                      layers: Sequence[int], max_new_tokens: int) -> KeywordAttention:
    """Answer ``question`` after ``state`` and capture, at ``layers``, the attention of the
    answer's keyword tokens over the image tokens at ``span`` (punctuation, template and
    special tokens dropped; all generated tokens when no keyword survives). When the model
    answers nothing at all, the last prompt token (the one that produced the empty answer)
    stands in for the keywords."""
    visual_index = torch.arange(*span)
    capture = backend.attention_capture(layers, visual_index)
    gen = backend.generate(question, state, max_new_tokens=max_new_tokens, capture=capture)
    if not gen.token_ids:
        log.warning("the model answered nothing; ranking with the last prompt token's attention")
        emb = backend.embed(question, start_pos=state.next_pos)
        last = torch.tensor([emb.embeds.shape[1] - 1])
        capture = backend.attention_capture(layers, visual_index, query_rows=last)
        with capture:
            backend.forward(emb, state, keep_state=False)
        return KeywordAttention({layer: capture.stacked(layer) for layer in layers}, [],
                                torch.zeros(0, dtype=torch.long), "", gen.prompt_length)
    keep = keyword_token_mask(backend.token_strings(gen.token_ids), backend.special_tokens)
    rows = torch.tensor([i for i, k in enumerate(keep) if k], dtype=torch.long)
    if rows.numel() == 0:
        log.warning("no keyword tokens in %r; ranking with all generated tokens", gen.text)
        rows = torch.arange(len(gen.token_ids))
    return KeywordAttention({layer: capture.stacked(layer)[:, rows, :] for layer in layers},
                            gen.token_ids, rows, gen.text, gen.prompt_length)


def introduce_view(backend, image: np.ndarray, layers: Sequence[int],
                   config: IntroduceConfig = IntroduceConfig()) -> ViewTrace:
    """Select the memory tokens of one reference view (RGB uint8 ``[H, W, 3]``)."""
    prompts = prompts_for(backend.family)
    strategy = get_strategy(config.strategy)
    visual = backend.encode_images([image])[0]
    _, rows, cols = visual.grid
    # One prefix for both questions: everything up to and including the image.
    state, span, (area_q, keywords_q) = image_prefix(
        backend, visual, [prompts.area, strategy.attention_prompt(prompts)])
    area_gen = backend.generate(area_q, state, max_new_tokens=config.area_max_new_tokens)
    alpha = parse_area_percent(area_gen.text)
    attention = keyword_attention(backend, keywords_q, state, span, layers,
                                  strategy.attention_tokens(config.keywords_max_new_tokens))
    num_visual = span[1] - span[0]
    importance = importance_from_attention([attention.rows[layer] for layer in layers],
                                           torch.arange(num_visual))  # [N_r], Eq. 3
    choice, defaulted = view_choice(importance, alpha, config.selection)
    indices = strategy.select(choice)  # [K_c] for ego
    selection = ViewSelection(
        tokens=visual.tokens[indices.to(visual.tokens.device)].detach().cpu().clone(),
        indices=indices.cpu(),
        grid=(rows, cols),
        keywords=clean_keywords(attention.text),
        area_percent=config.selection.default_area_percent if alpha is None else alpha,
        area_defaulted=defaulted,
    )
    kw_ids = [attention.generated_ids[i] for i in attention.keyword_rows.tolist()]
    return ViewTrace(selection, importance, kw_ids, attention.keyword_rows,
                     attention.generated_ids, area_gen.text, attention.text,
                     attention.prompt_length, span)


def introduce_concept(backend, name: str, images: Sequence[np.ndarray], layers: Sequence[int],
                      config: IntroduceConfig = IntroduceConfig(),
                      ) -> tuple[ConceptMemory, list[ViewTrace]]:
    """Build the memory of concept ``name`` from one or more reference views (at most
    ``limits.MAX_VIEWS``; the name must hold none of the backend's special tokens)."""
    name = validate_concept_name(name)
    limits.check_views(len(images))
    limits.check_user_text(name, "the concept name", backend.special_tokens)
    started = time.perf_counter()
    traces = [introduce_view(backend, img, layers, config) for img in images]
    memory = ConceptMemory.from_views(name, [t.selection for t in traces], layers,
                                      backend.fingerprint)
    log.info("introduced %r: %d views, %d tokens in %.2f s", memory.name, len(traces),
             memory.num_tokens, time.perf_counter() - started)
    return memory, traces

"""Memory strategies: Ego's token selection and the paper's ablation baselines (§4.5, appendix).

A strategy decides two small things and nothing else; introduction and inference are the same
code for all of them::

    introduce_view: view -> area answer (alpha) -> the strategy's answer (keywords, or a full
        description) whose tokens' attention over the image gives the importance I (Eq. 3)
        -> strategy.select(ViewChoice(I, K_c, K)) -> indices -> the memory's rows
    EgoEngine prefix: per concept in context, context_item(strategy, ...) -> the item's text
        (name, keywords when the strategy injects words) and its visual blocks (the stored
        rows, the re-encoded reference images, or none)

======================  ============================================  =======================
name                    memory rows (selection)                       in context
======================  ============================================  =======================
``ego``                 top-K_c by keyword attention (the method)     the rows
``uniform``             K evenly spaced tokens (K = ratio * N_r)      the rows
``full``                all N_r visual tokens of each view            the rows
``full+keywords``       all N_r                                       the rows + keywords
``keywords``            top-K_c (kept for retrieval only)             keywords as text only
``fixed-k``             top-K by keyword attention (K, not K_c)       the rows
``description``         top-K_c by the attention of a full            the rows
                        description instead of keywords
``reference-images``    all N_r                                       each reference image,
                                                                      re-encoded per question
======================  ============================================  =======================

``K = ratio * N_r`` is the per-view cap of Ego (paper: 20%), the same K for uniform and
fixed-k, so Table 3's "Uniform 20%" and the appendix's "default size K" compare like with like.
Memories of different strategies are different things under the same names: keep each
strategy's memories in its own store (``ego-ros eval`` does).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ego_ros.core.selection import memory_size, select_tokens

__all__ = [
    "DEFAULT_STRATEGY",
    "DESCRIPTION_MAX_NEW_TOKENS",
    "DESCRIPTION_PROMPT",
    "STRATEGIES",
    "MemoryStrategy",
    "ViewChoice",
    "context_header",
    "context_item",
    "evenly_spaced",
    "footprint",
    "get_strategy",
    "memory_keywords",
    "parse_strategies",
]

DEFAULT_STRATEGY = "ego"
# The appendix's "cross attention to full concept description rather than the keywords".
DESCRIPTION_PROMPT = "Describe the main subject of the image in detail."
DESCRIPTION_MAX_NEW_TOKENS = 64

_KEYWORDS_HEADER = ("These are the user's personal concepts, "
                    "each name followed by keywords describing it:\n")
_VISUAL_KEYWORDS_HEADER = ("These are the user's personal concepts, "
                           "each name followed by its image and keywords describing it:\n")


@dataclass(frozen=True)
class ViewChoice:
    """What a selection can use for one view.

    importance: ``[N_r]`` Eq. 3 importance of each visual token (from the strategy's answer).
    k_c: Ego's dynamic size ``min(K, alpha * N_r / 100)`` (at least ``min_tokens``).
    k: the per-view cap ``K = ratio * N_r`` (at least ``min_tokens``, at most ``N_r``).
    """

    importance: Tensor
    k_c: int
    k: int

    @property
    def num_visual(self) -> int:
        return int(self.importance.numel())


def evenly_spaced(n: int, k: int) -> Tensor:
    """``k`` indices spread evenly over ``range(n)``: the centre of each of ``k`` equal bins,
    ``floor((i + 0.5) * n / k)``, strictly ascending (int64 ``[k]``)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"evenly_spaced: k must be an integer in [1, {n}], got {k!r}")
    return ((torch.arange(k, dtype=torch.float64) + 0.5) * n / k).floor().to(torch.int64)


def _ego(view: ViewChoice) -> Tensor:
    return select_tokens(view.importance, view.k_c)


def _fixed_k(view: ViewChoice) -> Tensor:
    return select_tokens(view.importance, view.k)


def _uniform(view: ViewChoice) -> Tensor:
    return evenly_spaced(view.num_visual, view.k)


def _full(view: ViewChoice) -> Tensor:
    return torch.arange(view.num_visual, dtype=torch.int64)


@dataclass(frozen=True)
class MemoryStrategy:
    """One way of making a memory and putting it in context.

    select: the view's kept token indices (ascending) from a :class:`ViewChoice`.
    attention: which answer's tokens rank the visual tokens, ``keywords`` or ``description``.
    visual: the memory's visual tokens go in context (False: words only).
    words: the memory's keywords go in context as text.
    reencode: the reference images themselves are encoded into the context for every
        question (no stored rows, no cached prefix), as an LVLM given the images would.
    """

    name: str
    select: Callable[[ViewChoice], Tensor]
    attention: str = "keywords"
    visual: bool = True
    words: bool = False
    reencode: bool = False

    @property
    def cache_prefix(self) -> bool:
        return not self.reencode

    def attention_prompt(self, prompts) -> str:
        return DESCRIPTION_PROMPT if self.attention == "description" else prompts.keywords

    def attention_tokens(self, keywords_max_new_tokens: int) -> int:
        if self.attention == "description":
            return max(DESCRIPTION_MAX_NEW_TOKENS, keywords_max_new_tokens)
        return keywords_max_new_tokens


STRATEGIES: dict[str, MemoryStrategy] = {s.name: s for s in (
    MemoryStrategy("ego", _ego),
    MemoryStrategy("uniform", _uniform),
    MemoryStrategy("full", _full),
    MemoryStrategy("full+keywords", _full, words=True),
    MemoryStrategy("keywords", _ego, visual=False, words=True),
    MemoryStrategy("fixed-k", _fixed_k),
    MemoryStrategy("description", _ego, attention="description"),
    MemoryStrategy("reference-images", _full, reencode=True),
)}


def get_strategy(name: str) -> MemoryStrategy:
    try:
        return STRATEGIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown memory strategy {name!r}; choose from "
                         f"{', '.join(STRATEGIES)}") from None


def parse_strategies(text: str) -> tuple[str, ...]:
    """``"ego, uniform"`` -> ``("ego", "uniform")``; unknown or none is an error."""
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown or not names:
        raise ValueError(f"memory strategies must be a comma-separated subset of "
                         f"{','.join(STRATEGIES)}, got {text!r}")
    return names


def view_choice(importance: Tensor, alpha: float | None, selection) -> tuple[ViewChoice, bool]:
    """``(ViewChoice, area_defaulted)`` for one view under ``selection`` (a SelectionConfig)."""
    n = int(importance.numel())
    k_c, defaulted = selection.memory_size(alpha, n)
    k = memory_size(100.0, n, selection.ratio, selection.min_tokens)  # the cap K
    return ViewChoice(importance, k_c, k), defaulted


def memory_keywords(memory, forbidden: Collection[str] = ()) -> list[str]:
    """The memory's keywords over all views, first spelling kept, without any that hold a
    prompt sentinel or one of ``forbidden`` (the model's special tokens): generated text goes
    back into a prompt here."""
    out: list[str] = []
    seen: set[str] = set()
    for view in memory.views:
        for word in view.keywords:
            key = word.casefold()
            if key in seen or "<ego:" in word or any(t and t in word for t in forbidden):
                continue
            seen.add(key)
            out.append(word)
    return out


def context_header(strategy: MemoryStrategy, prompts) -> str:
    if not strategy.visual:
        return _KEYWORDS_HEADER
    return _VISUAL_KEYWORDS_HEADER if strategy.words else prompts.memory_header


def context_item(strategy: MemoryStrategy, prompts, memory, key: str,
                 blocks: Callable[[object], list], forbidden: Collection[str] = ()
                 ) -> tuple[str, list]:
    """``(text, visual blocks)`` of one concept in context; ``text`` holds ``<ego:key>`` where
    the blocks go (none for a words-only strategy)."""
    words = ", ".join(memory_keywords(memory, forbidden)) or "(no keywords)"
    if not strategy.visual:
        return f"{memory.name}: {words}\n", []
    item = prompts.memory_item.format(name=memory.name, key=key)
    if strategy.words:
        item = item.rstrip("\n") + f" {words}\n"
    return item, blocks(memory)


def footprint(backend, strategy: MemoryStrategy, prompts, memory,
              blocks: Sequence) -> dict[str, int]:
    """Tokens one concept puts in context under ``strategy``: ``visual`` (rows of its blocks),
    ``text`` (its item's words and the blocks' image delimiters) and ``view_tokens`` (all
    visual tokens of its reference views, the 100% of Table 3's "% of visual tokens")."""
    text, _ = context_item(strategy, prompts, memory, "m", lambda m: [],
                           backend.special_tokens)
    text_tokens = int(backend.tokenize(text.replace("<ego:m>", "")).numel())
    for block in blocks:
        before, _, after = backend.adapter.visual_open_close(block.kind)
        text_tokens += len(before) + len(after)
    return {"visual": int(sum(b.num_tokens for b in blocks)), "text": text_tokens,
            "view_tokens": int(sum(v.grid[0] * v.grid[1] for v in memory.views))}

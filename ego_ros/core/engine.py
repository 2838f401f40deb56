"""EgoEngine: concept memories injected into the LVLM's context (paper §3.5), for every task.

The context of every request is::

    <chat header> memory_header  name_1: <memory 1>  ...  name_k: <memory k>   <- prefix
    query: <image or clip>                                                    <- per frame
    <task prompt>                                                             <- per task

The prefix depends only on the concepts in context, so its key/value cache is computed once
per concept set and reused for every frame (a bounded LRU keyed by the concepts' names and
memory versions; any change to a concept drops the entries that hold it). With retrieval on,
the query image is encoded first, the concepts are ranked by similarity to it in the LLM
embedding space (``ConceptIndex``: mean over memory tokens of the max cosine similarity to any
query token) and the top ``max_in_context`` are put in context, in name order so that the same
set always gives the same prefix.

How a memory enters the context is its strategy's (``config.introduce.strategy``,
:mod:`ego_ros.core.strategies`): Ego's rows by default, or an ablation baseline's (words, all
rows, the re-encoded reference images).

One inference runs at a time (a lock); at most ``max_waiting`` callers queue behind it and any
further caller gets :class:`EngineBusy` at once instead of piling up.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ego_ros.core import limits
from ego_ros.core.calibration import resolve_layers
from ego_ros.core.introduce import IntroduceConfig, introduce_concept
from ego_ros.core.memory import ConceptMemory
from ego_ros.core.names import validate_concept_name
from ego_ros.core.parsing import mentioned_names, parse_choice, parse_present_names
from ego_ros.core.prompts import Prompts, prompts_for
from ego_ros.core.retrieval import ConceptIndex
from ego_ros.core.scoring import Thresholds, answer_variants, yes_no_score
from ego_ros.core.store import ConceptNotFound
from ego_ros.core.strategies import context_header, context_item, footprint, get_strategy
from ego_ros.core.types import (
    AnswerResult,
    ConceptInfo,
    ConceptScore,
    IntroduceResult,
    RecognitionResult,
    SkippedConcept,
)

log = logging.getLogger(__name__)

MODES = ("per-concept", "joint")


class EngineBusy(RuntimeError):  # noqa: N818 (reads as a state, like TimeoutError)
    """Too many requests are already waiting for the model."""


class UnknownConcept(KeyError):  # noqa: N818
    """A request named a concept that is not stored."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown concept"


@dataclass(frozen=True)
class EngineConfig:
    """Inference settings. ``thresholds`` holds per-concept decision thresholds on the score.

    max_in_context: most concepts put in one context; more stored ones trigger retrieval.
    prefix_cache_size: memory prefixes (one per concept set) kept; 0 disables reuse.
    max_new_tokens: budget of free-form answers and captions.
    max_waiting: callers allowed to wait behind the running request; more get EngineBusy.
    clip_fps: frame rate assumed for a clip given as native video (temporal positions).
    score_batch: per-concept questions scored in one batched forward pass.
    max_clip_frames: longer clips are subsampled evenly to this many frames (context bound).
    retrieval_pool: with more stored concepts than this, retrieval pre-filters by concept
        centroid and scores only this many exactly (``ConceptIndex.rank``); 0 = always exact.
    """

    introduce: IntroduceConfig = field(default_factory=IntroduceConfig)
    layers: tuple[int, ...] | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    max_in_context: int = 10
    prefix_cache_size: int = 8
    max_new_tokens: int = 48
    max_waiting: int = 4
    clip_fps: float = 2.0
    score_batch: int = 16
    max_clip_frames: int = 16
    retrieval_pool: int = 64

    def __post_init__(self) -> None:
        checks = {"max_in_context": 1, "prefix_cache_size": 0, "max_new_tokens": 1,
                  "max_waiting": 0, "score_batch": 1, "max_clip_frames": 1,
                  "retrieval_pool": 0}
        for name, low in checks.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"EngineConfig.{name} must be an integer >= {low}, got {value!r}")
        if not (isinstance(self.clip_fps, int | float) and self.clip_fps > 0):
            raise ValueError(f"EngineConfig.clip_fps must be positive, got {self.clip_fps!r}")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))


def split_shared_prefix(sequences: Sequence[torch.Tensor]
                        ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(trunk, branches)``: the longest token prefix all ``sequences`` share, and each
    sequence's rest, so that ``trunk + branches[i]`` is ``sequences[i]`` token for token.

    Every branch keeps at least one token (the position whose logits answer the question).
    """
    if not sequences:
        raise ValueError("split_shared_prefix: no sequences")
    width = min(int(t.numel()) for t in sequences) - 1  # every branch keeps a token
    if width < 0:
        raise ValueError("split_shared_prefix: empty sequence")
    rows = torch.stack([t[:width] for t in sequences])  # [N, width]
    differs = (rows != rows[:1]).any(dim=0).nonzero()
    shared = int(differs[0]) if differs.numel() else width
    return sequences[0][:shared], [t[shared:] for t in sequences]


@dataclass
class _Query:
    """An encoded query (image or clip) and how it enters the prompt."""

    blocks: list  # backend Visual blocks
    content: str  # prompt text with <ego:q...> sentinels, up to the last one
    after: str  # prompt text between the last query block and the task
    visuals: dict

    @property
    def tokens(self) -> torch.Tensor:
        """All query visual tokens ``[N, D]``, on the model's device (retrieval only)."""
        return torch.cat([b.tokens for b in self.blocks])


class EgoEngine:
    """Introduce, recognise, answer and caption with concept memories (in-process)."""

    def __init__(self, backend, store, config: EngineConfig | None = None,
                 layers: Sequence[int] | None = None) -> None:
        self.backend = backend
        self.store = store
        self.config = config or EngineConfig()
        chosen = layers if layers is not None else self.config.layers
        # Explicit layers, else the model's calibration file (ego-ros calibrate), else the
        # documented mid-to-late fallback.
        self.layers, self.layers_source = resolve_layers(backend, chosen)
        self.prompts: Prompts = prompts_for(backend.family)
        self._strategy = get_strategy(self.config.introduce.strategy)
        self._reference_views: dict[str, list[np.ndarray]] = {}  # reencode strategies only
        self._lock = threading.Lock()
        self._inside = 0  # callers running or waiting in _turn
        self._waiting_lock = threading.Lock()
        self._memories: dict[str, ConceptMemory] = {}
        self._skipped: dict[str, SkippedConcept] = {}  # stored, unusable: reported, forgettable
        self._versions: dict[str, int] = {}
        self._version_counter = 0
        self._prefixes: OrderedDict[tuple, object] = OrderedDict()
        self._tails: dict[tuple[str, str], list] = {}
        self._splits: dict[tuple, tuple] = {}  # memoised _questions
        self._yes = backend.variant_ids(answer_variants("yes"))
        self._no = backend.variant_ids(answer_variants("no"))
        if not self._yes or not self._no:
            log.warning("the tokenizer has no single-token yes/no; scores will be NaN")
        self.stats = {"requests": 0, "prefix_hits": 0, "prefix_misses": 0, "busy_rejections": 0}
        self._load_store()
        self._index = ConceptIndex.from_memories(
            {n: m.tokens for n, m in self._memories.items()}, device=backend.device,
            dim=backend.hidden_size)

    # -- bookkeeping ---------------------------------------------------------------------
    def _load_store(self) -> None:
        names, skipped = self.store.names(), []
        if names:
            for memory in self.store.get_many(names, skip_broken=True,
                                              skipped=skipped).values():
                self._remember(memory)
        self._skipped = {s.name: s for s in skipped}
        log.info("engine: %d concepts loaded (%d skipped, see the warnings), layers %s (%s)",
                 len(self._memories), len(skipped), self.layers, self.layers_source)

    def _remember(self, memory: ConceptMemory) -> None:
        self._version_counter += 1
        self._memories[memory.name] = memory
        self._versions[memory.name] = self._version_counter
        self._drop_prefixes(memory.name)

    def _drop_prefixes(self, name: str) -> None:
        for key in [k for k in self._prefixes if any(n == name for n, _ in k[0])]:
            del self._prefixes[key]

    @contextmanager
    def _turn(self):
        """Hold the model: one request at a time and at most ``max_waiting`` behind it."""
        with self._waiting_lock:
            if self._inside >= self.config.max_waiting + 1:
                self.stats["busy_rejections"] += 1
                raise EngineBusy(f"the model is busy and {self._inside - 1} request(s) are "
                                 "already waiting")
            self._inside += 1
        try:
            with self._lock:
                self.stats["requests"] += 1
                yield
        finally:
            with self._waiting_lock:
                self._inside -= 1

    # -- introduction ----------------------------------------------------------------------
    def introduce(self, name: str, images: Sequence[np.ndarray],
                  replace: bool = False) -> IntroduceResult:
        """Learn ``name`` from 1 to ``limits.MAX_VIEWS`` views; a name holding one of the
        model's special tokens is refused before the model is held."""
        name = validate_concept_name(name)
        limits.check_views(len(images))  # before the model is held: a refusal costs nothing
        limits.check_user_text(name, "the concept name", self.backend.special_tokens)
        started = time.perf_counter()
        with self._turn():
            if name in self._skipped and not replace:  # refused now, not after the LVLM passes
                raise ValueError(f"cannot add views to {name!r}: it was skipped at load "
                                 f"({self._skipped[name].reason}); introduce it with replace "
                                 "to overwrite it")
            new, traces = introduce_concept(self.backend, name, images, self.layers,
                                            self.config.introduce)
            stored = self.store.put(new, replace=replace)
            if self._strategy.reencode:  # the baseline re-encodes these for every question
                views = [] if replace else self._reference_views.get(name, [])
                self._reference_views[name] = views + [np.asarray(i) for i in images]
            self._remember(stored)
            self._skipped.pop(name, None)
            self._index.add(name, stored.tokens)  # replaces an indexed memory of that name
        return IntroduceResult(
            name=stored.name, num_tokens=stored.num_tokens, num_views=stored.num_views,
            keywords=[list(t.selection.keywords) for t in traces],
            area_percent=[t.selection.area_percent for t in traces],
            area_defaulted=[t.selection.area_defaulted for t in traces],
            layers=list(self.layers), elapsed_s=time.perf_counter() - started,
            selected=[{"indices": t.selection.indices.tolist(), "grid": list(t.selection.grid)}
                      for t in traces])

    def forget(self, name: str) -> bool:
        """Forget concept ``name`` (memory and stored file, or a skipped concept's entry and
        file); False when it is unknown."""
        name = validate_concept_name(name)
        with self._turn():
            if name in self._skipped:
                try:
                    self.store.delete(name)
                except ConceptNotFound:
                    log.info("skipped concept %r was already gone from the store", name)
                del self._skipped[name]
                return True
            if name not in self._memories:
                return False
            try:
                self.store.delete(name)
            except ConceptNotFound:  # already deleted by another process: forget it here too
                log.info("concept %r was already gone from the store", name)
            del self._memories[name]
            del self._versions[name]
            self._reference_views.pop(name, None)
            self._drop_prefixes(name)
            self._index.remove(name)
            return True

    def concepts(self) -> list[ConceptInfo]:
        memories = dict(self._memories)  # a snapshot: introduce/forget may run meanwhile
        return [memories[n].to_info() for n in sorted(memories)]

    def skipped_concepts(self) -> list[SkippedConcept]:
        """Stored concepts left out at load (why, and the fix); ``forget`` removes them."""
        skipped = dict(self._skipped)  # a snapshot, as in concepts()
        return [skipped[n] for n in sorted(skipped)]

    def health(self) -> dict:
        return {"ok": True, "family": self.backend.family, "device": str(self.backend.device),
                "dtype": str(self.backend.dtype).removeprefix("torch."),
                "concepts": len(self._memories), "concepts_skipped": len(self._skipped),
                "layers": list(self.layers),
                "layers_source": self.layers_source,
                "prefix_cache": len(self._prefixes), "busy": self._lock.locked(), **self.stats}

    # -- prompt pieces --------------------------------------------------------------------
    def _encode_query(self, frames: Sequence[np.ndarray], clip: bool) -> _Query:
        if not frames:
            raise ValueError("no frames given")
        if clip and len(frames) > self.config.max_clip_frames:
            keep = np.linspace(0, len(frames) - 1, self.config.max_clip_frames).round()
            frames = [frames[int(i)] for i in keep]  # evenly over the clip, last one kept
        if clip and len(frames) > 1:
            blocks = self.backend.encode_clip(frames, fps=self.config.clip_fps)
        else:
            blocks = self.backend.encode_images([frames[-1]])
        if len(blocks) == 1:
            video = blocks[0].kind == "video"
            lead = self.prompts.query_clip if video else self.prompts.query_image
            content, visuals = lead, {"query": blocks[0]}
        else:  # a clip given as several images
            parts = [f"Frame{i + 1}: <ego:q{i}>" for i in range(len(blocks))]
            content = self.prompts.query_clip.replace("<ego:query>", "".join(parts))
            visuals = {f"q{i}": b for i, b in enumerate(blocks)}
        cut = content.rindex(">") + 1  # the end of the last sentinel
        return _Query(blocks, content[:cut], content[cut:], visuals)

    def _select_concepts(self, query: _Query, restrict: Sequence[str] | None) -> list[str]:
        if restrict:
            restrict = [validate_concept_name(n) for n in restrict]
            missing = [n for n in restrict if n not in self._memories]
            if missing:
                raise UnknownConcept(f"unknown concept(s): {', '.join(missing)}")
            candidates = list(dict.fromkeys(restrict))
        else:
            candidates = list(self._memories)
        k = self.config.max_in_context
        if len(candidates) > k:
            if restrict:  # rank the named concepts only, exactly
                ranked = self._index.rank(query.tokens, k=None)
                allowed = set(candidates)
                candidates = [n for n, _ in ranked if n in allowed][:k]
            else:
                pool = max(k, self.config.retrieval_pool) if self.config.retrieval_pool else None
                candidates = [n for n, _ in self._index.rank(query.tokens, k=k, pool=pool)]
        return sorted(candidates)

    @property
    def memory_strategy(self) -> str:
        """The name of the memory strategy this engine introduces and injects with."""
        return self._strategy.name

    def memory_footprint(self, name: str) -> dict[str, int]:
        """Tokens concept ``name`` puts in context (``strategies.footprint``)."""
        memory = self._memories[validate_concept_name(name)]
        _, blocks = context_item(self._strategy, self.prompts, memory, "m", self._memory_blocks)
        return footprint(self.backend, self._strategy, self.prompts, memory, blocks)

    def _memory_blocks(self, memory: ConceptMemory) -> list:
        if self._strategy.reencode:
            views = self._reference_views.get(memory.name)
            if views is None or len(views) != memory.num_views:
                raise ValueError(f"memory strategy {self._strategy.name!r} re-encodes the "
                                 f"reference images of {memory.name!r}, which this engine "
                                 "does not hold (introduce the concept again in this process)")
            return self.backend.encode_images(views)
        from_view = []
        for v, view in enumerate(memory.views):
            rows, cols = view.grid
            idx = view.indices
            coords = torch.stack([torch.zeros_like(idx), idx // cols, idx % cols], dim=1)
            from_view.append(self.backend.memory_block(memory.view_tokens(v), coords,
                                                       (1, rows, cols)))
        return from_view

    def _prefix_text(self, names: Sequence[str]) -> tuple[str, dict]:
        if not names:
            return "", {}
        text = context_header(self._strategy, self.prompts)
        visuals = {}
        for i, name in enumerate(names):
            item, blocks = context_item(self._strategy, self.prompts, self._memories[name],
                                        f"m{i}", self._memory_blocks,
                                        self.backend.special_tokens)
            text += item
            if blocks:
                visuals[f"m{i}"] = blocks
        return text, visuals

    def _render(self, names: Sequence[str], query: _Query, task: str):
        """``(prefix state, query segments, task segments)`` for one request.

        The prefix (chat header, memory block, the text leading to the query) depends only on
        the concepts in context, their memory versions and that lead text ("Query image:" vs
        "Query video:"), which is its cache key. On a hit the memories are not even rendered:
        only the query and the task go through the chat template, and everything from the
        first query block on is the same text either way.
        """
        lead = query.content[:query.content.index("<ego:")]
        key = (tuple((n, self._versions[n]) for n in names), lead)
        reuse = bool(self.config.prefix_cache_size and names and self._strategy.cache_prefix)
        cached = self._prefixes.get(key) if reuse else None
        if cached is not None:
            self._prefixes.move_to_end(key)
            self.stats["prefix_hits"] += 1
            segments = self.backend.render(query.content + query.after + task, query.visuals)
        else:
            prefix_text, visuals = self._prefix_text(names)
            segments = self.backend.render(prefix_text + query.content + query.after + task,
                                           {**visuals, **query.visuals})
        ids = [i for i, seg in enumerate(segments) if any(seg is b for b in query.blocks)]
        first, last = ids[0], ids[-1]
        query_part, tail = segments[first:last + 1], segments[last + 1:]
        if cached is not None:
            return cached, query_part, tail
        return self._prefill_prefix(key, segments[:first], reuse), query_part, tail

    def _prefill_prefix(self, key: tuple, prefix_segments: list, cacheable: bool):
        """Prefill the memory prefix (``None`` when there is none) and cache its state."""
        if not prefix_segments:
            return None
        self.stats["prefix_misses"] += 1
        _, state = self.backend.prefill(prefix_segments, None)
        if self.config.prefix_cache_size and cacheable:
            self._prefixes[key] = state
            while len(self._prefixes) > self.config.prefix_cache_size:
                self._prefixes.popitem(last=False)
        return state

    def _prefixed(self, frames, clip, restrict, task: str):
        """Encode the query, pick the concepts, and get the [memories] prefix state (cached):
        returns the query, the names in context, the state, and the query's and the task's
        segments that follow it."""
        query = self._encode_query(frames, clip)
        names = self._select_concepts(query, restrict)
        state, query_part, tail = self._render(names, query, task)
        return query, names, state, query_part, tail

    # -- tasks ----------------------------------------------------------------------------
    def recognize(self, frames: Sequence[np.ndarray], mode: str = "per-concept",
                  clip: bool = False, concepts: Sequence[str] | None = None,
                  caption: bool = False) -> RecognitionResult:
        """Which known concepts are in the frame (the last one) or the clip (``clip=True``).

        per-concept (the paper's protocol): one yes/no question per concept in context, scored
        by P(yes) / (P(yes) + P(no)) of the first answer token, all branching from the cached
        memory prefix. The words all questions share run once (``_questions``): with up to
        ``score_batch`` concepts and no caption, the query, those words and every question's
        own rest go through the model in one pass (a tree of continuations); with more, the
        query and the shared words take one pass and the rests follow in batches; with a
        caption (which continues the query) whole questions follow in batches. joint: one
        question listing every name; the model answers with the present ones (no score,
        NaN)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        started = time.perf_counter()
        if not self._memories and not caption and not concepts:  # nothing to look for
            return RecognitionResult([], [], mode, "", 0.0)
        with self._turn():
            results: list[ConceptScore] = []
            cap_text = ""
            query, names, state, query_part, _ = self._prefixed(frames, clip, concepts, "")
            if mode == "per-concept" and not caption and names:
                trunk, branches = self._questions(query, names)
                if len(names) <= self.config.score_batch:  # query + every question, one pass
                    logits = self.backend.prefill_tree(query_part + [trunk], branches,
                                                       state)  # [N, V]
                    results = [self._decide(n, row) for n, row in zip(names, logits)]
                else:  # query + shared words in one pass, then the branches in batches
                    _, state = self.backend.prefill(query_part + [trunk], state)
                    results = self._score_batches(names, branches, state)
                return RecognitionResult(results, names, mode, "",
                                         (time.perf_counter() - started) * 1000.0)
            _, state = self.backend.prefill(query_part, state)
            # The joint question lists the names, so it is rendered once they are known.
            if mode == "joint" and names:
                tail = self._task_tail(
                    query, self.prompts.recognize_joint.format(names=", ".join(names)))
                gen = self.backend.generate(tail, state,
                                            max_new_tokens=self.config.max_new_tokens)
                present = set(parse_present_names(gen.text, names))
                results = [ConceptScore(n, n in present, math.nan) for n in names]
            elif names:  # the caption continues the query, so the questions come whole
                trunk, branches = self._questions(query, names)
                whole = [torch.cat([trunk, b]) for b in branches]
                results = self._score_batches(names, whole, state)
            if caption:
                cap_text = self._generate_from(query, state, self.prompts.caption)
        return RecognitionResult(results, names, mode, cap_text,
                                 (time.perf_counter() - started) * 1000.0)

    def next_token_logits(self, frames: Sequence[np.ndarray], task: str, clip: bool = False,
                          concepts: Sequence[str] | None = None) -> torch.Tensor:
        """Logits ``[V]`` (float32) of the first answer token for ``task`` after the
        personalized context: the number every score is made from, exposed for analysis."""
        with self._turn():
            _, _, state, query_part, tail = self._prefixed(frames, clip, concepts, task)
            logits, _ = self.backend.prefill(query_part + tail, state, keep_state=False)
        return logits

    def _task_tail(self, query: _Query, task: str) -> list:
        """Token segments of ``task`` exactly as they follow the query in a full render (the
        chat template's text after a visual item, the query's own trailing text, the task).
        Memoised: the same few questions are asked every frame."""
        key = (query.after, task)
        tail = self._tails.get(key)
        if tail is None:
            rendered = self.backend.render("<ego:x>" + query.after + task,
                                           {"x": self._dummy_block()})
            cut = next(i for i, s in enumerate(rendered) if not isinstance(s, torch.Tensor))
            tail = rendered[cut + 1:]
            if len(self._tails) >= 1024:
                self._tails.clear()
            self._tails[key] = tail
        return tail

    def _dummy_block(self):
        if not hasattr(self, "_dummy"):
            self._dummy = self.backend.memory_block(
                torch.zeros(1, self.backend.hidden_size), torch.zeros(1, 3, dtype=torch.long),
                (1, 1, 1))
        return self._dummy

    def _score_batches(self, names: Sequence[str], questions: Sequence[torch.Tensor],
                       state) -> list[ConceptScore]:
        """Score each name's question (token ids continuing ``state``) in right-padded
        batches of ``score_batch`` rows."""
        out: list[ConceptScore] = []
        step = self.config.score_batch
        for lo in range(0, len(names), step):
            logits = self.backend.prefill_batch(questions[lo:lo + step], state)  # [n, V]
            out += [self._decide(name, row) for name, row in zip(names[lo:lo + step], logits)]
        return out

    def _questions(self, query: _Query, names: Sequence[str]
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Each concept's yes/no question as it follows the query, split into the tokens
        all questions share (the trunk, run once) and each question's own rest (a branch).

        The split is the longest common token prefix of the fully rendered questions, so
        trunk + branch is token for token the question asked alone, whatever the wording;
        every branch keeps at least one token. The default wording ends with the name
        ("Answer yes or no. Does the query show {name}?"), so a branch is only the name, the
        question mark and the chat template's turn change."""
        key = (query.after, self.prompts.recognize_one, tuple(names))
        split = self._splits.get(key)
        if split is None:
            split = split_shared_prefix(
                [torch.cat(self._task_tail(query, self.prompts.recognize_one.format(name=n)))
                 for n in names])
            if len(self._splits) >= 256:
                self._splits.clear()
            self._splits[key] = split
        return split

    def _decide(self, name: str, logits: torch.Tensor) -> ConceptScore:
        """Score and decision of one concept from its first answer token's logits ``[V]``."""
        if not self._yes or not self._no:
            return ConceptScore(name, int(torch.argmax(logits)) in self._yes, math.nan)
        score = float(yes_no_score(logits, self._yes, self._no))
        return ConceptScore(name, self.config.thresholds.decide(name, score), score)

    def _generate_from(self, query: _Query, state, task: str) -> str:
        gen = self.backend.generate(self._task_tail(query, task), state,
                                    max_new_tokens=self.config.max_new_tokens)
        return gen.text.strip()

    def ask(self, question: str, frames: Sequence[np.ndarray], clip: bool = False,
            concepts: Sequence[str] | None = None,
            options: Mapping[str, str] | None = None) -> AnswerResult:
        """A question about the frame or clip; concept names may be used in it.

        With ``options`` ({"A": "on the table", "B": "on the floor"}) it is multiple choice:
        the options are listed after the question (one per line, "A. ..."), the model is asked
        for the letter, and ``choice`` of the result holds the letter read from its answer
        (``parse_choice``: "B", "(b)", "Answer: B) ...", or the option's text), else None.
        Sizes are bounded by ``ego_ros.core.limits`` (``LimitExceeded``, before tokenising)."""
        question = limits.check_question(question)  # sizes first, before any tokenising
        limits.check_options(options)
        specials = self.backend.special_tokens
        limits.check_user_text(question, "the question", specials)
        task = self.prompts.ask.format(question=question)
        letters: list[str] = []
        if options:
            letters = sorted(options)
            bad = [k for k in letters if not (len(k) == 1 and k.isalpha() and k.isupper())]
            if bad or len(letters) < 2:
                raise ValueError(f"ask: options need at least two single capital letters as "
                                 f"keys, got {list(options)[:limits.MAX_OPTIONS]}")
            for key in letters:
                limits.check_user_text(options[key], f"option {key}", specials)
            task += "".join(f"\n{k}. {options[k]}" for k in letters) + self.prompts.choice_suffix
        limits.check_question_tokens(
            sum(len(self.backend.tokenize(t)) for t in (question, *(options or {}).values())))
        result = self._answer(task, frames, clip, concepts)
        if not letters:
            return result
        choice = parse_choice(result.answer, letters, [str(options[k]) for k in letters])
        return replace(result, choice=choice)

    def caption(self, frames: Sequence[np.ndarray], clip: bool = False,
                concepts: Sequence[str] | None = None) -> AnswerResult:
        """A personalized caption; ``concepts`` of the result lists the known names in it."""
        return self._answer(self.prompts.caption, frames, clip, concepts)

    def _answer(self, task: str, frames, clip, concepts) -> AnswerResult:
        started = time.perf_counter()
        with self._turn():
            _, names, state, query_part, tail = self._prefixed(frames, clip, concepts, task)
            gen = self.backend.generate(query_part + tail, state,
                                        max_new_tokens=self.config.max_new_tokens)
        text = gen.text.strip()
        return AnswerResult(text, mentioned_names(text, list(dict(self._memories))), names,
                            (time.perf_counter() - started) * 1000.0)

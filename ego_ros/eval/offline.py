"""Offline evaluation: a labelled bag's frames straight into an engine, the paper's protocol.

    engine = EgoEngine(backend, MemoryStore(out / "store", backend.fingerprint))
    records = run_offline(engine, Path("bag"), EvalConfig(refs=1, protocol="paper"))
    write_report(records, out)

Deterministic and as fast as the model allows (no ROS, no real-time playback): the reference
for the live mode and for comparing personalization methods. The run (Ego §4.1), with the
contexts of :mod:`ego_ros.eval.protocols` (``paper``: each question with its own concept's
memory alone; ``robot``: every concept, as the node):

1. Teach: every concept of the bag's labels is introduced from its reference views
   (``BAG/ego_refs``; at most ``refs`` of them), replacing a memory of that name in the store
   (or given: ``teach=`` the records of an earlier teaching of this engine, for a second
   protocol on the same memories).
2. Recognition: every labelled frame (or, with ``clip_frames > 1``, every run of that many
   consecutive labelled frames, whose ground truth is the union of its frames') is asked about
   **every** concept (``per-concept`` mode: one yes/no per concept with a calibrated score),
   and, under ``paper``, about every co-occurring group of concepts (multi-concept) with the
   group's memories. Frames used as reference views by index are never queried.
3. VQA: every question of the labels is asked on its frame about its concept(s); multiple-
   choice questions get their options appended and the answer letter parsed with
   :func:`~ego_ros.core.parsing.parse_choice`.
4. Captioning: every frame with reference captions is captioned with all concepts available;
   the known names in the caption are what is scored.

A frame that cannot be read (a corrupt message) or that the model refuses (e.g. too small) is
skipped, counted and named in the records (topic, message index, stamp, reason); the run goes
on. The strategy of the engine's memories (``engine.memory_strategy``) and each concept's
in-context token count (``engine.memory_footprint``) are recorded when the engine has them.

The engine is anything with the engine's public methods (``introduce``, ``recognize``, ``ask``,
``caption``): the in-process :class:`~ego_ros.core.engine.EgoEngine` or a worker client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ego_ros.bag.io import BadFrame, BagFrame, read_image_bag
from ego_ros.bag.labels import BagLabels, FrameLabel, VqaItem, load_labels, reference_images
from ego_ros.core.types import EngineLike
from ego_ros.eval.protocols import PROTOCOLS, Protocol, get_protocol
from ego_ros.eval.report import (
    CaptionRecord,
    EvalRecords,
    GroupRecord,
    RecognitionRecord,
    SkippedFrame,
    TeachRecord,
    VqaRecord,
)

__all__ = [
    "RECOGNITION_MODES",
    "TASKS",
    "EngineApi",
    "EvalConfig",
    "EvalError",
    "concept_groups",
    "parse_tasks",
    "run_offline",
    "teach_concepts",
]

logger = logging.getLogger(__name__)

TASKS = ("recognition", "vqa", "caption")
RECOGNITION_MODES = ("per-concept", "joint")


class EvalError(RuntimeError):
    """The evaluation cannot run on this bag or with these settings; the message says why."""


# The engine methods an evaluation needs: EgoEngine and the worker client alike.
EngineApi = EngineLike


def parse_tasks(text: str) -> tuple[str, ...]:
    """``"recognition,vqa"`` -> ``("recognition", "vqa")``; unknown or no tasks are an error."""
    tasks = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"tasks must be a comma-separated subset of {','.join(TASKS)}, "
                         f"got {text!r}")
    return tasks


@dataclass(frozen=True)
class EvalConfig:
    """Settings of an evaluation run (offline here; the live mode takes the same); validated
    on construction.

    refs: reference views taught per concept (the first ``refs`` of the labels; None: all).
    clip_frames: frames per recognition query; 1 asks about single frames, N > 1 about clips
        of N consecutive labelled frames (a shorter remainder at the end is not queried).
    tasks: which of ``TASKS`` to run (tasks without labels in the bag are skipped).
    recognition_mode: ``per-concept`` (the paper's protocol, scored) or ``joint``.
    protocol: which concepts are in context per question, a name of ``PROTOCOLS``.
    max_frames: stop after this many labelled frames (a quick look at a long bag).
    replace: replace memories of the same names already in the engine's store.
    progress: show tqdm progress bars on stderr (when stderr is a terminal).
    """

    refs: int | None = None
    clip_frames: int = 1
    tasks: tuple[str, ...] = TASKS
    recognition_mode: str = "per-concept"
    protocol: str = "paper"
    max_frames: int | None = None
    replace: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"EvalConfig.{name}={getattr(self, name)!r} {why}")

        if self.refs is not None and (isinstance(self.refs, bool) or self.refs < 1):
            raise bad("refs", "must be >= 1 or None (all reference views)")
        if isinstance(self.clip_frames, bool) or self.clip_frames < 1:
            raise bad("clip_frames", "must be >= 1")
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks or any(t not in TASKS for t in self.tasks):
            raise bad("tasks", f"must be a non-empty subset of {TASKS}")
        if self.recognition_mode not in RECOGNITION_MODES:
            raise bad("recognition_mode", f"must be one of {RECOGNITION_MODES}")
        if self.protocol not in PROTOCOLS:
            raise bad("protocol", f"must be one of {tuple(PROTOCOLS)}")
        if self.max_frames is not None and self.max_frames < 1:
            raise bad("max_frames", "must be >= 1 or None")


def _bar(config: EvalConfig, **kwargs: Any) -> tqdm:
    # disable=None: tqdm turns itself off when stderr is not a terminal (logs, CI).
    return tqdm(disable=None if config.progress else True, dynamic_ncols=True, **kwargs)


def teach_concepts(engine: EngineApi, bag: Path, labels: BagLabels, config: EvalConfig
                   ) -> list[TeachRecord]:
    """Introduce every labelled concept from its first ``config.refs`` reference views."""
    records: list[TeachRecord] = []
    with _bar(config, total=len(labels.concepts), desc="teaching", unit="concept") as bar:
        for concept in labels.concepts:
            if not concept.refs:
                raise EvalError(f"concept {concept.name!r} has no reference views in the labels "
                                f"of {bag}; it cannot be taught")
            if config.refs is not None and config.refs > len(concept.refs):
                logger.warning("concept %r has %d reference views; --refs %d uses all of them",
                               concept.name, len(concept.refs), config.refs)
            images = reference_images(bag, labels, concept.name, config.refs)
            started = time.perf_counter()
            result = engine.introduce(concept.name, images, replace=config.replace)
            records.append(TeachRecord(
                concept=concept.name, views=len(images), num_tokens=result.num_tokens,
                keywords=tuple(tuple(k) for k in result.keywords),
                elapsed_s=time.perf_counter() - started))
            bar.update(1)
    return records


def reference_indices(labels: BagLabels, refs: int | None) -> set[int]:
    """Bag frame indices taught as reference views: these are never queried."""
    return {r.index for c in labels.concepts for r in c.refs[:refs] if r.index is not None}


def concept_groups(labels: BagLabels) -> list[tuple[str, ...]]:
    """The groups of two or more concepts that some labelled frame shows together (the
    multi-concept protocol's pairs), in order of first appearance."""
    return list(dict.fromkeys(tuple(sorted(set(f.concepts))) for f in labels.frames
                              if len(set(f.concepts)) >= 2))


def _query_frames(bag: Path, labels: BagLabels, config: EvalConfig, skip_indices: set[int],
                  bad: list[BadFrame]) -> Iterator[tuple[int, BagFrame]]:
    """``(message index, frame)`` of the bag's labelled frames in bag order (each stamp once),
    up to ``max_frames``; messages that cannot be read are appended to ``bad`` and skipped."""
    labelled = labels.frame_by_stamp()
    seen: set[int] = set()
    read = 0
    for frame in read_image_bag(bag, labels.topic, on_bad_frame=bad.append):
        index = read + len(bad)  # the message's position on the topic, bad ones counted
        read += 1
        if frame.stamp_ns not in labelled or index in skip_indices:
            continue
        if frame.stamp_ns in seen:
            logger.warning("bag frame %d repeats stamp %d; only the first is evaluated", index,
                           frame.stamp_ns)
            continue
        seen.add(frame.stamp_ns)
        yield index, frame
        if config.max_frames is not None and len(seen) >= config.max_frames:
            return


def _recognize(engine: EngineApi, frames: Sequence[BagFrame], truth_of: dict[int, FrameLabel],
               concepts: list[str], config: EvalConfig, protocol: Protocol) -> RecognitionRecord:
    """One recognition query, one context per entry of the protocol, merged."""
    truth = sorted({c for f in frames for c in truth_of[f.stamp_ns].concepts})
    present: dict[str, bool] = {}
    scores: dict[str, float] = {}
    latency = 0.0
    for context in protocol.recognition_contexts(concepts):
        result = engine.recognize([f.rgb for f in frames], mode=config.recognition_mode,
                                  clip=len(frames) > 1,
                                  concepts=list(context) if context is not None else None)
        present.update({s.name: bool(s.present) for s in result.concepts})
        scores.update({s.name: float(s.score) for s in result.concepts})
        latency += float(result.latency_ms)
    return RecognitionRecord(
        stamp_ns=frames[-1].stamp_ns,
        frame_stamps=tuple(f.stamp_ns for f in frames),
        truth=tuple(truth), present=present, scores=scores, latency_ms=latency)


def _groups(engine: EngineApi, frames: Sequence[BagFrame], truth: Sequence[str],
            groups: Sequence[tuple[str, ...]], config: EvalConfig, protocol: Protocol
            ) -> list[GroupRecord]:
    """The multi-concept questions of one query: each group's memories alone in context."""
    out = []
    for group in protocol.group_contexts(groups):
        result = engine.recognize([f.rgb for f in frames], mode=config.recognition_mode,
                                  clip=len(frames) > 1, concepts=list(group))
        out.append(GroupRecord(
            stamp_ns=frames[-1].stamp_ns, frame_stamps=tuple(f.stamp_ns for f in frames),
            group=tuple(group), truth=tuple(truth),
            present={s.name: bool(s.present) for s in result.concepts if s.name in group},
            scores={s.name: float(s.score) for s in result.concepts if s.name in group},
            latency_ms=float(result.latency_ms)))
    return out


def _item_concepts(item: VqaItem) -> tuple[str, ...]:
    """The concepts a question names (several for multi-concept items, when labels have them)."""
    return tuple(getattr(item, "concepts", None) or (item.concept,))


def _ask(engine: EngineApi, frame: BagFrame, item: VqaItem, protocol: Protocol) -> VqaRecord:
    options = dict(item.options) if item.options is not None else None
    context = protocol.vqa_context(_item_concepts(item))
    result = engine.ask(item.question, [frame.rgb],
                        concepts=list(context) if context is not None else None,
                        options=options)
    choice = result.choice if options else None
    return VqaRecord(stamp_ns=frame.stamp_ns, concept=item.concept, question=item.question,
                     options=options, answer=item.answer, response=result.answer,
                     choice=choice, latency_ms=float(result.latency_ms))


def _caption(engine: EngineApi, frame: BagFrame, truth: FrameLabel, concepts: list[str],
             protocol: Protocol) -> CaptionRecord:
    context = protocol.caption_context(concepts)
    result = engine.caption([frame.rgb], concepts=list(context) if context is not None else None)
    return CaptionRecord(stamp_ns=frame.stamp_ns, truth=tuple(truth.concepts),
                         caption=result.answer, mentioned=tuple(result.concepts),
                         latency_ms=float(result.latency_ms))


def _frame_errors() -> tuple[type[BaseException], ...]:
    """What a model raises for one unusable frame (a bad size, a refused input): skipped."""
    from ego_ros.backends.base import BackendError

    return (ValueError, BackendError)


def _footprints(engine: EngineApi, concepts: Sequence[str]) -> dict[str, dict[str, int]]:
    measure = getattr(engine, "memory_footprint", None)
    return {c: measure(c) for c in concepts} if callable(measure) else {}


def run_offline(engine: EngineApi, bag: Path, config: EvalConfig | None = None,
                labels: BagLabels | None = None,
                teach: Sequence[TeachRecord] | None = None) -> EvalRecords:
    """Teach the bag's concepts, run every asked task on its labelled frames, record it all.

    ``labels`` defaults to the bag's own ``ego_labels.json``; ``teach``: the concepts are
    already in the engine (records of that teaching), do not teach them again. Raises
    :class:`EvalError` when the bag cannot be evaluated (no labelled frame in it, no concepts,
    no frame the model accepts).
    """
    config = config or EvalConfig()
    protocol = get_protocol(config.protocol)
    bag = Path(bag)
    labels = labels if labels is not None else load_labels(bag)
    if not labels.concepts:
        raise EvalError(f"the labels of {bag} define no concepts; nothing to evaluate")
    started = time.perf_counter()
    teach = list(teach) if teach is not None else teach_concepts(engine, bag, labels, config)

    tasks = set(config.tasks)
    vqa_by_stamp: dict[int, list[VqaItem]] = {}
    if "vqa" in tasks:
        for item in labels.vqa:
            vqa_by_stamp.setdefault(item.stamp_ns, []).append(item)
    caption_stamps = {c.stamp_ns for c in labels.captions} if "caption" in tasks else set()
    skip = reference_indices(labels, config.refs)
    if skip:
        logger.info("frames %s are reference views and are not queried", sorted(skip))

    truth_of = labels.frame_by_stamp()
    concepts = labels.concept_names
    groups = concept_groups(labels)
    recognition: list[RecognitionRecord] = []
    group_records: list[GroupRecord] = []
    vqa: list[VqaRecord] = []
    captions: list[CaptionRecord] = []
    bad: list[BadFrame] = []
    refused: list[SkippedFrame] = []
    frame_errors = _frame_errors()
    clip: list[BagFrame] = []
    evaluated = 0
    total = len(labels.frames)
    if config.max_frames is not None:
        total = min(total, config.max_frames)
    with _bar(config, total=total, desc="evaluating", unit="frame") as bar:
        bad_before = 0
        for index, frame in _query_frames(bag, labels, config, skip, bad):
            if len(bad) > bad_before and clip:  # a clip is consecutive frames: start anew
                logger.warning("a bad frame interrupts a clip; its %d frame(s) are not "
                               "queried for recognition", len(clip))
                clip = []
            bad_before = len(bad)
            rec: list[RecognitionRecord] = []
            grp: list[GroupRecord] = []
            stage = "recognition"
            try:
                if "recognition" in tasks:
                    clip.append(frame)
                    if len(clip) == config.clip_frames:
                        query, clip = clip, []
                        rec.append(_recognize(engine, query, truth_of, concepts, config,
                                              protocol))
                        grp += _groups(engine, query, rec[-1].truth, groups, config, protocol)
                stage = "vqa"
                asked = [_ask(engine, frame, item, protocol)
                         for item in vqa_by_stamp.get(frame.stamp_ns, ())]
                stage = "caption"
                captioned = ([_caption(engine, frame, truth_of[frame.stamp_ns], concepts,
                                       protocol)] if frame.stamp_ns in caption_stamps else [])
            except frame_errors as exc:
                logger.warning("bag frame %d (stamp %d) skipped: %s failed: %s", index,
                               frame.stamp_ns, stage, exc)
                refused.append(SkippedFrame(labels.topic, index, frame.stamp_ns,
                                            f"{stage}: {type(exc).__name__}: {exc}"))
                clip = []
                bar.update(1)
                continue
            evaluated += 1
            recognition += rec
            group_records += grp
            vqa += asked
            captions += captioned
            bar.update(1)
    skipped = [SkippedFrame(b.topic, b.index, b.stamp_ns, f"decode: {b.reason}") for b in bad]
    skipped = sorted(skipped + refused, key=lambda f: f.index)
    for frame in skipped:
        logger.warning("skipped bag frame: %s message %d, stamp %s: %s", frame.topic,
                       frame.index, frame.stamp_ns, frame.reason)
    if evaluated == 0:
        why = f"; the first skipped frame: {skipped[0].reason}" if skipped else ""
        raise EvalError(
            f"no labelled frame of {bag} was evaluated on topic {labels.topic} (the labels name "
            f"{len(labels.frames)} frames, {len(skipped)} frame(s) were skipped{why}); is this "
            "the bag the labels were made for?")
    if config.max_frames is None and evaluated < len(labels.frames):
        logger.warning("%d labelled frame(s) are not in the bag, are reference views or were "
                       "skipped; they were not queried", len(labels.frames) - evaluated)
    if clip:
        logger.info("the last %d labelled frame(s) do not fill a clip of %d and are not queried "
                    "for recognition", len(clip), config.clip_frames)
        evaluated -= len(clip)
    teach_views = {t.concept: t.views for t in teach}
    return EvalRecords(
        mode="offline",
        concepts=tuple(labels.concept_names),
        recognition=tuple(recognition),
        vqa=tuple(vqa),
        captions=tuple(captions),
        teach=tuple(teach),
        clip_frames=config.clip_frames,
        labelled_frames=evaluated,
        elapsed_s=time.perf_counter() - started,
        protocol=protocol.name,
        memory=str(getattr(engine, "memory_strategy", "ego")),
        groups=tuple(group_records),
        skipped=tuple(skipped),
        context_tokens=_footprints(engine, concepts),
        details={
            "bag": str(bag),
            "dataset": labels.source.dataset,
            "topic": labels.topic,
            "refs": config.refs if config.refs is not None else "all",
            "views_per_concept": min(teach_views.values()) if teach_views else 0,
            "tasks": ",".join(config.tasks),
            "recognition_mode": config.recognition_mode,
            "protocol": protocol.name,
            "memory": str(getattr(engine, "memory_strategy", "ego")),
            "labelled_frames_in_labels": len(labels.frames),
        },
    )

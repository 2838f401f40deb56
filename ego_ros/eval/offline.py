"""Offline evaluation: a labelled bag's frames straight into an engine, the paper's protocol.

    engine = EgoEngine(backend, MemoryStore(out / "store", backend.fingerprint))
    records = run_offline(engine, Path("bag"), EvalConfig(refs=1))
    write_report(records, out)

Deterministic and as fast as the model allows (no ROS, no real-time playback): the reference
for the live mode and for comparing personalization methods. The run (Ego §4.1):

1. Teach: every concept of the bag's labels is introduced from its reference views
   (``BAG/ego_refs``; at most ``refs`` of them), replacing a memory of that name in the store.
2. Recognition: every labelled frame (or, with ``clip_frames > 1``, every run of that many
   consecutive labelled frames, whose ground truth is the union of its frames') is asked about
   **every** concept (``per-concept`` mode: one yes/no per concept with a calibrated score).
   Frames used as reference views by index are never queried.
3. VQA: every question of the labels is asked on its frame about its concept; multiple-choice
   questions get their options appended and the answer letter parsed with
   :func:`~ego_ros.core.parsing.parse_choice`.
4. Captioning: every frame with reference captions is captioned with all concepts available;
   the known names in the caption are what is scored.

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

from ego_ros.bag.io import BagFrame, read_image_bag
from ego_ros.bag.labels import BagLabels, FrameLabel, VqaItem, load_labels, reference_images
from ego_ros.core.types import EngineLike
from ego_ros.eval.report import (
    CaptionRecord,
    EvalRecords,
    RecognitionRecord,
    TeachRecord,
    VqaRecord,
)

__all__ = [
    "RECOGNITION_MODES",
    "TASKS",
    "EngineApi",
    "EvalConfig",
    "EvalError",
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
    max_frames: stop after this many labelled frames (a quick look at a long bag).
    replace: replace memories of the same names already in the engine's store.
    progress: show tqdm progress bars on stderr (when stderr is a terminal).
    """

    refs: int | None = None
    clip_frames: int = 1
    tasks: tuple[str, ...] = TASKS
    recognition_mode: str = "per-concept"
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


def _query_frames(bag: Path, labels: BagLabels, config: EvalConfig,
                  skip_indices: set[int]) -> Iterator[BagFrame]:
    """The bag's labelled frames in bag order (each stamp once), up to ``max_frames``."""
    labelled = labels.frame_by_stamp()
    seen: set[int] = set()
    for index, frame in enumerate(read_image_bag(bag, labels.topic)):
        if frame.stamp_ns not in labelled or index in skip_indices:
            continue
        if frame.stamp_ns in seen:
            logger.warning("bag frame %d repeats stamp %d; only the first is evaluated", index,
                           frame.stamp_ns)
            continue
        seen.add(frame.stamp_ns)
        yield frame
        if config.max_frames is not None and len(seen) >= config.max_frames:
            return


def _recognize(engine: EngineApi, frames: Sequence[BagFrame], truth_of: dict[int, FrameLabel],
               concepts: list[str], config: EvalConfig) -> RecognitionRecord:
    truth = sorted({c for f in frames for c in truth_of[f.stamp_ns].concepts})
    result = engine.recognize([f.rgb for f in frames], mode=config.recognition_mode,
                              clip=len(frames) > 1, concepts=concepts)
    return RecognitionRecord(
        stamp_ns=frames[-1].stamp_ns,
        frame_stamps=tuple(f.stamp_ns for f in frames),
        truth=tuple(truth),
        present={s.name: bool(s.present) for s in result.concepts},
        scores={s.name: float(s.score) for s in result.concepts},
        latency_ms=float(result.latency_ms))


def _ask(engine: EngineApi, frame: BagFrame, item: VqaItem) -> VqaRecord:
    options = dict(item.options) if item.options is not None else None
    result = engine.ask(item.question, [frame.rgb], concepts=list(item.concepts), options=options)
    choice = result.choice if options else None
    return VqaRecord(stamp_ns=frame.stamp_ns, concept=item.concept, question=item.question,
                     options=options, answer=item.answer, response=result.answer,
                     choice=choice, latency_ms=float(result.latency_ms))


def _caption(engine: EngineApi, frame: BagFrame, truth: FrameLabel) -> CaptionRecord:
    result = engine.caption([frame.rgb])
    return CaptionRecord(stamp_ns=frame.stamp_ns, truth=tuple(truth.concepts),
                         caption=result.answer, mentioned=tuple(result.concepts),
                         latency_ms=float(result.latency_ms))


def run_offline(engine: EngineApi, bag: Path, config: EvalConfig | None = None,
                labels: BagLabels | None = None) -> EvalRecords:
    """Teach the bag's concepts, run every asked task on its labelled frames, record it all.

    ``labels`` defaults to the bag's own ``ego_labels.json``. Raises :class:`EvalError` when
    the bag cannot be evaluated (no labelled frame in it, no concepts).
    """
    config = config or EvalConfig()
    bag = Path(bag)
    labels = labels if labels is not None else load_labels(bag)
    if not labels.concepts:
        raise EvalError(f"the labels of {bag} define no concepts; nothing to evaluate")
    started = time.perf_counter()
    teach = teach_concepts(engine, bag, labels, config)

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
    recognition: list[RecognitionRecord] = []
    vqa: list[VqaRecord] = []
    captions: list[CaptionRecord] = []
    clip: list[BagFrame] = []
    evaluated = 0
    total = len(labels.frames)
    if config.max_frames is not None:
        total = min(total, config.max_frames)
    with _bar(config, total=total, desc="evaluating", unit="frame") as bar:
        for frame in _query_frames(bag, labels, config, skip):
            evaluated += 1
            if "recognition" in tasks:
                clip.append(frame)
                if len(clip) == config.clip_frames:
                    recognition.append(_recognize(engine, clip, truth_of, concepts, config))
                    clip = []
            for item in vqa_by_stamp.get(frame.stamp_ns, ()):
                vqa.append(_ask(engine, frame, item))
            if frame.stamp_ns in caption_stamps:
                captions.append(_caption(engine, frame, truth_of[frame.stamp_ns]))
            bar.update(1)
    if evaluated == 0:
        raise EvalError(
            f"no labelled frame of {bag} was found on topic {labels.topic} (the labels name "
            f"{len(labels.frames)} frames); is this the bag the labels were made for?")
    if config.max_frames is None and evaluated < len(labels.frames):
        logger.warning("%d labelled frame(s) are not in the bag or are reference views; they "
                       "were not queried", len(labels.frames) - evaluated)
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
        details={
            "bag": str(bag),
            "dataset": labels.source.dataset,
            "topic": labels.topic,
            "refs": config.refs if config.refs is not None else "all",
            "views_per_concept": min(teach_views.values()) if teach_views else 0,
            "tasks": ",".join(config.tasks),
            "recognition_mode": config.recognition_mode,
            "labelled_frames_in_labels": len(labels.frames),
        },
    )

"""What every dataset importer shares: the imported dataset, the fixed split rule, the writer.

    pool -> pick_views(concept, pool, split)      reference views, by a rule anyone can redo
    Imported(concepts, queries, questions)        what an importer reads from its layout
    write_dataset_bag(imported, out, ...)         -> camera bag of the queries + ego_labels.json

The split rule: a concept's candidate reference files are ranked by
``sha256("ego-views/v1/<seed>/<concept>/<file name>")`` and the first ``views`` are taken. It
depends only on the seed, the concept and the file names (not on numpy, the platform, the
folder order or the other concepts), so two users with the same files get the same split;
the labels record the rule and the chosen files. A split recorded in another bag's labels can
be reused instead (:class:`SplitRule` ``recorded``), e.g. a published 1-view split.

Queries are played in an order ranked the same way (``ego-order/v1/<seed>/<source>``), one
every ``1/fps`` seconds; each question is attached to the frame of its photo.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ego_ros.bag.io import (
    DEFAULT_START_NS,
    DEFAULT_TOPIC,
    image_topic,
    load_rgb,
    resize_max_side,
    staged_bag_dir,
    write_image_bag,
)
from ego_ros.bag.labels import (
    LABELS_FILE,
    BagLabels,
    CaptionLabel,
    ConceptLabel,
    FrameLabel,
    LabelsError,
    RefView,
    SourceInfo,
    SplitInfo,
    TextQaItem,
    VqaItem,
    copy_reference,
    refs_dir,
    save_labels,
    write_reference,
)
from ego_ros.core.names import InvalidConceptName, validate_concept_name

__all__ = [
    "IMAGE_SUFFIXES",
    "DatasetError",
    "Imported",
    "ImportedConcept",
    "Query",
    "Question",
    "SplitRule",
    "concept_name",
    "images_in",
    "name_concepts",
    "pick_views",
    "read_json",
    "write_dataset_bag",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MAX_JSON_BYTES = 64 * 1024 * 1024  # dataset annotation files are kilobytes; refuse a runaway one
SPLIT_RULE = "sha256(ego-views/v1/<seed>/<concept>/<file name>) rank, first N"
_NS = 1_000_000_000
_PLACEHOLDERS = (re.compile(r"<sks>"), re.compile(r"\bsks\b"))


class DatasetError(ValueError):
    """The dataset folder does not have the expected shape; the message says where."""


@dataclass(frozen=True)
class SplitRule:
    """How reference views are chosen: ``views`` per concept by the seeded rule, or the files
    ``recorded`` per concept (dataset-relative sources, as another bag's ``split`` lists)."""

    views: int
    seed: int = 0
    recorded: Mapping[str, tuple[str, ...]] | None = None

    @classmethod
    def from_recorded(cls, references: Mapping[str, Sequence[str]], seed: int = 0) -> SplitRule:
        """The split another bag recorded (its labels' ``split.references``)."""
        recorded = {k: tuple(v) for k, v in references.items()}
        if not recorded or not all(recorded.values()):
            raise DatasetError("the recorded split names no reference views")
        return cls(max(len(v) for v in recorded.values()), seed, recorded)

    def __post_init__(self) -> None:
        if isinstance(self.views, bool) or not isinstance(self.views, int) or self.views < 1:
            raise DatasetError(f"views must be an integer >= 1 (the paper uses 1 or 5), got "
                               f"{self.views!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise DatasetError(f"seed must be an integer, got {self.seed!r}")


@dataclass(frozen=True)
class ImportedConcept:
    """A concept and its chosen reference views (files and their dataset-relative sources)."""

    name: str
    references: tuple[Path, ...]
    sources: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True)
class Query:
    """One query photo: what is in it, and which test group of the dataset it belongs to."""

    photo: Path
    source: str  # dataset-relative POSIX path: "test/bo/3.png"
    concepts: tuple[str, ...]
    group: str = ""
    target: str = ""
    captions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Question:
    """A question from a dataset file; ``photo`` None means text-only (no image)."""

    photo: Path | None
    concepts: tuple[str, ...]
    question: str
    answer: str
    options: Mapping[str, str] | None
    source: str  # the dataset file it came from


@dataclass(frozen=True)
class Imported:
    """Everything an importer read, ready to be written as a bag."""

    layout: str
    root: Path
    concepts: tuple[ImportedConcept, ...]
    queries: tuple[Query, ...]
    questions: tuple[Question, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Reading helpers
# ----------------------------------------------------------------------------------------------


def read_json(path: Path) -> Any:
    """A dataset JSON file, with errors that name it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise DatasetError(f"{path} is {size} bytes; dataset annotation files over "
                           f"{MAX_JSON_BYTES} bytes are refused")
    try:
        return json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from exc


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def images_in(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, in natural order (``2.png`` before ``10.png``)."""
    return sorted((p for p in Path(folder).iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and
                   not p.name.startswith(".")), key=_natural_key)


def subfolders(folder: Path) -> list[Path]:
    return sorted((p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=_natural_key)


def concept_name(text: str, where: str) -> str:
    """A dataset's concept name as a valid ego concept name, or an error naming ``where``."""
    try:
        return validate_concept_name(text)
    except InvalidConceptName as exc:
        raise DatasetError(f"{where}: {exc}") from exc


def name_concepts(text: str, concepts: Sequence[str]) -> str:
    """Replace the dataset's placeholder (``<sks>``, or bare ``sks``) by the concept name(s);
    several concepts are written "A and B"."""
    name = " and ".join(concepts)
    for pattern in _PLACEHOLDERS:
        text = pattern.sub(name, text)
    return text


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as a POSIX string (the dataset-relative source)."""
    return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()


def choice_question(doc: Any, where: str, options_key: str = "options"
                    ) -> tuple[str, dict[str, str] | None, str]:
    """``(question, options or None, answer)`` of one question entry.

    Multiple choice: ``{"question", <options_key>: {"A": ..., "B": ...}, "correct_answer"}``;
    open-ended: ``{"question", "answer"}`` (This-Is-My's multi-concept VQA).
    """
    if not isinstance(doc, dict):
        raise DatasetError(f"{where} must be an object with question and answer")
    question = doc.get("question")
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(f"{where}.question must be a non-empty string, got {question!r:.60}")
    options = doc.get(options_key)
    if options is None:
        answer = doc.get("answer", doc.get("correct_answer"))
        if not isinstance(answer, str) or not answer.strip():
            raise DatasetError(f"{where} has neither {options_key!r} with 'correct_answer' nor "
                               f"an 'answer' string")
        return question, None, answer
    if not (isinstance(options, dict) and len(options) >= 2
            and all(isinstance(k, str) and isinstance(v, str) for k, v in options.items())):
        raise DatasetError(f"{where}.{options_key} must map at least two letters to texts, got "
                           f"{options!r:.80}")
    answer = doc.get("correct_answer")
    if answer not in options:
        raise DatasetError(f"{where}.correct_answer {answer!r} is not one of the option letters "
                           f"{sorted(options)}")
    return question, dict(options), answer


# ----------------------------------------------------------------------------------------------
# The split rule
# ----------------------------------------------------------------------------------------------


def _rank(tag: str) -> str:
    return hashlib.sha256(tag.encode("utf-8")).hexdigest()


def pick_views(concept: str, pool: Sequence[Path], root: Path, split: SplitRule
               ) -> tuple[list[Path], list[Path]]:
    """``(references, rest)`` of a concept's candidate files: the ``split.views`` files ranked
    first by the seeded rule (or the files ``split.recorded`` names), the rest in pool order."""
    pool = list(pool)
    if split.recorded is not None:
        wanted = split.recorded.get(concept)
        if not wanted:
            raise DatasetError(f"the recorded split has no reference views for concept "
                               f"{concept!r}; it names {sorted(split.recorded)}")
        by_source = {relative(p, root): p for p in pool}
        missing = [w for w in wanted if w not in by_source]
        if missing:
            raise DatasetError(f"recorded reference views of {concept!r} are not candidates in "
                               f"this dataset: {missing[:3]} (candidates: "
                               f"{sorted(by_source)[:5]}...)")
        chosen = [by_source[w] for w in wanted]
    else:
        if len(pool) < split.views:
            raise DatasetError(f"concept {concept!r} has {len(pool)} candidate reference "
                               f"image(s); --views {split.views} needs at least {split.views}")
        ranked = sorted(pool, key=lambda p: (_rank(f"ego-views/v1/{split.seed}/{concept}/"
                                                    f"{p.name}"), p.name))
        chosen = ranked[:split.views]
    chosen_set = set(chosen)
    return chosen, [p for p in pool if p not in chosen_set]


def split_rule_text(split: SplitRule, own_split: bool) -> str:
    if split.recorded is not None:
        return "recorded (reused from another bag's split)"
    where = "the dataset's own reference (train) images" if own_split else "all photos"
    return f"{SPLIT_RULE} of {where}"


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def _add_reference(bag: Path, concept: str, photo: Path, source: str, max_side: int | None
                   ) -> RefView:
    """Copy (or shrink) one reference view into the bag, never over another of its views."""
    folder = refs_dir(bag, concept)
    stem, suffix = photo.stem, photo.suffix
    n = 1
    while (folder / f"{stem}{suffix}").exists() or (folder / f"{stem}.jpg").exists():
        stem, n = f"{photo.stem}_{n}", n + 1
    rgb = load_rgb(photo)
    if max_side is not None and max(rgb.shape[:2]) > max_side:
        return write_reference(bag, concept, stem, resize_max_side(rgb, max_side), source, "jpg")
    if stem == photo.stem:
        return copy_reference(bag, concept, photo, source)
    return write_reference(bag, concept, stem, rgb, source, "png")


def _order(queries: Iterable[Query], seed: int) -> list[Query]:
    return sorted(queries, key=lambda q: (_rank(f"ego-order/v1/{seed}/{q.source}"), q.source))


def write_dataset_bag(
    imported: Imported,
    out: Path,
    split: SplitRule,
    *,
    own_split: bool,
    fps: float = 2.0,
    compressed: bool = True,
    max_side: int | None = 640,
    topic: str = DEFAULT_TOPIC,
    storage: Literal["sqlite3", "mcap"] = "sqlite3",
    frame_id: str = "camera",
    start_ns: int = DEFAULT_START_NS,
) -> BagLabels:
    """Write ``imported``'s queries as a camera bag at ``out`` with its labels; return them."""
    if not fps > 0:
        raise DatasetError(f"fps must be > 0, got {fps}")
    if not imported.queries:
        raise DatasetError(f"{imported.layout} dataset at {imported.root} has no query images")
    queries = _order(imported.queries, split.seed)
    stamps = [start_ns + round(i * _NS / fps) for i in range(len(queries))]
    stamp_of = {q.photo.resolve(): s for q, s in zip(queries, stamps)}
    frames = [FrameLabel(s, q.concepts, source=q.source, group=q.group, target=q.target)
              for q, s in zip(queries, stamps)]
    captions = [CaptionLabel(s, q.captions) for q, s in zip(queries, stamps) if q.captions]
    vqa: list[VqaItem] = []
    text_qa: list[TextQaItem] = []
    try:
        for q in imported.questions:
            common = {"concept": "", "concepts": q.concepts, "question": q.question,
                      "answer": q.answer, "options": q.options, "source": q.source}
            if q.photo is None:
                text_qa.append(TextQaItem(**common))
                continue
            stamp = stamp_of.get(q.photo.resolve())
            if stamp is None:  # the importer attaches questions to queries only
                raise DatasetError(f"question {q.question[:50]!r} ({q.source}) is about "
                                   f"{q.photo}, which is not a query image")
            vqa.append(VqaItem(stamp_ns=stamp, **common))
        vqa.sort(key=lambda item: item.stamp_ns)
    except LabelsError as exc:
        raise DatasetError(f"{imported.layout} dataset at {imported.root}: {exc}") from exc

    stream = ((load_rgb(q.photo, max_side), s, frame_id) for q, s in zip(queries, stamps))
    with staged_bag_dir(Path(out)) as staging:
        write_image_bag(staging, stream, topic, compressed=compressed, storage=storage)
        concept_labels = []
        for concept in imported.concepts:
            views = [_add_reference(staging, concept.name, photo, f"{imported.layout}:{source}",
                                    max_side)
                     for photo, source in zip(concept.references, concept.sources)]
            concept_labels.append(ConceptLabel(concept.name, tuple(views), concept.description))
        labels = BagLabels(
            topic=image_topic(topic, compressed),
            concepts=tuple(concept_labels),
            frames=tuple(frames),
            vqa=tuple(vqa),
            text_qa=tuple(text_qa),
            captions=tuple(captions),
            source=SourceInfo(
                dataset=imported.layout,
                seed=split.seed,
                refs=split.views,
                details={"root": str(imported.root.resolve()), "fps": fps, "max_side": max_side,
                         **dict(imported.details)},
            ),
            split=SplitInfo(
                rule=split_rule_text(split, own_split),
                views=split.views,
                seed=split.seed if split.recorded is None else None,
                references={c.name: c.sources for c in imported.concepts},
            ),
        )
        save_labels(staging, labels)
    logger.info("%s bag %s: %d query frames, %d concepts, %d VQA and %d text-only questions; "
                "labels in %s", imported.layout, out, len(frames), len(concept_labels), len(vqa),
                len(text_qa), LABELS_FILE)
    return labels

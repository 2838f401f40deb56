"""Ground truth that travels with a bag: ``BAG/ego_labels.json`` and ``BAG/ego_refs/``.

Stock rosbag2 tools only look at the files ``metadata.yaml`` names, so a bag folder can carry
extra files: this module keeps the evaluation ground truth there, which makes a bag folder
self-contained (copy it to the robot, and teaching and scoring need nothing else).

- ``concepts``: per concept its reference views, each an image file under ``ego_refs/<stem>/``
  (``<stem>`` from :func:`ego_ros.core.names.concept_file_stem`, safe for any name) or the index
  of a frame of the bag's topic.
- ``frames``: per labelled frame (keyed by header stamp, in bag order) the concepts visible in
  it, optionally with pixel boxes, and the dataset's test ``group`` of the frame with the
  concept that group names (``target``: This-Is-My's "Negative (Hard)" frames are hard
  negatives *for* one concept), so precision can be reported per kind of negative.
- ``vqa``: questions about one or more named concepts in a frame; multiple-choice when
  ``options`` is set (``answer`` is then an option letter), free-form otherwise.
- ``text_qa``: questions about concepts with no image (Yo'LLaVA's text-only QA).
- ``captions``: reference captions of a frame.
- ``source``: where it came from (dataset, seed, number of references, anything else).
- ``split``: how the reference views were chosen and their dataset file names, so the split
  can be checked and reproduced without the code that made it.

The JSON carries ``"format": "ego_labels"`` and ``"version"``; loading validates everything and
names the offending field. Saving is atomic (temporary file + rename). Version 2 added
``vqa[].concepts`` (version 1 had one ``concept``), ``frames[].group/target``, ``text_qa``
and ``split``; version 1 files still load.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from ego_ros.bag.io import read_image_bag
from ego_ros.core.names import InvalidConceptName, concept_file_stem, validate_concept_name

__all__ = [
    "LABELS_FILE",
    "LABELS_FORMAT",
    "LABELS_VERSION",
    "READABLE_VERSIONS",
    "REFS_DIR",
    "BagLabels",
    "Box",
    "CaptionLabel",
    "ConceptLabel",
    "FrameLabel",
    "LabelsError",
    "RefView",
    "SourceInfo",
    "SplitInfo",
    "TextQaItem",
    "VqaItem",
    "copy_reference",
    "has_labels",
    "labels_path",
    "load_labels",
    "reference_images",
    "refs_dir",
    "save_labels",
    "write_reference",
]

logger = logging.getLogger(__name__)

LABELS_FILE = "ego_labels.json"
REFS_DIR = "ego_refs"
LABELS_FORMAT = "ego_labels"
LABELS_VERSION = 2
READABLE_VERSIONS = (1, 2)  # what load_labels accepts; saving always writes LABELS_VERSION


class LabelsError(ValueError):
    """A labels file (or labels object) is malformed; the message names the field."""


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise LabelsError(msg)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class RefView:
    """One reference view: an image file inside the bag folder, or a frame index of the bag."""

    file: str | None = None  # POSIX path relative to the bag folder
    index: int | None = None  # index into the labelled topic's frames, 0-based
    source: str = ""  # where the view came from, for people ("myvlm:mug/mug_3.jpg")

    def __post_init__(self) -> None:
        _require(
            (self.file is None) != (self.index is None),
            f"a reference view needs exactly one of file or index, got file={self.file!r} "
            f"index={self.index!r}",
        )
        if self.file is not None:
            rel = PurePosixPath(self.file)
            _require(
                isinstance(self.file, str)
                and not rel.is_absolute()
                and ".." not in rel.parts
                and "\\" not in self.file,
                f"reference file {self.file!r} must be a relative POSIX path inside the bag folder",
            )
        if self.index is not None:
            _require(
                _is_int(self.index) and self.index >= 0,
                f"reference index must be an int >= 0, got {self.index!r}",
            )


@dataclass(frozen=True)
class ConceptLabel:
    """A concept of the bag: its name, reference views and an optional description for people."""

    name: str
    refs: tuple[RefView, ...]
    description: str = ""

    def __post_init__(self) -> None:
        try:
            canonical = validate_concept_name(self.name)
        except InvalidConceptName as exc:
            raise LabelsError(str(exc)) from exc
        _require(canonical == self.name, f"concept name {self.name!r} is not canonical")
        _require(len(self.refs) > 0, f"concept {self.name!r} has no reference views")


@dataclass(frozen=True)
class Box:
    """Where a concept is in a frame, in pixels: ``(x0, y0, x1, y1)``, x0 < x1, y0 < y1."""

    concept: str
    xyxy: tuple[float, float, float, float]

    def __post_init__(self) -> None:
        _require(len(self.xyxy) == 4, f"box of {self.concept!r} needs 4 numbers: {self.xyxy!r}")
        x0, y0, x1, y1 = self.xyxy
        _require(x0 < x1 and y0 < y1, f"box of {self.concept!r} is empty or inverted: {self.xyxy}")


@dataclass(frozen=True)
class FrameLabel:
    """Ground truth of one frame, keyed by its header stamp."""

    stamp_ns: int
    concepts: tuple[str, ...]
    boxes: tuple[Box, ...] = ()
    source: str = ""  # e.g. the dataset photo the frame was made from
    group: str = ""  # the dataset's test group ("positive", "negative-hard", ...); "" if none
    target: str = ""  # the concept the group is about (a hard negative *for* it); "" if none

    def __post_init__(self) -> None:
        _require(
            _is_int(self.stamp_ns) and self.stamp_ns >= 0,
            f"frame stamp_ns must be an int >= 0, got {self.stamp_ns!r}",
        )
        _require(
            not self.target or bool(self.group),
            f"frame {self.stamp_ns} has target {self.target!r} but no group",
        )
        _require(
            len(set(self.concepts)) == len(self.concepts),
            f"frame {self.stamp_ns} lists a concept twice: {list(self.concepts)}",
        )
        for box in self.boxes:
            _require(
                box.concept in self.concepts,
                f"frame {self.stamp_ns} has a box for {box.concept!r}, which it does not list "
                f"as present ({list(self.concepts)})",
            )


def _check_question(item: VqaItem | TextQaItem, where: str) -> None:
    """Shared checks of a question: text, answer, options, concepts (set ``concepts``)."""
    concepts = tuple(item.concepts) or ((item.concept,) if item.concept else ())
    _require(len(concepts) > 0, f"{where} names no concept")
    _require(
        not item.concept or item.concept == concepts[0],
        f"{where}: concept {item.concept!r} is not the first of concepts {list(concepts)}",
    )
    _require(len(set(concepts)) == len(concepts), f"{where} lists a concept twice: {concepts}")
    object.__setattr__(item, "concepts", concepts)
    object.__setattr__(item, "concept", concepts[0])
    _require(bool(item.question.strip()), f"{where} has an empty question")
    _require(bool(item.answer.strip()), f"{where} has an empty answer")
    if item.options is not None:
        _require(len(item.options) >= 2, f"{where} has {len(item.options)} options; need >= 2")
        _require(
            item.answer in item.options,
            f"{where}: answer {item.answer!r} is not one of the option letters "
            f"{sorted(item.options)}",
        )


@dataclass(frozen=True)
class VqaItem:
    """A question about one or more named concepts in a frame.

    With ``options`` (letter -> text) it is multiple choice and ``answer`` is a letter; without,
    ``answer`` is a free-form reference answer (as in MyVLM's LLaVA data). ``concepts`` names
    every concept the question is about (a pair for multi-concept VQA); give either it or
    ``concept``: ``concept`` is always ``concepts[0]``, the only one for single-concept items.
    ``source`` names the dataset file the question came from.
    """

    stamp_ns: int
    concept: str
    question: str
    answer: str
    options: Mapping[str, str] | None = None
    concepts: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        _check_question(self, f"VQA item at {self.stamp_ns}")

    @property
    def multiple_choice(self) -> bool:
        return self.options is not None


@dataclass(frozen=True)
class TextQaItem:
    """A question about named concepts asked without any image (Yo'LLaVA's text-only QA)."""

    concept: str
    question: str
    answer: str
    options: Mapping[str, str] | None = None
    concepts: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        _check_question(self, f"text-only question {self.question[:40]!r}")

    @property
    def multiple_choice(self) -> bool:
        return self.options is not None


@dataclass(frozen=True)
class CaptionLabel:
    """Reference captions of one frame (they name the frame's concepts)."""

    stamp_ns: int
    captions: tuple[str, ...]

    def __post_init__(self) -> None:
        _require(len(self.captions) > 0, f"captions at {self.stamp_ns} are empty")


@dataclass(frozen=True)
class SourceInfo:
    """Where the bag and its ground truth came from."""

    dataset: str
    seed: int | None = None
    refs: int | None = None  # reference views per concept
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SplitInfo:
    """How the reference views were chosen: the rule, and per concept the dataset files chosen
    (paths relative to the dataset root, as in ``frames[].source``)."""

    rule: str
    views: int
    references: Mapping[str, tuple[str, ...]]
    seed: int | None = None

    def __post_init__(self) -> None:
        _require(_is_int(self.views) and self.views >= 1, f"split views must be >= 1: {self.views}")
        object.__setattr__(
            self, "references", {k: tuple(v) for k, v in dict(self.references).items()}
        )


@dataclass(frozen=True)
class BagLabels:
    """All ground truth of one bag (the contents of ``ego_labels.json``), validated together."""

    topic: str
    concepts: tuple[ConceptLabel, ...]
    frames: tuple[FrameLabel, ...]
    source: SourceInfo
    vqa: tuple[VqaItem, ...] = ()
    captions: tuple[CaptionLabel, ...] = ()
    version: int = LABELS_VERSION
    text_qa: tuple[TextQaItem, ...] = ()
    split: SplitInfo | None = None

    def __post_init__(self) -> None:
        _require(
            self.version == LABELS_VERSION,
            f"labels version {self.version!r} is not supported (this ego_ros reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}); regenerate the bag's labels",
        )
        _require(self.topic.startswith("/"), f"labels topic must start with '/': {self.topic!r}")
        names = [c.name for c in self.concepts]
        _require(len(set(names)) == len(names), f"concepts are listed twice: {names}")
        known = set(names)
        stamps = [f.stamp_ns for f in self.frames]
        _require(len(set(stamps)) == len(stamps), "two labelled frames share a stamp_ns")
        stamp_set = set(stamps)
        for frame in self.frames:
            unknown = set(frame.concepts) - known
            _require(
                not unknown,
                f"frame {frame.stamp_ns} names concepts {sorted(unknown)} that are not in "
                f"concepts ({sorted(known)})",
            )
            _require(
                not frame.target or frame.target in known,
                f"frame {frame.stamp_ns} has target {frame.target!r}, not one of the concepts",
            )
        for item in (*self.vqa, *self.text_qa):
            unknown = [c for c in item.concepts if c not in known]
            _require(not unknown, f"question {item.question[:40]!r} names unknown concepts "
                                  f"{unknown}")
        for item in self.vqa:
            _require(
                item.stamp_ns in stamp_set, f"VQA item stamp {item.stamp_ns} is not a frame stamp"
            )
        if self.split is not None:
            unknown = sorted(set(self.split.references) - known)
            _require(not unknown, f"split names unknown concepts {unknown}")
        for cap in self.captions:
            _require(
                cap.stamp_ns in stamp_set, f"caption stamp {cap.stamp_ns} is not a frame stamp"
            )

    @property
    def concept_names(self) -> list[str]:
        return [c.name for c in self.concepts]

    def concept(self, name: str) -> ConceptLabel:
        for concept in self.concepts:
            if concept.name == name:
                return concept
        raise KeyError(f"no concept {name!r} in labels; concepts: {self.concept_names}")

    def frame_by_stamp(self) -> dict[int, FrameLabel]:
        return {f.stamp_ns: f for f in self.frames}

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (plain dicts/lists, stable key order, the current version)."""
        from ego_ros.bag.labels_json import labels_to_dict

        return labels_to_dict(self)

    @classmethod
    def from_dict(cls, doc: Any) -> BagLabels:
        """Parse and validate a JSON document of any readable version; errors name the field
        (``frames[3].stamp_ns``)."""
        from ego_ros.bag.labels_json import labels_from_dict

        return labels_from_dict(doc)


# ----------------------------------------------------------------------------------------------
# Files inside the bag folder
# ----------------------------------------------------------------------------------------------


def labels_path(bag: Path) -> Path:
    return Path(bag) / LABELS_FILE


def has_labels(bag: Path) -> bool:
    return labels_path(bag).is_file()


def refs_dir(bag: Path, concept: str) -> Path:
    """``BAG/ego_refs/<stem>``: a file-system-safe folder for any concept name."""
    return Path(bag) / REFS_DIR / concept_file_stem(concept)


def _check_ref_files(bag: Path, labels: BagLabels) -> None:
    for concept in labels.concepts:
        for ref in concept.refs:
            if ref.file is not None and not (Path(bag) / ref.file).is_file():
                raise LabelsError(
                    f"reference view {ref.file!r} of concept {concept.name!r} is missing from "
                    f"bag folder {bag}"
                )


def save_labels(bag: Path, labels: BagLabels) -> Path:
    """Write ``BAG/ego_labels.json`` atomically; every referenced file must already exist."""
    bag = Path(bag)
    if not bag.is_dir():
        raise FileNotFoundError(f"bag folder {bag} does not exist; write the bag first")
    _check_ref_files(bag, labels)
    path = labels_path(bag)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(labels.to_dict(), indent=1, ensure_ascii=False) + "\n", "utf-8")
    os.replace(tmp, path)
    logger.info(
        "wrote labels for %d frames, %d concepts to %s",
        len(labels.frames),
        len(labels.concepts),
        path,
    )
    return path


def load_labels(bag: Path) -> BagLabels:
    """Read and validate ``BAG/ego_labels.json`` (including that reference files exist)."""
    path = labels_path(bag)
    if not path.is_file():
        raise FileNotFoundError(
            f"bag {bag} has no ground truth ({LABELS_FILE}); bags made by 'ego-ros bag "
            "synthetic' or 'ego-ros bag from-dataset' carry one"
        )
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LabelsError(f"{path} is not valid JSON: {exc}") from exc
    try:
        labels = BagLabels.from_dict(doc)
    except LabelsError as exc:
        raise LabelsError(f"{path}: {exc}") from exc
    _check_ref_files(Path(bag), labels)
    return labels


def write_reference(
    bag: Path, concept: str, name: str, rgb: np.ndarray, source: str = "", fmt: str = "png"
) -> RefView:
    """Encode an RGB view into ``BAG/ego_refs/<stem>/<name>.<fmt>`` and return its RefView."""
    if fmt not in ("png", "jpg"):
        raise LabelsError(f"reference format must be 'png' or 'jpg', got {fmt!r}")
    folder = refs_dir(bag, concept)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.{fmt}"
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise LabelsError(f"reference view must be uint8 [H, W, 3], got {arr.dtype} {arr.shape}")
    if not cv2.imwrite(str(path), cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)):
        raise OSError(f"OpenCV could not write reference view {path}")
    return RefView(file=path.relative_to(bag).as_posix(), source=source)


def copy_reference(bag: Path, concept: str, src: Path, source: str = "") -> RefView:
    """Copy an image file byte-for-byte into the concept's reference folder."""
    folder = refs_dir(bag, concept)
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / Path(src).name
    shutil.copyfile(src, dst)
    return RefView(file=dst.relative_to(bag).as_posix(), source=source)


def reference_images(
    bag: Path, labels: BagLabels, concept: str, limit: int | None = None
) -> list[np.ndarray]:
    """The first ``limit`` (all when None) reference views of ``concept`` as RGB arrays."""
    refs = labels.concept(concept).refs[:limit]
    images: list[np.ndarray] = []
    frames: list[np.ndarray] | None = None
    for ref in refs:
        if ref.file is not None:
            bgr = cv2.imread(str(Path(bag) / ref.file), cv2.IMREAD_COLOR)
            if bgr is None:
                raise LabelsError(f"cannot decode reference view {ref.file!r} in {bag}")
            images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        else:
            if frames is None:
                frames = [f.rgb for f in read_image_bag(Path(bag), labels.topic)]
            assert ref.index is not None
            if ref.index >= len(frames):
                raise LabelsError(
                    f"reference index {ref.index} of {concept!r} is past the bag's "
                    f"{len(frames)} frames"
                )
            images.append(frames[ref.index])
    return images

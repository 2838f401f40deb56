"""Personalization datasets -> camera bags with ground truth (the MyVLM layout).

    labels = bag_from_dataset(Path("datasets/myvlm"), Path("/tmp/myvlm_bag"), refs=1, seed=0)

The MyVLM layout is one folder per concept, named after it::

    <root>/<concept>/*.jpg                          photos of the concept
    <root>/<concept>/captions.json                  photo name -> [caption, ...] naming <concept>
    <root>/<concept>/additional_llava_vqa_data.json photo name -> [[question, answer], ...]
                                                    with the concept written "sks" (optional)

The paper's protocol (Ego §4.1) picks ``refs`` photos (1 or 5) per concept as reference views;
every other photo of every concept is a query, positive for its own concept and negative for
all others. :func:`split_references` makes that split, deterministically for a seed and per
concept (adding or removing another concept folder does not change a concept's split), and
never lets a reference be a query. :func:`bag_from_dataset` plays all queries, shuffled, as
a camera stream and writes the labels (frame concepts, reference views copied into the bag
folder, captions, free-form VQA pairs with ``sks`` replaced by the concept name).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ego_ros.bag.io import (
    DEFAULT_START_NS,
    DEFAULT_TOPIC,
    BagError,
    image_files,
    image_topic,
    load_rgb,
    resize_max_side,
    staged_bag_dir,
    write_image_bag,
)
from ego_ros.bag.labels import (
    BagLabels,
    CaptionLabel,
    ConceptLabel,
    FrameLabel,
    RefView,
    SourceInfo,
    VqaItem,
    copy_reference,
    save_labels,
    write_reference,
)
from ego_ros.core.names import InvalidConceptName, validate_concept_name

__all__ = [
    "LAYOUTS",
    "DatasetConcept",
    "DatasetError",
    "bag_from_dataset",
    "scan_myvlm",
    "split_references",
]

logger = logging.getLogger(__name__)

LAYOUTS = ("myvlm",)
_NS = 1_000_000_000
_CAPTION_FILES = ("captions.json", "captions_augmented.json")  # first one present wins
_VQA_FILE = "additional_llava_vqa_data.json"
_PLACEHOLDER = re.compile(r"\bsks\b")


class DatasetError(ValueError):
    """The dataset folder does not have the expected shape; the message says where."""


@dataclass(frozen=True)
class DatasetConcept:
    """One concept folder: its photos (natural order), captions and VQA pairs per photo name."""

    name: str
    folder: Path
    photos: tuple[Path, ...]
    captions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    vqa: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from exc


def _load_captions(path: Path, photo_names: set[str]) -> dict[str, tuple[str, ...]]:
    doc = _read_json(path)
    if not isinstance(doc, dict):
        raise DatasetError(f"{path} must map photo names to lists of captions")
    out: dict[str, tuple[str, ...]] = {}
    for photo, caps in doc.items():
        if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
            raise DatasetError(f"{path}: captions of {photo!r} must be a list of strings")
        if photo not in photo_names:
            logger.warning("%s: captions for %r, which is not a photo here; ignored", path, photo)
            continue
        if caps:
            out[photo] = tuple(caps)
    return out


def _load_vqa(path: Path, photo_names: set[str]) -> dict[str, tuple[tuple[str, str], ...]]:
    doc = _read_json(path)
    if not isinstance(doc, dict):
        raise DatasetError(f"{path} must map photo names to lists of [question, answer]")
    out: dict[str, tuple[tuple[str, str], ...]] = {}
    for photo, pairs in doc.items():
        if not isinstance(pairs, list):
            raise DatasetError(f"{path}: VQA of {photo!r} must be a list of [question, answer]")
        checked = []
        for i, pair in enumerate(pairs):
            if not (
                isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
            ):
                raise DatasetError(
                    f"{path}: VQA item {i} of {photo!r} must be [question, answer], "
                    f"got {pair!r:.80}"
                )
            checked.append((pair[0], pair[1]))
        if photo not in photo_names:
            logger.warning("%s: VQA for %r, which is not a photo here; ignored", path, photo)
            continue
        out[photo] = tuple(checked)
    return out


def scan_myvlm(root: Path) -> list[DatasetConcept]:
    """The concept folders of a MyVLM-layout dataset, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    concepts: list[DatasetConcept] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            photos = tuple(image_files(folder))
        except BagError:  # a folder without images is not a concept
            logger.warning("skipping %s: no images in it", folder)
            continue
        try:
            name = validate_concept_name(folder.name)
        except InvalidConceptName as exc:
            raise DatasetError(f"concept folder {folder}: {exc}") from exc
        names = {p.name for p in photos}
        captions: dict[str, tuple[str, ...]] = {}
        for fname in _CAPTION_FILES:
            if (folder / fname).is_file():
                captions = _load_captions(folder / fname, names)
                break
        vqa = _load_vqa(folder / _VQA_FILE, names) if (folder / _VQA_FILE).is_file() else {}
        concepts.append(DatasetConcept(name, folder, photos, captions, vqa))
    if not concepts:
        raise DatasetError(
            f"no concept folders with images in {root}; expected <root>/<concept>/*.jpg"
        )
    return concepts


def _concept_rng(seed: int, concept: str) -> np.random.Generator:
    """A generator that depends only on (seed, concept), stable across runs and platforms."""
    digest = hashlib.sha256(f"ego-split/{seed}/{concept}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _split(concept: DatasetConcept, refs: int, seed: int) -> tuple[list[Path], list[Path]]:
    if len(concept.photos) < refs + 1:
        raise DatasetError(
            f"concept {concept.name!r} has {len(concept.photos)} photos; refs={refs} needs at "
            f"least {refs + 1} (the references plus one query)"
        )
    order = _concept_rng(seed, concept.name).permutation(len(concept.photos))
    chosen = set(order[:refs].tolist())
    references = [concept.photos[i] for i in order[:refs]]
    queries = [p for i, p in enumerate(concept.photos) if i not in chosen]
    return references, queries


def split_references(
    root: Path, refs: int, seed: int = 0, layout: str = "myvlm"
) -> dict[str, tuple[list[Path], list[Path]]]:
    """Per concept ``(reference photos, query photos)``: ``refs`` random references, the rest
    queries (in the folder's natural order). Same seed, same split."""
    _check_layout(layout)
    if not isinstance(refs, int) or refs < 1:
        raise DatasetError(f"refs must be an integer >= 1 (the paper uses 1 or 5), got {refs!r}")
    return {c.name: _split(c, refs, seed) for c in scan_myvlm(Path(root))}


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown dataset layout {layout!r}; supported: {', '.join(LAYOUTS)}")


def _name_concept(text: str, concept: str) -> str:
    return _PLACEHOLDER.sub(concept, text)


def bag_from_dataset(
    root: Path,
    out: Path,
    *,
    layout: str = "myvlm",
    refs: int = 1,
    seed: int = 0,
    fps: float = 2.0,
    compressed: bool = True,
    max_side: int | None = 640,
    topic: str = DEFAULT_TOPIC,
    storage: Literal["sqlite3", "mcap"] = "sqlite3",
    frame_id: str = "camera",
    start_ns: int = DEFAULT_START_NS,
) -> BagLabels:
    """Write the dataset's query photos as a camera bag at ``out`` with labels; return them.

    Queries of all concepts are shuffled (deterministically for ``seed``) and played at ``fps``,
    each shrunk to ``max_side`` pixels on its longer side. Reference photos are copied into
    ``out/ego_refs/`` (re-encoded only when larger than ``max_side``).
    """
    _check_layout(layout)
    if fps <= 0:
        raise DatasetError(f"fps must be > 0, got {fps}")
    root = Path(root)
    concepts = scan_myvlm(root)
    splits = split_references(root, refs, seed, layout)
    queries = [(c, photo) for c in concepts for photo in splits[c.name][1]]
    order = np.random.default_rng(
        int.from_bytes(hashlib.sha256(f"ego-order/{seed}".encode()).digest()[:8], "little")
    ).permutation(len(queries))
    queries = [queries[i] for i in order]
    stamps = [start_ns + round(i * _NS / fps) for i in range(len(queries))]

    frames, vqa, captions = [], [], []
    for (concept, photo), stamp in zip(queries, stamps):
        frames.append(FrameLabel(stamp, (concept.name,), source=f"{concept.name}/{photo.name}"))
        if photo.name in concept.captions:
            captions.append(CaptionLabel(stamp, concept.captions[photo.name]))
        for question, answer in concept.vqa.get(photo.name, ()):
            vqa.append(
                VqaItem(
                    stamp_ns=stamp,
                    concept=concept.name,
                    question=_name_concept(question, concept.name),
                    answer=_name_concept(answer, concept.name),
                )
            )

    stream = (
        (load_rgb(photo, max_side), stamp, frame_id) for (_, photo), stamp in zip(queries, stamps)
    )
    with staged_bag_dir(Path(out)) as staging:
        write_image_bag(staging, stream, topic, compressed=compressed, storage=storage)
        concept_labels = []
        for concept in concepts:
            views: list[RefView] = []
            for photo in splits[concept.name][0]:
                source = f"{layout}:{concept.name}/{photo.name}"
                rgb = load_rgb(photo)
                if max_side is not None and max(rgb.shape[:2]) > max_side:
                    small = resize_max_side(rgb, max_side)
                    ref = write_reference(staging, concept.name, photo.stem, small, source, "jpg")
                    views.append(ref)
                else:
                    views.append(copy_reference(staging, concept.name, photo, source))
            concept_labels.append(ConceptLabel(concept.name, tuple(views)))
        labels = BagLabels(
            topic=image_topic(topic, compressed),
            concepts=tuple(concept_labels),
            frames=tuple(frames),
            vqa=tuple(vqa),
            captions=tuple(captions),
            source=SourceInfo(
                dataset=layout,
                seed=seed,
                refs=refs,
                details={"root": str(root.resolve()), "fps": fps, "max_side": max_side},
            ),
        )
        save_labels(staging, labels)
    logger.info(
        "dataset bag %s: %d queries of %d concepts, %d references each",
        out,
        len(frames),
        len(concepts),
        refs,
    )
    return labels

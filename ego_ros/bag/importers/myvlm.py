"""The MyVLM layout -> an imported dataset (references by the seeded rule, the rest queries).

    <root>/<concept>/*.jpg -> scan_myvlm -> DatasetConcept per folder
                           -> load(root, split) -> Imported (queries, captions, free-form VQA)

The layout is one folder per concept, named after it::

    <root>/<concept>/*.jpg                          photos of the concept
    <root>/<concept>/captions_augmented.json        photo name -> [caption, ...] (preferred)
    <root>/<concept>/captions.json                  photo name -> [caption, ...] naming <concept>
    <root>/<concept>/additional_llava_vqa_data.json photo name -> [[question, answer], ...]
                                                    with the concept written "sks" (optional)

MyVLM has no train/test split of its own, so the paper's protocol (Ego §4.1) picks ``views``
photos (1 or 5) per concept by the seeded rule of :mod:`~ego_ros.bag.importers.common`; every
other photo of every concept is a query, positive for its own concept and negative for all
others. VQA pairs and captions of reference photos are not used (those photos are not asked).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ego_ros.bag.importers.common import (
    DatasetError,
    Imported,
    ImportedConcept,
    Query,
    Question,
    SplitRule,
    concept_name,
    images_in,
    name_concepts,
    pick_views,
    read_json,
    relative,
    subfolders,
)

__all__ = ["DatasetConcept", "load", "scan_myvlm"]

logger = logging.getLogger(__name__)

LAYOUT = "myvlm"
_CAPTION_FILES = ("captions_augmented.json", "captions.json")  # first one present wins
_VQA_FILE = "additional_llava_vqa_data.json"


@dataclass(frozen=True)
class DatasetConcept:
    """One concept folder: its photos (natural order), captions and VQA pairs per photo name."""

    name: str
    folder: Path
    photos: tuple[Path, ...]
    captions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    vqa: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)


def _load_captions(path: Path, photo_names: set[str]) -> dict[str, tuple[str, ...]]:
    doc = read_json(path)
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
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise DatasetError(f"{path} must map photo names to lists of [question, answer]")
    out: dict[str, tuple[tuple[str, str], ...]] = {}
    for photo, pairs in doc.items():
        if not isinstance(pairs, list):
            raise DatasetError(f"{path}: VQA of {photo!r} must be a list of [question, answer]")
        checked = []
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, list) and len(pair) == 2
                    and all(isinstance(p, str) for p in pair)):
                raise DatasetError(f"{path}: VQA item {i} of {photo!r} must be [question, "
                                   f"answer], got {pair!r:.80}")
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
    for folder in sorted(subfolders(root), key=lambda p: p.name):
        photos = tuple(images_in(folder))
        if not photos:  # a folder without images is not a concept
            logger.warning("skipping %s: no images in it", folder)
            continue
        name = concept_name(folder.name, f"concept folder {folder}")
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


def load(root: Path, split: SplitRule) -> Imported:
    """Read a MyVLM-layout folder and split it: references by ``split``, the rest queries."""
    root = Path(root)
    concepts, queries, questions = [], [], []
    for concept in scan_myvlm(root):
        if split.recorded is None and len(concept.photos) < split.views + 1:
            raise DatasetError(
                f"concept {concept.name!r} has {len(concept.photos)} photos; --views "
                f"{split.views} needs at least {split.views + 1} (the references plus one query)")
        refs, rest = pick_views(concept.name, concept.photos, root, split)
        concepts.append(ImportedConcept(concept.name, tuple(refs),
                                        tuple(relative(p, root) for p in refs)))
        for photo in rest:
            queries.append(Query(photo, relative(photo, root), (concept.name,),
                                 captions=concept.captions.get(photo.name, ())))
            for question, answer in concept.vqa.get(photo.name, ()):
                questions.append(Question(
                    photo, (concept.name,), name_concepts(question, [concept.name]),
                    name_concepts(answer, [concept.name]), None,
                    f"{concept.folder.name}/{_VQA_FILE}"))
    return Imported(LAYOUT, root, tuple(concepts), tuple(queries), tuple(questions))

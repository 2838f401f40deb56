"""The This-Is-My-Img layout -> an imported dataset (single-concept groups or concept pairs).

    Single-concept/train/<concept>/*.png               -> pick_views -> reference views
    Single-concept/test/<group>/<label>-<...>/*.png     -> queries, group kept on each frame
    Multi-concept/train/<concept>/*.png                -> pick_views -> reference views
    Multi-concept/test/<A>_and_<B>/*.png                -> queries showing both A and B
    *visual-qa*.json, Multi-concept/VQA/*.json          -> VQA (A/B or open-ended)

``root`` is the ``This-is-My-Img`` folder (``part`` chooses ``single`` or ``multi``) or one
part's folder itself. The label of a folder is its name before the first ``-`` (a pair
folder: each side of ``_and_``). Test groups of the single-concept part, kept on each frame as
``group`` with the labelled concept as ``target`` so precision can be reported per kind of
negative:

- ``Positive`` (group ``positive``): the labelled concept is in the image; files ending
  ``_double.png`` show a second concept too (the pairs the toolkit's loader names).
- ``Fake`` (``fake``), ``Negative (Hard)`` (``negative-hard``), ``Negative (Other)``
  (``negative-other``): the labelled concept is *not* in the image; the frame shows none of
  the concepts and is a negative of that kind for the labelled one.

VQA files (schema as the toolkit's loader reads them): ``{concept key: {image path:
{"question": "... <sks> ...", "options": {"A", "B"}, "correct_answer"}}}`` or open-ended
``{"question", "answer"}``; image paths are relative to the JSON file. A pair key ("A_and_B")
names both concepts; ``<sks>`` is replaced by the name(s) ("A and B"). A question about an
image that is not a test image is added as a query of its own concepts; one about a reference
(train) image is dropped (it would leak), and counted.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

from ego_ros.bag.importers.common import (
    DatasetError,
    Imported,
    ImportedConcept,
    Query,
    Question,
    SplitRule,
    choice_question,
    concept_name,
    images_in,
    name_concepts,
    pick_views,
    read_json,
    relative,
    subfolders,
)

__all__ = ["DOUBLE_PAIRS", "GROUPS", "PARTS", "load"]

logger = logging.getLogger(__name__)

LAYOUT = "this-is-my"
PARTS = {"single": "Single-concept", "multi": "Multi-concept"}
# test folder name (case-insensitive) -> group written on the frame
GROUPS = {"positive": "positive", "fake": "fake", "negative (hard)": "negative-hard",
          "negative (other)": "negative-other"}
# A "_double.png" positive also shows this concept (personalization_toolkit detection.py).
DOUBLE_PAIRS = {"Reynards keyboard": "Reynards work chair",
                "Reynards work chair": "Reynards keyboard",
                "Nikkis car": "Nikkis camper bag", "Nikkis camper bag": "Nikkis car"}
_TRAIN_NAMES = ("train", "reference images")
_TEST_NAMES = ("test", "validation")


def label_of(folder_name: str) -> tuple[str, ...]:
    """``"Sherrys road bike-bike"`` -> ``("Sherrys road bike",)``; ``"A_and_B"`` -> (A, B)."""
    return tuple(side.split("-", 1)[0].strip() for side in folder_name.split("_and_"))


def _child(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((p for p in subfolders(folder) if p.name.lower() in names), None)


def _part_dir(root: Path, part: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    if part not in PARTS:
        raise DatasetError(f"part must be one of {sorted(PARTS)}, got {part!r}")
    folder = root / PARTS[part] if (root / PARTS[part]).is_dir() else root
    if _child(folder, _TRAIN_NAMES) is None or _child(folder, _TEST_NAMES) is None:
        raise DatasetError(f"{folder} is not a This-Is-My-Img part: expected {PARTS[part]}/train "
                           f"and {PARTS[part]}/test (under {root})")
    return folder


def _known(label: str, known: set[str], where: Path) -> str:
    if label not in known:
        raise DatasetError(f"{where}: label {label!r} is not a concept of the train folder "
                           f"({sorted(known)[:6]}...)")
    return label


def _single_queries(test: Path, part: Path, known: set[str]) -> list[Query]:
    queries = []
    for group_dir in subfolders(test):
        group = GROUPS.get(group_dir.name.lower())
        if group is None:
            raise DatasetError(f"{group_dir}: unknown test group; expected one of Positive, Fake, "
                               "Negative (Hard), Negative (Other)")
        for folder in subfolders(group_dir):
            (label,) = label_of(folder.name)[:1]
            label = _known(label, known, folder)
            for photo in images_in(folder):
                concepts: tuple[str, ...] = ()
                if group == "positive":
                    concepts = (label,)
                    if photo.name.endswith("_double.png"):
                        other = DOUBLE_PAIRS.get(label)
                        if other in known:
                            concepts = (label, other)
                        else:
                            logger.warning("%s: no known second concept for a _double image of "
                                           "%r; labelled with %r only", photo, label, label)
                queries.append(Query(photo, relative(photo, part), concepts, group, label))
    return queries


def _multi_queries(test: Path, part: Path, known: set[str]) -> list[Query]:
    queries = []
    for folder in subfolders(test):
        labels = tuple(_known(c, known, folder) for c in label_of(folder.name))
        queries += [Query(p, relative(p, part), labels) for p in images_in(folder)]
    return queries


def _vqa_files(part: Path, part_name: str) -> list[Path]:
    files = sorted(p for p in part.glob("*.json") if "visual-qa" in p.name)
    if part_name == "multi" and (part / "VQA").is_dir():
        files += sorted((part / "VQA").rglob("*.json"))
    return files


def _resolve(key: str, json_file: Path, part: Path) -> Path | None:
    parts = [p for p in PurePosixPath(key.strip()).parts if p not in (".", "..", "")]
    candidates = [json_file.parent.joinpath(*parts), part.joinpath(*parts)]
    return next((c for c in candidates if c.is_file()), None)


def _questions(path: Path, part: Path, known: set[str], queries: dict[Path, Query],
               references: set[Path], skipped: list[str]) -> list[Question]:
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise DatasetError(f"{path} must map concept keys to {{image path: question}}")
    out = []
    for key, items in doc.items():
        where = f"{path.name}: {key!r}"
        concepts = tuple(_known(concept_name(c, where), known, path) for c in label_of(key))
        if not isinstance(items, dict):
            raise DatasetError(f"{where} must map image paths to questions")
        for image, entry in items.items():
            question, options, answer = choice_question(entry, f"{where}[{image!r}]")
            photo = _resolve(image, path, part)
            if photo is None:
                raise DatasetError(f"{where}: image {image!r} does not exist (relative to "
                                   f"{path.parent})")
            if photo.resolve() in references:
                skipped.append(f"{path.name}:{image}")
                continue
            if photo.resolve() not in queries:
                queries[photo.resolve()] = Query(photo, relative(photo, part), concepts, "vqa")
            out.append(Question(photo, concepts, name_concepts(question, concepts),
                                answer if options else name_concepts(answer, concepts),
                                options, path.name))
    return out


def load(root: Path, split: SplitRule, *, part: str = "single",
         vqa: list[Path] | None = None) -> Imported:
    """Read one part of This-Is-My-Img: train images are the reference pool, test images the
    queries; ``vqa`` defaults to the part's ``*visual-qa*.json`` (and ``VQA/*.json``)."""
    folder = _part_dir(root, part)
    train, test = _child(folder, _TRAIN_NAMES), _child(folder, _TEST_NAMES)
    assert train is not None and test is not None
    pools: dict[str, list[Path]] = {}
    for sub in subfolders(train):
        photos = images_in(sub)
        if not photos:
            logger.warning("skipping %s: no images in it", sub)
            continue
        name = concept_name(label_of(sub.name)[0], f"concept folder {sub}")
        pools.setdefault(name, []).extend(photos)
    if not pools:
        raise DatasetError(f"no concept folders with images in {train}")
    concepts, references = [], set()
    for name, pool in sorted(pools.items()):
        refs, rest = pick_views(name, pool, folder, split)
        references.update(p.resolve() for p in (*refs, *rest))
        concepts.append(ImportedConcept(name, tuple(refs),
                                        tuple(relative(p, folder) for p in refs)))
    known = set(pools)
    found = (_single_queries if part == "single" else _multi_queries)(test, folder, known)
    queries = {q.photo.resolve(): q for q in found}
    skipped: list[str] = []
    files = list(vqa) if vqa is not None else _vqa_files(folder, part)
    questions = []
    for path in files:
        questions += _questions(Path(path), folder, known, queries, references, skipped)
    if skipped:
        logger.warning("%d question(s) about reference (train) images were dropped: %s",
                       len(skipped), skipped[:3])
    details = {"part": part, "vqa_files": [str(p) for p in files],
               "vqa_skipped_reference_images": skipped}
    return Imported(LAYOUT, folder, tuple(concepts), tuple(queries.values()), tuple(questions),
                    details)

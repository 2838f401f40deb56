"""The Yo'LLaVA layout -> an imported dataset (its own train/test split, A/B VQA, text-only QA).

    yollava-data/train/<concept>/*.png -> pick_views -> reference views
    yollava-data/test/<concept>/*.png  -> queries (positive for <concept>, negative for others)
    yollava-data/yollava-visual-qa.json    {concept: {"./yollava-data/test/<c>/<n>.png":
                                              {question, options, correct_answer}}} -> VQA
    yollava-text-only-qa.json (RAP-MLLM)   {concept: {"0": {question, option, correct_answer}}}
                                           -> text-only questions (key ``option``, singular)

``root`` is the repository folder holding ``yollava-data/`` or ``yollava-data/`` itself. The
concept is written ``<sks>`` in the visual QA (bare ``sks`` in RAP's copies); it is replaced
by the concept's name. One published label is known to be wrong: ``brown-duck/0.png`` ("What
type of animal is <sks>?" A Duck, B Crocodile) says "B"; RAP's copy corrects it to "A". The
correction is applied unless ``fix_known_errors`` is off, and recorded in the labels' source
details. Recognition follows the paper: positives are a concept's own test images, negatives
every other concept's test images.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
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

__all__ = ["KNOWN_ERRORS", "load"]

logger = logging.getLogger(__name__)

LAYOUT = "yollava"
DATA_DIR = "yollava-data"
VQA_FILE = "yollava-visual-qa.json"
TEXT_QA_FILE = "yollava-text-only-qa.json"
# (concept, test file name, question, published answer, corrected answer)
KNOWN_ERRORS = (("brown-duck", "0.png", "What type of animal is <sks>?", "B", "A"),)


def _data_dir(root: Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    data = root / DATA_DIR if (root / DATA_DIR).is_dir() else root
    missing = [s for s in ("train", "test") if not (data / s).is_dir()]
    if missing:
        raise DatasetError(f"{data} is not a Yo'LLaVA folder: it has no {' or '.join(missing)} "
                           f"folder (expected {DATA_DIR}/train/<concept>/*.png and "
                           f"{DATA_DIR}/test/<concept>/*.png)")
    return data


def _concept_folders(split_dir: Path) -> dict[str, Path]:
    out = {}
    for folder in subfolders(split_dir):
        if images_in(folder):
            out[concept_name(folder.name, f"concept folder {folder}")] = folder
        else:
            logger.warning("skipping %s: no images in it", folder)
    return out


def _resolve(key: str, json_file: Path, data: Path) -> Path | None:
    """An image path as the QA file writes it ("./yollava-data/test/bo/3.png") -> the file."""
    rel = PurePosixPath(key.strip())
    parts = [p for p in rel.parts if p not in (".", "")]
    candidates = [json_file.parent.joinpath(*parts), data.parent.joinpath(*parts),
                  data.joinpath(*parts)]
    if "test" in parts:  # whatever comes before test/<concept>/<file>
        candidates.append(data.joinpath(*parts[parts.index("test"):]))
    return next((c for c in candidates if c.is_file()), None)


def _by_concept(path: Path, known: set[str], key_kind: str
                ) -> Iterator[tuple[str, str, str, object]]:
    """(concept, where, key, entry) of a QA file nested by concept: ``{concept: {key: entry}}``,
    the shape of both Yo'LLaVA question files; ``where`` names the place for errors."""
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise DatasetError(f"{path} must map concept names to {{{key_kind}: question}}")
    for concept, items in doc.items():
        where = f"{path.name}: {concept!r}"
        if concept not in known:
            raise DatasetError(f"{where} is not a concept of the dataset ({len(known)} known)")
        if not isinstance(items, dict):
            raise DatasetError(f"{where} must map {key_kind}s to questions")
        for key, entry in items.items():
            yield concept, where, key, entry


def _visual_qa(path: Path, data: Path, known: set[str], queries: dict[Path, Query],
               fix_known_errors: bool, corrections: list[str]) -> list[Question]:
    questions = []
    for concept, where, key, entry in _by_concept(path, known, "image path"):
        question, options, answer = choice_question(entry, f"{where}[{key!r}]")
        photo = _resolve(key, path, data)
        if photo is None:
            raise DatasetError(f"{where}: image {key!r} does not exist under {data.parent}")
        if photo.resolve() not in queries:
            raise DatasetError(f"{where}: image {key!r} is not a test image of the dataset")
        for c_name, c_file, c_question, wrong, right in KNOWN_ERRORS:
            if (fix_known_errors and concept == c_name and photo.name == c_file
                    and question == c_question and answer == wrong):
                logger.warning("%s: %s/%s answer %r is known to be wrong; using %r",
                               path.name, concept, c_file, wrong, right)
                corrections.append(f"{concept}/{c_file}: {wrong} -> {right}")
                answer = right
        questions.append(Question(photo, (concept,), name_concepts(question, [concept]),
                                  answer, options, path.name))
    return questions


def _text_qa(path: Path, known: set[str]) -> list[Question]:
    questions = []
    for concept, where, key, entry in _by_concept(path, known, "question number"):
        key_name = "option" if isinstance(entry, dict) and "option" in entry else "options"
        question, options, answer = choice_question(entry, f"{where}[{key!r}]", key_name)
        questions.append(Question(None, (concept,), name_concepts(question, [concept]),
                                  answer, options, path.name))
    return questions


def load(root: Path, split: SplitRule, *, vqa: Path | None = None, text_qa: Path | None = None,
         fix_known_errors: bool = True) -> Imported:
    """Read a Yo'LLaVA folder: train images are the reference pool, test images the queries.

    ``vqa`` defaults to ``yollava-data/yollava-visual-qa.json`` when present; ``text_qa`` to
    ``yollava-text-only-qa.json`` in the data folder or ``root`` when present.
    """
    root = Path(root)
    data = _data_dir(root)
    train, test = _concept_folders(data / "train"), _concept_folders(data / "test")
    untaught = sorted(set(test) - set(train))
    if untaught:
        raise DatasetError(f"test concepts {untaught} have no train folder in {data / 'train'}; "
                           "they cannot be taught")
    if not train:
        raise DatasetError(f"no concept folders with images in {data / 'train'}")
    concepts = []
    for name, folder in sorted(train.items()):
        refs, _ = pick_views(name, images_in(folder), data, split)
        concepts.append(ImportedConcept(name, tuple(refs), tuple(relative(p, data) for p in refs)))
    queries = {photo.resolve(): Query(photo, relative(photo, data), (name,))
               for name, folder in sorted(test.items()) for photo in images_in(folder)}

    known, corrections, questions = set(train), [], []
    vqa = vqa if vqa is not None else (data / VQA_FILE if (data / VQA_FILE).is_file() else None)
    if vqa is not None:
        questions += _visual_qa(Path(vqa), data, known, queries, fix_known_errors, corrections)
    if text_qa is None:
        text_qa = next((d / TEXT_QA_FILE for d in (data, root) if (d / TEXT_QA_FILE).is_file()),
                       None)
    if text_qa is not None:
        questions += _text_qa(Path(text_qa), known)
    details = {"data": str(data.resolve()), "vqa_file": vqa and str(vqa),
               "text_qa_file": text_qa and str(text_qa), "corrections": corrections}
    return Imported(LAYOUT, data, tuple(concepts), tuple(queries.values()), tuple(questions),
                    details)

"""RAP's multi-concept query images -> an imported dataset (every query shows a pair).

    query-image-2-concepts/<A>_and_<B>/<A>_and_<B>_<n>.jpg -> queries showing A and B
    index {"./data/query-image-2-concepts/<A>_and_<B>/<file>": ["<A>", "<B>"]} -> their concepts
    REFERENCES/<concept>/*.jpg  or  REFERENCES/database.json    -> pick_views -> reference views

``root`` is the ``query-image-2-concepts`` folder or a folder above it (``data/`` or RAP's
repository). The pair index (RAP's, republished by RePIC) is optional: without it, or for an
image it does not list, a pair folder's name split at ``_and_`` gives the concepts (the names
themselves may hold underscores: ``Baby_Q``, ``Bull_dog``). An image the index lists but the
folder lacks is an error.

The query images carry no reference views: RAP keeps one image per concept in a concept
database. ``references`` is that: either one folder per concept (named as in the index, with
or without ``<>``) or RAP's ``database.json`` (``{"concept_dict": {"<A>": {"name": "A",
"image": path or [paths], "info": "...", "category": "..."}}}``; ``info`` becomes the concept's
description). RAP has one view per concept, so ``--views 1`` is what it supports.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

from ego_ros.bag.importers.common import (
    DatasetError,
    Imported,
    ImportedConcept,
    Query,
    SplitRule,
    concept_name,
    images_in,
    pick_views,
    read_json,
    relative,
    subfolders,
)

__all__ = ["QUERY_DIR", "load"]

logger = logging.getLogger(__name__)

LAYOUT = "rap-multi"
QUERY_DIR = "query-image-2-concepts"
DATABASE_FILE = "database.json"


def _query_dir(root: Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    for candidate in (root, root / QUERY_DIR, root / "data" / QUERY_DIR):
        if candidate.is_dir() and any("_and_" in p.name for p in subfolders(candidate)):
            return candidate
    raise DatasetError(f"no pair folders (<A>_and_<B>/) in {root}, {root / QUERY_DIR} or "
                       f"{root / 'data' / QUERY_DIR}")


def _bare(name: str) -> str:
    name = name.strip()
    return name[1:-1] if name.startswith("<") and name.endswith(">") else name


def _find_index(queries: Path) -> Path | None:
    for folder in (queries, queries.parent):
        for path in sorted(folder.glob("*.json")):
            try:
                doc = read_json(path)
            except DatasetError:
                continue
            if isinstance(doc, dict) and doc and all(QUERY_DIR in k for k in doc):
                return path
    return None


def _read_index(path: Path, queries: Path) -> dict[Path, tuple[str, ...]]:
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise DatasetError(f"{path} must map image paths to lists of concept names")
    out: dict[Path, tuple[str, ...]] = {}
    for key, names in doc.items():
        if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
            raise DatasetError(f"{path}: {key!r} must map to a list of concept names, got "
                               f"{names!r:.60}")
        parts = PurePosixPath(key).parts
        tail = parts[parts.index(QUERY_DIR) + 1:] if QUERY_DIR in parts else parts[-2:]
        photo = queries.joinpath(*tail)
        if not photo.is_file():
            raise DatasetError(f"{path}: image {key!r} is not in {queries} (expected {photo})")
        out[photo.resolve()] = tuple(concept_name(_bare(n), f"{path}: {key!r}") for n in names)
    return out


def _database_pools(path: Path) -> tuple[dict[str, list[Path]], dict[str, str]]:
    doc = read_json(path)
    entries = doc.get("concept_dict") if isinstance(doc, dict) else None
    if not isinstance(entries, dict):
        raise DatasetError(f"{path} has no 'concept_dict' object (RAP's database format)")
    pools: dict[str, list[Path]] = {}
    descriptions: dict[str, str] = {}
    for key, entry in entries.items():
        where = f"{path.name}: concept_dict[{key!r}]"
        if not isinstance(entry, dict):
            raise DatasetError(f"{where} must be an object with name and image")
        name = concept_name(_bare(str(entry.get("name") or key)), where)
        images = entry.get("image")
        images = [images] if isinstance(images, str) else images
        if not (isinstance(images, list) and images and all(isinstance(i, str) for i in images)):
            raise DatasetError(f"{where}.image must be a path or a list of paths")
        for image in images:
            rel = PurePosixPath(image)
            found = next((c for c in (path.parent.joinpath(*rel.parts),
                                      path.parent.parent.joinpath(*rel.parts),
                                      path.parent / rel.name) if c.is_file()), None)
            if found is None:
                raise DatasetError(f"{where}.image {image!r} does not exist near {path.parent}")
            pools.setdefault(name, []).append(found)
        if isinstance(entry.get("info"), str):
            descriptions[name] = name_info(entry["info"], key, name)
    return pools, descriptions


def name_info(info: str, key: str, name: str) -> str:
    """RAP writes the concept as ``<name>`` in its descriptions; write the plain name."""
    return info.replace(key, name).replace(f"<{name}>", name)


def _reference_pools(references: Path) -> tuple[dict[str, list[Path]], dict[str, str]]:
    references = Path(references)
    if (references / DATABASE_FILE).is_file():
        return _database_pools(references / DATABASE_FILE)
    if references.is_file():
        return _database_pools(references)
    if not references.is_dir():
        raise FileNotFoundError(f"reference folder {references} does not exist")
    pools = {concept_name(_bare(f.name), f"reference folder {f}"): images_in(f)
             for f in subfolders(references) if images_in(f)}
    if not pools:
        raise DatasetError(f"no reference images in {references}: expected <concept>/*.jpg "
                           f"folders or RAP's {DATABASE_FILE}")
    return pools, {}


def load(root: Path, split: SplitRule, *, references: Path | None,
         index: Path | None = None) -> Imported:
    """Read RAP's pair folders (and index) as queries, ``references`` as the reference pool."""
    queries_dir = _query_dir(root)
    if references is None:
        raise DatasetError("rap-multi needs reference views from elsewhere: pass --references "
                           "DIR (one folder per concept, or RAP's database.json)")
    index = index if index is not None else _find_index(queries_dir)
    indexed = _read_index(Path(index), queries_dir) if index is not None else {}
    queries, unindexed = [], 0
    for folder in subfolders(queries_dir):
        if "_and_" not in folder.name:
            logger.warning("skipping %s: not a pair folder (<A>_and_<B>)", folder)
            continue
        from_name = tuple(concept_name(n, f"pair folder {folder}")
                          for n in folder.name.split("_and_"))
        for photo in images_in(folder):
            concepts = indexed.get(photo.resolve())
            if concepts is None:
                concepts, unindexed = from_name, unindexed + 1
            queries.append(Query(photo, relative(photo, queries_dir), concepts))
    if index is not None and unindexed:
        logger.warning("%d image(s) are not in the index %s; their folder names give their "
                       "concepts", unindexed, index)
    needed = sorted({c for q in queries for c in q.concepts})
    pools, descriptions = _reference_pools(Path(references))
    missing = [c for c in needed if c not in pools]
    if missing:
        raise DatasetError(f"no reference images for concepts {missing} in {references} "
                           f"(it has {sorted(pools)})")
    base = _base(pools, Path(references))
    concepts = []
    for name in needed:
        refs, _ = pick_views(name, pools[name], base, split)
        concepts.append(ImportedConcept(name, tuple(refs), tuple(relative(p, base) for p in refs),
                                        descriptions.get(name, "")))
    details = {"index": index and str(index), "references": str(Path(references).resolve()),
               "unindexed_images": unindexed}
    return Imported(LAYOUT, queries_dir, tuple(concepts), tuple(queries), (), details)



def _base(pools: dict[str, list[Path]], references: Path) -> Path:
    """The folder reference sources are written relative to: ``references`` (or, for a
    database whose images lie beside its folder, the folder above)."""
    folder = (references if references.is_dir() else references.parent).resolve()
    images = [p.resolve() for pool in pools.values() for p in pool]
    for base in (folder, folder.parent):
        if all(base in p.parents for p in images):
            return base
    raise DatasetError(f"reference images of {references} lie outside {folder.parent}")

"""Personalization datasets -> camera bags with ground truth (kept for its imports).

    labels = bag_from_dataset(Path("datasets/myvlm"), Path("/tmp/myvlm_bag"), views=1, seed=0)

The importers live in :mod:`ego_ros.bag.importers` (one module per layout: ``myvlm``,
``yollava``, ``this-is-my``, ``rap-multi``); this module re-exports what it used to define and
keeps :func:`split_references`, the per-concept view of a split.
"""

from __future__ import annotations

from pathlib import Path

from ego_ros.bag.importers import LAYOUTS, _check_layout, bag_from_dataset, import_dataset
from ego_ros.bag.importers.common import DatasetError, SplitRule
from ego_ros.bag.importers.myvlm import DatasetConcept, scan_myvlm

__all__ = [
    "LAYOUTS",
    "DatasetConcept",
    "DatasetError",
    "bag_from_dataset",
    "scan_myvlm",
    "split_references",
]


def split_references(
    root: Path, refs: int, seed: int = 0, layout: str = "myvlm", **options
) -> dict[str, tuple[list[Path], list[Path]]]:
    """Per concept ``(reference files, query files showing it)`` of the split a bag made with
    these settings gets: ``refs`` views by the seeded rule (queries in the dataset's order).
    ``options`` are the layout's importer options (``part``, ``references``, ...)."""
    _check_layout(layout)
    imported = import_dataset(Path(root), layout, SplitRule(refs, seed), **options)
    return {c.name: (list(c.references),
                     [q.photo for q in imported.queries if c.name in q.concepts])
            for c in imported.concepts}

"""Personalization datasets -> camera bags with ground truth, one importer per layout.

    labels = bag_from_dataset(Path("yollava"), Path("/tmp/yollava_bag"), layout="yollava",
                              views=5, seed=0)

    DATA --(layout module).load(root, SplitRule(views, seed), ...) --> Imported
         --common.write_dataset_bag--> BAG/ (rosbag2 of the query images)
                                       BAG/ego_labels.json (frames, VQA, split with file names)
                                       BAG/ego_refs/ (the reference views)

Layouts (the facts each follows are in ``datasets/LAYOUTS.md``):

- ``myvlm``      (:mod:`.myvlm`) concept folders with captions and free-form VQA; no split of
  its own: references by the seeded rule, the other photos are queries.
- ``yollava``    (:mod:`.yollava`) train/test folders (train = reference pool), the A/B visual
  QA file and, optionally, RAP's text-only QA.
- ``this-is-my`` (:mod:`.this_is_my`) single-concept test groups (Positive, Fake, Negative
  (Hard), Negative (Other)) kept on each frame, or (``part="multi"``) concept pairs; A/B and
  open-ended VQA.
- ``rap-multi``  (:mod:`.rap_multi`) RAP's pair folders and pair index, with reference views
  from a concept database.

A split is fixed: ``views`` references per concept chosen once by a seeded rule over the file
names (:func:`~ego_ros.bag.importers.common.pick_views`), or reused from another bag
(``split_from``), and written into the labels with the file names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ego_ros.bag.importers import myvlm, rap_multi, this_is_my, yollava
from ego_ros.bag.importers.common import (
    DatasetError,
    Imported,
    SplitRule,
    read_json,
    write_dataset_bag,
)
from ego_ros.bag.io import DEFAULT_START_NS, DEFAULT_TOPIC
from ego_ros.bag.labels import BagLabels, LabelsError, labels_path
from ego_ros.bag.labels_json import labels_from_dict

__all__ = [
    "LAYOUTS",
    "DatasetError",
    "SplitRule",
    "bag_from_dataset",
    "import_dataset",
    "recorded_split",
]

LAYOUTS = ("myvlm", "yollava", "this-is-my", "rap-multi")
OWN_SPLIT = {"myvlm": False, "yollava": True, "this-is-my": True, "rap-multi": True}


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown dataset layout {layout!r}; supported: {', '.join(LAYOUTS)}")


def recorded_split(path: Path, seed: int = 0) -> SplitRule:
    """The split recorded in a bag's labels (a bag folder or its ``ego_labels.json``); ``seed``
    orders the queries."""
    path = Path(path)
    file = labels_path(path) if path.is_dir() else path
    try:
        labels = labels_from_dict(read_json(file))
    except LabelsError as exc:
        raise DatasetError(f"{file}: {exc}") from exc
    if labels.split is None:
        raise DatasetError(f"{file} records no split (made before splits were recorded); "
                           "its reference views cannot be reused")
    return SplitRule.from_recorded(labels.split.references, seed)


def import_dataset(
    root: Path,
    layout: str,
    split: SplitRule,
    *,
    vqa: Sequence[Path] | None = None,
    text_qa: Path | None = None,
    part: str = "single",
    references: Path | None = None,
    index: Path | None = None,
    fix_known_errors: bool = True,
) -> Imported:
    """Read ``root`` with the ``layout``'s importer (no bag written); options as for
    :func:`bag_from_dataset`."""
    _check_layout(layout)
    root = Path(root)
    unused = {"vqa": vqa is not None and layout not in ("yollava", "this-is-my"),
              "text_qa": text_qa is not None and layout != "yollava",
              "references": references is not None and layout != "rap-multi",
              "index": index is not None and layout != "rap-multi",
              "part": part != "single" and layout != "this-is-my"}
    wrong = [k for k, v in unused.items() if v]
    if wrong:
        raise DatasetError(f"layout {layout!r} does not take {', '.join(wrong)}")
    if layout == "myvlm":
        return myvlm.load(root, split)
    if layout == "yollava":
        if vqa is not None and len(vqa) != 1:
            raise DatasetError(f"yollava takes one visual QA file, got {len(vqa)}")
        return yollava.load(root, split, vqa=vqa[0] if vqa else None, text_qa=text_qa,
                            fix_known_errors=fix_known_errors)
    if layout == "this-is-my":
        return this_is_my.load(root, split, part=part,
                               vqa=list(vqa) if vqa is not None else None)
    return rap_multi.load(root, split, references=references, index=index)


def bag_from_dataset(
    root: Path,
    out: Path,
    *,
    layout: str = "myvlm",
    views: int | None = None,
    seed: int = 0,
    split_from: Path | None = None,
    vqa: Sequence[Path] | None = None,
    text_qa: Path | None = None,
    part: str = "single",
    references: Path | None = None,
    index: Path | None = None,
    fix_known_errors: bool = True,
    fps: float = 2.0,
    compressed: bool = True,
    max_side: int | None = 640,
    topic: str = DEFAULT_TOPIC,
    storage: Literal["sqlite3", "mcap"] = "sqlite3",
    frame_id: str = "camera",
    start_ns: int = DEFAULT_START_NS,
    refs: int | None = None,
) -> BagLabels:
    """Write the dataset's query images as a camera bag at ``out`` with labels; return them.

    ``views`` reference views per concept (``refs`` is its former name) by the seeded rule, or
    the split recorded in ``split_from`` (a bag folder or labels file). Queries are played in
    a seeded order at ``fps``, each shrunk to ``max_side`` pixels on its longer side; reference
    views are copied into ``out/ego_refs/`` (re-encoded only when larger than ``max_side``).
    ``vqa``/``text_qa`` override the layout's default question files; ``part`` chooses
    This-Is-My's single or multi-concept part; ``references`` and ``index`` are rap-multi's
    concept database and pair index.
    """
    if views is not None and refs is not None and views != refs:
        raise DatasetError(f"views={views} and refs={refs} disagree; give one")
    views = views if views is not None else refs
    if split_from is not None:
        if views is not None:
            raise DatasetError("give either views or split_from, not both")
        split = recorded_split(split_from, seed)
    else:
        split = SplitRule(1 if views is None else views, seed)
    imported = import_dataset(root, layout, split, vqa=vqa, text_qa=text_qa, part=part,
                              references=references, index=index,
                              fix_known_errors=fix_known_errors)
    return write_dataset_bag(imported, out, split, own_split=OWN_SPLIT[layout], fps=fps,
                             compressed=compressed, max_side=max_side, topic=topic,
                             storage=storage, frame_id=frame_id, start_ns=start_ns)

"""The JSON form of a bag's ground truth: ``BagLabels`` <-> ``ego_labels.json`` documents.

    doc = labels_to_dict(labels)        # what save_labels writes (always LABELS_VERSION)
    labels = labels_from_dict(doc)      # any of READABLE_VERSIONS, validated field by field

Reading upgrades older versions in memory: version 1 wrote one ``vqa[].concept`` where
version 2 writes ``vqa[].concepts`` (all concepts a question is about), and had no
``frames[].group/target``, ``text_qa`` or ``split``. Every error names the field
(``frames[3].stamp_ns``, ``split.references.bo``).
"""

from __future__ import annotations

from typing import Any

from ego_ros.bag.labels import (
    LABELS_FORMAT,
    LABELS_VERSION,
    READABLE_VERSIONS,
    BagLabels,
    Box,
    CaptionLabel,
    ConceptLabel,
    FrameLabel,
    LabelsError,
    RefView,
    SourceInfo,
    SplitInfo,
    TextQaItem,
    VqaItem,
    _is_int,
    _require,
)

__all__ = ["labels_from_dict", "labels_to_dict"]


def labels_to_dict(labels: BagLabels) -> dict[str, Any]:
    """The JSON document of ``labels`` (plain dicts/lists, stable key order), written as
    the current ``LABELS_VERSION``."""
    return {
        "format": LABELS_FORMAT,
        "version": LABELS_VERSION,
        "topic": labels.topic,
        "source": {
            "dataset": labels.source.dataset,
            "seed": labels.source.seed,
            "refs": labels.source.refs,
            "details": dict(labels.source.details),
        },
        "concepts": {
            c.name: {
                "description": c.description,
                "refs": [_ref_to_dict(r) for r in c.refs],
            }
            for c in labels.concepts
        },
        "frames": [
            {
                "stamp_ns": int(f.stamp_ns),
                "concepts": list(f.concepts),
                "boxes": [{"concept": b.concept, "xyxy": list(b.xyxy)} for b in f.boxes],
                "source": f.source,
                "group": f.group,
                "target": f.target,
            }
            for f in labels.frames
        ],
        "vqa": [{"stamp_ns": int(q.stamp_ns), **_question_to_dict(q)} for q in labels.vqa],
        "text_qa": [_question_to_dict(q) for q in labels.text_qa],
        "captions": [
            {"stamp_ns": int(c.stamp_ns), "captions": list(c.captions)} for c in labels.captions
        ],
        "split": None if labels.split is None else {
            "rule": labels.split.rule,
            "views": labels.split.views,
            "seed": labels.split.seed,
            "references": {k: list(v) for k, v in labels.split.references.items()},
        },
    }


def labels_from_dict(doc: Any) -> BagLabels:
    """Parse and validate a labels document of any of ``READABLE_VERSIONS``; errors name the
    field (``frames[3].stamp_ns``)."""
    _require(isinstance(doc, dict), "labels must be a JSON object")
    _require(
        doc.get("format") == LABELS_FORMAT,
        f"not an ego labels file (format is {doc.get('format')!r}, expected {LABELS_FORMAT!r})",
    )
    version = doc.get("version")
    _require(
        version in READABLE_VERSIONS,
        f"labels version {version!r} is not supported (this ego_ros reads versions "
        f"{', '.join(map(str, READABLE_VERSIONS))}); regenerate the bag's labels",
    )
    try:
        source = _get(doc, "source", dict, "")
        concepts = _get(doc, "concepts", dict, "")
        split = _opt(doc, "split", dict, "")
        return BagLabels(
            version=LABELS_VERSION,  # read any readable version, hold it as the current one
            topic=_get(doc, "topic", str, ""),
            source=SourceInfo(
                dataset=_get(source, "dataset", str, "source"),
                seed=_opt(source, "seed", int, "source"),
                refs=_opt(source, "refs", int, "source"),
                details=_opt(source, "details", dict, "source") or {},
            ),
            concepts=tuple(
                ConceptLabel(
                    name=name,
                    description=_opt(c, "description", str, f"concepts.{name}") or "",
                    refs=tuple(
                        _ref_from_dict(r, f"concepts.{name}.refs[{i}]")
                        for i, r in enumerate(_get(c, "refs", list, f"concepts.{name}"))
                    ),
                )
                for name, c in concepts.items()
            ),
            frames=tuple(
                _frame_from_dict(f, f"frames[{i}]")
                for i, f in enumerate(_get(doc, "frames", list, ""))
            ),
            vqa=tuple(
                _vqa_from_dict(q, f"vqa[{i}]")
                for i, q in enumerate(_opt(doc, "vqa", list, "") or [])
            ),
            text_qa=tuple(
                TextQaItem(**_question_from_dict(q, f"text_qa[{i}]"))
                for i, q in enumerate(_opt(doc, "text_qa", list, "") or [])
            ),
            split=None if split is None else SplitInfo(
                rule=_get(split, "rule", str, "split"),
                views=_get(split, "views", int, "split"),
                seed=_opt(split, "seed", int, "split"),
                references={
                    name: tuple(_str_list(split["references"], name, "split.references"))
                    for name in _get(split, "references", dict, "split")
                },
            ),
            captions=tuple(
                CaptionLabel(
                    stamp_ns=_get(c, "stamp_ns", int, f"captions[{i}]"),
                    captions=tuple(_str_list(c, "captions", f"captions[{i}]")),
                )
                for i, c in enumerate(_opt(doc, "captions", list, "") or [])
            ),
        )
    except (TypeError, AttributeError) as exc:
        raise LabelsError(f"malformed labels: {exc}") from exc


def _where(ctx: str, key: str) -> str:
    return f"{ctx}.{key}" if ctx else key


def _get(obj: Any, key: str, typ: type, ctx: str) -> Any:
    _require(isinstance(obj, dict), f"{ctx or 'labels'} must be a JSON object")
    _require(key in obj, f"labels field {_where(ctx, key)} is missing")
    value = obj[key]
    ok = _is_int(value) if typ is int else isinstance(value, typ)
    _require(
        ok,
        f"labels field {_where(ctx, key)} must be {typ.__name__}, got "
        f"{type(value).__name__} {value!r:.60}",
    )
    return value


def _opt(obj: Any, key: str, typ: type, ctx: str) -> Any:
    if not isinstance(obj, dict) or obj.get(key) is None:
        return None
    return _get(obj, key, typ, ctx)


def _str_list(obj: Any, key: str, ctx: str) -> list[str]:
    values = _get(obj, key, list, ctx)
    for i, v in enumerate(values):
        _require(isinstance(v, str), f"labels field {_where(ctx, key)}[{i}] must be a string")
    return values


def _ref_to_dict(ref: RefView) -> dict[str, Any]:
    out: dict[str, Any] = {"file": ref.file} if ref.file is not None else {"index": ref.index}
    out["source"] = ref.source
    return out


def _ref_from_dict(obj: Any, ctx: str) -> RefView:
    return RefView(
        file=_opt(obj, "file", str, ctx),
        index=_opt(obj, "index", int, ctx),
        source=_opt(obj, "source", str, ctx) or "",
    )


def _frame_from_dict(obj: Any, ctx: str) -> FrameLabel:
    boxes = []
    for j, b in enumerate(_opt(obj, "boxes", list, ctx) or []):
        xyxy = _get(b, "xyxy", list, f"{ctx}.boxes[{j}]")
        _require(
            len(xyxy) == 4 and all(isinstance(v, (int, float)) for v in xyxy),
            f"labels field {ctx}.boxes[{j}].xyxy must be 4 numbers, got {xyxy!r}",
        )
        boxes.append(Box(concept=_get(b, "concept", str, f"{ctx}.boxes[{j}]"), xyxy=tuple(xyxy)))
    return FrameLabel(
        stamp_ns=_get(obj, "stamp_ns", int, ctx),
        concepts=tuple(_str_list(obj, "concepts", ctx)),
        boxes=tuple(boxes),
        source=_opt(obj, "source", str, ctx) or "",
        group=_opt(obj, "group", str, ctx) or "",
        target=_opt(obj, "target", str, ctx) or "",
    )


def _question_to_dict(q: VqaItem | TextQaItem) -> dict[str, Any]:
    return {
        "concepts": list(q.concepts),
        "question": q.question,
        "options": dict(q.options) if q.options is not None else None,
        "answer": q.answer,
        "source": q.source,
    }


def _question_from_dict(obj: Any, ctx: str) -> dict[str, Any]:
    """The fields of a VQA or text-only item; version 1 wrote one ``concept``, 2 ``concepts``."""
    options = _opt(obj, "options", dict, ctx)
    if options is not None:
        for letter, text in options.items():
            _require(isinstance(text, str), f"labels field {ctx}.options.{letter} must be a string")
    if isinstance(obj, dict) and "concepts" in obj:
        concepts = tuple(_str_list(obj, "concepts", ctx))
    else:
        concepts = (_get(obj, "concept", str, ctx),)
    return {
        "concept": "",
        "concepts": concepts,
        "question": _get(obj, "question", str, ctx),
        "answer": _get(obj, "answer", str, ctx),
        "options": options,
        "source": _opt(obj, "source", str, ctx) or "",
    }


def _vqa_from_dict(obj: Any, ctx: str) -> VqaItem:
    return VqaItem(stamp_ns=_get(obj, "stamp_ns", int, ctx), **_question_from_dict(obj, ctx))

"""Metrics with the paper's protocol (§4.1), plus PR curves and latency statistics.

Recognition: every query is evaluated for every concept; a query is positive for the concepts it
shows and negative for all others. Per concept, precision = TP / (TP + FP) and recall =
TP / (TP + FN). The overall figures are precision and recall **averaged over concepts**, and F1 is
computed **from those two averages** (``2PR / (P + R)``), not as the mean of per-concept F1.

Zero-division convention: a concept with no predicted positives has precision
``zero_division`` (default 0.0), one with no ground-truth positives has recall ``zero_division``;
such concepts are listed in the result (``undefined_precision`` / ``undefined_recall``) together
with every concept's raw counts, so a reader can tell a 0.0 that was measured from one that was
not. F1 of P = R = 0 is 0.0.

Everything returns plain Python / NumPy values that ``json.dumps`` accepts (NaN where a figure
is undefined, e.g. accuracy over zero questions).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "PRCurve",
    "average_precision",
    "caption_recall",
    "caption_recall_by_concept",
    "f1_from",
    "labels_from_sets",
    "latency_percentiles",
    "multi_concept_accuracy",
    "multi_concept_correct",
    "multi_concept_metrics",
    "pr_curve",
    "recognition_metrics",
    "vqa_accuracy",
]


def f1_from(precision: float, recall: float) -> float:
    """Harmonic mean of precision and recall; 0.0 when both are 0."""
    total = precision + recall
    return 0.0 if total == 0 else 2.0 * precision * recall / total


def _check_zero_division(value: float) -> float:
    if value not in (0.0, 1.0):
        raise ValueError(f"zero_division must be 0.0 or 1.0, got {value}")
    return float(value)


def labels_from_sets(query_sets: Sequence[Collection[str]], concepts: Sequence[str]
                     ) -> dict[str, list[bool]]:
    """Per-concept label lists from per-query sets: ``out[c][i]`` is ``c in query_sets[i]``.

    This is the "every query for every concept" expansion of the protocol."""
    return {c: [c in s for s in query_sets] for c in concepts}


def recognition_metrics(
    y_true: Mapping[str, Sequence[bool]],
    y_pred: Mapping[str, Sequence[bool]],
    zero_division: float = 0.0,
) -> dict[str, Any]:
    """Per-concept and overall precision / recall / F1 with the paper's averaging rule.

    ``y_true[c][i]`` says whether query ``i`` shows concept ``c``; ``y_pred[c][i]`` whether the
    model said so. Both must have the same concepts and, per concept, the same length.

    Returns ``{"precision", "recall", "f1", "num_concepts", "per_concept": {c: {"tp", "fp",
    "fn", "tn", "precision", "recall", "f1"}}, "undefined_precision": [...],
    "undefined_recall": [...]}``; overall ``precision``/``recall`` are means over concepts and
    ``f1 = f1_from(precision, recall)``. With no concepts the overall figures are NaN.
    """
    zero_division = _check_zero_division(zero_division)
    if set(y_true) != set(y_pred):
        raise ValueError(
            f"y_true and y_pred must cover the same concepts; only in y_true: "
            f"{sorted(set(y_true) - set(y_pred))}, only in y_pred: "
            f"{sorted(set(y_pred) - set(y_true))}"
        )
    per: dict[str, dict[str, float | int]] = {}
    undefined_p: list[str] = []
    undefined_r: list[str] = []
    for concept in y_true:
        truth = np.asarray(y_true[concept], dtype=bool)
        pred = np.asarray(y_pred[concept], dtype=bool)
        if truth.shape != pred.shape:
            raise ValueError(f"concept {concept!r}: {truth.size} labels but {pred.size} "
                             "predictions")
        tp = int(np.sum(truth & pred))
        fp = int(np.sum(~truth & pred))
        fn = int(np.sum(truth & ~pred))
        tn = int(np.sum(~truth & ~pred))
        if tp + fp == 0:
            undefined_p.append(concept)
        if tp + fn == 0:
            undefined_r.append(concept)
        precision = tp / (tp + fp) if tp + fp else zero_division
        recall = tp / (tp + fn) if tp + fn else zero_division
        per[concept] = {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": precision,
                        "recall": recall, "f1": f1_from(precision, recall)}
    if per:
        precision = float(np.mean([m["precision"] for m in per.values()]))
        recall = float(np.mean([m["recall"] for m in per.values()]))
        f1 = f1_from(precision, recall)
    else:
        precision = recall = f1 = math.nan
    return {"precision": precision, "recall": recall, "f1": f1, "num_concepts": len(per),
            "per_concept": per, "undefined_precision": undefined_p,
            "undefined_recall": undefined_r}


def _check_pairs(a: Sequence[Any], b: Sequence[Any], what: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{what}: {len(a)} ground-truth entries but {len(b)} predictions")


def multi_concept_correct(true_set: Collection[str], pred_set: Collection[str]) -> bool:
    """One multi-concept query is correct iff every present concept was found (paper §4.1).

    Extra concepts reported beside all the present ones do not make it wrong (they are counted
    as false positives by :func:`multi_concept_metrics`). A query that shows none of the known
    concepts is correct only when the model reports none: otherwise it would be vacuously
    correct whatever the model said."""
    true_set, pred_set = set(true_set), set(pred_set)
    return not pred_set if not true_set else true_set <= pred_set


def multi_concept_accuracy(true_sets: Sequence[Collection[str]],
                           pred_sets: Sequence[Collection[str]]) -> float:
    """Fraction of queries that are :func:`multi_concept_correct`; NaN for no queries."""
    _check_pairs(true_sets, pred_sets, "multi_concept_accuracy")
    if not true_sets:
        return math.nan
    return sum(map(multi_concept_correct, true_sets, pred_sets)) / len(true_sets)


def _group_label(group: Collection[str]) -> str:
    return " + ".join(sorted(group))


def multi_concept_metrics(
    true_sets: Sequence[Collection[str]],
    pred_sets: Sequence[Collection[str]],
    groups: Sequence[Collection[str]] | None = None,
    zero_division: float = 0.0,
) -> dict[str, Any]:
    """Multi-concept precision / recall / F1: the recognition protocol over concept groups.

    Paper §4.1: "we compute the same metrics for each concept pair, where a model's response is
    considered correct only if it identifies all concepts present in the query image". Each
    group ``g`` (a concept pair, or any set) plays the role of one concept: query ``i`` is a
    positive for ``g`` when it shows all of ``g`` (``g <= true_sets[i]``) and a predicted
    positive when the model found all of ``g`` (``g <= pred_sets[i]``). Finding only one
    concept of a pair is a miss for that pair. Every query is evaluated for every group;
    precision and recall are averaged over groups, and F1 comes from those averages, exactly as
    :func:`recognition_metrics` (whose result format this returns, keyed by "a + b" labels).

    ``groups`` defaults to the distinct non-empty ground-truth sets, in order of first
    appearance.
    """
    _check_pairs(true_sets, pred_sets, "multi_concept_metrics")
    truths = [frozenset(s) for s in true_sets]
    preds = [frozenset(s) for s in pred_sets]
    if groups is None:
        groups = list(dict.fromkeys(s for s in truths if s))
    y_true: dict[str, list[bool]] = {}
    y_pred: dict[str, list[bool]] = {}
    for group in groups:
        g = frozenset(group)
        if not g:
            raise ValueError("multi_concept_metrics: a group must name at least one concept")
        label = _group_label(g)
        y_true[label] = [g <= t for t in truths]
        y_pred[label] = [g <= p for p in preds]
    out = recognition_metrics(y_true, y_pred, zero_division)
    out["accuracy"] = multi_concept_accuracy(truths, preds)
    return out


def _norm_choice(choice: str | None) -> str | None:
    if choice is None:
        return None
    return str(choice).strip().strip("().:").strip().upper() or None


def vqa_accuracy(pred_choices: Sequence[str | None], gt_choices: Sequence[str]) -> float:
    """Multiple-choice accuracy by string match of the option letters (paper §4.1).

    Letters are compared after stripping spaces, parentheses, "." and ":" and upper-casing, so
    "(b)" matches "B". A ``None`` prediction (no letter could be parsed) is wrong. NaN for no
    questions."""
    _check_pairs(gt_choices, pred_choices, "vqa_accuracy")
    if not gt_choices:
        return math.nan
    hits = 0
    for pred, gt in zip(pred_choices, gt_choices):
        p, g = _norm_choice(pred), _norm_choice(gt)
        if g is None:
            raise ValueError(f"vqa_accuracy: empty ground-truth choice {gt!r}")
        hits += p == g
    return hits / len(gt_choices)


def _as_group(gt: str | Collection[str]) -> frozenset[str]:
    return frozenset([gt]) if isinstance(gt, str) else frozenset(gt)


def caption_recall_by_concept(
    captions_mention_lists: Sequence[Collection[str]],
    gt_concepts: Sequence[str | Collection[str]],
) -> dict[str, float]:
    """Per concept (or "a + b" concept group): the fraction of its queries whose caption names it.

    ``captions_mention_lists[i]`` holds the known names caption ``i`` mentions (as
    ``mentioned_names`` returns them); ``gt_concepts[i]`` is the concept shown, or the set of
    concepts shown, all of which the caption must name. Names compare case-insensitively."""
    _check_pairs(gt_concepts, captions_mention_lists, "caption_recall")
    hits: dict[str, list[bool]] = {}
    for mentions, gt in zip(captions_mention_lists, gt_concepts):
        group = _as_group(gt)
        if not group:
            raise ValueError("caption_recall: every query needs at least one ground-truth concept")
        said = {m.casefold() for m in mentions}
        hits.setdefault(_group_label(group), []).append(all(c.casefold() in said for c in group))
    return {label: sum(v) / len(v) for label, v in hits.items()}


def caption_recall(
    captions_mention_lists: Sequence[Collection[str]],
    gt_concepts: Sequence[str | Collection[str]],
    average: str = "concept",
) -> float:
    """Captioning recall: fraction of queries whose caption names the right concept(s).

    ``average="concept"`` (the paper's: "results averaged across all concepts") takes the
    fraction per concept first, then the mean over concepts, so a concept with many queries does
    not dominate; ``average="query"`` is the plain fraction over all queries. NaN for none."""
    if average not in ("concept", "query"):
        raise ValueError(f"caption_recall: average must be 'concept' or 'query', got {average!r}")
    per = caption_recall_by_concept(captions_mention_lists, gt_concepts)
    if not per:
        return math.nan
    if average == "concept":
        return float(np.mean(list(per.values())))
    hits = sum(
        all(c.casefold() in {m.casefold() for m in mentions} for c in _as_group(gt))
        for mentions, gt in zip(captions_mention_lists, gt_concepts)
    )
    return hits / len(gt_concepts)


@dataclass(frozen=True)
class PRCurve:
    """An exact precision-recall curve.

    ``thresholds`` are the distinct finite-or-infinite scores in decreasing order; at
    ``thresholds[i]`` a query is predicted positive iff ``score >= thresholds[i]``, giving
    ``precision[i]`` and ``recall[i]``. No artificial end points are added. NaN scores are
    excluded from the curve and counted in ``num_nan`` (``num_nan_positive`` of them were
    positives). Unpacks as ``precision, recall, thresholds = curve``.
    """

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray
    num_positive: int
    num_negative: int
    num_nan: int
    num_nan_positive: int

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.precision, self.recall, self.thresholds))

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision.tolist(), "recall": self.recall.tolist(),
                "thresholds": self.thresholds.tolist(), "num_positive": self.num_positive,
                "num_negative": self.num_negative, "num_nan": self.num_nan,
                "num_nan_positive": self.num_nan_positive}


def pr_curve(scores: Sequence[float], labels: Sequence[bool]) -> PRCurve:
    """Exact PR curve over every distinct score (see :class:`PRCurve`).

    Recall is 0.0 at every threshold when there are no positives (zero-division convention)."""
    _check_pairs(labels, scores, "pr_curve")
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    nan = np.isnan(s)
    s, y_all, y = s[~nan], y, y[~nan]
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tps = np.cumsum(y)
    fps = np.cumsum(~y)
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1] if s.size else np.array([], int)
    tp, fp = tps[last].astype(np.float64), fps[last].astype(np.float64)
    positives = int(y.sum())
    precision = tp / (tp + fp) if s.size else np.array([])
    recall = tp / positives if positives else np.zeros_like(tp)
    return PRCurve(precision, recall, s[last], positives, int(y.size - positives),
                   int(nan.sum()), int(np.sum(y_all & nan)))


def average_precision(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """AP = sum over thresholds of (R_i - R_{i-1}) * P_i with R_0 = 0 (no interpolation), on the
    curve of :func:`pr_curve` (NaN scores excluded). NaN when there are no positives."""
    curve = pr_curve(scores, labels)
    if curve.num_positive == 0:
        return math.nan
    steps = np.diff(np.r_[0.0, curve.recall])
    return float(np.sum(steps * curve.precision))


def latency_percentiles(latencies_ms: Sequence[float]) -> dict[str, float | int]:
    """``{p50, p90, p99, mean, min, max, n}`` of latencies in milliseconds.

    Percentiles interpolate linearly between samples (NumPy's default). Values must be finite and
    non-negative (a dropped clip has no latency: leave it out and count it separately). With no
    samples every figure is NaN and ``n`` is 0."""
    x = np.asarray(latencies_ms, dtype=np.float64)
    if x.size and (not np.all(np.isfinite(x)) or np.any(x < 0)):
        bad = int(np.flatnonzero(~np.isfinite(x) | (x < 0))[0])
        raise ValueError(f"latency_percentiles: latency #{bad} is {x[bad]}; latencies must be "
                         "finite and >= 0")
    if not x.size:
        return {"p50": math.nan, "p90": math.nan, "p99": math.nan, "mean": math.nan,
                "min": math.nan, "max": math.nan, "n": 0}
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(x.mean()),
            "min": float(x.min()), "max": float(x.max()), "n": int(x.size)}

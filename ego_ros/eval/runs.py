"""Several runs in one report, and what the paper protocol and bad frames add to a run.

    runs = [run_offline(engine_of[m], bag, replace(config, protocol=p)) ...]   # same queries
    rows = [run_row(compute_metrics(r)) for r in runs]   # memory, protocol, headline figures

:mod:`ego_ros.eval.report` builds on this: :class:`GroupRecord` (a multi-concept question with
the group's memories alone in context) scored by :func:`group_metrics`, :class:`SkippedFrame`
(a bag frame not queried, and why), :func:`context_token_metrics` (Table 3's in-context token
budget), and :func:`run_row` / :func:`runs_markdown`, one row per (memory, protocol) run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ego_ros.eval.metrics import recognition_metrics

__all__ = ["ROW_PICKS", "GroupRecord", "SkippedFrame", "context_token_metrics", "group_metrics",
           "run_row", "runs_markdown", "skipped_markdown"]


@dataclass(frozen=True)
class GroupRecord:
    """One multi-concept question (paper protocol): ``group``'s memories alone in context;
    the group counts as found when every one of its concepts is ``present``."""

    stamp_ns: int
    frame_stamps: tuple[int, ...]
    group: tuple[str, ...]
    truth: tuple[str, ...]
    present: Mapping[str, bool]
    scores: Mapping[str, float]
    latency_ms: float


@dataclass(frozen=True)
class SkippedFrame:
    """A bag frame the run skipped: ``index`` is its message position on ``topic`` (from 0),
    ``stamp_ns`` its header stamp (None when the message could not be read at all)."""

    topic: str
    index: int
    stamp_ns: int | None
    reason: str


def group_metrics(groups: Sequence[GroupRecord]) -> dict[str, Any]:
    """Multi-concept metrics from the paper protocol's group questions: for each group, each
    query is a positive when it shows the whole group and a predicted positive when the group's
    context found every concept of it; averaged over groups as for single concepts."""
    by_group: dict[tuple[str, ...], list[GroupRecord]] = {}
    for rec in groups:
        by_group.setdefault(tuple(sorted(rec.group)), []).append(rec)
    y_true = {" + ".join(g): [set(g) <= set(r.truth) for r in recs]
              for g, recs in by_group.items()}
    y_pred = {" + ".join(g): [all(r.present.get(c, False) for c in g) for r in recs]
              for g, recs in by_group.items()}
    out = recognition_metrics(y_true, y_pred)
    decisions = [t == p for g in y_true for t, p in zip(y_true[g], y_pred[g])]
    # Fraction of (query, group) decisions that are right (the robot protocol's "accuracy" is
    # per query instead: the predicted set equals the truth).
    out["accuracy"] = sum(decisions) / len(decisions)
    out["queries_with_groups"] = len({r.stamp_ns for r in groups if len(set(r.truth)) >= 2})
    out["questions"] = len(groups)
    return out


def context_token_metrics(context_tokens: Mapping[str, Mapping[str, int]]
                          ) -> dict[str, Any] | None:
    """Per-concept in-context tokens and their means (Table 3's budget)."""
    per = {c: dict(v) for c, v in context_tokens.items()}
    if not per:
        return None
    visual = sum(v["visual"] for v in per.values())
    views = sum(v["view_tokens"] for v in per.values())
    return {
        "visual_per_concept": visual / len(per),
        "text_per_concept": sum(v["text"] for v in per.values()) / len(per),
        "total_per_concept": sum(v["visual"] + v["text"] for v in per.values()) / len(per),
        "visual_fraction": visual / views if views else math.nan,  # of the views' tokens
        "per_concept": per,
    }


ROW_PICKS = {"recognition": ("precision", "recall", "f1", "mean_ap"),
             "multi_concept": ("precision", "recall", "f1"),
             "vqa": ("accuracy", "questions"),
             "caption": ("recall", "captions"),
             "in_context_tokens": ("visual_per_concept", "text_per_concept", "visual_fraction")}


def run_row(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """One run's headline figures, for tables across runs: ``memory``, ``protocol``, then per
    section the figures of ``ROW_PICKS`` (None for a section the run has not)."""
    row: dict[str, Any] = {"memory": metrics["memory"], "protocol": metrics["protocol"],
                           "queries": metrics["queries"],
                           "skipped_frames": metrics["skipped_frames"]["count"]}
    for section, keys in ROW_PICKS.items():
        values = metrics.get(section)
        row[section] = None if values is None else {k: values[k] for k in keys}
    return row


def runs_markdown(runs: Sequence[Mapping[str, Any]], table: Callable) -> list[str]:
    """One row per (memory, protocol) run, all on the same queries."""
    def pick(m: Mapping[str, Any], section: str, key: str) -> Any:
        return (m.get(section) or {}).get(key)

    lines = ["## Runs (memory strategy x protocol, same queries)", "",
             "Visual/text tokens: what one concept's memory puts in context (mean over "
             "concepts); visual share: of all visual tokens of its reference views (Table 3's "
             "% of visual tokens).", ""]
    rows = [(m["memory"], m["protocol"], pick(m, "in_context_tokens", "visual_per_concept"),
             pick(m, "in_context_tokens", "text_per_concept"),
             pick(m, "in_context_tokens", "visual_fraction"),
             pick(m, "recognition", "precision"), pick(m, "recognition", "recall"),
             pick(m, "recognition", "f1"), pick(m, "multi_concept", "f1"),
             pick(m, "vqa", "accuracy"), pick(m, "caption", "recall")) for m in runs]
    return lines + table(("memory", "protocol", "visual tokens", "text tokens", "visual share",
                          "precision", "recall", "F1", "multi F1", "VQA acc.",
                          "caption recall"), rows)


def skipped_markdown(metrics: Mapping[str, Any], table: Callable) -> list[str]:
    frames = metrics["skipped_frames"]["frames"]
    if not frames:
        return []
    lines = ["## Skipped frames", "",
             f"{len(frames)} bag frame(s) were not queried (index: message position on the "
             "topic, from 0).", ""]
    return lines + table(("topic", "index", "stamp (ns)", "reason"),
                         [(f["topic"], f["index"], f["stamp_ns"], f["reason"]) for f in frames])

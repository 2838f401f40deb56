"""From recorded predictions to the paper's metrics and a report folder a person can read.

    records = run_offline(engine, Path("bag"), EvalConfig(refs=1))   # or a live run
    metrics = compute_metrics(records)
    write_report(records, Path("report"), metrics)

An evaluation run, offline (frames straight from the bag to the engine) or live (the bag played
into the node), ends as :class:`EvalRecords`: one record per recognition query, VQA question and
caption, plus what teaching cost. Everything after that is shared, so the two modes are scored
by exactly the same code:

- :func:`compute_metrics` applies the paper's protocol (§4.1) through
  :mod:`ego_ros.eval.metrics`: per-concept precision/recall averaged over concepts with F1 from
  the averages, multi-concept metrics over the concept groups that co-occur, multiple-choice VQA
  accuracy, captioning recall, per-concept PR curves and AP from the scores, latency percentiles.
- :func:`write_report` writes ``report.json`` (every figure, strict JSON), ``predictions.jsonl``
  (one line per record, to re-score or inspect), ``report.md`` (tables linking the plots) and
  PNG plots: per-concept precision/recall bars, PR curves per concept, latency histogram.
- :func:`summary` is the compact form the CLI prints on stdout.

Every run records its protocol (:mod:`ego_ros.eval.protocols`) and memory strategy
(:mod:`ego_ros.core.strategies`). Several runs on the same queries (``ego-ros eval --memory
ego,uniform --protocol paper,robot``) go into one report: the first run's figures at the top
level as for a single run, and ``runs``: one entry per (memory, protocol) with the same figures
(:func:`run_row` is its compact form), so tables can be built from ``report.json``; every line
of ``predictions.jsonl`` names its memory and protocol.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ego_ros.eval.metrics import (
    average_precision,
    caption_recall,
    caption_recall_by_concept,
    labels_from_sets,
    latency_percentiles,
    multi_concept_metrics,
    pr_curve,
    recognition_metrics,
    vqa_accuracy,
)
from ego_ros.eval.protocols import PROTOCOLS
from ego_ros.eval.runs import (
    GroupRecord,
    SkippedFrame,
    context_token_metrics,
    group_metrics,
    run_row,
    runs_markdown,
    skipped_markdown,
)

__all__ = [
    "PLOT_FILES",
    "CaptionRecord",
    "EvalRecords",
    "GroupRecord",
    "RecognitionRecord",
    "SkippedFrame",
    "TeachRecord",
    "VqaRecord",
    "compute_metrics",
    "run_row",
    "summary",
    "write_report",
]

logger = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PREDICTIONS = "predictions.jsonl"
PLOT_FILES = {
    "precision_recall": "per_concept_precision_recall.png",
    "pr_curves": "pr_curves.png",
    "latency": "latency.png",
}
MODES = ("offline", "live")


# ----------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecognitionRecord:
    """One recognition query (a frame, or a clip keyed by its newest frame).

    ``truth`` are the concepts the query shows (a clip shows the union of its frames'),
    ``present``/``scores`` what the model said per concept; a concept missing from them (not in
    context) counts as predicted absent with no score.
    """

    stamp_ns: int
    frame_stamps: tuple[int, ...]
    truth: tuple[str, ...]
    present: Mapping[str, bool]
    scores: Mapping[str, float]
    latency_ms: float


@dataclass(frozen=True)
class VqaRecord:
    """One question about a named concept; ``choice`` is the parsed option letter (or None)."""

    stamp_ns: int
    concept: str
    question: str
    options: Mapping[str, str] | None
    answer: str  # ground truth: an option letter, or free text for open-ended questions
    response: str
    choice: str | None
    latency_ms: float

    @property
    def multiple_choice(self) -> bool:
        return self.options is not None


@dataclass(frozen=True)
class CaptionRecord:
    """One personalized caption; ``mentioned`` are the known names it uses."""

    stamp_ns: int
    truth: tuple[str, ...]
    caption: str
    mentioned: tuple[str, ...]
    latency_ms: float


@dataclass(frozen=True)
class TeachRecord:
    """How one concept was taught before the queries."""

    concept: str
    views: int
    num_tokens: int
    keywords: tuple[tuple[str, ...], ...]
    elapsed_s: float


@dataclass(frozen=True)
class EvalRecords:
    """Everything one evaluation run observed; the input of :func:`compute_metrics`.

    ``labelled_frames`` counts the bag's labelled frames that were queried (alone or inside a
    clip); ``dropped`` the queries that got no answer (live mode: clips the node skipped).
    ``details`` holds free-form context for the report (bag, model, settings).
    ``protocol`` / ``memory``: which protocol and memory strategy produced the figures;
    ``groups``: the paper protocol's multi-concept questions; ``skipped``: frames not queried
    because they could not be read or were refused; ``context_tokens``: per concept, the tokens
    its memory puts in context (``visual``, ``text``, ``view_tokens``).
    """

    mode: str
    concepts: tuple[str, ...]
    recognition: tuple[RecognitionRecord, ...] = ()
    vqa: tuple[VqaRecord, ...] = ()
    captions: tuple[CaptionRecord, ...] = ()
    teach: tuple[TeachRecord, ...] = ()
    clip_frames: int = 1
    labelled_frames: int = 0
    dropped: int = 0
    elapsed_s: float = 0.0
    details: Mapping[str, Any] = field(default_factory=dict)
    protocol: str = "robot"
    memory: str = "ego"
    groups: tuple[GroupRecord, ...] = ()
    skipped: tuple[SkippedFrame, ...] = ()
    context_tokens: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"EvalRecords.mode must be one of {MODES}, got {self.mode!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"EvalRecords.protocol must be one of {tuple(PROTOCOLS)}, got "
                             f"{self.protocol!r}")
        if not isinstance(self.memory, str) or not self.memory:
            raise ValueError(f"EvalRecords.memory must name a strategy, got {self.memory!r}")
        if len(set(self.concepts)) != len(self.concepts):
            raise ValueError(f"EvalRecords.concepts lists a concept twice: {self.concepts}")
        if self.clip_frames < 1:
            raise ValueError(f"EvalRecords.clip_frames must be >= 1, got {self.clip_frames}")
        for name in ("labelled_frames", "dropped"):
            if getattr(self, name) < 0:
                raise ValueError(f"EvalRecords.{name} must be >= 0, got {getattr(self, name)}")
        known = set(self.concepts)
        for rec in self.recognition:
            unknown = set(rec.truth) - known
            if unknown:
                raise ValueError(
                    f"recognition record at {rec.stamp_ns} names unknown concepts "
                    f"{sorted(unknown)}; EvalRecords.concepts is {list(self.concepts)}"
                )


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _recognition(records: EvalRecords) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Recognition metrics (with AP per concept) and the PR curves, or (None, {})."""
    recs = records.recognition
    if not recs or not records.concepts:
        return None, {}
    concepts = list(records.concepts)
    y_true = labels_from_sets([set(r.truth) for r in recs], concepts)
    y_pred = {c: [bool(r.present.get(c, False)) for r in recs] for c in concepts}
    out = recognition_metrics(y_true, y_pred)
    curves: dict[str, Any] = {}
    aps: list[float] = []
    for c in concepts:
        scores = [float(r.scores.get(c, math.nan)) for r in recs]
        ap = average_precision(scores, y_true[c])
        out["per_concept"][c]["ap"] = ap
        aps.append(ap)
        curve = pr_curve(scores, y_true[c])
        curves[c] = curve.to_dict()
    out["mean_ap"] = _nanmean(aps)
    out["queries"] = len(recs)
    # (query, concept) pairs the model was not asked about (retrieval left the concept out of
    # the context): counted as "not present", which lowers recall.
    out["pairs_not_in_context"] = sum(c not in r.present for r in recs for c in concepts)
    return out, curves


def _multi_concept(records: EvalRecords) -> dict[str, Any] | None:
    """The paper's multi-concept metrics over every co-occurring group of >= 2 concepts."""
    recs = records.recognition
    truths = [frozenset(r.truth) for r in recs]
    groups = list(dict.fromkeys(t for t in truths if len(t) >= 2))
    if not groups:
        return None
    preds = [frozenset(c for c, p in r.present.items() if p) for r in recs]
    out = multi_concept_metrics(truths, preds, groups)
    out["queries_with_groups"] = sum(len(t) >= 2 for t in truths)
    return out


def _vqa(records: EvalRecords) -> dict[str, Any] | None:
    if not records.vqa:
        return None
    mc = [v for v in records.vqa if v.multiple_choice]
    per: dict[str, float] = {}
    for concept in dict.fromkeys(v.concept for v in mc):
        mine = [v for v in mc if v.concept == concept]
        per[concept] = vqa_accuracy([v.choice for v in mine], [v.answer for v in mine])
    return {
        # Open-ended answers need a judge model (the paper uses ChatGPT); they are recorded in
        # predictions.jsonl but not scored here.
        "accuracy": vqa_accuracy([v.choice for v in mc], [v.answer for v in mc]),
        "questions": len(mc),
        "unparsed": sum(v.choice is None for v in mc),
        "open_ended": len(records.vqa) - len(mc),
        "per_concept": per,
    }


def _captions(records: EvalRecords) -> dict[str, Any] | None:
    if not records.captions:
        return None
    scored = [c for c in records.captions if c.truth]
    mentions = [list(c.mentioned) for c in scored]
    truths = [list(c.truth) for c in scored]
    false_mentions = sum(bool(set(c.mentioned) - set(c.truth)) for c in records.captions)
    return {
        # The paper's figure: per concept (or concept pair) first, then averaged.
        "recall": caption_recall(mentions, truths) if scored else math.nan,
        "recall_per_query": caption_recall(mentions, truths, "query") if scored else math.nan,
        "captions": len(records.captions),
        "scored": len(scored),
        "false_mention_rate": false_mentions / len(records.captions),
        "per_concept": caption_recall_by_concept(mentions, truths) if scored else {},
    }


def _latency(records: EvalRecords) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task, recs in (("recognition", records.recognition), ("vqa", records.vqa),
                       ("caption", records.captions)):
        if recs:
            out[task] = latency_percentiles([r.latency_ms for r in recs])
    if records.teach:
        out["introduce"] = latency_percentiles([t.elapsed_s * 1000.0 for t in records.teach])
    return out


def compute_metrics(records: EvalRecords) -> dict[str, Any]:
    """Every figure of the run (see the module doc); plain values ``json.dumps`` accepts."""
    recognition, curves = _recognition(records)
    if records.groups:
        multi = group_metrics(records.groups)
    else:
        multi = _multi_concept(records) if records.recognition else None
    return {
        "mode": records.mode,
        "protocol": records.protocol,
        "protocol_summary": PROTOCOLS[records.protocol].summary,
        "memory": records.memory,
        "concepts": list(records.concepts),
        "frames_evaluated": records.labelled_frames,
        "queries": len(records.recognition),
        "clip_frames": records.clip_frames,
        "dropped": records.dropped,
        "recognition": recognition,
        "multi_concept": multi,
        "vqa": _vqa(records),
        "caption": _captions(records),
        "in_context_tokens": context_token_metrics(records.context_tokens),
        "skipped_frames": {"count": len(records.skipped),
                           "frames": [asdict(f) for f in records.skipped]},
        "latency_ms": _latency(records),
        "teach": {
            t.concept: {"views": t.views, "tokens": t.num_tokens,
                        "elapsed_s": round(t.elapsed_s, 4)}
            for t in records.teach
        },
        "pr_curves": curves,
        "elapsed_s": round(records.elapsed_s, 3),
        "details": dict(records.details),
    }


def summary(metrics: Mapping[str, Any], report_dir: Path | None = None,
            runs: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The compact summary printed on stdout: overall figures and counts, no curves; with
    several ``runs`` (their metrics), one :func:`run_row` each."""
    out: dict[str, Any] = {k: metrics[k] for k in ("mode", "protocol", "memory",
                                                   "frames_evaluated", "queries",
                                                   "clip_frames", "dropped")}
    out["concepts"] = len(metrics["concepts"])
    out["skipped_frames"] = metrics["skipped_frames"]["count"]
    picks = {"recognition": ("precision", "recall", "f1", "mean_ap"),
             "multi_concept": ("precision", "recall", "f1", "accuracy"),
             "vqa": ("accuracy", "questions", "open_ended"),
             "caption": ("recall", "captions", "false_mention_rate")}
    for section, keys in picks.items():
        if metrics.get(section) is not None:
            out[section] = {k: metrics[section][k] for k in keys}
    lat = metrics.get("latency_ms", {}).get("recognition")
    if lat is not None:
        out["latency_ms"] = {k: lat[k] for k in ("p50", "p90", "p99")}
    out["elapsed_s"] = metrics["elapsed_s"]
    if len(runs) > 1:
        out["runs"] = [run_row(m) for m in runs]
    if report_dir is not None:
        out["report_dir"] = str(report_dir)
    return out


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def _strict(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become null (strict JSON has neither), tuples become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return _strict(value.item())
    if isinstance(value, Mapping):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a report."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, "utf-8")
    os.replace(tmp, path)


def _prediction_lines(records: EvalRecords) -> list[str]:
    lines = []
    for task, recs in (("recognition", records.recognition), ("multi_concept", records.groups),
                       ("vqa", records.vqa), ("caption", records.captions)):
        for rec in recs:
            row = {"task": task, "memory": records.memory, "protocol": records.protocol,
                   **asdict(rec)}
            lines.append(json.dumps(_strict(row), ensure_ascii=False, allow_nan=False))
    return lines


def write_report(
    records: EvalRecords, out_dir: Path, metrics: Mapping[str, Any] | None = None,
    runs: Sequence[EvalRecords] = (), runs_metrics: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Path]:
    """Write the report folder; returns ``{"json", "markdown", "predictions", <plot keys>}``.

    ``runs``: every run of the evaluation, ``records`` first (several memory strategies or
    protocols on the same queries), with their metrics in ``runs_metrics`` when already
    computed. Existing report files in ``out_dir`` are replaced; nothing else there is touched.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = dict(metrics) if metrics is not None else compute_metrics(records)
    runs = tuple(runs) or (records,)
    if runs[0] is not records:
        raise ValueError("write_report: runs must start with records")
    all_metrics = list(runs_metrics) or [metrics, *(compute_metrics(r) for r in runs[1:])]
    paths = {
        "json": out_dir / REPORT_JSON,
        "markdown": out_dir / REPORT_MD,
        "predictions": out_dir / PREDICTIONS,
    }
    plots = _plots(metrics, records, out_dir)
    paths.update(plots)
    doc = {**metrics, "files": {k: p.name for k, p in paths.items()}}
    if len(runs) > 1:  # every run's figures (PR curves only at the top, for the first)
        doc["runs"] = [{k: v for k, v in m.items() if k != "pr_curves"} for m in all_metrics]
    _write_text(paths["json"],
                json.dumps(_strict(doc), indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    lines = [line for run in runs for line in _prediction_lines(run)]
    _write_text(paths["predictions"], "\n".join(lines) + ("\n" if lines else ""))
    _write_text(paths["markdown"], _markdown(metrics, plots, all_metrics if len(runs) > 1
                                             else ()))
    logger.info("report written to %s (%s)", out_dir, ", ".join(p.name for p in paths.values()))
    return paths


# ----------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return out + [""]


def _markdown(metrics: Mapping[str, Any], plots: Mapping[str, Path],
              runs: Sequence[Mapping[str, Any]] = ()) -> str:
    details = metrics.get("details", {})
    lines = [f"# Ego evaluation report ({metrics['mode']})", ""]
    run = f"protocol `{metrics['protocol']}`, memory `{metrics['memory']}`"
    lines += [f"Figures below: {run} ({metrics['protocol_summary']})."
              + (" Every run is in the runs table." if runs else ""), ""]
    settings = [(k, v) for k, v in details.items()
                if not isinstance(v, (dict, list)) and k not in ("protocol", "memory")]
    settings += [("protocol", metrics["protocol"]), ("memory", metrics["memory"])]
    settings += [("queries", metrics["queries"]), ("frames evaluated", metrics["frames_evaluated"]),
                 ("frames per clip", metrics["clip_frames"]), ("dropped", metrics["dropped"]),
                 ("concepts", ", ".join(metrics["concepts"])),
                 ("skipped frames", metrics["skipped_frames"]["count"]),
                 ("elapsed (s)", metrics["elapsed_s"])]
    lines += _table(("setting", "value"), settings)
    if runs:
        lines += runs_markdown(runs, _table)
    rec = metrics.get("recognition")
    if rec is not None:
        lines += [f"## Recognition ({run})", "",
                  "Every query is asked about every concept. Precision and recall are averaged "
                  "over concepts; F1 is computed from the two averages (paper §4.1).", ""]
        lines += _table(("precision", "recall", "F1", "mean AP"),
                        [(rec["precision"], rec["recall"], rec["f1"], rec["mean_ap"])])
        rows = [(c, m["tp"], m["fp"], m["fn"], m["tn"], m["precision"], m["recall"], m["f1"],
                 m["ap"]) for c, m in rec["per_concept"].items()]
        lines += _table(("concept", "TP", "FP", "FN", "TN", "precision", "recall", "F1", "AP"),
                        rows)
        if rec["pairs_not_in_context"]:
            lines += [f"{rec['pairs_not_in_context']} (query, concept) pairs were not asked: "
                      "retrieval left the concept out of the context (raise --max-in-context "
                      "to ask every query about every concept).", ""]
        no_p = ", ".join(rec["undefined_precision"]) or "none"
        no_r = ", ".join(rec["undefined_recall"]) or "none"
        if rec["undefined_precision"] or rec["undefined_recall"]:
            lines += [f"Precision undefined (no predicted positive; counted as 0): {no_p}. "
                      f"Recall undefined (no positive query; counted as 0): {no_r}.", ""]
    multi = metrics.get("multi_concept")
    if multi is not None:
        lines += [f"## Multi-concept recognition ({run})", "",
                  "A query counts for a concept group only when every concept of the group was "
                  "found.", ""]
        lines += _table(("precision", "recall", "F1", "accuracy"),
                        [(multi["precision"], multi["recall"], multi["f1"], multi["accuracy"])])
        lines += _table(("group", "TP", "FP", "FN", "precision", "recall"),
                        [(g, m["tp"], m["fp"], m["fn"], m["precision"], m["recall"])
                         for g, m in multi["per_concept"].items()])
    vqa = metrics.get("vqa")
    if vqa is not None:
        lines += [f"## Visual question answering ({run})", "",
                  "Multiple-choice accuracy by option letter. Open-ended answers are kept in "
                  f"`{PREDICTIONS}` for a judge model and not scored here.", ""]
        lines += _table(("accuracy", "questions", "unparsed", "open-ended"),
                        [(vqa["accuracy"], vqa["questions"], vqa["unparsed"], vqa["open_ended"])])
    cap = metrics.get("caption")
    if cap is not None:
        lines += [f"## Personalized captioning ({run})", "",
                  "Recall: fraction of captions naming every concept shown, per concept then "
                  "averaged.", ""]
        lines += _table(("recall", "recall (per query)", "captions", "false mention rate"),
                        [(cap["recall"], cap["recall_per_query"], cap["captions"],
                          cap["false_mention_rate"])])
    tokens = metrics.get("in_context_tokens")
    if tokens is not None:
        lines += ["## Memory in context", ""]
        lines += _table(("concept", "visual tokens", "text tokens", "views' visual tokens"),
                        [(c, t["visual"], t["text"], t["view_tokens"])
                         for c, t in tokens["per_concept"].items()])
    lines += skipped_markdown(metrics, _table)
    latency = metrics.get("latency_ms", {})
    if latency:
        lines += [f"## Latency (ms, {run})", ""]
        lines += _table(("task", "n", "p50", "p90", "p99", "mean", "max"),
                        [(t, v["n"], v["p50"], v["p90"], v["p99"], v["mean"], v["max"])
                         for t, v in latency.items()])
    teach = metrics.get("teach", {})
    if teach:
        lines += ["## Teaching", ""]
        lines += _table(("concept", "views", "memory tokens", "time (s)"),
                        [(c, t["views"], t["tokens"], t["elapsed_s"]) for c, t in teach.items()])
    if plots:
        lines += ["## Plots", ""]
        titles = {"precision_recall": "Per-concept precision and recall",
                  "pr_curves": "Precision-recall curves", "latency": "Latency"}
        for key, path in plots.items():
            lines += [f"### {titles.get(key, key)}", "", f"![{titles.get(key, key)}]({path.name})",
                      ""]
    lines += [f"All figures: [`{REPORT_JSON}`]({REPORT_JSON}); every prediction: "
              f"[`{PREDICTIONS}`]({PREDICTIONS}).", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Plots (matplotlib's Agg canvas directly: no pyplot, no global backend state)
# ----------------------------------------------------------------------------------------------


def _plots(metrics: Mapping[str, Any], records: EvalRecords, out_dir: Path) -> dict[str, Path]:
    from matplotlib.figure import Figure

    written: dict[str, Path] = {}
    rec = metrics.get("recognition")
    if rec is not None:
        written["precision_recall"] = _bars(Figure, rec, out_dir / PLOT_FILES["precision_recall"])
        written["pr_curves"] = _curves(Figure, rec, metrics["pr_curves"],
                                       out_dir / PLOT_FILES["pr_curves"])
    if any(metrics.get("latency_ms", {}).get(t) for t in ("recognition", "vqa", "caption")):
        written["latency"] = _latency_hist(Figure, records, out_dir / PLOT_FILES["latency"])
    return written


def _bars(figure_cls: Any, rec: Mapping[str, Any], path: Path) -> Path:
    per = rec["per_concept"]
    names = list(per)
    x = np.arange(len(names))
    fig = figure_cls(figsize=(max(6.0, 0.6 * len(names) + 2.0), 4.2), dpi=110,
                     layout="constrained")
    ax = fig.add_subplot()
    width = 0.38
    bars_p = ax.bar(x - width / 2, [per[c]["precision"] for c in names], width,
                    label="precision", color="#3a7bd5")
    bars_r = ax.bar(x + width / 2, [per[c]["recall"] for c in names], width, label="recall",
                    color="#f39c12")
    if len(names) <= 12:  # values on the bars, so that a measured 0 is visibly a 0
        undefined = set(rec["undefined_precision"])
        ax.bar_label(bars_p, labels=["n/a" if c in undefined else f"{per[c]['precision']:.2f}"
                                     for c in names], fontsize=7, padding=1)
        ax.bar_label(bars_r, fmt="%.2f", fontsize=7, padding=1)
    ax.axhline(rec["precision"], color="#3a7bd5", linestyle="--", linewidth=1,
               label=f"mean precision {rec['precision']:.2f}")
    ax.axhline(rec["recall"], color="#f39c12", linestyle=":", linewidth=1.2,
               label=f"mean recall {rec['recall']:.2f}")
    ax.set_xticks(x, names, rotation=45 if len(names) > 6 else 0,
                  ha="right" if len(names) > 6 else "center")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("value")
    ax.set_title(f"Per-concept precision and recall (F1 from averages: {rec['f1']:.3f})")
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path)
    return path


def _curves(figure_cls: Any, rec: Mapping[str, Any], curves: Mapping[str, Any],
            path: Path) -> Path:
    names = list(curves)
    cols = min(4, max(1, len(names)))
    rows = math.ceil(len(names) / cols)
    fig = figure_cls(figsize=(3.2 * cols, 3.0 * rows + 0.4), dpi=100, layout="constrained")
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        curve = curves[name]
        stats = rec["per_concept"][name]
        if not curve["recall"]:
            ax.text(0.5, 0.5, "no scores", ha="center", va="center", transform=ax.transAxes)
        elif not curve["num_positive"]:
            ax.text(0.5, 0.5, "no positive query", ha="center", va="center",
                    transform=ax.transAxes)
        else:
            # Start at recall 0 with the first point's precision, as step plots of PR curves do.
            r = [0.0, *curve["recall"]]
            p = [curve["precision"][0], *curve["precision"]]
            ax.step(r, p, where="post", color="#3a7bd5")
        if curve["num_positive"]:
            base = curve["num_positive"] / max(1, curve["num_positive"] + curve["num_negative"])
            ax.axhline(base, color="grey", linestyle=":", linewidth=1)
        ax.plot([stats["recall"]], [stats["precision"]], "o", color="#c0392b",
                label="threshold")
        ap = stats["ap"]
        ax.set_title(f"{name}  AP {'n/a' if math.isnan(ap) else f'{ap:.2f}'}", fontsize=9)
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.05)
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("Precision-recall per concept (dot: decision threshold; dotted: chance)",
                 fontsize=10)
    fig.savefig(path)
    return path


def _latency_hist(figure_cls: Any, records: EvalRecords, path: Path) -> Path:
    fig = figure_cls(figsize=(6.5, 4.0), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    colours = {"recognition": "#3a7bd5", "vqa": "#27ae60", "caption": "#8e44ad"}
    series = {task: np.asarray([r.latency_ms for r in recs], dtype=np.float64)
              for task, recs in (("recognition", records.recognition), ("vqa", records.vqa),
                                 ("caption", records.captions)) if recs}
    every = np.concatenate(list(series.values()))  # [N] all latencies, for shared bins
    lo, hi = float(every.min()), float(every.max())
    log_scale = lo > 0 and hi / lo > 50  # a few slow outliers would squash a linear axis
    count = min(40, max(8, every.size // 2))
    edges = (np.geomspace(lo, hi, count + 1) if log_scale
             else np.linspace(lo, hi if hi > lo else lo + 1.0, count + 1))
    for task, values in series.items():
        p50, p90 = np.percentile(values, [50, 90])
        ax.hist(values, bins=edges, alpha=0.55, color=colours[task],
                label=f"{task} (n={values.size}, p50 {p50:.0f} ms)")
        ax.axvline(p90, color=colours[task], linestyle="--", linewidth=1)
    if log_scale:
        ax.set_xscale("log")
    ax.set_xlabel("latency per query (ms)")
    ax.set_ylabel("queries")
    ax.set_title("Latency (dashed: p90)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.savefig(path)
    return path

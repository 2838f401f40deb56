"""Metrics of the paper's protocol against hand-computed cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ego_ros.eval.metrics import (
    average_precision,
    caption_recall,
    caption_recall_by_concept,
    f1_from,
    labels_from_sets,
    latency_percentiles,
    multi_concept_accuracy,
    multi_concept_correct,
    multi_concept_metrics,
    pr_curve,
    recognition_metrics,
    vqa_accuracy,
)

T, F = True, False


def test_f1_is_computed_from_averaged_precision_and_recall() -> None:
    y_true = {"anna": [T, T, F, F], "bo": [F, F, T, T]}
    y_pred = {"anna": [T, F, F, F], "bo": [T, T, T, T]}
    m = recognition_metrics(y_true, y_pred)
    # anna: TP 1, FP 0, FN 1 -> P 1.0, R 0.5; bo: TP 2, FP 2, FN 0 -> P 0.5, R 1.0
    assert m["per_concept"]["anna"] == {"tp": 1, "fp": 0, "fn": 1, "tn": 2, "precision": 1.0,
                                        "recall": 0.5, "f1": pytest.approx(2 / 3)}
    assert m["per_concept"]["bo"]["precision"] == 0.5 and m["per_concept"]["bo"]["recall"] == 1.0
    assert m["precision"] == pytest.approx(0.75)
    assert m["recall"] == pytest.approx(0.75)
    mean_of_f1 = (m["per_concept"]["anna"]["f1"] + m["per_concept"]["bo"]["f1"]) / 2
    assert mean_of_f1 == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(0.75)  # F1 of the means, not the mean of the F1s
    assert m["f1"] != pytest.approx(mean_of_f1)
    assert m["num_concepts"] == 2
    json.dumps(m)  # report-ready


def test_zero_division_convention_is_reported() -> None:
    y_true = {"anna": [T, F, F], "ghost": [F, F, F], "shy": [T, T, F]}
    y_pred = {"anna": [T, F, F], "ghost": [F, F, F], "shy": [F, F, F]}
    m = recognition_metrics(y_true, y_pred)
    assert m["per_concept"]["ghost"]["precision"] == 0.0  # no predicted positives
    assert m["per_concept"]["ghost"]["recall"] == 0.0  # no ground-truth positives
    assert m["per_concept"]["shy"]["precision"] == 0.0 and m["per_concept"]["shy"]["recall"] == 0
    assert m["undefined_precision"] == ["ghost", "shy"]
    assert m["undefined_recall"] == ["ghost"]
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(1 / 3)
    m1 = recognition_metrics(y_true, y_pred, zero_division=1.0)
    assert m1["per_concept"]["ghost"]["precision"] == 1.0
    assert m1["per_concept"]["shy"]["recall"] == 0.0  # measured, not undefined
    with pytest.raises(ValueError, match="zero_division"):
        recognition_metrics(y_true, y_pred, zero_division=0.5)


def test_recognition_metrics_input_errors() -> None:
    with pytest.raises(ValueError, match="same concepts.*only in y_pred: \\['bo'\\]"):
        recognition_metrics({"anna": [T]}, {"anna": [T], "bo": [F]})
    with pytest.raises(ValueError, match="'anna': 2 labels but 1 predictions"):
        recognition_metrics({"anna": [T, F]}, {"anna": [T]})
    empty = recognition_metrics({}, {})
    assert empty["num_concepts"] == 0 and math.isnan(empty["f1"])


def test_labels_from_sets_evaluates_every_query_for_every_concept() -> None:
    sets = [{"anna"}, {"bo"}, set(), {"anna", "bo"}]
    assert labels_from_sets(sets, ["anna", "bo", "cat"]) == {
        "anna": [T, F, F, T], "bo": [F, T, F, T], "cat": [F, F, F, F]}


MULTI_TRUE = [{"a", "b"}, {"a", "b"}, {"a", "b"}, set(), set(), {"b", "c"}]
MULTI_PRED = [{"a", "b"}, {"a"}, {"a", "b", "c"}, set(), {"a"}, {"c", "b"}]


def test_multi_concept_rule_all_present_concepts_must_be_found() -> None:
    assert [multi_concept_correct(t, p) for t, p in zip(MULTI_TRUE, MULTI_PRED)] == [
        T,  # both found
        F,  # one of two found
        T,  # both found; an extra one does not undo that
        T,  # nothing present, nothing reported
        F,  # nothing present but something reported
        T,
    ]
    assert multi_concept_accuracy(MULTI_TRUE, MULTI_PRED) == pytest.approx(4 / 6)
    assert math.isnan(multi_concept_accuracy([], []))


def test_multi_concept_precision_recall_per_pair() -> None:
    m = multi_concept_metrics(MULTI_TRUE, MULTI_PRED)
    # pair a+b: truth T T T F F F, found-all F? -> T F T F F F: TP 2, FP 0, FN 1
    # pair b+c: truth F F F F F T, found-all -> F F T F F T: TP 1, FP 1, FN 0
    assert list(m["per_concept"]) == ["a + b", "b + c"]
    ab, bc = m["per_concept"]["a + b"], m["per_concept"]["b + c"]
    assert (ab["tp"], ab["fp"], ab["fn"]) == (2, 0, 1)
    assert (bc["tp"], bc["fp"], bc["fn"]) == (1, 1, 0)
    assert m["precision"] == pytest.approx(0.75)
    assert m["recall"] == pytest.approx(5 / 6)
    assert m["f1"] == pytest.approx(2 * 0.75 * (5 / 6) / (0.75 + 5 / 6))
    assert m["accuracy"] == pytest.approx(4 / 6)
    # explicit groups
    only = multi_concept_metrics(MULTI_TRUE, MULTI_PRED, groups=[("b", "a")])
    assert list(only["per_concept"]) == ["a + b"] and only["recall"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="at least one concept"):
        multi_concept_metrics(MULTI_TRUE, MULTI_PRED, groups=[()])
    with pytest.raises(ValueError, match="6 ground-truth entries but 5"):
        multi_concept_metrics(MULTI_TRUE, MULTI_PRED[:5])


def test_vqa_accuracy_by_letter_match() -> None:
    assert vqa_accuracy(["A", "(b)", None, "b.", " B "], ["A", "B", "A", "A", "b"]) == 0.6
    assert math.isnan(vqa_accuracy([], []))
    with pytest.raises(ValueError, match="2 ground-truth entries but 1"):
        vqa_accuracy(["A"], ["A", "B"])


def test_caption_recall_averaged_over_concepts() -> None:
    mentions = [["Anna"], ["Bo"], [], ["anna", "Bo"], ["Anna", "Bo"]]
    gt = ["Anna", "Anna", "Bo", {"Anna", "Bo"}, "Anna"]
    per = caption_recall_by_concept(mentions, gt)
    assert per == {"Anna": pytest.approx(2 / 3), "Bo": 0.0, "Anna + Bo": 1.0}
    assert caption_recall(mentions, gt) == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert caption_recall(mentions, gt, average="query") == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="average"):
        caption_recall(mentions, gt, average="macro")
    assert math.isnan(caption_recall([], []))


def test_pr_curve_exact_on_a_small_example() -> None:
    scores = [0.9, 0.8, 0.8, 0.4, math.nan, 0.1]
    labels = [T, F, T, F, T, T]
    curve = pr_curve(scores, labels)
    precision, recall, thresholds = curve  # unpacks as a triple
    np.testing.assert_allclose(thresholds, [0.9, 0.8, 0.4, 0.1])
    np.testing.assert_allclose(precision, [1.0, 2 / 3, 0.5, 0.6])
    np.testing.assert_allclose(recall, [1 / 3, 2 / 3, 2 / 3, 1.0])
    assert (curve.num_positive, curve.num_negative) == (3, 2)
    assert (curve.num_nan, curve.num_nan_positive) == (1, 1)
    assert average_precision(scores, labels) == pytest.approx(1 / 3 + (1 / 3) * (2 / 3) + 0.2)
    json.dumps(curve.to_dict())


def test_pr_curve_edge_cases() -> None:
    perfect = pr_curve([0.2, 0.9, 0.7], [F, T, T])
    np.testing.assert_allclose(perfect.precision, [1.0, 1.0, 2 / 3])
    assert average_precision([0.2, 0.9, 0.7], [F, T, T]) == 1.0
    no_pos = pr_curve([0.3, 0.6], [F, F])
    np.testing.assert_allclose(no_pos.recall, [0.0, 0.0])
    assert math.isnan(average_precision([0.3, 0.6], [F, F]))
    empty = pr_curve([math.nan], [T])
    assert empty.thresholds.size == 0 and empty.num_nan == 1
    infinite = pr_curve([math.inf, -math.inf], [T, F])
    np.testing.assert_allclose(infinite.thresholds, [math.inf, -math.inf])
    with pytest.raises(ValueError, match="2 ground-truth entries but 1"):
        pr_curve([0.1], [T, F])


def test_latency_percentiles() -> None:
    stats = latency_percentiles([50.0, 10.0, 30.0, 20.0, 40.0])
    assert stats == {"p50": 30.0, "p90": pytest.approx(46.0), "p99": pytest.approx(49.6),
                     "mean": 30.0, "min": 10.0, "max": 50.0, "n": 5}
    empty = latency_percentiles([])
    assert empty["n"] == 0 and math.isnan(empty["p50"])
    with pytest.raises(ValueError, match="#1 is nan"):
        latency_percentiles([1.0, math.nan])
    with pytest.raises(ValueError, match="#0 is -1"):
        latency_percentiles([-1.0])


def test_f1_from() -> None:
    assert f1_from(0.0, 0.0) == 0.0
    assert f1_from(1.0, 0.5) == pytest.approx(2 / 3)

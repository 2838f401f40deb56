"""Yes/no score math on hand-built logits, decisions and thresholds."""

from __future__ import annotations

import math

import pytest
import torch

from ego_ros.core.scoring import Thresholds, answer_variants, decide, yes_no_score


def test_two_tokens_is_sigmoid_of_logit_difference() -> None:
    logits = torch.zeros(10)
    logits[3], logits[7] = 2.0, 0.5  # yes=3, no=7; other tokens must not matter
    logits[0] = 40.0
    expected = 1.0 / (1.0 + math.exp(-(2.0 - 0.5)))
    score = yes_no_score(logits, [3], [7])
    assert score.shape == ()
    assert score.dtype == torch.float32
    assert score.item() == pytest.approx(expected, rel=1e-6)


def test_variant_ids_sum_probabilities() -> None:
    # yes variants 1, 2 (each e^1), no variants 4, 5, 6 (each e^0): P(yes)/(P(yes)+P(no))
    logits = torch.tensor([9.0, 1.0, 1.0, -3.0, 0.0, 0.0, 0.0])
    expected = 2 * math.e / (2 * math.e + 3)
    assert yes_no_score(logits, [1, 2], [4, 5, 6]).item() == pytest.approx(expected, rel=1e-6)
    # duplicates count once
    assert yes_no_score(logits, [1, 2, 2, 1], [4, 5, 6, 6]).item() == pytest.approx(
        expected, rel=1e-6)


def test_equals_softmax_reference_on_random_batch() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 50, generator=gen, dtype=torch.float64) * 4
    yes, no = [3, 10, 11], [20, 41]
    p = torch.softmax(logits, dim=-1)
    expected = p[:, yes].sum(-1) / (p[:, yes].sum(-1) + p[:, no].sum(-1))
    got = yes_no_score(logits, yes, no)
    assert got.shape == (5,)
    assert torch.allclose(got.double(), expected, atol=1e-6)


def test_extreme_logits_are_nan_free() -> None:
    inf = math.inf
    logits = torch.tensor([
        [1e30, -1e30, 0.0],  # overwhelming yes
        [-1e30, 1e30, 0.0],  # overwhelming no
        [-inf, -inf, 5.0],  # both masked out: no evidence -> 0.5
        [inf, 3.0, 0.0],  # +inf yes
        [inf, inf, 0.0],  # both +inf -> 0.5
        [88.0, 90.0, -1e4],  # near exp overflow in float32
        [-1e4, -1e4 + 1.0, 0.0],  # both tiny probabilities: still the right ratio
    ])
    got = yes_no_score(logits, [0], [1])
    assert not torch.isnan(got).any()
    assert got[0].item() == 1.0
    assert got[1].item() == 0.0
    assert got[2].item() == 0.5
    assert got[3].item() == 1.0
    assert got[4].item() == 0.5
    assert got[5].item() == pytest.approx(1 / (1 + math.exp(2.0)), rel=1e-5)
    assert got[6].item() == pytest.approx(1 / (1 + math.e), rel=1e-5)


def test_half_precision_logits_are_scored_in_float32() -> None:
    logits = torch.tensor([60000.0, 59990.0, 0.0], dtype=torch.float16)
    score = yes_no_score(logits, [0], [1])
    assert score.dtype == torch.float32
    # float16 cannot hold 59990 exactly: compare with the rounded values it does hold
    diff = float(logits[0]) - float(logits[1])
    assert score.item() == pytest.approx(1 / (1 + math.exp(-diff)), rel=1e-5)
    bf = torch.tensor([[3.0, 1.0]], dtype=torch.bfloat16)
    assert yes_no_score(bf, [0], [1]).item() == pytest.approx(1 / (1 + math.exp(-2)), rel=1e-5)


def test_nan_logit_among_answer_ids_gives_nan_score_only_for_that_row() -> None:
    logits = torch.tensor([[math.nan, 0.0, 1.0], [1.0, 0.0, math.nan]])
    got = yes_no_score(logits, [0], [1])
    assert math.isnan(got[0].item())
    assert got[1].item() == pytest.approx(1 / (1 + math.exp(-1)), rel=1e-6)  # NaN elsewhere: ok


@pytest.mark.parametrize(
    ("shape", "yes", "no", "match"),
    [
        ((2, 3, 4), [0], [1], "shape"),
        ((5,), [], [1], "yes_ids"),
        ((5,), [0], [], "no_ids"),
        ((5,), [0, 5], [1], "outside the vocabulary"),
        ((5,), [0, 1], [1, 2], "share token ids"),
    ],
)
def test_invalid_arguments_are_clear_errors(shape, yes, no, match) -> None:
    with pytest.raises(ValueError, match=match):
        yes_no_score(torch.zeros(shape), yes, no)


def test_answer_variants() -> None:
    assert answer_variants("yes") == ("yes", "Yes", "YES", " yes", " Yes", " YES")
    assert answer_variants("No") == ("no", "No", "NO", " no", " No", " NO")


def test_decide() -> None:
    assert decide(0.5, 0.5) is True  # inclusive
    assert decide(0.49, 0.5) is False
    assert decide(0.0, 0.0) is True
    assert decide(math.nan, 0.0) is False  # no score is never "present"
    assert decide(torch.tensor(0.9), 0.8) is True
    with pytest.raises(ValueError, match="threshold"):
        decide(0.5, 1.5)


def test_thresholds_defaults_and_overrides() -> None:
    t = Thresholds(default=0.6, per_concept={"anna": 0.8})
    assert t["anna"] == 0.8
    assert t["bo"] == 0.6
    assert t.decide("anna", 0.7) is False
    assert t.decide("bo", 0.7) is True
    t2 = t.with_override("bo", 0.9).without_override("anna")
    assert t2["bo"] == 0.9 and t2["anna"] == 0.6
    assert t["bo"] == 0.6  # the original is unchanged
    assert Thresholds.from_dict(t.to_dict()) == t
    assert hash(Thresholds.from_dict(t.to_dict())) == hash(t)
    assert Thresholds()["anything"] == 0.5


def test_thresholds_are_frozen() -> None:
    t = Thresholds(per_concept={"anna": 0.8})
    with pytest.raises(AttributeError):
        t.default = 0.1  # type: ignore[misc]
    with pytest.raises(TypeError):
        t.per_concept["anna"] = 0.1  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"default": 1.2}, r"Thresholds\.default.*1\.2"),
        ({"default": -0.1}, r"Thresholds\.default"),
        ({"default": math.nan}, r"Thresholds\.default"),
        ({"per_concept": {"anna": 2.0}}, r"per_concept\['anna'\].*2\.0"),
        ({"per_concept": {"": 0.5}}, "non-empty"),
    ],
)
def test_thresholds_validation_names_field_and_value(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        Thresholds(**kwargs)


def test_thresholds_reject_non_numbers() -> None:
    with pytest.raises(TypeError, match="anna"):
        Thresholds(per_concept={"anna": "high"})
    with pytest.raises(ValueError, match="unknown fields"):
        Thresholds.from_dict({"default": 0.5, "typo": 1})

"""Selection math of paper §3.2-3.3 on hand-built attention tensors."""

from __future__ import annotations

import pytest
import torch

from ego_ros.core.selection import (
    DEFAULT_AREA_PERCENT,
    SelectionConfig,
    ViewSelection,
    concat_views,
    importance_from_attention,
    memory_size,
    select_tokens,
)

# Eq. 3 target: importance of the 6 visual tokens (sequence positions 2..7 of T=10).
EXPECTED_I = torch.tensor([0.10, 0.30, 0.02, 0.25, 0.05, 0.25])
VISUAL_POS = torch.arange(2, 8)
L, H, N_W, T = 2, 3, 4, 10


def _hand_built_rows() -> torch.Tensor:
    """[L, H, N_w, T] attention whose mean over (l, h, n) on visual positions is EXPECTED_I.

    Every (l, h, n) row differs: a zero-sum perturbation over (l, h, n) is added at visual
    positions, and the non-visual positions carry large values that must be ignored.
    """
    rows = torch.zeros(L, H, N_W, T)
    rows[..., VISUAL_POS] = EXPECTED_I
    signs = torch.tensor([1.0, -1.0]).repeat(L * H * N_W // 2).reshape(L, H, N_W, 1)
    ramp = torch.linspace(0.0, 0.01, len(VISUAL_POS))
    rows[..., VISUAL_POS] += signs * ramp  # zero mean over (l, h, n): pairs cancel
    rows[..., :2] = 0.9  # text before the image: never a visual token
    rows[..., 8:] = 0.7  # keyword tokens themselves
    return rows


def test_importance_matches_eq3_exactly() -> None:
    rows = _hand_built_rows()
    # Reference straight from Eq. 3 with explicit loops over layers, heads and keywords.
    ref = torch.zeros(len(VISUAL_POS))
    for layer in range(L):
        for head in range(H):
            for n in range(N_W):
                ref += rows[layer, head, n, VISUAL_POS] / (L * H * N_W)
    importance = importance_from_attention(list(rows), VISUAL_POS)
    assert importance.shape == (6,) and importance.dtype == torch.float32
    torch.testing.assert_close(importance, ref)
    torch.testing.assert_close(importance, EXPECTED_I)


def test_importance_input_forms_agree() -> None:
    rows = _hand_built_rows()
    as_list = importance_from_attention(list(rows), VISUAL_POS)
    stacked = importance_from_attention(rows, VISUAL_POS)
    mask = torch.zeros(T, dtype=torch.bool)
    mask[VISUAL_POS] = True
    by_mask = importance_from_attention(rows, mask)
    assert torch.equal(as_list, stacked) and torch.equal(as_list, by_mask)
    one_layer = importance_from_attention(rows[0], VISUAL_POS)
    torch.testing.assert_close(one_layer, rows[0][..., VISUAL_POS].mean(dim=(0, 1)))


def test_importance_layers_with_different_head_counts_average_per_layer() -> None:
    a = torch.zeros(1, 1, 4)
    a[..., 1] = 1.0  # layer 0, one head: all attention on position 1
    b = torch.zeros(4, 1, 4)
    b[..., 2] = 1.0  # layer 1, four heads: all attention on position 2
    importance = importance_from_attention([a, b], torch.tensor([1, 2]))
    torch.testing.assert_close(importance, torch.tensor([0.5, 0.5]))  # mean of layer means


def test_importance_accumulates_in_float32() -> None:
    rows = _hand_built_rows()
    low = importance_from_attention(rows.to(torch.bfloat16), VISUAL_POS)
    assert low.dtype == torch.float32
    ref = importance_from_attention(rows.to(torch.bfloat16).float(), VISUAL_POS)
    assert torch.equal(low, ref)


@pytest.mark.parametrize(
    ("rows", "index", "message"),
    [
        (torch.zeros(2, 0, 5), torch.tensor([0]), "N_w == 0"),
        (torch.zeros(2, 1, 5), torch.tensor([5]), r"\[0, 5\)"),
        (torch.zeros(2, 1, 5), torch.tensor([], dtype=torch.long), "no visual tokens"),
        (torch.zeros(2, 1, 5), torch.tensor([0.0]), "integer"),
        (torch.zeros(5), torch.tensor([0]), "shape"),
        ([torch.zeros(2, 1, 5), torch.zeros(2, 2, 5)], torch.tensor([0]), "keyword count"),
        ([], torch.tensor([0]), "no layers"),
    ],
)
def test_importance_rejects_bad_inputs(rows, index, message) -> None:
    with pytest.raises(ValueError, match=message):
        importance_from_attention(rows, index)


def test_select_exact_indices_from_hand_built_attention() -> None:
    importance = importance_from_attention(_hand_built_rows(), VISUAL_POS)
    # EXPECTED_I = [0.10, 0.30, 0.02, 0.25, 0.05, 0.25]
    assert select_tokens(importance, 1).tolist() == [1]
    assert select_tokens(importance, 3).tolist() == [1, 3, 5]
    assert select_tokens(importance, 4).tolist() == [0, 1, 3, 5]
    assert select_tokens(importance, 6).tolist() == [0, 1, 2, 3, 4, 5]


def test_select_restores_original_order() -> None:
    importance = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.85])
    # By importance the top 3 are 1, 4, 3; the memory keeps them in image order.
    picked = select_tokens(importance, 3)
    assert picked.tolist() == [1, 3, 4]
    assert picked.dtype == torch.int64


def test_select_ties_prefer_lower_index() -> None:
    importance = torch.tensor([0.5, 0.7, 0.5, 0.7, 0.5])
    assert select_tokens(importance, 1).tolist() == [1]
    assert select_tokens(importance, 3).tolist() == [0, 1, 3]
    assert select_tokens(importance.flip(0), 3).tolist() == [0, 1, 3]


@pytest.mark.parametrize("k", [0, 6, -1, True, 2.0])
def test_select_rejects_bad_k(k) -> None:
    with pytest.raises(ValueError, match="k must be"):
        select_tokens(torch.rand(5), k)


def test_select_rejects_nan_and_bad_shape() -> None:
    with pytest.raises(ValueError, match="NaN"):
        select_tokens(torch.tensor([0.1, float("nan")]), 1)
    with pytest.raises(ValueError, match="1-D"):
        select_tokens(torch.rand(2, 2), 1)


@pytest.mark.parametrize(
    ("alpha", "num_visual", "ratio", "min_tokens", "expected"),
    [
        (0.0, 100, 0.2, 4, 4),  # no area: the minimum
        (-5.0, 100, 0.2, 4, 4),  # negative clamps to 0
        (2.0, 100, 0.2, 4, 4),  # 2 patches < minimum
        (7.5, 100, 0.2, 1, 7),  # floor of the area count
        (15.0, 100, 0.2, 1, 15),  # area below the cap
        (100.0, 100, 0.2, 1, 20),  # full image: the cap K
        (250.0, 100, 0.2, 1, 20),  # clamps to 100
        (50.0, 35, 0.2, 1, 7),  # 0.2 * 35 = 7.000000000000001 -> 7
        (29.0, 100, 1.0, 1, 29),  # 29 * 100 / 100 = 28.999999999999996 -> 29
        (100.0, 3, 0.2, 4, 3),  # minimum larger than the image: all tokens
        (100.0, 1, 0.2, 1, 1),
    ],
)
def test_memory_size_clamps(alpha, num_visual, ratio, min_tokens, expected) -> None:
    assert memory_size(alpha, num_visual, ratio, min_tokens) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((float("nan"), 100), "alpha_percent"),
        ((float("inf"), 100), "alpha_percent"),
        (("30", 100), "alpha_percent"),
        ((30.0, 0), "num_visual"),
        ((30.0, True), "num_visual"),
        ((30.0, 10.0), "num_visual"),
        ((30.0, 100, 0.0), "ratio"),
        ((30.0, 100, 1.5), "ratio"),
        ((30.0, 100, 0.2, 0), "min_tokens"),
    ],
)
def test_memory_size_rejects_bad_inputs(args, message) -> None:
    with pytest.raises(ValueError, match=message):
        memory_size(*args)


def test_selection_config_defaults_and_fallback_area() -> None:
    cfg = SelectionConfig()
    assert (cfg.ratio, cfg.min_tokens, cfg.layers) == (0.2, 4, None)
    assert cfg.default_area_percent == DEFAULT_AREA_PERCENT
    # An unparsable area falls back to the paper's fixed-size memory K = ratio * N_r.
    assert cfg.memory_size(None, 400) == (80, True)
    assert cfg.memory_size(5.0, 400) == (20, False)
    assert SelectionConfig(layers=[3, 1]).layers == (3, 1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ratio": 0.0}, "ratio"),
        ({"ratio": 2}, "ratio"),
        ({"min_tokens": 0}, "min_tokens"),
        ({"min_tokens": 2.5}, "min_tokens"),
        ({"default_area_percent": 101.0}, "default_area_percent"),
        ({"layers": []}, "layers"),
        ({"layers": [1, 1]}, "layers"),
        ({"layers": [-1]}, "layers"),
    ],
)
def test_selection_config_errors_name_field_and_value(kwargs, field) -> None:
    value = next(iter(kwargs.values()))
    with pytest.raises(ValueError, match=f"SelectionConfig.{field}") as info:
        SelectionConfig(**kwargs)
    assert repr(value) in str(info.value)


def _view(tokens: torch.Tensor, indices: list[int], grid=(4, 4), keywords=("red",)):
    return ViewSelection(
        tokens=tokens,
        indices=torch.tensor(indices),
        grid=grid,
        keywords=list(keywords),
        area_percent=12.5,
        area_defaulted=False,
    )


def test_concat_views_keeps_rows_and_view_ids() -> None:
    a = torch.arange(3 * 5, dtype=torch.float32).reshape(3, 5)
    b = -torch.arange(2 * 5, dtype=torch.float32).reshape(2, 5) - 1
    c = torch.full((1, 5), 7.0)
    tokens, view_id = concat_views(
        [_view(a, [0, 4, 9]), _view(b, [2, 3], grid=(2, 3)), _view(c, [15])]
    )
    assert tokens.shape == (6, 5)
    assert torch.equal(tokens, torch.cat([a, b, c]))
    assert view_id.tolist() == [0, 0, 0, 1, 1, 2]
    assert view_id.dtype == torch.int64
    assert torch.equal(tokens[view_id == 1], b)


def test_concat_views_rejects_mismatch() -> None:
    with pytest.raises(ValueError, match="no views"):
        concat_views([])
    with pytest.raises(ValueError, match="view 1"):
        concat_views([_view(torch.zeros(1, 5), [0]), _view(torch.zeros(1, 4), [0])])
    with pytest.raises(ValueError, match="view 1"):
        concat_views(
            [_view(torch.zeros(1, 5), [0]), _view(torch.zeros(1, 5, dtype=torch.float16), [0])]
        )


@pytest.mark.parametrize(
    ("tokens", "indices", "grid", "message"),
    [
        (torch.zeros(2, 4), [3, 1], (2, 2), "ascending"),
        (torch.zeros(2, 4), [1, 1], (2, 2), "ascending"),
        (torch.zeros(1, 4), [4], (2, 2), r"\[0, 4\)"),
        (torch.zeros(2, 4), [0], (2, 2), "1 indices for 2 tokens"),
        (torch.zeros(4), [0], (2, 2), "K_c, D"),
        (torch.zeros(1, 4), [0], (0, 2), "grid"),
        (torch.zeros(1, 4), [0], (2,), "grid"),
    ],
)
def test_view_selection_validates(tokens, indices, grid, message) -> None:
    with pytest.raises(ValueError, match=message):
        _view(tokens, indices, grid=grid)

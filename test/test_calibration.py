"""Layer calibration (paper §3.4): mask-to-token mapping, overlaps and ranking on the tiny
models, calibration files, layer resolution, and the calibration sets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ego_ros.core.calibration import (
    CalibrationError,
    CalibrationResult,
    _capture_rows,
    calibrate,
    default_calibration_path,
    default_num_layers_keep,
    layer_overlaps,
    load_calibration,
    load_calibration_folder,
    mask_to_token_mask,
    resolve_layers,
    save_calibration,
    synthetic_calibration_set,
)
from ego_ros.core.introduce import default_layers
from ego_ros.core.memory import ModelFingerprint
from ego_ros.core.selection import importance_from_attention

FP = ModelFingerprint("qwen2_5_vl", 64, "ab" * 32)
OTHER_FP = ModelFingerprint("qwen2_5_vl", 64, "cd" * 32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------ masks -> tokens


def test_mask_to_token_mask_half_rule_on_hand_made_masks():
    mask = np.zeros((4, 6), dtype=bool)  # grid (2, 3): cells of 2x2 pixels
    mask[0:2, 0:2] = True  # cell 0 full
    mask[0, 2:4] = True  # cell 1 exactly half -> object
    mask[2, 4] = True  # cell 5 one quarter -> background
    got = mask_to_token_mask(mask, (2, 3))
    assert got.dtype == torch.bool
    assert got.tolist() == [True, True, False, False, False, False]


def test_mask_to_token_mask_uneven_cells_and_nonzero_values():
    # 5 rows on 2 token rows: edges at round(0, 2.5, 5) = 0, 2, 5 (cells of 2 and 3 rows).
    mask = np.zeros((5, 2), dtype=np.uint8)
    mask[2, 0] = 255  # 1 of 3 pixels in the lower-left cell: background
    mask[3:5, 1] = 7  # 2 of 3 pixels in the lower-right cell: object (nonzero counts)
    assert mask_to_token_mask(mask, (2, 2)).tolist() == [False, False, False, True]
    assert mask_to_token_mask(np.ones((5, 2)), (2, 2)).all()


def test_mask_to_token_mask_rejects_grids_that_do_not_fit():
    with pytest.raises(ValueError, match="does not fit"):
        mask_to_token_mask(np.ones((4, 4), dtype=bool), (5, 2))
    with pytest.raises(ValueError, match="2-D"):
        mask_to_token_mask(np.ones((4, 4, 3), dtype=bool), (2, 2))


# ------------------------------------------------------------------ calibration sets


def test_synthetic_set_is_deterministic_and_its_masks_are_exact():
    a = synthetic_calibration_set(4, seed=3, size=(96, 128))
    b = synthetic_calibration_set(4, seed=3, size=(96, 128))
    longer = synthetic_calibration_set(5, seed=3, size=(96, 128))
    other = synthetic_calibration_set(4, seed=4, size=(96, 128))
    for (img, mask), (img2, mask2), (img3, mask3) in zip(a, b, longer):
        assert img.shape == (96, 128, 3) and img.dtype == np.uint8
        assert mask.shape == (96, 128) and mask.dtype == bool
        assert np.array_equal(img, img2) and np.array_equal(mask, mask2)
        assert np.array_equal(img, img3) and np.array_equal(mask, mask3)
        # Exactness: the object was drawn with a bright channel, the background never is.
        assert np.array_equal(mask, img.max(axis=2) > 179)
        assert 0.04 < mask.mean() < 0.5
    assert not any(np.array_equal(x[0], y[0]) for x, y in zip(a, other))
    assert len({m.tobytes() for _, m in a}) == 4  # different objects, not one repeated
    with pytest.raises(ValueError, match="positive integer"):
        synthetic_calibration_set(0)


def _write_png(path, array) -> None:
    import cv2

    data = array[..., ::-1] if array.ndim == 3 else array
    assert cv2.imwrite(str(path), np.ascontiguousarray(data))


def test_load_calibration_folder_reads_both_layouts(tmp_path):
    samples = synthetic_calibration_set(3, seed=1, size=(64, 80))
    (tmp_path / "masks").mkdir()
    _write_png(tmp_path / "a.png", samples[0][0])
    _write_png(tmp_path / "masks" / "a.png", samples[0][1].astype(np.uint8) * 255)
    _write_png(tmp_path / "b.png", samples[1][0])
    _write_png(tmp_path / "b_mask.png", samples[1][1].astype(np.uint8))  # 0/1 mask
    _write_png(tmp_path / "c.png", samples[2][0])
    colour_mask = np.zeros((64, 80, 3), np.uint8)
    colour_mask[samples[2][1], 1] = 200  # nonzero in one channel only
    _write_png(tmp_path / "masks" / "c.png", colour_mask)
    loaded = load_calibration_folder(tmp_path)
    assert len(loaded) == 3
    for (img, mask), (ref_img, ref_mask) in zip(loaded, samples):
        assert np.array_equal(img, ref_img)  # PNG is lossless, RGB order kept
        assert np.array_equal(mask, ref_mask)


def test_load_calibration_folder_errors_name_the_files(tmp_path):
    with pytest.raises(CalibrationError, match="no images"):
        load_calibration_folder(tmp_path)
    with pytest.raises(CalibrationError, match="does not exist"):
        load_calibration_folder(tmp_path / "nope")
    img, mask = synthetic_calibration_set(1, size=(64, 64))[0]
    _write_png(tmp_path / "x.png", img)
    with pytest.raises(CalibrationError, match=r"x\.png: no mask.*x_mask\.png"):
        load_calibration_folder(tmp_path)
    _write_png(tmp_path / "x_mask.png", np.ones((32, 64), np.uint8))
    with pytest.raises(CalibrationError, match="64x32 but its image"):
        load_calibration_folder(tmp_path)
    _write_png(tmp_path / "x_mask.png", np.zeros((64, 64), np.uint8))
    with pytest.raises(CalibrationError, match="empty"):
        load_calibration_folder(tmp_path)
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(CalibrationError, match="cannot read"):
        load_calibration_folder(tmp_path)


# ------------------------------------------------------------------ files and resolution


def _result(fp=FP, layers=(1, 2), n=4) -> CalibrationResult:
    scores = tuple(0.1 * (i + 1) for i in range(n))
    ranking = tuple(sorted(range(n), key=lambda i: -scores[i]))
    return CalibrationResult(layers, ranking, scores, 5, fp, 0.2, 1234.5, "synthetic:5")


def test_calibration_file_round_trip_and_refusals(tmp_path):
    path = save_calibration(_result(), tmp_path / "sub" / "cal.json")
    data = json.loads(path.read_text())
    assert {"version", "fingerprint", "layers", "scores", "num_samples", "created",
            "source"} <= set(data)
    assert load_calibration(path, FP) == _result()
    assert [p.name for p in path.parent.iterdir()] == ["cal.json"]  # no temporary left
    with pytest.raises(CalibrationError, match="calibrated for model .* 'ego-ros calibrate'"):
        load_calibration(path, OTHER_FP)
    data["version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match="newer"):
        load_calibration(path, FP)
    path.write_text("{not json")
    with pytest.raises(CalibrationError, match="unreadable"):
        load_calibration(path, FP)
    with pytest.raises(CalibrationError, match="does not exist"):
        load_calibration(tmp_path / "missing.json", FP)


def test_default_calibration_path_is_keyed_by_fingerprint(tmp_path, monkeypatch):
    monkeypatch.setenv("EGO_ROS_CACHE", str(tmp_path))
    path = default_calibration_path(FP)
    assert path == tmp_path / "calibration" / f"qwen2_5_vl-{'ab' * 8}.json"
    assert default_calibration_path(OTHER_FP) != path
    assert default_calibration_path(FP, cache_dir=tmp_path / "x").parent == \
        tmp_path / "x" / "calibration"


def test_resolve_layers_fallbacks(backend, tmp_path, monkeypatch):
    monkeypatch.setenv("EGO_ROS_CACHE", str(tmp_path))
    n = backend.num_layers
    assert resolve_layers(backend) == (default_layers(n), "default (mid-to-late)")
    assert resolve_layers(backend, explicit=[3, 0]) == ((0, 3), "explicit")
    with pytest.raises(CalibrationError, match="within"):
        resolve_layers(backend, explicit=[n])
    with pytest.raises(CalibrationError, match="does not exist"):
        resolve_layers(backend, calibration_path=tmp_path / "none.json")
    # The model's default file is picked up once it exists.
    path = save_calibration(_result(backend.fingerprint, (0, 1), n),
                            default_calibration_path(backend.fingerprint))
    assert resolve_layers(backend) == ((0, 1), f"calibration:{path}")
    assert resolve_layers(backend, explicit=[2])[1] == "explicit"  # explicit wins
    # Another model's file given explicitly is refused, as is one with impossible layers.
    other = save_calibration(_result(OTHER_FP, (0,), n), tmp_path / "other.json")
    with pytest.raises(CalibrationError, match="calibrated for model"):
        resolve_layers(backend, calibration_path=other)
    wide = save_calibration(_result(backend.fingerprint, (0, n), n + 1), tmp_path / "w.json")
    with pytest.raises(CalibrationError, match="within"):
        resolve_layers(backend, calibration_path=wide)


def test_default_num_layers_keep():
    assert [default_num_layers_keep(n) for n in (1, 4, 28, 36, 80)] == [1, 1, 7, 8, 8]


# ------------------------------------------------------------------ on the tiny models


def test_calibrate_scores_every_layer_and_keeps_the_best(backend):
    samples = synthetic_calibration_set(3, seed=0)
    done: list[int] = []
    result = calibrate(backend, samples, num_layers_keep=2, progress=done.append,
                       source="synthetic:3")
    assert done == [1, 2, 3]
    assert result.num_samples == 3 and result.fingerprint == backend.fingerprint
    scores = torch.tensor(result.scores)
    assert scores.shape == (backend.num_layers,)
    assert bool(((scores >= 0) & (scores <= 1)).all())
    assert sorted(result.ranking) == list(range(backend.num_layers))
    assert all(scores[a] >= scores[b] for a, b in zip(result.ranking, result.ranking[1:]))
    assert result.layers == tuple(sorted(result.ranking[:2]))
    assert min(scores[list(result.layers)]) >= max(
        scores[[x for x in range(backend.num_layers) if x not in result.layers]])
    # The mean of the per-sample overlaps, each a multiple of 1/K.
    per_sample = [layer_overlaps(backend, img, mask) for img, mask in samples]
    k = max(1, math.floor(0.2 * 64))  # 224x224 is an 8x8 token grid in both tiny families
    for overlaps in per_sample:
        assert torch.allclose(overlaps * k, (overlaps * k).round(), atol=1e-5)
    torch.testing.assert_close(torch.stack(per_sample).mean(0), scores)


def test_layer_overlap_is_one_when_the_mask_is_a_layers_top_k(tiny_backends):
    """Paint the mask over exactly layer 1's top-K cells of a non-square grid: that layer's
    overlap must be 1, whatever the attention looks like."""
    backend = tiny_backends["qwen2_5_vl"]
    image = synthetic_calibration_set(1, seed=5, size=(224, 336))[0][0]
    visual = backend.encode_images([image])[0]
    _, rows, cols = visual.grid
    assert rows != cols
    attn = _capture_rows(backend, visual, 16)[1]
    importance = importance_from_attention([attn], torch.arange(rows * cols))
    k = max(1, math.floor(0.2 * rows * cols))
    top = torch.sort(importance, descending=True, stable=True).indices[:k]
    ys = np.round(np.arange(rows + 1) * 224 / rows).astype(int)
    xs = np.round(np.arange(cols + 1) * 336 / cols).astype(int)
    mask = np.zeros((224, 336), dtype=bool)
    for t in top.tolist():
        r, c = divmod(t, cols)
        mask[ys[r]:ys[r + 1], xs[c]:xs[c + 1]] = True
    assert torch.equal(mask_to_token_mask(mask, (rows, cols)).nonzero()[:, 0],
                       torch.sort(top).values)
    overlaps = layer_overlaps(backend, image, mask)
    assert overlaps[1].item() == 1.0


def test_uninformative_masks_are_skipped(backend):
    img, mask = synthetic_calibration_set(1, seed=2)[0]
    empty, full = np.zeros_like(mask), np.ones_like(mask)
    assert layer_overlaps(backend, img, empty).tolist() == [0.0] * backend.num_layers
    assert layer_overlaps(backend, img, full).tolist() == [1.0] * backend.num_layers
    result = calibrate(backend, [(img, empty), (img, mask)], num_layers_keep=1)
    assert result.num_samples == 1
    with pytest.raises(CalibrationError, match="no usable calibration sample"):
        calibrate(backend, [(img, empty), (img, full)])
    with pytest.raises(ValueError, match="num_layers_keep"):
        calibrate(backend, [(img, mask)], num_layers_keep=backend.num_layers + 1)
    with pytest.raises(ValueError, match="differs from the image"):
        layer_overlaps(backend, img, mask[:10])


def test_empty_answer_falls_back_to_the_last_prompt_token(tiny_backends):
    """With no generated token (budget 0 here; an immediate end-of-answer on a real model) the
    question's last position ranks the tokens: one softmax row per head over the image."""
    backend = tiny_backends["internvl"]
    img, mask = synthetic_calibration_set(1, seed=6)[0]
    visual = backend.encode_images([img])[0]
    rows = _capture_rows(backend, visual, 0)
    assert sorted(rows) == list(range(backend.num_layers))
    for attn in rows.values():
        assert attn.shape == (attn.shape[0], 1, visual.num_tokens)
        assert bool((attn >= 0).all()) and float(attn.sum(-1).max()) <= 1.0 + 1e-5
        assert float(attn.sum()) > 0
    overlaps = layer_overlaps(backend, img, mask, max_new_tokens=0)
    assert overlaps.shape == (backend.num_layers,)
    assert bool(((overlaps >= 0) & (overlaps <= 1)).all())

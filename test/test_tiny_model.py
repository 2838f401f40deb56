"""The offline tiny LVLMs load and run like real checkpoints, deterministically.

Each family is built once per module into a temporary cache and loaded through the Auto
classes, as a user's real checkpoint would be.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from ego_ros.backends.tiny import (
    _NAMED_TOKENS,
    _SPECIALS,
    BUILDER_VERSION,
    FAMILIES,
    MARKER_FILE,
    SIZES,
    _build_internvl,
    _build_qwen2_5_vl,
    _train_tokenizer,
    ensure_tiny_model,
    geometry,
    make_tiny_model,
    read_tiny_marker,
)
from ego_ros.cli.make_tiny_model import FAMILY_CHOICES, SIZE_CHOICES

REPO = Path(__file__).resolve().parents[1]
# Placeholder token per family, and the visual tokens a 224x224 / 640x480 image becomes.
IMAGE_TOKEN = {"qwen2_5_vl": "<|image_pad|>", "internvl": "<IMG_CONTEXT>"}
TOKENS_224 = {"qwen2_5_vl": 64, "internvl": 64}
TOKENS_640x480 = {"qwen2_5_vl": 140, "internvl": 64}


@dataclass
class Tiny:
    family: str
    path: Path
    model: Any
    processor: Any


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ego_cache")


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request: pytest.FixtureRequest, cache_root: Path) -> Tiny:
    path = ensure_tiny_model(request.param, seed=0, cache_dir=cache_root)
    model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="eager")
    processor = AutoProcessor.from_pretrained(path)
    return Tiny(request.param, path, model.eval(), processor)


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _image_inputs(tiny: Tiny, image: Image.Image, question: str = "Describe the image.") -> Any:
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    ]
    text = tiny.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tiny.processor(text=[text], images=[image], return_tensors="pt")


def test_folder_is_marked_and_ids_match_tokenizer(tiny: Tiny) -> None:
    marker = read_tiny_marker(tiny.path)
    assert marker is not None
    assert (marker["family"], marker["seed"], marker["builder_version"]) == (
        tiny.family,
        0,
        BUILDER_VERSION,
    )
    assert marker["num_parameters"] == sum(p.numel() for p in tiny.model.parameters())
    tok = tiny.processor.tokenizer
    config = tiny.model.config
    assert config.image_token_id == tok.convert_tokens_to_ids(IMAGE_TOKEN[tiny.family])
    assert config.text_config.vocab_size == len(tok)
    assert config.text_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert config.text_config.pad_token_id == tok.pad_token_id
    assert tiny.model.generation_config.eos_token_id == [
        tok.convert_tokens_to_ids("<|im_end|>"),
        tok.convert_tokens_to_ids("<|endoftext|>"),
    ]
    if tiny.family == "qwen2_5_vl":
        assert config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
        assert config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    else:
        assert tiny.processor.image_seq_length == config.image_seq_length == 64
    assert len(tiny.model.model.language_model.layers) == 4
    assert config.text_config.hidden_size == 64


def test_answer_words_are_single_tokens(tiny: Tiny) -> None:
    tok = tiny.processor.tokenizer
    ids = {w: tok.encode(w, add_special_tokens=False) for w in ("Yes", "No", " yes", " no")}
    assert all(len(v) == 1 for v in ids.values()), ids
    assert len({v[0] for v in ids.values()}) == 4
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", IMAGE_TOKEN[tiny.family]):
        assert len(tok.encode(special, add_special_tokens=False)) == 1


@pytest.mark.parametrize(("width", "height"), [(224, 224), (640, 480)])
def test_image_becomes_one_contiguous_placeholder_block(
    tiny: Tiny, width: int, height: int
) -> None:
    inputs = _image_inputs(tiny, _image(width, height))
    ids = inputs["input_ids"][0]  # [T]
    positions = torch.nonzero(ids == tiny.model.config.image_token_id).flatten()
    expected = (TOKENS_224 if width == 224 else TOKENS_640x480)[tiny.family]
    assert positions.numel() == expected
    assert torch.equal(positions, torch.arange(positions[0], positions[0] + expected))
    tok = tiny.processor.tokenizer
    before, after = ("<|vision_start|>", "<|vision_end|>")
    if tiny.family == "internvl":
        before, after = ("<img>", "</img>")
    assert ids[positions[0] - 1] == tok.convert_tokens_to_ids(before)
    assert ids[positions[-1] + 1] == tok.convert_tokens_to_ids(after)


def test_generate_from_chat_template_with_image(tiny: Tiny) -> None:
    inputs = _image_inputs(tiny, _image(224, 224), "Is Anna in this image? Answer yes or no.")
    prompt_len = inputs["input_ids"].shape[1]
    with torch.no_grad():
        out = tiny.model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        again = tiny.model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (1, prompt_len + 4)
    assert torch.equal(out[:, :prompt_len], inputs["input_ids"])
    assert torch.equal(out, again)  # greedy decoding is reproducible
    new = out[0, prompt_len:]
    assert int(new.min()) >= 0 and int(new.max()) < len(tiny.processor.tokenizer)
    assert isinstance(tiny.processor.batch_decode(out[:, prompt_len:])[0], str)


def test_projected_visual_tokens_fill_the_placeholders(tiny: Tiny) -> None:
    """get_image_features gives exactly the rows the LLM sees at the placeholder positions."""
    inputs = _image_inputs(tiny, _image(640, 480))
    with torch.no_grad():
        if tiny.family == "qwen2_5_vl":
            feats = tiny.model.model.get_image_features(
                inputs["pixel_values"], inputs["image_grid_thw"]
            ).pooler_output[0]  # tuple of [N_i, D] per image -> [N, D]
        else:
            feats = tiny.model.model.get_image_features(
                pixel_values=inputs["pixel_values"]
            ).pooler_output.flatten(0, 1)  # [tiles, N, D] -> [N, D]
    mask = inputs["input_ids"][0] == tiny.model.config.image_token_id  # [T]
    assert feats.shape == (int(mask.sum()), tiny.model.config.text_config.hidden_size)

    seen: dict[str, torch.Tensor] = {}

    def grab(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        seen["embeds"] = kwargs["inputs_embeds"].detach().clone()  # [1, T, D]

    handle = tiny.model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            tiny.model(**inputs)
    finally:
        handle.remove()
    torch.testing.assert_close(seen["embeds"][0, mask], feats)


def test_eager_attention_is_returned_per_layer(tiny: Tiny) -> None:
    inputs = _image_inputs(tiny, _image(224, 224))
    with torch.no_grad():
        out = tiny.model(**inputs, output_attentions=True)
    seq = inputs["input_ids"].shape[1]
    assert len(out.attentions) == 4
    for layer in out.attentions:
        assert layer.shape == (1, 4, seq, seq)  # [B, heads, T, T]
        torch.testing.assert_close(layer.sum(-1), torch.ones(1, 4, seq))
        assert torch.all(layer.triu(diagonal=1) == 0)  # causal


def test_video_of_frames_goes_through_processor_and_generate(tiny: Tiny) -> None:
    frames = [_image(640, 480, seed=i) for i in range(4)]
    content = [{"type": "video"}, {"type": "text", "text": "What is Anna doing?"}]
    text = tiny.processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )
    inputs = tiny.processor(text=[text], videos=[frames], return_tensors="pt")
    ids = inputs["input_ids"][0]
    if tiny.family == "qwen2_5_vl":
        # 4 frames -> 2 temporal patches x (6 x 9 merged patches of a 168x252 frame)
        assert int((ids == tiny.model.config.video_token_id).sum()) == 2 * 54
    else:
        assert int((ids == tiny.model.config.image_token_id).sum()) == 4 * 64
    with torch.no_grad():
        out = tiny.model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (1, ids.numel() + 3)


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path: Path) -> None:
    a = make_tiny_model(tmp_path / "a", "qwen2_5_vl", seed=7)
    b = make_tiny_model(tmp_path / "b", "qwen2_5_vl", seed=7)
    c = make_tiny_model(tmp_path / "c", "qwen2_5_vl", seed=8)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "processor_config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()


def test_ensure_builds_once_under_concurrency(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(ensure_tiny_model("internvl", seed=3, cache_dir=tmp_path))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    with caplog.at_level(logging.INFO, logger="ego_ros.backends.tiny"):
        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert len(set(results)) == 1 and len(results) == 3
    builds = [r for r in caplog.records if r.getMessage().startswith("built tiny")]
    assert len(builds) == 1
    models_dir = results[0].parent
    assert not [p.name for p in models_dir.iterdir() if ".build-" in p.name]
    assert ensure_tiny_model("internvl", seed=3, cache_dir=tmp_path) == results[0]
    assert "internvl" in results[0].name and f"v{BUILDER_VERSION}" in results[0].name


def test_bad_family_and_foreign_folder_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'llava'.*qwen2_5_vl, internvl"):
        make_tiny_model(tmp_path / "x", "llava")
    with pytest.raises(ValueError, match="llava"):
        ensure_tiny_model("llava", cache_dir=tmp_path)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a tiny model"):
        make_tiny_model(foreign, "internvl")
    assert (foreign / "keep.txt").read_text() == "mine"
    make_tiny_model(foreign, "internvl", overwrite=True)
    assert not (foreign / "keep.txt").exists()
    assert read_tiny_marker(foreign)["family"] == "internvl"
    # A tiny model folder is simply rebuilt, no overwrite flag needed.
    make_tiny_model(foreign, "internvl", seed=1)
    assert read_tiny_marker(foreign)["seed"] == 1
    assert read_tiny_marker(tmp_path) is None
    assert not (tmp_path / MARKER_FILE).exists()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ego_ros.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def test_cli_writes_model_and_prints_json(tmp_path: Path) -> None:
    assert FAMILY_CHOICES == FAMILIES
    out = tmp_path / "tiny"
    proc = _cli("make-tiny-model", str(out), "--family", "internvl", "--seed", "2")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["path"] == str(out.absolute())
    assert (summary["family"], summary["seed"]) == ("internvl", 2)
    assert summary["num_parameters"] == read_tiny_marker(out)["num_parameters"] > 0
    assert summary["elapsed_s"] >= 0

    bad = _cli("make-tiny-model", str(tmp_path / "bad"), "--family", "llava")
    assert bad.returncode != 0
    assert "unknown family 'llava'" in bad.stderr and "qwen2_5_vl" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_real_sizes_have_the_real_checkpoints_shapes() -> None:
    """The realistic geometries reproduce the config values of the real checkpoints that
    matter for cost (checked on the configs themselves; no weights are built)."""
    assert tuple(SIZES) == SIZE_CHOICES
    tokenizer = _train_tokenizer(_SPECIALS["qwen2_5_vl"], _NAMED_TOKENS["qwen2_5_vl"])
    config, processor = _build_qwen2_5_vl(tokenizer, geometry("qwen2_5_vl", "qwen2.5-vl-7b"))
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads,
            text.num_key_value_heads, text.intermediate_size, text.vocab_size) == (
        3584, 28, 28, 4, 18944, 152064)
    assert text.rope_parameters["mrope_section"] == [16, 24, 24]
    assert (vision.depth, vision.hidden_size, vision.out_hidden_size) == (32, 1280, 3584)
    assert vision.fullatt_block_indexes == [7, 15, 23, 31]
    frame = np.zeros((480, 640, 3), np.uint8)
    grid = processor.image_processor(images=[frame], return_tensors="pt")["image_grid_thw"][0]
    assert int(grid.prod()) // 4 == 391  # a 640x480 frame: 391 tokens, as with the checkpoint
    assert max(tokenizer.get_vocab().values()) < text.vocab_size

    tokenizer = _train_tokenizer(_SPECIALS["internvl"], _NAMED_TOKENS["internvl"])
    config, processor = _build_internvl(tokenizer, geometry("internvl", "internvl3-2b"))
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers) == (1536, 28)
    assert (config.vision_config.hidden_size, config.vision_config.num_hidden_layers) == (
        1024, 24)
    assert config.image_seq_length == 256 and processor.image_seq_length == 256

    shallow = geometry("qwen2_5_vl", "qwen2.5-vl-3b", depth_divisor=4)
    assert (shallow.text_layers, shallow.vision_layers, shallow.text_hidden) == (9, 8, 2048)
    assert shallow.full_attention_blocks == [7]
    assert geometry("internvl", "tiny", depth_divisor=100).text_layers == 1
    with pytest.raises(ValueError, match="not internvl"):
        geometry("internvl", "qwen2.5-vl-7b")
    with pytest.raises(ValueError, match="unknown model size 'huge'"):
        geometry("internvl", "huge")
    with pytest.raises(ValueError, match="divisor"):
        geometry("internvl", "tiny", depth_divisor=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_in_memory_build_equals_the_written_folder(family: str) -> None:
    """``random_backend`` (no files, any size) builds exactly the weights a written folder
    holds: with the tiny size, its logits equal those of the cached tiny model, loaded."""
    from ego_ros.backends.base import BackendConfig, BackendError
    from ego_ros.backends.loading import load_backend, random_backend

    frame = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    loaded = load_backend(BackendConfig(ensure_tiny_model(family), device="cpu"))
    built = random_backend(family, "tiny", BackendConfig("mem", device="cpu"))
    weights = loaded.model.state_dict()
    assert set(weights) == set(built.model.state_dict())
    for name, tensor in built.model.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    logits = []
    for backend in (loaded, built):
        block = backend.encode_images([frame])[0]
        segments = backend.render("<ego:q>Describe the image.", {"q": block})
        logits.append(backend.prefill(segments, keep_state=False)[0])
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-5)
    assert built.fingerprint == loaded.fingerprint
    other = next(f for f in FAMILIES if f != family)
    with pytest.raises(BackendError, match=f"is not '{family}'"):
        random_backend(family, "tiny", BackendConfig("mem", family=other))
    with pytest.raises(BackendError, match=f"model.family is '{other}' but the model is a "
                                           f"{family}"):
        load_backend(BackendConfig(ensure_tiny_model(family), family=other, device="cpu"))


def test_cli_refuses_an_unknown_size_or_a_family_mismatch(tmp_path: Path) -> None:
    bad = _cli("make-tiny-model", str(tmp_path / "a"), "--size", "huge")
    assert bad.returncode != 0 and "unknown size 'huge'" in bad.stderr
    mismatch = _cli("make-tiny-model", str(tmp_path / "b"), "--family", "internvl",
                    "--size", "qwen2.5-vl-7b")
    assert mismatch.returncode != 0 and "not internvl" in mismatch.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

"""Concept introduction on the tiny models of both families: the memory is made of the
projector's own rows, the captured keyword attention equals eager attention, and the K_c rule
holds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ego_ros.core.introduce import IntroduceConfig, default_layers, introduce_concept
from ego_ros.core.selection import SelectionConfig


def _processor_inputs(backend, image, question: str):
    """The plain transformers path: chat template with an image, then the processor."""
    messages = [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": question}]}]
    text = backend.processor.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=True)
    kwargs = {"crop_to_patches": False} if backend.family == "internvl" else {}
    return backend.processor(text=[text], images=[image], return_tensors="pt", **kwargs)


def _plain_image_features(backend, inputs) -> torch.Tensor:
    model = backend.model
    if backend.family == "qwen2_5_vl":
        out = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
        return out.pooler_output[0]  # [N, D]
    cfg = model.config
    out = model.model.get_image_features(
        pixel_values=inputs["pixel_values"], vision_feature_layer=cfg.vision_feature_layer,
        vision_feature_select_strategy=cfg.vision_feature_select_strategy)
    return out.pooler_output[0]  # [N, D]


def test_memory_rows_are_projector_rows_bit_exact(backend, make_scene):
    image = make_scene(1)
    layers = default_layers(backend.num_layers)
    memory, traces = introduce_concept(backend, "red box", [image], layers)
    inputs = _processor_inputs(backend, image, "Describe the image.")
    with torch.inference_mode():
        plain = _plain_image_features(backend, inputs)  # [N_r, D]
    idx = traces[0].selection.indices
    assert memory.tokens.shape == (idx.numel(), backend.hidden_size)
    assert torch.equal(memory.tokens, plain[idx])
    # the memory's image-token count is what the processor expands the image to
    n_placeholders = int((inputs["input_ids"] == backend.model.config.image_token_id).sum())
    assert n_placeholders == plain.shape[0] == traces[0].importance.numel()


def test_captured_keyword_attention_equals_eager_rows(backend, tiny_model_dirs, make_scene):
    """The decode-time capture equals rows of eager ``output_attentions`` on the full
    sequence [prompt with image; generated answer], built by the processor and positioned by
    the model itself (Qwen's M-RoPE included)."""
    from transformers import AutoModelForImageTextToText

    image = make_scene(2)
    layers = list(range(backend.num_layers))  # every layer, to compare them all
    cfg = IntroduceConfig(keywords_max_new_tokens=6)
    _, traces = introduce_concept(backend, "thing", [image], layers, cfg)
    trace = traces[0]
    assert trace.generated_ids, "the tiny model generated nothing"

    eager = AutoModelForImageTextToText.from_pretrained(
        tiny_model_dirs[backend.family], attn_implementation="eager", dtype=torch.float32).eval()
    inputs = _processor_inputs(backend, image, _keyword_question(backend))
    prompt_ids = inputs["input_ids"]
    assert prompt_ids.shape[1] == trace.prompt_length
    gen = torch.tensor([trace.generated_ids])
    inputs["input_ids"] = torch.cat([prompt_ids, gen], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if "mm_token_type_ids" in inputs:
        inputs["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros_like(gen)], dim=1)
    with torch.inference_mode():
        out = eager(**inputs, output_attentions=True)
    image_pos = (inputs["input_ids"][0] == backend.model.config.image_token_id).nonzero()[:, 0]
    assert (image_pos[0].item(), image_pos[-1].item() + 1) == trace.visual_span
    rows = prompt_ids.shape[1] + torch.arange(len(trace.generated_ids))
    capture_rows = _recapture(backend, image, layers, cfg)
    for layer in layers:
        ref = out.attentions[layer][0][:, rows][:, :, image_pos]  # [H, n, N_r]
        got = capture_rows[layer]
        torch.testing.assert_close(got, ref.float(), rtol=1e-4, atol=1e-6)


def _keyword_question(backend) -> str:
    from ego_ros.core.prompts import prompts_for

    return prompts_for(backend.family).keywords


def _recapture(backend, image, layers, cfg) -> dict[int, torch.Tensor]:
    """Re-run the keyword branch with a capture to read the raw rows per layer."""
    from ego_ros.core.prompts import prompts_for

    visual = backend.encode_images([image])[0]
    segs = backend.render("<ego:img>" + prompts_for(backend.family).keywords, {"img": visual})
    split = next(i for i, s in enumerate(segs) if s is visual) + 1
    prefix = backend.embed(segs[:split])
    _, state = backend.forward(prefix, None)
    capture = backend.attention_capture(layers, torch.arange(*prefix.visual_spans[-1]))
    backend.generate(segs[split:], state, max_new_tokens=cfg.keywords_max_new_tokens,
                     capture=capture)
    return {layer: capture.stacked(layer) for layer in layers}


@pytest.mark.parametrize("ratio,min_tokens", [(0.2, 4), (0.5, 1), (0.05, 6)])
def test_memory_size_follows_k_c_rule(backend, make_scene, ratio, min_tokens):
    image = make_scene(3)
    cfg = IntroduceConfig(selection=SelectionConfig(ratio=ratio, min_tokens=min_tokens))
    _, traces = introduce_concept(backend, "x", [image], default_layers(backend.num_layers), cfg)
    sel = traces[0].selection
    n_r = traces[0].importance.numel()
    k_cap = int(ratio * n_r)
    expected = max(min_tokens, min(k_cap, int(sel.area_percent * n_r / 100)))
    assert abs(sel.indices.numel() - min(expected, n_r)) <= 1
    assert torch.all(sel.indices[1:] > sel.indices[:-1])  # original order restored
    # the kept tokens are the most important ones
    kept = traces[0].importance[sel.indices]
    dropped = np.setdiff1d(np.arange(n_r), sel.indices.numpy())
    if dropped.size:
        assert kept.min() >= traces[0].importance[dropped].max()


def test_multi_view_memory_concatenates_views(backend, make_scene):
    views = [make_scene(4), make_scene(5), make_scene(6)]
    memory, traces = introduce_concept(backend, "anna's mug", views,
                                       default_layers(backend.num_layers))
    assert memory.num_views == 3
    assert memory.num_tokens == sum(t.selection.indices.numel() for t in traces)
    for v, trace in enumerate(traces):
        assert torch.equal(memory.view_tokens(v), trace.selection.tokens)


def test_default_layers_are_mid_to_late():
    assert default_layers(4) == (2,)
    assert default_layers(28) == (14, 15, 16, 17, 18, 19, 20)
    assert default_layers(1) == (0,)

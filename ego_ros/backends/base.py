"""One LVLM behind a small interface: encode images, build prompts with soft prompts, prefill
with a reusable key/value prefix, score the next token, and decode greedily.

Everything the Ego method needs from a model goes through :class:`LVLMBackend`. The parts that
genuinely differ between model families (how images become visual tokens, which tokens frame
an image, how positions are assigned) live in a small :class:`FamilyAdapter` per family.

The soft-prompt seam is :meth:`LVLMBackend.embed`: a prompt is a list of segments, either
token ids or :class:`Visual` blocks (a query image, a video clip, or a stored concept memory).
Visual blocks are framed by the family's image delimiters and their rows are written into the
input embeddings at the placeholder positions, so the image is never re-encoded for a memory.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ego_ros.backends.attention import AttentionCapture
from ego_ros.backends.render import TemplateError, TurnRenderer

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


MIN_IMAGE_SIDE = 8  # smaller images are ambiguous to processors (read as channels-first)


def _checked_rgb(images: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
    """The images as a list, each an RGB uint8 ``[H, W, 3]`` array of a usable size."""
    if not images:
        raise ValueError(f"no {what}s given")
    for i, img in enumerate(images):
        if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3
                and img.dtype == np.uint8):
            raise ValueError(f"{what} {i}: expected an RGB uint8 array [H, W, 3], got "
                             f"{getattr(img, 'dtype', type(img).__name__)} "
                             f"{getattr(img, 'shape', '')}")
        if min(img.shape[:2]) < MIN_IMAGE_SIDE:
            raise ValueError(f"{what} {i} is {img.shape[1]}x{img.shape[0]} pixels; at least "
                             f"{MIN_IMAGE_SIDE} on each side is needed")
    return list(images)


class BackendError(RuntimeError):
    """The model cannot be loaded or used as asked; the message says why and what to do."""


@dataclass(frozen=True)
class BackendConfig:
    """Which checkpoint to load and where.

    ``dtype="auto"`` means bfloat16 on CUDA and float32 on the CPU. ``device="auto"`` means
    ``cuda`` when available, else ``cpu``; an explicit ``cuda`` without a GPU is an error,
    never a silent fallback. ``max_image_tokens`` caps the visual tokens of one image or
    video frame pair for families with dynamic resolution (Qwen2.5-VL: a 1080p frame is
    ~2,700 tokens with the checkpoint's own limit); None keeps the checkpoint's setting.
    ``allow_pickle_weights`` lets a folder without safetensors weights load its pickled
    ``.bin`` files (unpickling can run code from the file: only for checkpoints you trust).
    """

    path: Path
    family: str = "auto"
    dtype: str = "auto"
    device: str = "auto"
    max_image_tokens: int | None = None
    allow_pickle_weights: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path).expanduser())
        if not isinstance(self.allow_pickle_weights, bool):
            raise ValueError(f"model.allow_pickle_weights: {self.allow_pickle_weights!r} must "
                             "be true or false")
        cap = self.max_image_tokens
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 4):
            raise ValueError(f"model.max_image_tokens: {cap!r} must be None or an integer >= 4")
        if self.dtype not in ("auto", *DTYPES):
            raise ValueError(f"model.dtype: {self.dtype!r} is not one of auto, {', '.join(DTYPES)}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"model.device: {self.device!r} is not auto, cpu, cuda or cuda:N")

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise BackendError(f"model.device is {self.device!r} but torch sees no CUDA device "
                                   "(use device 'cpu' or 'auto')")
            index = int(self.device.split(":")[1]) if ":" in self.device else 0
            if index >= torch.cuda.device_count():
                raise BackendError(f"model.device is {self.device!r} but only "
                                   f"{torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device(self.device)

    def resolved_dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return DTYPES[self.dtype]


@dataclass
class Visual:
    """Visual tokens in the LLM embedding space, with their place on the token grid.

    ``coords[i] = (t, row, col)`` of token ``i`` on a ``grid = (T, H, W)`` of LLM tokens. A
    query image has every cell; a concept memory view has the selected cells only.
    ``time_interval`` spaces temporal positions for video (Qwen's M-RoPE; 1 for images).
    """

    tokens: torch.Tensor  # [N, D]
    coords: torch.Tensor  # [N, 3] long
    grid: tuple[int, int, int]
    kind: str = "image"  # image | video | memory
    time_interval: float = 1.0

    @classmethod
    def full_grid(cls, tokens: torch.Tensor, grid: tuple[int, int, int], kind: str = "image",
                  time_interval: float = 1.0) -> Visual:
        t, h, w = grid
        if tokens.shape[0] != t * h * w:
            raise ValueError(f"{tokens.shape[0]} visual tokens do not fill a {grid} grid")
        tt, hh, ww = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w),
                                    indexing="ij")
        coords = torch.stack([tt, hh, ww], dim=-1).reshape(-1, 3)  # [N, 3]
        return cls(tokens, coords, grid, kind, time_interval)

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])


Segment = torch.Tensor | Visual  # token ids [n] (long) or a visual block


@dataclass
class KVState:
    """Key/value cache of a processed prefix plus the next free position.

    Immutable in use: :meth:`LVLMBackend.forward` builds a fresh cache from these tensors, and
    transformers' dynamic cache concatenates into new tensors, so one prefix serves any number
    of continuations.
    """

    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: [1, Hkv, T, d] each
    length: int
    next_pos: int


@dataclass
class Embedded:
    """A prompt turned into model inputs."""

    embeds: torch.Tensor  # [1, T, D]
    positions: torch.Tensor  # [1, T] or [3, 1, T]
    next_pos: int
    visual_spans: list[tuple[int, int]] = field(default_factory=list)  # [start, end) per block


@dataclass
class Generation:
    token_ids: list[int]
    text: str
    prompt_length: int  # tokens in the cache before the first generated token


class FamilyAdapter:
    """What differs between model families. Subclasses fill in the abstract parts."""

    family: str = ""
    model_types: tuple[str, ...] = ()

    def __init__(self, model, processor, max_image_tokens: int | None = None) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_image_tokens = max_image_tokens

    # -- model parts --------------------------------------------------------------------
    def language_model(self):
        return self.model.model.language_model

    def lm_head(self):
        return self.model.lm_head

    def text_config(self):
        return self.model.config.get_text_config()

    # -- visual framing ---------------------------------------------------------------------
    def visual_open_close(self, kind: str) -> tuple[list[int], int, list[int]]:
        """(ids before, placeholder id, ids after) that frame a visual block."""
        raise TypeError(f"{type(self).__name__} must define visual_open_close")

    def template_marker(self, kind: str) -> str:
        """The text the chat template writes for an image (or video) item."""
        raise TypeError(f"{type(self).__name__} must define template_marker")

    def encode_images(self, images: Sequence[np.ndarray]) -> list[Visual]:
        raise TypeError(f"{type(self).__name__} must define encode_images")

    def encode_clip(self, frames: Sequence[np.ndarray], fps: float = 2.0) -> list[Visual]:
        """A clip: the family's native video input where it has one, else one block a frame."""
        return self.encode_images(frames)

    # -- positions ------------------------------------------------------------------------
    uses_3d_positions: bool = False

    def visual_positions(self, block: Visual, start: int) -> tuple[torch.Tensor, int]:
        """Positions of a visual block starting at ``start``: ``([P, N], next_pos)``."""
        n = block.num_tokens
        return torch.arange(start, start + n)[None], start + n


class LVLMBackend:
    """A loaded LVLM with the operations the Ego method needs."""

    def __init__(self, adapter: FamilyAdapter, config: BackendConfig, fingerprint) -> None:
        self.adapter = adapter
        self.model = adapter.model
        self.processor = adapter.processor
        self.tokenizer = adapter.tokenizer
        self.config = config
        self.fingerprint = fingerprint
        self.family = adapter.family
        self.device = next(self.model.parameters()).device
        self.dtype = next(self.model.parameters()).dtype
        self._lm = adapter.language_model()
        self._head = adapter.lm_head()
        self._embed = self.model.get_input_embeddings()
        text_cfg = adapter.text_config()
        self.num_layers = int(text_cfg.num_hidden_layers)
        self.hidden_size = int(text_cfg.hidden_size)
        self.eos_ids = self._eos_ids()
        self._renderer: TurnRenderer | None = None  # built on first use

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        gen = getattr(self.model, "generation_config", None)
        for source in (getattr(gen, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(int(i) for i in source)
        for tok in ("<|im_end|>", "<|endoftext|>"):
            tid = self.tokenizer.convert_tokens_to_ids(tok)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id and tid is not None:
                ids.add(tid)
        return ids

    # -- text ------------------------------------------------------------------------------
    def tokenize(self, text: str) -> torch.Tensor:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def render(self, content: str, visuals: dict[str, Visual | list[Visual]]) -> list[Segment]:
        """One user turn through the chat template, ending with the generation prompt.

        ``<ego:NAME>`` sentinels in ``content`` stand for ``visuals[NAME]`` (a block or a list
        of blocks). Each block is handed to the template as an image (or video) item, so the
        text around it is exactly what the family's template writes around an image; the
        template's placeholder is then replaced by the block. Blocks are placed by
        construction and the text stays text, whatever it contains (see ``backends.render``).
        """
        if self._renderer is None:
            self._renderer = TurnRenderer(self.processor, self.tokenizer,
                                          self.adapter.template_marker, self.special_tokens)
        try:
            return self._renderer.render(content, visuals)
        except TemplateError as exc:
            raise BackendError(f"{self.family}: {exc}") from None

    # -- images --------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_images(self, images: Sequence[np.ndarray]) -> list[Visual]:
        """Visual tokens of each RGB image (``[H, W, 3]`` uint8), as the LLM receives them."""
        return self.adapter.encode_images(_checked_rgb(images, "image"))

    @torch.inference_mode()
    def encode_clip(self, frames: Sequence[np.ndarray], fps: float = 2.0) -> list[Visual]:
        """A clip: one native video block (Qwen2.5-VL) or one block per frame (InternVL)."""
        return self.adapter.encode_clip(_checked_rgb(frames, "frame"), fps=fps)

    def memory_block(self, tokens: torch.Tensor, coords: torch.Tensor,
                     grid: tuple[int, int, int]) -> Visual:
        """A stored memory view as a visual block: ``tokens [N, D]`` at grid ``coords [N, 3]``."""
        return Visual(tokens, coords.long(), grid, "memory")

    # -- the soft-prompt seam ----------------------------------------------------------------
    def embed(self, segments: Sequence[Segment], start_pos: int = 0) -> Embedded:
        """Token ids and visual blocks -> input embeddings and positions.

        Each visual block is framed by the family's delimiters; its rows overwrite the
        embeddings at the placeholder positions (one seam for query images, clips and
        concept memories alike).
        """
        ids: list[torch.Tensor] = []
        blocks: list[tuple[int, Visual]] = []
        pos_chunks: list[torch.Tensor] = []
        offset, pos = 0, start_pos
        for seg in segments:
            if isinstance(seg, Visual):
                before, pad, after = self.adapter.visual_open_close(seg.kind)
                for part in (before,):
                    if part:
                        pos_chunks.append(self._text_positions(pos, len(part)))
                        ids.append(torch.tensor(part))
                        pos += len(part)
                        offset += len(part)
                ids.append(torch.full((seg.num_tokens,), pad, dtype=torch.long))
                blocks.append((offset, seg))
                block_pos, pos = self.adapter.visual_positions(seg, pos)
                pos_chunks.append(block_pos)
                offset += seg.num_tokens
                if after:
                    pos_chunks.append(self._text_positions(pos, len(after)))
                    ids.append(torch.tensor(after))
                    pos += len(after)
                    offset += len(after)
            else:
                n = int(seg.numel())
                if n == 0:
                    continue
                ids.append(seg.long())
                pos_chunks.append(self._text_positions(pos, n))
                pos += n
                offset += n
        if not ids:
            raise ValueError("empty prompt")
        input_ids = torch.cat(ids).to(self.device)  # [T]
        embeds = self._embed(input_ids)[None].clone()  # [1, T, D]
        spans = []
        for start, block in blocks:
            end = start + block.num_tokens
            embeds[0, start:end] = block.tokens.to(self.device, embeds.dtype)
            spans.append((start, end))
        positions = torch.cat(pos_chunks, dim=-1).to(self.device)  # [P, T]
        positions = positions[:, None, :] if self.adapter.uses_3d_positions else positions
        return Embedded(embeds, positions, pos, spans)

    def _text_positions(self, start: int, n: int) -> torch.Tensor:
        rows = 3 if self.adapter.uses_3d_positions else 1
        return torch.arange(start, start + n)[None].expand(rows, -1)

    # -- running the LLM ---------------------------------------------------------------------
    def _cache(self, state: KVState | None):
        from transformers import DynamicCache

        if state is None:
            return DynamicCache()
        return DynamicCache(ddp_cache_data=state.kv)

    @torch.inference_mode()
    def forward(self, emb: Embedded, state: KVState | None = None, *, all_logits: bool = False,
                keep_state: bool = True) -> tuple[torch.Tensor, KVState | None]:
        """Prefill ``emb`` after ``state``: logits of the last position ``[V]`` (or of every
        position ``[T, V]`` with ``all_logits``), and the extended state."""
        cache = self._cache(state)
        out = self._lm(inputs_embeds=emb.embeds, position_ids=emb.positions,
                       past_key_values=cache, use_cache=True)
        hidden = out.last_hidden_state[0]  # [T, D]
        logits = self._head(hidden if all_logits else hidden[-1:]).float()  # [T|1, V]
        new_state = None
        if keep_state:
            kv = [(layer.keys, layer.values) for layer in cache.layers]
            new_state = KVState(kv, (state.length if state else 0) + emb.embeds.shape[1],
                                emb.next_pos)
        return (logits if all_logits else logits[0]), new_state

    @torch.inference_mode()
    def prefill(self, segments: Sequence[Segment], state: KVState | None = None, *,
                keep_state: bool = True) -> tuple[torch.Tensor, KVState | None]:
        """Process ``segments`` after ``state``: next-token logits ``[V]`` and the new state."""
        emb = self.embed(segments, start_pos=state.next_pos if state else 0)
        return self.forward(emb, state, keep_state=keep_state)

    @torch.inference_mode()
    def prefill_batch(self, tails: Sequence[torch.Tensor], state: KVState) -> torch.Tensor:
        """Next-token logits ``[N, V]`` for each of ``N`` token sequences continuing ``state``,
        in one batched forward pass.

        Rows are right-padded: causal attention never lets a real token see the padding after
        it, so each row's logits at its last real token are those of an unbatched pass. The
        prefix cache is shared by expanding it along the batch dimension.
        """
        if not tails:
            raise ValueError("prefill_batch: no sequences")
        lengths = torch.tensor([int(t.numel()) for t in tails])
        if int(lengths.min()) == 0:
            raise ValueError("prefill_batch: empty sequence")
        n, width = len(tails), int(lengths.max())
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((n, width), int(pad), dtype=torch.long)
        for row, tail in enumerate(tails):
            ids[row, :tail.numel()] = tail
        embeds = self._embed(ids.to(self.device))  # [N, T, D]
        pos = torch.arange(state.next_pos, state.next_pos + width)  # [T]
        pos = pos.expand(n, -1)  # [N, T]
        if self.adapter.uses_3d_positions:
            pos = pos[None].expand(3, -1, -1)  # [3, N, T]
        kv = [(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in state.kv]
        from transformers import DynamicCache

        out = self._lm(inputs_embeds=embeds, position_ids=pos.to(self.device),
                       past_key_values=DynamicCache(ddp_cache_data=kv), use_cache=True)
        last = out.last_hidden_state[torch.arange(n, device=self.device),
                                     (lengths - 1).to(self.device)]  # [N, D]
        return self._head(last).float()  # [N, V]

    @torch.inference_mode()
    def prefill_tree(self, segments: Sequence[Segment], tails: Sequence[torch.Tensor],
                     state: KVState | None) -> torch.Tensor:
        """``segments`` (e.g. a query image) followed by ``N`` alternative continuations, all
        in ONE forward pass: next-token logits ``[N, V]`` at the end of each continuation.

        The continuations are laid side by side after ``segments`` and a 4-D attention mask
        keeps them apart (a tree: each sees the cache, ``segments`` and itself, never a
        sibling); each starts at the same position, so every row equals the logits of
        ``prefill(segments + [tail_i])``. Saves the second pass of :meth:`prefill_batch`.
        """
        if not tails:
            raise ValueError("prefill_tree: no continuations")
        past = state.length if state else 0
        head = self.embed(segments, start_pos=state.next_pos if state else 0)  # [1, Tq, D]
        lengths = [int(t.numel()) for t in tails]
        if min(lengths) == 0:
            raise ValueError("prefill_tree: empty continuation")
        ids = torch.cat([t.long() for t in tails]).to(self.device)  # [sum L]
        embeds = torch.cat([head.embeds, self._embed(ids)[None]], dim=1)  # [1, T, D]
        text_pos = torch.cat([torch.arange(n) for n in lengths]) + head.next_pos  # [sum L]
        rows = 3 if self.adapter.uses_3d_positions else 1
        tail_pos = text_pos[None].expand(rows, -1).to(self.device)
        head_pos = head.positions[:, 0] if self.adapter.uses_3d_positions else head.positions
        positions = torch.cat([head_pos, tail_pos], dim=-1)  # [P, T]
        positions = positions[:, None] if self.adapter.uses_3d_positions else positions
        t_head, total = head.embeds.shape[1], embeds.shape[1]
        branch = torch.cat([torch.full((t_head,), -1)] +
                           [torch.full((n,), i) for i, n in enumerate(lengths)])  # [T]
        order = torch.arange(total)
        causal = order[None, :] <= order[:, None]  # [T, T]
        related = (branch[None, :] == -1) | (branch[None, :] == branch[:, None])
        mask = torch.cat([torch.ones(total, past, dtype=torch.bool), causal & related], dim=1)
        out = self._lm(inputs_embeds=embeds, position_ids=positions,
                       attention_mask=mask[None, None].to(self.device),  # [1, 1, T, past+T]
                       past_key_values=self._cache(state), use_cache=True)
        ends = t_head + torch.tensor(lengths).cumsum(0) - 1  # last token of each branch
        return self._head(out.last_hidden_state[0, ends.to(self.device)]).float()  # [N, V]

    @torch.inference_mode()
    def generate(self, segments: Sequence[Segment], state: KVState | None = None, *,
                 max_new_tokens: int = 32, capture: AttentionCapture | None = None,
                 ) -> Generation:
        """Greedy decoding after ``state`` (deterministic). With ``capture``, every generated
        token's attention rows are recorded when it is fed back (the same rows a full
        forward pass over prompt + answer would give); one extra step feeds the last token."""
        logits, cur = self.prefill(segments, state)
        prompt_length = cur.length
        out: list[int] = []
        for step in range(max_new_tokens):
            token = int(torch.argmax(logits))
            if token in self.eos_ids:
                break
            out.append(token)
            last = step == max_new_tokens - 1
            if last and capture is None:
                break
            emb = self.embed([torch.tensor([token])], start_pos=cur.next_pos)
            if capture is not None:
                with capture:
                    logits, cur = self.forward(emb, cur)
            else:
                logits, cur = self.forward(emb, cur)
        text = self.tokenizer.decode(out, skip_special_tokens=True)
        return Generation(out, text, prompt_length)

    def attention_capture(self, layers: Sequence[int], visual_index: torch.Tensor,
                          query_rows: torch.Tensor | None = None) -> AttentionCapture:
        """A capture of keyword-query attention over ``visual_index`` at ``layers``."""
        bad = [x for x in layers if not 0 <= x < self.num_layers]
        if bad:
            raise ValueError(f"layers {bad} out of range for a {self.num_layers}-layer model")
        return AttentionCapture(frozenset(int(x) for x in layers), visual_index.long(),
                                query_rows)

    @property
    def special_tokens(self) -> set[str]:
        return {str(t) for t in self.tokenizer.all_special_tokens} | {
            str(t) for t in getattr(self.tokenizer, "added_tokens_encoder", {})}

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """The text each token adds to the decoded answer (special tokens as themselves).

        Decoding prefixes, not single tokens, turns byte-level pieces back into characters:
        a bullet or a curly apostrophe split over two byte tokens comes out as that character
        (on the token that completes it), never as letter-like vocabulary entries.
        """
        out, previous = [], ""
        specials = set(self.tokenizer.all_special_ids)
        for i, token in enumerate(ids):
            if token in specials:
                out.append(str(self.tokenizer.convert_ids_to_tokens(int(token))))
                continue
            text = self.tokenizer.decode(list(ids[:i + 1]), skip_special_tokens=True)
            if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the rest
                out.append("")
                continue
            out.append(text[len(previous):] if text.startswith(previous) else text)
            previous = text
        return out

    def variant_ids(self, words: Sequence[str]) -> list[int]:
        """Ids of single-token spellings of ``words`` (with and without a leading space)."""
        found: list[int] = []
        for word in words:
            for form in (word, " " + word):
                ids = self.tokenizer(form, add_special_tokens=False)["input_ids"]
                if len(ids) == 1 and ids[0] not in found:
                    found.append(int(ids[0]))
        return found

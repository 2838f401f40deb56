"""One user turn through the family's chat template, visual blocks placed by construction.

    content "text <ego:a> text <ego:b> text" and visuals {a: block, b: block}
      -> parts: text, block a, text, block b, text
      -> the chat template rendered with each text part replaced by a slot string (private-use
         code points), so its output holds only the template's own text, its image markers
         and the slots: no user text is in what is searched
      -> each block's marker and each slot located in that output, in order
      -> the text between two blocks: the template's text split at its special tokens (each
         becomes its id), the user's text put back in place of its slot and tokenised with
         special-token parsing off
      -> segments: token ids, block a, token ids, block b, token ids

So whatever the text says (a concept called ``<IMG_CONTEXT>``, a question quoting
``<|vision_start|>``), it can neither be taken for an image marker nor turn into a special
token: it stays text, and every visual block lands where the template put its image. For text
without special-token strings the ids are exactly those of tokenising the rendered string in
one go (the tokenizer also splits at special tokens first and encodes the pieces between).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from typing import Any

import torch

_SENTINEL = re.compile(r"<ego:(\w+)>")
_SLOT_OPEN, _SLOT_CLOSE = "\ue000", "\ue001"  # private use: never emitted by a template


class TemplateError(RuntimeError):
    """The chat template did not render the turn's parts as expected."""


class TurnRenderer:
    """Renders ``content`` with ``<ego:NAME>`` sentinels into token ids and visual blocks.

    ``marker(kind)`` is the text the template writes for an image (``kind`` "image",
    "memory") or video item; ``special_tokens`` are the tokenizer's special and added tokens.
    """

    def __init__(self, processor: Any, tokenizer: Any, marker: Callable[[str], str],
                 special_tokens: Collection[str]) -> None:
        self._processor = processor
        self._tokenizer = tokenizer
        self._marker = marker
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in special_tokens if t}
        self._special_ids = {t: int(i) for t, i in ids.items() if isinstance(i, int)}
        specials = sorted(self._special_ids, key=len, reverse=True)  # longest match first
        self._special_split = (re.compile("(" + "|".join(map(re.escape, specials)) + ")")
                               if specials else None)

    def render(self, content: str, visuals: dict[str, Any]) -> list[Any]:
        parts = self._parts(content, visuals)
        items = [{"type": "text", "text": _slot(i)} if isinstance(p, str) else
                 {"type": "video" if p.kind == "video" else "image"} for i, p in enumerate(parts)]
        template = self._processor.apply_chat_template([{"role": "user", "content": items}],
                                                       tokenize=False, add_generation_prompt=True)
        segments: list[Any] = []
        run: list[tuple[str, bool]] = []  # (text, from the template) since the last block
        cursor = 0
        for i, part in enumerate(parts):
            found = _slot(i) if isinstance(part, str) else self._marker(part.kind)
            at = template.find(found, cursor)
            if at < 0 or _SLOT_OPEN in template[cursor:at]:
                what = "a text item" if isinstance(part, str) else f"{found!r} for a visual item"
                raise TemplateError(f"the chat template did not emit {what} in order")
            run.append((template[cursor:at], True))
            if isinstance(part, str):
                run.append((part, False))
            else:
                segments += self._tokenize(run)
                segments.append(part)
                run = []
            cursor = at + len(found)
        run.append((template[cursor:], True))
        return segments + self._tokenize(run)

    @staticmethod
    def _parts(content: str, visuals: dict[str, Any]) -> list[Any]:
        """``content`` split at its sentinels: text pieces and the visual blocks in order."""
        parts: list[Any] = []
        pos = 0
        for match in _SENTINEL.finditer(content):
            if match.start() > pos:
                parts.append(content[pos:match.start()])
            if match.group(1) not in visuals:
                raise ValueError(f"prompt sentinel <ego:{match.group(1)}> has no visual block")
            item = visuals[match.group(1)]
            parts += item if isinstance(item, list) else [item]
            pos = match.end()
        if pos < len(content):
            parts.append(content[pos:])
        return parts

    def _tokenize(self, run: Sequence[tuple[str, bool]]) -> list[torch.Tensor]:
        """Token ids of one text run (empty list for none): the template's special tokens by
        id, everything between them tokenised together with special-token parsing off."""
        ids: list[int] = []
        plain: list[str] = []
        for text, from_template in run:
            pieces = (self._special_split.split(text) if from_template and self._special_split
                      else [text])
            for k, piece in enumerate(pieces):
                if k % 2:  # a captured special token of the template
                    ids += self._plain_ids("".join(plain))
                    plain = []
                    ids.append(self._special_ids[piece])
                else:
                    plain.append(piece)
        ids += self._plain_ids("".join(plain))
        return [torch.tensor(ids, dtype=torch.long)] if ids else []

    def _plain_ids(self, text: str) -> list[int]:
        if not text:
            return []
        return list(self._tokenizer(text, add_special_tokens=False,
                                    split_special_tokens=True)["input_ids"])


def _slot(index: int) -> str:
    return f"{_SLOT_OPEN}{index}{_SLOT_CLOSE}"

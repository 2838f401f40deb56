"""What one request may carry: the size limits of user text and reference views, in one place.

    request (~/ask, ~/question, ~/introduce_concept, the worker's RPC, the CLI, EgoEngine)
        --check_question / check_options / check_views / check_user_text--> tokenizer, model

Every path that takes text or views from a person calls these checks before anything is
tokenised, encoded or queued for the model, so a hostile request costs a length comparison
and never memory or model time. Each refusal is a :class:`LimitExceeded` (a ``ValueError``)
whose message names the field, its size and the limit.

The limits, in characters (Unicode code points, counted before tokenising):

- ``MAX_QUESTION_CHARS`` (1000) for a question; ``MAX_OPTION_CHARS`` (200) for each
  multiple-choice option's text and at most ``MAX_OPTIONS`` (10) options;
- ``MAX_NAME_CHARS`` (64) for a concept name (checked by ``names.validate_concept_name``).

Byte-level BPE tokenizers (both supported families) spend at most one token per UTF-8 byte,
up to four per character, so characters alone would still admit ~12,000 tokens of emoji.
The engine, which holds the tokenizer, also caps the question and its options together at
``MAX_QUESTION_TOKENS`` (1024) tokens; tokenising text that passed the character limits is
cheap. A reference introduction takes at most ``MAX_VIEWS`` (16) views per request: each view
costs one image encoding, one prefill and two short generations with the model held (200
views held the tiny model for 26 s). More views of a concept come from further requests.

User text is written into the model's prompt, so it must also not contain the prompt sentinel
``<ego:`` or any of the tokenizer's special or added tokens (``check_user_text``): a concept
name ``<IMG_CONTEXT>`` would otherwise read as an image marker to the model.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

__all__ = [
    "MAX_NAME_CHARS",
    "MAX_OPTIONS",
    "MAX_OPTION_CHARS",
    "MAX_QUESTION_CHARS",
    "MAX_QUESTION_TOKENS",
    "MAX_VIEWS",
    "LimitExceeded",
    "check_options",
    "check_question",
    "check_question_tokens",
    "check_user_text",
    "check_views",
]

MAX_QUESTION_CHARS = 1000
MAX_OPTION_CHARS = 200
MAX_OPTIONS = 10
MAX_NAME_CHARS = 64
MAX_QUESTION_TOKENS = 1024
MAX_VIEWS = 16

SENTINEL = "<ego:"  # opens the engine's own prompt markup (see ``core.prompts``)


class LimitExceeded(ValueError):  # noqa: N818 (reads as what happened, like TimeoutError)
    """A request carries more than a documented limit allows; the message names which."""


def _too_long(what: str, text: str, limit: int) -> LimitExceeded:
    return LimitExceeded(f"{what} is {len(text)} characters long; the limit is {limit} "
                         f"(it starts {text[:40]!r})")


def check_question(question: str) -> str:
    """The question stripped; ``LimitExceeded`` over ``MAX_QUESTION_CHARS``, ``ValueError``
    when it is not a string or is empty."""
    if not isinstance(question, str):
        raise ValueError(f"the question must be a string, got {type(question).__name__}")
    if len(question) > MAX_QUESTION_CHARS:  # before strip(): no work on a huge string
        raise _too_long("the question", question, MAX_QUESTION_CHARS)
    question = question.strip()
    if not question:
        raise ValueError("the question is empty; ask something about the camera view")
    return question


def check_options(options: Mapping[str, str] | Sequence[str] | None) -> None:
    """At most ``MAX_OPTIONS`` options of at most ``MAX_OPTION_CHARS`` characters each.

    Takes the parsed ``{"A": "on the table"}`` form or the raw ``["A=on the table"]`` items
    (where the text is what follows the first ``=``), so callers check before parsing."""
    if not options:
        return
    if len(options) > MAX_OPTIONS:
        raise LimitExceeded(f"{len(options)} options given; the limit is {MAX_OPTIONS}")
    if isinstance(options, Mapping):
        pairs = [(str(k), v) for k, v in options.items()]
    else:
        pairs = [(str(item).partition("=")[0][:8], str(item).partition("=")[2] or str(item))
                 for item in options]
    for key, text in pairs:
        if not isinstance(text, str):
            raise ValueError(f"option {key!r} must be text, got {type(text).__name__}")
        if len(text) > MAX_OPTION_CHARS:
            raise _too_long(f"option {key!r}", text, MAX_OPTION_CHARS)


def check_question_tokens(count: int) -> None:
    """``LimitExceeded`` when the question and its options take over ``MAX_QUESTION_TOKENS``."""
    if count > MAX_QUESTION_TOKENS:
        raise LimitExceeded(f"the question and its options are {count} tokens long; the limit "
                            f"is {MAX_QUESTION_TOKENS}")


def check_views(count: int) -> None:
    """``LimitExceeded`` over ``MAX_VIEWS`` reference views, ``ValueError`` for none."""
    if count < 1:
        raise ValueError("no reference views given; send at least one image of the concept")
    if count > MAX_VIEWS:
        raise LimitExceeded(f"{count} reference views given; one introduction takes at most "
                            f"{MAX_VIEWS} (introduce the concept again, without replace, to "
                            "add more views)")


def check_user_text(text: str, what: str, special_tokens: Collection[str]) -> None:
    """``ValueError`` when ``text`` (named ``what`` in the message) contains the prompt
    sentinel ``<ego:`` or any of ``special_tokens`` (the backend's special and added tokens).
    Call it after the length checks: its cost grows with the text."""
    found = sorted({t for t in special_tokens if t and t in text})
    if found:
        raise ValueError(f"{what} contains the model's special token(s) "
                         f"{', '.join(repr(t) for t in found)}; remove them")
    if SENTINEL in text:
        raise ValueError(f"{what} contains {SENTINEL!r}, which is reserved in prompts")

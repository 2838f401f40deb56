"""Ask a question about an image or a clip; the question may use the stored concepts' names.

    ego-ros ask --model ~/models/Qwen2.5-VL-7B-Instruct --store ~/.ego/store \\
        --question "What is Anna holding?" frame.jpg

The stored concepts' memories are put in the model's context (narrowed down to
--max-in-context by similarity to the query), so the model can answer about "my mug" or
"Anna" by name. For a multiple-choice question give the options with --option, e.g.
--option "A=on the table" --option "B=on the floor": they are listed under the question, the
model is asked for the letter, and the output gets "choice" (the letter read from the answer,
or null).

Limits (ego_ros.core.limits): a question of at most 1000 characters, at most 10 options of
200 characters each, and 1024 tokens for the question and its options together; text holding
one of the model's special tokens is refused. A refusal exits with status 2.

Without --clip each IMG is a separate query and gets its own output line (JSON Lines), in the
order given; with --clip the images, in order, are one clip and one object is printed. Each
object: images, answer, concepts (the stored names the answer mentions), considered (the
concepts put in context), latency_ms.
"""

from __future__ import annotations

import argparse
from typing import Any

from ego_ros.cli.common import CliError
from ego_ros.cli.recognize import add_query_options, check_query_args, open_engine, run_queries


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``ask`` on the top-level subparsers."""
    parser = sub.add_parser(
        "ask",
        help="answer a question about an image or clip, by concept name (JSON)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_query_options(parser)
    parser.add_argument("--question", "-q", required=True, metavar="Q",
                        help="the question; stored concept names may be used in it")
    parser.add_argument("--option", action="append", default=[], metavar="L=TEXT",
                        help="a multiple-choice option, letter=text (repeat: A=..., B=...)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Answer the question for each query and print one JSON object per query."""
    from ego_ros.core import limits

    if not args.question.strip():
        raise CliError("--question is empty; ask something, e.g. --question 'Where is my mug?'")
    try:  # before the model loads: a huge question costs a comparison, not minutes
        limits.check_question(args.question)
    except ValueError as exc:
        raise CliError(f"--question: {exc}") from None
    options = _options(args.option)
    paths, concepts = check_query_args(args)
    engine = open_engine(args)

    def answer(frames: list[Any]) -> dict:
        out = engine.ask(args.question, frames, clip=args.clip, concepts=concepts,
                         options=options).to_dict()
        if not options:
            out.pop("choice", None)
        return out

    run_queries(paths, args.clip, answer)
    return 0


def _options(items: list[str]) -> dict[str, str] | None:
    """``["A=on the table", "B=on the floor"]`` -> ``{"A": ..., "B": ...}``; None when empty."""
    from ego_ros.core.limits import check_options
    from ego_ros.core.parsing import parse_options

    try:
        check_options(items)
        return parse_options(items)
    except ValueError as exc:
        raise CliError(f"--option: {exc}") from None

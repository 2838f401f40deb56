"""Caption an image or a clip, naming the stored concepts that appear in it.

    ego-ros caption --model ~/models/Qwen2.5-VL-7B-Instruct --store ~/.ego/store frame.jpg

The stored concepts' memories are put in the model's context (narrowed down to
--max-in-context by similarity to the query) and the model is asked for a short caption that
refers to a known concept by its name ("Anna is holding my mug").

Without --clip each IMG is a separate query and gets its own output line (JSON Lines), in the
order given; with --clip the images, in order, are one clip and one object is printed. Each
object: images, caption, concepts (the stored names the caption mentions), considered (the
concepts put in context), latency_ms.
"""

from __future__ import annotations

import argparse
from typing import Any

from ego_ros.cli.recognize import add_query_options, check_query_args, open_engine, run_queries


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``caption`` on the top-level subparsers."""
    parser = sub.add_parser(
        "caption",
        help="personalized caption of an image or clip (JSON)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_query_options(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Caption each query and print one JSON object per query."""
    paths, concepts = check_query_args(args)
    engine = open_engine(args)

    def answer(frames: list[Any]) -> dict:
        result = engine.caption(frames, clip=args.clip, concepts=concepts).to_dict()
        result.pop("choice", None)  # captions are never multiple choice
        return {"caption": result.pop("answer"), **result}

    run_queries(paths, args.clip, answer)
    return 0

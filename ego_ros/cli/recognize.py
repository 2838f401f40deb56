"""Which of the stored concepts are in an image or a clip (paper §3.5, recognition).

    ego-ros recognize --model ~/models/Qwen2.5-VL-7B-Instruct --store ~/.ego/store frame.jpg

Every stored concept (or those named by --concepts) is put in the model's context as its
memory; when there are more than --max-in-context, the ones most similar to the query are kept
and reported in "considered". --mode per-concept (the paper's protocol) asks one yes/no
question per concept and scores it P(yes) / (P(yes) + P(no)); a concept is present when its
score >= --threshold. --mode joint asks once for all names; its scores are null.

Without --clip each IMG is a separate query and gets its own output line, in the order given
(JSON Lines: one object per line). With --clip the images, in order, are one clip and one
object is printed. Each object: images, concepts [{name, present, score}], considered, mode,
latency_ms, and caption with --caption.

The store must have been written by the same model (memories live in one model's embedding
space); a store made by another model is refused.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ego_ros.cli._model import (
    add_model_options,
    add_store_option,
    check_images,
    load_model,
    read_image,
)
from ego_ros.cli.common import CliError, print_json

MODES = ("per-concept", "joint")  # kept in sync with ego_ros.core.engine.MODES (tested)


def add_query_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by recognize, ask and caption: model, store, images, clip, concepts."""
    add_model_options(parser)
    add_store_option(parser)
    parser.add_argument("images", nargs="+", type=Path, metavar="IMG",
                        help="query images (any format OpenCV reads); each one is a separate "
                             "query unless --clip")
    parser.add_argument("--clip", action="store_true",
                        help="treat the images, in order, as one video clip")
    parser.add_argument("--concepts", metavar="NAME,NAME",
                        help="only these stored concepts (comma-separated; default: all)")
    parser.add_argument("--max-in-context", type=int, default=10, metavar="N",
                        help="most concepts put in one context; more are narrowed down by "
                             "similarity to the query (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=48, metavar="N",
                        help="budget of generated answers, captions and joint lists "
                             "(default: %(default)s)")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``recognize`` on the top-level subparsers."""
    parser = sub.add_parser(
        "recognize",
        help="which stored concepts are in an image or clip (JSON)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_query_options(parser)
    parser.add_argument("--mode", default="per-concept", choices=MODES,
                        help="one yes/no question per concept (scored) or one question for "
                             "all (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="score at or above which a concept is present, for every "
                             "concept (default: %(default)s)")
    parser.add_argument("--caption", action="store_true",
                        help="also write a personalized caption of each query")
    parser.set_defaults(func=run)
    return parser


# -- shared by recognize, ask and caption ------------------------------------------------------
def parse_concepts(text: str | None) -> list[str] | None:
    """``"my mug, Anna"`` -> ``["my mug", "Anna"]`` (validated names); ``None`` stays None."""
    if text is None:
        return None
    from ego_ros.core.names import InvalidConceptName, validate_concept_name

    parts = [p for p in (s.strip() for s in text.split(",")) if p]
    if not parts:
        raise CliError(f"--concepts must name at least one concept, got {text!r}")
    try:
        return list(dict.fromkeys(validate_concept_name(p) for p in parts))
    except InvalidConceptName as exc:
        raise CliError(f"--concepts: {exc}") from exc


def check_query_args(args: argparse.Namespace) -> tuple[list[Path], list[str] | None]:
    """Everything checkable before torch or the model is loaded: image files, the store
    folder, the numeric options, and that every --concepts name is stored."""
    images = check_images(args.images)
    for option in ("max_in_context", "max_new_tokens"):
        if getattr(args, option) < 1:
            raise CliError(f"--{option.replace('_', '-')} must be >= 1, "
                           f"got {getattr(args, option)}")
    store_dir = args.store.expanduser()
    if not store_dir.is_dir():
        raise CliError(f"store folder {store_dir} does not exist; teach a concept first "
                       "with 'ego-ros introduce --store ...'")
    concepts = parse_concepts(args.concepts)
    if concepts:
        from ego_ros.core.store import MemoryStore, StoreError

        try:
            stored = set(MemoryStore(store_dir).names())
        except StoreError as exc:
            raise CliError(str(exc)) from exc
        missing = [n for n in concepts if n not in stored]
        if missing:
            known = ", ".join(sorted(stored)) or "none"
            raise CliError(f"unknown concept(s) {', '.join(repr(n) for n in missing)} in "
                           f"--concepts; the store {store_dir} holds: {known}")
    return images, concepts


def open_engine(args: argparse.Namespace, **config: Any) -> Any:
    """Load the model and an engine over ``--store``; a store made by another model or an
    unreadable store becomes a :class:`CliError`."""
    from ego_ros.core.engine import EgoEngine, EngineConfig
    from ego_ros.core.store import FingerprintMismatch, MemoryStore, StoreError

    try:
        engine_config = EngineConfig(max_in_context=args.max_in_context,
                                     max_new_tokens=args.max_new_tokens, **config)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    backend = load_model(args)
    store_dir = args.store.expanduser()
    try:
        return EgoEngine(backend, MemoryStore(store_dir, backend.fingerprint), engine_config)
    except FingerprintMismatch as exc:
        raise CliError(f"the store {store_dir} was written by another model than {args.model}: "
                       f"{exc}") from exc
    except StoreError as exc:
        raise CliError(str(exc)) from exc


def queries(paths: list[Path], clip: bool) -> Iterator[tuple[list[str], list[Any]]]:
    """(image paths, frames) per query: all images as one clip, or one image at a time.

    All files are decoded first, so a bad file fails the command before any output."""
    frames = [read_image(p) for p in paths]
    names = [str(p) for p in paths]
    if clip:
        yield names, frames
        return
    for name, frame in zip(names, frames):
        yield [name], [frame]


def run_queries(paths: list[Path], clip: bool, answer: Callable[[list[Any]], dict]) -> None:
    """Call ``answer(frames)`` per query and print its dict with the query's image paths."""
    from ego_ros.core.engine import UnknownConcept

    for names, frames in queries(paths, clip):
        try:
            out = answer(frames)
        except UnknownConcept as exc:  # the store changed since the check
            raise CliError(str(exc)) from exc
        except ValueError as exc:
            raise CliError(f"{', '.join(names)}: {exc}") from exc
        latency = out.get("latency_ms")
        if isinstance(latency, float) and math.isfinite(latency):
            out["latency_ms"] = round(latency, 3)
        print_json({"images": names, **out})


# -- recognize ----------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    """Recognise the stored concepts in each query and print one JSON object per query."""
    paths, concepts = check_query_args(args)
    if not 0.0 <= args.threshold <= 1.0:
        raise CliError(f"--threshold must be between 0 and 1, got {args.threshold}")

    from ego_ros.core.scoring import Thresholds

    engine = open_engine(args, thresholds=Thresholds(default=args.threshold))

    def answer(frames: list[Any]) -> dict:
        result = engine.recognize(frames, mode=args.mode, clip=args.clip, concepts=concepts,
                                  caption=args.caption).to_dict()
        if not args.caption:
            result.pop("caption", None)
        return result

    run_queries(paths, args.clip, answer)
    return 0

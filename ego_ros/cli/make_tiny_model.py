"""Write a tiny random-weight LVLM folder that loads like a real checkpoint, fully offline.

    ego-ros make-tiny-model /tmp/tiny-qwen --family qwen2_5_vl --seed 0
    ego-ros make-tiny-model /data/qwen7b-random --family qwen2_5_vl --size qwen2.5-vl-7b

``--size`` other than tiny writes a real checkpoint's shapes (layers, widths, vocabulary,
image resolution) in bfloat16: gigabytes on disk (qwen2.5-vl-7b about 16 GB, internvl3-2b
about 3.5 GB) and minutes to build; it exists to measure a robot's real latency (node, worker,
benchmarks) before a checkpoint is on board.

The weights are RANDOM: whatever the model says is meaningless. The folder exists so that
tests, demos and benchmarks can run the real transformers model classes (vision tower,
projector, attention, generation) on machines with no checkpoint and no network. Load it with
``AutoModelForImageTextToText.from_pretrained(DIR)`` and ``AutoProcessor.from_pretrained(DIR)``,
or pass it as ``model.path``. Prints one JSON object: path, family, seed, size, num_parameters,
elapsed_s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ego_ros.cli.common import CliError, print_json

# Kept in sync with ego_ros.backends.tiny.FAMILIES (checked by the tests); not imported from
# there so that ``--help`` stays instant (the backend imports transformers lazily, but argparse
# choices must exist before any import).
FAMILY_CHOICES = ("qwen2_5_vl", "internvl")
SIZE_CHOICES = ("tiny", "qwen2.5-vl-3b", "qwen2.5-vl-7b", "internvl3-2b", "internvl3-8b")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``make-tiny-model`` on the top-level subparsers."""
    parser = sub.add_parser(
        "make-tiny-model",
        help="write a tiny random-weight LVLM folder (outputs are meaningless)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", type=Path, metavar="DIR", help="folder to write the model into")
    parser.add_argument(
        "--family",
        default="qwen2_5_vl",
        help=f"model family: {' or '.join(FAMILY_CHOICES)} (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="weights seed; same seed, same bytes (default: 0)"
    )
    parser.add_argument(
        "--size",
        default="tiny",
        help=f"shapes: {', '.join(SIZE_CHOICES)} (default: %(default)s); a real size must "
        "match --family",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace DIR even if it is a non-empty folder that is not a tiny model",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Build the folder and print its summary as JSON."""
    if args.family not in FAMILY_CHOICES:
        raise CliError(
            f"unknown family {args.family!r}; choose one of: {', '.join(FAMILY_CHOICES)}"
        )
    if args.seed < 0:
        raise CliError(f"--seed must be >= 0, got {args.seed}")
    if args.size not in SIZE_CHOICES:
        raise CliError(f"unknown size {args.size!r}; choose one of: {', '.join(SIZE_CHOICES)}")

    from ego_ros.backends.tiny import make_tiny_model, read_tiny_marker

    start = time.perf_counter()
    try:
        path = make_tiny_model(args.dir, args.family, seed=args.seed, overwrite=args.overwrite,
                               size=args.size)
    except (FileExistsError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        raise CliError(f"cannot write {args.dir}: {exc}") from exc
    elapsed = time.perf_counter() - start
    marker = read_tiny_marker(path) or {}
    print_json(
        {
            "path": str(path),
            "family": args.family,
            "seed": args.seed,
            "size": args.size,
            "num_parameters": marker.get("num_parameters"),
            "elapsed_s": round(elapsed, 3),
        }
    )
    return 0

"""ego-ros: teach, query and evaluate a personalized LVLM (the Ego method), with or without ROS.

    ego-ros make-tiny-model /tmp/tiny --family qwen2_5_vl
    ego-ros introduce --model /tmp/tiny --store ~/.ego/store --name "my mug" mug1.jpg mug2.jpg

Each subcommand lives in its own module under ``ego_ros.cli`` exposing ``add_parser(sub)``
(registers its argparse parser and sets ``func``) and keeps heavy imports (torch,
transformers, rclpy) inside the function that runs it, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ego_ros.cli.common import CliError

# Subcommand modules, in the order ``--help`` lists them.
SUBCOMMANDS = [
    "make_tiny_model",
    "introduce",
    "concepts",
    "calibrate",
    "recognize",
    "ask",
    "caption",
    "bag",
    "eval",
    "worker",
    "up",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ego-ros",
        description="Personalized vision-language perception for robots (Ego).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'ego-ros COMMAND --help' for a command's options.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"ego_ros.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"ego-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

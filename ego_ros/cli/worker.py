"""Host the engine on this machine's GPU for ``ego_node`` s to use over ZeroMQ.

    ego-ros worker --model /models/Qwen2.5-VL-7B-Instruct --store ~/.ego_ros/store \\
        --bind tcp://127.0.0.1:5555

Then start the node with ``engine.endpoint:=tcp://127.0.0.1:5555``. The worker binds to
loopback unless ``--allow-nonlocal`` is given together with CurveZMQ keys (``--curve-secret``,
``--curve-clients``). Without ``--model`` it serves the embedded tiny random-weight model
(demos and tests: meaningless outputs). Stops cleanly on Ctrl-C or SIGTERM; exits 1 if its
server stops on an error.

Keys for a worker on another machine: ``ego-ros worker --gen-keys DIR [--key-name NAME]``
writes NAME.key (public) and NAME.key_secret (private) and exits. The worker takes its own
pair with ``--curve-secret`` and a folder of the nodes' ``.key`` files with
``--curve-clients``; each node takes its own ``.key_secret`` and the worker's ``.key`` in the
``engine.curve_secret_key_file`` / ``engine.curve_server_key_file`` parameters.
"""

from __future__ import annotations

import argparse
import logging

from ego_ros.cli.common import CliError
from ego_ros.serving.worker import add_arguments, config_from_args, generate_keys, run_worker


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``worker`` on the top-level subparsers."""
    parser = sub.add_parser(
        "worker",
        help="serve the engine (model + concept store) over ZeroMQ for ego_node",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; exit 0 on a requested stop."""
    # A server logs its life cycle (ready, stopped) even without -v.
    package = logging.getLogger("ego_ros")
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    from ego_ros.backends.base import BackendError
    from ego_ros.core.store import StoreError

    try:
        if args.gen_keys is not None:
            for path in generate_keys(args.gen_keys, args.key_name):
                print(path)
            return 0
        config = config_from_args(args)
        return run_worker(config)
    except (ValueError, OSError, BackendError, StoreError) as exc:
        raise CliError(f"cannot start: {exc}") from exc

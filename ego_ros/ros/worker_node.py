"""``ego_worker``: the engine worker as a ROS 2 process, its log on /rosout.

    ros2 run ego_ros ego_worker --model /models/Qwen2.5-VL-7B-Instruct --store ~/.ego_ros/store \\
        --bind ipc:///tmp/ego_ros-1000/worker.robot1.sock --ros-args -r __ns:=/robot1

Data flow::

    argv --split at --ros-args--> worker flags (serving.worker.add_arguments) + ROS arguments
    rclpy.init(ROS arguments) --> a node named ego_worker (-r __node:= / __ns:= as usual) that
        only logs: no topics, no spinning
    Python logging of ego_ros.* --RosoutHandler--> the node's rclpy logger
        --> the console and /rosout, as "<namespace>.ego_worker" (rqt_console, ros2 topic echo)
    serving.worker.run_worker(config) serves the engine over ZeroMQ until SIGINT/SIGTERM

The worker itself (``ego_ros.serving.worker``) never imports rclpy: this module is the only
place where the two meet, so ``ego-ros worker`` runs on a machine without ROS 2. ``launch/
ego.launch.py use_worker:=true`` and ``ego-ros up --use-worker`` start this entry point in the
node's namespace. rclpy installs no signal handlers here: the worker's own stop on SIGINT and
SIGTERM (the endpoint released) stays in charge, and the ROS context is shut down after it.
"""

from __future__ import annotations

import argparse
import logging
import sys

WORKER_NODE_NAME = "ego_worker"


class RosoutHandler(logging.Handler):
    """Forwards Python log records to an rclpy logger (console + /rosout)."""

    def __init__(self, ros_logger: object) -> None:
        super().__init__()
        self._ros = ros_logger
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.name.startswith("ego_ros.") and record.levelno >= logging.WARNING:
                text = f"{text} [{record.name}]"  # where a problem came from
            if record.levelno >= logging.CRITICAL:
                self._ros.fatal(text)
            elif record.levelno >= logging.ERROR:
                self._ros.error(text)
            elif record.levelno >= logging.WARNING:
                self._ros.warning(text)
            elif record.levelno >= logging.INFO:
                self._ros.info(text)
            else:
                self._ros.debug(text)
        except Exception:  # logging must never take the worker down
            self.handleError(record)


def main(argv: list[str] | None = None) -> int:
    """Console script ``ego_worker``: ``ego-ros worker``'s options, then ``--ros-args ...``."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions
    from rclpy.utilities import remove_ros_args

    from ego_ros.serving.worker import __doc__ as worker_doc
    from ego_ros.serving.worker import add_arguments, config_from_args, generate_keys, run_worker

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="ego_worker", description=__doc__ + "\n" + worker_doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    args = parser.parse_args(remove_ros_args(["ego_worker", *argv])[1:])
    if args.gen_keys is not None:  # writes files and exits: no ROS needed
        for path in generate_keys(args.gen_keys, args.key_name):
            print(path)
        return 0
    rclpy.init(args=["ego_worker", *argv], signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(WORKER_NODE_NAME)
    level = logging.DEBUG if args.verbose else logging.INFO
    handler = RosoutHandler(node.get_logger())
    package = logging.getLogger("ego_ros")
    package.addHandler(handler)
    package.setLevel(level)
    package.propagate = False  # rclpy writes the console line; no second one
    if args.verbose:
        node.get_logger().set_level(rclpy.logging.LoggingSeverity.DEBUG)
    from ego_ros.backends.base import BackendError
    from ego_ros.core.store import StoreError

    try:
        return run_worker(config_from_args(args))
    except (ValueError, OSError, BackendError, StoreError) as exc:
        # start-up: options, model, store: a message (also on /rosout), no traceback
        node.get_logger().fatal(f"cannot start: {exc}")
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        package.removeHandler(handler)
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())

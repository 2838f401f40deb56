"""Frames a camera publishes vs frames a subscription receives, per QoS pairing, over real DDS.

    .venv/bin/python benchmarks/bench_qos.py                    # 10 s per trial, all pairings
    .venv/bin/python benchmarks/bench_qos.py --seconds 5 --formats raw --subscribers node
    .venv/bin/python benchmarks/bench_qos.py --transport shm    # Fast DDS shared memory only

Data flow of one trial (three processes, so neither side shares a GIL with the other)::

    this script --starts--> subscriber process (role sub: a plain subscription, reliable or
                            best effort, or role node: an ego_node with qos.reliability auto,
                            the tiny model in-process, recognitions on)
                --starts--> publisher process (role pub): 640x480 frames at 30 Hz, bgr8
                            Image or JPEG CompressedImage, reliable or best effort, for
                            --seconds after it matched the subscription (or after 5 s
                            without a match: incompatible QoS)
    publisher exits --> the subscriber is told to stop (stdin) after a 1 s drain and prints
    what it received; delivered msg/s = received / seconds, ratio = received / sent.

The publisher's QoS is what camera drivers use: reliable keep-last 10 (rclpy's default
profile, e.g. usb_cam) or best effort keep-last 5 (sensor data, e.g. realsense). The plain
subscriptions are keep-last 5 like the node's default ``qos.depth``; their callback only
counts. ``--transport`` sets ``FASTDDS_BUILTIN_TRANSPORTS`` for both processes (``default``
leaves the environment alone); ``--discovery`` sets ``ROS_AUTOMATIC_DISCOVERY_RANGE``. Every
trial gets its own ``ROS_DOMAIN_ID``. The node's count is ``frames_received`` (frames its
camera callback took, before conversion) and it reports the reliability it chose.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

log = logging.getLogger("bench_qos")
SIZE = (480, 640)
CAMERA_HZ = 30.0
MATCH_TIMEOUT_S = 5.0  # a publisher that matched nothing by then publishes anyway
DRAIN_S = 1.0
PUBLISHERS = ("reliable", "best_effort")
SUBSCRIBERS = ("reliable", "best_effort", "node")
FORMATS = ("raw", "compressed")
TRANSPORTS = ("default", "shm", "udp", "large_data", "ego_shm")  # ego_shm: config/fastdds_shm.xml


def _qos(kind: str, depth: int) -> Any:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    reliability = (ReliabilityPolicy.RELIABLE if kind == "reliable"
                   else ReliabilityPolicy.BEST_EFFORT)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability,
                      durability=DurabilityPolicy.VOLATILE)


def _messages(fmt: str) -> list[Any]:
    from ego_ros.ros.convert import rgb_to_compressed_msg, rgb_to_image_msg

    frames = [common.scene(seed, SIZE) for seed in range(4)]
    if fmt == "raw":
        return [rgb_to_image_msg(f, "bgr8") for f in frames]
    return [rgb_to_compressed_msg(f, "jpeg") for f in frames]


def _topic(fmt: str) -> str:
    return "/camera/image_raw" if fmt == "raw" else "/camera/image_raw/compressed"


# -- roles (each a process of its own) -------------------------------------------------------
def role_pub(fmt: str, kind: str, seconds: float) -> dict[str, Any]:
    import rclpy
    from rclpy.node import Node

    from ego_ros.ros.convert import ns_to_stamp

    rclpy.init()
    node = Node("bench_camera")
    msgs = _messages(fmt)
    pub = node.create_publisher(type(msgs[0]), _topic(fmt), _qos(kind, 10 if kind == "reliable"
                                                                  else 5))
    deadline = time.monotonic() + MATCH_TIMEOUT_S
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    matched = pub.get_subscription_count() > 0
    sent, start = 0, time.monotonic()
    period = 1.0 / CAMERA_HZ
    while True:
        due = start + sent * period
        if due - start >= seconds:
            break
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        msg = msgs[sent % len(msgs)]
        msg.header.stamp = ns_to_stamp(time.time_ns())
        pub.publish(msg)
        sent += 1
    elapsed = time.monotonic() - start
    size = len(msgs[0].data)
    node.destroy_node()
    rclpy.try_shutdown()
    return {"sent": sent, "seconds": elapsed, "matched": matched, "bytes": size}


def role_sub(fmt: str, kind: str) -> dict[str, Any]:
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import CompressedImage, Image

    rclpy.init()
    node = Node("bench_listener")
    count = [0]
    msg_type = Image if fmt == "raw" else CompressedImage
    node.create_subscription(msg_type, _topic(fmt), lambda _m: count.__setitem__(
        0, count[0] + 1), _qos(kind, 5))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    print("ready", flush=True)
    sys.stdin.readline()  # the orchestrator's stop
    received = count[0]
    executor.shutdown(timeout_sec=2.0)
    spinner.join(timeout=5.0)
    node.destroy_node()
    rclpy.try_shutdown()
    return {"received": received, "reliability": kind}


def role_node(fmt: str) -> dict[str, Any]:
    import threading

    import rclpy
    from rclpy.parameter import Parameter

    from ego_ros.ros.diagnostics import status_values
    from ego_ros.ros.executor import EgoExecutor
    from ego_ros.ros.node import EgoNode

    # remapped as the launch file's camera_topic does
    rclpy.init(args=["--ros-args", "-r", f"image:={_topic('raw')}", "-r",
                     f"image/compressed:={_topic('compressed')}"])
    with tempfile.TemporaryDirectory() as store:
        overrides = [Parameter("store.dir", value=store),
                     Parameter("image.compressed", value=fmt == "compressed"),
                     Parameter("qos.reliability", value="auto")]
        node = EgoNode(parameter_overrides=overrides)
        executor = EgoExecutor(num_threads=6)
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        print("ready", flush=True)
        sys.stdin.readline()
        camera = status_values(node.diagnostics()[0])  # the "camera input" status
        received = int(camera["frames_received"])
        chosen = node.image_reliability
        executor.shutdown(timeout_sec=5.0)
        spinner.join(timeout=10.0)
        node.destroy_node()
    rclpy.try_shutdown()
    return {"received": received, "reliability": chosen}


# -- orchestration ---------------------------------------------------------------------------
def _env(domain: int, transport: str, discovery: str, segment_mb: int) -> dict[str, str]:
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1")
    env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    if transport == "ego_shm":
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(_shm_profile(segment_mb))
    elif transport != "default":
        env["FASTDDS_BUILTIN_TRANSPORTS"] = {"shm": "SHM", "udp": "UDPv4",
                                             "large_data": "LARGE_DATA"}[transport]
    if discovery:
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = discovery
    here = str(Path(__file__).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join([here, str(Path(here).parent),
                                         env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


SHM_PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_shm.xml"


def _shm_profile(segment_mb: int) -> Path:
    """The shipped profile, or a copy of it with another segment size."""
    if not segment_mb:
        return SHM_PROFILE
    text = re.sub(r"<segment_size>\d+</segment_size>",
                  f"<segment_size>{segment_mb * 1024 * 1024}</segment_size>",
                  SHM_PROFILE.read_text(encoding="utf-8"))
    path = Path(tempfile.gettempdir()) / f"bench_qos_shm_{os.getuid()}_{segment_mb}.xml"
    path.write_text(text, encoding="utf-8")
    return path


def _child(args: list[str], env: dict[str, str], stdin: bool) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], env=env,
                            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen, timeout_s: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout_s)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child exited {proc.returncode}: {out[-2000:]}")
    return json.loads(lines[-1])


def trial(fmt: str, pub_kind: str, sub_kind: str, seconds: float, domain: int,
          transport: str, discovery: str, segment_mb: int = 0) -> dict[str, Any]:
    env = _env(domain, transport, discovery, segment_mb)
    sub_args = (["--role", "node", "--format", fmt] if sub_kind == "node"
                else ["--role", "sub", "--format", fmt, "--kind", sub_kind])
    sub = _child(sub_args, env, stdin=True)
    try:
        ready = sub.stdout.readline()
        while ready and ready.strip() != "ready":
            ready = sub.stdout.readline()
        if not ready:
            raise RuntimeError(f"subscriber ({sub_kind}) exited before it was ready")
        pub = _child(["--role", "pub", "--format", fmt, "--kind", pub_kind, "--seconds",
                      str(seconds)], env, stdin=False)
        sent = _result(pub, seconds + MATCH_TIMEOUT_S + 60)
        time.sleep(DRAIN_S)
        sub.stdin.write("stop\n")
        sub.stdin.flush()
        got = _result(sub, 60)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    return {"format": fmt, "publisher": pub_kind, "subscriber": sub_kind,
            "subscribed": got["reliability"], "matched": sent["matched"],
            "sent": sent["sent"], "received": got["received"], "seconds": sent["seconds"],
            "msg_per_s": got["received"] / sent["seconds"],
            "ratio": common.ratio(got["received"], sent["sent"]), "bytes": sent["bytes"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="publishing time per trial (default: %(default)s)")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--publishers", default=",".join(PUBLISHERS))
    parser.add_argument("--subscribers", default=",".join(SUBSCRIBERS))
    parser.add_argument("--transport", choices=TRANSPORTS, default="default",
                        help="FASTDDS_BUILTIN_TRANSPORTS for both sides (default: unset)")
    parser.add_argument("--discovery", default="",
                        help="ROS_AUTOMATIC_DISCOVERY_RANGE for both sides (default: as set)")
    parser.add_argument("--shm-segment-mb", type=int, default=0, metavar="MB",
                        help="with --transport ego_shm: the segment size instead of the "
                             "shipped config/fastdds_shm.xml's")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    # the child roles
    parser.add_argument("--role", choices=("pub", "sub", "node"), help=argparse.SUPPRESS)
    parser.add_argument("--format", choices=FORMATS, help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=PUBLISHERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.role == "pub":
        print(json.dumps(role_pub(args.format, args.kind, args.seconds)), flush=True)
        return 0
    if args.role == "sub":
        print(json.dumps(role_sub(args.format, args.kind)), flush=True)
        return 0
    if args.role == "node":
        print(json.dumps(role_node(args.format)), flush=True)
        return 0

    rows = []
    base = 100 + os.getpid() % 100
    for fmt in args.formats.split(","):
        for pub_kind in args.publishers.split(","):
            for sub_kind in args.subscribers.split(","):
                row = trial(fmt, pub_kind, sub_kind, args.seconds, base + len(rows) % 32,
                            args.transport, args.discovery, args.shm_segment_mb)
                rows.append(row)
                log.warning("%s", json.dumps(row))
    info = {"cpu": common.cpu_name(), "cpu_cores": os.cpu_count(),
            "python": platform.python_version(), "transport": args.transport,
            "discovery": args.discovery or os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE",
                                                          "(unset: SUBNET)"),
            "load_average": os.getloadavg(), "camera_hz": CAMERA_HZ, "size": SIZE}
    if args.json:
        print(json.dumps({"host": info, "trials": rows}, indent=2))
        return 0
    print(f"host: {info}")
    print("| format | publisher | subscriber | subscribed as | sent | received | msg/s "
          "| delivered |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['format']} ({r['bytes'] // 1000} kB) | {r['publisher']} | "
              f"{r['subscriber']} | {r['subscribed']} | {r['sent']} | {r['received']} | "
              f"{r['msg_per_s']:.1f} | {r['ratio']:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

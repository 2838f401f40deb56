"""What the ROS node adds around the model: frame ingest, clip hand-off, and the worker hop.

    .venv/bin/python benchmarks/bench_node.py               # tiny model, CPU
    .venv/bin/python benchmarks/bench_node.py --quick --json

Three measurements, on 640x480 frames (generated scenes, ``common.scene``):

  ingest        what the camera callback does per frame: decode the message into RGB
                (bgr8 ``Image`` or JPEG ``CompressedImage``) and push it into the FrameBuffer;
                median ms and the share of one core at 30 Hz. rclpy's deserialisation of
                the message (done by the executor before the callback) is timed separately.
  end_to_end    a live ego_node (in-process tiny model, one known concept) fed 30 Hz bgr8
                frames over DDS: for each Recognition, receive time - frame stamp - the
                engine's own latency_ms. That includes the age of the newest frame when the
                clip timer fires (up to one frame interval), the hand-off to the inference
                thread, message building and DDS delivery; the parts are listed as well.
  executor      the node's camera path at 30 Hz for a few seconds, spun by rclpy's
                MultiThreadedExecutor and by the node's EgoExecutor: frames the node took in
                per second and this process's CPU use (the publisher included). rclpy 7.1.x
                re-submits queued callbacks in a tight loop (ros2/rclpy#1452).
  worker        the same 4-frame clip recognised by an in-process EgoEngine and by an
                ``ego-ros worker`` subprocess over loopback TCP (same model, same store),
                interleaved: the difference is the cost of the hop (wire encoding of ~3.7 MB
                of frames, two socket copies, decoding, JSON result).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common

log = logging.getLogger("bench_node")
SIZE = (480, 640)
CAMERA_HZ = 30.0
TARGETS = {"ingest_ms": 2.0, "ingest_core_percent": 5.0, "overhead_ms": 20.0}


def bench_ingest(repeats: int) -> dict[str, Any]:
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CompressedImage, Image

    from ego_ros.ros.convert import (
        compressed_msg_to_rgb,
        image_msg_to_rgb,
        rgb_to_compressed_msg,
        rgb_to_image_msg,
    )
    from ego_ros.stream import Frame, FrameBuffer

    rgb = common.scene(0, SIZE)
    raw, jpeg = rgb_to_image_msg(rgb, "bgr8"), rgb_to_compressed_msg(rgb, "jpeg", 90)
    raw_bytes, jpeg_bytes = serialize_message(raw), serialize_message(jpeg)
    buffer = FrameBuffer(90, 5.0)
    clock = iter(range(10**12))

    def ingest(msg, convert) -> None:
        now = next(clock) * 33_000_000
        buffer.push(Frame(convert(msg), now, "cam", now))

    timings = common.interleaved({
        "bgr8": lambda: ingest(raw, image_msg_to_rgb),
        "jpeg": lambda: ingest(jpeg, compressed_msg_to_rgb),
        "bgr8_deserialize": lambda: deserialize_message(raw_bytes, Image),
        "jpeg_deserialize": lambda: deserialize_message(jpeg_bytes, CompressedImage),
    }, repeats=repeats, warmup=10)
    out: dict[str, Any] = {"jpeg_bytes": len(jpeg.data)}
    for name, timing in timings.items():
        out[name] = {**timing.to_dict(),
                     "core_percent_at_30hz": round(timing.median_ms * CAMERA_HZ / 10.0, 2)}
    return out


def _introduce_concept(model: Path, store: Path) -> None:
    """Put one concept ("my mug", from a generated scene) into ``store``."""
    from ego_ros.backends.base import BackendConfig
    from ego_ros.backends.loading import load_backend
    from ego_ros.core.engine import EgoEngine
    from ego_ros.core.store import MemoryStore

    backend = load_backend(BackendConfig(model, device="cpu", dtype="float32"))
    engine = EgoEngine(backend, MemoryStore(store, backend.fingerprint))
    engine.introduce("my mug", [common.scene(1, SIZE, objects=(0,))])


def bench_end_to_end(model: Path, store: Path, count: int) -> dict[str, Any]:
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from ego_interfaces.msg import Recognition
    from ego_ros.ros.convert import ns_to_stamp, rgb_to_image_msg, stamp_to_ns
    from ego_ros.ros.diagnostics import status_values
    from ego_ros.ros.executor import EgoExecutor
    from ego_ros.ros.node import EgoNode

    context = Context()
    rclpy.init(context=context)
    executor = EgoExecutor(num_threads=4, context=context)
    params = {"model.path": str(model), "store.dir": str(store), "model.device": "cpu",
              "clip.period_s": 0.75, "clip.num_frames": 4, "clip.window_s": 1.0}
    node = EgoNode(context=context,
                   parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    camera = Node("bench_camera", context=context)
    executor.add_node(node)
    executor.add_node(camera)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    samples: list[tuple[int, Recognition]] = []
    done = threading.Event()

    def on_recognition(msg: Recognition) -> None:
        samples.append((time.time_ns(), msg))
        if len(samples) >= count + 2:
            done.set()

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    camera.create_subscription(Recognition, "/ego_node/recognition", on_recognition, reliable)
    pub = camera.create_publisher(Image, "/image",
                                  QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
    frames = [rgb_to_image_msg(common.scene(s, SIZE, objects=(0,)), "bgr8") for s in (1, 2, 3)]
    deadline = time.monotonic() + 10
    while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        index = 0
        next_at = time.monotonic()
        while not done.is_set() and time.monotonic() < deadline + 30 + 2 * count:
            msg = frames[index % len(frames)]
            msg.header.stamp, msg.header.frame_id = ns_to_stamp(time.time_ns()), "cam"
            pub.publish(msg)
            index += 1
            next_at += 1.0 / CAMERA_HZ
            time.sleep(max(0.0, next_at - time.monotonic()))
        parts = {s.name.split(": ")[-1]: status_values(s) for s in node.diagnostics()}
    finally:
        executor.shutdown(timeout_sec=5.0)
        node.destroy_node()
        camera.destroy_node()
        context.try_shutdown()
    used = samples[2:]  # the first clips pay for warm-up (first prefix, allocator growth)
    if not used:
        raise RuntimeError("the node published no recognitions")
    overhead = [(rx - stamp_to_ns(m.header.stamp)) / 1e6 - m.latency_ms for rx, m in used]
    engine, clips = parts["engine"], parts["clips"]
    return {
        "recognitions": len(used),
        "frames_sent": index,
        "overhead_median_ms": round(statistics.median(overhead), 2),
        "overhead_max_ms": round(max(overhead), 2),
        "engine_latency_median_ms": round(statistics.median(m.latency_ms for _, m in used), 1),
        "frame_age_at_sampling_median_ms": float(clips.get("sample_age_median_ms", "nan")),
        "handoff_median_ms": float(clips.get("handoff_median_ms", "nan")),
        "engine_call_minus_latency_ms": round(float(engine.get("call_median_ms", "nan"))
                                              - float(engine.get("inference_median_ms", "nan")),
                                              2),
        "clips_skipped": int(clips["clips_skipped"]),
    }


def bench_executor(model: Path, store: Path, seconds: float) -> dict[str, Any]:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from ego_ros.ros.convert import ns_to_stamp, rgb_to_image_msg
    from ego_ros.ros.diagnostics import status_values
    from ego_ros.ros.executor import EgoExecutor
    from ego_ros.ros.node import EgoNode

    frame = rgb_to_image_msg(common.scene(1, SIZE, objects=(0,)), "bgr8")
    out: dict[str, Any] = {}
    for name, kind in (("rclpy_multi_threaded", MultiThreadedExecutor),
                       ("ego_executor", EgoExecutor)):
        context = Context()
        rclpy.init(context=context)
        params = {"model.path": str(model), "store.dir": str(store), "model.device": "cpu",
                  "tasks.recognize": False}  # the camera path alone
        node = EgoNode(context=context,
                       parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        camera = Node("bench_camera", context=context)
        executor = kind(num_threads=4, context=context)
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        pub = camera.create_publisher(Image, "/image",
                                      QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        deadline = time.monotonic() + 10
        while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            start_cpu = time.process_time()
            start_frames = int(status_values(node.diagnostics()[0])["frames_received"])
            started = time.monotonic()
            next_at = started
            while time.monotonic() - started < seconds:
                frame.header.stamp = ns_to_stamp(time.time_ns())
                pub.publish(frame)
                next_at += 1.0 / CAMERA_HZ
                time.sleep(max(0.0, next_at - time.monotonic()))
            elapsed = time.monotonic() - started
            cpu = time.process_time() - start_cpu
            values = status_values(node.diagnostics()[0])
            out[name] = {"frames_per_s": round((int(values["frames_received"]) - start_frames)
                                               / elapsed, 1),
                         "process_cpu_percent": round(100.0 * cpu / elapsed, 1)}
        finally:
            executor.shutdown(timeout_sec=5.0)
            node.destroy_node()
            camera.destroy_node()
            context.try_shutdown()
    return out


def _free_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def bench_worker(model: Path, store: Path, repeats: int) -> dict[str, Any]:
    from ego_ros.backends.base import BackendConfig
    from ego_ros.backends.loading import load_backend
    from ego_ros.core.engine import EgoEngine
    from ego_ros.core.store import MemoryStore
    from ego_ros.serving.remote import RemoteEngine

    clip = [common.scene(s, SIZE, objects=(0,)) for s in range(4)]
    backend = load_backend(BackendConfig(model, device="cpu", dtype="float32"))
    local = EgoEngine(backend, MemoryStore(store, backend.fingerprint))
    endpoint = _free_endpoint()
    worker = subprocess.Popen([sys.executable, "-m", "ego_ros.serving.worker", "--model",
                               str(model), "--store", str(store), "--bind", endpoint,
                               "--device", "cpu", "--dtype", "float32"],
                              stderr=subprocess.DEVNULL, env=os.environ.copy())
    remote_latency: list[float] = []
    try:
        with RemoteEngine(endpoint, timeout_s=120.0) as remote:
            remote.wait_ready(120.0)

            def call_remote() -> None:
                remote_latency.append(remote.recognize(clip, clip=True).latency_ms)

            timings = common.interleaved({
                "in_process": lambda: local.recognize(clip, clip=True),
                "worker": call_remote,
            }, repeats=repeats, warmup=2)
    finally:
        worker.terminate()
        worker.wait(30)
    inproc, over = timings["in_process"].median_ms, timings["worker"].median_ms
    timed = remote_latency[-repeats:]
    return {
        "in_process": timings["in_process"].to_dict(), "worker": timings["worker"].to_dict(),
        "overhead_ms": round(over - inproc, 2),
        "worker_wall_minus_engine_ms": round(over - statistics.median(timed), 2),
        "ratio": round(common.ratio(over, inproc), 3),
    }


def report(results: dict[str, Any]) -> str:
    ingest = results["ingest"]
    rows = [[name, ingest[name]["median_ms"], ingest[name]["core_percent_at_30hz"]]
            for name in ("bgr8", "jpeg", "bgr8_deserialize", "jpeg_deserialize")]
    lines = ["ingest per 640x480 frame (convert + buffer; rclpy deserialise separately)",
             common.format_table(rows, ["variant", "median ms", "% core @30 Hz"]), ""]
    e2e = results["end_to_end"]
    lines += ["node end to end (30 Hz bgr8, 4-frame clips, 1 concept)",
              common.format_table([[k, v] for k, v in e2e.items()], ["measure", "value"]), ""]
    executor = results["executor"]
    rows = [[name, v["frames_per_s"], v["process_cpu_percent"]] for name, v in executor.items()]
    lines += ["camera path at 30 Hz (frames taken in per s; process CPU incl. publisher)",
              common.format_table(rows, ["executor", "frames/s", "CPU %"]), ""]
    worker = results["worker"]
    rows = [["in-process", worker["in_process"]["median_ms"]],
            ["worker (loopback)", worker["worker"]["median_ms"]],
            ["overhead", worker["overhead_ms"]],
            ["worker wall - engine latency", worker["worker_wall_minus_engine_ms"]]]
    lines += ["same 4-frame clip: in-process vs worker",
              common.format_table(rows, ["variant", "median ms"])]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help="model folder (default: the tiny Qwen2.5-VL, built offline)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if args.model is None:
        from ego_ros.backends.tiny import ensure_tiny_model

        args.model = ensure_tiny_model("qwen2_5_vl")
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        _introduce_concept(args.model, store)
        results = {
            "ingest": bench_ingest(50 if args.quick else 300),
            "end_to_end": bench_end_to_end(args.model, store, 4 if args.quick else 16),
            "executor": bench_executor(args.model, store, 3.0 if args.quick else 8.0),
            "worker": bench_worker(args.model, store, 3 if args.quick else 12),
            "host": common.host_info(),
            "targets": TARGETS,
        }
    if args.json:
        json.dump(results, sys.stdout, indent=1)
        print()
    else:
        print(report(results))
        host = results["host"]
        print(f"\nhost: {host['cpu']} ({host['cpu_cores']} cores), torch {host['torch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

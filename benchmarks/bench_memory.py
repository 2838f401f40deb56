"""Memory of ``ego_node`` under hostile input: resident memory before and after frame bombs.

    .venv/bin/python benchmarks/bench_memory.py [--bombs 20] [--json] [--part frames]

Each part is one entry of ``PARTS`` and reports its own numbers; ``--part`` picks some (default:
all). The ``frames`` part (issue 11, item 1) measures:

- one bomb alone: a 49 KB PNG declaring 20000x20000 one-bit pixels. Refusing it from its header
  (the node's converter, default cap) against decoding it unguarded with ``cv2.imdecode`` in a
  child process (time, and the child's peak RSS growth);
- a real ``ego_node`` process (tiny model, ``image/compressed``, 640x480 JPEG at 15 Hz) sent
  ``--bombs`` bombs and a few PNGs too small for the model once its frame buffer is in steady
  state: its RSS and peak RSS (``VmRSS``, ``VmHWM`` from ``/proc``) before and after, what
  /diagnostics counted, the bytes its frame buffer held, and whether Recognitions of clips cut
  after the bombs still arrived;
- the frame buffer's byte budget: ``buffer.max_frames`` (90) frames of the largest allowed size
  (4096x4096) pushed into a ``FrameBuffer`` with the default ``buffer.max_bytes``: bytes held and
  this process's RSS growth, against what the count bound alone would hold.
"""

from __future__ import annotations

import argparse
import array
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import common
import numpy as np

log = logging.getLogger("bench_memory")
ROOT = Path(__file__).resolve().parents[1]
MB = 2**20


def memory(pid: int | str = "self") -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of a process from ``/proc``, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit grey PNG of ``width`` x ``height`` zero pixels (deflate level 9)."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    row = b"\0" * (1 + (width + 7) // 8)
    deflate = zlib.compressobj(9)
    body = b"".join(deflate.compress(row * min(1000, height - done))
                    for done in range(0, height, 1000)) + deflate.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body)
            + chunk(b"IEND", b""))


_DECODE_CHILD = """
import resource, sys, time, cv2, numpy as np
data = np.frombuffer(sys.stdin.buffer.read(), np.uint8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
img = cv2.imdecode(data, cv2.IMREAD_COLOR)
print(time.perf_counter() - started, img.shape[0], img.shape[1],
      (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def bench_one_bomb(decode: bool) -> dict[str, Any]:
    from sensor_msgs.msg import CompressedImage

    from ego_ros.imaging import FrameSizeError, compressed_to_rgb

    bomb = png_bomb(20000, 20000)
    msg = CompressedImage(format="png")
    msg.data = array.array("B", bomb)

    def refuse() -> None:
        try:
            compressed_to_rgb(msg)
        except FrameSizeError:
            return
        raise RuntimeError("the bomb was not refused")

    timing = common.interleaved({"refuse": refuse}, repeats=50, warmup=3)["refuse"]
    out: dict[str, Any] = {"bomb_bytes": len(bomb), "declared": "20000x20000",
                           "decoded_rgb_bytes": 20000 * 20000 * 3,
                           "refuse_median_ms": round(timing.median_ms, 4)}
    if decode:
        child = subprocess.run([sys.executable, "-c", _DECODE_CHILD], input=bomb,
                               capture_output=True, timeout=300, check=True)
        seconds, height, width, peak = child.stdout.split()
        out.update({"unguarded_decode_s": round(float(seconds), 2),
                    "unguarded_shape": f"{width}x{height}",
                    "unguarded_peak_rss_growth_mb": round(int(peak) / MB, 1)})
    return out


def _params_file(path: Path, model: Path, store: Path) -> Path:
    path.write_text(f"""/**:
  ros__parameters:
    model.path: "{model}"
    store.dir: "{store}"
    model.device: "cpu"
    image.compressed: true
    qos.reliability: "reliable"
    qos.depth: 50
    clip.period_s: 0.5
    clip.num_frames: 2
    clip.window_s: 0.5
    diagnostics.period_s: 0.25
""")
    return path


def _wait(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)
    return value


def bench_node(model: Path, bombs: int, small: int) -> dict[str, Any]:
    """A real ego_node process: RSS before/after ``bombs`` PNG bombs and ``small`` 4x4 PNGs."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.context import Context
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage

    from ego_interfaces.msg import Recognition
    from ego_ros.ros.convert import ns_to_stamp, rgb_to_compressed_msg, stamp_to_ns
    from ego_ros.ros.diagnostics import status_values
    from ego_ros.ros.executor import EgoExecutor

    tmp = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    params = _params_file(tmp / "ego.yaml", model, tmp / "store")
    node_log = (tmp / "node.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "ego_ros.ros.node", "--ros-args",
                             "--params-file", str(params)], stdout=node_log, stderr=node_log,
                            cwd=ROOT)
    context = Context()
    rclpy.init(context=context)
    executor = EgoExecutor(num_threads=2, context=context)
    client = Node("bench_memory", context=context)
    executor.add_node(client)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    recognitions: list[Recognition] = []
    camera_status: list[dict[str, str]] = []

    def on_diagnostics(msg: DiagnosticArray) -> None:
        camera_status.extend(status_values(s) for s in msg.status
                             if s.name.endswith("camera input"))

    client.create_subscription(Recognition, "/ego_node/recognition", recognitions.append,
                               reliable)
    client.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, reliable)
    pub = client.create_publisher(CompressedImage, "/image/compressed", reliable)
    good = [rgb_to_compressed_msg(common.scene(s, (480, 640)), "jpeg") for s in (1, 2, 3)]
    stop = threading.Event()

    def camera() -> None:
        index = 0
        while not stop.wait(1 / 15):
            msg = good[index % len(good)]
            msg.header.stamp, msg.header.frame_id = ns_to_stamp(time.time_ns()), "cam"
            pub.publish(msg)
            index += 1

    thread = threading.Thread(target=camera, daemon=True)
    try:
        _wait(lambda: proc.poll() is not None or pub.get_subscription_count() > 0, 180,
              "the node's subscription")
        if proc.poll() is not None:
            raise RuntimeError(f"ego_node exited: {(tmp / 'node.log').read_text()[-2000:]}")
        thread.start()
        camera_started = time.monotonic()
        _wait(lambda: len(recognitions) >= 3, 120, "three recognitions")
        # Steady state first: the buffer fills for buffer.max_age_s (5 s) of good frames.
        time.sleep(max(0.0, 5.5 - (time.monotonic() - camera_started)))
        before = memory(proc.pid)
        buffered_before = int(camera_status[-1]["buffered_bytes"])
        bomb = CompressedImage(format="png")
        bomb.data = array.array("B", png_bomb(20000, 20000))
        tiny = CompressedImage(format="png")
        tiny.data = array.array("B", png_bomb(4, 4))
        started = time.monotonic()
        for i in range(bombs):
            pub.publish(bomb)
            if small and i % max(1, bombs // small) == 0 and i // max(1, bombs // small) < small:
                pub.publish(tiny)
            time.sleep(0.05)
        expected = str(bombs + small)
        counted = _wait(lambda: next((v for v in reversed(camera_status)
                                      if v["frames_refused_size"] == expected), None), 60,
                        f"{expected} refused frames on /diagnostics")
        counted_s = time.monotonic() - started
        after_bombs = time.time_ns()
        _wait(lambda: [r for r in recognitions if stamp_to_ns(r.clip_start) > after_bombs], 60,
              "a recognition after the bombs")
        time.sleep(2.0)  # a few more clips, then the final reading
        after = memory(proc.pid)
        last = camera_status[-1]
        later = sum(1 for r in recognitions if stamp_to_ns(r.clip_start) > after_bombs)
    finally:
        stop.set()
        proc.send_signal(2)  # SIGINT: the node's own clean shutdown
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        executor.shutdown(timeout_sec=5.0)
        client.destroy_node()
        context.try_shutdown()
        node_log.close()
    return {
        "bombs_sent": bombs, "small_frames_sent": small,
        "rss_before_mb": round(before["VmRSS"] / MB, 1),
        "rss_after_mb": round(after["VmRSS"] / MB, 1),
        "rss_growth_mb": round((after["VmRSS"] - before["VmRSS"]) / MB, 1),
        "peak_rss_before_mb": round(before["VmHWM"] / MB, 1),
        "peak_rss_after_mb": round(after["VmHWM"] / MB, 1),
        "peak_rss_growth_mb": round((after["VmHWM"] - before["VmHWM"]) / MB, 1),
        "seconds_until_all_counted": round(counted_s, 2),
        "conversion_errors": int(counted["conversion_errors"]),
        "frames_refused_size": int(counted["frames_refused_size"]),
        "buffered_bytes_before": buffered_before,
        "buffered_frames_after": int(last["buffered_frames"]),
        "buffered_bytes_after": int(last["buffered_bytes"]),
        "recognitions_after_bombs": later,
    }


def bench_buffer_budget(frames: int = 90) -> dict[str, Any]:
    """``frames`` frames of 4096x4096 into a buffer with the default byte budget."""
    from ego_ros.image_header import DEFAULT_MAX_PIXELS
    from ego_ros.ros.params import SPECS
    from ego_ros.stream import Frame, FrameBuffer

    max_bytes = SPECS["buffer.max_bytes"].default
    buffer = FrameBuffer(SPECS["buffer.max_frames"].default, 3600.0, max_bytes=max_bytes)
    before = memory()
    peak_held = 0
    for i in range(frames):
        rgb = np.full((4096, 4096, 3), i % 251, np.uint8)  # touched: counted in RSS
        buffer.push(Frame(rgb, i * 33_000_000, "cam", i * 33_000_000))
        peak_held = max(peak_held, buffer.nbytes)
    after = memory()
    frame_bytes = DEFAULT_MAX_PIXELS * 3
    return {"frames_pushed": frames, "frame_bytes": frame_bytes, "max_bytes": max_bytes,
            "frames_held": len(buffer), "bytes_held": buffer.nbytes,
            "peak_bytes_held": peak_held, "evicted_by_bytes": buffer.dropped_by_bytes,
            "rss_growth_mb": round((after["VmRSS"] - before["VmRSS"]) / MB, 1),
            "count_bound_alone_would_hold_mb": round(frames * frame_bytes / MB, 1)}


def bench_frames(args: argparse.Namespace) -> dict[str, Any]:
    return {"one_bomb": bench_one_bomb(not args.no_decode),
            "node": bench_node(args.model, args.bombs, args.small),
            "buffer_budget": bench_buffer_budget()}


def report_frames(res: dict[str, Any]) -> str:
    one, node, buf = res["one_bomb"], res["node"], res["buffer_budget"]
    rows = [["bomb size on the wire", f"{one['bomb_bytes']:,} B"],
            ["declared", one["declared"]],
            ["RGB it would decode to", f"{one['decoded_rgb_bytes'] / MB:,.0f} MB"],
            ["refused from the header (median)", f"{one['refuse_median_ms']} ms"]]
    if "unguarded_decode_s" in one:
        rows += [["decoded unguarded (cv2.imdecode)", f"{one['unguarded_decode_s']} s"],
                 ["  peak RSS growth of that process", f"{one['unguarded_peak_rss_growth_mb']}"
                  " MB"]]
    lines = ["one PNG bomb", common.format_table(rows, ["measure", "value"]), ""]
    rows = [[k, v] for k, v in node.items()]
    lines += [f"ego_node process (tiny model, 640x480 JPEG at 15 Hz) under {node['bombs_sent']} "
              "bombs", common.format_table(rows, ["measure", "value"]), ""]
    rows = [[k, v] for k, v in buf.items()]
    lines += ["frame buffer byte budget (90 frames of 4096x4096 pushed)",
              common.format_table(rows, ["measure", "value"])]
    return "\n".join(lines)


# name -> (run(args) -> results, report(results) -> text). Issue 11 item 2 (long questions)
# adds its part here.
PARTS: dict[str, tuple[Callable[[argparse.Namespace], dict], Callable[[dict], str]]] = {
    "frames": (bench_frames, report_frames),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", action="append", choices=sorted(PARTS),
                        help="run only this part (repeatable; default: all)")
    parser.add_argument("--model", type=Path, default=None,
                        help="model folder (default: the tiny Qwen2.5-VL, built offline)")
    parser.add_argument("--bombs", type=int, default=20, help="PNG bombs sent to the node")
    parser.add_argument("--small", type=int, default=5,
                        help="PNGs under the model's minimum side sent with them")
    parser.add_argument("--no-decode", action="store_true",
                        help="skip decoding one bomb unguarded (4 s, 2.4 GB in a child)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))  # away from others
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if args.model is None:
        from ego_ros.backends.tiny import ensure_tiny_model

        args.model = ensure_tiny_model("qwen2_5_vl")
    results: dict[str, Any] = {}
    for name in args.part or list(PARTS):
        run, _ = PARTS[name]
        results[name] = run(args)
    results["host"] = {"cpu": common.cpu_name(), "cpu_cores": os.cpu_count(),
                       "load_average": [round(x, 2) for x in os.getloadavg()]}
    if args.json:
        json.dump(results, sys.stdout, indent=1)
        print()
    else:
        for name in args.part or list(PARTS):
            print(PARTS[name][1](results[name]) + "\n")
        host = results["host"]
        print(f"host: {host['cpu']} ({host['cpu_cores']} cores), load average "
              f"{host['load_average']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ego-ros demo: the whole story end to end, on the embedded offline model by default.

    ego-ros demo
    ego-ros demo --model ~/models/Qwen2.5-VL-7B-Instruct --out ~/ego_demo

1. a camera stream: a synthetic rosbag2 bag of pans and zooms over a room with three objects
   (kiro, a red striped mug; tavi, a blue dotted ball; nox, a green star), with ground truth;
2. ego_node starts (ROS 2, in this process) with an in-process engine;
3. teaching: kiro's reference views are shown to the camera and ~/introduce_concept is called
   with no images, so the node learns from the frames it captured; tavi and nox are taught
   with their reference views in the request;
4. the bag is replayed into the node in real time; every Recognition is printed as it
   arrives, a question sent on ~/question comes back on ~/answer, and the bag's labelled
   multiple-choice questions go to ~/ask about their own frames (named by stamp);
5. the run is scored with the paper's metrics and a report is written (report.md, plots).

The default model is the offline tiny model: real model classes with RANDOM weights, so its
answers and scores mean nothing; the demo shows the machinery, not accuracy.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path

from ego_ros.cli.common import CliError, print_json

QUESTION = "What is kiro next to?"


def add_parser(sub: argparse._SubParsersAction) -> None:
    doc = __doc__ or ""
    parser = sub.add_parser(
        "demo", help="end-to-end demo: teach by service, replay a bag, print, report",
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help="LVLM checkpoint folder (default: the offline tiny Qwen2.5-VL)")
    parser.add_argument("--family", default="auto", help="model family (default: auto)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    parser.add_argument("--out", type=Path, default=Path("ego_demo"),
                        help="output folder: bag, concept store, report (default: ./ego_demo; "
                             "replaced on each run)")
    parser.add_argument("--frames", type=int, default=60,
                        help="frames of the synthetic camera stream at 15 fps (default: 60)")
    parser.add_argument("--period", type=float, default=0.5,
                        help="seconds between the node's clips (default: 0.5)")
    parser.set_defaults(func=run)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _print_recognition(msg) -> None:
    stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
    parts = []
    for c in msg.concepts:
        score = "n/a" if math.isnan(c.score) else f"{c.score:.2f}"
        parts.append(f"{c.name}={'yes' if c.present else 'no'} ({score})")
    _say(f"  recognition @ {stamp:.2f}: {', '.join(parts) or 'no concepts'}"
         f"  [{msg.latency_ms:.0f} ms]")


def _print_answer(msg) -> None:
    text = repr(msg.answer) if msg.answer else "(empty: the model ended its answer at once)"
    _say(f"  answer to {msg.question!r}: {text} (names: {list(msg.concepts)})")


def _taught_printer(camera_taught: str):
    def show(record) -> None:
        how = ("from frames captured by the camera" if record.concept == camera_taught
               else "from reference views in the request")
        _say(f"  taught {record.concept} {how}: {record.views} views -> {record.num_tokens} "
             "memory tokens")
    return show


def run(args: argparse.Namespace) -> int:
    if args.frames < 15:
        raise CliError(f"--frames must be at least 15, got {args.frames}")
    if not args.period > 0:
        raise CliError(f"--period must be positive, got {args.period}")
    from ego_ros.backends.base import BackendConfig, BackendError
    from ego_ros.backends.tiny import ensure_tiny_model
    from ego_ros.bag.synthetic import make_synthetic_bag
    from ego_ros.core.engine import EngineConfig
    from ego_ros.eval.live import LiveSettings, run_live
    from ego_ros.eval.offline import EvalConfig, EvalError
    from ego_ros.eval.report import compute_metrics, summary, write_report

    tiny = args.model is None
    model = ensure_tiny_model("qwen2_5_vl") if tiny else args.model.expanduser()
    try:
        backend_config = BackendConfig(model, args.family, args.dtype, args.device)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    out = args.out.expanduser().resolve()
    if out.exists():
        if not (out / "ego_demo.txt").is_file():
            raise CliError(f"{out} exists and was not written by the demo; choose --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "ego_demo.txt").write_text("written by 'ego-ros demo'; replaced on each run\n")

    if tiny:
        _say("NOTE: the model is the offline tiny model with RANDOM weights: its answers are "
             "gibberish and its scores noise. The demo shows the machinery, not accuracy.")
    _say(f"1. camera stream: synthetic bag of {args.frames} frames -> {out / 'bag'}")
    labels = make_synthetic_bag(out / "bag", seed=0, num_frames=args.frames, compressed=True)
    names = labels.concept_names
    _say(f"2-3. starting ego_node ({model}); teaching {names[0]} from captured camera frames, "
         f"{', '.join(names[1:])} from reference views")
    _say(f"4. replaying the bag into the node; asking {QUESTION!r} on ~/question and "
         "the bag's labelled questions through ~/ask")
    config = EvalConfig(refs=3, tasks=("recognition", "vqa", "caption"), progress=False)
    try:
        records = run_live(
            bag=out / "bag", labels=labels, backend_config=backend_config,
            store_dir=out / "store", config=config,
            engine_config=EngineConfig(max_in_context=len(names)),
            live=LiveSettings(period_s=args.period), on_recognition=_print_recognition,
            questions=[(1.0, QUESTION)], on_answer=_print_answer,
            on_taught=_taught_printer(names[0]), teach_from_camera=names[:1])
    except (EvalError, BackendError) as exc:
        raise CliError(str(exc)) from exc
    metrics = compute_metrics(records)
    write_report(records, out / "report", metrics)
    _say(f"5. report: {out / 'report' / 'report.md'}")
    if tiny:
        _say("With a real checkpoint (a local Qwen2.5-VL or InternVL3-hf folder):\n"
             f"  ego-ros demo --model /path/to/Qwen2.5-VL-7B-Instruct --out {args.out}")
    print_json(summary(metrics, out / "report"))
    return 0

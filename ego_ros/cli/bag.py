"""Make, inspect and play camera bags (rosbag2 folders that stock ``ros2 bag`` accepts).

    ego-ros bag synthetic --out /tmp/demo_bag --compressed
    ego-ros bag info /tmp/demo_bag
    ego-ros bag play /tmp/demo_bag --rate 2 --loop

Subcommands:

  from-images DIR... --out BAG   image files (jpg/png/bmp, natural order) as a camera stream
  from-video FILE --out BAG      a video file's frames (OpenCV), optionally resampled (--fps)
  from-dataset DATA --out BAG    a personalization dataset (--layout myvlm|yollava|this-is-my|
                                 rap-multi) as query frames plus ground truth: --views images
                                 per concept become reference views (fixed split, file names
                                 recorded in the labels), never among the queries
  synthetic --out BAG            a generated camera stream over three known objects, with
                                 per-frame ground truth (no dataset needed)
  info BAG                       topics, counts, duration and ground truth, as JSON
  play BAG                       publish the image topic through rclpy with the recorded timing

Bags made by from-dataset and synthetic carry their ground truth inside the bag folder
(``ego_labels.json``, reference views in ``ego_refs/``), which ``ego-ros eval`` reads and stock
rosbag2 tools ignore. Writers refuse to overwrite an existing BAG and print one JSON object.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ego_ros.cli.common import CliError, print_json

DEFAULT_TOPIC = "/camera/image_raw"  # ego_ros.bag.io.DEFAULT_TOPIC (kept light for --help)
STORAGES = ("sqlite3", "mcap")
LAYOUTS = ("myvlm", "yollava", "this-is-my", "rap-multi")  # ego_ros.bag.importers.LAYOUTS

FROM_DATASET_HELP = """\
A personalization dataset -> a camera bag of its query images with ground truth
(BAG/ego_labels.json, reference views in BAG/ego_refs/), for `ego-ros eval`.

  ego-ros bag from-dataset ~/data/myvlm --layout myvlm --views 5 --out /tmp/myvlm_5
  ego-ros bag from-dataset ~/YoLLaVA --layout yollava --views 1 --out /tmp/yollava_1
  ego-ros bag from-dataset ~/This-is-My-Img --layout this-is-my --part multi --views 5 \\
      --out /tmp/tim_multi_5
  ego-ros bag from-dataset ~/RAP-MLLM/data --layout rap-multi --views 1 \\
      --references ~/rap_concepts --out /tmp/rap_multi_1

Layouts (datasets/LAYOUTS.md has the facts each follows):
  myvlm       <concept>/*.jpg with captions(_augmented).json and additional_llava_vqa_data.json
              (free-form VQA). No split of its own: references by the seeded rule, every other
              photo a query, positive for its concept and negative for all others.
  yollava     yollava-data/{train,test}/<concept>/*.png: references from train, queries are the
              test images; A/B VQA from yollava-data/yollava-visual-qa.json (<sks> -> the name;
              the known-wrong brown-duck/0.png label corrected unless --keep-known-errors);
              text-only QA (RAP's file, key "option") kept in the labels as text_qa.
  this-is-my  --part single: Single-concept/train/<concept> references, test/<group>/<label>-*/
              queries with their group (Positive, Fake, Negative (Hard), Negative (Other))
              recorded per frame; --part multi: Multi-concept/test/<A>_and_<B>/ pairs; A/B and
              open-ended VQA from *visual-qa*.json (and Multi-concept/VQA/*.json).
  rap-multi   query-image-2-concepts/<A>_and_<B>/*.jpg and its pair index; reference views from
              --references (RAP keeps one per concept: --views 1).

The split is fixed: per concept, the candidate files are ranked by
sha256("ego-views/v1/<seed>/<concept>/<file name>") and the first N taken, so the same files
give the same split anywhere; the labels record the rule and every chosen file name
(`split`), and --split-from reuses them. Datasets with their own train/test split keep it.
"""


def _positive(kind: type, allow_zero: bool = False) -> Any:
    """An argparse type: a number of ``kind`` that is > 0 (or >= 0 with ``allow_zero``)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"must be {'>=' if allow_zero else '>'} 0, "
                                             f"got {text}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _writer_options(parser: argparse.ArgumentParser, compressed_default: bool = False) -> None:
    parser.add_argument("--out", type=Path, required=True, metavar="BAG",
                        help="bag folder to create (must not exist)")
    parser.add_argument("--topic", default=DEFAULT_TOPIC,
                        help="image topic; CompressedImage goes on TOPIC/compressed "
                             "(default: %(default)s)")
    if compressed_default:
        parser.add_argument("--raw", dest="compressed", action="store_false",
                            help="write raw sensor_msgs/Image (default: JPEG CompressedImage)")
    else:
        parser.add_argument("--compressed", action="store_true",
                            help="write JPEG sensor_msgs/CompressedImage instead of raw Image")
    parser.add_argument("--storage", default="sqlite3", choices=STORAGES,
                        help="rosbag2 storage plugin (default: %(default)s)")
    parser.add_argument("--frame-id", default="camera", help="header frame_id (default: camera)")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``bag`` and its subcommands on the top-level subparsers."""
    parser = sub.add_parser("bag", help="make, inspect and play camera bags",
                            description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    bag_sub = parser.add_subparsers(dest="bag_command", metavar="SUBCOMMAND", required=True)

    p = bag_sub.add_parser("from-images", help="image folders -> bag")
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="folders of images")
    _writer_options(p)
    p.add_argument("--fps", type=_positive(float), default=15.0,
                   help="frame rate of the stream (default: %(default)s)")
    p.add_argument("--max-side", type=_positive(int), metavar="PX",
                   help="shrink frames so the longer side is at most PX")
    p.set_defaults(func=_from_images)

    p = bag_sub.add_parser("from-video", help="video file -> bag")
    p.add_argument("video", type=Path, metavar="FILE", help="a video file OpenCV can read")
    _writer_options(p)
    p.add_argument("--fps", type=_positive(float),
                   help="resample to this frame rate (default: the video's own)")
    p.add_argument("--max-side", type=_positive(int), metavar="PX",
                   help="shrink frames so the longer side is at most PX")
    p.set_defaults(func=_from_video)

    p = bag_sub.add_parser("from-dataset", help="personalization dataset -> bag + ground truth",
                           description=FROM_DATASET_HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path, metavar="DATA", help="dataset root folder")
    p.add_argument("--layout", default="myvlm", choices=LAYOUTS,
                   help="dataset layout (default: %(default)s; see above)")
    split = p.add_mutually_exclusive_group(required=True)
    split.add_argument("--views", "--refs", dest="views", type=_positive(int), metavar="N",
                       help="reference views per concept, chosen by the seeded rule (the paper "
                            "uses 1 or 5)")
    split.add_argument("--split-from", type=Path, metavar="BAG",
                       help="reuse the reference views recorded in another bag's labels (a bag "
                            "folder or ego_labels.json)")
    p.add_argument("--seed", type=int, default=0,
                   help="split and playing-order seed (default: 0)")
    p.add_argument("--vqa", type=Path, action="append", metavar="FILE",
                   help="question file(s) instead of the layout's own (yollava: one A/B visual "
                        "QA file; this-is-my: any number); repeatable")
    p.add_argument("--text-qa", type=Path, metavar="FILE",
                   help="yollava: RAP's text-only QA file (default: yollava-text-only-qa.json "
                        "beside the data when present)")
    p.add_argument("--keep-known-errors", dest="fix_known_errors", action="store_false",
                   help="yollava: keep the one published VQA label known to be wrong "
                        "(brown-duck/0.png) as published")
    p.add_argument("--part", choices=("single", "multi"), default="single",
                   help="this-is-my: Single-concept or Multi-concept (default: %(default)s)")
    p.add_argument("--references", type=Path, metavar="DIR",
                   help="rap-multi (required): reference images, one folder per concept or "
                        "RAP's database.json")
    p.add_argument("--index", type=Path, metavar="FILE",
                   help="rap-multi: the pair index (default: a JSON beside the pair folders "
                        "whose keys name query-image-2-concepts/ images)")
    p.add_argument("--fps", type=_positive(float), default=2.0,
                   help="rate the query photos are played at (default: %(default)s)")
    p.add_argument("--max-side", type=_positive(int), default=640, metavar="PX",
                   help="shrink photos to at most PX on the longer side (default: %(default)s)")
    _writer_options(p, compressed_default=True)
    p.set_defaults(func=_from_dataset)

    p = bag_sub.add_parser("synthetic", help="generated camera stream with ground truth")
    _writer_options(p)
    p.add_argument("--seed", type=int, default=0, help="scene seed (default: 0)")
    p.add_argument("--frames", type=_positive(int), default=150,
                   help="number of frames (default: %(default)s)")
    p.add_argument("--fps", type=_positive(float), default=15.0, help="frame rate (default: 15)")
    p.add_argument("--width", type=_positive(int), default=640, help="width in px (default: 640)")
    p.add_argument("--height", type=_positive(int), default=480,
                   help="height in px (default: 480)")
    p.add_argument("--refs", type=_positive(int), default=5, metavar="N",
                   help="reference views written per concept (default: %(default)s)")
    p.set_defaults(func=_synthetic)

    p = bag_sub.add_parser("info", help="a bag's topics, counts, duration and labels (JSON)")
    p.add_argument("bag", type=Path, metavar="BAG")
    p.set_defaults(func=_info)

    p = bag_sub.add_parser("play", help="publish a bag's image topic with the recorded timing")
    p.add_argument("bag", type=Path, metavar="BAG")
    p.add_argument("--rate", type=_positive(float), default=1.0,
                   help="playback speed factor (default: %(default)s)")
    p.add_argument("--loop", action="store_true", help="start over at the end until Ctrl-C")
    p.add_argument("--clock", action="store_true",
                   help="publish the bag's time on /clock (for use_sim_time nodes)")
    p.add_argument("--clock-hz", type=_positive(float), default=40.0,
                   help="/clock rate with --clock (default: %(default)s)")
    p.add_argument("--topic", help="Image or CompressedImage topic to play (default: the "
                                   "bag's only image topic); other types are refused")
    p.add_argument("--wait-subscribers", type=_positive(int, allow_zero=True), default=0,
                   metavar="N",
                   help="wait until N subscribers are connected before playing (default: 0)")
    p.add_argument("--wait-timeout", type=_positive(float), default=10.0, metavar="S",
                   help="give up waiting for subscribers after S seconds (default: 10)")
    p.set_defaults(func=_play)
    return parser


# ----------------------------------------------------------------------------------------------
# Runners
# ----------------------------------------------------------------------------------------------


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "fix your input", turned into a message without a traceback."""
    from ego_ros.bag.importers import DatasetError
    from ego_ros.bag.io import BagError
    from ego_ros.bag.labels import LabelsError

    return (BagError, LabelsError, DatasetError, OSError)


def _describe(error: BaseException) -> str:
    if isinstance(error, FileExistsError):
        return str(error)
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.strerror or error}: {error.filename}"
    return str(error)


def _check_bag(path: Path) -> Path:
    """Fail with a plain message when ``path`` cannot be a rosbag2 bag (before rosbags says
    something about metadata files)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CliError(f"bag {path} does not exist")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise CliError(f"{path} is not a rosbag2 bag folder (it has no metadata.yaml)")
    return path


def _written(out: Path, frames: int, topic: str, compressed: bool, **extra: Any) -> dict:
    from ego_ros.bag.io import image_topic

    return {"bag": str(out), "frames": frames, "topic": image_topic(topic, compressed),
            "compressed": compressed, **extra}


def _from_images(args: argparse.Namespace) -> int:
    from ego_ros.bag.io import from_images

    try:
        count = from_images(args.dirs, args.out, args.topic, args.fps, args.compressed,
                            frame_id=args.frame_id, max_side=args.max_side,
                            storage=args.storage)
    except _user_errors() as exc:
        raise CliError(_describe(exc)) from exc
    print_json(_written(args.out, count, args.topic, args.compressed, fps=args.fps))
    return 0


def _from_video(args: argparse.Namespace) -> int:
    from ego_ros.bag.io import from_video

    try:
        count = from_video(args.video, args.out, args.topic, args.fps, args.compressed,
                           frame_id=args.frame_id, max_side=args.max_side, storage=args.storage)
    except _user_errors() as exc:
        raise CliError(_describe(exc)) from exc
    print_json(_written(args.out, count, args.topic, args.compressed, fps=args.fps))
    return 0


def _labels_summary(labels: Any) -> dict:
    return {
        "dataset": labels.source.dataset,
        "seed": labels.source.seed,
        "refs": labels.source.refs,
        "concepts": {c.name: len(c.refs) for c in labels.concepts},
        "labelled_frames": len(labels.frames),
        "frames_with_concepts": sum(1 for f in labels.frames if f.concepts),
        "vqa": len(labels.vqa),
        "multi_concept_vqa": sum(1 for q in labels.vqa if len(q.concepts) > 1),
        "text_qa": len(labels.text_qa),
        "captions": len(labels.captions),
        "groups": dict(sorted(Counter(f.group for f in labels.frames if f.group).items())),
        "split": None if labels.split is None else labels.split.rule,
    }


def _from_dataset(args: argparse.Namespace) -> int:
    from ego_ros.bag.importers import bag_from_dataset

    try:
        labels = bag_from_dataset(args.data, args.out, layout=args.layout, views=args.views,
                                  seed=args.seed, split_from=args.split_from, vqa=args.vqa,
                                  text_qa=args.text_qa, part=args.part,
                                  references=args.references, index=args.index,
                                  fix_known_errors=args.fix_known_errors, fps=args.fps,
                                  compressed=args.compressed, max_side=args.max_side,
                                  topic=args.topic, storage=args.storage,
                                  frame_id=args.frame_id)
    except _user_errors() as exc:
        raise CliError(_describe(exc)) from exc
    print_json(_written(args.out, len(labels.frames), args.topic, args.compressed,
                        labels=_labels_summary(labels)))
    return 0


def _synthetic(args: argparse.Namespace) -> int:
    from ego_ros.bag.synthetic import SyntheticConfig, write_synthetic_bag

    try:
        config = SyntheticConfig(seed=args.seed, num_frames=args.frames, fps=args.fps,
                                 width=args.width, height=args.height,
                                 compressed=args.compressed, storage=args.storage,
                                 topic=args.topic, frame_id=args.frame_id,
                                 refs_per_concept=args.refs)
    except ValueError as exc:
        raise CliError(str(exc).replace("SyntheticConfig.", "--")) from exc
    try:
        labels = write_synthetic_bag(args.out, config)
    except _user_errors() as exc:
        raise CliError(_describe(exc)) from exc
    print_json(_written(args.out, len(labels.frames), args.topic, args.compressed,
                        labels=_labels_summary(labels)))
    return 0


def _info(args: argparse.Namespace) -> int:
    from ego_ros.bag.io import bag_info
    from ego_ros.bag.labels import LabelsError, has_labels, load_labels

    bag = _check_bag(args.bag)
    try:
        info = bag_info(bag)
    except _user_errors() as exc:
        raise CliError(_describe(exc)) from exc
    info["labels"] = None
    if bag.is_dir() and has_labels(bag):
        try:
            info["labels"] = _labels_summary(load_labels(bag))
        except (LabelsError, OSError) as exc:
            # The bag itself is fine; say what is wrong with its ground truth.
            info["labels"] = {"error": str(exc)}
            print(f"ego-ros bag info: warning: {exc}", file=sys.stderr)
    print_json(info)
    return 0


def _play(args: argparse.Namespace) -> int:
    from ego_ros.bag.play import PlayConfig, PlayError, play_bag

    try:
        config = PlayConfig(rate=args.rate, loop=args.loop, clock=args.clock,
                            clock_hz=args.clock_hz, topic=args.topic,
                            wait_subscribers=args.wait_subscribers,
                            wait_timeout_s=args.wait_timeout)
    except ValueError as exc:
        raise CliError(str(exc).replace("PlayConfig.", "--")) from exc
    bag = _check_bag(args.bag)
    try:
        stats = play_bag(bag, config)
    except (PlayError, *_user_errors()) as exc:
        raise CliError(_describe(exc)) from exc
    print_json({"bag": str(bag), "topic": stats.topic, "type": stats.msgtype,
                "messages": stats.messages, "loops": stats.loops,
                "bag_duration_s": round(stats.bag_duration_s, 3),
                "wall_s": round(stats.wall_s, 3)})
    return 0

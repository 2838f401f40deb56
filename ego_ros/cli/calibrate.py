"""Choose the LLM layers whose attention best finds objects (paper §3.4), once per model.

    ego-ros calibrate --model ~/models/Qwen2.5-VL-7B-Instruct --data ~/coco_single_objects

The model describes the main object of each calibration image; every layer is scored by how
much of its top-K attended tokens fall on the object mask, and the best L layers are written to
a calibration file keyed by the model's fingerprint. 'ego-ros introduce' (and the ROS node)
then use them for that model automatically.

--data DIR: images with binary masks, either DIR/NAME.jpg + DIR/masks/NAME.png or
DIR/NAME.jpg + DIR/NAME_mask.png (nonzero = object). --synthetic N: N generated images of
textured objects on cluttered backgrounds with exact masks (runs anywhere; a real-image set
such as a single-object COCO subset is better for a real model).

Default output: $EGO_ROS_CACHE/calibration/<family>-<hash>.json (cache default
~/.cache/ego_ros). Default L: a quarter of the model's layers, at least 1, at most 8.
Prints one JSON object: layers, ranking, scores, num_samples, path, elapsed_s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ego_ros.cli._model import add_model_options, check_model_dir, load_model
from ego_ros.cli.common import CliError, print_json


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``calibrate`` on the top-level subparsers."""
    parser = sub.add_parser(
        "calibrate",
        help="rank the model's layers on images with object masks; write a calibration file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", type=Path, metavar="DIR", help="folder of images with masks")
    data.add_argument("--synthetic", type=int, metavar="N",
                      help="generate N synthetic images with exact masks")
    parser.add_argument("--layers-keep", type=int, metavar="L",
                        help="how many layers to keep (default: 1/4 of the layers, 1..8)")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="calibration file to write (default: the model's file in the cache)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the synthetic set (default: %(default)s)")
    parser.add_argument("--k-ratio", type=float, default=0.2,
                        help="top-K per layer as a fraction of the visual tokens "
                             "(default: %(default)s, the paper's K)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Calibrate and print the summary as JSON."""
    check_model_dir(args.model)
    if args.synthetic is not None and args.synthetic < 1:
        raise CliError(f"--synthetic must be at least 1, got {args.synthetic}")
    if args.layers_keep is not None and args.layers_keep < 1:
        raise CliError(f"--layers-keep must be at least 1, got {args.layers_keep}")
    if not 0.0 < args.k_ratio <= 1.0:
        raise CliError(f"--k-ratio must be in (0, 1], got {args.k_ratio}")
    if args.out is not None and not args.out.expanduser().parent.is_dir():
        raise CliError(f"folder {args.out.parent} for --out does not exist")
    started = time.perf_counter()

    from tqdm import tqdm

    from ego_ros.core.calibration import (
        CalibrationError,
        calibrate,
        default_calibration_path,
        load_calibration_folder,
        save_calibration,
        synthetic_calibration_set,
    )

    try:
        if args.data is not None:
            samples = load_calibration_folder(args.data)
            source = f"folder:{args.data.expanduser().resolve()}"
        else:
            samples = synthetic_calibration_set(args.synthetic, seed=args.seed)
            source = f"synthetic:{args.synthetic} seed={args.seed}"
    except CalibrationError as exc:
        raise CliError(str(exc)) from exc
    backend = load_model(args)
    bar = tqdm(total=len(samples), desc="calibrating", unit="image", file=sys.stderr,
               disable=None)
    done = 0

    def progress(count: int) -> None:
        nonlocal done
        bar.update(count - done)
        done = count

    try:
        result = calibrate(backend, samples, args.layers_keep, progress, k_ratio=args.k_ratio,
                           source=source)
    except (CalibrationError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    finally:
        bar.close()
    path = args.out.expanduser() if args.out else default_calibration_path(backend.fingerprint)
    try:
        save_calibration(result, path)
    except OSError as exc:
        raise CliError(f"cannot write the calibration file {path}: {exc}") from exc
    print_json({
        "layers": list(result.layers),
        "ranking": list(result.ranking),
        "scores": [round(s, 4) for s in result.scores],
        "num_samples": result.num_samples,
        "path": str(path),
        "elapsed_s": round(time.perf_counter() - started, 3),
    })
    return 0

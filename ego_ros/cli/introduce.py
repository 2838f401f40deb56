"""Teach the model a concept from one or more reference images and store its memory.

    ego-ros introduce --model ~/models/Qwen2.5-VL-7B-Instruct --store ~/.ego/store \\
        --name "my mug" mug1.jpg mug2.jpg --overlay mug.png

Per image the model estimates the area of the main subject and lists keywords; the visual
tokens the keywords attend to most become the concept's memory (paper §3.1-3.3). The memory is
written to the store under the model's fingerprint. Without --replace, views are added to an
existing concept of that name; with it, the concept is overwritten.

Layers: --layers if given, else --calibration FILE, else the model's default calibration file
(written by 'ego-ros calibrate') if there is one, else a mid-to-late range of layers.

--overlay OUT.png draws the selected patches over the reference view. With several images one
file per image is written: OUT-1.png, OUT-2.png, ... (same folder, same stem).

At most 16 images per run (ego_ros.core.limits.MAX_VIEWS; run again without --replace to add
views) and a name of at most 64 characters holding none of the model's special tokens
(<IMG_CONTEXT>, <|im_start|>, ...); a refusal exits with status 2.

Prints one JSON object: name, num_tokens, num_views (of the stored concept, all views),
keywords, area_percent and area_defaulted (per stored view), new_views, replaced (an
existing concept was overwritten), layers, layers_source, overlays, store, load_s (reading
the images and loading the model) and elapsed_s (introducing and storing).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ego_ros.cli._model import (
    add_model_options,
    add_store_option,
    check_images,
    check_model_dir,
    load_model,
    parse_layers,
    read_image,
)
from ego_ros.cli.common import CliError, print_json


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``introduce`` on the top-level subparsers."""
    parser = sub.add_parser(
        "introduce",
        help="teach a concept from reference images and store its memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)
    add_store_option(parser)
    parser.add_argument("--name", required=True, help="the concept's name, e.g. \"my mug\"")
    parser.add_argument("images", nargs="+", type=Path, metavar="IMG",
                        help="reference views (any image format OpenCV reads)")
    parser.add_argument("--replace", action="store_true",
                        help="overwrite an existing concept instead of adding views to it")
    parser.add_argument("--overlay", type=Path, metavar="OUT.png",
                        help="write the selected patches over the reference view(s)")
    parser.add_argument("--layers", metavar="L1,L2,...",
                        help="LLM layers whose attention ranks the tokens (overrides calibration)")
    parser.add_argument("--calibration", type=Path, metavar="FILE",
                        help="calibration file from 'ego-ros calibrate' (default: the model's "
                             "file in the cache, if any)")
    parser.add_argument("--ratio", type=float, default=0.2,
                        help="per-view cap K = ratio * visual tokens (default: %(default)s)")
    parser.add_argument("--min-tokens", type=int, default=4,
                        help="at least this many tokens per view (default: %(default)s)")
    parser.set_defaults(func=run)
    return parser


def overlay_paths(out: Path, count: int) -> list[Path]:
    """``OUT.png`` for one view; ``OUT-1.png`` ... ``OUT-n.png`` for several."""
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i + 1}{out.suffix}") for i in range(count)]


def _check_args(args: argparse.Namespace) -> tuple[str, list[Path]]:
    """Everything checkable without torch or the model."""
    from ego_ros.core.limits import check_views
    from ego_ros.core.names import validate_concept_name

    check_model_dir(args.model)
    try:
        name = validate_concept_name(args.name)
        check_views(len(args.images))
    except ValueError as exc:  # InvalidConceptName, LimitExceeded
        raise CliError(str(exc)) from exc
    images = check_images(args.images)
    if args.overlay is not None:
        if args.overlay.suffix.lower() != ".png":
            raise CliError(f"--overlay must end in .png, got {args.overlay}")
        if not args.overlay.expanduser().parent.is_dir():
            raise CliError(f"--overlay folder {args.overlay.parent} does not exist")
    if args.calibration is not None and args.layers is not None:
        raise CliError("give --layers or --calibration, not both")
    return name, images


def run(args: argparse.Namespace) -> int:
    """Introduce the concept, store it and print the summary as JSON."""
    name, image_paths = _check_args(args)
    layers_arg = parse_layers(args.layers)
    started = time.perf_counter()
    images = [read_image(p) for p in image_paths]

    from ego_ros.core.calibration import CalibrationError, resolve_layers
    from ego_ros.core.introduce import IntroduceConfig, introduce_concept
    from ego_ros.core.overlay import draw_selection_overlay, save_overlay
    from ego_ros.core.selection import SelectionConfig
    from ego_ros.core.store import FingerprintMismatch, MemoryStore, StoreError

    try:
        config = IntroduceConfig(selection=SelectionConfig(ratio=args.ratio,
                                                           min_tokens=args.min_tokens))
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    backend = load_model(args)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    try:
        calibration = args.calibration.expanduser() if args.calibration else None
        layers, source = resolve_layers(backend, layers_arg, calibration)
    except CalibrationError as exc:
        raise CliError(str(exc)) from exc
    try:
        memory, traces = introduce_concept(backend, name, images, layers, config)
    except ValueError as exc:  # e.g. a name holding one of the model's special tokens
        raise CliError(str(exc)) from exc
    store = MemoryStore(args.store.expanduser(), backend.fingerprint)
    try:
        existed = name in store
        stored = store.put(memory, replace=args.replace)
    except (FingerprintMismatch, StoreError, ValueError) as exc:  # ValueError: dtype clash
        raise CliError(str(exc)) from exc
    except OSError as exc:
        raise CliError(f"cannot write the store {args.store}: {exc}") from exc

    overlays: list[str] = []
    if args.overlay is not None:
        for path, image, trace in zip(overlay_paths(args.overlay.expanduser(), len(images)),
                                      images, traces):
            sel = trace.selection
            drawn = draw_selection_overlay(image, sel.indices.tolist(), sel.grid)
            try:
                overlays.append(str(save_overlay(path, drawn)))
            except OSError as exc:
                raise CliError(str(exc)) from exc
    print_json({
        "name": stored.name,
        "num_tokens": stored.num_tokens,
        "num_views": stored.num_views,
        "keywords": [list(v.keywords) for v in stored.views],
        "area_percent": [v.area_percent for v in stored.views],
        "area_defaulted": [v.area_defaulted for v in stored.views],
        "new_views": len(traces),
        "replaced": bool(existed and args.replace),
        "layers": list(layers),
        "layers_source": source,
        "overlays": overlays,
        "store": str(store.root),
        "load_s": round(load_s, 3),
        "elapsed_s": round(time.perf_counter() - started, 3),
    })
    return 0

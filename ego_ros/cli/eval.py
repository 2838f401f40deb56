"""Evaluate personalization on a labelled camera bag with the paper's protocol (Ego §4.1).

    ego-ros eval --bag /tmp/demo_bag --model ~/models/Qwen2.5-VL-7B-Instruct --out /tmp/report

The bag must carry ground truth (``BAG/ego_labels.json``, as written by ``ego-ros bag
synthetic`` or ``ego-ros bag from-dataset``). Each concept is taught from its reference views
(at most --refs) into a fresh store (OUT/store, or --store); then every labelled frame (or clip
of --clip-frames frames) is asked about every concept, VQA questions are asked on their frames
and captions written for the frames with reference captions.

--mode offline (default) sends the bag's frames straight to the model in this process:
deterministic and as fast as the model allows. --mode live plays the bag into the ROS node in
real time and scores what it publishes (needs the node's live evaluation module), asking
each labelled question through the node's ~/ask service about its own frame; with
--endpoint the node uses a running engine worker instead of loading --model itself:

    ego-ros worker --model ~/models/Qwen2.5-VL-7B-Instruct --store /tmp/eval_store &
    ego-ros eval --bag /tmp/demo_bag --mode live --endpoint tcp://127.0.0.1:5555 --out /tmp/r

Writes OUT/report.json, OUT/report.md, OUT/predictions.jsonl and PNG plots; prints a JSON
summary on stdout: recognition {precision, recall, f1, mean_ap} (precision and recall averaged
over concepts, F1 from the averages), vqa / caption figures when the bag has such labels,
frames_evaluated and report_dir. Progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import shutil
from pathlib import Path
from typing import Any

from ego_ros.cli._model import add_model_options, backend_config, load_model
from ego_ros.cli.common import CliError, print_json

TASKS = ("recognition", "vqa", "caption")  # ego_ros.eval.offline.TASKS (checked by the tests)
EVAL_MODES = ("offline", "live")
RECOGNITION_MODES = ("per-concept", "joint")
LIVE_MODULE = "ego_ros.eval.live"
# What a previous run leaves in OUT; --overwrite removes exactly these.
_REPORT_FILES = ("report.json", "report.md", "predictions.jsonl",
                 "per_concept_precision_recall.png", "pr_curves.png", "latency.png")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``eval`` on the top-level subparsers."""
    parser = sub.add_parser("eval", help="evaluate on a labelled bag (paper metrics, report)",
                            description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bag", type=Path, required=True, metavar="BAG",
                        help="bag folder with ground truth (ego_labels.json)")
    add_model_options(parser, required=False)
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="report folder (created; must not hold a report unless "
                             "--overwrite)")
    parser.add_argument("--mode", default="offline", choices=EVAL_MODES,
                        help="offline: frames straight to the model; live: through the ROS "
                             "node in real time (default: %(default)s)")
    parser.add_argument("--endpoint", metavar="ENDPOINT",
                        help="--mode live only: ZeroMQ endpoint of a running 'ego-ros worker' "
                             "(e.g. tcp://127.0.0.1:5555) that the node uses instead of "
                             "loading --model; the bag's concepts are taught into the worker's "
                             "store, replacing any of the same names (--model and --store are "
                             "then not used)")
    parser.add_argument("--refs", type=int, metavar="N",
                        help="reference views taught per concept (default: all in the bag)")
    parser.add_argument("--store", type=Path, metavar="DIR",
                        help="concept store to teach into (default: OUT/store, made fresh); "
                             "memories of the bag's concepts there are replaced")
    parser.add_argument("--clip-frames", type=int, default=1, metavar="N",
                        help="frames per recognition query; N > 1 queries clips of N "
                             "consecutive labelled frames (default: %(default)s)")
    parser.add_argument("--tasks", default=",".join(TASKS), metavar="LIST",
                        help="comma-separated subset of %(default)s")
    parser.add_argument("--recognition-mode", default="per-concept", choices=RECOGNITION_MODES,
                        help="per-concept: one scored yes/no per concept (the paper's "
                             "protocol); joint: one question for all (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="score at or above which a concept counts as present "
                             "(default: %(default)s)")
    parser.add_argument("--max-in-context", type=int, metavar="N",
                        help="most concepts in one context; more are narrowed down by "
                             "similarity to the query, and those left out count as not "
                             "recognised (default: all the bag's concepts, no narrowing)")
    parser.add_argument("--max-frames", type=int, metavar="N",
                        help="evaluate only the first N labelled frames (a quick look)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a previous report (and OUT/store) in OUT")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)
    return parser


def _check_args(args: argparse.Namespace) -> tuple[Any, Any]:
    """Everything checkable before torch is imported; returns (labels, EvalConfig)."""
    from ego_ros.bag.labels import LabelsError, load_labels
    from ego_ros.eval.offline import EvalConfig, parse_tasks

    for name in ("refs", "max_frames"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CliError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.clip_frames < 1:
        raise CliError(f"--clip-frames must be >= 1, got {args.clip_frames}")
    if args.max_in_context is not None and args.max_in_context < 1:
        raise CliError(f"--max-in-context must be >= 1, got {args.max_in_context}")
    if not 0.0 <= args.threshold <= 1.0:
        raise CliError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.endpoint is not None:
        if args.mode != "live":
            raise CliError("--endpoint is for --mode live (the node talks to the worker); "
                           "offline mode loads --model in this process")
        if "://" not in args.endpoint:
            raise CliError(f"--endpoint {args.endpoint!r} is not a ZeroMQ endpoint such as "
                           "tcp://127.0.0.1:5555")
    elif args.model is None:
        raise CliError("--model is required (or, with --mode live, --endpoint of a worker)")
    try:
        tasks = parse_tasks(args.tasks)
    except ValueError as exc:
        raise CliError(f"--tasks: {exc}") from exc
    bag = args.bag.expanduser()
    if not bag.is_dir():
        raise CliError(f"bag folder {bag} does not exist or is not a folder")
    try:
        labels = load_labels(bag)
    except (LabelsError, OSError) as exc:
        raise CliError(str(exc)) from exc
    out = args.out.expanduser()
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} exists and is not a folder")
    leftovers = [n for n in (*_REPORT_FILES, "store") if (out / n).exists()]
    if args.store is not None:
        leftovers = [n for n in leftovers if n != "store"]
    if leftovers and not args.overwrite:
        raise CliError(f"{out} already holds a report ({', '.join(leftovers)}); pass "
                       "--overwrite or choose another --out")
    config = EvalConfig(refs=args.refs, clip_frames=args.clip_frames, tasks=tasks,
                        recognition_mode=args.recognition_mode, max_frames=args.max_frames,
                        progress=not args.no_progress)
    return labels, config


def _clear_previous(out: Path, own_store: bool) -> None:
    """Remove what an earlier run wrote in ``out`` (only the files this command writes)."""
    for name in _REPORT_FILES:
        (out / name).unlink(missing_ok=True)
    if own_store and (out / "store").is_dir():
        shutil.rmtree(out / "store")


def _live_runner() -> Any:
    """``ego_ros.eval.live.run_live``, or a CliError saying live mode is not available."""
    try:
        module = importlib.import_module(LIVE_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name == LIVE_MODULE:
            raise CliError("--mode live needs the ROS node's live evaluation "
                           f"({LIVE_MODULE}), which this installation does not have; use "
                           "--mode offline") from None
        raise CliError(f"--mode live cannot start: {exc}") from exc
    run_live = getattr(module, "run_live", None)
    if not callable(run_live):
        raise CliError(f"{LIVE_MODULE} has no run_live(); this installation's live mode is "
                       "incomplete; use --mode offline")
    return run_live


def _engine_config(args: argparse.Namespace, labels: Any) -> Any:
    """Engine settings: the threshold, and room in the context for every concept of the bag
    unless --max-in-context asks for retrieval (the paper asks every query about every
    concept with its memory in context)."""
    from ego_ros.core.engine import EngineConfig
    from ego_ros.core.scoring import Thresholds

    room = args.max_in_context or max(1, len(labels.concepts))
    return EngineConfig(thresholds=Thresholds(default=args.threshold), max_in_context=room)


_TINY_NOTE = ("tiny model with RANDOM weights: the figures mean nothing; rerun with a real "
              "checkpoint for real numbers")


def _model_details(path: Path) -> dict[str, Any]:
    from ego_ros.backends.tiny import read_tiny_marker

    details: dict[str, Any] = {"model": str(path)}
    if path.is_dir() and read_tiny_marker(path) is not None:
        details["model_note"] = _TINY_NOTE
    return details


def _worker_details(endpoint: str) -> dict[str, Any]:
    """What the worker at ``endpoint`` serves (asked before the run, so an absent worker fails
    at once), with the tiny-model note when it serves random weights."""
    from ego_ros.serving.rpc import RpcClient, WorkerUnavailable

    with RpcClient(endpoint, timeout_s=5.0, connect_timeout_s=5.0) as client:
        try:
            info = client.hello().get("info", {})
        except WorkerUnavailable as exc:
            raise CliError(f"no engine worker answers on {endpoint} ({exc}); start one with "
                           f"'ego-ros worker --bind {endpoint} --model DIR'") from exc
    model = str(info.get("model", ""))
    details: dict[str, Any] = {"model": f"{model} (worker at {endpoint})",
                               "family": info.get("family"), "device": info.get("device")}
    if model == "tiny" or (model and _model_details(Path(model)).get("model_note")):
        details["model_note"] = _TINY_NOTE
    return details


def _run_offline(args: argparse.Namespace, labels: Any, config: Any, store_dir: Path) -> Any:
    from ego_ros.core.engine import EgoEngine
    from ego_ros.core.store import FingerprintMismatch, MemoryStore, StoreError
    from ego_ros.eval.offline import run_offline

    backend = load_model(args)
    try:
        engine = EgoEngine(backend, MemoryStore(store_dir, backend.fingerprint),
                           _engine_config(args, labels))
    except FingerprintMismatch as exc:
        raise CliError(f"the store {store_dir} was written by another model than "
                       f"{args.model}: {exc}") from exc
    except StoreError as exc:
        raise CliError(str(exc)) from exc
    records = run_offline(engine, args.bag.expanduser(), config, labels)
    details = {**records.details, **_model_details(backend_config(args).path),
               "family": backend.family, "device": str(backend.device)}
    return dataclasses.replace(records, details=details)


def _run_live(run_live: Any, args: argparse.Namespace, labels: Any, config: Any,
              store_dir: Path) -> Any:
    """The live run, through the node, with the model's details (and the tiny-model note)."""
    if args.endpoint is not None:
        details = _worker_details(args.endpoint)
        backend = backend_config(args) if args.model is not None else None
    else:
        backend = backend_config(args)
        details = _model_details(backend.path)
    records = run_live(bag=args.bag.expanduser(), labels=labels, backend_config=backend,
                       store_dir=store_dir, config=config,
                       engine_config=_engine_config(args, labels),
                       endpoint=args.endpoint or "")
    return dataclasses.replace(records, details={**records.details, **details})


def run(args: argparse.Namespace) -> int:
    """Teach, query, score and write the report; print the summary as JSON."""
    labels, config = _check_args(args)
    run_live = _live_runner() if args.mode == "live" else None
    if args.model is not None:
        backend_config(args)  # model folder and options, checked before any heavy import
    out = args.out.expanduser()
    own_store = args.store is None
    store_dir = out / "store" if own_store else args.store.expanduser()
    if args.overwrite:
        _clear_previous(out, own_store)
    out.mkdir(parents=True, exist_ok=True)

    from ego_ros.backends.base import BackendError
    from ego_ros.bag.io import BagError
    from ego_ros.bag.play import PlayError
    from ego_ros.core.engine import EngineBusy, UnknownConcept
    from ego_ros.core.store import StoreError
    from ego_ros.eval.offline import EvalError
    from ego_ros.eval.report import compute_metrics, summary, write_report
    from ego_ros.serving.rpc import RemoteError, WorkerUnavailable

    try:
        if run_live is not None:
            records = _run_live(run_live, args, labels, config, store_dir)
        else:
            records = _run_offline(args, labels, config, store_dir)
    # ValueError covers LabelsError, InvalidConceptName, FingerprintMismatch and bad settings.
    except (EvalError, BagError, PlayError, StoreError, BackendError, EngineBusy,
            UnknownConcept, RemoteError, WorkerUnavailable, ValueError) as exc:
        raise CliError(str(exc)) from exc
    metrics = compute_metrics(records)
    try:
        write_report(records, out, metrics)
    except OSError as exc:
        raise CliError(f"cannot write the report to {out}: {exc}") from exc
    print_json(summary(metrics, out))
    return 0

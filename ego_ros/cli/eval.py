"""Evaluate personalization on a labelled camera bag with the paper's protocol (Ego §4.1).

    ego-ros eval --bag /tmp/demo_bag --model ~/models/Qwen2.5-VL-7B-Instruct --out /tmp/report

The bag must carry ground truth (``BAG/ego_labels.json``, as written by ``ego-ros bag
synthetic`` or ``ego-ros bag from-dataset``). Each concept is taught from its reference views
(at most --refs) into a fresh store (OUT/store, or --store); then every labelled frame (or clip
of --clip-frames frames) is asked about every concept, VQA questions are asked on their frames
and captions written for the frames with reference captions.

--protocol says which memories are in context for each question: paper (the default, Ego
§4.1): each recognition and VQA question with its own concept's memory alone, each
multi-concept question with its group's, captions with all the bag's concepts (retrieval above
--max-in-context); robot: every known concept for every question, as ego_node (retrieval above
--max-in-context). --memory runs ablation baselines on the same queries (paper §4.5 and its
appendix), each taught into its own store (OUT/store-NAME; ego: OUT/store or --store):

    ego-ros eval --bag /tmp/bag --model DIR --out /tmp/abl --protocol paper,robot \
        --memory ego,uniform,full,full+keywords,keywords,fixed-k,description,reference-images

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
# ego_ros.eval.protocols.PROTOCOLS and ego_ros.core.strategies.STRATEGIES (checked by the
# tests; named here so that --help and argument errors need no torch import)
PROTOCOLS = ("paper", "robot")
STRATEGIES = ("ego", "uniform", "full", "full+keywords", "keywords", "fixed-k", "description",
              "reference-images")
LIVE_MODULE = "ego_ros.eval.live"
# What a previous run leaves in OUT; --overwrite removes exactly these.
_REPORT_FILES = ("report.json", "report.md", "predictions.jsonl",
                 "per_concept_precision_recall.png", "pr_curves.png", "latency.png")


def _store_name(strategy: str) -> str:
    """OUT's store folder of a memory strategy (ego's is OUT/store, or --store)."""
    return "store" if strategy == "ego" else f"store-{strategy}"


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
                        help="concept store to teach the ego memories into (default: "
                             "OUT/store, made fresh); memories of the bag's concepts there are "
                             "replaced; other --memory strategies always use OUT/store-NAME")
    parser.add_argument("--clip-frames", type=int, default=1, metavar="N",
                        help="frames per recognition query; N > 1 queries clips of N "
                             "consecutive labelled frames (default: %(default)s)")
    parser.add_argument("--tasks", default=",".join(TASKS), metavar="LIST",
                        help="comma-separated subset of %(default)s")
    parser.add_argument("--protocol", metavar="LIST",
                        help="comma-separated protocols, each reported: paper (each question "
                             "with its own concept's memory alone) and/or robot (every concept "
                             "in context, as the node) (default: paper offline, robot live, "
                             "the only one live mode runs)")
    parser.add_argument("--memory", default="ego", metavar="LIST",
                        help="comma-separated memory strategies, each scored on the same "
                             f"queries: {', '.join(STRATEGIES)} (default: %(default)s; live "
                             "mode: ego only)")
    parser.add_argument("--recognition-mode", default="per-concept", choices=RECOGNITION_MODES,
                        help="per-concept: one scored yes/no per concept (the paper's "
                             "protocol); joint: one question for all (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="score at or above which a concept counts as present "
                             "(default: %(default)s)")
    parser.add_argument("--max-in-context", type=int, metavar="N",
                        help="most concepts in one context; more are narrowed down by "
                             "similarity to the query, and those left out count as not "
                             "recognised (default: the node's, 10)")
    parser.add_argument("--max-frames", type=int, metavar="N",
                        help="evaluate only the first N labelled frames (a quick look)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a previous report (and OUT/store) in OUT")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)
    return parser


def _names(text: str, known: tuple[str, ...], option: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise CliError(f"{option} must be a comma-separated subset of {','.join(known)}, got "
                       f"{text!r}")
    return names


def _check_args(args: argparse.Namespace) -> tuple[Any, Any]:
    """Everything checkable before torch is imported; returns (labels, EvalConfig); sets
    ``args.protocols`` and ``args.memories``."""
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
    default_protocol = "robot" if args.mode == "live" else "paper"
    args.protocols = _names(args.protocol or default_protocol, PROTOCOLS, "--protocol")
    args.memories = _names(args.memory, STRATEGIES, "--memory")
    if args.mode == "live" and (args.protocols != ("robot",) or args.memories != ("ego",)):
        raise CliError("--mode live scores what the node does: --protocol robot and --memory "
                       "ego only; use --mode offline for the paper protocol and the ablations")
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
    stores = [_store_name(s) for s in STRATEGIES]
    leftovers = [n for n in (*_REPORT_FILES, *stores) if (out / n).exists()]
    if args.store is not None:
        leftovers = [n for n in leftovers if n != "store"]
    if leftovers and not args.overwrite:
        raise CliError(f"{out} already holds a report ({', '.join(leftovers)}); pass "
                       "--overwrite or choose another --out")
    config = EvalConfig(refs=args.refs, clip_frames=args.clip_frames, tasks=tasks,
                        recognition_mode=args.recognition_mode, protocol=args.protocols[0],
                        max_frames=args.max_frames, progress=not args.no_progress)
    return labels, config


def _clear_previous(out: Path, own_store: bool) -> None:
    """Remove what an earlier run wrote in ``out`` (only the files this command writes)."""
    for name in _REPORT_FILES:
        (out / name).unlink(missing_ok=True)
    for strategy in STRATEGIES:
        folder = out / _store_name(strategy)
        if (own_store or strategy != "ego") and folder.is_dir():
            shutil.rmtree(folder)


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


def _engine_config(args: argparse.Namespace, labels: Any, strategy: str = "ego") -> Any:
    """Engine settings: the threshold, --max-in-context (else the node's default), the memory
    strategy, and a prefix cache that holds every context one query of the protocols needs
    (the paper protocol's one concept at a time reuses each concept's prefix across frames)."""
    from ego_ros.core.engine import EngineConfig
    from ego_ros.core.introduce import IntroduceConfig
    from ego_ros.core.scoring import Thresholds
    from ego_ros.eval.offline import concept_groups
    from ego_ros.eval.protocols import get_protocol

    base = EngineConfig()
    needed = max(get_protocol(p).prefixes(len(labels.concepts), len(concept_groups(labels)))
                 for p in args.protocols)
    return EngineConfig(thresholds=Thresholds(default=args.threshold),
                        max_in_context=args.max_in_context or base.max_in_context,
                        prefix_cache_size=max(base.prefix_cache_size, needed),
                        introduce=IntroduceConfig(strategy=strategy))


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


def _run_offline(args: argparse.Namespace, labels: Any, config: Any, store_dir: Path
                 ) -> list[Any]:
    """Every (memory strategy, protocol) run, in that order, on the same bag and queries:
    each strategy is taught once into its own store, then scored under each protocol."""
    from ego_ros.core.engine import EgoEngine
    from ego_ros.core.store import FingerprintMismatch, MemoryStore, StoreError
    from ego_ros.eval.offline import run_offline, teach_concepts

    backend = load_model(args)
    model = {**_model_details(backend_config(args).path), "family": backend.family,
             "device": str(backend.device)}
    bag = args.bag.expanduser()
    runs = []
    for strategy in args.memories:
        folder = store_dir if strategy == "ego" else args.out.expanduser() / _store_name(strategy)
        try:
            engine = EgoEngine(backend, MemoryStore(folder, backend.fingerprint),
                               _engine_config(args, labels, strategy))
        except FingerprintMismatch as exc:
            raise CliError(f"the store {folder} was written by another model than "
                           f"{args.model}: {exc}") from exc
        except StoreError as exc:
            raise CliError(str(exc)) from exc
        teach = teach_concepts(engine, bag, labels, config)
        for protocol in args.protocols:
            records = run_offline(engine, bag, dataclasses.replace(config, protocol=protocol),
                                  labels, teach=teach)
            details = {**records.details, **model, "store": str(folder)}
            runs.append(dataclasses.replace(records, details=details))
    return runs


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
    return [dataclasses.replace(records, details={**records.details, **details},
                                protocol="robot")]


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
            runs = _run_live(run_live, args, labels, config, store_dir)
        else:
            runs = _run_offline(args, labels, config, store_dir)
    # ValueError covers LabelsError, InvalidConceptName, FingerprintMismatch and bad settings.
    except (EvalError, BagError, PlayError, StoreError, BackendError, EngineBusy,
            UnknownConcept, RemoteError, WorkerUnavailable, ValueError) as exc:
        raise CliError(str(exc)) from exc
    all_metrics = [compute_metrics(r) for r in runs]
    try:
        write_report(runs[0], out, all_metrics[0], runs=runs, runs_metrics=all_metrics)
    except OSError as exc:
        raise CliError(f"cannot write the report to {out}: {exc}") from exc
    print_json(summary(all_metrics[0], out, all_metrics))
    return 0

"""List, inspect, forget, export and import the concepts of a memory store.

    ego-ros concepts list --store ~/.ego/store
    ego-ros concepts show "my mug" --store ~/.ego/store
    ego-ros concepts export "my mug" mug.safetensors --store ~/.ego/store
    ego-ros concepts import mug.safetensors --store /other/store --name "Anna's mug"
    ego-ros concepts forget "my mug" --store ~/.ego/store
    ego-ros concepts rebind --model ~/models/Qwen2.5-VL-7B-Instruct --store ~/.ego/store

No model is loaded: memories are listed and moved as stored, whatever model made them (each
carries that model's fingerprint). ``import --model DIR`` refuses a memory made by another model
than the one in DIR, reading only DIR's config (not its weights). ``rebind --model DIR`` is for
a store its own model refuses after a config change (a transformers upgrade can add config keys,
which changes the fingerprint's config hash): it re-labels the memories as DIR's, after you
vouch the weights are the same; memories of another family or width are never re-labelled.
Each action prints one JSON object on stdout.

``list`` puts a concept whose manifest entry is malformed under ``skipped``, with what is wrong
(the field) and the fix; ``forget`` removes any stored concept, a malformed, corrupt or other
model's one included, with its file.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from ego_ros.cli._model import add_model_options, add_store_option, model_fingerprint
from ego_ros.cli.common import CliError, print_json


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``concepts`` and its actions on the top-level subparsers."""
    parser = sub.add_parser(
        "concepts",
        help="list, show, forget, export, import or rebind stored concepts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str, func) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_text, description=help_text)
        add_store_option(p)
        p.set_defaults(func=func)
        return p

    action("list", "the stored concepts (JSON)", run_list)
    p = action("show", "one concept in detail: views, grids, selected token indices", run_show)
    p.add_argument("name", help="concept name")
    p = action("forget", "delete a concept from the store", run_forget)
    p.add_argument("name", help="concept name")
    p = action("export", "write one concept to a self-contained .safetensors file", run_export)
    p.add_argument("name", help="concept name")
    p.add_argument("out", type=Path, metavar="OUT.safetensors", help="file to write")
    p = action("import", "add a concept from a file written by 'export'", run_import)
    p.add_argument("file", type=Path, metavar="FILE", help="a .safetensors memory file")
    p.add_argument("--name", help="store it under this name instead of its own")
    p.add_argument("--replace", action="store_true",
                   help="overwrite a concept of the same name instead of adding views to it")
    add_model_options(p, required=False)
    p = action("rebind", "re-label memories as made by --model, whose config (not weights) "
                         "changed since they were made", run_rebind)
    p.add_argument("names", nargs="*", metavar="NAME", help="only these concepts (default: all)")
    add_model_options(p, required=True)
    return parser


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


def _store(args: argparse.Namespace, fingerprint: Any = None) -> Any:
    from ego_ros.core.store import MemoryStore

    return MemoryStore(args.store.expanduser(), fingerprint)


def _errors() -> tuple[type[BaseException], ...]:
    from ego_ros.core.names import InvalidConceptName
    from ego_ros.core.store import FingerprintMismatch, StoreError

    return (StoreError, FingerprintMismatch, InvalidConceptName)


def run_list(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        infos, damaged = store.infos(), store.damaged()
    except _errors() as exc:
        raise CliError(str(exc)) from exc
    print_json({
        "store": str(store.root),
        "concepts": [{
            "name": i.name,
            "num_tokens": i.num_tokens,
            "num_views": i.num_views,
            "keywords": i.keywords,
            "created": _iso(i.created),
        } for i in infos],
        "skipped": [s.to_dict() for s in damaged],
    })
    return 0


def run_show(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        memory = store.get(args.name)
    except _errors() as exc:
        raise CliError(str(exc)) from exc
    print_json({
        "name": memory.name,
        "num_tokens": memory.num_tokens,
        "num_views": memory.num_views,
        "hidden_size": int(memory.tokens.shape[1]),
        "dtype": str(memory.tokens.dtype).removeprefix("torch."),
        "layers": list(memory.layers),
        "fingerprint": memory.fingerprint.to_dict(),
        "created": _iso(memory.created),
        "views": [{
            "grid": list(v.grid),
            "num_tokens": v.num_tokens,
            "indices": v.indices.tolist(),
            "keywords": list(v.keywords),
            "area_percent": v.area_percent,
            "area_defaulted": v.area_defaulted,
        } for v in memory.views],
    })
    return 0


def run_forget(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        store.delete(args.name)
    except _errors() as exc:
        raise CliError(str(exc)) from exc
    print_json({"forgotten": args.name, "remaining": store.names(), "store": str(store.root)})
    return 0


def run_export(args: argparse.Namespace) -> int:
    store = _store(args)
    out = args.out.expanduser()
    if not out.parent.is_dir():
        raise CliError(f"folder {out.parent} for the exported file does not exist")
    try:
        path = store.export(args.name, out)
    except _errors() as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc}") from exc
    print_json({"name": args.name, "path": str(path), "bytes": path.stat().st_size})
    return 0


def run_import(args: argparse.Namespace) -> int:
    fingerprint = model_fingerprint(args) if args.model is not None else None
    store = _store(args, fingerprint)
    try:
        memory = store.import_(args.file.expanduser(), name=args.name, replace=args.replace)
    except _errors() as exc:
        raise CliError(str(exc)) from exc
    print_json({
        "name": memory.name,
        "num_tokens": memory.num_tokens,
        "num_views": memory.num_views,
        "fingerprint": memory.fingerprint.to_dict(),
        "fingerprint_checked": fingerprint is not None,
        "store": str(store.root),
    })
    return 0


def run_rebind(args: argparse.Namespace) -> int:
    fingerprint = model_fingerprint(args)
    store = _store(args)
    try:
        rebound = store.rebind(fingerprint, args.names or None)
    except _errors() as exc:
        raise CliError(str(exc)) from exc
    print_json({
        "rebound": rebound,
        "fingerprint": fingerprint.to_dict(),
        "store": str(store.root),
    })
    return 0

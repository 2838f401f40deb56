"""The memory store's manifest checked before anything trusts it, and why a concept is skipped.

    manifest.json bytes --parse_manifest--> the table (top level sound, else ValueError; the
        store raises it as StoreError naming the file)
    each concepts[name] entry --entry_problem--> None (sound) or what is wrong, naming the
        entry's field; the store keeps such entries as they are (never rewritten, their file
        never collected) but refuses to read them, lists them apart, and lets them be forgotten
    a concept the engine cannot load (malformed entry, corrupt file, another model's memory)
        --skip_reason--> SkippedConcept(name, reason + the fix), which the engine reports on
        ListConcepts and /diagnostics and lets ForgetConcept remove

A manifest comes from disk, so from anyone who can write the folder: a hand edit, another
program, a future version. Every value the store or a listing uses is checked here for type and
range (JSON allows ``1e999``, huge integers, NaN, strings where numbers belong), so that a bad
value is named instead of surfacing as a ``TypeError`` or ``OverflowError`` deep in a caller.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from ego_ros.core.memory import FingerprintMismatch, ModelFingerprint
from ego_ros.core.names import InvalidConceptName, validate_concept_name

__all__ = [
    "FILE_RE",
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "MAX_COUNT",
    "damaged_entries",
    "entry_file",
    "entry_problem",
    "parse_manifest",
    "skip_reason",
]

MANIFEST_FORMAT = "ego_ros.memory_store"
MANIFEST_VERSION = 1
FILE_RE = re.compile(r"concepts/[a-z0-9-]+\.[0-9a-f]{12}\.safetensors")
# Counts (tokens, views, generation, width) fit ROS's uint32 fields and any tensor shape.
MAX_COUNT = 2**31 - 1
# The last second datetime can show (9999-12-31T23:59:59 UTC): listings print ``created``.
MAX_CREATED = 253402300799.0
FORGET_HINT = ("forget it (~/forget_concept, or 'ego-ros concepts forget NAME --store DIR') "
               "or introduce it again with replace")


def _show(value: Any) -> str:
    """A short rendering of a JSON value for a message (long strings and lists cut)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
             int: "integer", float: "number"}
    return names.get(type(value), type(value).__name__)


def _count(value: Any, low: int, high: int = MAX_COUNT) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"must be an integer from {low} to {high}, got {_show(value)}"
    return None


# ------------------------------------------------------------------ the whole file


def parse_manifest(raw: bytes) -> dict[str, Any]:
    """The manifest table from the file's bytes; ValueError saying what is wrong with its top
    level. Entries are not checked here (see ``entry_problem``): one bad entry must not make
    the whole store unreadable."""
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"the top level is a JSON {_json_type(manifest)}, not an object")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"format tag is {_show(manifest.get('format'))}, "
                         f"expected {MANIFEST_FORMAT!r}")
    version = manifest.get("version", 0)
    problem = _count(version, 0)
    if problem:
        raise ValueError(f"'version' {problem}")
    if version > MANIFEST_VERSION:
        raise ValueError(f"manifest version {version} is newer than this ego_ros reads "
                         f"({MANIFEST_VERSION})")
    problem = _count(manifest.get("generation", 0), 0, 2**63 - 1)
    if problem:
        raise ValueError(f"'generation' {problem}")
    if not isinstance(manifest.get("fingerprint"), dict | type(None)):
        raise ValueError(f"'fingerprint' must be an object or null, got "
                         f"{_show(manifest['fingerprint'])}")
    if "concepts" not in manifest:
        raise ValueError("no 'concepts' table")
    if not isinstance(manifest["concepts"], dict):
        raise ValueError(f"'concepts' must be an object, got a JSON "
                         f"{_json_type(manifest['concepts'])}")
    return manifest


# ------------------------------------------------------------------ one concept's entry


def _file(value: Any) -> str | None:
    if not isinstance(value, str) or not FILE_RE.fullmatch(value):
        return f"must name a file concepts/<stem>.<12 hex>.safetensors, got {_show(value)}"
    return None


def _created(value: Any) -> str | None:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not 0 <= value <= MAX_CREATED):
        return f"must be a unix time from 0 to {MAX_CREATED:.0f}, got {_show(value)}"
    return None


def _fingerprint(value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"must be an object, got a JSON {_json_type(value)}"
    for key, check in (("family", lambda v: None if isinstance(v, str) and v else
                        f"must be a non-empty string, got {_show(v)}"),
                       ("hidden_size", lambda v: _count(v, 1)),
                       ("config_hash", lambda v: None if isinstance(v, str) else
                        f"must be a string, got {_show(v)}")):
        if key not in value:
            return f"has no {key!r}"
        problem = check(value[key])
        if problem:
            return f"{key!r} {problem}"
    try:
        ModelFingerprint.from_dict(value)
    except ValueError as exc:
        return str(exc)
    return None


def _views(value: Any) -> str | None:
    if not isinstance(value, list):
        return f"must be an array, got a JSON {_json_type(value)}"
    for v, view in enumerate(value):
        if not isinstance(view, dict):
            return f"[{v}] must be an object, got a JSON {_json_type(view)}"
        keywords = view.get("keywords")
        if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
            return f"[{v}].keywords must be an array of strings, got {_show(keywords)}"
    return None


# field -> check (None when sound, else what is wrong); every field is required
_FIELDS = {
    "file": _file,
    "num_tokens": lambda v: _count(v, 1),
    "num_views": lambda v: _count(v, 1),
    "created": _created,
    "fingerprint": _fingerprint,
    "views": _views,
}


def entry_problem(name: str, entry: Any) -> str | None:
    """What is wrong with the manifest entry ``concepts[name]``, naming the field; None when
    every field the store and the listings use is present and of the right type and range."""
    try:
        canonical = validate_concept_name(name)
    except InvalidConceptName as exc:
        return f"its name is not a valid concept name ({exc})"
    if canonical != name:
        return f"its name is not in canonical form (expected {canonical!r})"
    if not isinstance(entry, dict):
        return f"the entry is a JSON {_json_type(entry)}, not an object"
    for field, check in _FIELDS.items():
        if field not in entry:
            return f"field {field!r} is missing"
        problem = check(entry[field])
        if problem:
            return f"field {field!r} {problem}"
    if entry["num_views"] != len(entry["views"]):
        return (f"field 'num_views' is {entry['num_views']} but 'views' lists "
                f"{len(entry['views'])}")
    if "name" in entry and entry["name"] != name:
        return f"field 'name' is {_show(entry['name'])}, the table's key is {name!r}"
    return None


def damaged_entries(concepts: Mapping[str, Any]) -> dict[str, str]:
    """``{name: problem}`` for every unusable entry of a concepts table."""
    out = {}
    for name, entry in concepts.items():
        problem = entry_problem(name, entry)
        if problem is not None:
            out[name] = problem
    return out


def entry_file(entry: Any) -> str | None:
    """The entry's file (relative to the store) when it names a valid one, else None: what a
    writer keeps (garbage collection) and what forgetting may delete, even of a bad entry."""
    if isinstance(entry, dict) and _file(entry.get("file")) is None:
        return entry["file"]
    return None


# ------------------------------------------------------------------ skipped concepts


def skip_reason(exc: BaseException) -> str:
    """Why a stored concept is left out at load, with what to do about it."""
    text = str(exc).rstrip()
    if isinstance(exc, FingerprintMismatch):  # its message has the rebind/re-introduce fix
        return f"{text} Or forget it (~/forget_concept, or 'ego-ros concepts forget NAME')."
    return f"{text}; {FORGET_HINT}"

"""Concept memories on disk: safetensors files plus a JSON manifest, crash-safe and shareable.

Layout of a store folder::

    manifest.json                      {"format", "version", "generation", "fingerprint",
                                        "concepts": {name: {"file", "num_tokens", ...}}}
                                       (top-level "fingerprint": the model of the last writer,
                                       informational; each concept carries its own)
    concepts/<stem>.<token>.safetensors one file per concept (see ``encode_memory``)
    .lock                              writers' inter-process lock (fcntl.flock)

Why it is built this way:

- Tensors are safetensors, never pickle: a memory file from another robot cannot run code.
- Each concept file is self-contained (its metadata, fingerprint included, is duplicated in the
  safetensors header), so exporting a concept is copying its file and importing is reading one.
- Crash safety: every file is written to a temporary name in the same folder, flushed, fsynced,
  renamed over its final name with ``os.replace`` and the folder fsynced. Each write of a
  concept goes to a *new* file name (``<token>`` is random) and the manifest is replaced last,
  so until the manifest rename the previous manifest and all the files it names are untouched;
  superseded files are deleted only after the new manifest is in place. A crash or full disk
  at any moment leaves a readable store (at worst with an orphan file, collected by the next
  write).
- Concurrent readers (other ``MemoryStore`` objects, other processes) take no lock: they see
  either the old or the new manifest, and files are never rewritten in place. A reader that
  loses the race with a writer deleting a superseded file re-reads the manifest and retries.
- Writers serialise on ``.lock`` (``fcntl.flock``), so two processes adding concepts never lose
  each other's update.
- Scale: the manifest is read once and re-read only when it was replaced (inode, size, mtime
  change), listings never touch tensor files, tensors are loaded lazily and cached per file.
- Damage stays local: the manifest's top level must be sound (else every call raises
  ``StoreError``), but a malformed entry only makes that concept unreadable (``StoreError``
  naming the entry and field, see ``ego_ros.core.manifest``); it is listed by ``damaged()``,
  skipped by ``get_many(skip_broken=True)`` like a corrupt file or another model's memory,
  kept as it is by writers, and removed by ``delete``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import os
import struct
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ego_ros.core.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    damaged_entries,
    entry_file,
    parse_manifest,
    skip_reason,
)
from ego_ros.core.memory import ConceptMemory, FingerprintMismatch, ModelFingerprint, ViewInfo
from ego_ros.core.names import concept_file_stem, validate_concept_name
from ego_ros.core.types import ConceptInfo, SkippedConcept

__all__ = [
    "FILE_FORMAT",
    "MANIFEST_VERSION",
    "ConceptNotFound",
    "FingerprintMismatch",
    "MemoryStore",
    "StoreError",
    "decode_memory",
    "encode_memory",
]

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
CONCEPT_DIR = "concepts"
LOCK_NAME = ".lock"
FILE_FORMAT = "ego_ros.concept_memory"
FILE_VERSION = 1
_META_KEY = "ego_ros.concept"
_READ_RETRIES = 3
# A manifest modified less than this long ago may share (inode, size, mtime) with an earlier
# one (inode numbers are reused, timestamps are coarse), so it is re-read rather than trusted
# from its stat alone; older manifests are cached on their stat key.
_RACY_NS = 2_000_000_000


class StoreError(RuntimeError):
    """The store or one of its files cannot be read or written; the message names the file."""


class ConceptNotFound(StoreError, KeyError):  # noqa: N818 (reads like KeyError)
    """No concept of that name in the store."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


# ------------------------------------------------------------------ one self-contained file


def _concept_meta(memory: ConceptMemory) -> dict[str, Any]:
    """Everything about a memory except its tensors, JSON-compatible."""
    return {
        "name": memory.name,
        "num_tokens": memory.num_tokens,
        "num_views": memory.num_views,
        "hidden_size": int(memory.tokens.shape[1]),
        "dtype": str(memory.tokens.dtype).removeprefix("torch."),
        "created": memory.created,
        "layers": list(memory.layers),
        "fingerprint": memory.fingerprint.to_dict(),
        "views": [v.to_meta() for v in memory.views],
    }


def encode_memory(memory: ConceptMemory) -> tuple[bytes, dict[str, Any]]:
    """Serialise a memory to safetensors bytes; returns ``(bytes, metadata)``.

    Tensors: ``tokens`` ``[N, D]`` (dtype kept), ``view_ids`` ``[N]`` int64 and ``indices.{v}``
    ``[K_c]`` int64 per view. The header metadata holds the format tag and the JSON metadata.
    """
    meta = _concept_meta(memory)
    tensors = {
        "tokens": memory.tokens.detach().cpu().contiguous(),  # [N, D]
        "view_ids": memory.view_ids.detach().cpu().contiguous(),  # [N]
    }
    for v, view in enumerate(memory.views):
        tensors[f"indices.{v}"] = view.indices.detach().cpu().contiguous()  # [K_c]
    header = {
        "format": FILE_FORMAT,
        "format_version": str(FILE_VERSION),
        _META_KEY: json.dumps(meta, ensure_ascii=False, sort_keys=True),
    }
    return st_save(tensors, metadata=header), meta


def _read_header_metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise ValueError("file is shorter than a safetensors header")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise ValueError("safetensors header length exceeds the file (truncated file?)")
    header = json.loads(data[8 : 8 + length].decode("utf-8"))
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise ValueError("safetensors header has no metadata; not an ego_ros memory file")
    return meta


def decode_memory(data: bytes, source: str) -> ConceptMemory:
    """Parse bytes written by ``encode_memory``; any defect raises ``StoreError`` naming
    ``source`` (a path, for the message)."""
    try:
        header = _read_header_metadata(data)
        if header.get("format") != FILE_FORMAT:
            raise ValueError(f"format tag is {header.get('format')!r}, expected {FILE_FORMAT!r}")
        version = int(header.get("format_version", "0"))
        if version > FILE_VERSION:
            raise ValueError(f"file format version {version} is newer than this ego_ros reads")
        meta = json.loads(header[_META_KEY])
        tensors = st_load(data)
        views = [
            ViewInfo.from_meta(view_meta, tensors[f"indices.{v}"])
            for v, view_meta in enumerate(meta["views"])
        ]
        memory = ConceptMemory(
            name=meta["name"],
            tokens=tensors["tokens"],
            view_ids=tensors["view_ids"],
            views=tuple(views),
            layers=tuple(meta["layers"]),
            fingerprint=ModelFingerprint.from_dict(meta["fingerprint"]),
            created=float(meta["created"]),
        )
        if memory.num_tokens != int(meta["num_tokens"]):
            raise ValueError(f"{memory.num_tokens} token rows, metadata says {meta['num_tokens']}")
    except Exception as exc:  # safetensors, JSON, key and validation errors alike
        raise StoreError(f"{source}: not a valid concept memory file ({exc})") from exc
    return memory


# ------------------------------------------------------------------ durable file primitives


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_and_rename(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it and rename it over
    ``path``. The caller fsyncs the folder. On failure the temporary file is removed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    _write_and_rename(path, data)
    _fsync_dir(path.parent)


# ------------------------------------------------------------------ the store


class MemoryStore:
    """A folder of concept memories for one model.

    ``fingerprint`` is the model the caller will use the memories with; loading or adding a
    memory made by another model raises ``FingerprintMismatch``. ``None`` disables the check
    (for tools that only list, export or import without loading a model).

    Returned memories are shared with the cache: treat their tensors as read-only.
    """

    def __init__(
        self,
        root: Path | str,
        fingerprint: ModelFingerprint | None = None,
        *,
        cache: bool = True,
        lock_timeout_s: float = 30.0,
    ) -> None:
        if lock_timeout_s <= 0:
            raise ValueError(f"lock_timeout_s must be positive, got {lock_timeout_s!r}")
        self.root = Path(root)
        self.fingerprint = fingerprint
        self._use_cache = cache
        self._lock_timeout_s = lock_timeout_s
        self._mutex = threading.RLock()
        self._manifest_key: tuple[int, int, int] | None = None
        self._manifest: dict[str, Any] = _empty_manifest()
        self._damaged: dict[str, str] = {}  # name -> what is wrong with its manifest entry
        self._cache: dict[str, tuple[str, ConceptMemory]] = {}

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    # ---------------------------------------------------------------- manifest

    def _stat_key(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.manifest_path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _concepts(self) -> dict[str, dict[str, Any]]:
        """The current manifest's concept entries, re-read only when the file was replaced."""
        with self._mutex:
            key = self._stat_key()
            if key is None:
                self._set_manifest(None, _empty_manifest())
            elif key != self._manifest_key or time.time_ns() - key[2] < _RACY_NS:
                self._load_manifest()
            return self._manifest["concepts"]

    def _load_manifest(self) -> None:
        try:
            with open(self.manifest_path, "rb") as f:
                st = os.fstat(f.fileno())
                raw = f.read()
        except FileNotFoundError:
            self._set_manifest(None, _empty_manifest())
            return
        try:
            manifest = parse_manifest(raw)
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
            raise StoreError(f"{self.manifest_path}: unreadable store manifest ({exc})") from exc
        self._set_manifest((st.st_ino, st.st_size, st.st_mtime_ns), manifest)

    def _set_manifest(self, key: tuple[int, int, int] | None, manifest: dict[str, Any]) -> None:
        """Adopt a (top-level checked) manifest: find its damaged entries, drop stale cache."""
        self._manifest_key, self._manifest = key, manifest
        live = manifest["concepts"]
        self._damaged = damaged_entries(live)
        self._cache = {n: c for n, c in self._cache.items()
                       if n in live and n not in self._damaged and live[n]["file"] == c[0]}

    def _write_manifest(self, concepts: dict[str, dict[str, Any]],
                        owner: ModelFingerprint | None = None) -> None:
        """Commit ``concepts``; the manifest names ``owner``, else this store's model, else
        the model it named before, as its last writer."""
        owner = owner or self.fingerprint
        fingerprint = owner.to_dict() if owner else self._manifest.get("fingerprint")
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "generation": int(self._manifest.get("generation", 0)) + 1,
            "fingerprint": fingerprint,
            "concepts": concepts,
        }
        data = json.dumps(manifest, ensure_ascii=False, indent=1).encode("utf-8")
        _write_and_rename(self.manifest_path, data)
        # The rename is the commit point: nothing after it may raise, or a caller would clean
        # up files the new manifest names.
        self._manifest = manifest
        self._damaged = damaged_entries(concepts)
        try:
            self._manifest_key = self._stat_key()
            _fsync_dir(self.root)
        except OSError as exc:
            log.warning("store %s: fsync of the folder failed after commit: %s", self.root, exc)

    # ---------------------------------------------------------------- reading

    def names(self) -> list[str]:
        return sorted(self._concepts())

    def __len__(self) -> int:
        return len(self._concepts())

    def __contains__(self, name: object) -> bool:
        try:
            return validate_concept_name(name) in self._concepts()  # type: ignore[arg-type]
        except ValueError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def infos(self) -> list[ConceptInfo]:
        """Summaries of the concepts whose manifest entry is sound (see ``damaged``), from the
        manifest alone (no tensor file is read)."""
        with self._mutex:
            concepts, damaged = self._concepts(), self._damaged
        return [
            ConceptInfo(
                name=name,
                num_tokens=e["num_tokens"],
                num_views=e["num_views"],
                keywords=[list(v["keywords"]) for v in e["views"]],
                created=float(e["created"]),
            )
            for name, e in sorted(concepts.items()) if name not in damaged
        ]

    def damaged(self) -> list[SkippedConcept]:
        """The concepts whose manifest entry is malformed, each with what is wrong (naming
        the field) and the fix; they cannot be read, only forgotten (``delete``)."""
        with self._mutex:
            self._concepts()
            damaged = self._damaged
        return [SkippedConcept(n, skip_reason(self._damage_error(n, p)))
                for n, p in sorted(damaged.items())]

    def _valid_name(self, name: str) -> str:
        """``name`` canonical; a stored name that is not a valid one (a hand edit) raises
        StoreError as the damage it is, not InvalidConceptName."""
        with self._mutex:
            self._concepts()
            problem = self._damaged.get(name)
        if problem is not None:
            raise self._damage_error(name, problem)
        return validate_concept_name(name)

    def _damage_error(self, name: str, problem: str) -> StoreError:
        return StoreError(f"{self.manifest_path}: malformed entry for concept {name!r}: "
                          f"{problem}")

    def fingerprint_of(self, name: str) -> ModelFingerprint:
        """The fingerprint of the model that made concept ``name`` (from the manifest)."""
        name = validate_concept_name(name)
        return self._entry_fingerprint(name, self._entry(name))

    def _entry(self, name: str) -> dict[str, Any]:
        """The sound manifest entry of ``name``; StoreError naming the field when it is
        malformed, ConceptNotFound when there is none."""
        with self._mutex:
            entry = self._concepts().get(name)
            problem = self._damaged.get(name)
        if entry is None:
            raise ConceptNotFound(f"no concept named {name!r} in store {self.root}")
        if problem is not None:
            raise self._damage_error(name, problem)
        return entry

    def _entry_fingerprint(self, name: str, entry: Mapping[str, Any]) -> ModelFingerprint:
        """The fingerprint of a sound entry (``_entry`` or ``_sound`` checked it)."""
        return ModelFingerprint.from_dict(entry["fingerprint"])

    def _sound(self, name: str, concepts: Mapping[str, Any]) -> Mapping[str, Any]:
        """``concepts[name]`` (a writer's table) when sound, else StoreError naming the field."""
        problem = self._damaged.get(name)
        if problem is not None:
            raise self._damage_error(name, problem)
        return concepts[name]

    def _check_fingerprint(self, what: str, found: ModelFingerprint, stored: bool = True) -> None:
        if self.fingerprint is not None and not self.fingerprint.matches(found):
            raise FingerprintMismatch(what, self.fingerprint, found, stored)

    def _file_path(self, entry: Mapping[str, Any]) -> Path:
        """A sound entry's file: ``entry_problem`` checked it cannot point outside the store."""
        return self.root / entry["file"]

    def _read_entry(self, name: str, check: bool = True) -> tuple[dict[str, Any], Path, bytes]:
        """The manifest entry and file bytes of ``name``, retrying if a writer replaced the
        concept between our manifest read and our file open. ``check`` refuses concepts of
        another model before reading their file."""
        for _ in range(_READ_RETRIES):
            key = self._stat_key()
            entry = self._entry(name)
            if check:
                self._check_fingerprint(f"concept {name!r}", self._entry_fingerprint(name, entry))
            path = self._file_path(entry)
            try:
                return entry, path, path.read_bytes()
            except FileNotFoundError:
                if self._stat_key() == key:
                    break  # the manifest did not move: the file is really gone
        raise StoreError(
            f"concept {name!r}: its file {path} is missing; the rest of the store is fine, "
            f"forget the concept and introduce it again"
        )

    def get(self, name: str) -> ConceptMemory:
        """Load concept ``name`` (tensors on the CPU, cached until the concept changes)."""
        name = self._valid_name(name)
        with self._mutex:
            entry = self._entry(name)
            self._check_fingerprint(f"concept {name!r}", self._entry_fingerprint(name, entry))
            hit = self._cache.get(name)
            if hit is not None and hit[0] == entry["file"]:
                return hit[1]
        entry, path, data = self._read_entry(name)
        memory = decode_memory(data, str(path))
        if memory.name != name:
            raise StoreError(f"{path}: holds concept {memory.name!r}, manifest says {name!r}")
        self._check_fingerprint(f"concept {name!r} ({path})", memory.fingerprint)
        if self._use_cache:
            with self._mutex:
                self._cache[name] = (entry["file"], memory)
        return memory

    def get_many(
        self, names: Iterable[str], *, skip_broken: bool = False,
        skipped: list[SkippedConcept] | None = None,
    ) -> dict[str, ConceptMemory]:
        """Load several concepts. With ``skip_broken`` a concept that cannot be used (its file
        missing or corrupt, its manifest entry malformed, made by another model) is logged
        with the fix, appended to ``skipped`` when given, and left out instead of failing the
        whole call; an unknown name still raises ``ConceptNotFound``."""
        out: dict[str, ConceptMemory] = {}
        for name in names:
            try:
                memory = self.get(name)
            except (StoreError, FingerprintMismatch) as exc:
                if not skip_broken or isinstance(exc, ConceptNotFound):
                    raise
                reason = skip_reason(exc)
                log.warning("store %s: skipping concept %r: %s", self.root, name, reason)
                if skipped is not None:
                    skipped.append(SkippedConcept(name, reason))
                continue
            out[memory.name] = memory
        return out

    def export(self, name: str, path: Path | str) -> Path:
        """Write concept ``name`` as one self-contained ``.safetensors`` file at ``path``.

        The file is copied as stored, whatever model made it: the fingerprint travels inside
        and the importing store checks it."""
        name = self._valid_name(name)
        _, source, data = self._read_entry(name, check=False)
        decode_memory(data, str(source))  # never export a corrupt file
        path = Path(path)
        atomic_write_bytes(path, data)
        return path

    # ---------------------------------------------------------------- writing

    @contextlib.contextmanager
    def _writer(self) -> Iterator[dict[str, dict[str, Any]]]:
        """Hold the inter-process writer lock; yields a copy of the current concept table."""
        with self._mutex:
            (self.root / CONCEPT_DIR).mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                self._acquire(fd)
                self._load_manifest()
                concepts = dict(self._manifest["concepts"])
                self._collect_garbage(concepts)
                yield concepts
            finally:
                os.close(fd)  # releases the flock

    def _acquire(self, fd: int) -> None:
        deadline = time.monotonic() + self._lock_timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() > deadline:
                raise StoreError(
                    f"{self.root / LOCK_NAME}: another process has been writing this store "
                    f"for over {self._lock_timeout_s:.0f} s"
                )
            time.sleep(0.01)

    def _collect_garbage(self, concepts: Mapping[str, Mapping[str, Any]]) -> None:
        """Remove files no manifest entry names (left by a crash). Runs under the lock. A
        malformed entry's file is kept: it may still be the only copy of a memory."""
        live = {entry_file(e) for e in concepts.values()}
        with os.scandir(self.root / CONCEPT_DIR) as entries:
            for item in entries:
                rel = f"{CONCEPT_DIR}/{item.name}"
                if item.is_file() and rel not in live:
                    log.info("store %s: removing orphan file %s", self.root, rel)
                    with contextlib.suppress(OSError):
                        os.unlink(item.path)
        for tmp in self.root.glob(f".{MANIFEST_NAME}.*.tmp"):
            log.info("store %s: removing temporary file %s", self.root, tmp.name)
            with contextlib.suppress(OSError):
                tmp.unlink()

    def put(self, memory: ConceptMemory, replace: bool = False) -> ConceptMemory:
        """Store ``memory``. If the concept exists, ``replace=False`` appends the new views to
        it and ``replace=True`` overwrites it. Returns the memory as stored."""
        return self.put_many([memory], replace=replace)[0]

    def put_many(
        self, memories: Iterable[ConceptMemory], replace: bool = False
    ) -> list[ConceptMemory]:
        """Store several memories with one manifest commit (all or nothing)."""
        memories = list(memories)
        for m in memories:
            self._check_fingerprint(f"concept {m.name!r}", m.fingerprint, stored=False)
        with self._writer() as concepts:
            stored = self._commit(concepts, memories, replace)
        log.info("store %s: stored %s", self.root, ", ".join(repr(n) for n in stored))
        return [stored[m.name] for m in memories]

    def _commit(self, concepts: dict[str, dict[str, Any]], memories: list[ConceptMemory],
                replace: bool, owner: ModelFingerprint | None = None
                ) -> dict[str, ConceptMemory]:
        """Write ``memories`` and the manifest naming them; runs under the writer lock.
        Returns each name's memory as stored."""
        stored: dict[str, ConceptMemory] = {}
        new_files: list[Path] = []
        obsolete: list[Path] = []
        committed = False
        try:
            for memory in memories:
                name = memory.name
                if name in concepts and not replace:
                    base = stored.get(name) or self._load_for_update(name, concepts)
                    memory = base.add_views(memory)
                data, meta = encode_memory(memory)
                rel = _new_file_name(name)
                _write_and_rename(self.root / rel, data)
                new_files.append(self.root / rel)
                old = entry_file(concepts.get(name))
                if old is not None:
                    obsolete.append(self.root / old)
                concepts[name] = {"file": rel, **meta}
                stored[name] = memory
            _fsync_dir(self.root / CONCEPT_DIR)
            self._write_manifest(concepts, owner)
            committed = True
        except BaseException:
            if not committed:  # the old manifest is live: the new files are orphans
                self._remove(new_files)
            raise
        self._remove(obsolete)
        if self._use_cache:
            for name, memory in stored.items():
                self._cache[name] = (concepts[name]["file"], memory)
        return stored

    def _load_for_update(self, name: str, concepts: Mapping[str, Any],
                         check: bool = True) -> ConceptMemory:
        """The stored memory of ``name`` that a writer builds on (views added, rebound)."""
        try:
            entry = self._sound(name, concepts)
        except StoreError as exc:
            raise StoreError(f"{exc}; forget the concept, or use replace=True to overwrite "
                             "it") from exc
        if check:
            self._check_fingerprint(f"concept {name!r}", self._entry_fingerprint(name, entry))
        hit = self._cache.get(name)
        if hit is not None and hit[0] == entry["file"]:
            return hit[1]
        path = self._file_path(entry)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StoreError(
                f"concept {name!r}: its file {path} is missing; use replace=True to overwrite it"
            ) from None
        try:
            return decode_memory(data, str(path))
        except StoreError as exc:
            raise StoreError(f"concept {name!r} cannot take new views: {exc}; use "
                             "replace=True to overwrite it, or forget it") from exc

    def _remove(self, paths: Iterable[Path]) -> None:
        for path in paths:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:  # an orphan; the next write collects it
                log.warning("store %s: could not remove %s: %s", self.root, path, exc)

    def delete(self, name: str) -> None:
        """Forget concept ``name`` and delete its file, damaged entries included (a stored
        name that is not a valid one is matched exactly); ``ConceptNotFound`` if it is not
        stored."""
        if name not in self._concepts():
            name = validate_concept_name(name)
        with self._writer() as concepts:
            if name not in concepts:
                raise ConceptNotFound(f"no concept named {name!r} in store {self.root}")
            entry = concepts.pop(name)  # may be any JSON value, null included
            self._write_manifest(concepts)
            rel = entry_file(entry)  # a malformed entry's file only when it names a valid one
            self._remove([] if rel is None else [self.root / rel])
            self._cache.pop(name, None)
        log.info("store %s: deleted %r", self.root, name)

    def rebind(self, fingerprint: ModelFingerprint,
               names: Iterable[str] | None = None) -> list[str]:
        """Re-label concepts (all, or ``names``) as made by the model ``fingerprint``; returns
        the names rewritten, in one manifest commit (all or nothing).

        For a model whose config changed but whose weights did not: a transformers upgrade
        that adds config keys changes the config hash the fingerprint is made of, and the
        store would refuse its own model's memories. The caller vouches that the weights are
        the same; what can be checked is checked: a concept of another family or width is
        refused (``FingerprintMismatch``, nothing rewritten), and concepts that already carry
        ``fingerprint`` are left as they are."""
        if isinstance(names, str):
            names = [names]
        wanted = None if names is None else [validate_concept_name(n) for n in names]
        with self._writer() as concepts:
            stale = []
            if wanted is None:  # all: malformed entries cannot be re-labelled, only forgotten
                for name, problem in sorted(self._damaged.items()):
                    log.warning("store %s: not rebinding %r: %s", self.root, name, problem)
            for name in (sorted(set(concepts) - set(self._damaged)) if wanted is None
                         else dict.fromkeys(wanted)):
                if name not in concepts:
                    raise ConceptNotFound(f"no concept named {name!r} in store {self.root}")
                found = self._entry_fingerprint(name, self._sound(name, concepts))
                if found == fingerprint:
                    continue
                if (found.family, found.hidden_size) != (fingerprint.family,
                                                         fingerprint.hidden_size):
                    raise FingerprintMismatch(f"concept {name!r}", fingerprint, found)
                memory = self._load_for_update(name, concepts, check=False)
                stale.append(dataclasses.replace(memory, fingerprint=fingerprint))
            if stale:
                self._commit(concepts, stale, replace=True, owner=fingerprint)
        if stale:
            log.info("store %s: rebound %s to model %s", self.root,
                     ", ".join(repr(m.name) for m in stale), fingerprint)
        return [m.name for m in stale]

    def import_(
        self, path: Path | str, name: str | None = None, replace: bool = False
    ) -> ConceptMemory:
        """Add a concept from a file written by ``export`` (optionally under a new name).
        Refused with ``FingerprintMismatch`` when it was made by another model."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StoreError(f"{path}: cannot read memory file ({exc})") from exc
        memory = decode_memory(data, str(path))
        if name is not None:
            memory = memory.renamed(name)
        self._check_fingerprint(f"memory file {path}", memory.fingerprint, stored=False)
        return self.put(memory, replace=replace)


def _new_file_name(name: str) -> str:
    """A fresh file for one write of concept ``name``: never reused, so readers holding the
    previous manifest keep reading the previous, complete file."""
    return f"{CONCEPT_DIR}/{concept_file_stem(name)}.{uuid.uuid4().hex[:12]}.safetensors"


def _empty_manifest() -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "generation": 0,
        "fingerprint": None,
        "concepts": {},
    }

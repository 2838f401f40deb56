"""Concept names, memories, fingerprints and the on-disk memory store, on real files."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from ego_ros.core import store as store_mod
from ego_ros.core.memory import (
    ConceptMemory,
    FingerprintMismatch,
    ModelFingerprint,
    ViewInfo,
    fingerprint_from_config,
)
from ego_ros.core.names import (
    MAX_NAME_LENGTH,
    InvalidConceptName,
    concept_file_stem,
    validate_concept_name,
)
from ego_ros.core.selection import ViewSelection
from ego_ros.core.store import ConceptNotFound, MemoryStore, StoreError
from ego_ros.core.types import ConceptInfo

D = 8
CONFIG = {"model_type": "qwen2_5_vl", "text_config": {"hidden_size": D, "num_hidden_layers": 4}}
FP = fingerprint_from_config("qwen2_5_vl", D, CONFIG)
OTHER_FP = fingerprint_from_config("qwen2_5_vl", D, {**CONFIG, "vocab_size": 999})


def make_memory(
    name: str,
    counts: tuple[int, ...] = (3,),
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    fingerprint: ModelFingerprint = FP,
    fill: float | None = None,
) -> ConceptMemory:
    """A memory with one view per entry of ``counts`` (that many tokens), on a 4x4 grid."""
    gen = torch.Generator().manual_seed(seed)
    views = []
    for v, k in enumerate(counts):
        tokens = torch.randn(k, D, generator=gen) if fill is None else torch.full((k, D), fill)
        views.append(
            ViewSelection(
                tokens=tokens.to(dtype),
                indices=torch.arange(k) * 2 + v % 2,
                grid=(4, 4),
                keywords=[f"kw{v}", "red"],
                area_percent=10.0 + v,
                area_defaulted=v == 1,
            )
        )
    return ConceptMemory.from_views(name, views, [5, 9], fingerprint, created=1700000000.25)


def assert_same_memory(a: ConceptMemory, b: ConceptMemory) -> None:
    assert a.name == b.name and a.tokens.dtype == b.tokens.dtype
    assert a.tokens.shape == b.tokens.shape
    bits = torch.int16 if a.tokens.element_size() == 2 else torch.int32
    assert torch.equal(a.tokens.view(bits), b.tokens.view(bits)), "tokens differ bit-wise"
    assert torch.equal(a.view_ids, b.view_ids)
    assert a.layers == b.layers and a.created == b.created and a.fingerprint == b.fingerprint
    assert len(a.views) == len(b.views)
    for va, vb in zip(a.views, b.views):
        assert torch.equal(va.indices, vb.indices) and va.grid == vb.grid
        assert (va.keywords, va.area_percent, va.area_defaulted) == (
            vb.keywords,
            vb.area_percent,
            vb.area_defaulted,
        )


def concept_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "concepts").iterdir())


# ----------------------------------------------------------------------------- names

HOSTILE = [
    "",
    "   ",
    "../x",
    "a/b",
    "a\\b",
    "\x00",
    "x\x00y",
    "\u202e",
    "evil\u202etxt.exe",
    "..",
    ".",
    "...",
    "a" * 500,
    "line\nbreak",
    "tab\there",
    "para\u2029x",
    "zero\u200bw",
]
ACCEPTED = [
    "Anna's mug",
    "mug 2",
    "café",
    "小狗",
    "Mug",
    "mug",
    "..mug",
    "a" * MAX_NAME_LENGTH,
    "R2-D2 (blue)",
    "émoji 🐶",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_rejected(name: str) -> None:
    with pytest.raises(InvalidConceptName) as info:
        validate_concept_name(name)
    assert isinstance(info.value, ValueError) and str(info.value)


def test_name_rejects_non_string() -> None:
    with pytest.raises(InvalidConceptName, match="string"):
        validate_concept_name(b"mug")  # type: ignore[arg-type]


def test_names_normalised() -> None:
    assert validate_concept_name("  cafe\u0301 ") == "café"  # NFD input, NFC out, stripped
    assert concept_file_stem("cafe\u0301") == concept_file_stem("café")


def test_file_stems_are_safe_distinct_and_never_the_raw_name() -> None:
    stems = {name: concept_file_stem(name) for name in ACCEPTED}
    assert len(set(stems.values())) == len(ACCEPTED)  # "Mug" and "mug" differ too
    for name, stem in stems.items():
        assert re.fullmatch(r"[a-z0-9-]+-[0-9a-f]{16}", stem), stem
        assert stem != name and len(stem) <= 32 + 1 + 16
        if not re.fullmatch(r"[a-z0-9-]+", name):
            assert name not in stem
    assert stems["小狗"].startswith("concept-")
    assert concept_file_stem("Anna's mug").startswith("anna-s-mug-")
    for name in HOSTILE:
        with pytest.raises(InvalidConceptName):
            concept_file_stem(name)


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_names_round_trip_through_store(tmp_path: Path, name: str) -> None:
    MemoryStore(tmp_path, FP).put(make_memory(name))
    fresh = MemoryStore(tmp_path, FP)
    assert fresh.names() == [name] and name in fresh
    assert fresh.get(name).name == name
    (file,) = concept_files(tmp_path)
    assert name not in file or re.fullmatch(r"[a-z0-9-]+", name)


def test_store_rejects_hostile_names(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path, FP)
    for name in ["../x", "a/b", "\u202e"]:
        with pytest.raises(InvalidConceptName):
            store.get(name)
        with pytest.raises(InvalidConceptName):
            make_memory(name)
        assert name not in store
    assert not (tmp_path.parent / "x").exists()


# ----------------------------------------------------------------------------- memories


def test_fingerprint_ignores_volatile_keys_only() -> None:
    noisy = {
        **CONFIG,
        "_name_or_path": "/robot/models/qwen",
        "transformers_version": "5.23.0",
        "torch_dtype": "bfloat16",
        "_commit_hash": "abc",
        "text_config": {**CONFIG["text_config"], "dtype": torch.float16, "_name_or_path": "x"},
    }
    assert fingerprint_from_config("qwen2_5_vl", D, noisy) == FP
    assert OTHER_FP != FP and not FP.matches(OTHER_FP)
    assert fingerprint_from_config("internvl", D, CONFIG) != FP
    assert ModelFingerprint.from_dict(json.loads(json.dumps(FP.to_dict()))) == FP
    with pytest.raises(ValueError, match="hidden_size"):
        ModelFingerprint("x", 0, "ab")
    with pytest.raises(ValueError, match="config_hash"):
        ModelFingerprint("x", 8, "not hex")


def test_memory_add_views_renumbers_and_info() -> None:
    a = make_memory("mug", counts=(3, 2), seed=1)
    b = make_memory("mug", counts=(4,), seed=2)
    merged = a.add_views(b)
    assert merged.num_views == 3 and merged.num_tokens == 9
    assert merged.view_ids.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert torch.equal(merged.view_tokens(2), b.tokens)
    assert torch.equal(merged.view_tokens(0), a.view_tokens(0))
    info = merged.to_info()
    assert isinstance(info, ConceptInfo)
    assert (info.name, info.num_tokens, info.num_views) == ("mug", 9, 3)
    assert info.keywords == [["kw0", "red"], ["kw1", "red"], ["kw0", "red"]]
    with pytest.raises(FingerprintMismatch):
        a.add_views(make_memory("mug", fingerprint=OTHER_FP))
    mixed = a.add_views(make_memory("mug", dtype=torch.bfloat16))  # a bf16 robot's new views
    assert mixed.tokens.dtype == a.tokens.dtype and mixed.num_views == a.num_views + 1


def test_memory_validates_view_ids_and_width() -> None:
    good = make_memory("mug", counts=(2, 1))
    with pytest.raises(ValueError, match="view_ids"):
        ConceptMemory("mug", good.tokens, torch.tensor([0, 1, 1]), good.views, [1], FP)
    with pytest.raises(ValueError, match="hidden_size"):
        ConceptMemory("mug", torch.zeros(3, D + 1), good.view_ids, good.views, [1], FP)
    with pytest.raises(ValueError, match="grid"):
        ViewInfo(torch.tensor([20]), (4, 4), ("a",), 1.0, False)


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_round_trip_bit_exact(tmp_path: Path, dtype: torch.dtype) -> None:
    memory = make_memory("Anna's mug", counts=(3, 2), dtype=dtype, seed=3)
    stored = MemoryStore(tmp_path, FP).put(memory)
    assert_same_memory(stored, memory)
    loaded = MemoryStore(tmp_path, FP).get("Anna's mug")
    assert_same_memory(loaded, memory)
    manifest = json.loads((tmp_path / "manifest.json").read_text("utf-8"))
    entry = manifest["concepts"]["Anna's mug"]
    assert entry["num_tokens"] == 5 and entry["dtype"] == str(dtype).removeprefix("torch.")
    assert entry["fingerprint"] == FP.to_dict() and manifest["fingerprint"] == FP.to_dict()
    assert entry["views"][1]["grid"] == [4, 4] and entry["views"][1]["area_defaulted"] is True


def test_put_adds_views_or_replaces(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path, FP)
    first = make_memory("mug", counts=(3,), seed=1)
    second = make_memory("mug", counts=(2,), seed=2)
    store.put(first)
    merged = store.put(second, replace=False)
    assert merged.num_views == 2 and merged.num_tokens == 5
    assert_same_memory(MemoryStore(tmp_path, FP).get("mug"), first.add_views(second))
    assert len(concept_files(tmp_path)) == 1  # the superseded file is gone
    replaced = store.put(second, replace=True)
    assert_same_memory(replaced, second)
    assert_same_memory(MemoryStore(tmp_path, FP).get("mug"), second)
    assert len(concept_files(tmp_path)) == 1


def test_delete_names_infos_and_missing(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path, FP)
    assert len(store) == 0 and store.names() == [] and store.infos() == []
    store.put_many([make_memory("b"), make_memory("a", counts=(1, 2))])
    assert store.names() == ["a", "b"] and len(store) == 2
    assert store.infos()[0] == make_memory("a", counts=(1, 2)).to_info()
    store.delete("a")
    assert MemoryStore(tmp_path, FP).names() == ["b"]
    assert len(concept_files(tmp_path)) == 1
    with pytest.raises(ConceptNotFound, match="'a'"):
        store.get("a")
    with pytest.raises(KeyError):
        store.delete("a")


def test_other_instance_sees_updates(tmp_path: Path) -> None:
    writer, reader = MemoryStore(tmp_path, FP), MemoryStore(tmp_path, FP)
    writer.put(make_memory("mug", fill=1.0))
    assert float(reader.get("mug").tokens[0, 0]) == 1.0  # now cached in reader
    writer.put(make_memory("mug", fill=2.0), replace=True)
    assert float(reader.get("mug").tokens[0, 0]) == 2.0
    writer.delete("mug")
    assert "mug" not in reader


# ----------------------------------------------------------------------------- crash safety


def _failing_at(monkeypatch: pytest.MonkeyPatch, func: str, when) -> list[str]:
    """Make ``os.<func>`` raise for the calls where ``when(args)`` is true (fault injection)."""
    real = getattr(os, func)
    hits: list[str] = []

    def wrapper(*args, **kwargs):
        if when(args):
            hits.append(str(args[-1]))
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(store_mod.os, func, wrapper)
    return hits


@pytest.mark.parametrize(
    ("func", "when"),
    [
        ("replace", lambda a: str(a[1]).endswith(".safetensors")),  # concept file rename
        ("replace", lambda a: str(a[1]).endswith("manifest.json")),  # manifest rename
        ("fsync", lambda a: True),  # disk full when flushing the first file
    ],
    ids=["concept-rename", "manifest-rename", "fsync-enospc"],
)
def test_interrupted_write_leaves_old_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, func, when
) -> None:
    store = MemoryStore(tmp_path, FP)
    old = make_memory("mug", counts=(3,), seed=1)
    store.put_many([old, make_memory("cat", seed=4)])
    manifest_before = (tmp_path / "manifest.json").read_bytes()
    files_before = concept_files(tmp_path)

    hits = _failing_at(monkeypatch, func, when)
    with pytest.raises(OSError, match="injected"):
        store.put(make_memory("mug", counts=(2,), seed=9))  # add views to mug
    with pytest.raises(OSError, match="injected"):
        store.put(make_memory("dog", seed=5))
    assert hits
    monkeypatch.undo()

    assert (tmp_path / "manifest.json").read_bytes() == manifest_before
    assert concept_files(tmp_path) == files_before  # no orphans, no temporaries
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    fresh = MemoryStore(tmp_path, FP)
    assert fresh.names() == ["cat", "mug"]
    assert_same_memory(fresh.get("mug"), old)
    # The store stays writable after the failure.
    fresh.put(make_memory("dog", seed=5))
    assert MemoryStore(tmp_path, FP).names() == ["cat", "dog", "mug"]


def test_orphans_from_a_crash_are_collected(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path, FP)
    store.put(make_memory("mug"))
    orphan = tmp_path / "concepts" / "mug-0123456789abcdef.0123456789ab.safetensors"
    orphan.write_bytes(b"half written")
    (tmp_path / "concepts" / ".x.safetensors.1.abcd.tmp").write_bytes(b"tmp")
    assert MemoryStore(tmp_path, FP).get("mug").num_tokens == 3  # readers are unaffected
    store.put(make_memory("cat"))
    assert len(concept_files(tmp_path)) == 2 and not orphan.exists()


# ----------------------------------------------------------------------------- concurrency


def test_concurrent_reader_never_sees_half_written_concepts(tmp_path: Path) -> None:
    writer = MemoryStore(tmp_path, FP)
    writer.put(make_memory("mug", counts=(1,), fill=0.0))
    stop = threading.Event()
    seen: list[float] = []
    errors: list[BaseException] = []

    def read() -> None:
        reader = MemoryStore(tmp_path, FP)
        while not stop.is_set():
            try:
                m = reader.get("mug")
                value = float(m.tokens[0, 0])
                # Generation g has g % 3 + 1 views of 1 token, all tokens filled with g.
                assert m.num_views == int(value) % 3 + 1, (m.num_views, value)
                assert bool((m.tokens == value).all())
                seen.append(value)
            except BaseException as exc:  # surfaced in the main thread
                errors.append(exc)
                return

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for g in range(1, 40):
            writer.put(make_memory("mug", counts=(1,) * (g % 3 + 1), fill=float(g)), replace=True)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not errors, errors[0]
    assert seen and seen == sorted(seen)  # reads move forward, never back


def test_two_writers_lose_no_updates(tmp_path: Path) -> None:
    def write(prefix: str) -> None:
        store = MemoryStore(tmp_path, FP)  # own instance: own lock file descriptor
        for i in range(15):
            store.put(make_memory(f"{prefix}{i}", counts=(1,)))

    threads = [threading.Thread(target=write, args=(p,)) for p in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(MemoryStore(tmp_path, FP)) == 30


def test_writer_waits_for_another_process_holding_the_lock(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path, FP, lock_timeout_s=0.3)
    store.put(make_memory("mug"))
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('locked', flush=True)\n"
         "sys.stdin.read()\n",
         str(tmp_path / ".lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError, match="another process"):
            store.put(make_memory("cat"))
        assert store.get("mug").num_tokens == 3  # reading needs no lock
    finally:
        holder.communicate("", timeout=30)
    store.put(make_memory("cat"))
    assert store.names() == ["cat", "mug"]


# ----------------------------------------------------------------------------- fingerprints


def test_fingerprint_mismatch_refused(tmp_path: Path) -> None:
    MemoryStore(tmp_path, FP).put(make_memory("mug"))
    other = MemoryStore(tmp_path, OTHER_FP)
    with pytest.raises(FingerprintMismatch) as info:
        other.get("mug")
    assert str(FP) in str(info.value) and str(OTHER_FP) in str(info.value)
    with pytest.raises(FingerprintMismatch):
        other.put(make_memory("mug"))  # a memory of FP into a store for OTHER_FP
    with pytest.raises(FingerprintMismatch):
        MemoryStore(tmp_path, FP).put(make_memory("cat", fingerprint=OTHER_FP))
    assert other.names() == ["mug"]  # listing still works
    assert other.fingerprint_of("mug") == FP
    assert MemoryStore(tmp_path, None).get("mug").fingerprint == FP  # no model: no check
    # Export copies the file whatever model made it; the importing store checks it.
    exported = other.export("mug", tmp_path / "mug.safetensors")
    assert MemoryStore(tmp_path / "fp_store", FP).import_(exported).fingerprint == FP


def test_rebind_relabels_same_shape_memories_only(tmp_path: Path) -> None:
    """After a config-only change (OTHER_FP: same family and width), the old model's memories
    are refused until ``rebind`` re-labels them; their tokens are untouched. A memory of
    another width is never re-labelled, and a refused rebind rewrites nothing."""
    old = MemoryStore(tmp_path, FP)
    old.put(make_memory("mug"))
    old.put(make_memory("cat", seed=1))
    new = MemoryStore(tmp_path, OTHER_FP)
    with pytest.raises(FingerprintMismatch, match="concepts rebind"):
        new.get("mug")
    exported = old.export("mug", tmp_path / "mug.safetensors")
    with pytest.raises(FingerprintMismatch) as info:  # not stored: rebind cannot help
        MemoryStore(tmp_path / "other", OTHER_FP).import_(exported)
    assert "concepts rebind" not in str(info.value)
    assert new.rebind(OTHER_FP, "mug") == ["mug"]  # one name as a string
    assert new.get("mug").fingerprint == OTHER_FP
    assert_same_memory(dataclasses.replace(new.get("mug"), fingerprint=FP),
                       MemoryStore(tmp_path / "x", FP).put(make_memory("mug")))
    with pytest.raises(FingerprintMismatch):
        new.get("cat")  # not named, not rebound
    assert new.rebind(OTHER_FP) == ["cat"]  # all: "mug" already carries it
    assert new.rebind(OTHER_FP) == []
    assert sorted(new.get_many(new.names())) == ["cat", "mug"]
    assert json.loads(new.manifest_path.read_text())["fingerprint"] == OTHER_FP.to_dict()
    with pytest.raises(ConceptNotFound):
        new.rebind(OTHER_FP, ["dog"])
    # another family: refused, and nothing rewritten, not even the concept before it
    mixed = MemoryStore(tmp_path / "mixed", None)
    mixed.put(make_memory("a"))
    mixed.put(make_memory("b", fingerprint=fingerprint_from_config("internvl", D, CONFIG)))
    before = mixed.manifest_path.read_bytes()
    with pytest.raises(FingerprintMismatch, match="'b'") as info:
        mixed.rebind(OTHER_FP)
    assert "concepts rebind" not in str(info.value)  # no hint where it cannot apply
    assert mixed.manifest_path.read_bytes() == before
    with pytest.raises(FingerprintMismatch):
        mixed.rebind(ModelFingerprint("qwen2_5_vl", 2 * D, FP.config_hash), ["a"])  # width


# ----------------------------------------------------------------------------- export / import


def test_export_import_between_stores(tmp_path: Path) -> None:
    src, dst = MemoryStore(tmp_path / "robot1", FP), MemoryStore(tmp_path / "robot2", FP)
    memory = make_memory("小狗", counts=(2, 3), dtype=torch.bfloat16, seed=7)
    src.put(memory)
    exported = src.export("小狗", tmp_path / "dog.safetensors")
    assert exported.is_file()
    assert_same_memory(dst.import_(exported), memory)
    assert_same_memory(MemoryStore(tmp_path / "robot2", FP).get("小狗"), memory)
    dst.import_(exported, name="dog")
    assert_same_memory(dst.get("dog"), memory.renamed("dog"))
    again = dst.import_(exported)  # replace=False: the views are added
    assert again.num_views == 4 and again.num_tokens == 10
    assert dst.import_(exported, replace=True).num_views == 2
    with pytest.raises(FingerprintMismatch):
        MemoryStore(tmp_path / "robot3", OTHER_FP).import_(exported)
    assert not (tmp_path / "robot3" / "manifest.json").exists()
    with pytest.raises(InvalidConceptName):
        dst.import_(exported, name="../dog")


def test_import_rejects_non_memory_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    other = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    store = MemoryStore(tmp_path / "store", FP)
    with pytest.raises(StoreError, match="weights.safetensors"):
        store.import_(other)
    with pytest.raises(StoreError, match="cannot read"):
        store.import_(tmp_path / "missing.safetensors")


# ----------------------------------------------------------------------------- corruption


def test_corrupt_or_missing_file_named_and_rest_loads(tmp_path: Path) -> None:
    MemoryStore(tmp_path, FP).put_many([make_memory(n, seed=i) for i, n in enumerate("abc")])
    manifest = json.loads((tmp_path / "manifest.json").read_text("utf-8"))
    file_a = tmp_path / manifest["concepts"]["a"]["file"]
    file_b = tmp_path / manifest["concepts"]["b"]["file"]
    file_a.write_bytes(file_a.read_bytes()[:50])  # truncated
    file_b.unlink()
    store = MemoryStore(tmp_path, FP)
    with pytest.raises(StoreError) as info:
        store.get("a")
    assert file_a.name in str(info.value)
    with pytest.raises(StoreError, match=re.escape(file_b.name)):
        store.get("b")
    assert store.get("c").num_tokens == 3
    assert [i.name for i in store.infos()] == ["a", "b", "c"]  # listing reads no tensors
    assert list(store.get_many(["a", "b", "c"], skip_broken=True)) == ["c"]
    with pytest.raises(StoreError):
        store.get_many(["c", "a"])
    with pytest.raises(StoreError):
        store.export("a", tmp_path / "a.safetensors")
    store.put(make_memory("a"), replace=True)  # replacing repairs it
    assert store.get("a").num_tokens == 3


def test_corrupt_manifest_is_named(tmp_path: Path) -> None:
    MemoryStore(tmp_path, FP).put(make_memory("a"))
    (tmp_path / "manifest.json").write_text("{not json", "utf-8")
    with pytest.raises(StoreError, match="manifest.json"):
        MemoryStore(tmp_path, FP).names()


def test_tampered_manifest_cannot_point_outside(tmp_path: Path) -> None:
    MemoryStore(tmp_path, FP).put(make_memory("a"))
    path = tmp_path / "manifest.json"
    manifest = json.loads(path.read_text("utf-8"))
    manifest["concepts"]["a"]["file"] = "../../etc/passwd"
    path.write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(StoreError, match="field 'file'"):
        MemoryStore(tmp_path, FP).get("a")


# ----------------------------------------------------------------------------- scale


def test_thousand_concepts(tmp_path: Path) -> None:
    memories = [make_memory(f"concept {i}", counts=(2,), seed=i) for i in range(1000)]
    MemoryStore(tmp_path, FP).put_many(memories)
    store = MemoryStore(tmp_path, FP)
    infos = store.infos()
    names = store.names()
    assert len(infos) == len(names) == len(store) == 1000
    assert all(i.num_tokens == 2 for i in infos)
    assert_same_memory(store.get("concept 517"), memories[517])
    got = store.get_many(["concept 1", "concept 999"])
    assert_same_memory(got["concept 999"], memories[999])


def test_empty_or_non_finite_memories_are_refused():
    good = make_memory("mug")
    with pytest.raises(ValueError, match="NaN or infinity"):
        ConceptMemory(good.name, good.tokens * float("nan"), good.view_ids, good.views,
                      good.layers, good.fingerprint)
    with pytest.raises(ValueError):
        ConceptMemory(good.name, good.tokens[:0], good.view_ids[:0], good.views, good.layers,
                      good.fingerprint)


@pytest.mark.parametrize("name", ["<ego:query>", "my <|im_end|> mug"])
def test_names_reserved_in_prompts_are_refused(name):
    with pytest.raises(InvalidConceptName, match="reserved in prompts"):
        validate_concept_name(name)

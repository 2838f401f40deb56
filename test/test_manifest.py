"""Hostile and broken manifests, on real store folders: every wrong type, missing key, huge
number or bad name is named (file, entry, field) by a ``StoreError``; never a ``TypeError``,
``KeyError``, ``OverflowError`` or ``ValueError`` from deep inside. A bad top level makes the
store unreadable; a bad entry makes only that concept unreadable: it is listed apart, skipped
at load, kept untouched by writers and removed by ``delete`` (its file too, never a file
outside the store)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_store import FP, make_memory

from ego_ros.cli.main import main as cli_main
from ego_ros.core.store import MemoryStore, StoreError

# ----------------------------------------------------------------------------- top level

TOP_LEVEL = [  # (raw manifest text, what the message must say)
    ("[1, 2]", "top level is a JSON array"),
    ('"concepts"', "top level is a JSON string"),
    ("42", "top level is a JSON integer"),
    ("null", "top level is a JSON null"),
    ("", "Expecting value"),
    ("\xff\xfe", "utf-8"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"format": 7, "concepts": {}}', "format tag is 7"),
    ('{"concepts": {}}', "format tag is None"),
    ('{"format": "ego_ros.memory_store", "version": "1", "concepts": {}}', "'version'"),
    ('{"format": "ego_ros.memory_store", "version": true, "concepts": {}}', "'version'"),
    ('{"format": "ego_ros.memory_store", "version": -1, "concepts": {}}', "'version'"),
    ('{"format": "ego_ros.memory_store", "version": 1e999, "concepts": {}}', "'version'"),
    ('{"format": "ego_ros.memory_store", "version": 2, "concepts": {}}', "newer"),
    ('{"format": "ego_ros.memory_store", "version": ' + "9" * 5000 + ', "concepts": {}}',
     "digits"),
    ('{"format": "ego_ros.memory_store", "generation": "3", "concepts": {}}', "'generation'"),
    ('{"format": "ego_ros.memory_store", "generation": 1.5, "concepts": {}}', "'generation'"),
    ('{"format": "ego_ros.memory_store", "generation": ' + str(10**30) + ', "concepts": {}}',
     "'generation'"),
    ('{"format": "ego_ros.memory_store", "fingerprint": "qwen", "concepts": {}}',
     "'fingerprint'"),
    ('{"format": "ego_ros.memory_store"}', "no 'concepts' table"),
    ('{"format": "ego_ros.memory_store", "concepts": []}', "'concepts' must be an object"),
    ('{"format": "ego_ros.memory_store", "concepts": "mug"}', "'concepts' must be an object"),
    ('{"format": "ego_ros.memory_store", "concepts": null}', "'concepts' must be an object"),
]


@pytest.mark.parametrize("text,expected", TOP_LEVEL,
                         ids=[f"top{i}" for i in range(len(TOP_LEVEL))])
def test_a_malformed_top_level_is_a_store_error_naming_the_file(tmp_path, text, expected):
    raw = text.encode("latin-1") if text.startswith("\xff") else text.encode()
    (tmp_path / "manifest.json").write_bytes(raw)
    store = MemoryStore(tmp_path, FP)
    for call in (store.names, store.infos, store.damaged, lambda: store.get("mug"),
                 lambda: store.put(make_memory("mug")), lambda: store.delete("mug")):
        with pytest.raises(StoreError) as info:
            call()
        assert "manifest.json" in str(info.value) and expected in str(info.value)
    assert (tmp_path / "manifest.json").read_bytes() == raw  # nothing rewritten


# ----------------------------------------------------------------------------- one entry


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """A mutation setting ``entry[k1][k2]...`` (keys split on '.'; digits index lists)."""
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]

    def mutate(entry: dict) -> None:
        target = entry
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return mutate


def _drop(key: str) -> Callable[[dict], None]:
    return lambda entry: entry.pop(key)


ENTRY = [  # (id, mutation of the entry of "bad", what the reason must name)
    ("num_tokens-string", _set("num_tokens", "3"), "field 'num_tokens'"),
    ("num_tokens-float", _set("num_tokens", 3.0), "field 'num_tokens'"),
    ("num_tokens-bool", _set("num_tokens", True), "field 'num_tokens'"),
    ("num_tokens-negative", _set("num_tokens", -3), "field 'num_tokens'"),
    ("num_tokens-zero", _set("num_tokens", 0), "field 'num_tokens'"),
    ("num_tokens-huge", _set("num_tokens", 10**30), "field 'num_tokens'"),
    ("num_tokens-infinite", _set("num_tokens", float("inf")), "field 'num_tokens'"),
    ("num_tokens-null", _set("num_tokens", None), "field 'num_tokens'"),
    ("num_tokens-missing", _drop("num_tokens"), "field 'num_tokens' is missing"),
    ("num_views-list", _set("num_views", [1]), "field 'num_views'"),
    ("num_views-mismatch", _set("num_views", 2), "'views' lists 1"),
    ("num_views-missing", _drop("num_views"), "field 'num_views' is missing"),
    ("created-string", _set("created", "yesterday"), "field 'created'"),
    ("created-nan", _set("created", float("nan")), "field 'created'"),
    ("created-huge", _set("created", 1e300), "field 'created'"),
    ("created-negative", _set("created", -1), "field 'created'"),
    ("created-missing", _drop("created"), "field 'created' is missing"),
    ("file-number", _set("file", 12), "field 'file'"),
    ("file-outside", _set("file", "../../outside.safetensors"), "field 'file'"),
    ("file-absolute", _set("file", "/etc/passwd"), "field 'file'"),
    ("file-missing", _drop("file"), "field 'file' is missing"),
    ("fingerprint-string", _set("fingerprint", "qwen"), "field 'fingerprint'"),
    ("fingerprint-no-family", lambda e: e["fingerprint"].pop("family"), "'family'"),
    ("fingerprint-width-string", _set("fingerprint.hidden_size", "8"), "'hidden_size'"),
    ("fingerprint-width-huge", _set("fingerprint.hidden_size", 10**40), "'hidden_size'"),
    ("fingerprint-hash-number", _set("fingerprint.config_hash", 123), "'config_hash'"),
    ("fingerprint-hash-not-hex", _set("fingerprint.config_hash", "XYZ"), "config_hash"),
    ("fingerprint-missing", _drop("fingerprint"), "field 'fingerprint' is missing"),
    ("views-object", _set("views", {"0": {}}), "field 'views'"),
    ("views-string", _set("views", "kw0"), "field 'views'"),
    ("view-number", _set("views.0", 5), "field 'views' [0]"),
    ("keywords-string", _set("views.0.keywords", "red"), "[0].keywords"),
    ("keywords-numbers", _set("views.0.keywords", [1, 2]), "[0].keywords"),
    ("keywords-missing", lambda e: e["views"][0].pop("keywords"), "[0].keywords"),
    ("name-number", _set("name", 5), "field 'name'"),
    ("name-other", _set("name", "good"), "field 'name'"),
]
WHOLE_ENTRY = [  # (id, replacement of the whole entry, what the reason must name)
    ("entry-string", "concepts/x.safetensors", "JSON string, not an object"),
    ("entry-list", [1, 2], "JSON array, not an object"),
    ("entry-null", None, "JSON null, not an object"),
    ("entry-number", 3, "JSON integer, not an object"),
]


def _two_concepts(root: Path) -> dict:
    """A store with concepts 'good' and 'bad'; returns its manifest (parsed)."""
    MemoryStore(root, FP).put_many([make_memory("good"), make_memory("bad", seed=1)])
    return json.loads((root / "manifest.json").read_text("utf-8"))


def _write(root: Path, manifest: dict) -> None:
    (root / "manifest.json").write_text(json.dumps(manifest), "utf-8")


def _check_damaged(root: Path, name: str, expected: str, bad_file: Path | None) -> None:
    """What a store must do with one malformed entry ``name`` beside a sound 'good'."""
    store = MemoryStore(root, FP)
    assert sorted(store.names()) == sorted(["good", name])
    assert [i.name for i in store.infos()] == ["good"]
    (damaged,) = store.damaged()
    assert damaged.name == name and expected in damaged.reason and "forget" in damaged.reason
    with pytest.raises(StoreError) as info:
        store.get(name)
    assert repr(name) in str(info.value) and expected in str(info.value)
    with pytest.raises(StoreError):
        store.export(name, root / "out.safetensors")
    skipped: list = []
    assert list(store.get_many(store.names(), skip_broken=True, skipped=skipped)) == ["good"]
    assert [s.name for s in skipped] == [name] and expected in skipped[0].reason
    # A write of another concept keeps the bad entry (and its file) exactly as they were.
    before = json.loads((root / "manifest.json").read_text("utf-8"))["concepts"][name]
    store.put(make_memory("other"))
    after = json.loads((root / "manifest.json").read_text("utf-8"))["concepts"]
    assert after[name] == before
    if bad_file is not None:
        assert bad_file.is_file()
    # Forgetting removes the entry, and the file it names when it is one of the store's.
    store.delete(name)
    assert store.names() == ["good", "other"] and store.damaged() == []
    if bad_file is not None:
        assert not bad_file.exists()
    assert MemoryStore(root, FP).get("good").num_tokens == 3


@pytest.mark.parametrize("mutate,expected", [c[1:] for c in ENTRY], ids=[c[0] for c in ENTRY])
def test_a_malformed_entry_is_named_listed_apart_kept_and_forgettable(tmp_path, mutate,
                                                                      expected):
    manifest = _two_concepts(tmp_path)
    entry = manifest["concepts"]["bad"]
    original = entry["file"]
    bad_file = tmp_path / original
    mutate(entry)
    _write(tmp_path, manifest)
    outside = tmp_path.parent / "outside.safetensors"
    outside.write_bytes(b"not ours")
    keeps_file = entry.get("file") == original
    _check_damaged(tmp_path, "bad", expected, bad_file if keeps_file else None)
    assert outside.read_bytes() == b"not ours"  # never deleted through a bad entry
    if not keeps_file:  # the bad entry's real file became an orphan: collected by a write
        assert not bad_file.exists()


@pytest.mark.parametrize("entry,expected", [c[1:] for c in WHOLE_ENTRY],
                         ids=[c[0] for c in WHOLE_ENTRY])
def test_an_entry_of_the_wrong_json_type_is_named(tmp_path, entry, expected):
    manifest = _two_concepts(tmp_path)
    manifest["concepts"]["bad"] = entry
    _write(tmp_path, manifest)
    _check_damaged(tmp_path, "bad", expected, None)


@pytest.mark.parametrize("name,expected", [
    ("a/b", "path separator"), ("", "empty"), ("<ego:query>", "reserved"),
    (" good2", "canonical form"), ("x" * 10_000, "characters long"),
])
def test_an_entry_whose_name_is_not_a_valid_name_is_named_and_forgettable(tmp_path, name,
                                                                          expected):
    manifest = _two_concepts(tmp_path)
    manifest["concepts"][name] = manifest["concepts"].pop("bad")
    bad_file = tmp_path / manifest["concepts"][name]["file"]
    _write(tmp_path, manifest)
    _check_damaged(tmp_path, name, expected, bad_file)


def test_adding_views_to_a_malformed_entry_says_to_replace_or_forget(tmp_path):
    manifest = _two_concepts(tmp_path)
    manifest["concepts"]["bad"]["num_tokens"] = "many"
    _write(tmp_path, manifest)
    store = MemoryStore(tmp_path, FP)
    with pytest.raises(StoreError, match="'num_tokens'.*replace=True"):
        store.put(make_memory("bad"))
    assert store.put(make_memory("bad", counts=(2,)), replace=True).num_tokens == 2
    assert store.damaged() == [] and store.get("bad").num_tokens == 2
    assert [c.name for c in store.infos()] == ["bad", "good"]


def test_rebind_all_leaves_malformed_entries_and_refuses_a_named_one(tmp_path):
    from test_store import OTHER_FP

    manifest = _two_concepts(tmp_path)
    manifest["concepts"]["bad"]["views"] = "none"
    _write(tmp_path, manifest)
    store = MemoryStore(tmp_path, OTHER_FP)
    assert store.rebind(OTHER_FP) == ["good"]
    with pytest.raises(StoreError, match="field 'views'"):
        store.rebind(OTHER_FP, ["bad"])
    assert json.loads((tmp_path / "manifest.json").read_text())["concepts"]["bad"]["views"] == \
        "none"


def test_cli_lists_malformed_entries_apart_and_forgets_them(tmp_path, capsys):
    manifest = _two_concepts(tmp_path)
    manifest["concepts"]["bad"] = "oops"
    manifest["concepts"]["good"]["created"] = "soon"  # both broken: list must still work
    _write(tmp_path, manifest)
    assert cli_main(["concepts", "list", "--store", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["concepts"] == []
    assert [s["name"] for s in out["skipped"]] == ["bad", "good"]
    assert "JSON string" in out["skipped"][0]["reason"]
    assert "field 'created'" in out["skipped"][1]["reason"]
    assert cli_main(["concepts", "show", "good", "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "field 'created'" in err and "Traceback" not in err
    assert cli_main(["concepts", "forget", "bad", "--store", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["remaining"] == ["good"]
    (tmp_path / "manifest.json").write_text("[]")
    assert cli_main(["concepts", "list", "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "manifest.json" in err and "JSON array" in err and "Traceback" not in err

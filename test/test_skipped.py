"""Stored concepts that cannot be loaded (another model's memory, a corrupt file, a malformed
manifest entry): the engine, the worker and the node start anyway, skip them with the reason and
the fix, report them (ListConcepts, /diagnostics, the worker's hello) and forget them, files
included. Real tiny model, real store folders, real ZeroMQ, real DDS, a real worker process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rosutil import RELIABLE_QOS, Collector, ros_harness, wait_for, wait_future, wait_service
from test_node import ego_node, wait_status

from ego_interfaces.srv import ForgetConcept, ListConcepts
from ego_ros.core.engine import EgoEngine
from ego_ros.core.memory import ConceptMemory, ModelFingerprint
from ego_ros.core.selection import ViewSelection
from ego_ros.core.store import MemoryStore
from ego_ros.serving.remote import RemoteEngine, serve_engine, worker_info

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SKIPPED = ["broken", "odd", "old mug", "their mug"]


def memory(name: str, fingerprint: ModelFingerprint, seed: int = 0) -> ConceptMemory:
    """A one-view memory of 3 tokens (random rows) in ``fingerprint``'s width."""
    gen = torch.Generator().manual_seed(seed)
    view = ViewSelection(tokens=torch.randn(3, fingerprint.hidden_size, generator=gen),
                         indices=torch.tensor([0, 5, 9]), grid=(4, 4), keywords=["red"],
                         area_percent=20.0, area_defaulted=False)
    return ConceptMemory.from_views(name, [view], [0], fingerprint, created=1700000000.0)


def mixed_store(root: Path, fingerprint: ModelFingerprint) -> dict[str, Path]:
    """A store for ``fingerprint`` holding 'mug' (usable) and four concepts a node must skip:
    'old mug' (same model, older config: rebind applies), 'their mug' (another family),
    'broken' (its file truncated), 'odd' (a wrong-typed manifest field). Returns the files."""
    older = ModelFingerprint(fingerprint.family, fingerprint.hidden_size, "ab" * 32)
    other = ModelFingerprint("internvl" if fingerprint.family != "internvl" else "qwen2_5_vl",
                             fingerprint.hidden_size, fingerprint.config_hash)
    MemoryStore(root, None).put_many([
        memory("mug", fingerprint), memory("old mug", older, 1), memory("their mug", other, 2),
        memory("broken", fingerprint, 3), memory("odd", fingerprint, 4)])
    manifest = json.loads((root / "manifest.json").read_text("utf-8"))
    files = {n: root / e["file"] for n, e in manifest["concepts"].items()}
    files["broken"].write_bytes(files["broken"].read_bytes()[:40])
    manifest["concepts"]["odd"]["num_tokens"] = "three"
    (root / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    return files


def check_reasons(reasons: dict[str, str], files: dict[str, Path]) -> None:
    assert sorted(reasons) == SKIPPED
    assert "concepts rebind" in reasons["old mug"]  # the fix that applies
    assert "concepts rebind" not in reasons["their mug"] and "internvl" in reasons["their mug"]
    assert files["broken"].name in reasons["broken"]
    assert "field 'num_tokens'" in reasons["odd"]
    assert all("forget" in r for r in reasons.values())


def test_the_engine_starts_skips_reports_and_forgets_unusable_concepts(tiny_backends,
                                                                       tmp_path, make_scene):
    backend = tiny_backends["qwen2_5_vl"]
    files = mixed_store(tmp_path, backend.fingerprint)
    engine = EgoEngine(backend, MemoryStore(tmp_path, backend.fingerprint))
    assert [c.name for c in engine.concepts()] == ["mug"]
    check_reasons({s.name: s.reason for s in engine.skipped_concepts()}, files)
    assert engine.health()["concepts_skipped"] == 4
    assert engine.recognize([make_scene(1)]).considered == ["mug"]
    # Adding views to a skipped concept is refused before the model runs, saying what to do.
    with pytest.raises(ValueError, match="skipped at load.*replace"):
        engine.introduce("broken", [make_scene(2)])
    assert engine.store.damaged()[0].name == "odd"

    # The worker's hello names them, fresh at every handshake; forget works over ZeroMQ.
    server = serve_engine(engine, "tcp://127.0.0.1:*",
                          info=worker_info(engine, {"model": "tiny"})).start()
    try:
        with RemoteEngine(server.endpoint, timeout_s=30.0) as remote:
            remote.wait_ready(10.0)
            assert remote.server_info["info"]["model"] == "tiny"
            assert [s.name for s in remote.known_skipped()[1]] == SKIPPED
            assert [s.name for s in remote.skipped_concepts()] == SKIPPED
            assert remote.forget("old mug") and remote.forget("broken")
            assert [s.name for s in remote.known_skipped()[1]] == ["odd", "their mug"]
            assert not remote.forget("old mug")  # gone
        with RemoteEngine(server.endpoint) as later:
            later.wait_ready(10.0)
            assert [s.name for s in later.known_skipped()[1]] == ["odd", "their mug"]
            assert later.server_info["info"]["skipped_count"] == 2
    finally:
        server.close()
    assert engine.forget("odd")
    # Re-introducing with replace turns a skipped concept into a usable one.
    result = engine.introduce("their mug", [make_scene(3)], replace=True)
    assert result.num_views == 1
    assert engine.skipped_concepts() == []
    assert [c.name for c in engine.concepts()] == ["mug", "their mug"]
    store = MemoryStore(tmp_path, backend.fingerprint)
    assert store.names() == ["mug", "their mug"] and store.damaged() == []
    for name in ("old mug", "broken", "odd", "their mug"):
        assert not files[name].exists(), name  # forgotten or replaced: the old file is gone
    fresh = EgoEngine(backend, store)
    assert fresh.skipped_concepts() == [] and len(fresh.concepts()) == 2


def _services(ros):
    client = ros.node("client")
    diagnostics = Collector()
    client.create_subscription(DiagnosticArray, "/diagnostics", diagnostics, RELIABLE_QOS)
    listing = client.create_client(ListConcepts, "/ego_node/list_concepts")
    forget = client.create_client(ForgetConcept, "/ego_node/forget_concept")
    wait_service(listing)
    wait_service(forget)
    return listing, forget, diagnostics


def _check_node(listing, forget, diagnostics, files: dict[str, Path]) -> None:
    """ListConcepts, /diagnostics and ForgetConcept of a node over ``mixed_store``."""
    reply = wait_future(listing.call_async(ListConcepts.Request()), timeout_s=30.0)
    assert reply.success and list(reply.names) == ["mug"], reply.message
    assert "4 stored concept(s) skipped" in reply.message
    check_reasons(dict(zip(reply.skipped_names, reply.skipped_reasons)), files)
    _, message, values = wait_status(diagnostics, "concept store",
                                     lambda level, _m, _v: level == 1, timeout_s=30.0)  # WARN
    assert "4 stored concept(s) skipped" in message and "'old mug'" in message
    assert values["concepts_skipped"] == "4"
    assert "concepts rebind" in values["skipped: old mug"]
    for name in SKIPPED:
        gone = wait_future(forget.call_async(ForgetConcept.Request(name=name)), timeout_s=30.0)
        assert gone.success and gone.message == f"forgot {name!r}", gone.message
        assert not files[name].exists()
    reply = wait_future(listing.call_async(ListConcepts.Request()), timeout_s=30.0)
    assert list(reply.names) == ["mug"] and list(reply.skipped_names) == []
    assert reply.message == "1 concept(s)"
    wait_status(diagnostics, "concept store", lambda level, m, v: level == 0
                and v["concepts_skipped"] == "0", timeout_s=30.0)


def test_the_node_starts_on_a_store_with_unusable_concepts_and_forgets_them(tiny_model_dirs,
                                                                           tmp_path):
    store = tmp_path / "store"
    model = tiny_model_dirs["qwen2_5_vl"]
    from ego_ros.backends.base import BackendConfig
    from ego_ros.backends.loading import fingerprint_of_folder

    files = mixed_store(store, fingerprint_of_folder(BackendConfig(model, device="cpu")))
    with ros_harness() as ros, ego_node(ros, model, store, **{
            "tasks.recognize": False, "model.device": "cpu", "diagnostics.period_s": 0.2}):
        _check_node(*_services(ros), files)
    assert MemoryStore(store, None).names() == ["mug"]


def test_a_node_on_a_worker_reports_and_forgets_what_the_worker_skipped(tiny_model_dirs,
                                                                       tmp_path, caplog):
    """``run_worker`` (in a thread: the model loads in seconds, not a fresh interpreter's
    minute on a busy machine) with the node in worker mode."""
    import threading

    from test_worker import free_tcp_endpoint

    from ego_ros.backends.base import BackendConfig
    from ego_ros.backends.loading import fingerprint_of_folder
    from ego_ros.serving.rpc import RpcClient, WorkerUnavailable
    from ego_ros.serving.worker import WorkerConfig, run_worker

    endpoint, store = free_tcp_endpoint(), tmp_path / "store"
    model = tiny_model_dirs["qwen2_5_vl"]
    files = mixed_store(store, fingerprint_of_folder(BackendConfig(model, device="cpu")))
    stop, status = threading.Event(), []
    config = WorkerConfig(model=model, store=store, bind=endpoint, device="cpu")
    worker = threading.Thread(target=lambda: status.append(run_worker(config, stop)))
    worker.start()
    try:
        with RpcClient(endpoint, timeout_s=2.0, connect_timeout_s=1.0) as probe:
            def ready() -> bool:
                assert worker.is_alive(), "the worker stopped"
                try:
                    return bool(probe.hello(1.0))
                except WorkerUnavailable:
                    return False

            wait_for(ready, 60.0, f"worker on {endpoint}")
        assert "skipping concept 'old mug'" in caplog.text and "concepts rebind" in caplog.text
        with ros_harness() as ros, ego_node(ros, model, tmp_path / "unused", **{
                "engine.endpoint": endpoint, "tasks.recognize": False,
                "engine.connect_timeout_s": 0.5, "diagnostics.period_s": 0.2}):
            _check_node(*_services(ros), files)
    finally:
        stop.set()
        worker.join(30.0)
    assert status == [0]
    assert MemoryStore(store, None).names() == ["mug"]


def test_known_skipped_prefers_the_newest_news(tmp_path):
    """A hello heard after a forget replaces it; a forget heard after a hello edits it."""
    from test_rpc import FakeEngine

    from ego_ros.core.types import SkippedConcept

    skipped = [SkippedConcept("a", "corrupt; forget it"), SkippedConcept("b", "other model")]

    class Engine(FakeEngine):
        def skipped_concepts(self) -> list[SkippedConcept]:
            return list(skipped)

        def forget(self, name: str) -> bool:
            found = [s for s in skipped if s.name == name]
            for s in found:
                skipped.remove(s)
            return bool(found)

    engine = Engine()
    with serve_engine(engine, "tcp://127.0.0.1:*", info=worker_info(engine, {})) as server, \
            RemoteEngine(server.endpoint) as remote:
        assert remote.known_skipped() is None  # never heard
        remote.wait_ready(10.0)
        assert [s.name for s in remote.known_skipped()[1]] == ["a", "b"]
        assert remote.forget("a")
        assert [s.name for s in remote.known_skipped()[1]] == ["b"]
        skipped.append(SkippedConcept("c", "appeared"))
        remote.wait_ready(10.0)  # a new handshake: newer than the forget
        assert [s.name for s in remote.known_skipped()[1]] == ["b", "c"]
        assert [s.name for s in remote.skipped_concepts()] == ["b", "c"]

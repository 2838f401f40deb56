"""The engine's public methods across a process boundary: the only module that knows both the
engine's API and the RPC transport.

- :class:`RemoteEngine` has the engine's public methods and runs them in a worker process;
  callers (the ROS node) use it exactly like an in-process ``EgoEngine``, plus
  :attr:`~RemoteEngine.healthy` / :attr:`~RemoteEngine.last_ok` for diagnostics.
- :func:`engine_handler` turns a real engine into an :class:`~ego_ros.serving.rpc.RpcServer`
  handler, exposing only the whitelisted :data:`ENGINE_METHODS`.

A stored concept the worker's engine could not load is listed by ``skipped_concepts`` and, for
``/diagnostics`` without a call of its own, in the ``hello`` info (``skipped_concepts``, see
``worker_info``); :meth:`RemoteEngine.known_skipped` gives the newest of what was heard.

Every method's reply is ``{"result": <JSON>}`` (the result type's ``to_dict``); images travel as
uint8 arrays, one frame each. A remote failure raises
:class:`~ego_ros.serving.rpc.WorkerUnavailable` (worker down or too slow) or
:class:`~ego_ros.serving.rpc.RemoteError` (the engine raised; its type and message are kept).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ego_ros.core import limits
from ego_ros.core.names import validate_concept_name
from ego_ros.core.types import (
    AnswerResult,
    ConceptInfo,
    EngineLike,
    IntroduceResult,
    RecognitionResult,
    SkippedConcept,
)
from ego_ros.serving.rpc import CurveClientKeys, Handler, RpcClient, RpcServer
from ego_ros.serving.wire import DEFAULT_LIMITS, WireLimits

ENGINE_METHODS = frozenset(
    {"introduce", "recognize", "ask", "caption", "forget", "concepts", "skipped_concepts",
     "health"}
)

MAX_HELLO_SKIPPED = 32  # skipped concepts named in a hello; skipped_concepts() lists all


def check_images(what: str, images: Sequence[Any]) -> list[np.ndarray]:
    """The images as a list, each an HxWx3 uint8 array; ValueError naming the first bad one."""
    if isinstance(images, np.ndarray) or not isinstance(images, Sequence):
        raise ValueError(f"{what} must be a list of HxWx3 uint8 arrays, "
                         f"got {type(images).__name__}")
    for index, image in enumerate(images):
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                and image.shape[2] == 3 and image.shape[0] > 0 and image.shape[1] > 0):
            got = (f"{image.dtype} array of shape {image.shape}"
                   if isinstance(image, np.ndarray) else type(image).__name__)
            raise ValueError(f"{what}[{index}] must be an HxWx3 uint8 array, got {got}")
    return list(images)


@dataclass(frozen=True)
class WorkerExpectation:
    """The model folder and store a node's parameters name (``model`` None: the embedded tiny
    model). :meth:`check` refuses a worker whose handshake reports others
    (``ego_ros.serving.worker.handshake_info``)."""

    model: Path | None
    store: Path

    def __post_init__(self) -> None:
        if self.model is not None:
            object.__setattr__(self, "model", Path(self.model).expanduser().resolve())
        object.__setattr__(self, "store", Path(self.store).expanduser().resolve())

    def check(self, hello: dict[str, Any]) -> None:
        """ValueError naming both sides when the worker's model or store differs."""
        info = hello.get("info") or {}
        theirs_model = "the embedded tiny model" if info.get("tiny") else info.get("model")
        ours_model = "the embedded tiny model" if self.model is None else str(self.model)
        problems = []
        if theirs_model != ours_model:
            problems.append(f"model {theirs_model} (this node's model.path: {ours_model})")
        if info.get("store") != str(self.store):
            problems.append(f"store {info.get('store')} (this node's store.dir: {self.store})")
        if problems:
            raise ValueError(
                f"refusing the worker: it serves {' and '.join(problems)}. Start the worker "
                "with the node's parameters (ego-ros up --use-worker and the launch file's "
                "use_worker:=true do), or set engine.check_worker to false to accept any "
                "worker")


class RemoteEngine:
    """The engine's public methods, executed by an ``ego-ros worker`` at ``endpoint``.

    ``timeout_s`` bounds each inference call; ``introduce_timeout_s`` the slower introduction
    (several LVLM passes per view). ``expect`` refuses a worker serving another model or
    store (every call raises :class:`~ego_ros.serving.rpc.WorkerMismatch` while it answers).
    See :class:`~ego_ros.serving.rpc.RpcClient` for the rest.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout_s: float = 30.0,
        introduce_timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        heartbeat_s: float = 0.0,
        curve: CurveClientKeys | None = None,
        limits: WireLimits = DEFAULT_LIMITS,
        expect: WorkerExpectation | None = None,
    ) -> None:
        if isinstance(introduce_timeout_s, bool) or not isinstance(
                introduce_timeout_s, (int, float)) or not introduce_timeout_s > 0:
            raise ValueError(
                f"introduce_timeout_s must be a positive number of seconds, "
                f"got {introduce_timeout_s!r}")
        self._introduce_timeout_s = float(introduce_timeout_s)
        self._client = RpcClient(endpoint, timeout_s=timeout_s,
                                 connect_timeout_s=connect_timeout_s, heartbeat_s=heartbeat_s,
                                 curve=curve, limits=limits,
                                 check_hello=None if expect is None else expect.check)
        # (time.monotonic(), list) of the last skipped_concepts()/forget() answer
        self._skipped_heard: tuple[float, list[SkippedConcept]] | None = None

    # -- transport state --------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return self._client.endpoint

    @property
    def healthy(self) -> bool:
        """True when the last exchange with the worker succeeded (see ``RpcClient.healthy``)."""
        return self._client.healthy

    @property
    def last_ok(self) -> float | None:
        """``time.monotonic()`` of the worker's last answer; None before any."""
        return self._client.last_ok

    @property
    def server_info(self) -> dict[str, Any] | None:
        """The worker's ``hello`` answer (protocol, methods, model info), once connected."""
        return self._client.server_info

    def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """Block until the worker answers the handshake (start-up), at most ``timeout_s``."""
        return self._client.wait_ready(timeout_s)

    def ping(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Worker status (``busy``, ``queued``, ``uptime_s``, ``rtt_s``); answered mid-request."""
        return self._client.ping(timeout_s)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the engine's public methods --------------------------------------------------------
    def _result(self, method: str, params: dict[str, Any], images: Sequence[Any] = (),
                timeout_s: float | None = None) -> Any:
        reply, _ = self._client.call(method, params, images, timeout_s=timeout_s)
        if "result" not in reply:
            raise ValueError(f"worker reply to {method} has no 'result': {sorted(reply)}")
        return reply["result"]

    def introduce(self, name: str, images: list[np.ndarray], replace: bool = False
                  ) -> IntroduceResult:
        data = self._result("introduce", {"name": name, "replace": replace},
                            check_images("images", images), self._introduce_timeout_s)
        return IntroduceResult.from_dict(data)

    def recognize(self, frames: list[np.ndarray], mode: str = "per-concept", clip: bool = False,
                  concepts: list[str] | None = None, caption: bool = False
                  ) -> RecognitionResult:
        params = {"mode": mode, "clip": clip, "concepts": concepts, "caption": caption}
        data = self._result("recognize", params, check_images("frames", frames))
        return RecognitionResult.from_dict(data)

    def ask(self, question: str, frames: list[np.ndarray], clip: bool = False,
            concepts: list[str] | None = None,
            options: dict[str, str] | None = None) -> AnswerResult:
        params = {"question": question, "clip": clip, "concepts": concepts,
                  "options": dict(options) if options else None}
        return AnswerResult.from_dict(self._result("ask", params, check_images("frames", frames)))

    def caption(self, frames: list[np.ndarray], clip: bool = False,
                concepts: list[str] | None = None) -> AnswerResult:
        data = self._result("caption", {"clip": clip, "concepts": concepts},
                            check_images("frames", frames))
        return AnswerResult.from_dict(data)

    def forget(self, name: str) -> bool:
        forgotten = bool(self._result("forget", {"name": name}))
        known = self.known_skipped()
        if forgotten and known is not None and any(s.name == name for s in known[1]):
            self._skipped_heard = (time.monotonic(), [s for s in known[1] if s.name != name])
        return forgotten

    def concepts(self) -> list[ConceptInfo]:
        return [ConceptInfo.from_dict(c) for c in self._result("concepts", {})]

    def skipped_concepts(self) -> list[SkippedConcept]:
        skipped = [SkippedConcept.from_dict(s) for s in self._result("skipped_concepts", {})]
        self._skipped_heard = (time.monotonic(), skipped)
        return skipped

    def known_skipped(self) -> tuple[float, list[SkippedConcept]] | None:
        """``(when, skipped)``: the worker's skipped concepts as last heard, without a call,
        and the ``time.monotonic()`` it was heard: the newer of the last ``hello`` (each
        connection's handshake) and this client's own ``skipped_concepts``/``forget``
        answers. None before the worker ever told."""
        info, at = self._client.server_info, self._client.server_info_at
        heard = self._skipped_heard
        raw = ((info or {}).get("info") or {}).get("skipped_concepts")
        if isinstance(raw, list) and at is not None and (heard is None or at > heard[0]):
            try:
                return at, [SkippedConcept.from_dict(s) for s in raw]
            except (TypeError, ValueError):  # a malformed hello: fall back to what was heard
                pass
        return heard

    def health(self) -> dict[str, Any]:
        """The worker engine's health; raises WorkerUnavailable when the worker is down."""
        return dict(self._result("health", {}))


# -- worker side --------------------------------------------------------------------------------
_STR, _BOOL, _NAMES = (str,), (bool,), (list, type(None))
# method -> parameter name -> accepted JSON types; every parameter is required (the client
# always sends all of them), anything else is refused so typos fail loudly.
_PARAMS: dict[str, dict[str, tuple[type, ...]]] = {
    "introduce": {"name": _STR, "replace": _BOOL},
    "recognize": {"mode": _STR, "clip": _BOOL, "concepts": _NAMES, "caption": _BOOL},
    "ask": {"question": _STR, "clip": _BOOL, "concepts": _NAMES, "options": (dict, type(None))},
    "caption": {"clip": _BOOL, "concepts": _NAMES},
    "forget": {"name": _STR},
    "concepts": {},
    "skipped_concepts": {},
    "health": {},
}
_TAKES_IMAGES = {"introduce", "recognize", "ask", "caption"}


def _checked(method: str, params: dict[str, Any]) -> dict[str, Any]:
    spec = _PARAMS[method]
    if set(params) != set(spec):
        raise ValueError(f"{method}: expected parameters {sorted(spec)}, got {sorted(params)}")
    for key, types in spec.items():
        value = params[key]
        if not isinstance(value, types) or (
                isinstance(value, list) and not all(isinstance(v, str) for v in value)) or (
                isinstance(value, dict) and not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in value.items())):
            raise TypeError(f"{method}: parameter {key!r} has the wrong type "
                            f"({type(value).__name__}: {value!r:.60})")
    return params


def _check_limits(method: str, p: dict[str, Any], num_images: int) -> None:
    """The request limits of ``ego_ros.core.limits``, before any image is copied or the engine
    called: a 200,000-character question or 200 views cost the worker a comparison."""
    if method == "ask":
        limits.check_question(p["question"])
        limits.check_options(p["options"])
    elif method == "introduce":
        validate_concept_name(p["name"])
        limits.check_views(num_images)


def _call(engine: EngineLike, method: str, p: dict[str, Any], images: list[np.ndarray]) -> Any:
    if method == "introduce":
        return engine.introduce(p["name"], images, replace=p["replace"]).to_dict()
    if method == "recognize":
        return engine.recognize(images, mode=p["mode"], clip=p["clip"], concepts=p["concepts"],
                                caption=p["caption"]).to_dict()
    if method == "ask":
        return engine.ask(p["question"], images, clip=p["clip"], concepts=p["concepts"],
                          options=p["options"]).to_dict()
    if method == "caption":
        return engine.caption(images, clip=p["clip"], concepts=p["concepts"]).to_dict()
    if method == "forget":
        return bool(engine.forget(p["name"]))
    if method == "concepts":
        return [c.to_dict() for c in engine.concepts()]
    if method == "skipped_concepts":
        return [s.to_dict() for s in engine.skipped_concepts()]
    return dict(engine.health())  # "health": _checked() admitted nothing else


def engine_handler(engine: EngineLike) -> Handler:
    """An RpcServer handler that runs the whitelisted :data:`ENGINE_METHODS` on ``engine``.

    Received images are copied out of the network buffers (read-only views) so the engine owns
    writable arrays, as it would in-process; the copy costs far less than one inference. A
    request over the limits of ``ego_ros.core.limits`` (question and option sizes, the views
    of an introduction) is answered with ``LimitExceeded`` before that copy.
    """

    def handle(method: str, params: dict[str, Any], arrays: tuple[Any, ...]
               ) -> tuple[dict[str, Any], list[Any]]:
        if method not in ENGINE_METHODS:
            raise ValueError(
                f"{method!r} is not an engine method; allowed {sorted(ENGINE_METHODS)}")
        _checked(method, params)
        _check_limits(method, params, len(arrays))
        if method not in _TAKES_IMAGES and arrays:
            raise ValueError(f"{method} takes no images, got {len(arrays)} arrays")
        images = [np.array(a) for a in check_images("images", list(arrays))]
        return {"result": _call(engine, method, params, images)}, []

    return handle


def worker_info(engine: EngineLike, static: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """The ``hello`` info of a worker serving ``engine``: ``static`` plus the engine's skipped
    concepts as they are at each handshake (``skipped_concepts()`` is a lock-free snapshot,
    safe to call from the server's socket thread while the engine runs a request)."""
    def info() -> dict[str, Any]:
        skipped = engine.skipped_concepts()
        return {**static, "skipped_count": len(skipped),  # the list is capped: hello stays small
                "skipped_concepts": [s.to_dict() for s in skipped[:MAX_HELLO_SKIPPED]]}

    return info


def serve_engine(engine: EngineLike, bind: str, **server_kwargs: Any) -> RpcServer:
    """An (unstarted) RpcServer exposing ``engine``; ``server_kwargs`` go to RpcServer."""
    return RpcServer(engine_handler(engine), bind, ENGINE_METHODS, **server_kwargs)


__all__ = [
    "ENGINE_METHODS",
    "EngineLike",
    "RemoteEngine",
    "WorkerExpectation",
    "check_images",
    "engine_handler",
    "serve_engine",
    "worker_info",
]

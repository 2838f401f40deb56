"""The node's ROS parameters: one table of specs, declared with descriptors, mapped in one place.

Every parameter of ``ego_node`` is a :class:`ParamSpec` in :data:`PARAMS` (name, default,
description, range or choices, read-only flag). :func:`declare_parameters` turns the table into
``declare_parameter`` calls with ``ParameterDescriptor`` s, so ``ros2 param describe`` shows the
same text ``config/ego.yaml`` documents. :func:`settings_from_parameters` is the single mapping
from parameter values to the typed configs the rest of the code uses (``EngineConfig``,
``BackendConfig``, ``ClipConfig``) plus the node's own settings; it validates everything, with
errors that name the parameter and the value.

Why read-only: parameters that size or wire things built once (the model, the store, the
subscription and its QoS, the frame buffer, the engine connection) need a restart to change, so
rclpy refuses to set them at run time. The others (clip sampling, tasks, threshold) take effect
at the next clip; :func:`stream_settings` validates them on their own, cheaply, for the node's
``add_on_set_parameters_callback``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
)
from rclpy.node import Node

from ego_ros.backends.base import MIN_IMAGE_SIDE, BackendConfig
from ego_ros.core.engine import MODES, EngineConfig
from ego_ros.core.limits import MAX_VIEWS
from ego_ros.core.scoring import Thresholds
from ego_ros.image_header import DEFAULT_MAX_PIXELS, MAX_PIXELS_LIMIT, ImageLimits
from ego_ros.ros.qos import RELIABILITY_CHOICES
from ego_ros.serving.remote import WorkerExpectation
from ego_ros.serving.rpc import CurveClientKeys
from ego_ros.stream import ClipConfig

# Family of the embedded tiny model used when model.path is empty.
TINY_FAMILY = "qwen2_5_vl"

_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
          float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter: its default (which also fixes its type), range and documentation."""

    name: str
    default: bool | int | float | str
    description: str
    read_only: bool = False
    low: float | None = None  # inclusive bounds for numbers
    high: float | None = None
    choices: tuple[str, ...] = ()

    def descriptor(self) -> ParameterDescriptor:
        kind = type(self.default)
        desc = ParameterDescriptor(name=self.name, type=_TYPES[kind],
                                   description=self.description, read_only=self.read_only)
        if self.choices:
            desc.additional_constraints = f"one of: {', '.join(self.choices)}"
        if kind is float and self.low is not None and self.high is not None:
            desc.floating_point_range = [FloatingPointRange(
                from_value=float(self.low), to_value=float(self.high), step=0.0)]
        elif kind is int and self.low is not None and self.high is not None:
            desc.integer_range = [IntegerRange(
                from_value=int(self.low), to_value=int(self.high), step=1)]
        return desc

    def check(self, value: Any) -> None:
        """ValueError naming the parameter when ``value`` has the wrong type or range."""
        kind = type(self.default)
        ok_type = (isinstance(value, kind) and not (kind is int and isinstance(value, bool)))
        if not ok_type:
            raise ValueError(f"parameter {self.name} must be a {kind.__name__}, "
                             f"got {type(value).__name__} {value!r}")
        if kind is float and not math.isfinite(value):
            raise ValueError(f"parameter {self.name} must be finite, got {value!r}")
        if self.low is not None and value < self.low or self.high is not None and (
                value > self.high):
            raise ValueError(f"parameter {self.name} must be in [{self.low}, {self.high}], "
                             f"got {value!r}")
        if self.choices and value not in self.choices:
            raise ValueError(f"parameter {self.name} must be one of "
                             f"{', '.join(self.choices)}; got {value!r}")


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("model.path", "", "LVLM checkpoint folder (Hugging Face format) on this machine. "
              "Empty: the embedded tiny random-weight model (demos and tests; its outputs are "
              "meaningless). Unused when engine.endpoint is set.", read_only=True),
    ParamSpec("model.family", "auto", "Model family; auto reads config.json's model_type.",
              read_only=True, choices=("auto", "qwen2_5_vl", "internvl")),
    ParamSpec("model.dtype", "auto", "Weights dtype; auto = bfloat16 on CUDA, float32 on CPU.",
              read_only=True, choices=("auto", "float32", "bfloat16", "float16")),
    ParamSpec("model.device", "auto", "auto, cpu, cuda or cuda:N; auto = cuda when available.",
              read_only=True),
    ParamSpec("model.max_image_tokens", 0, "Cap on the visual tokens of one image or frame "
              "pair for dynamic-resolution families (Qwen2.5-VL); 0 keeps the checkpoint's own "
              "limit.", read_only=True, low=0, high=100000),
    ParamSpec("model.allow_pickle_weights", False, "Load a model.path folder that has only "
              "pickled .bin weights (unpickling can run code from the file: only for "
              "checkpoints you trust); false: safetensors weights only.", read_only=True),
    ParamSpec("store.dir", "~/.ego_ros/store", "Folder of the concept memories (created if "
              "missing). Unused when engine.endpoint is set.", read_only=True),
    ParamSpec("image.compressed", False, "Subscribe to image/compressed "
              "(sensor_msgs/CompressedImage, JPEG/PNG) instead of image (sensor_msgs/Image).",
              read_only=True),
    ParamSpec("image.max_pixels", DEFAULT_MAX_PIXELS, "Frames declaring more pixels (width x "
              "height, read from the PNG/JPEG header before decoding) are refused and counted "
              "as conversion errors; frames under the model's minimum side (8) are too.",
              read_only=True, low=64, high=MAX_PIXELS_LIMIT),
    ParamSpec("qos.reliability", "auto", "Camera subscription reliability. auto: match "
              "the topic's publishers (reliable when all are, else best_effort), subscribing "
              "once one is seen and again when they change. reliable or best_effort force it: "
              "a reliable subscription receives nothing from best-effort publishers, and a "
              "best-effort one loses frames a reliable publisher would have resent.",
              read_only=True, choices=RELIABILITY_CHOICES),
    ParamSpec("qos.expected_rate_hz", 0.0, "The camera's frame rate, for the delivery check "
              "on /diagnostics (WARN when under half of its frames arrive). 0: estimate it "
              "from the header stamps of the received frames.", read_only=True, low=0.0,
              high=10000.0),
    ParamSpec("qos.depth", 5, "Camera subscription queue depth (keep last).", read_only=True,
              low=1, high=1000),
    ParamSpec("buffer.max_frames", 90, "Most frames kept in the ring buffer.", read_only=True,
              low=1, high=10000),
    ParamSpec("buffer.max_bytes", 1 << 30, "Most bytes of decoded pixels (3 per pixel) kept in "
              "the ring buffer; the oldest frames are evicted beyond it. Must hold one frame of "
              "image.max_pixels.", read_only=True, low=1 << 20, high=1 << 40),
    ParamSpec("buffer.max_age_s", 5.0, "Frames stamped more than this before the newest are "
              "dropped from the buffer; must cover clip.window_s.", read_only=True,
              low=0.01, high=3600.0),
    ParamSpec("clip.period_s", 1.0, "A clip is sampled and sent to the engine this often; "
              "while the engine is busy only the newest clip waits.", low=0.01, high=3600.0),
    ParamSpec("clip.num_frames", 4, "Frames per clip, spread evenly over clip.window_s.",
              low=1, high=64),
    ParamSpec("clip.window_s", 2.0, "Seconds of stream (header stamps) a clip spans.",
              low=0.0, high=3600.0),
    ParamSpec("clip.max_age_s", 2.5, "Frames received longer ago than this (node clock) are "
              "never used, so a stalled camera produces no recognitions; must cover "
              "clip.window_s.", low=0.01, high=3600.0),
    ParamSpec("tasks.recognize", True, "Recognise the known concepts in every clip."),
    ParamSpec("tasks.caption", False, "Add a personalized caption to every Recognition."),
    ParamSpec("recognition.mode", "per-concept", "per-concept: a scored yes/no question per "
              "concept (the paper's protocol); joint: one question, the model lists names.",
              choices=MODES),
    ParamSpec("recognition.threshold", 0.5, "A concept is present when its score reaches "
              "this (scores are P(yes)/(P(yes)+P(no))).", low=0.0, high=1.0),
    ParamSpec("recognition.max_in_context", 10, "Most concepts put in one context; with more "
              "stored, the most similar to the clip are kept (in-process engine only).",
              read_only=True, low=1, high=1000),
    ParamSpec("engine.max_new_tokens", 48, "Token budget of answers and captions "
              "(in-process engine only).", read_only=True, low=1, high=4096),
    ParamSpec("engine.endpoint", "", "ZeroMQ endpoint of an 'ego-ros worker' (e.g. "
              "tcp://127.0.0.1:5555). Empty: the model runs inside this node.", read_only=True),
    ParamSpec("engine.check_worker", False, "With engine.endpoint: refuse a worker that serves "
              "another model or store than model.path (empty: the embedded tiny model) and "
              "store.dir name, at start (the node exits) and at every reconnect (calls fail). "
              "ego-ros up --use-worker and the launch file's use_worker:=true turn it on.",
              read_only=True),
    ParamSpec("engine.timeout_s", 30.0, "Longest wait for the worker's answer to a "
              "recognition or question.", read_only=True, low=0.1, high=3600.0),
    ParamSpec("engine.introduce_timeout_s", 120.0, "Longest wait for the worker to introduce "
              "a concept (several model passes per view).", read_only=True, low=0.1,
              high=3600.0),
    ParamSpec("engine.connect_timeout_s", 2.0, "Longest wait for the worker's handshake "
              "after a (re)connect; also the heartbeat period.", read_only=True, low=0.05,
              high=600.0),
    ParamSpec("engine.curve_secret_key_file", "", "This node's CurveZMQ certificate with its "
              "secret key (NAME.key_secret from 'ego-ros worker --gen-keys'), for a worker "
              "that requires keys. Empty (with engine.curve_server_key_file): no CurveZMQ.",
              read_only=True),
    ParamSpec("engine.curve_server_key_file", "", "The worker's public CurveZMQ certificate "
              "(its .key file). Set both curve files or neither.", read_only=True),
    ParamSpec("clip.max_result_age_s", 10.0, "A clip's result is dropped (counted as "
              "clips_stale on /diagnostics) when the engine answers more than this long after "
              "its newest frame was received, so a stalled or overloaded worker never publishes "
              "old news. Raise it for a model slower than this per clip.", low=0.01,
              high=3600.0),
    ParamSpec("introduce.num_frames", 3, "Captured frames used as reference views when an "
              "introduce_concept request has no images and num_frames 0 (at most "
              f"{MAX_VIEWS}, the views one introduction takes).", low=1, high=MAX_VIEWS),
    ParamSpec("introduce.max_age_s", 5.0, "Captured frames received longer ago than this are "
              "not used as reference views.", low=0.01, high=3600.0),
    ParamSpec("questions.max_pending", 8, "Questions on ~/question waiting for the next clip; "
              "beyond this the oldest is dropped.", read_only=True, low=1, high=1000),
    ParamSpec("diagnostics.period_s", 1.0, "Period of the /diagnostics messages.",
              read_only=True, low=0.05, high=3600.0),
)
SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMS}


@dataclass(frozen=True)
class StreamSettings:
    """The parameters that may change at run time; they apply from the next clip on."""

    clip: ClipConfig
    recognize: bool
    caption: bool
    mode: str
    threshold: float
    introduce_num_frames: int
    introduce_max_age_s: float
    max_result_age_s: float


@dataclass(frozen=True)
class NodeSettings:
    """Everything the node reads from its parameters, validated.

    ``backend`` is None in remote mode (the worker owns the model). ``model_is_tiny`` says the
    embedded tiny model stands in for an empty ``model.path``.
    """

    stream: StreamSettings
    backend: BackendConfig | None
    model_is_tiny: bool
    store_dir: Path
    engine: EngineConfig
    endpoint: str
    curve: CurveClientKeys | None  # keys for a worker that requires CurveZMQ; remote mode only
    expect_worker: WorkerExpectation | None  # engine.check_worker: the model and store named
    timeout_s: float
    introduce_timeout_s: float
    connect_timeout_s: float
    compressed: bool
    qos_reliability: str  # auto, reliable or best_effort (see ego_ros.ros.qos)
    qos_depth: int
    expected_rate_hz: float  # 0 = estimate the camera's rate from header stamps
    image_limits: ImageLimits  # image.max_pixels and the model's smallest side
    buffer_max_frames: int
    buffer_max_bytes: int
    buffer_max_age_s: float
    max_questions: int
    diagnostics_period_s: float


def declare_parameters(node: Node) -> dict[str, Any]:
    """Declare every parameter of :data:`PARAMS` on ``node``; return the name -> value map
    (defaults overridden by ``--params-file``, ``-p`` or ``parameter_overrides``)."""
    node.declare_parameters("", [(s.name, s.default, s.descriptor()) for s in PARAMS])
    return {s.name: node.get_parameter(s.name).value for s in PARAMS}


def _checked(values: Mapping[str, Any], names: list[str] | None = None) -> dict[str, Any]:
    unknown = set(values) - set(SPECS)
    if unknown:
        raise ValueError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    out = {}
    for name in names if names is not None else list(SPECS):
        value = values.get(name, SPECS[name].default)
        SPECS[name].check(value)
        out[name] = value
    return out


def stream_settings(values: Mapping[str, Any]) -> StreamSettings:
    """The run-time-changeable part (missing names take their defaults); ValueError if bad."""
    v = _checked(values)
    try:
        clip = ClipConfig(num_frames=v["clip.num_frames"], window_s=v["clip.window_s"],
                          max_age_s=v["clip.max_age_s"], period_s=v["clip.period_s"])
    except ValueError as exc:
        raise ValueError(f"clip.*: {exc}") from None
    if clip.window_s > v["buffer.max_age_s"]:
        raise ValueError(f"clip.window_s ({clip.window_s}) exceeds buffer.max_age_s "
                         f"({v['buffer.max_age_s']}): the buffer would drop frames before a "
                         "clip spans its window")
    if clip.window_s > clip.max_age_s:
        raise ValueError(f"clip.window_s ({clip.window_s}) exceeds clip.max_age_s "
                         f"({clip.max_age_s}): frames received more than clip.max_age_s ago are "
                         f"never used, so clips would span at most about {clip.max_age_s} s; "
                         "raise clip.max_age_s (a little above clip.window_s) or lower "
                         "clip.window_s")
    if clip.num_frames > v["buffer.max_frames"]:
        raise ValueError(f"clip.num_frames ({clip.num_frames}) exceeds buffer.max_frames "
                         f"({v['buffer.max_frames']})")
    return StreamSettings(clip, v["tasks.recognize"], v["tasks.caption"], v["recognition.mode"],
                          float(v["recognition.threshold"]), v["introduce.num_frames"],
                          float(v["introduce.max_age_s"]), float(v["clip.max_result_age_s"]))


def _curve_keys(secret: str, server: str) -> CurveClientKeys | None:
    """CurveZMQ client keys from the two file parameters (both or neither); ValueError if bad."""
    if not secret and not server:
        return None
    if not secret or not server:
        missing = "engine.curve_server_key_file" if secret else "engine.curve_secret_key_file"
        raise ValueError(f"{missing} is empty: CurveZMQ needs this node's secret key file and "
                         "the worker's public key file (set both, or neither for no CurveZMQ)")
    try:
        return CurveClientKeys(Path(secret).expanduser(), Path(server).expanduser())
    except ValueError as exc:  # names CurveClientKeys' field; say which parameter it is
        text = str(exc).replace("CurveClientKeys.secret_key_file",
                                "engine.curve_secret_key_file").replace(
            "CurveClientKeys.server_public_key_file", "engine.curve_server_key_file")
        raise ValueError(text) from None


def settings_from_parameters(values: Mapping[str, Any]) -> NodeSettings:
    """Validate all parameter values and map them to the node's typed configs.

    With an empty ``model.path`` (and no ``engine.endpoint``) the embedded tiny model is built
    or found in the cache (``ensure_tiny_model("qwen2_5_vl")``; seconds, once per machine).
    """
    v = _checked(values)
    stream = stream_settings(v)
    endpoint = v["engine.endpoint"].strip()
    if endpoint and "://" not in endpoint:
        raise ValueError(f"engine.endpoint {endpoint!r} is not a ZeroMQ endpoint such as "
                         "tcp://127.0.0.1:5555 (leave it empty to run the model in this node)")
    curve = _curve_keys(v["engine.curve_secret_key_file"].strip(),
                        v["engine.curve_server_key_file"].strip()) if endpoint else None
    backend = None
    tiny = False
    expect = None
    if endpoint and v["engine.check_worker"]:
        expect = WorkerExpectation(Path(v["model.path"].strip()) if v["model.path"].strip()
                                   else None, Path(v["store.dir"].strip() or ".").expanduser())
    if not endpoint:
        path = v["model.path"].strip()
        if not path:
            from ego_ros.backends.tiny import ensure_tiny_model

            path, tiny = str(ensure_tiny_model(TINY_FAMILY)), True
        family = v["model.family"]
        backend = BackendConfig(Path(path), family=family, dtype=v["model.dtype"],
                                device=v["model.device"],
                                max_image_tokens=v["model.max_image_tokens"] or None,
                                allow_pickle_weights=v["model.allow_pickle_weights"])
    if v["buffer.max_bytes"] < 3 * v["image.max_pixels"]:
        raise ValueError(f"buffer.max_bytes ({v['buffer.max_bytes']}) cannot hold one frame of "
                         f"image.max_pixels ({v['image.max_pixels']} pixels x 3 bytes = "
                         f"{3 * v['image.max_pixels']}); raise it or lower image.max_pixels")
    image_limits = ImageLimits(v["image.max_pixels"], MIN_IMAGE_SIDE, "image.max_pixels")
    store = v["store.dir"].strip()
    if not store and not endpoint:
        raise ValueError("store.dir is empty; give a folder for the concept memories")
    engine = EngineConfig(thresholds=Thresholds(default=stream.threshold),
                          max_in_context=v["recognition.max_in_context"],
                          max_new_tokens=v["engine.max_new_tokens"])
    return NodeSettings(
        stream=stream, backend=backend, model_is_tiny=tiny,
        store_dir=Path(store).expanduser(), engine=engine, endpoint=endpoint, curve=curve,
        expect_worker=expect,
        timeout_s=float(v["engine.timeout_s"]),
        introduce_timeout_s=float(v["engine.introduce_timeout_s"]),
        connect_timeout_s=float(v["engine.connect_timeout_s"]), compressed=v["image.compressed"],
        qos_reliability=v["qos.reliability"], qos_depth=v["qos.depth"],
        expected_rate_hz=float(v["qos.expected_rate_hz"]), buffer_max_frames=v["buffer.max_frames"],
        image_limits=image_limits, buffer_max_bytes=v["buffer.max_bytes"],
        buffer_max_age_s=float(v["buffer.max_age_s"]), max_questions=v["questions.max_pending"],
        diagnostics_period_s=float(v["diagnostics.period_s"]))


__all__ = [
    "PARAMS",
    "SPECS",
    "TINY_FAMILY",
    "NodeSettings",
    "ParamSpec",
    "StreamSettings",
    "declare_parameters",
    "settings_from_parameters",
    "stream_settings",
]

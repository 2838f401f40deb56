"""``ego_node``: camera frames in, personalized recognitions and answers out, teaching by service.

    ego_node --ros-args --params-file config/ego.yaml -r image:=/camera/image_raw

Data flow (one class, callbacks only convert and hand off)::

    image / image/compressed --convert--> FrameBuffer (ring, by count, bytes and stamp age)
        (subscribed with the publishers' reliability, see ego_ros.ros.qos; header stamps feed
        the delivery check on /diagnostics)
        (the declared size is checked first: over image.max_pixels or under the model's
        smallest side, a frame is refused undecoded and counted as a conversion error)
    clip timer (clip.period_s) marks a clip due; the next frame cuts it with sample_clip
        --> LatestSlot (queue of one: newest clip wins)
    inference thread --engine.recognize / ask--> ~/recognition, ~/answer
        (a result that comes back more than clip.max_result_age_s after its newest frame
        arrived is dropped and counted as clips_stale; a question whose call found the worker
        down or busy waits for the next clip)
    ~/introduce_concept, ~/ask, ~/list_concepts, ~/forget_concept --> engine
    diagnostics timer --> /diagnostics
    Ctrl-C / SIGTERM (main): inference thread stopped -> executor -> node -> rclpy context

Threads: the camera subscription and the clip timer share a mutually exclusive callback group
(both are short); services run in a reentrant group, so on the ``MultiThreadedExecutor`` a long
introduction occupies one executor thread and never blocks the camera, the clip timer or the
other services. Clip inference runs in the node's own thread, never in an executor thread.

The engine is an in-process ``EgoEngine`` or, with ``engine.endpoint`` set, a ``RemoteEngine``
talking to an ``ego-ros worker`` (with CurveZMQ keys from ``engine.curve_*_file`` when the
worker requires them). In remote mode the node survives the worker: failed calls are
counted, reported on ``/diagnostics`` and in service replies, and the ZeroMQ client reconnects
on its own when the worker comes back. The clip loop and the services use separate clients so
a service call never waits behind the clip loop's socket.
"""

from __future__ import annotations

import collections
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from ego_interfaces.msg import Answer, ConceptDetection, Recognition
from ego_interfaces.srv import Ask, ForgetConcept, IntroduceConcept, ListConcepts
from ego_ros.backends.base import BackendError
from ego_ros.core import limits
from ego_ros.core.engine import EngineBusy, UnknownConcept
from ego_ros.core.names import InvalidConceptName
from ego_ros.core.store import StoreError
from ego_ros.core.types import RecognitionResult
from ego_ros.ros.convert import (
    FrameSizeError,
    ImageConversionError,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
    ns_to_stamp,
    stamp_to_ns,
)
from ego_ros.ros.diagnostics import (
    OK,
    LatencyWindow,
    RateMeter,
    camera_level,
    engine_level,
    make_array,
    make_status,
    store_level,
)
from ego_ros.ros.executor import EgoExecutor, spin_until, stop_signals
from ego_ros.ros.params import (
    SPECS,
    NodeSettings,
    declare_parameters,
    settings_from_parameters,
    stream_settings,
)
from ego_ros.ros.qos import GRAPH_POLL_S, CameraSubscription, DeliveryMeter, transport_level
from ego_ros.ros.services import LOG_THROTTLE_S as _THROTTLE_S
from ego_ros.ros.services import ServicesMixin
from ego_ros.serving.rpc import RemoteError, WorkerMismatch, WorkerUnavailable
from ego_ros.stream import Frame, FrameBuffer, LatestSlot, sample_clip

# Results and answers: nothing lost once matched; late joiners get nothing old.
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                        reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
# Overlays: latched (a late RViz sees the views of the last introduction).
OVERLAY_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=4,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
# RemoteError types whose message is already written for a person.
_PLAIN_REMOTE = {"UnknownConcept", "InvalidConceptName", "ValueError", "KeyError",
                 "ConceptNotFound", "LimitExceeded"}


@dataclass(frozen=True)
class _ClipJob:
    frames: list[Frame]
    sampled_at: float  # time.perf_counter() at sampling


class EgoNode(ServicesMixin, Node):
    """The Ego perception node; ``kwargs`` go to ``rclpy.node.Node`` (context, namespace,
    parameter_overrides, ...). Raises ValueError (bad parameters) or BackendError (model).
    The service callbacks come from :class:`~ego_ros.ros.services.ServicesMixin`."""

    def __init__(self, node_name: str = "ego_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._settings: NodeSettings = settings_from_parameters(declare_parameters(self))
        self._stream = self._settings.stream
        s = self._settings
        self._engine, self._service_engine = self._make_engines(s)
        self._remote = bool(s.endpoint)
        self._buffer = FrameBuffer(s.buffer_max_frames, s.buffer_max_age_s,
                                   max_bytes=s.buffer_max_bytes)
        self._slot: LatestSlot[_ClipJob] = LatestSlot()
        self._questions: collections.deque[str] = collections.deque()
        self._questions_lock = threading.Lock()
        self._input_rate, self._clip_rate = RateMeter(), RateMeter()
        self._engine_ms, self._call_ms = LatencyWindow(), LatencyWindow()
        self._sample_age_ms, self._handoff_ms = LatencyWindow(), LatencyWindow()
        self._counts = collections.Counter()
        self._last_conversion_error = ""
        self._last_refused = ""  # why the last question on ~/question was refused
        self._engine_error = ""  # last engine failure, cleared by the next success
        self._clip_due = False  # set by the clip timer, cleared by the next frame
        self._stopping = threading.Event()
        # Held around every publish of the inference thread, and while stop() raises
        # _stopping: once stop() returns that thread never publishes again.
        self._publish_lock = threading.Lock()
        self._destroyed = False

        stream_group = MutuallyExclusiveCallbackGroup()
        service_group = ReentrantCallbackGroup()
        misc_group = MutuallyExclusiveCallbackGroup()
        self._recognition_pub = self.create_publisher(Recognition, "~/recognition", OUTPUT_QOS)
        self._answer_pub = self.create_publisher(Answer, "~/answer", OUTPUT_QOS)
        self._overlay_pub = self.create_publisher(Image, "~/concept_overlay", OVERLAY_QOS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics",
                                                      OUTPUT_QOS)
        # The camera subscription: made by _watch_publishers, now or once a publisher appears
        # (qos.reliability auto), and made again when the publishers' reliability changes.
        self._camera = CameraSubscription(
            self, *((CompressedImage, "image/compressed", self._on_image_compressed)
                    if s.compressed else (Image, "image", self._on_image)),
            s.qos_reliability, s.qos_depth, stream_group)
        self._image_topic = self._camera.topic
        self._delivery = DeliveryMeter()
        self._watch_publishers()
        self.create_timer(GRAPH_POLL_S, self._watch_publishers, callback_group=stream_group)
        self.create_subscription(String, "~/question", self._on_question, OUTPUT_QOS,
                                 callback_group=misc_group)
        self.create_service(IntroduceConcept, "~/introduce_concept", self._on_introduce_concept,
                            callback_group=service_group)
        self.create_service(Ask, "~/ask", self._on_ask, callback_group=service_group)
        self.create_service(ListConcepts, "~/list_concepts", self._on_list_concepts,
                            callback_group=service_group)
        self.create_service(ForgetConcept, "~/forget_concept", self._on_forget_concept,
                            callback_group=service_group)
        self._clip_timer = self.create_timer(self._stream.clip.period_s, self._on_clip_timer,
                                             callback_group=stream_group)
        self.create_timer(s.diagnostics_period_s, self._on_diagnostics_timer,
                          callback_group=misc_group)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._on_parameters_set)
        self._thread = threading.Thread(target=self._inference_loop, name="ego-inference",
                                        daemon=True)
        self._thread.start()
        where = f"worker at {s.endpoint}" if self._remote else (
            f"in-process {s.backend.path}" + (" (embedded tiny model: random weights, "
                                              "meaningless outputs)" if s.model_is_tiny else ""))
        qos = (self.image_reliability if self._camera.subscription is not None
               else "waiting for a publisher to match its reliability")
        self.get_logger().info(
            f"ready: {self._image_topic} ({qos}) -> {self._recognition_pub.topic_name}; "
            f"engine {where}; clip {self._stream.clip}")

    @property
    def image_reliability(self) -> str:
        """The camera subscription's reliability: reliable, best_effort or none (not yet)."""
        return self._camera.reliability_name

    def _watch_publishers(self) -> None:
        """Subscribe to the camera, again if the publishers' reliability changed (stream
        group: never while a frame callback runs)."""
        try:
            done = self._camera.update()
        except Exception as exc:  # a graph query that fails must not take the node down
            self.get_logger().error(f"camera subscription: {type(exc).__name__}: {exc}",
                                    throttle_duration_sec=_THROTTLE_S)
            return
        if done:
            self.get_logger().info(done)

    # -- set-up ----------------------------------------------------------------------------
    def _make_engines(self, s: NodeSettings) -> tuple[Any, Any]:
        """(engine for the clip loop, engine for services): one object in-process."""
        if s.endpoint:
            from ego_ros.serving.remote import RemoteEngine

            def remote(heartbeat_s: float) -> RemoteEngine:
                return RemoteEngine(s.endpoint, timeout_s=s.timeout_s,
                                    introduce_timeout_s=s.introduce_timeout_s,
                                    connect_timeout_s=s.connect_timeout_s,
                                    heartbeat_s=heartbeat_s, curve=s.curve,
                                    expect=s.expect_worker)

            engines = remote(s.connect_timeout_s), remote(0.0)
            if s.expect_worker is not None:  # a worker that is up and wrong stops the start
                try:
                    engines[1].wait_ready(s.connect_timeout_s)
                except WorkerMismatch as exc:
                    for engine in engines:
                        engine.close()
                    raise ValueError(f"engine.check_worker: {exc}") from None
                except WorkerUnavailable:
                    pass  # not up yet: checked when it answers
            return engines
        from ego_ros.backends.loading import load_backend
        from ego_ros.core.engine import EgoEngine
        from ego_ros.core.store import MemoryStore

        backend = load_backend(s.backend)
        engine = EgoEngine(backend, MemoryStore(s.store_dir, backend.fingerprint), s.engine)
        return engine, engine

    # -- parameters ------------------------------------------------------------------------
    def _parameter_values(self, changed: Sequence[Parameter] = ()) -> dict[str, Any]:
        values = {name: self.get_parameter(name).value for name in SPECS}
        values.update({p.name: p.value for p in changed if p.name in SPECS})
        return values

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate a change as a whole (read-only ones are refused by rclpy already)."""
        try:
            stream_settings(self._parameter_values(params))
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _on_parameters_set(self, params: list[Parameter]) -> None:
        new = stream_settings(self._parameter_values())
        if new.clip.period_s != self._stream.clip.period_s:
            self._clip_timer.timer_period_ns = int(new.clip.period_s * 1e9)
        self._stream = new
        self.get_logger().info(f"parameters changed: {', '.join(p.name for p in params)}")

    # -- camera input (executor thread: convert, buffer, return) ---------------------------
    def _on_image(self, msg: Image) -> None:
        self._ingest(msg, image_msg_to_rgb)

    def _on_image_compressed(self, msg: CompressedImage) -> None:
        self._ingest(msg, compressed_msg_to_rgb)

    def _ingest(self, msg: Any, convert: Callable[..., np.ndarray]) -> None:
        """Convert (within the size limits) and buffer one frame. Nothing may escape: the
        executor re-raises a callback's exception and would take the whole node down for one
        odd frame."""
        received_ns = self.get_clock().now().nanoseconds
        self._input_rate.tick()
        try:
            self._delivery.add(stamp_to_ns(msg.header.stamp))  # delivered, even if unreadable
            rgb = convert(msg, limits=self._settings.image_limits)  # [H, W, 3] uint8
            stamp_ns = stamp_to_ns(msg.header.stamp) or received_ns  # unstamped: arrival time
            frame = Frame(rgb, stamp_ns, msg.header.frame_id, received_ns)
        except ImageConversionError as exc:
            if isinstance(exc, FrameSizeError):
                self._counts["frames_refused_size"] += 1
            self._conversion_failed(str(exc))
            return
        except Exception as exc:  # a converter bug (cv_bridge, OpenCV): still only one frame
            self._conversion_failed(f"unexpected {type(exc).__name__}: {exc}")
            return
        try:
            self._buffer.push(frame)
            if self._clip_due:
                self._cut_clip()
        except Exception as exc:
            self._counts["ingest_errors"] += 1
            self.get_logger().error(f"could not buffer a frame: {type(exc).__name__}: {exc}",
                                    throttle_duration_sec=_THROTTLE_S)

    def _conversion_failed(self, reason: str) -> None:
        self._counts["conversion_errors"] += 1
        self._last_conversion_error = reason
        self.get_logger().warning(
            f"skipping a frame from {self._image_topic} "
            f"({self._counts['conversion_errors']} so far): {reason}",
            throttle_duration_sec=_THROTTLE_S)

    def _on_question(self, msg: String) -> None:
        try:  # limits.MAX_QUESTION_CHARS, checked before the question is queued
            question = limits.check_question(msg.data)
        except ValueError as exc:
            self._counts["questions_refused"] += 1
            self._last_refused = str(exc)
            self.get_logger().warning(f"ignoring a question on ~/question: {exc}",
                                      throttle_duration_sec=_THROTTLE_S)
            return
        with self._questions_lock:
            if len(self._questions) >= self._settings.max_questions:
                dropped = self._questions.popleft()
                self._counts["questions_dropped"] += 1
                self.get_logger().warning(f"too many pending questions; dropped {dropped!r}")
            self._questions.append(question)

    # -- clips ------------------------------------------------------------------------------
    def _sample(self) -> list[Frame] | None:
        clip = self._stream.clip
        return sample_clip(self._buffer.snapshot(), clip.num_frames, clip.window_s,
                           self.get_clock().now().nanoseconds, clip.max_age_s)

    def _on_clip_timer(self) -> None:
        """Mark a clip as due; the next converted frame cuts it (see :meth:`_cut_clip`)."""
        stream = self._stream
        with self._questions_lock:
            questions = bool(self._questions)
        if not (stream.recognize or stream.caption or questions):
            return
        newest = self._buffer.latest(1)
        now_ns = self.get_clock().now().nanoseconds
        if not newest or now_ns - newest[0].received_ns > stream.clip.max_age_s * 1e9:
            self._counts["ticks_without_fresh_frames"] += 1
        self._clip_due = True

    def _cut_clip(self) -> None:
        """Sample the due clip right after a frame arrived and hand it to the inference thread.

        Cutting at the first frame after the tick rather than at the tick itself means the
        clip's newest frame is not up to one frame interval old already, at no cost; a camera
        that stopped never triggers a cut.
        """
        self._clip_due = False
        frames = self._sample()
        if frames is None:
            return
        now_ns = self.get_clock().now().nanoseconds
        self._sample_age_ms.add((now_ns - frames[-1].received_ns) / 1e6)
        self._clip_rate.tick()
        self._slot.offer(_ClipJob(frames, time.perf_counter()))

    def _inference_loop(self) -> None:
        while not self._stopping.is_set():
            job = self._slot.take(timeout=0.25)
            if job is not None:
                self._handoff_ms.add((time.perf_counter() - job.sampled_at) * 1000.0)
                try:
                    self._process(job)
                except Exception as exc:  # the loop must outlive any one clip
                    if not self._stopping.is_set():
                        self.get_logger().error(f"clip failed: {type(exc).__name__}: {exc}",
                                                throttle_duration_sec=_THROTTLE_S)

    def _publish(self, publisher: Any, msg: Any) -> bool:
        """Publish from the inference thread unless the node is stopping (then False)."""
        with self._publish_lock:
            if self._stopping.is_set():
                return False
            publisher.publish(msg)
            return True

    def _call(self, what: str, fn: Callable[[], Any]) -> tuple[Any, Exception | None]:
        """Run an engine call from the clip loop: (result, None), or (None, the exception)
        when it failed (counted and logged)."""
        started = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:
            self._counts["engine_failures"] += 1
            self._engine_error = self._explain(exc, what)
            self.get_logger().warning(f"{what} failed: {self._engine_error}",
                                      throttle_duration_sec=_THROTTLE_S)
            return None, exc
        self._call_ms.add((time.perf_counter() - started) * 1000.0)
        self._engine_error = ""
        return result, None

    def _stale(self, job: _ClipJob, stream: Any) -> bool:
        """True (and counted) when the clip's newest frame is older than
        ``clip.max_result_age_s``: the engine took so long that its answer is old news."""
        age_s = (self.get_clock().now().nanoseconds - job.frames[-1].received_ns) / 1e9
        if age_s <= stream.max_result_age_s:
            return False
        self._counts["clips_stale"] += 1
        self.get_logger().warning(
            f"dropped the result of a clip whose newest frame is {age_s:.1f} s old "
            f"(clip.max_result_age_s = {stream.max_result_age_s}); the engine is too slow or "
            "was stalled", throttle_duration_sec=_THROTTLE_S)
        return True

    @staticmethod
    def _transient(exc: Exception | None) -> bool:
        """A failure worth retrying with the next clip: worker down or model busy."""
        return isinstance(exc, WorkerUnavailable | EngineBusy) or (
            isinstance(exc, RemoteError) and exc.type_name in ("EngineBusy", "ServerBusy"))

    def _requeue(self, question: str) -> None:
        """Put a question whose call failed transiently back at the front of the queue."""
        with self._questions_lock:
            self._questions.appendleft(question)
            while len(self._questions) > self._settings.max_questions:
                dropped = self._questions.pop()  # keep the oldest: they were asked first
                self._counts["questions_dropped"] += 1
                self.get_logger().warning(f"too many pending questions; dropped {dropped!r}")

    def _process(self, job: _ClipJob) -> None:
        stream = self._stream
        rgb = [f.rgb for f in job.frames]
        last = job.frames[-1]
        header = Header(stamp=ns_to_stamp(last.stamp_ns), frame_id=last.frame_id)
        ok = True
        if stream.recognize or stream.caption:
            if stream.recognize:
                result, _ = self._call("recognition", lambda: self._engine.recognize(
                    rgb, mode=stream.mode, clip=True, caption=stream.caption))
            else:
                answer, _ = self._call("caption", lambda: self._engine.caption(rgb, clip=True))
                result = None if answer is None else RecognitionResult(
                    [], [], stream.mode, answer.answer, answer.latency_ms)
            ok = result is not None
            if ok:
                self._engine_ms.add(result.latency_ms)
                ok = not self._stale(job, stream)
            if ok and self._publish(self._recognition_pub,
                                    self._recognition_msg(header, job, result)):
                self._counts["recognitions"] += 1
        while ok:  # questions wait for the next clip while the engine fails
            with self._questions_lock:
                question = self._questions.popleft() if self._questions else None
            if question is None:
                break
            if self._stale(job, stream):  # answers about old frames: wait for a fresh clip
                self._requeue(question)
                break
            answer, error = self._call("question",
                                       lambda q=question: self._engine.ask(q, rgb, clip=True))
            if answer is None:
                if self._transient(error):
                    self._requeue(question)  # asked again with the next clip
                else:
                    self._counts["questions_failed"] += 1
                break
            if not self._publish(self._answer_pub, Answer(
                    header=header, question=question, answer=answer.answer,
                    concepts=answer.concepts, latency_ms=float(answer.latency_ms))):
                break  # stopping
            self._counts["answers"] += 1

    def _recognition_msg(self, header: Header, job: _ClipJob,
                         result: RecognitionResult) -> Recognition:
        threshold = self._stream.threshold
        concepts = [ConceptDetection(
            name=c.name, score=float(c.score),
            # the threshold parameter is live: re-decide from the score where there is one
            present=bool(c.score >= threshold) if math.isfinite(c.score) else bool(c.present))
            for c in result.concepts]
        return Recognition(header=header, clip_start=ns_to_stamp(job.frames[0].stamp_ns),
                           clip_end=header.stamp, num_frames=len(job.frames), concepts=concepts,
                           caption=result.caption, latency_ms=float(result.latency_ms))

    # -- engine errors and frame freshness (clip loop, services, diagnostics) --------------
    def _explain(self, exc: BaseException, what: str) -> str:
        """A message a person can act on for a failed engine call."""
        if isinstance(exc, WorkerMismatch):
            return f"the engine worker at {self._settings.endpoint}: {exc}"
        if isinstance(exc, WorkerUnavailable):
            endpoint = self._settings.endpoint
            return (f"the engine worker is unavailable ({exc}); is an ego_worker bound to "
                    f"{endpoint} running? (the launch file's use_worker:=true and ego-ros up "
                    f"--use-worker start one; by hand: ros2 run ego_ros ego_worker --bind "
                    f"{endpoint}, or ego-ros worker --bind {endpoint}) - the node reconnects "
                    "by itself")
        if isinstance(exc, EngineBusy) or (isinstance(exc, RemoteError)
                                           and exc.type_name in ("EngineBusy", "ServerBusy")):
            detail = exc.remote_message if isinstance(exc, RemoteError) else str(exc)
            return f"the model is busy ({detail}); try again in a few seconds"
        if isinstance(exc, RemoteError):
            if exc.type_name in _PLAIN_REMOTE:
                return exc.remote_message
            return f"the worker failed {what}: {exc.type_name}: {exc.remote_message}"
        if isinstance(exc, UnknownConcept | InvalidConceptName | ValueError):
            return str(exc)
        self.get_logger().error(f"{what} failed unexpectedly: {type(exc).__name__}: {exc}",
                                throttle_duration_sec=_THROTTLE_S)
        return f"{what} failed: {type(exc).__name__}: {exc}"

    def _no_frames(self, max_age_s: float) -> str:
        age = self._input_rate.age()
        topic = self._image_topic
        if age is None:
            waiting = (" (no publisher seen yet: the subscription is made when one appears)"
                       if self._camera.subscription is None else "")
            return (f"no camera frames captured yet on {topic}{waiting}; check the camera "
                    "driver and the topic remapping, or send images in the request")
        return (f"no camera frame received in the last {max_age_s:.1f} s on {topic} (the last "
                f"one arrived {age:.1f} s ago, or none converted); is the camera publishing?")

    # -- diagnostics -----------------------------------------------------------------------
    def _on_diagnostics_timer(self) -> None:
        try:
            self._diagnostics_pub.publish(make_array(self.get_clock().now().to_msg(),
                                                     self.diagnostics()))
        except Exception as exc:  # a report that fails must not take the node down with it
            self.get_logger().error(f"diagnostics failed: {type(exc).__name__}: {exc}",
                                    throttle_duration_sec=_THROTTLE_S)

    def diagnostics(self) -> list[DiagnosticStatus]:
        """The node's ``DiagnosticStatus`` list: camera input, clips, engine, concept store."""
        prefix, counts, max_age_s = self.get_name(), self._counts, self._stream.clip.max_age_s
        age = self._input_rate.age()
        level, message = camera_level(age, max_age_s, counts["conversion_errors"],
                                      self._last_conversion_error, self._no_frames(max_age_s),
                                      counts["frames_refused_size"])
        rate = self._input_rate.rate()
        delivery = self._delivery.estimate(self._settings.expected_rate_hz)
        level, message = transport_level(
            level, message, topic=self._image_topic, subscribed=self.image_reliability,
            incompatible_publishers=self._camera.incompatible, received_hz=rate,
            delivery=delivery)
        camera = make_status(f"{prefix}: camera input", level, message, {
            "topic": self._image_topic, "rate_hz": rate,
            "reliability": self.image_reliability,
            "camera_rate_hz": None if delivery is None else delivery.camera_rate_hz,
            "delivered_share": None if delivery is None else delivery.delivered,
            "incompatible_publishers": self._camera.incompatible,
            "frames_received": self._input_rate.total,
            "conversion_errors": counts["conversion_errors"],
            "frames_refused_size": counts["frames_refused_size"],
            "ingest_errors": counts["ingest_errors"],
            "last_conversion_error": self._last_conversion_error,
            "last_frame_age_s": age, "buffered_frames": len(self._buffer),
            "buffered_bytes": self._buffer.nbytes,
            "buffer_evicted_by_bytes": self._buffer.dropped_by_bytes})
        clips = make_status(f"{prefix}: clips", OK, "sampling clips", {
            "clip_rate_hz": self._clip_rate.rate(), "clips_sampled": self._clip_rate.total,
            "clips_skipped": self._slot.skipped, "clips_stale": counts["clips_stale"],
            "ticks_without_fresh_frames": counts["ticks_without_fresh_frames"],
            "recognitions_published": counts["recognitions"],
            "answers_published": counts["answers"], "pending_questions": len(self._questions),
            "questions_dropped": counts["questions_dropped"],
            "questions_failed": counts["questions_failed"],
            "questions_refused": counts["questions_refused"],
            "last_question_refused": self._last_refused,
            **self._sample_age_ms.summary("sample_age"), **self._handoff_ms.summary("handoff")})
        values: dict[str, Any] = {
            "mode": "remote" if self._remote else "in-process",
            "endpoint": self._settings.endpoint, "failures": counts["engine_failures"],
            "last_error": self._engine_error, "busy": self._slot.pending,
            **self._engine_ms.summary("inference"), **self._call_ms.summary("call")}
        healthy, last_ok = True, None
        if self._remote:
            healthy, last_ok = self._engine.healthy, self._engine.last_ok
            values["worker_healthy"] = healthy
            values["worker_last_answer_age_s"] = (None if last_ok is None
                                                  else time.monotonic() - last_ok)
        else:
            health = self._engine.health()
            values.update({k: health.get(k) for k in ("family", "device", "dtype", "concepts")})
        level, message = engine_level(self._remote, healthy, last_ok is not None,
                                      self._engine_error, self._settings.endpoint)
        store = make_status(f"{prefix}: concept store", *store_level(self._skipped_concepts()))
        return [camera, clips, make_status(f"{prefix}: engine", level, message, values), store]

    # -- shutdown ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the inference thread (idempotent): no clip starts, the one in flight may finish
        but publishes nothing, and the thread is joined. Call it while the rclpy context is
        still valid (``main`` does, before the executor and the context go)."""
        with self._publish_lock:
            first = not self._stopping.is_set()
            self._stopping.set()
        self._slot.close()
        if first:
            self._thread.join(timeout=max(10.0, self._settings.timeout_s))
            if self._thread.is_alive():
                self.get_logger().warning("inference thread still busy at shutdown; it will "
                                          "publish nothing more")

    def destroy_node(self) -> None:
        """Stop the inference thread, close worker connections, then destroy the node."""
        if not self._destroyed:
            self._destroyed = True
            self.stop()
            if self._remote:
                self._engine.close()
                self._service_engine.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Console script ``ego_node``: spin an :class:`EgoNode` on a multi-threaded executor.

    Ctrl-C and SIGTERM stop it in order, exit status 0: the inference thread first, then the
    executor, the node and the rclpy context. (rclpy's own signal handlers would shut the
    context down at once, under a clip still being published: they are not installed.)
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = EgoNode()  # Ctrl-C while the model loads: KeyboardInterrupt, nothing to stop yet
        executor = EgoExecutor(num_threads=6)
        executor.add_node(node)
        with stop_signals() as stop:
            spin_until(executor, stop)
            node.stop()
            executor.shutdown(timeout_sec=5.0)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, OSError, BackendError, StoreError) as exc:
        # start-up: parameters, model, store (e.g. a corrupt manifest): a message, no traceback
        rclpy.logging.get_logger("ego_node").fatal(f"cannot start: {type(exc).__name__}: {exc}")
        return 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

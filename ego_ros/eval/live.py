"""Live evaluation: the bag is played into a running ``ego_node`` in real time and what the
node publishes is scored, exactly as on a robot.

Steps: start the node (in this process, its own ROS context; in-process engine or the
worker at ``engine.endpoint``), teach every labelled concept through
``~/introduce_concept`` with its reference views, subscribe to ``~/recognition``, play the
bag's camera topic with its recorded timing, then match each ``Recognition`` to the ground
truth by stamp: a clip shows every concept of the labelled frames stamped within
``[clip_start, clip_end]``. The node samples clips on its own timer, so it evaluates a subset
of the frames (those it sampled); clips it had to skip while busy are reported as dropped.
As in offline mode, bag frames that served as reference views (labels' refs by ``index``, the
first ``config.refs`` of each concept) are never scored: a clip that spans one is left out
(``details["clips_with_reference_views"]``), since the model may have seen the very frame it
was taught from.

Live mode scores recognition and, with ``tasks.caption``, captions (both travel in
``Recognition``). VQA (``vqa`` in the tasks): when a frame with labelled questions goes by,
each question is put to ``~/ask`` naming that frame by its header stamp (and the item's
concept and options), so the node answers about the clip ending at that very frame while it
keeps recognizing the stream; an answer's latency is the service round trip, queueing behind
the stream's clips included.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ego_ros.bag.io import bag_info, read_image_bag
from ego_ros.bag.labels import BagLabels, VqaItem, reference_images
from ego_ros.bag.play import PlayConfig, play_bag
from ego_ros.core.parsing import mentioned_names
from ego_ros.eval.offline import EvalConfig, EvalError, reference_indices
from ego_ros.eval.report import (
    CaptionRecord,
    EvalRecords,
    RecognitionRecord,
    TeachRecord,
    VqaRecord,
)

log = logging.getLogger(__name__)

COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"


@dataclass(frozen=True)
class LiveSettings:
    """How the node samples the replayed stream.

    period_s: clip timer period (the node's ``clip.period_s``).
    window_s: seconds of stream a clip spans (0 with single-frame clips: the newest frame).
    tail_s: wait after the bag ends for the last clips to be answered.
    introduce_timeout_s: longest wait for one teaching call.
    rate: playback speed factor (1.0 = real time, as on a robot).
    answer_timeout_s: longest wait for one VQA answer, and after the tail for the questions
        still queued.
    """

    period_s: float = 0.5
    window_s: float = 0.0
    tail_s: float = 3.0
    introduce_timeout_s: float = 300.0
    rate: float = 1.0
    answer_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        for name in ("period_s", "tail_s", "introduce_timeout_s", "rate", "answer_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"LiveSettings.{name} must be positive, got "
                                 f"{getattr(self, name)!r}")
        if self.window_s < 0:
            raise ValueError(f"LiveSettings.window_s must be >= 0, got {self.window_s!r}")


def node_parameters(backend_config, store_dir: Path, config: EvalConfig, engine_config,
                    compressed: bool, live: LiveSettings, endpoint: str = "") -> dict[str, Any]:
    """The node's parameters for a live run (its ``config/ego.yaml`` names).

    ``backend_config`` may be None with an ``endpoint``: the worker owns the model and store.
    """
    window = live.window_s if config.clip_frames > 1 else 0.0
    if config.clip_frames > 1 and window <= 0:
        window = max(live.period_s, 0.1 * config.clip_frames)
    model: dict[str, Any] = {}
    if backend_config is not None:
        model = {"model.path": str(backend_config.path), "model.family": backend_config.family,
                 "model.dtype": backend_config.dtype, "model.device": backend_config.device}
    elif not endpoint:
        raise ValueError("a live run needs a backend_config or a worker endpoint")
    return {
        **model, "store.dir": str(store_dir), "image.compressed": compressed,
        "qos.reliability": "reliable", "qos.depth": 10,
        "clip.period_s": float(live.period_s), "clip.num_frames": int(config.clip_frames),
        "clip.window_s": float(window),
        "clip.max_age_s": max(1.0, 2 * live.period_s, window + 0.5),  # must cover the window
        "tasks.recognize": True, "tasks.caption": "caption" in config.tasks,
        "recognition.mode": config.recognition_mode,
        "recognition.threshold": float(engine_config.thresholds.default),
        "recognition.max_in_context": int(engine_config.max_in_context),
        "engine.endpoint": endpoint,
    }


def run_live(*, bag: Path, labels: BagLabels, backend_config, store_dir: Path,
             config: EvalConfig, engine_config, live: LiveSettings | None = None,
             endpoint: str = "", on_recognition: Callable[[Any], None] | None = None,
             questions: Sequence[tuple[float, str]] = (),
             on_answer: Callable[[Any], None] | None = None,
             on_taught: Callable[[TeachRecord], None] | None = None,
             teach_from_camera: Sequence[str] = ()) -> EvalRecords:
    """Play ``bag`` into an ``ego_node`` and score its ``Recognition`` messages.

    With ``endpoint`` the node uses the ``ego-ros worker`` there (its model and store; the
    concepts are taught into that store, replacing any of the same names) and
    ``backend_config`` may be None; otherwise the node loads ``backend_config`` itself.

    ``questions`` are ``(seconds into the playback, text)`` published on ``~/question``; their
    ``Answer`` messages go to ``on_answer``. ``on_recognition`` sees every message as it
    arrives (the demo prints them); ``on_taught`` each concept once the node has learned it.
    Concepts in ``teach_from_camera`` are taught the way a
    person would on the robot: their reference views are shown to the camera (published on
    the camera topic) and ``~/introduce_concept`` is called with no images, so the node uses
    the frames it just captured.
    """
    import rclpy
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CompressedImage, Image

    from ego_interfaces.msg import Answer, Recognition
    from ego_interfaces.srv import Ask, IntroduceConcept
    from ego_ros.ros.convert import rgb_to_image_msg, stamp_to_ns
    from ego_ros.ros.executor import EgoExecutor
    from ego_ros.ros.node import OUTPUT_QOS, EgoNode

    live = live or LiveSettings()
    info = bag_info(bag)
    topic = labels.topic if labels.topic in info["image_topics"] else None
    if topic is None:
        if len(info["image_topics"]) != 1:
            raise EvalError(f"bag {bag}: cannot tell which image topic to play "
                            f"({sorted(info['image_topics'])})")
        topic = next(iter(info["image_topics"]))
    msgtype = next(t["type"] for t in info["topics"] if t["name"] == topic)
    compressed = msgtype == COMPRESSED_TYPE
    params = node_parameters(backend_config, store_dir, config, engine_config, compressed,
                             live, endpoint)
    remap = f"image/compressed:={topic}" if compressed else f"image:={topic}"

    references = reference_stamps(bag, labels, config.refs)
    vqa_items: dict[int, list[VqaItem]] = {}
    if "vqa" in config.tasks:
        for item in labels.vqa:
            if item.stamp_ns not in references:
                vqa_items.setdefault(item.stamp_ns, []).append(item)
    expected = sum(map(len, vqa_items.values()))
    questioner: _Questioner | None = None

    context = rclpy.Context()
    rclpy.init(context=context)
    received: list[Any] = []
    answers: list[Any] = []
    lock = threading.Lock()
    node = client = executor = spinner = None
    started = time.perf_counter()
    try:
        node = EgoNode("ego_node", context=context, cli_args=["--ros-args", "-r", remap],
                       parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        client = rclpy.create_node("ego_eval_client", context=context)

        def on_rec(msg) -> None:
            with lock:
                received.append(msg)
            if on_recognition is not None:
                on_recognition(msg)

        def on_ans(msg) -> None:
            with lock:
                answers.append(msg)
            if on_answer is not None:
                on_answer(msg)

        client.create_subscription(Recognition, "/ego_node/recognition", on_rec, OUTPUT_QOS)
        client.create_subscription(Answer, "/ego_node/answer", on_ans, OUTPUT_QOS)
        from std_msgs.msg import String

        question_pub = client.create_publisher(String, "/ego_node/question", OUTPUT_QOS)
        introduce = client.create_client(IntroduceConcept, "/ego_node/introduce_concept")
        camera = client.create_publisher(CompressedImage if compressed else Image, topic,
                                         OUTPUT_QOS)
        if vqa_items:
            questioner = _Questioner(client.create_client(Ask, "/ego_node/ask"), vqa_items,
                                     live.answer_timeout_s)
            client.create_subscription(CompressedImage if compressed else Image, topic,
                                       questioner.on_frame, OUTPUT_QOS)
        executor = EgoExecutor(num_threads=4, context=context)
        executor.add_node(node)
        executor.add_node(client)
        spinner = threading.Thread(target=executor.spin, name="ego-eval-spin", daemon=True)
        spinner.start()
        if not introduce.wait_for_service(timeout_sec=30.0):
            raise EvalError("the node's ~/introduce_concept service did not appear")

        teach: list[TeachRecord] = []
        for concept in labels.concepts:
            images = reference_images(bag, labels, concept.name, config.refs)
            if concept.name in teach_from_camera:
                _show_to_camera(camera, images, compressed, node, 1 + bool(questioner))
                request = IntroduceConcept.Request(name=concept.name, images=[],
                                                   num_frames=len(images), replace=True)
            else:
                request = IntroduceConcept.Request(
                    name=concept.name, images=[rgb_to_image_msg(img) for img in images],
                    replace=True)
            t0 = time.perf_counter()
            future = introduce.call_async(request)
            if not _wait(future, live.introduce_timeout_s):
                raise EvalError(f"teaching {concept.name!r} took longer than "
                                f"{live.introduce_timeout_s:.0f} s")
            response = future.result()
            if not response.success:
                raise EvalError(f"the node could not learn {concept.name!r}: "
                                f"{response.message}")
            teach.append(TeachRecord(concept.name, len(images), int(response.num_tokens),
                                     tuple(tuple(k.split(", ")) for k in response.keywords),
                                     time.perf_counter() - t0))
            if on_taught is not None:
                on_taught(teach[-1])

        stop = threading.Event()
        if questions:
            threading.Thread(target=_ask_later, args=(question_pub, questions, stop),
                             daemon=True).start()
        # the node's camera subscription, and the questioner's when questions are asked
        play_bag(bag, PlayConfig(rate=live.rate, topic=topic,
                                 wait_subscribers=1 + bool(questioner), wait_timeout_s=30.0))
        time.sleep(live.tail_s)  # let the last sampled clips be answered
        stop.set()
        if questioner is not None and not questioner.finish(live.answer_timeout_s):
            log.warning("questions were still being asked after %.0f s; the rest are left out",
                        live.answer_timeout_s)
        dropped = _clips_skipped(node)
    finally:
        if questioner is not None:
            questioner.finish(0.0)  # a run that failed early: let its thread end
        if executor is not None:
            executor.shutdown(timeout_sec=5.0)
        for n in (client, node):
            if n is not None:
                n.destroy_node()
        rclpy.try_shutdown(context=context)
        if spinner is not None:
            spinner.join(timeout=10.0)

    with lock:
        messages = list(received)
    recognition, captions, spanning = _match(messages, labels, stamp_to_ns, references)
    vqa, vqa_details = _vqa_records(questioner.answered() if questioner else [], expected,
                                    stamp_to_ns)
    return EvalRecords(
        mode="live", concepts=tuple(labels.concept_names), recognition=tuple(recognition),
        captions=tuple(captions), vqa=tuple(vqa), teach=tuple(teach),
        clip_frames=config.clip_frames,
        labelled_frames=len({s for r in recognition for s in r.frame_stamps}),
        dropped=dropped, elapsed_s=time.perf_counter() - started,
        details={"bag": str(bag), "topic": topic, "recognitions_received": len(messages),
                 "answers_received": len(answers), "clip_period_s": live.period_s,
                 "playback_rate": live.rate, "reference_frames_excluded": len(references),
                 "clips_with_reference_views": spanning, **vqa_details,
                 **({"engine_endpoint": endpoint} if endpoint else {})})


class _Questioner:
    """Puts the labelled VQA questions to ``~/ask`` one at a time, in the order their frames
    go by on the camera topic (``on_frame`` is the subscription callback).

    One question in flight: the node answers them one at a time anyway (one engine), and
    every service call waiting there holds one of the executor's threads, which the camera
    subscription needs. A question's latency is taken by this thread, from the call to the
    answer (queueing behind the stream's clips included)."""

    def __init__(self, client, items: Mapping[int, Sequence[VqaItem]], timeout_s: float) -> None:
        self._client, self._items, self._timeout_s = client, items, timeout_s
        self._queue: queue.Queue[tuple[VqaItem, Any] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._answered: list[tuple[VqaItem, Any, float]] = []  # (item, reply or None, ms)
        self._thread = threading.Thread(target=self._run, name="ego-eval-ask", daemon=True)
        self._thread.start()

    def on_frame(self, msg) -> None:
        from ego_ros.ros.convert import stamp_to_ns

        for item in self._items.get(stamp_to_ns(msg.header.stamp), ()):
            self._queue.put((item, msg.header.stamp))

    def _run(self) -> None:
        from ego_interfaces.srv import Ask

        while (job := self._queue.get()) is not None:
            item, stamp = job
            options = [f"{k}={v}" for k, v in sorted((item.options or {}).items())]
            request = Ask.Request(question=item.question, concepts=list(item.concepts),
                                  options=options, stamp=stamp)
            started = time.perf_counter()
            future = self._client.call_async(request)
            reply = future.result() if _wait(future, self._timeout_s, poll_s=0.002) else None
            with self._lock:
                self._answered.append((item, reply, (time.perf_counter() - started) * 1000.0))

    def finish(self, timeout_s: float) -> bool:
        """Ask what is queued, then stop; False when that took longer than ``timeout_s``."""
        self._queue.put(None)
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def answered(self) -> list[tuple[VqaItem, Any, float]]:
        with self._lock:
            return list(self._answered)


def _vqa_records(answered: Sequence[tuple[VqaItem, Any, float]], expected: int,
                 stamp_to_ns) -> tuple[list[VqaRecord], dict]:
    """One record per question answered about its own frame. One that failed, got no answer
    in time or was answered about another frame is left out, like a dropped clip, and
    counted and explained in the details, as are questions whose frame was never seen."""
    records, failures = [], []
    for item, reply, latency_ms in answered:
        where = f"{item.concept!r} at {item.stamp_ns}"
        if reply is None or not reply.success:
            failures.append(f"{where}: {'no answer in time' if reply is None else reply.message}")
        elif stamp_to_ns(reply.stamp) != item.stamp_ns:
            failures.append(f"{where}: answered about the frame at {stamp_to_ns(reply.stamp)}")
        else:
            mc = item.options is not None
            records.append(VqaRecord(
                stamp_ns=item.stamp_ns, concept=item.concept, question=item.question,
                options=dict(item.options) if mc else None, answer=item.answer,
                response=reply.answer, choice=(reply.choice or None) if mc else None,
                latency_ms=latency_ms))
    if not expected:
        return records, {}
    details: dict[str, Any] = {"questions_expected": expected, "questions_asked": len(answered),
                               "questions_failed": len(failures)}
    if failures:
        details["question_failures"] = failures[:10]
    if failures or len(answered) < expected:
        log.warning("%d of %d labelled questions were not answered about their frame%s",
                    expected - len(records), expected,
                    f": {'; '.join(failures[:3])}" if failures else "")
    return records, details


def _show_to_camera(camera, images, compressed: bool, node, subscribers: int = 1) -> None:
    """Publish ``images`` as camera frames (stamped now) and wait until the node has them;
    ``subscribers`` is how many subscriptions the camera topic has (the node's among them)."""
    from ego_ros.ros.convert import ns_to_stamp, rgb_to_compressed_msg, rgb_to_image_msg

    deadline = time.monotonic() + 10.0
    while camera.get_subscription_count() < subscribers and time.monotonic() < deadline:
        time.sleep(0.02)
    before = _diagnostic(node, "frames_received")
    for img in images:
        msg = rgb_to_compressed_msg(img) if compressed else rgb_to_image_msg(img)
        msg.header.stamp = ns_to_stamp(time.time_ns())
        msg.header.frame_id = "camera"
        camera.publish(msg)
        time.sleep(0.05)
    while _diagnostic(node, "frames_received") < before + len(images):
        if time.monotonic() > deadline:
            raise EvalError("the node did not receive the frames shown to the camera")
        time.sleep(0.02)


def _diagnostic(node, key: str) -> float:
    for status in node.diagnostics():
        for kv in status.values:
            if kv.key == key:
                try:
                    return float(kv.value)
                except ValueError:
                    return math.nan
    raise KeyError(key)


def _wait(future, timeout_s: float, poll_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while not future.done() and time.monotonic() < deadline:
        time.sleep(poll_s)
    return future.done()


def _ask_later(publisher, questions: Sequence[tuple[float, str]], stop: threading.Event) -> None:
    from std_msgs.msg import String

    start = time.monotonic()
    for at_s, text in sorted(questions):
        if stop.wait(max(0.0, start + at_s - time.monotonic())):
            return
        publisher.publish(String(data=text))


def _clips_skipped(node) -> int:
    """Clips the node sampled but never published: skipped while busy, or stale results."""
    return int(_diagnostic(node, "clips_skipped")) + int(_diagnostic(node, "clips_stale"))


def reference_stamps(bag: Path, labels: BagLabels, refs: int | None) -> set[int]:
    """Header stamps of the bag frames taught as reference views (the same frames offline
    mode never queries); empty, without reading the bag, when all views are image files."""
    indices = reference_indices(labels, refs)
    if not indices:
        return set()
    stamps: set[int] = set()
    for index, frame in enumerate(read_image_bag(bag, labels.topic)):
        if index in indices:
            stamps.add(frame.stamp_ns)
        if index >= max(indices):
            break
    return stamps


def _match(messages: Sequence[Any], labels: BagLabels, stamp_to_ns,
           excluded: Collection[int] = ()
           ) -> tuple[list[RecognitionRecord], list[CaptionRecord], int]:
    """Ground truth of each received clip: the labelled frames stamped inside it.

    A clip that spans an ``excluded`` stamp (a reference view) is not scored; the count of
    such clips is returned last.
    """
    frames = sorted(labels.frames, key=lambda f: f.stamp_ns)
    names = labels.concept_names
    recognition, captions = [], []
    spanning = 0
    for msg in messages:
        lo, hi = stamp_to_ns(msg.clip_start), stamp_to_ns(msg.clip_end)
        if any(lo <= stamp <= hi for stamp in excluded):
            spanning += 1
            continue
        inside = [f for f in frames if lo <= f.stamp_ns <= hi]
        if not inside:
            continue  # a clip of unlabelled frames (e.g. reference views) is not scored
        truth = tuple(sorted({c for f in inside for c in f.concepts}))
        stamp = stamp_to_ns(msg.header.stamp)
        present = {c.name: bool(c.present) for c in msg.concepts}
        scores = {c.name: float(c.score) for c in msg.concepts if not math.isnan(c.score)}
        recognition.append(RecognitionRecord(stamp, tuple(f.stamp_ns for f in inside), truth,
                                             present, scores, float(msg.latency_ms)))
        if msg.caption:
            captions.append(CaptionRecord(stamp, truth, msg.caption,
                                          tuple(mentioned_names(msg.caption, names)),
                                          float(msg.latency_ms)))
    return recognition, captions, spanning

"""ego_node over real DDS with the tiny model in-process: stream -> clips -> recognitions,
teaching by service, questions, malformed frames, a stalled camera, parameter validation.

Each test runs an :class:`EgoNode` in its own rclpy Context on the harness's multi-threaded
executor (``rosutil.ros_harness``), a "camera" node publishing synthetic frames from a thread,
and a client node. Stamps are wall-clock nanoseconds, like a real driver's, so the node's
receive-clock staleness checks see realistic values.
"""

from __future__ import annotations

import array
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosutil import (
    RELIABLE_QOS,
    Collector,
    RosHarness,
    ros_harness,
    wait_for,
    wait_future,
    wait_matched,
    wait_service,
)
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ego_interfaces.msg import Answer, Recognition
from ego_interfaces.srv import Ask, ForgetConcept, IntroduceConcept, ListConcepts
from ego_ros.core.parsing import parse_choice
from ego_ros.ros.convert import ns_to_stamp, rgb_to_compressed_msg, rgb_to_image_msg, stamp_to_ns
from ego_ros.ros.diagnostics import status_values
from ego_ros.ros.executor import EgoExecutor
from ego_ros.ros.node import EgoNode

FRAME_ID = "camera_optical"
SENSOR_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)


@contextmanager
def ego_node(ros: RosHarness, model_dir: Path, store: Path, **params: object
             ) -> Iterator[EgoNode]:
    """An in-process EgoNode named ego_node in ``ros``'s context, spun by its own
    ``EgoExecutor`` (as ``ego_node``'s main does); ``params`` by dotted name."""
    values = {"model.path": str(model_dir), "store.dir": str(store), **params}
    overrides = [Parameter(name, value=value) for name, value in values.items()]
    node = EgoNode(context=ros.context, parameter_overrides=overrides)
    executor = EgoExecutor(num_threads=4, context=ros.context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, name="ego-node-spin", daemon=True)
    spinner.start()
    try:
        yield node
    finally:
        executor.shutdown(timeout_sec=5.0)
        spinner.join(timeout=5.0)
        node.destroy_node()


class Camera:
    """Publishes frames from a thread at ``rate_hz``, stamped with the wall clock.

    ``frames`` are ready messages, published in turn (their stamps are overwritten); the
    stamps of messages whose frame_id is FRAME_ID are recorded in ``good_stamps``.
    """

    def __init__(self, node, frames: list, rate_hz: float = 20.0, topic: str = "/image",
                 qos: QoSProfile = SENSOR_QOS) -> None:
        self.pub = node.create_publisher(type(frames[0]), topic, qos)
        self.frames = frames
        self.period = 1.0 / rate_hz
        self.good_stamps: set[int] = set()
        self.published = {"good": 0, "bad": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Camera:
        wait_matched(self.pub)
        self._thread.start()
        return self

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            msg = self.frames[index % len(self.frames)]
            stamp = time.time_ns()
            msg.header.stamp = ns_to_stamp(stamp)
            good = msg.header.frame_id == FRAME_ID
            if good:
                self.good_stamps.add(stamp)
            self.pub.publish(msg)
            self.published["good" if good else "bad"] += 1
            index += 1
            self._stop.wait(self.period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def scene_frames(count: int, size: tuple[int, int] = (480, 640)) -> list[np.ndarray]:
    """Synthetic RGB frames: noise background and a bright square that moves a little."""
    h, w = size
    rng = np.random.default_rng(1)
    out = []
    for i in range(count):
        img = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)  # [H, W, 3]
        y, x = h // 3 + 3 * i, w // 3 + 5 * i
        img[y:y + h // 3, x:x + w // 4] = (220, 60, 40)
        out.append(img)
    return out


def raw_msgs(size: tuple[int, int] = (480, 640), encoding: str = "bgr8") -> list[Image]:
    msgs = [rgb_to_image_msg(f, encoding) for f in scene_frames(3, size)]
    for msg in msgs:
        msg.header.frame_id = FRAME_ID
    return msgs


Status = tuple[int, str, dict[str, str]]  # level, message, values


def wait_status(diagnostics: Collector, suffix: str,
                check: Callable[[int, str, dict[str, str]], bool] = lambda *_: True,
                timeout_s: float = 15.0) -> Status:
    """The newest /diagnostics status whose name ends ``suffix``, once one passes ``check``."""

    def newest() -> Status | None:
        for array_msg in reversed(list(diagnostics.messages)):
            for status in array_msg.status:
                if status.name.endswith(suffix):
                    found = (status.level[0], status.message, status_values(status))
                    return found if check(*found) else None
        return None

    return wait_for(newest, timeout_s, f"a diagnostics status {suffix!r} passing the check")


def check_stamps(rec: Recognition, camera: Camera, max_frames: int) -> None:
    assert rec.header.frame_id == FRAME_ID
    end, start = stamp_to_ns(rec.clip_end), stamp_to_ns(rec.clip_start)
    assert stamp_to_ns(rec.header.stamp) == end  # the clip's last frame
    assert end in camera.good_stamps and start in camera.good_stamps
    assert start <= end
    assert 1 <= rec.num_frames <= max_frames
    assert (rec.num_frames == 1) == (start == end)


def wait_recognition(got: Collector, predicate, timeout_s: float = 30.0) -> Recognition:
    return wait_for(lambda: next((m for m in reversed(got.messages) if predicate(m)), None),
                    timeout_s, "a matching Recognition")


def test_stream_recognitions_and_teaching_from_captured_frames(tiny_model_dirs, tmp_path):
    with ros_harness() as ros, ego_node(
            ros, tiny_model_dirs["qwen2_5_vl"], tmp_path / "store",
            **{"clip.period_s": 0.5, "clip.num_frames": 3, "clip.window_s": 1.0,
               "introduce.num_frames": 1}):
        client = ros.node("client")
        recognitions, overlays, diagnostics = Collector(), Collector(), Collector()
        client.create_subscription(Recognition, "/ego_node/recognition", recognitions,
                                   RELIABLE_QOS)
        client.create_subscription(Image, "/ego_node/concept_overlay", overlays, RELIABLE_QOS)
        client.create_subscription(DiagnosticArray, "/diagnostics", diagnostics, RELIABLE_QOS)
        services = {name: client.create_client(srv, f"/ego_node/{name}") for name, srv in (
            ("introduce_concept", IntroduceConcept), ("list_concepts", ListConcepts),
            ("forget_concept", ForgetConcept))}
        for service in services.values():
            wait_service(service)
        camera = Camera(client, raw_msgs()).start()
        try:
            first = recognitions.wait(3, timeout_s=30.0)
            for rec in first:
                check_stamps(rec, camera, max_frames=3)
                assert list(rec.concepts) == []  # nothing taught yet
            ends = [stamp_to_ns(r.clip_end) for r in first]
            # one recognition per clip period, not one per frame (frames come every 50 ms)
            assert all(b - a >= 0.3e9 for a, b in zip(ends, ends[1:])), ends

            # Teach from the camera; other services keep answering meanwhile.
            introduce = services["introduce_concept"].call_async(
                IntroduceConcept.Request(name="red box", num_frames=0))
            listed = wait_future(services["list_concepts"].call_async(ListConcepts.Request()))
            assert not introduce.done(), "list_concepts waited for the introduction"
            assert list(listed.names) == []
            reply = wait_future(introduce, timeout_s=90.0, what="introduce_concept")
            assert reply.success, reply.message
            assert reply.num_views == 1 and reply.num_tokens > 0
            assert len(reply.keywords) == 1 and 0.0 <= reply.area_percent <= 100.0
            (overlay,) = overlays.wait(1)
            assert (overlay.height, overlay.width, overlay.encoding) == (480, 640, "rgb8")
            assert overlay.header.frame_id == FRAME_ID

            listed = wait_future(services["list_concepts"].call_async(ListConcepts.Request()))
            assert list(listed.names) == ["red box"]
            assert list(listed.num_views) == [1] and list(listed.num_tokens) == [reply.num_tokens]

            taught = time.time_ns()
            rec = wait_recognition(recognitions, lambda m: stamp_to_ns(m.clip_end) > taught)
            check_stamps(rec, camera, max_frames=3)
            assert [c.name for c in rec.concepts] == ["red box"]
            (detection,) = rec.concepts
            assert 0.0 <= detection.score <= 1.0
            assert detection.present == (detection.score >= 0.5)
            assert rec.latency_ms > 0.0

            forgot = wait_future(services["forget_concept"].call_async(
                ForgetConcept.Request(name="red box")))
            assert forgot.success, forgot.message
            forgotten = time.time_ns()
            listed = wait_future(services["list_concepts"].call_async(ListConcepts.Request()))
            assert list(listed.names) == []
            rec = wait_recognition(recognitions, lambda m: stamp_to_ns(m.clip_end) > forgotten)
            assert list(rec.concepts) == []
        finally:
            camera.stop()
            # /diagnostics (1 Hz) catches up with what was published
            wait_status(diagnostics, "clips",
                        lambda _l, _m, v: int(v["recognitions_published"]) >= 5)
        level, _, camera_values = wait_status(diagnostics, "camera input")
        assert level == 0  # OK
        assert camera_values["conversion_errors"] == "0"
        assert int(camera_values["frames_received"]) >= 10
        assert float(camera_values["rate_hz"]) > 0.0


def test_compressed_input_questions_and_ask(tiny_model_dirs, tmp_path):
    jpegs = [rgb_to_compressed_msg(f) for f in scene_frames(2)]
    for msg in jpegs:
        msg.header.frame_id = FRAME_ID
    with ros_harness() as ros, ego_node(
            ros, tiny_model_dirs["qwen2_5_vl"], tmp_path / "store",
            **{"image.compressed": True, "clip.period_s": 0.5, "clip.num_frames": 2,
               "clip.window_s": 1.0, "engine.max_new_tokens": 6}):
        client = ros.node("client")
        recognitions, answers = Collector(), Collector()
        client.create_subscription(Recognition, "/ego_node/recognition", recognitions,
                                   RELIABLE_QOS)
        client.create_subscription(Answer, "/ego_node/answer", answers, RELIABLE_QOS)
        questions = client.create_publisher(String, "/ego_node/question", RELIABLE_QOS)
        ask = client.create_client(Ask, "/ego_node/ask")
        wait_service(ask)
        wait_matched(questions)
        camera = Camera(client, jpegs, topic="/image/compressed").start()
        try:
            for rec in recognitions.wait(2, timeout_s=30.0):
                check_stamps(rec, camera, max_frames=2)
            questions.publish(String(data="What is on the table?"))
            (answer,) = answers.wait(1, timeout_s=30.0)
            assert answer.question == "What is on the table?"
            assert answer.header.frame_id == FRAME_ID
            assert stamp_to_ns(answer.header.stamp) in camera.good_stamps
            assert isinstance(answer.answer, str) and answer.latency_ms > 0.0

            reply = wait_future(ask.call_async(Ask.Request(question="Is it red?")),
                                timeout_s=30.0)
            assert reply.success, reply.message
            assert "clip of" in reply.message and reply.choice == ""
            assert stamp_to_ns(reply.stamp) in camera.good_stamps
            # about a frame named by its stamp, as multiple choice
            wanted = max(set(camera.good_stamps))
            reply = wait_future(ask.call_async(Ask.Request(
                question="Which colour?", options=["A=red", "b=blue"],
                stamp=ns_to_stamp(wanted))), timeout_s=30.0)
            assert reply.success, reply.message
            assert stamp_to_ns(reply.stamp) == wanted
            assert reply.choice == (parse_choice(reply.answer, ["A", "B"], ["red", "blue"])
                                    or "")
            for request, message in (
                    (Ask.Request(question="Which?", stamp=ns_to_stamp(12345)),
                     "no buffered camera frame is stamped 0.000012345"),
                    (Ask.Request(question="Which?", options=["A=red"]), "bad options"),
                    (Ask.Request(question="Which?", options=["A red", "B=x"]), "LETTER=TEXT")):
                refused = wait_future(ask.call_async(request), timeout_s=30.0)
                assert not refused.success and message in refused.message, refused.message
            unknown = wait_future(ask.call_async(
                Ask.Request(question="Where is it?", concepts=["nobody"])), timeout_s=30.0)
            assert not unknown.success
            assert "unknown concept" in unknown.message and "nobody" in unknown.message
        finally:
            camera.stop()


def malformed_frames() -> list[Image]:
    """One frame of each kind the converter must refuse, frame_id 'bad'."""
    good = raw_msgs((48, 64))[0]

    def broken(**fields: object) -> Image:
        msg = rgb_to_image_msg(np.zeros((48, 64, 3), np.uint8), "bgr8")
        for key, value in fields.items():
            setattr(msg, key, value)
        msg.header.frame_id = "bad"
        return msg

    return [
        broken(step=64 * 3 - 1),  # wrong step: shorter than a row
        broken(encoding="bayer_weird16"),  # unknown encoding
        broken(data=array.array("B", bytes(good.data)[: 48 * 64])),  # truncated
        broken(width=0, height=0, step=0, data=array.array("B")),  # zero size
    ]


def test_malformed_frames_are_skipped_and_a_stopped_camera_stops_recognitions(
        tiny_model_dirs, tmp_path):
    good = raw_msgs((48, 64))
    bad = malformed_frames()
    stream = [good[0], bad[0], good[1], bad[1], good[2], bad[2], good[0], bad[3]]
    with ros_harness() as ros, ego_node(
            ros, tiny_model_dirs["qwen2_5_vl"], tmp_path / "store",
            **{"clip.period_s": 0.3, "clip.num_frames": 2, "clip.window_s": 0.5,
               "clip.max_age_s": 0.6, "qos.reliability": "reliable", "qos.depth": 50}):
        client = ros.node("client")
        recognitions, diagnostics = Collector(), Collector()
        client.create_subscription(Recognition, "/ego_node/recognition", recognitions,
                                   RELIABLE_QOS)
        client.create_subscription(DiagnosticArray, "/diagnostics", diagnostics, RELIABLE_QOS)
        camera = Camera(client, stream, rate_hz=25.0, qos=RELIABLE_QOS).start()
        try:
            recognitions.wait(4, timeout_s=30.0)
        finally:
            camera.stop()
        stopped = time.time_ns()
        for rec in recognitions.messages:
            check_stamps(rec, camera, max_frames=2)  # frame_id never "bad"
        # Every malformed frame was counted and skipped; the good ones were all used.
        sent = str(sum(camera.published.values()))
        _, _, values = wait_status(diagnostics, "camera input",
                                   lambda _l, _m, v: v["frames_received"] == sent)
        assert values["conversion_errors"] == str(camera.published["bad"])
        assert values["last_conversion_error"]

        # After clip.max_age_s without frames the clip timer finds nothing fresh ...
        def idle_ticks() -> int:
            return int(wait_status(diagnostics, "clips")[2]["ticks_without_fresh_frames"])

        wait_for(lambda: idle_ticks() >= 1, 10.0, "a clip tick without fresh frames")
        wait_status(diagnostics, "engine", lambda _l, _m, v: v["busy"] == "False")
        ticks, published = idle_ticks(), len(recognitions.messages)
        wait_for(lambda: idle_ticks() >= ticks + 3, 10.0, "three more idle clip ticks")
        # ... so no recognition is published any more, and none used a frame after the stop.
        assert len(recognitions.messages) == published
        assert all(stamp_to_ns(r.clip_end) < stopped for r in recognitions.messages)
        level, message, _ = wait_status(diagnostics, "camera input")
        assert level == 1 and "no camera frame" in message  # WARN


def test_service_failures_and_parameter_validation(tiny_model_dirs, tmp_path):
    with ros_harness() as ros, ego_node(ros, tiny_model_dirs["qwen2_5_vl"],
                                        tmp_path / "store") as node:
        client = ros.node("client")
        introduce = client.create_client(IntroduceConcept, "/ego_node/introduce_concept")
        ask = client.create_client(Ask, "/ego_node/ask")
        forget = client.create_client(ForgetConcept, "/ego_node/forget_concept")
        for service in (introduce, ask, forget):
            wait_service(service)

        def call(service, request):
            reply = wait_future(service.call_async(request), timeout_s=30.0)
            assert not reply.success, reply.message
            return reply.message

        assert "no camera frames captured yet on /image" in call(
            introduce, IntroduceConcept.Request(name="mug"))
        assert "path separator" in call(introduce, IntroduceConcept.Request(name="../etc"))
        assert "empty" in call(introduce, IntroduceConcept.Request(name="   "))
        views = raw_msgs((48, 64))
        views[1].data = array.array("B", bytes(views[1].data)[:100])
        message = call(introduce, IntroduceConcept.Request(name="mug", images=views[:2]))
        assert message.startswith("image 1 of 2") and "truncated" in message
        assert "no camera frames captured yet" in call(ask, Ask.Request(question="Where?"))
        assert "question is empty" in call(ask, Ask.Request(question=" "))
        assert "no concept named 'ghost'" in call(forget, ForgetConcept.Request(name="ghost"))
        assert "empty" in call(forget, ForgetConcept.Request(name=""))
        assert "path separator" in call(forget, ForgetConcept.Request(name="../etc"))
        assert "control character" in call(forget, ForgetConcept.Request(name="mu\x07g"))

        # Reference views sent in the request work without any camera.
        ok = wait_future(introduce.call_async(IntroduceConcept.Request(
            name="mug", images=raw_msgs((48, 64))[:1])), timeout_s=90.0)
        assert ok.success and ok.num_views == 1, ok.message
        # forget uses the canonical name, as introduce stored it (stripped, NFC)
        gone = wait_future(forget.call_async(ForgetConcept.Request(name="  mug ")))
        assert gone.success and gone.message == "forgot 'mug'", gone.message

        # Parameters: validated as a whole, read-only ones refused, live ones applied.
        (result,) = node.set_parameters([Parameter("clip.window_s", value=10.0)])
        assert not result.successful and "buffer.max_age_s" in result.reason
        (result,) = node.set_parameters([Parameter("model.path", value="/elsewhere")])
        assert not result.successful
        (result,) = node.set_parameters([Parameter("recognition.mode", value="guess")])
        assert not result.successful and "per-concept" in result.reason
        (result,) = node.set_parameters([Parameter("clip.period_s", value=0.25)])
        assert result.successful
        assert node._clip_timer.timer_period_ns == 250_000_000


def test_bad_parameters_refuse_to_start(tiny_model_dirs, tmp_path):
    with ros_harness() as ros, pytest.raises(ValueError, match="clip.window_s"), ego_node(
            ros, tiny_model_dirs["qwen2_5_vl"], tmp_path / "store", **{"clip.window_s": 10.0}):
        pass


def test_config_file_documents_every_parameter():
    from ego_ros.cli.up import node_parameters
    from ego_ros.ros.params import PARAMS

    config = Path(__file__).resolve().parents[1] / "config" / "ego.yaml"
    values = node_parameters(config)
    assert set(values) == {spec.name for spec in PARAMS}
    for spec in PARAMS:
        assert type(values[spec.name]) is type(spec.default), spec.name
        assert values[spec.name] == spec.default, spec.name  # the file shows the defaults
        spec.check(values[spec.name])
    text = config.read_text()
    for spec in PARAMS:  # a comment right above each parameter
        before = text.split(f"    {spec.name}:")[0].rstrip().splitlines()[-1]
        assert before.strip().startswith("#"), spec.name


def test_stale_results_are_dropped_and_counted(tiny_model_dirs, tmp_path):
    """A clip whose result comes back after clip.max_result_age_s is not published; raising
    the limit at run time lets results through again."""
    with ros_harness() as ros, ego_node(
            ros, tiny_model_dirs["qwen2_5_vl"], tmp_path / "store",
            **{"clip.period_s": 0.3, "clip.num_frames": 1, "clip.window_s": 0.0,
               "tasks.caption": True, "engine.max_new_tokens": 8,
               "clip.max_result_age_s": 0.01}) as node:
        client = ros.node("client")
        recognitions, diagnostics = Collector(), Collector()
        client.create_subscription(Recognition, "/ego_node/recognition", recognitions,
                                   RELIABLE_QOS)
        client.create_subscription(DiagnosticArray, "/diagnostics", diagnostics, RELIABLE_QOS)
        camera = Camera(client, raw_msgs((48, 64))).start()
        try:
            # a captioning call takes longer than 10 ms: every result is stale
            wait_status(diagnostics, "clips", lambda _l, _m, v: int(v["clips_stale"]) >= 2,
                        timeout_s=30.0)
            assert recognitions.messages == []
            (result,) = node.set_parameters([Parameter("clip.max_result_age_s", value=60.0)])
            assert result.successful
            rec = recognitions.wait(1, timeout_s=30.0)[0]
            check_stamps(rec, camera, max_frames=1)
        finally:
            camera.stop()


def test_a_question_waits_while_the_worker_is_down(tmp_path):
    """A question whose call finds no worker is kept (not lost) and answered by the worker
    that comes up later."""
    from test_rpc import FakeEngine, free_tcp_endpoint

    from ego_ros.serving.remote import serve_engine

    endpoint = free_tcp_endpoint()
    with ros_harness() as ros, ego_node(
            ros, tmp_path / "no-model", tmp_path / "store",
            **{"engine.endpoint": endpoint, "engine.timeout_s": 1.0,
               "engine.connect_timeout_s": 0.2, "tasks.recognize": False,
               "clip.period_s": 0.2, "clip.num_frames": 1, "clip.window_s": 0.0}):
        client = ros.node("client")
        answers, diagnostics = Collector(), Collector()
        client.create_subscription(Answer, "/ego_node/answer", answers, RELIABLE_QOS)
        client.create_subscription(DiagnosticArray, "/diagnostics", diagnostics, RELIABLE_QOS)
        questions = client.create_publisher(String, "/ego_node/question", RELIABLE_QOS)
        wait_matched(questions)
        camera = Camera(client, raw_msgs((48, 64))).start()
        try:
            questions.publish(String(data="What is here?"))
            wait_status(diagnostics, "engine", lambda _l, _m, v: int(v["failures"]) >= 3,
                        timeout_s=30.0)
            _, _, values = wait_status(diagnostics, "clips",
                                       lambda _l, _m, v: v["pending_questions"] == "1")
            assert values["questions_failed"] == "0" and values["questions_dropped"] == "0"
            assert answers.messages == []
            with serve_engine(FakeEngine(), endpoint):
                (answer,) = answers.wait(1, timeout_s=30.0)
            assert answer.question == "What is here?"
            assert answer.answer == "What is here? -> nothing known"  # the worker's answer
        finally:
            camera.stop()


def test_namespaced_node_reads_the_shipped_parameters_file(tmp_path):
    """config/ego.yaml applies to the node under any namespace (its ``/**`` section)."""
    from rclpy.node import Node

    text = (Path(__file__).resolve().parents[1] / "config" / "ego.yaml").read_text()
    changed = text.replace("clip.period_s: 1.0", "clip.period_s: 0.7").replace(
        'engine.endpoint: ""', 'engine.endpoint: "tcp://127.0.0.1:9"')  # no model loaded
    assert changed.count("0.7") == 1 and "127.0.0.1:9" in changed
    params = tmp_path / "ego.yaml"
    params.write_text(changed)
    with ros_harness() as ros:
        node: Node = EgoNode(context=ros.context, namespace="/robot1",
                             cli_args=["--ros-args", "--params-file", str(params)])
        try:
            assert node.get_fully_qualified_name() == "/robot1/ego_node"
            assert node.get_parameter("clip.period_s").value == 0.7
            assert node.get_parameter("engine.endpoint").value == "tcp://127.0.0.1:9"
        finally:
            node.destroy_node()


def test_a_corrupt_store_gives_a_clean_start_up_error(tiny_model_dirs, tmp_path, capfd):
    from ego_ros.ros.node import main as node_main

    store = tmp_path / "store"
    store.mkdir()
    (store / "manifest.json").write_text("{not json")
    status = node_main(["--ros-args", "-p", f"model.path:={tiny_model_dirs['qwen2_5_vl']}",
                        "-p", f"store.dir:={store}", "-p", "model.device:=cpu"])
    err = capfd.readouterr().err
    assert status == 1
    assert "cannot start: StoreError" in err and "manifest" in err
    assert "Traceback" not in err


def test_curve_keys_let_the_node_reach_a_worker_that_requires_them(tmp_path):
    import shutil

    from test_rpc import FakeEngine, frames

    from ego_ros.serving.remote import serve_engine
    from ego_ros.serving.rpc import CurveServerKeys, generate_curve_keys

    worker_public, worker_secret = generate_curve_keys(tmp_path / "worker", "worker")
    node_public, node_secret = generate_curve_keys(tmp_path / "robot", "robot1")
    allowed = tmp_path / "clients"
    allowed.mkdir()
    shutil.copy(node_public, allowed)
    engine = FakeEngine()
    engine.introduce("mug", frames(200))
    keys = {"engine.curve_secret_key_file": str(node_secret),
            "engine.curve_server_key_file": str(worker_public)}
    with serve_engine(engine, "tcp://127.0.0.1:*", curve=CurveServerKeys(
            worker_secret, allowed)) as server, ros_harness() as ros:
        with ego_node(ros, tmp_path / "unused", tmp_path / "store",
                      **{"engine.endpoint": server.endpoint, "tasks.recognize": False,
                         **keys}):
            listing = ros.node("client").create_client(ListConcepts, "/ego_node/list_concepts")
            wait_service(listing)
            reply = wait_future(listing.call_async(ListConcepts.Request()), timeout_s=15.0)
            assert reply.success and list(reply.names) == ["mug"], reply.message
        # Only one of the two files, or a missing file: refused at start, naming the parameter.
        with pytest.raises(ValueError, match="engine.curve_server_key_file is empty"), ego_node(
                ros, tmp_path / "unused", tmp_path / "store",
                **{"engine.endpoint": server.endpoint,
                   "engine.curve_secret_key_file": str(node_secret)}):
            pass
        with pytest.raises(ValueError, match="engine.curve_secret_key_file: no key file"), \
                ego_node(ros, tmp_path / "unused", tmp_path / "store",
                         **{"engine.endpoint": server.endpoint, **keys,
                            "engine.curve_secret_key_file": str(tmp_path / "nope")}):
            pass

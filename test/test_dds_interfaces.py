"""The ego_interfaces messages and services over real DDS, between two nodes in one process.

Each test has its own rclpy Context (see ``rosutil.ros_harness``); ``conftest.py`` isolates the
run in its own ROS domain. Messages cross the middleware (serialised by the rosidl typesupport,
sent over DDS, deserialised), so a field that the interface definition or the build loses shows
up here.
"""

from __future__ import annotations

import array
import math

import numpy as np
from builtin_interfaces.msg import Time
from rosutil import RELIABLE_QOS, Collector, ros_harness, wait_future, wait_matched, wait_service
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from ego_interfaces.msg import Answer, ConceptDetection, Recognition
from ego_interfaces.srv import Ask, ForgetConcept, IntroduceConcept, ListConcepts
from ego_ros.ros.convert import image_msg_to_rgb, rgb_to_image_msg

CAPTION = "Anna’s mug ☕ sits next to 小さな robot — «ok»"


def test_recognition_and_answer_round_trip_with_all_fields():
    sent = Recognition()
    sent.header = Header(stamp=Time(sec=1_732_600_000, nanosec=123_456_789), frame_id="cam_opt")
    sent.clip_start = Time(sec=1_732_599_998, nanosec=5)
    sent.clip_end = Time(sec=1_732_600_000, nanosec=123_456_789)
    sent.num_frames = 8
    sent.concepts = [
        ConceptDetection(name="mug", present=True, score=0.875),
        ConceptDetection(name="Anna", present=False, score=math.nan),
    ]
    sent.caption = CAPTION
    sent.latency_ms = 41.25
    question = Answer(header=sent.header, question="Where is <mug>?", answer="On the table.",
                      concepts=["mug", "Anna"], latency_ms=12.5)

    with ros_harness() as ros:
        listener, talker = ros.node("recognition_listener"), ros.node("recognition_talker")
        got, answers = Collector(), Collector()
        listener.create_subscription(Recognition, "recognition", got, RELIABLE_QOS)
        listener.create_subscription(Answer, "answer", answers, RELIABLE_QOS)
        pub = talker.create_publisher(Recognition, "recognition", RELIABLE_QOS)
        answer_pub = talker.create_publisher(Answer, "answer", RELIABLE_QOS)
        wait_matched(pub)
        wait_matched(answer_pub)
        pub.publish(sent)
        answer_pub.publish(question)
        (rx,) = got.wait(1)
        (answer,) = answers.wait(1)

    assert rx is not sent
    assert (rx.header.stamp.sec, rx.header.stamp.nanosec) == (1_732_600_000, 123_456_789)
    assert rx.header.frame_id == "cam_opt"
    assert (rx.clip_start.sec, rx.clip_start.nanosec) == (1_732_599_998, 5)
    assert (rx.clip_end.sec, rx.clip_end.nanosec) == (1_732_600_000, 123_456_789)
    assert rx.num_frames == 8
    assert [(c.name, c.present) for c in rx.concepts] == [("mug", True), ("Anna", False)]
    assert rx.concepts[0].score == 0.875
    assert math.isnan(rx.concepts[1].score)
    assert rx.caption == CAPTION
    assert rx.latency_ms == 41.25
    assert (answer.question, answer.answer) == ("Where is <mug>?", "On the table.")
    assert list(answer.concepts) == ["mug", "Anna"] and answer.latency_ms == 12.5
    assert answer.header.frame_id == "cam_opt"


def _views() -> list[Image]:
    """Two 64x48 reference views: rgb8, and bgr8 with 4 padding bytes per row."""
    rng = np.random.default_rng(7)
    first = rgb_to_image_msg(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), "rgb8",
                             Header(stamp=Time(sec=10, nanosec=1), frame_id="cam"))
    second = rgb_to_image_msg(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), "bgr8",
                              Header(stamp=Time(sec=10, nanosec=2), frame_id="cam"))
    rows = np.frombuffer(second.data, np.uint8).reshape(48, 64 * 3)  # [H, W * 3]
    padded = np.zeros((48, 64 * 3 + 4), np.uint8)  # [H, step]
    padded[:, : 64 * 3] = rows
    second.step = 64 * 3 + 4
    second.data = array.array("B", padded.tobytes())
    return [first, second]


def test_introduce_concept_service_carries_images_and_response():
    received: list[IntroduceConcept.Request] = []

    def introduce(request, response):
        received.append(request)
        views = [image_msg_to_rgb(img) for img in request.images]
        response.success = True
        response.message = f"learned {request.name!r} from {len(views)} views"
        response.num_views = len(views)
        response.num_tokens = sum(int(v[0, 0].sum()) for v in views)  # depends on pixel data
        response.keywords = ["red, ceramic, mug", "handle, cup"]
        response.area_percent = 37.5
        return response

    views = _views()
    expected_rgb = [image_msg_to_rgb(v) for v in views]
    request = IntroduceConcept.Request(name="Annas Tasse ☕", images=views, num_frames=0,
                                       replace=True)
    with ros_harness() as ros:
        server, caller = ros.node("introduce_server"), ros.node("introduce_caller")
        server.create_service(IntroduceConcept, "introduce_concept", introduce)
        client = caller.create_client(IntroduceConcept, "introduce_concept")
        wait_service(client)
        response = wait_future(client.call_async(request), what="introduce_concept response")

    assert response.success
    assert response.message == "learned 'Annas Tasse ☕' from 2 views"
    assert response.num_views == 2
    assert response.num_tokens == sum(int(v[0, 0].sum()) for v in expected_rgb)
    assert list(response.keywords) == ["red, ceramic, mug", "handle, cup"]
    assert response.area_percent == 37.5

    (got,) = received
    assert got.name == "Annas Tasse ☕" and got.replace is True and got.num_frames == 0
    assert len(got.images) == 2
    for sent, arrived, rgb in zip(views, got.images, expected_rgb):
        assert (arrived.width, arrived.height, arrived.step, arrived.encoding) == (
            sent.width, sent.height, sent.step, sent.encoding)
        assert arrived.header.stamp.nanosec == sent.header.stamp.nanosec
        assert bytes(arrived.data) == bytes(sent.data)  # padding bytes included
        assert np.array_equal(image_msg_to_rgb(arrived), rgb)


def test_list_forget_and_ask_services():
    def list_concepts(_request, response):
        response.success = True
        response.message = "2 concept(s)"
        response.names = ["mug", "Anna ☕"]
        response.num_tokens = [12, 345]
        response.num_views = [1, 3]
        return response

    def forget(request, response):
        response.success = request.name == "mug"
        response.message = "forgot mug" if response.success else f"no concept {request.name!r}"
        return response

    def ask(request, response):
        response.success = True
        response.answer = f"{request.question} -> {','.join(request.concepts)}"
        return response

    with ros_harness() as ros:
        server, caller = ros.node("concept_server"), ros.node("concept_caller")
        server.create_service(ListConcepts, "list_concepts", list_concepts)
        server.create_service(ForgetConcept, "forget_concept", forget)
        server.create_service(Ask, "ask", ask)
        clients = {
            name: caller.create_client(srv, name)
            for name, srv in (("list_concepts", ListConcepts), ("forget_concept", ForgetConcept),
                              ("ask", Ask))
        }
        for client in clients.values():
            wait_service(client)
        listed = wait_future(clients["list_concepts"].call_async(ListConcepts.Request()))
        forget_client = clients["forget_concept"]
        forgot = wait_future(forget_client.call_async(ForgetConcept.Request(name="mug")))
        missing = wait_future(forget_client.call_async(ForgetConcept.Request(name="x")))
        asked = wait_future(clients["ask"].call_async(
            Ask.Request(question="Is <Anna ☕> here?", concepts=["Anna ☕"])))

    assert listed.success and listed.message == "2 concept(s)"
    assert list(listed.names) == ["mug", "Anna ☕"]
    assert list(listed.num_tokens) == [12, 345] and list(listed.num_views) == [1, 3]
    assert forgot.success and forgot.message == "forgot mug"
    assert not missing.success and missing.message == "no concept 'x'"
    assert asked.success and asked.answer == "Is <Anna ☕> here? -> Anna ☕"

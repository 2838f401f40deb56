"""A running ``ego_node`` (a subprocess, tiny model in-process) refuses a 204,000-character
question on ``~/ask`` and on ``~/question`` at once, without its memory moving, refuses an
introduction of more than 16 views, and answers normal questions afterwards. Before the
limits one 100,000-character question took a node to 6.5 GB (issue 11); the bounds are in
``ego_ros.core.limits``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from rosutil import RELIABLE_QOS, Collector, ros_harness, wait_for, wait_future, wait_matched
from std_msgs.msg import String
from test_node import Camera, raw_msgs, wait_status
from test_worker import write_params

from ego_interfaces.msg import Answer
from ego_interfaces.srv import Ask, IntroduceConcept

ROOT = Path(__file__).resolve().parents[1]
HUGE = "Where is my mug? " * 12_000  # 204,000 characters
MIB = 1024 * 1024


def memory_bytes(pid: int) -> tuple[int, int]:
    """(resident, peak resident) bytes of process ``pid`` (VmRSS, VmHWM)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return tuple(int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM"))  # type: ignore


def test_a_running_node_refuses_a_huge_question_at_once(tiny_model_dirs, tmp_path):
    params = write_params(tmp_path / "ego.yaml", tiny_model_dirs["qwen2_5_vl"],
                          tmp_path / "store")
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        node = subprocess.Popen(
            [sys.executable, "-m", "ego_ros.ros.node", "--ros-args", "--params-file",
             str(params), "-p", "engine.max_new_tokens:=4"],
            stdout=out, stderr=out, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        with ros_harness() as ros:
            client = ros.node("client")
            ask = client.create_client(Ask, "/ego_node/ask")
            answers, diagnostics = Collector(), Collector()
            client.create_subscription(Answer, "/ego_node/answer", answers, RELIABLE_QOS)
            client.create_subscription(DiagnosticArray, "/diagnostics", diagnostics,
                                       RELIABLE_QOS)
            questions = client.create_publisher(String, "/ego_node/question", RELIABLE_QOS)

            def ready() -> bool:
                assert node.poll() is None, log.read_text()[-3000:]
                return ask.service_is_ready()

            wait_for(ready, 120.0, "the node's ~/ask service")
            wait_matched(questions)
            camera = Camera(client, raw_msgs((96, 128))).start()
            try:
                def call(question: str) -> Ask.Response:
                    return wait_future(ask.call_async(Ask.Request(question=question)),
                                       timeout_s=60.0)

                warm = wait_for(lambda: (r := call("Is it red?")).success and r, 60.0,
                                "a first answer")
                assert warm.answer is not None
                rss, peak = memory_bytes(node.pid)

                started = time.monotonic()
                refused = call(HUGE)
                assert time.monotonic() - started < 5.0
                assert not refused.success
                # refused by the service itself, before any frame was sampled or engine called
                assert refused.message.startswith(
                    "the question is 204000 characters long; the limit is 1000"), refused.message
                questions.publish(String(data=HUGE))
                _, _, values = wait_status(
                    diagnostics, "clips", lambda _l, _m, v: v["questions_refused"] == "1")
                assert "204000 characters long" in values["last_question_refused"]
                assert values["pending_questions"] == "0"
                rss_after, peak_after = memory_bytes(node.pid)
                assert peak_after - peak < 64 * MIB, (peak, peak_after)
                assert rss_after - rss < 64 * MIB, (rss, rss_after)

                # more views than one introduction takes: refused before any is converted
                introduce = client.create_client(IntroduceConcept,
                                                 "/ego_node/introduce_concept")
                for request, count in (
                        (IntroduceConcept.Request(name="mug", images=raw_msgs((96, 128)) * 6), 18),
                        (IntroduceConcept.Request(name="mug", num_frames=17), 17)):
                    reply = wait_future(introduce.call_async(request), timeout_s=30.0)
                    assert not reply.success
                    assert reply.message.startswith(f"{count} reference views given; one "
                                                    "introduction takes at most 16")

                assert call("Where is the red square?").success  # the node still answers
                questions.publish(String(data="What is on the table?"))
                (answer,) = answers.wait(1, timeout_s=60.0)
                assert answer.question == "What is on the table?"
            finally:
                camera.stop()
        assert node.poll() is None, log.read_text()[-3000:]
    finally:
        node.terminate()
        try:
            node.wait(20)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait(10)

"""Small helpers for tests that use real ROS 2 (DDS) traffic.

Typical use::

    from rosutil import Collector, ros_harness, wait_for, wait_future, wait_matched

    with ros_harness() as ros:
        sub_node = ros.node("listener")
        pub_node = ros.node("talker")
        got = Collector()
        sub_node.create_subscription(Recognition, "recognition", got, RELIABLE_QOS)
        pub = pub_node.create_publisher(Recognition, "recognition", RELIABLE_QOS)
        wait_matched(pub)
        pub.publish(msg)
        (received,) = got.wait(1)

Each harness has its own ``rclpy`` Context, so tests never share global ROS state, and spins
an ``EgoExecutor`` (the node's executor) in a background thread, so service calls and
subscriptions complete while the test thread waits. ``test/conftest.py`` has already put the
run in its own ``ROS_DOMAIN_ID`` with localhost-only discovery. Handshakes poll a real
condition (matched endpoints, service availability, future completion) with a timeout; never
sleep instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import rclpy
from rclpy.client import Client
from rclpy.context import Context
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future

from ego_ros.ros.executor import EgoExecutor

T = TypeVar("T")

# Reliable, volatile, keep-last 10: what the round-trip tests need (nothing lost once matched).
RELIABLE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)


def wait_for(predicate: Callable[[], T], timeout_s: float = 5.0, what: str = "condition",
             interval_s: float = 0.01) -> T:
    """Poll ``predicate`` until it returns a truthy value, and return that value.

    Raises AssertionError naming ``what`` when ``timeout_s`` passes first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:.1f} s waiting for {what}")
        time.sleep(interval_s)


def wait_matched(publisher: Publisher, count: int = 1, timeout_s: float = 10.0) -> None:
    """Wait until ``publisher`` has matched at least ``count`` subscriptions (DDS discovery)."""
    wait_for(lambda: publisher.get_subscription_count() >= count, timeout_s,
             f"{count} subscription(s) on {publisher.topic_name}")


def wait_service(client: Client, timeout_s: float = 10.0) -> None:
    """Wait until the service behind ``client`` is discovered and ready."""
    wait_for(client.service_is_ready, timeout_s, f"service {client.srv_name}")


def wait_future(future: Future, timeout_s: float = 10.0, what: str = "future") -> Any:
    """Wait for a future completed by the harness's executor; return its result (re-raises)."""
    wait_for(future.done, timeout_s, what, interval_s=0.005)
    return future.result()


class Collector:
    """A subscription callback that records messages; ``wait(n)`` blocks until n arrived."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.messages: list[Any] = []

    def __call__(self, msg: Any) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def wait(self, count: int = 1, timeout_s: float = 10.0) -> list[Any]:
        """The first ``count`` messages, waiting up to ``timeout_s`` for them."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout_s):
                raise AssertionError(
                    f"timed out after {timeout_s:.1f} s: {len(self.messages)} of {count} "
                    "message(s) received")
            return list(self.messages[:count])


class RosHarness:
    """An rclpy Context plus a background-spinning executor; create nodes with :meth:`node`."""

    def __init__(self, context: Context, executor: EgoExecutor) -> None:
        self.context = context
        self.executor = executor
        self._nodes: list[Node] = []

    def node(self, name: str, **kwargs: Any) -> Node:
        """A new plain ``Node`` in this context, already spinning."""
        return self.add(Node(name, context=self.context, **kwargs))

    def add(self, node: Node) -> Node:
        """Spin a node built elsewhere (with ``context=harness.context``); destroyed on exit."""
        self._nodes.append(node)
        self.executor.add_node(node)
        return node


@contextmanager
def ros_harness(num_threads: int = 4) -> Iterator[RosHarness]:
    """Init rclpy in a fresh Context, spin it in a thread, and tear everything down on exit."""
    context = Context()
    rclpy.init(context=context)
    executor = EgoExecutor(num_threads=num_threads, context=context)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set() and context.ok():
            executor.spin_once(timeout_sec=0.05)

    thread = threading.Thread(target=spin, name="ros-harness-spin", daemon=True)
    thread.start()
    harness = RosHarness(context, executor)
    try:
        yield harness
    finally:
        stop.set()
        thread.join(timeout=5.0)
        executor.shutdown(timeout_sec=5.0)
        for node in harness._nodes:
            node.destroy_node()
        context.try_shutdown()

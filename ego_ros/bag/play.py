"""Play a bag's camera topic through rclpy with the recorded timing (for machines without
``ros2 bag play``, such as the PyPI-wheel installs this project supports).

    stats = play_bag(Path("demo_bag"), PlayConfig(rate=2.0, clock=True))

Messages are published exactly as recorded: the serialized CDR bytes from the bag go straight
to the publisher, so header stamps, frame ids, encodings and compression are untouched and no
decode/encode cost sits in the timing loop. Message ``i`` goes out ``(t_i - t_0) / rate``
seconds after playback starts, ``t`` being the time the recorder received it (what
``ros2 bag play`` follows too); a message that is late is sent at once, never dropped.

With ``clock`` the player also drives ``/clock`` (``rosgraph_msgs/Clock``) with the bag's time,
``clock_hz`` times per second and right before every message, so nodes running with
``use_sim_time`` see the recorded time. With ``loop`` the bag restarts when it ends (the clock
jumps back, as with ``ros2 bag play --loop``) until stopped.

This is the only module of ``ego_ros.bag`` that imports rclpy, and only inside
:func:`play_bag`, so reading and writing bags needs no ROS installation.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rosbags.highlevel import AnyReader, AnyReaderError

from ego_ros.bag.io import COMPRESSED_IMAGE_TYPE, IMAGE_TYPE, BagError, bag_info

__all__ = ["MESSAGE_TYPES", "PlayConfig", "PlayError", "PlayStats", "play_bag"]

logger = logging.getLogger(__name__)

_NS = 1_000_000_000
_CLOCK_TOPIC = "/clock"
_CLOCK_TYPE = "rosgraph_msgs/msg/Clock"
# What play publishes: bag type string -> (rclpy module, class). Nothing else is played.
MESSAGE_TYPES: dict[str, tuple[str, str]] = {
    IMAGE_TYPE: ("sensor_msgs.msg", "Image"),
    COMPRESSED_IMAGE_TYPE: ("sensor_msgs.msg", "CompressedImage"),
}


class PlayError(RuntimeError):
    """The bag cannot be played as asked; the message says what to change."""


@dataclass(frozen=True)
class PlayConfig:
    """How to play a bag; validated on construction.

    rate: playback speed factor (2.0 = twice as fast).
    loop: start over at the end, until stopped.
    clock: publish the bag's time on /clock (rosgraph_msgs/Clock) at ``clock_hz``.
    topic: the topic to play; None plays the bag's only Image/CompressedImage topic. Only
        those two types are played (:data:`MESSAGE_TYPES`); any other is refused.
    wait_subscribers: before the first message, wait until this many subscriptions match
        (up to ``wait_timeout_s``), so that nothing is published into the void.
    node_name: name of the player's ROS node.
    """

    rate: float = 1.0
    loop: bool = False
    clock: bool = False
    clock_hz: float = 40.0
    topic: str | None = None
    wait_subscribers: int = 0
    wait_timeout_s: float = 10.0
    node_name: str = "ego_bag_player"

    def __post_init__(self) -> None:
        checks = [
            ("rate", self.rate > 0, "must be > 0"),
            ("clock_hz", self.clock_hz > 0, "must be > 0"),
            ("wait_subscribers", self.wait_subscribers >= 0, "must be >= 0"),
            ("wait_timeout_s", self.wait_timeout_s > 0, "must be > 0"),
            ("topic", self.topic is None or self.topic.startswith("/"),
             "must be an absolute topic name starting with '/'"),
            ("node_name", bool(self.node_name), "must not be empty"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise ValueError(f"PlayConfig.{name}={getattr(self, name)!r} {why}")


@dataclass(frozen=True)
class PlayStats:
    """What a playback did: messages published, full passes, bag and wall durations."""

    topic: str
    msgtype: str
    messages: int
    loops: int
    bag_duration_s: float
    wall_s: float


def _message_class(msgtype: str) -> Any:
    """The rclpy class of one of :data:`MESSAGE_TYPES`, or a PlayError.

    A bag's type strings are data: they are looked up in the fixed table and never name a
    module to import, so a bag that claims ``os/msg/system`` runs nothing and imports nothing.
    """
    if msgtype not in MESSAGE_TYPES:
        raise PlayError(
            f"bag play publishes only {', '.join(sorted(MESSAGE_TYPES))}; this topic's type "
            f"{msgtype[:200]!r} is not one of them (choose an image topic with --topic, or "
            "play the bag with ros2 bag play)"
        )
    module, name = MESSAGE_TYPES[msgtype]
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise PlayError(
            f"cannot load the ROS message type {msgtype} in this Python ({exc}); install its "
            "package (PyPI wheels: pip install ros-jazzy-sensor-msgs)"
        ) from exc


def _pick_topic(bag: Path, wanted: str | None) -> tuple[str, str]:
    info = bag_info(bag)
    types = {t["name"]: t["type"] for t in info["topics"]}
    if wanted is not None:
        if wanted not in types:
            raise PlayError(f"bag {bag} has no topic {wanted!r}; topics: {sorted(types)}")
        return wanted, types[wanted]
    images = info["image_topics"]
    if len(images) != 1:
        raise PlayError(
            f"bag {bag} has {len(images)} image topics ({', '.join(images) or 'none'}); "
            "choose one with --topic"
        )
    return images[0], types[images[0]]


def _raw_messages(bag: Path, topic: str) -> Iterator[tuple[int, bytes]]:
    """``(log_time_ns, serialized CDR)`` of one topic, in log order, streamed."""
    try:
        with AnyReader([bag]) as reader:
            conns = [c for c in reader.connections if c.topic == topic]
            for _, log_time, raw in reader.messages(connections=conns):
                yield int(log_time), bytes(raw)
    except AnyReaderError as exc:
        raise BagError(f"cannot read bag {bag}: {exc}") from exc


class _Clock:
    """Publishes the bag's time on /clock; rate-limited to ``hz`` except when forced."""

    def __init__(self, node: Any, hz: float) -> None:
        try:
            from rosgraph_msgs.msg import Clock
        except ImportError as exc:
            raise PlayError(
                "--clock needs rosgraph_msgs, which this Python cannot import; install it "
                "(PyPI wheels: pip install ros-jazzy-rosgraph-msgs) or play without --clock"
            ) from exc
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        # Reliable matches both reliable and best-effort (rclpy's TimeSource) subscribers.
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        self._msg_cls = Clock
        self._pub = node.create_publisher(Clock, _CLOCK_TOPIC, qos)
        self.period = 1.0 / hz
        self._last = -float("inf")

    def publish(self, bag_time_ns: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.period:
            return
        msg = self._msg_cls()
        msg.clock.sec, msg.clock.nanosec = divmod(int(bag_time_ns), _NS)
        self._pub.publish(msg)
        self._last = now


@dataclass(frozen=True)
class _Timeline:
    """Maps bag time to wall time for one pass: bag ``t0`` plays at monotonic ``wall0``."""

    wall0: float
    t0: int
    rate: float

    def due(self, bag_time_ns: int) -> float:
        return self.wall0 + (bag_time_ns - self.t0) / _NS / self.rate

    def bag_time(self, now: float) -> int:
        return self.t0 + int((now - self.wall0) * self.rate * _NS)


def _wait_until(deadline: float, stop: threading.Event, clock: _Clock | None,
                timeline: _Timeline) -> bool:
    """Sleep until the monotonic ``deadline``, ticking the clock; False when stopped."""
    while True:
        now = time.monotonic()
        remaining = deadline - now
        if remaining <= 0:
            return not stop.is_set()
        if clock is not None:
            clock.publish(timeline.bag_time(now))
            remaining = min(remaining, clock.period)
        if stop.wait(remaining):
            return False


def play_bag(bag: Path, config: PlayConfig | None = None,
             stop: threading.Event | None = None) -> PlayStats:
    """Publish the bag's topic with its recorded timing; returns when done or ``stop`` is set.

    Runs in its own rclpy Context (initialised and shut down here), so it coexists with other
    ROS users in the same process. Ctrl-C raises KeyboardInterrupt after cleaning up.
    """
    config = config or PlayConfig()
    bag = Path(bag)
    stop = stop or threading.Event()
    topic, msgtype = _pick_topic(bag, config.topic)
    msg_cls = _message_class(msgtype)

    import rclpy
    from rclpy.context import Context
    from rclpy.duration import Duration
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions

    # Reliable, volatile, keep last 10, like a camera driver: matches reliable and
    # best-effort (sensor data) subscribers.
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)
    context = Context()
    # No rclpy signal handlers: Ctrl-C stays a KeyboardInterrupt that unwinds through finally.
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    messages = loops = 0
    first = last = 0
    started = time.monotonic()
    try:
        node = Node(config.node_name, context=context)
        publisher = node.create_publisher(msg_cls, topic, qos)
        clock = _Clock(node, config.clock_hz) if config.clock else None
        if config.wait_subscribers:
            deadline = time.monotonic() + config.wait_timeout_s
            while publisher.get_subscription_count() < config.wait_subscribers:
                if time.monotonic() > deadline:
                    raise PlayError(
                        f"{publisher.get_subscription_count()} of {config.wait_subscribers} "
                        f"subscriber(s) on {topic} after {config.wait_timeout_s:.1f} s")
                if stop.wait(0.01):
                    break
        logger.info("playing %s (%s) from %s at rate %.3g%s", topic, msgtype, bag, config.rate,
                    ", looping" if config.loop else "")
        started = time.monotonic()
        while not stop.is_set():
            timeline: _Timeline | None = None
            for log_time, raw in _raw_messages(bag, topic):
                if timeline is None:
                    timeline = _Timeline(time.monotonic(), log_time, config.rate)
                    first = log_time
                if not _wait_until(timeline.due(log_time), stop, clock, timeline):
                    break
                if clock is not None:
                    clock.publish(log_time, force=True)
                publisher.publish(raw)
                messages += 1
                last = log_time
            else:
                loops += 1
                if timeline is None:
                    raise PlayError(f"bag {bag} has no messages on {topic}")
                if config.loop:
                    continue
            break
        if messages and publisher.get_subscription_count():
            # Reliable delivery of the tail: give subscribers time to acknowledge.
            publisher.wait_for_all_acked(Duration(seconds=2))
    finally:
        if node is not None:
            node.destroy_node()
        context.try_shutdown()
    wall = time.monotonic() - started
    logger.info("published %d messages on %s in %.2f s (%d full pass(es))", messages, topic,
                wall, loops)
    return PlayStats(topic=topic, msgtype=msgtype, messages=messages, loops=loops,
                     bag_duration_s=max(0, last - first) / _NS, wall_s=wall)

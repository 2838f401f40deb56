"""The camera subscription's QoS: match the publishers' reliability, and tell when frames are lost.

Data flow::

    ROS graph (get_publishers_info_by_topic, polled by the node every GRAPH_POLL_S)
        --choose_reliability(qos.reliability, publishers)--> RELIABLE | BEST_EFFORT | None (wait)
        the node (re)creates its camera subscription when the choice changes
    header stamps of received frames --DeliveryMeter--> Delivery: the camera's rate and the
        share of its frames that arrived --> /diagnostics (WARN below LOW_DELIVERY)

Why match instead of a fixed default (measured in docs/benchmarks.md, "Camera QoS"): a
best-effort subscription *matches* a reliable publisher but, with Fast DDS's default transports,
receives about half of a 30 Hz raw 640x480 stream from it (no fragment is ever resent); a
reliable subscription gets nothing at all from a best-effort publisher (incompatible QoS), which
is what most camera drivers offer. So ``auto`` subscribes reliable when every publisher on the
topic is reliable, best effort as soon as one is not, and waits (no subscription) while there is
none.

What the delivery estimate can honestly say: the publisher's rate is not in the graph, and ROS 2
headers carry no sequence number. Frames keep their capture stamps, so the gaps between the
stamps of received frames are whole multiples of the camera's period. With
``qos.expected_rate_hz`` set, that period is known; otherwise it is estimated as a low
percentile of the gaps (some consecutive frames arrive unless the loss is perfectly periodic,
in which case the estimate is too slow and the loss is under-reported, never over-reported
for a steady camera). The delivered share is then ``gaps / sum(round(gap / period))``. Gaps
over PAUSE_S are a camera pause, not loss, and are left out. A camera with an irregular rate
(triggered, event-driven) needs ``qos.expected_rate_hz`` or gives no meaningful share.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ego_ros.ros.diagnostics import OK, WARN

RELIABILITY_CHOICES = ("auto", "reliable", "best_effort")
GRAPH_POLL_S = 0.5  # how often the node looks at the topic's publishers
LOW_DELIVERY = 0.5  # a received share below this is reported as a WARN on /diagnostics
PAUSE_S = 1.0  # a stamp gap longer than this is a camera pause, not lost frames
WINDOW = 120  # received stamps the estimate looks at (4 s at 30 Hz)
MIN_GAPS = 10  # fewer gaps give no estimate
PERIOD_PERCENTILE = 0.1  # the camera period estimate: this quantile of the gaps

_NAMES = {ReliabilityPolicy.RELIABLE: "reliable", ReliabilityPolicy.BEST_EFFORT: "best_effort"}


def reliability_name(policy: ReliabilityPolicy | None) -> str:
    """``reliable``, ``best_effort``, or ``none`` (no subscription yet)."""
    return "none" if policy is None else _NAMES.get(policy, str(policy))


def choose_reliability(setting: str, publishers: Iterable[ReliabilityPolicy]
                       ) -> ReliabilityPolicy | None:
    """The camera subscription's reliability for ``qos.reliability`` = ``setting``.

    Forced settings are returned as they are. ``auto``: RELIABLE when every publisher is
    reliable, BEST_EFFORT when one is not (a reliable subscription would receive nothing from
    it), None when there is no publisher yet (subscribe once one appears).
    """
    if setting == "reliable":
        return ReliabilityPolicy.RELIABLE
    if setting == "best_effort":
        return ReliabilityPolicy.BEST_EFFORT
    if setting != "auto":
        raise ValueError(f"qos.reliability must be one of {', '.join(RELIABILITY_CHOICES)}, "
                         f"got {setting!r}")
    kinds = list(publishers)
    if not kinds:
        return None
    if all(k == ReliabilityPolicy.RELIABLE for k in kinds):
        return ReliabilityPolicy.RELIABLE
    return ReliabilityPolicy.BEST_EFFORT


def incompatible(policy: ReliabilityPolicy | None, publishers: Iterable[ReliabilityPolicy]
                 ) -> int:
    """How many publishers a subscription with ``policy`` receives nothing from."""
    if policy != ReliabilityPolicy.RELIABLE:
        return 0
    return sum(1 for k in publishers if k != ReliabilityPolicy.RELIABLE)


def image_qos(policy: ReliabilityPolicy, depth: int) -> QoSProfile:
    """The camera subscription's profile: keep last ``depth``, volatile, ``policy``."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policy,
                      durability=DurabilityPolicy.VOLATILE)


class CameraSubscription:
    """A node's camera subscription, made (again) with the reliability ``setting`` asks for.

    :meth:`update` looks at the topic's publishers and subscribes when the choice differs from
    the current subscription's; the node calls it at start and every GRAPH_POLL_S from the
    callback group of ``callback``, so a subscription is never replaced while its callback
    runs. ``name`` is relative (remapped and namespaced like any other topic).
    """

    def __init__(self, node: Any, msg_type: type, name: str, callback: Callable[[Any], None],
                 setting: str, depth: int, group: Any) -> None:
        choose_reliability(setting, [])  # validates the setting
        self._node, self._type, self._name, self._callback = node, msg_type, name, callback
        self._setting, self._depth, self._group = setting, depth, group
        self.topic: str = node.resolve_topic_name(name)
        self.subscription: Any = None
        self.reliability: ReliabilityPolicy | None = None
        self.incompatible = 0  # publishers the current subscription receives nothing from

    @property
    def reliability_name(self) -> str:
        return reliability_name(self.reliability)

    def update(self) -> str:
        """(Re)subscribe if needed; returns what was done for the log ("" when nothing)."""
        kinds = [info.qos_profile.reliability
                 for info in self._node.get_publishers_info_by_topic(self.topic)]
        wanted = choose_reliability(self._setting, kinds)
        self.incompatible = incompatible(wanted, kinds)
        if wanted is None or wanted == self.reliability:
            return ""
        if self.subscription is not None:
            self._node.destroy_subscription(self.subscription)
        self.subscription = self._node.create_subscription(
            self._type, self._name, self._callback, image_qos(wanted, self._depth),
            callback_group=self._group)
        self.reliability = wanted
        why = (f"qos.reliability {self._setting}" if self._setting != "auto" else
               f"auto: {len(kinds)} publisher(s), "
               f"{sum(k == ReliabilityPolicy.RELIABLE for k in kinds)} of them reliable")
        return f"subscribed to {self.topic} as {reliability_name(wanted)} ({why})"


@dataclass(frozen=True)
class Delivery:
    """The camera's rate and the share of its frames that arrived, over the recent window."""

    camera_rate_hz: float
    delivered: float  # 0..1
    source: str  # "header stamps" or "qos.expected_rate_hz"


class DeliveryMeter:
    """Header stamps of received frames -> :class:`Delivery` (thread-safe, bounded)."""

    def __init__(self, window: int = WINDOW) -> None:
        self._stamps: collections.deque[int] = collections.deque(maxlen=window)
        self._lock = threading.Lock()

    def add(self, stamp_ns: int) -> None:
        """Record one received frame's header stamp (0, i.e. unstamped, is ignored)."""
        if stamp_ns > 0:
            with self._lock:
                self._stamps.append(stamp_ns)

    def reset(self) -> None:
        with self._lock:
            self._stamps.clear()

    def estimate(self, expected_rate_hz: float = 0.0) -> Delivery | None:
        """The delivered share, or None with too few stamps (or too few without pauses)."""
        with self._lock:
            stamps = list(self._stamps)
        gaps = sorted(b - a for a, b in zip(stamps, stamps[1:])
                      if 0 < b - a <= PAUSE_S * 1e9)  # reordered, duplicated, paused: out
        if len(gaps) < MIN_GAPS:
            return None
        if expected_rate_hz > 0:
            period, source = 1e9 / expected_rate_hz, "qos.expected_rate_hz"
        else:
            period, source = gaps[int(PERIOD_PERCENTILE * (len(gaps) - 1))], "header stamps"
        expected = sum(max(1, round(g / period)) for g in gaps)
        return Delivery(1e9 / period, min(1.0, len(gaps) / expected), source)


def transport_level(level: int, message: str, *, topic: str, subscribed: str,
                    incompatible_publishers: int, received_hz: float,
                    delivery: Delivery | None) -> tuple[int, str]:
    """The camera status's level and message with the QoS checks added: WARN when forced
    reliability shuts publishers out, or (frames otherwise fine) under LOW_DELIVERY of the
    camera's frames arrive. ``level``/``message`` come from ``camera_level``."""
    if incompatible_publishers:
        return WARN, (f"qos.reliability is reliable but {incompatible_publishers} publisher(s) "
                      f"on {topic} are best effort: nothing arrives from them (incompatible "
                      "QoS); set qos.reliability to auto or best_effort")
    if level == OK and delivery is not None and delivery.delivered < LOW_DELIVERY:
        return WARN, (f"receiving {received_hz:.1f} Hz: about {delivery.delivered:.0%} of the "
                      f"camera's {delivery.camera_rate_hz:.1f} Hz (from {delivery.source}); "
                      f"frames are lost in transport (subscribed {subscribed}; see the README, "
                      "'Camera QoS')")
    return level, message


__all__ = [
    "GRAPH_POLL_S",
    "CameraSubscription",
    "LOW_DELIVERY",
    "RELIABILITY_CHOICES",
    "Delivery",
    "DeliveryMeter",
    "choose_reliability",
    "image_qos",
    "incompatible",
    "reliability_name",
    "transport_level",
]

"""Counters and meters the node reports on ``/diagnostics``, and the message builders.

The meters are updated from several threads (the camera callback, the clip timer, the inference
thread) and read by the diagnostics timer, so each keeps its own lock; every update is O(1)
amortised, cheap enough for a 30 Hz camera callback.
"""

from __future__ import annotations

import collections
import statistics
import threading
import time
from collections.abc import Mapping
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

OK, WARN, ERROR, STALE = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR,
                          DiagnosticStatus.STALE)


class RateMeter:
    """Events per second over a sliding window of ``window_s`` (monotonic clock), plus a total.

    A window rather than a lifetime average, so a camera that stopped shows 0 Hz after
    ``window_s`` instead of slowly decaying.
    """

    def __init__(self, window_s: float = 5.0) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be positive, got {window_s!r}")
        self.window_s = float(window_s)
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self.total = 0
        self.last: float | None = None  # monotonic time of the last event

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self.total += 1
            self.last = now
            self._times.append(now)
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        """Events per second in the window ending ``now``; 0.0 with fewer than two events."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            if len(self._times) < 2:
                return 0.0
            # n events span n - 1 intervals; measure up to now so a stall lowers the rate.
            span = max(now - self._times[0], self._times[-1] - self._times[0])
            return (len(self._times) - 1) / span if span > 0 else 0.0

    def age(self, now: float | None = None) -> float | None:
        """Seconds since the last event, None before the first."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return None if self.last is None else now - self.last


class LatencyWindow:
    """The last ``size`` latencies (milliseconds): median, 95th percentile and maximum."""

    def __init__(self, size: int = 100) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size!r}")
        self._values: collections.deque[float] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, ms: float) -> None:
        with self._lock:
            self._values.append(float(ms))

    def summary(self, prefix: str = "") -> dict[str, float]:
        """``{"median_ms", "p95_ms", "max_ms", "count"}`` (keys after ``prefix_`` when given);
        empty before the first value."""
        with self._lock:
            values = sorted(self._values)
        if not values:
            return {}
        p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
        out = {"median_ms": statistics.median(values), "p95_ms": p95, "max_ms": values[-1],
               "count": float(len(values))}
        return {f"{prefix}_{k}" if prefix else k: v for k, v in out.items()}


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if value is None:
        return ""
    return str(value)


def make_status(name: str, level: int, message: str, values: Mapping[str, Any],
                hardware_id: str = "") -> DiagnosticStatus:
    """A ``DiagnosticStatus``; ``values`` become KeyValue pairs (floats with 3 decimals)."""
    if level not in (OK, WARN, ERROR, STALE):
        raise ValueError(f"level must be one of OK/WARN/ERROR/STALE bytes, got {level!r}")
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=_text(v)) for k, v in values.items()])


def make_array(stamp, statuses: list[DiagnosticStatus]) -> DiagnosticArray:
    """A ``DiagnosticArray`` stamped ``stamp`` (a ``builtin_interfaces/Time``)."""
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = statuses
    return msg


def camera_level(last_frame_age_s: float | None, max_age_s: float, conversion_errors: int,
                 last_error: str, stalled: str, refused_size: int = 0) -> tuple[int, str]:
    """Level and message of the camera input: WARN when no frame arrived within ``max_age_s``
    (``stalled`` says so) or some frames could not be converted (``refused_size`` of them for
    their declared size: over the pixel cap or under the model's minimum), else OK."""
    if last_frame_age_s is None or last_frame_age_s > max_age_s:
        return WARN, stalled
    if conversion_errors:
        why = f" ({refused_size} refused for their size)" if refused_size else ""
        return WARN, (f"{conversion_errors} frame(s) could not be converted{why}; "
                      f"last: {last_error}")
    return OK, "receiving frames"


def engine_level(remote: bool, healthy: bool, ever_answered: bool, error: str,
                 endpoint: str) -> tuple[int, str]:
    """Level and message of the engine: ERROR while a worker that answered before is
    unreachable, WARN while first connecting or after a failed call, else OK."""
    if remote and not healthy:
        if not ever_answered and not error:
            return WARN, f"connecting to the worker at {endpoint}"
        return ERROR, (f"worker at {endpoint} unavailable: "
                       f"{error or 'it stopped answering the heartbeat'}")
    if error:
        return WARN, error
    return OK, "engine ready"


# Skipped concepts named one per KeyValue on /diagnostics; ~/list_concepts lists them all.
MAX_SKIPPED_LISTED = 16


def store_level(skipped: list | None) -> tuple[int, str, dict[str, Any]]:
    """Level, message and values of the concept store, from the engine's skipped concepts
    (``SkippedConcept`` list; None when a worker has not told yet): WARN while any stored
    concept is skipped, naming them; each reason (with its fix) is a value ``skipped: NAME``."""
    if skipped is None:
        return OK, "skipped concepts not known yet: the worker has not answered", {
            "concepts_skipped": None}
    if not skipped:
        return OK, "every stored concept loaded", {"concepts_skipped": 0}
    names = ", ".join(repr(s.name) for s in skipped[:4]) + (", ..." if len(skipped) > 4 else "")
    message = (f"{len(skipped)} stored concept(s) skipped and never used: {names}; forget "
               "(~/forget_concept), rebind or re-introduce them (the reasons: ~/list_concepts)")
    return WARN, message, {"concepts_skipped": len(skipped),
                           **{f"skipped: {s.name}": s.reason
                              for s in skipped[:MAX_SKIPPED_LISTED]}}


def status_values(status: DiagnosticStatus) -> dict[str, str]:
    """The KeyValue pairs of a status as a dict (for tools and tests reading diagnostics)."""
    return {kv.key: kv.value for kv in status.values}


__all__ = [
    "ERROR",
    "OK",
    "STALE",
    "WARN",
    "LatencyWindow",
    "RateMeter",
    "camera_level",
    "engine_level",
    "make_array",
    "make_status",
    "status_values",
    "store_level",
]

"""Camera-stream plumbing for the node: a frame ring buffer, the clip sampler, a one-slot hand-off.

ROS-free (stdlib + NumPy), so it is tested without DDS and reusable by the bag tools.

Two clocks are involved and are kept apart on purpose:

- ``Frame.stamp_ns`` is the image header stamp (the camera's or the simulation's clock). Time
  *within* the stream is measured on it: the buffer's age bound, the clip window, the even
  spacing of clip frames. Those are properties of the recording and must hold in bag replay at
  any rate and under ``use_sim_time``.
- ``Frame.received_ns`` is the node's own clock when the frame arrived. *Staleness* is measured
  on it: with sim time or a replayed bag, header stamps can lie arbitrarily far in the past
  while the frames are fresh, and a stalled camera keeps its last frames' header stamps
  "recent" relative to each other forever. Only the receive clock tells that nothing has
  arrived lately, so a stalled camera cannot yield fresh-looking clips.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

_LOG = logging.getLogger(__name__)

_NS_PER_S = 1_000_000_000

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Frame:
    """One camera frame: ``rgb`` is ``[H, W, 3] uint8``; times are integer nanoseconds."""

    rgb: np.ndarray  # [H, W, 3] uint8
    stamp_ns: int  # header stamp (camera / sim clock)
    frame_id: str
    received_ns: int  # node clock at arrival, same clock as sample_clip's now_ns


def _seconds(name: str, value: float, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound} seconds, got {value!r}")
    return float(value)


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


# --------------------------------------------------------------------------- frame buffer


class FrameBuffer:
    """Thread-safe ring buffer of frames, sorted by header stamp, bounded by count, bytes and age.

    ``max_frames`` and ``max_bytes`` (the pixel bytes of all buffered frames, None for no byte
    bound) bound memory: after each push the oldest frames are evicted until both hold, except
    that the newest frame is always kept (the node validates that one frame of the largest
    allowed size fits ``max_bytes``). ``max_age_s`` drops frames whose stamp is more than that
    far behind the *newest* stamp in the buffer (header clock, so bag replay keeps its timing).
    Frames arriving out of order are inserted in stamp order. A frame more than
    ``reset_threshold_s`` older than the newest one is taken as a clock jump backwards (a bag
    played in a loop, a simulator reset of ``/clock``, a camera re-synchronising) rather than a
    late frame: the buffer is cleared and starts a new timeline with it, since mixing the two
    timelines would give clips spanning unrelated moments. ``resets`` counts these.
    ``nbytes`` is the pixel bytes held now; ``dropped_by_count``, ``dropped_by_bytes`` and
    ``dropped_by_age`` count evictions by each bound.
    """

    def __init__(self, max_frames: int, max_age_s: float, reset_threshold_s: float = 1.0,
                 max_bytes: int | None = None):
        self.max_frames = _positive_int("max_frames", max_frames)
        self.max_bytes = None if max_bytes is None else _positive_int("max_bytes", max_bytes)
        self.max_age_s = _seconds("max_age_s", max_age_s)
        self.reset_threshold_s = _seconds("reset_threshold_s", reset_threshold_s)
        self._max_age_ns = int(self.max_age_s * _NS_PER_S)
        self._reset_ns = int(self.reset_threshold_s * _NS_PER_S)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # notified on every push
        self._frames: list[Frame] = []  # ascending stamp_ns
        self._nbytes = 0  # sum of rgb.nbytes over _frames
        self.pushed = 0
        self.dropped_by_count = 0
        self.dropped_by_bytes = 0
        self.dropped_by_age = 0
        self.resets = 0

    def push(self, frame: Frame) -> None:
        """Insert ``frame`` in stamp order, then evict the oldest frames beyond the bounds."""
        with self._lock:
            self.pushed += 1
            frames = self._frames
            if frames and frame.stamp_ns < frames[-1].stamp_ns - self._reset_ns:
                _LOG.info(
                    "frame stamp jumped back %.3f s (%d -> %d ns): clock reset or bag loop, "
                    "clearing %d buffered frames", (frames[-1].stamp_ns - frame.stamp_ns) / 1e9,
                    frames[-1].stamp_ns, frame.stamp_ns, len(frames))
                frames.clear()
                self._nbytes = 0
                self.resets += 1
            # Equal stamps keep arrival order (insort inserts after equal keys).
            bisect.insort_right(frames, frame, key=lambda f: f.stamp_ns)
            self._nbytes += frame.rgb.nbytes
            excess = len(frames) - self.max_frames
            if excess > 0:
                self._evict(excess)
                self.dropped_by_count += excess
            if self.max_bytes is not None and self._nbytes > self.max_bytes:
                over, count = self._nbytes - self.max_bytes, 0
                while count < len(frames) - 1 and over > 0:  # the newest frame always stays
                    over -= frames[count].rgb.nbytes
                    count += 1
                self._evict(count)
                self.dropped_by_bytes += count
            oldest_allowed = frames[-1].stamp_ns - self._max_age_ns
            old = bisect.bisect_left(frames, oldest_allowed, key=lambda f: f.stamp_ns)
            if old:
                self._evict(old)
                self.dropped_by_age += old
            self._arrived.notify_all()

    def _evict(self, count: int) -> None:
        """Drop the ``count`` oldest frames (lock held)."""
        self._nbytes -= sum(f.rgb.nbytes for f in self._frames[:count])
        del self._frames[:count]

    def latest(self, n: int) -> list[Frame]:
        """The newest ``n`` frames (fewer if the buffer holds fewer), oldest first."""
        if n <= 0:
            return []
        with self._lock:
            return self._frames[-n:]

    def window(self, seconds: float) -> list[Frame]:
        """Frames stamped within ``seconds`` of the newest stamp (inclusive), oldest first."""
        span_ns = int(_seconds("seconds", seconds, allow_zero=True) * _NS_PER_S)
        with self._lock:
            if not self._frames:
                return []
            start = self._frames[-1].stamp_ns - span_ns
            first = bisect.bisect_left(self._frames, start, key=lambda f: f.stamp_ns)
            return self._frames[first:]

    def up_to(self, stamp_ns: int, timeout_s: float) -> list[Frame] | None:
        """The buffered frames up to and including the one stamped ``stamp_ns``, oldest
        first, once that frame is buffered; waits up to ``timeout_s`` for it (it may arrive
        late or out of order). None when it does not come in time, or when it can no longer
        be here: older than every buffered frame (evicted, or before a clock reset)."""
        deadline = time.monotonic() + _seconds("timeout_s", timeout_s, allow_zero=True)
        with self._arrived:
            while True:
                frames = self._frames
                end = bisect.bisect_right(frames, stamp_ns, key=lambda f: f.stamp_ns)
                if end and frames[end - 1].stamp_ns == stamp_ns:
                    return frames[:end]
                left = deadline - time.monotonic()
                if (frames and end == 0) or left <= 0:
                    return None
                self._arrived.wait(left)

    def snapshot(self) -> list[Frame]:
        """All buffered frames, oldest first (a copy of the list; frames are shared)."""
        with self._lock:
            return list(self._frames)

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._nbytes = 0

    @property
    def nbytes(self) -> int:
        """Pixel bytes of the buffered frames (the ``rgb`` arrays)."""
        with self._lock:
            return self._nbytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)


# --------------------------------------------------------------------------- clip sampling


@dataclass(frozen=True)
class ClipConfig:
    """How clips are cut from the stream (the node's ``clip.*`` parameters).

    ``num_frames`` frames spread over the last ``window_s`` seconds, one clip every
    ``period_s``; frames received more than ``max_age_s`` ago are never used.
    """

    num_frames: int = 4
    window_s: float = 2.0
    max_age_s: float = 1.0
    period_s: float = 1.0

    def __post_init__(self) -> None:
        _positive_int("num_frames", self.num_frames)
        _seconds("window_s", self.window_s, allow_zero=self.num_frames == 1)
        _seconds("max_age_s", self.max_age_s)
        _seconds("period_s", self.period_s)


def sample_clip(
    frames: Sequence[Frame], num_frames: int, window_s: float, now_ns: int, max_age_s: float
) -> list[Frame] | None:
    """Pick up to ``num_frames`` frames evenly spaced in time over the last ``window_s`` seconds.

    Staleness first: a frame with ``now_ns - received_ns > max_age_s`` (node clock) is never
    used; if none is left, the result is None, so a stalled camera produces no clip at all.
    The window is measured on header stamps back from the newest usable frame; the targets are
    evenly spaced from the oldest frame in that window to the newest (so a stream that started
    half a window ago still gets spread-out picks). For each target in turn the nearest frame is
    taken, never one already taken and always leaving enough later frames for the remaining
    targets, so the picks are distinct, in time order, and the last one is the newest frame.
    When fewer than ``num_frames`` usable frames lie in the window, all of them are returned
    (no duplicates: the clip is shorter, and its length is what ``Recognition.num_frames``
    reports).
    """
    _positive_int("num_frames", num_frames)
    span_ns = int(_seconds("window_s", window_s, allow_zero=True) * _NS_PER_S)
    max_age_ns = int(_seconds("max_age_s", max_age_s) * _NS_PER_S)
    usable = sorted(
        (f for f in frames if now_ns - f.received_ns <= max_age_ns), key=lambda f: f.stamp_ns
    )
    if not usable:
        return None
    newest = usable[-1].stamp_ns
    first = bisect.bisect_left(usable, newest - span_ns, key=lambda f: f.stamp_ns)
    candidates = usable[first:]
    count = len(candidates)
    if count <= num_frames:
        return candidates
    if num_frames == 1:
        return [candidates[-1]]
    stamps = [f.stamp_ns for f in candidates]
    lo, hi = stamps[0], stamps[-1]
    picks: list[int] = []
    prev = -1
    for i in range(num_frames):
        target = lo + (i * (hi - lo)) // (num_frames - 1)
        # Allowed indices keep picks distinct and leave one frame per remaining target.
        lowest, highest = prev + 1, count - (num_frames - i)
        j = min(max(bisect.bisect_left(stamps, target), lowest), highest)
        if j > lowest and target - stamps[j - 1] <= stamps[j] - target:
            j -= 1  # the earlier neighbour is at least as close
        picks.append(j)
        prev = j
    return [candidates[j] for j in picks]


# --------------------------------------------------------------------------- hand-off


class LatestSlot(Generic[T]):
    """A queue of one between a producer (the executor thread) and a consumer (the worker).

    The newest offer wins: an item not yet taken is replaced and counted in ``skipped``, so the
    consumer always works on the most recent clip and inference never builds a backlog.
    ``take`` blocks until an item arrives, the timeout passes, or the slot is closed; it returns
    None in the latter two cases (``closed`` tells them apart). After ``close()`` the pending
    item is discarded and further offers are ignored, so shutdown never starts new work.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._has_item = False
        self._closed = False
        self.offered = 0
        self.taken = 0
        self.skipped = 0

    def offer(self, item: T) -> bool:
        """Store ``item``; True when it replaced one the consumer had not taken yet."""
        with self._cond:
            if self._closed:
                _LOG.debug("offer to a closed slot ignored")
                return False
            self.offered += 1
            replaced = self._has_item
            if replaced:
                self.skipped += 1
            self._item, self._has_item = item, True
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """The pending item, waiting up to ``timeout`` seconds (None = until one arrives)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._has_item and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._closed:
                return None
            item, self._item, self._has_item = self._item, None, False
            self.taken += 1
            return item

    def close(self) -> None:
        """Discard any pending item, refuse further offers, and wake every waiting ``take``."""
        with self._cond:
            self._closed = True
            self._item, self._has_item = None, False
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    @property
    def pending(self) -> bool:
        with self._cond:
            return self._has_item

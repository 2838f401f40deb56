"""Frame buffer, clip sampler and one-slot hand-off (ego_ros.stream), without ROS."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ego_ros.stream import ClipConfig, Frame, FrameBuffer, LatestSlot, sample_clip

MS = 1_000_000
S = 1_000_000_000
_PIXELS = np.zeros((2, 2, 3), np.uint8)  # [H, W, 3]


def frame(stamp_ns: int, received_ns: int | None = None, frame_id: str = "cam") -> Frame:
    return Frame(_PIXELS, stamp_ns, frame_id, stamp_ns if received_ns is None else received_ns)


def stamps(frames: list[Frame] | None) -> list[int]:
    assert frames is not None
    return [f.stamp_ns for f in frames]


# --------------------------------------------------------------------------- FrameBuffer


def test_buffer_bounded_by_count_keeps_newest():
    buf = FrameBuffer(max_frames=5, max_age_s=100.0)
    for i in range(12):
        buf.push(frame(i * 10 * MS))
    assert len(buf) == 5
    assert stamps(buf.snapshot()) == [i * 10 * MS for i in range(7, 12)]
    assert (buf.pushed, buf.dropped_by_count, buf.dropped_by_age) == (12, 7, 0)


def sized(stamp_ns: int, side: int) -> Frame:
    """A frame of ``side`` x ``side`` pixels: ``3 * side**2`` bytes."""
    return Frame(np.zeros((side, side, 3), np.uint8), stamp_ns, "cam", stamp_ns)


def test_buffer_bounded_by_bytes_evicts_oldest_and_counts_them():
    buf = FrameBuffer(max_frames=100, max_age_s=100.0, max_bytes=10_000)
    for i in range(10):  # 10 x 3,072 bytes: three fit in 10,000
        buf.push(sized(i * MS, 32))
        assert buf.nbytes == 3072 * len(buf) <= 10_000
    assert stamps(buf.snapshot()) == [7 * MS, 8 * MS, 9 * MS]
    assert (buf.dropped_by_bytes, buf.dropped_by_count, buf.dropped_by_age) == (7, 0, 0)
    buf.push(sized(10 * MS, 50))  # 7,500 bytes: only the newest and none before it fit
    assert stamps(buf.snapshot()) == [10 * MS] and buf.nbytes == 7500
    buf.push(sized(11 * MS, 10))  # 300 bytes: fits beside it
    assert stamps(buf.snapshot()) == [10 * MS, 11 * MS] and buf.nbytes == 7800


def test_buffer_keeps_the_newest_frame_even_over_its_byte_budget():
    buf = FrameBuffer(max_frames=10, max_age_s=100.0, max_bytes=1000)
    buf.push(sized(1 * MS, 8))
    buf.push(sized(2 * MS, 40))  # 4,800 bytes, alone over the budget: kept, the older one goes
    assert stamps(buf.snapshot()) == [2 * MS] and buf.nbytes == 4800
    buf.push(sized(3 * MS, 8))  # now the big one is the oldest, and is evicted
    assert stamps(buf.snapshot()) == [3 * MS] and buf.nbytes == 192


def test_buffer_byte_count_follows_every_eviction_kind_and_clear():
    buf = FrameBuffer(max_frames=3, max_age_s=0.5, reset_threshold_s=1.0, max_bytes=10**6)
    for t in (0, 100, 200, 300):  # the first goes by count
        buf.push(sized(t * MS, 10))
    assert len(buf) == 3 and buf.nbytes == 900 and buf.dropped_by_count == 1
    buf.push(sized(900 * MS, 20))  # 100-300 ms are now more than 0.5 s older: gone by age
    assert stamps(buf.snapshot()) == [900 * MS] and buf.nbytes == 1200
    buf.push(sized(50 * MS, 10))  # 0.85 s back, under the 1 s reset threshold: late, too old
    assert buf.nbytes == 1200
    buf.push(sized(9 * S, 10))
    buf.push(sized(1 * S, 10))  # 8 s back: a clock reset, the buffer restarts with it
    assert buf.resets == 1 and stamps(buf.snapshot()) == [1 * S] and buf.nbytes == 300
    buf.clear()
    assert buf.nbytes == 0 and len(buf) == 0
    assert FrameBuffer(2, 1.0).max_bytes is None  # no byte bound unless asked


def test_buffer_bounded_by_age_relative_to_newest_stamp():
    buf = FrameBuffer(max_frames=100, max_age_s=0.5)
    for i in range(11):  # 0.0 .. 1.0 s, 100 ms apart
        buf.push(frame(i * 100 * MS))
    assert stamps(buf.snapshot()) == [i * 100 * MS for i in range(5, 11)]  # 0.5 .. 1.0 s
    assert buf.dropped_by_age == 5 and buf.dropped_by_count == 0


def test_buffer_sorts_out_of_order_frames_and_drops_late_stale_ones():
    buf = FrameBuffer(max_frames=10, max_age_s=0.3, reset_threshold_s=1.0)
    for t in (100, 300, 200, 250, 400):
        buf.push(frame(t * MS))
    assert stamps(buf.snapshot()) == [t * MS for t in (100, 200, 250, 300, 400)]
    buf.push(frame(50 * MS))  # late, beyond max_age of the newest (400 ms) -> dropped by age
    assert stamps(buf.snapshot())[0] == 100 * MS
    assert buf.dropped_by_age == 1 and buf.resets == 0


def test_buffer_latest_and_window():
    buf = FrameBuffer(max_frames=50, max_age_s=10.0)
    for i in range(20):
        buf.push(frame(i * 100 * MS))
    assert stamps(buf.latest(3)) == [1700 * MS, 1800 * MS, 1900 * MS]
    assert buf.latest(0) == []
    assert len(buf.latest(100)) == 20
    assert stamps(buf.window(0.25)) == [1700 * MS, 1800 * MS, 1900 * MS]
    assert stamps(buf.window(0.3)) == [1600 * MS, 1700 * MS, 1800 * MS, 1900 * MS]  # inclusive
    assert FrameBuffer(3, 1.0).window(1.0) == []


def test_buffer_clears_on_clock_jump_backwards():
    buf = FrameBuffer(max_frames=50, max_age_s=10.0, reset_threshold_s=1.0)
    for i in range(5):
        buf.push(frame(100 * S + i * 100 * MS))
    buf.push(frame(100 * S - 500 * MS))  # half a second late: a late frame, kept
    assert len(buf) == 6 and buf.resets == 0
    buf.push(frame(2 * S))  # bag looped / sim time reset: new timeline
    assert stamps(buf.snapshot()) == [2 * S]
    assert buf.resets == 1
    buf.push(frame(2 * S + 100 * MS))
    assert stamps(buf.snapshot()) == [2 * S, 2 * S + 100 * MS]
    buf.clear()
    assert len(buf) == 0


def test_buffer_push_is_thread_safe():
    buf = FrameBuffer(max_frames=1000, max_age_s=1000.0)

    def producer(offset: int) -> None:
        for i in range(200):
            buf.push(frame((i * 4 + offset) * MS))

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = stamps(buf.snapshot())
    assert buf.pushed == 800 and len(got) == 800
    assert got == sorted(got)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_frames": 0, "max_age_s": 1.0}, "max_frames"),
        ({"max_frames": 3, "max_age_s": 0.0}, "max_age_s"),
        ({"max_frames": 3, "max_age_s": 1.0, "reset_threshold_s": float("nan")},
         "reset_threshold_s"),
        ({"max_frames": 3, "max_age_s": 1.0, "max_bytes": 0}, "max_bytes"),
        ({"max_frames": 3, "max_age_s": 1.0, "max_bytes": 1.0e9}, "max_bytes"),
    ],
)
def test_buffer_rejects_bad_bounds(kwargs, field):
    with pytest.raises(ValueError, match=field):
        FrameBuffer(**kwargs)


# --------------------------------------------------------------------------- ClipConfig


def test_clip_config_valid_and_frozen():
    cfg = ClipConfig(num_frames=8, window_s=2.0, max_age_s=0.5, period_s=0.25)
    assert cfg.num_frames == 8
    with pytest.raises(AttributeError):
        cfg.num_frames = 3  # type: ignore[misc]
    assert ClipConfig(num_frames=1, window_s=0.0).window_s == 0.0  # one frame needs no window


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"num_frames": 0}, "num_frames.*0"),
        ({"num_frames": 2.5}, "num_frames.*2.5"),
        ({"num_frames": True}, "num_frames"),
        ({"num_frames": 4, "window_s": 0.0}, "window_s.*0.0"),
        ({"window_s": -1.0}, "window_s.*-1.0"),
        ({"max_age_s": float("inf")}, "max_age_s.*inf"),
        ({"period_s": 0}, "period_s.*0"),
        ({"period_s": "1"}, "period_s.*'1'"),
    ],
)
def test_clip_config_errors_name_field_and_value(kwargs, text):
    with pytest.raises(ValueError, match=text):
        ClipConfig(**kwargs)


# --------------------------------------------------------------------------- sample_clip


def test_sample_clip_evenly_spaced_on_regular_stream():
    frames = [frame(i * 100 * MS) for i in range(31)]  # 0 .. 3 s at 10 Hz
    clip = sample_clip(frames, num_frames=5, window_s=2.0, now_ns=3 * S, max_age_s=10.0)
    assert stamps(clip) == [1000 * MS, 1500 * MS, 2000 * MS, 2500 * MS, 3000 * MS]


def test_sample_clip_nearest_to_targets_on_irregular_stamps():
    # Targets over [0, 900] ms with 4 frames: 0, 300, 600, 900.
    ts = [0, 90, 180, 320, 410, 560, 700, 880, 900]
    frames = [frame(t * MS) for t in reversed(ts)]  # input order must not matter
    clip = sample_clip(frames, num_frames=4, window_s=5.0, now_ns=1 * S, max_age_s=10.0)
    assert stamps(clip) == [0, 320 * MS, 560 * MS, 900 * MS]


def test_sample_clip_picks_are_distinct_when_frames_cluster():
    # Burst near the end: nearest-to-target alone would take 950 twice.
    ts = [0, 940, 950, 960, 1000]
    clip = sample_clip([frame(t * MS) for t in ts], 4, 1.0, now_ns=1 * S, max_age_s=10.0)
    got = stamps(clip)
    assert len(set(got)) == 4 and got == sorted(got)
    assert got[0] == 0 and got[-1] == 1000 * MS


def test_sample_clip_returns_all_frames_when_fewer_than_requested():
    frames = [frame(t * MS) for t in (100, 200, 300)]
    clip = sample_clip(frames, num_frames=8, window_s=1.0, now_ns=300 * MS, max_age_s=1.0)
    assert stamps(clip) == [100 * MS, 200 * MS, 300 * MS]
    one = sample_clip(frames, num_frames=1, window_s=0.0, now_ns=300 * MS, max_age_s=1.0)
    assert stamps(one) == [300 * MS]


def test_sample_clip_window_limits_to_recent_stamps():
    frames = [frame(i * 100 * MS) for i in range(50)]  # 0 .. 4.9 s
    clip = sample_clip(frames, num_frames=3, window_s=1.0, now_ns=5 * S, max_age_s=10.0)
    assert stamps(clip) == [3900 * MS, 4400 * MS, 4900 * MS]


def test_sample_clip_never_uses_stale_frames_and_stalled_camera_gives_none():
    frames = [frame(i * 100 * MS) for i in range(20)]  # received 0 .. 1.9 s
    clip = sample_clip(frames, num_frames=4, window_s=5.0, now_ns=2 * S, max_age_s=0.5)
    assert min(stamps(clip)) >= 1500 * MS  # received at most 0.5 s before now
    # Camera stalls: ten seconds later nothing is fresh, however recent the stamps look.
    assert sample_clip(frames, 4, 5.0, now_ns=12 * S, max_age_s=0.5) is None
    assert sample_clip([], 4, 5.0, now_ns=0, max_age_s=0.5) is None


def test_sample_clip_staleness_uses_receive_clock_not_stamps():
    # Bag replay / sim time: header stamps from 2021, received just now on the node clock.
    base = 1_600_000_000 * S
    now = 1_800_000_000 * S
    frames = [frame(base + i * 100 * MS, received_ns=now - (9 - i) * 10 * MS) for i in range(10)]
    clip = sample_clip(frames, num_frames=2, window_s=0.9, now_ns=now, max_age_s=0.5)
    assert stamps(clip) == [base, base + 900 * MS]  # window on stamps, freshness on receipt


def test_sample_clip_validates_arguments():
    with pytest.raises(ValueError, match="num_frames"):
        sample_clip([frame(0)], 0, 1.0, 0, 1.0)
    with pytest.raises(ValueError, match="max_age_s"):
        sample_clip([frame(0)], 1, 1.0, 0, -1.0)


# --------------------------------------------------------------------------- LatestSlot


def test_latest_slot_newest_wins_and_counts_skips():
    slot: LatestSlot[int] = LatestSlot()
    assert slot.offer(1) is False
    assert slot.offer(2) is True
    assert slot.offer(3) is True
    assert slot.take(timeout=0) == 3
    assert slot.take(timeout=0.01) is None  # empty: times out
    assert (slot.offered, slot.skipped, slot.taken) == (3, 2, 1)


def test_latest_slot_close_wakes_waiter_and_refuses_offers():
    slot: LatestSlot[str] = LatestSlot()
    result: list[str | None] = []
    waiter = threading.Thread(target=lambda: result.append(slot.take(timeout=10.0)))
    waiter.start()
    slot.close()
    waiter.join(timeout=5.0)
    assert not waiter.is_alive() and result == [None]
    assert slot.closed
    assert slot.offer("late") is False and not slot.pending
    assert slot.take(timeout=0) is None


def test_latest_slot_consumer_thread_sees_newest_item_without_backlog():
    slot: LatestSlot[int] = LatestSlot()
    seen: list[int] = []
    busy = threading.Event()  # the consumer is "running inference" on its first item
    release = threading.Event()
    second = threading.Event()

    def consumer() -> None:
        while (item := slot.take(timeout=5.0)) is not None:
            seen.append(item)
            if len(seen) == 1:
                busy.set()
                release.wait(5.0)
            else:
                second.set()

    worker = threading.Thread(target=consumer)
    worker.start()
    slot.offer(0)
    assert busy.wait(5.0)
    for i in range(1, 101):  # the producer floods while the consumer is busy
        slot.offer(i)
    release.set()
    assert second.wait(5.0)
    slot.close()
    worker.join(timeout=5.0)
    assert not worker.is_alive()
    assert seen == [0, 100]  # the 99 clips offered in between were skipped, not queued
    assert slot.skipped == 99 and slot.taken == 2


def test_up_to_a_stamp_waits_for_late_frames_and_gives_up_on_evicted_ones():
    import time

    buf = FrameBuffer(max_frames=4, max_age_s=10.0)
    for s in (1, 2, 4):
        buf.push(frame(s * 10**9))
    assert [f.stamp_ns for f in buf.up_to(2 * 10**9, 0.0)] == [10**9, 2 * 10**9]
    # a frame older than the newest, arriving late (out of order): waited for, not given up
    late = threading.Timer(0.05, buf.push, args=(frame(3 * 10**9),))
    late.start()
    started = time.monotonic()
    got = buf.up_to(3 * 10**9, 5.0)
    assert [f.stamp_ns for f in got] == [10**9, 2 * 10**9, 3 * 10**9]
    assert time.monotonic() - started < 2.0  # woken by the push, not by the timeout
    late.join()
    assert buf.up_to(5 * 10**9, 0.05) is None  # never arrives
    buf.push(frame(5 * 10**9))  # four frames max: the one at 1 s is evicted
    started = time.monotonic()
    assert buf.up_to(10**9, 5.0) is None  # older than everything buffered: no wait
    assert time.monotonic() - started < 1.0
    assert FrameBuffer(2, 1.0).up_to(10**9, 0.0) is None  # empty

"""The executor every ego_ros node spins with (a workaround for an rclpy 7.1 executor bug), and
how a node's ``main`` spins it until Ctrl-C or SIGTERM.

    stop_signals() -> Event set by SIGINT/SIGTERM --> spin_until(executor, event) returns
    --> main stops the node's own threads --> executor, node, rclpy context shut down

rclpy's default signal handlers shut the context down inside the signal handler, before the
node's threads have stopped, so a thread that publishes a moment later fails ("publisher's
context is invalid"). With ``rclpy.init(signal_handler_options=SignalHandlerOptions.NO)`` and
these two helpers the order is the node's own.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from rclpy.executors import (
    ConditionReachedException,
    ExternalShutdownException,
    MultiThreadedExecutor,
    ShutdownException,
    TimeoutException,
)


class EgoExecutor(MultiThreadedExecutor):
    """A ``MultiThreadedExecutor`` that hands each ready callback to its pool only once.

    rclpy 7.1.x (Jazzy) yields a callback again while it still waits in the pool's queue and
    submits it again, without waiting in between: the spinning thread holds the GIL in a tight
    loop and the pool threads barely get to start anything (ros2/rclpy#1452, fixed upstream
    by ros2/rclpy#1547). With a model sharing the cores, camera callbacks and timers then stall
    for seconds. Here a callback still queued is not submitted again; the spinning thread
    waits briefly for a pool thread to take it instead.
    """

    def __init__(self, num_threads: int = 6, **kwargs: Any) -> None:
        super().__init__(num_threads=num_threads, **kwargs)
        self._queued: set[Any] = set()
        self._taken = threading.Condition()

    def _spin_once_impl(self, timeout_sec: float | None = None,
                        wait_condition: Callable[[], bool] = lambda: False) -> None:
        try:
            handler, _, _ = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException,
                ConditionReachedException):
            return
        with self._taken:
            if handler in self._queued:
                self._taken.wait(0.01)  # let a pool thread start it rather than queue it twice
                return
            self._queued.add(handler)

        def run() -> None:
            with self._taken:
                self._queued.discard(handler)
                self._taken.notify_all()
            handler()

        self._executor.submit(run)
        self._futures.append(handler)
        for future in self._futures[:]:
            if future.done():
                self._futures.remove(future)
                future.result()  # re-raise a callback's exception here, as rclpy does


@contextlib.contextmanager
def stop_signals(signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)
                 ) -> Iterator[threading.Event]:
    """While the block runs, SIGINT and SIGTERM set the yielded Event (instead of raising
    KeyboardInterrupt or ending the process); the previous handlers come back afterwards.
    Outside the main thread no handler can be installed: the Event is then never set by a
    signal."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in signals}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def spin_until(executor: EgoExecutor, stop: threading.Event, poll_s: float = 0.1) -> None:
    """Spin ``executor`` until ``stop`` is set or its context is shut down. Each wait lasts at
    most ``poll_s``, so a signal handler (which Python runs only between waits) is seen at
    once."""
    while not stop.is_set() and executor.context.ok():
        executor.spin_once(timeout_sec=poll_s)

"""A simulated clock and one scheduler thread for many devices.

Simulated time runs `speed` times faster than wall time. Every device action is a heap entry
keyed by its simulated due time; one thread pops and runs them, so a fleet of thousands of
devices needs one thread, not thousands. Actions run at their *scheduled* simulated time (a
fix due at t=30 s is stamped t=30 s even if the thread got to it late), which keeps device
timestamps exact and runs reproducible; how late the thread ran is reported as lag.
"""

from __future__ import annotations

import heapq
import itertools
import math
import queue
import threading
import time
from collections.abc import Callable, Hashable
from typing import Final

from nabij.clock import Timescale, wall_clock_ms

Action = Callable[[float], float | None]
"""Runs at its due simulated time (seconds); returns the next due time, or None to stop."""

# Longest single wait, so that an external stop event is noticed promptly.
_MAX_WAIT_S: Final = 0.2


class SimClock:
    """Maps simulated seconds since the start to wall time and to device epoch milliseconds.

    Device time is nabij's clock on the scenario's timescale (`nabij.clock.Timescale`): at
    scenario time 0 it is `timescale.at(wall ms of the start)`, and it advances `speed` ms per
    wall ms from there, so a nabij configured with the same speed and anchor reads the same time
    the devices stamp. Without an anchor the run's start is the anchor (device time starts at the
    true time); `start_ms` fixes device time at scenario time 0 outright (tests)."""

    def __init__(
        self,
        speed: float = 1.0,
        start_ms: int | None = None,
        *,
        anchor_ms: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        # Anchored at the start when no anchor is given (see `start`).
        self.timescale: Final = Timescale(speed, 0 if anchor_ms is None else anchor_ms)
        self.speed: Final = speed
        self._anchored = anchor_ms is not None
        self._start_fixed = start_ms is not None
        self.start_ms = wall_ms() if start_ms is None else start_ms
        """Device epoch ms at scenario time 0 (nabij's clock then, with an anchor)."""
        self._monotonic = monotonic
        self._wall_ms = wall_ms
        self._wall_start: float | None = None

    def start(self) -> None:
        self._wall_start = self._monotonic()
        wall_start_ms = self._wall_ms()
        if not self._start_fixed:
            self.start_ms = self.timescale.at(wall_start_ms) if self._anchored else wall_start_ms

    @property
    def started(self) -> bool:
        return self._wall_start is not None

    def elapsed_s(self) -> float:
        """Simulated seconds since `start()` (0 before it)."""
        if self._wall_start is None:
            return 0.0
        return (self._monotonic() - self._wall_start) * self.speed

    def wall_elapsed_s(self) -> float:
        return 0.0 if self._wall_start is None else self._monotonic() - self._wall_start

    def ms_at(self, sim_s: float) -> int:
        """Device epoch milliseconds at simulated time `sim_s`."""
        return self.start_ms + round(sim_s * 1000.0)

    def now_ms(self) -> int:
        return self.ms_at(self.elapsed_s())


class Scheduler:
    """Runs keyed actions at simulated due times on the calling thread (see `run`).

    `at`, `cancel` and the actions themselves belong to the scheduler thread; other threads
    (paho's network loops) hand work over with `post`, which also wakes the scheduler.
    """

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Hashable, int, Action]] = []
        self._generation: dict[Hashable, int] = {}
        self._order = itertools.count()
        self._posted: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self.max_lag_s = 0.0
        self.actions_run = 0
        self.logical_s = 0.0
        """Due time of the action running or last run: the simulated "now" of the actions."""

    def at(self, due_s: float, key: Hashable, action: Action) -> None:
        """Run `action` at simulated `due_s`, replacing whatever was pending under `key`."""
        generation = self._generation.get(key, 0) + 1
        self._generation[key] = generation
        heapq.heappush(self._heap, (due_s, next(self._order), key, generation, action))

    def earliest_due_s(self) -> float:
        """The earliest time a new action may be given without running anything out of order:
        never before an action already run, never later than the real simulated now."""
        pending = self._heap[0][0] if self._heap else math.inf
        return max(self.logical_s, min(self.clock.elapsed_s(), pending))

    def cancel(self, key: Hashable) -> None:
        self._generation[key] = self._generation.get(key, 0) + 1

    def post(self, work: Callable[[], None]) -> None:
        """Thread-safe: run `work` on the scheduler thread as soon as possible."""
        self._posted.put(work)
        self._wake.set()

    def run(self, until_s: float, stop: threading.Event | None = None) -> None:
        """Run due actions until simulated `until_s` (inclusive) or until `stop` is set."""
        if not self.clock.started:
            self.clock.start()
        while stop is None or not stop.is_set():
            self._drain_posted()
            self._drop_stale()
            now = self.clock.elapsed_s()
            due = self._heap[0][0] if self._heap else math.inf
            if due > until_s:
                if now >= until_s:
                    return
                self._sleep(until_s - now)
                continue
            if now < due:
                self._sleep(due - now)
                continue
            due_s, _, key, _, action = heapq.heappop(self._heap)
            self.max_lag_s = max(self.max_lag_s, now - due_s)
            self.actions_run += 1
            self.logical_s = due_s
            next_due = action(due_s)
            if next_due is not None:
                self.at(next_due, key, action)

    def _sleep(self, sim_s: float) -> None:
        self._wake.wait(min(sim_s / self.clock.speed, _MAX_WAIT_S))
        self._wake.clear()

    def _drain_posted(self) -> None:
        while True:
            try:
                work = self._posted.get_nowait()
            except queue.Empty:
                return
            work()

    def _drop_stale(self) -> None:
        while self._heap and self._generation.get(self._heap[0][2]) != self._heap[0][3]:
            heapq.heappop(self._heap)

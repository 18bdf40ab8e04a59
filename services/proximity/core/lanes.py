"""Bounded, fair ingest lanes and the bookkeeping of what they refuse (pure; the shell locks).

A lane holds one FIFO per device and hands out messages round-robin, one per device per turn:
a device with 10,000 messages waiting gets no more turns than one with a single fix, so a flood
on one device's topic cannot push another device's fixes back.

Two bounds, two answers:
- per device (`device_max` waiting, and `device_rate` a second beyond a burst of `device_max`):
  beyond either a device's surplus is refused (`flood`), acknowledged and counted, and
  dead-lettered once per burst. Refusal, not backpressure: holding the connection for one device
  would hold every other device's messages behind it on the same TCP stream.
  While a connection is still catching up on what the broker held for it (before its catch-up
  marker is back), only surplus that is not even JSON is refused: a backlog after a restart is a
  burst of valid messages that well-behaved devices sent over minutes or hours.
- per lane (`lane_max` messages, `lane_max_bytes`): beyond it the reader waits for room and does
  not read its socket, so the broker holds the rest (backpressure; nothing is acknowledged,
  nothing lost). Memory stays bounded whatever arrives.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Generic, Literal, TypeVar

from msgspec import Struct

T = TypeVar("T")
_UNBOUNDED: Final = float("inf")
Verdict = Literal["admit", "refuse", "wait"]


@dataclass(frozen=True, slots=True)
class LaneLimits:
    device_max: int
    lane_max: int
    lane_max_bytes: int
    device_rate: float = float("inf")
    """Messages a second a device may sustain once its burst allowance (`device_max`) is spent."""


class Allowance(Struct, gc=False):
    """One key's token bucket, changed in place (this runs for every message). It lives as long
    as its device, so it is not tracked by the garbage collector: a list each (as before) put
    ten thousand objects in every full collection's walk (services/shell/heap.py)."""

    tokens: float
    """Messages the key may still send at once."""
    at_ms: int
    """When `tokens` was worked out."""


class FairLane(Generic[T]):
    """Per-key FIFO queues drained round-robin; counts messages and payload bytes."""

    def __init__(self, limits: LaneLimits) -> None:
        self._limits = limits
        self._queues: dict[str, deque[tuple[T, int]]] = {}
        self._ring: deque[str] = deque()
        """Keys with something queued, in the order of their next turn."""
        self._allowance: dict[str, Allowance] = {}
        self._full = float(limits.device_max)
        self._rate = limits.device_rate
        self.count = 0
        self.bytes = 0

    def __len__(self) -> int:
        return self.count

    def depth(self, key: str) -> int:
        queue = self._queues.get(key)
        return len(queue) if queue is not None else 0

    def verdict(
        self,
        key: str,
        payload: bytes,
        now_ms: int,
        *,
        live: bool,
        plausible: Callable[[bytes], bool],
    ) -> Verdict:
        """Whether a message with `payload` for `key` may join now. Live, a device is held to
        its bounds; catching up on a backlog, only its surplus that is not `plausible` is
        refused (asked only then: it may cost a decode). The payload, not a closure over it:
        this runs for every message, and a closure is an allocation each."""
        limits = self._limits
        size = len(payload)
        queue = self._queues.get(key)  # `depth` inlined: this runs for every message
        full = queue is not None and len(queue) >= limits.device_max
        if live and (full or not self._spend(key, now_ms)):
            return "refuse"
        if full and not live and not plausible(payload):
            return "refuse"
        if self.count and (
            self.count >= limits.lane_max or self.bytes + size > limits.lane_max_bytes
        ):
            return "wait"
        return "admit"

    def _spend(self, key: str, now_ms: int) -> bool:
        """Take one message from the key's allowance (a token bucket holding `device_max`)."""
        bucket = self._allowance.get(key)
        if bucket is None:
            bucket = self._allowance[key] = Allowance(self._full, now_ms)
        elif bucket.at_ms != now_ms:  # a read's messages share one time: refilled once a read
            # min(full, level) without its call: this runs for every message (a NaN is full).
            level = bucket.tokens + (now_ms - bucket.at_ms) * self._rate / 1000
            bucket.tokens = level if level < self._full else self._full
            bucket.at_ms = now_ms
        elif self._rate == _UNBOUNDED:  # unbounded: no refill needed to stay full
            return True
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def push(self, key: str, item: T, size: int) -> None:
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        if not queue:
            self._ring.append(key)
        queue.append((item, size))
        self.count += 1
        self.bytes += size

    def take(
        self, limit: int, max_bytes: float = float("inf"), *, at_least_one: bool = True
    ) -> list[T]:
        """Up to `limit` items and `max_bytes` of payload (but one item even if larger, unless
        not `at_least_one`), one per key per turn, each key's items in arrival order."""
        out: list[T] = []
        taken = 0
        ring, queues = self._ring, self._queues
        while ring and len(out) < limit:
            key = ring.popleft()
            queue = queues[key]
            if (out or not at_least_one) and taken + queue[0][1] > max_bytes:
                ring.appendleft(key)  # its turn comes first in the next batch
                break
            item, size = queue.popleft()
            taken += size
            out.append(item)
            self.count -= 1
            self.bytes -= size
            if queue:
                ring.append(key)
            else:
                del queues[key]
        return out


@dataclass(slots=True)
class Burst:
    """Messages refused for one reason (and one device, for `flood`) without a pause."""

    reason: str
    device_id: str | None
    topic: str
    """Topic of the first refused message."""
    sample: bytes
    """Start of the first refused message's payload (`SAMPLE_BYTES` at most)."""
    first_ms: int
    last_ms: int
    count: int = 1


SAMPLE_BYTES = 1024


class Refusals:
    """Aggregates refused messages into bursts, and says when a burst is to be reported.

    A burst ends after `quiet_ms` without a refusal of its kind; one still running is reported
    every `report_every_ms` and goes on as a new burst. Keys are the reason and, for `flood`,
    the device (a known one): how many bursts can be open is bounded by the orders, not by what
    a client invents.
    """

    def __init__(self, *, quiet_ms: int, report_every_ms: int) -> None:
        self._quiet_ms = quiet_ms
        self._every_ms = report_every_ms
        self._open: dict[tuple[str, str | None], Burst] = {}

    def add(
        self, reason: str, device_id: str | None, topic: str, payload: bytes, now_ms: int
    ) -> None:
        burst = self._open.get((reason, device_id))
        if burst is None:
            self._open[(reason, device_id)] = Burst(
                reason, device_id, topic, payload[:SAMPLE_BYTES], now_ms, now_ms
            )
        else:
            burst.count += 1
            burst.last_ms = now_ms

    def due(self, now_ms: int) -> list[Burst]:
        """Bursts that ended, and running ones due for a report; both are forgotten here."""
        done = [
            key
            for key, b in self._open.items()
            if now_ms - b.last_ms >= self._quiet_ms or now_ms - b.first_ms >= self._every_ms
        ]
        return [self._open.pop(key) for key in done]

    def all(self) -> list[Burst]:
        """Every open burst (at shutdown)."""
        bursts = list(self._open.values())
        self._open.clear()
        return bursts

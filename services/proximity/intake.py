"""Where the proximity service's MQTT readers put messages and its main thread takes batches.

Two connections feed two lanes (`services.proximity.core.lanes`):
- bulk: every uplink topic (fix, event, status), in the order each device sent them. It is the
  reliable path: everything is processed from here, acknowledged after its commit.
- fast: the event topics again, on a connection of their own. Of what it reads, only a safety
  event (`aware_button`, `strap_tamper`) of a known device is kept; it is processed at once,
  ahead of the bulk lane in every batch, and acknowledged after its commit like the rest.
  Anything else it reads is acknowledged and left to its copy on the bulk connection.
  A press thus comes twice: the engine takes a safety event whenever it arrives and moves no
  sequence for it, and its signal id makes the second copy a duplicate for the gateway.

Cheap refusals happen here, in the reader's thread, before anything is queued: a topic that is
not a device uplink (`unknown_topic`), a device in no order (`unknown_device`), and a device's
surplus over its bound (`flood`). They are acknowledged at once, counted in
`nabij_messages_refused_total`, and dead-lettered once per burst (`letters`), never per message.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

import msgspec

from nabij.contract import SAFETY_EVENTS, Topics
from services.proximity.core.ingest import Rejection
from services.proximity.core.lanes import Burst, FairLane, LaneLimits, Refusals
from services.shell import metrics
from services.shell.mqtt_ingest import Delivery
from services.shell.mqtt_packets import Publish

SERVICE: Final = "proximity"
LaneName = Literal["fast", "bulk"]
UPLINK_KINDS: Final = frozenset({"fix", "event", "status"})
BURST_QUIET_MS: Final = 1_000
# Payload bytes a batch takes at most (beyond its first message): a batch is the unit a press
# may have to wait for, and one backlog of 1,000 fixes (~150 KB) is as long as 1,000 live fixes.
# Counted in messages alone, 2,000 backlogs made one batch of 2 million fixes (a press waited 42 s
# behind it in bench.storm); 64 KiB is about 400 live fixes, a few ms of Redis round trip each.
BATCH_MAX_BYTES: Final = 64 * 1024


# Not frozen, like `Publish`: one is made per message, and frozen costs ~6x in __init__.
@dataclass(slots=True)
class Received:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received_ms: int
    # Acks are only valid on the connection that delivered the message; after a reconnect the
    # broker redelivers unacked messages under new packet ids.
    connection: int


class _SafetyProbe(msgspec.Struct):
    device_id: str
    type: str


_probe: Final = msgspec.json.Decoder(_SafetyProbe)
_syntax: Final = msgspec.json.Decoder(msgspec.Raw)


def plausible(payload: bytes) -> bool:
    """Whether a payload is a JSON object or array at all (junk is not)."""
    if payload.lstrip()[:1] not in (b"{", b"["):
        return False
    try:
        _syntax.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return False
    return True


def safety_event_of(payload: bytes, device_id: str) -> bool:
    """Whether an event payload is a press or a tamper of `device_id` (nothing else checked)."""
    try:
        probe = _probe.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return False
    return probe.type in SAFETY_EVENTS and probe.device_id == device_id


_WHY: Final = {
    "flood": (
        "the device sent faster than proximity.device_rate_max a second beyond a burst of "
        "{max}, or had {max} messages waiting (proximity.device_queue_max)"
    ),
    "unknown_device": "the device is in no order",
    "unknown_topic": "the topic is not a device uplink",
}


def letter(burst: Burst, device_max: int) -> tuple[Received, Rejection]:
    """The dead letter of one burst: the first message's topic and payload start, the count."""
    first, last = (
        datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
        for ms in (burst.first_ms, burst.last_ms)
    )
    why = _WHY[burst.reason].format(max=device_max)
    detail = (
        f"{burst.count} message(s) refused at intake from {first} to {last}: {why}. "
        "Payload: the start of the first one."
    )
    item = Received(burst.topic, burst.sample, 0, 0, burst.first_ms, 0)
    return item, Rejection(burst.reason, detail, burst.device_id)


class Intake:
    """The two lanes behind one lock; readers deliver, the service's thread drains."""

    def __init__(
        self,
        topics: Topics,
        is_known: Callable[[str], bool],
        is_elsewhere: Callable[[str], bool],
        limits: LaneLimits,
        clock: Callable[[], int],
        *,
        report_every_ms: int,
    ) -> None:
        self._topics = topics
        self._is_known = is_known
        self._is_elsewhere = is_elsewhere
        self._limits = limits
        self._clock = clock
        self._lanes: dict[LaneName, FairLane[Received]] = {
            "fast": FairLane(limits),
            "bulk": FairLane(limits),
        }
        self._refusals = Refusals(quiet_ms=BURST_QUIET_MS, report_every_ms=report_every_ms)
        self._changed = threading.Condition()
        # Closed until the service has its state: readers may subscribe early (so the broker
        # queues for their sessions) but nothing is judged or refused before it opens.
        self._open = threading.Event()
        self.bulk = _LaneSink(self, "bulk")
        self.fast = _LaneSink(self, "fast")

    # --- reader threads --------------------------------------------------------------------------

    def _classify(self, lane: LaneName, message: Publish) -> tuple[str | None, str | None]:
        """(device id to queue it under, or None) and (refusal reason, or None); both None:
        not for this lane, acknowledged and left alone."""
        split = self._topics.parse(message.topic)
        if lane == "fast":
            if split is None or split[1] != "event" or not self._is_known(split[0]):
                return None, None
            return (split[0], None) if safety_event_of(message.payload, split[0]) else (None, None)
        if split is None or split[1] not in UPLINK_KINDS:
            return None, "unknown_topic"
        if not self._is_known(split[0]):
            # Another shard's device is that shard's to judge or to report unknown.
            return None, None if self._is_elsewhere(split[0]) else "unknown_device"
        return split[0], None

    def deliver(
        self,
        lane: LaneName,
        connection: int,
        messages: list[Publish],
        caught_up: bool,
        timeout_s: float,
    ) -> Delivery:
        if not self._open.wait(timeout_s):
            return Delivery(rest=messages)  # backpressure: the broker keeps them
        now = self._clock()
        queue = self._lanes[lane]
        delivery = Delivery()
        refused: Counter[str] = Counter()
        # Bound once: this loop runs for every message.
        classify, verdict_of, push = self._classify, queue.verdict, queue.push
        with self._changed:
            for index, message in enumerate(messages):
                device_id, reason = classify(lane, message)
                if device_id is not None:
                    payload = message.payload
                    verdict = verdict_of(
                        device_id, payload, now, live=caught_up, plausible=plausible
                    )
                    if verdict == "wait":
                        delivery.rest = messages[index:]
                        break
                    if verdict == "admit":
                        item = Received(
                            message.topic, payload, message.mid, message.qos, now, connection
                        )
                        push(device_id, item, len(payload))
                        continue
                    reason = "flood"
                if reason is not None:
                    self._refusals.add(reason, device_id, message.topic, message.payload, now)
                    refused[reason] += 1
                delivery.ack_now.append(message)
            if len(delivery.ack_now) + len(delivery.rest) < len(messages):
                self._changed.notify_all()
            elif delivery.rest:
                self._changed.wait(timeout_s)
        for reason, count in refused.items():
            metrics.MESSAGES_REFUSED.labels(service=SERVICE, lane=lane, reason=reason).inc(count)
        return delivery

    # --- the service's thread --------------------------------------------------------------------

    def open(self) -> None:
        """Start taking messages (the service holds its state now)."""
        self._open.set()

    def drain(self, timeout_s: float, limit: int) -> list[Received]:
        """Up to `limit` messages: the fast lane first, then the bulk lane round-robin by device,
        within `BATCH_MAX_BYTES` of payload. Waits up to `timeout_s` for the first one."""
        fast, bulk = self._lanes["fast"], self._lanes["bulk"]
        with self._changed:
            if not (fast or bulk):
                self._changed.wait(timeout_s)
            batch = fast.take(limit)
            room = BATCH_MAX_BYTES - sum(len(item.payload) for item in batch)
            # Behind a press no backlog that would not fit: the press's commit waits for it.
            batch += bulk.take(limit - len(batch), room, at_least_one=not batch)
            if batch:
                self._changed.notify_all()  # room for a reader waiting on a full lane
            depths = {name: len(lane) for name, lane in self._lanes.items()}
        for name, depth in depths.items():
            metrics.INGEST_QUEUED.labels(service=SERVICE, lane=name).set(depth)
        return batch

    def queued(self, device_ids: frozenset[str]) -> bool:
        """Whether a lane still holds a message of one of `device_ids` (a shard handing them
        over to another waits until it has judged them: docs/architecture.md)."""
        with self._changed:
            return any(lane.depth(d) for lane in self._lanes.values() for d in device_ids)

    def letters(self, now_ms: int, *, final: bool = False) -> list[tuple[Received, Rejection]]:
        """Dead letters of the refusal bursts that ended (all of them if `final`)."""
        with self._changed:
            bursts = self._refusals.all() if final else self._refusals.due(now_ms)
        return [letter(burst, self._limits.device_max) for burst in bursts]


class _LaneSink:
    """One lane's face towards a reader (`services.shell.mqtt_ingest.Sink`)."""

    def __init__(self, intake: Intake, lane: LaneName) -> None:
        self._intake = intake
        self._lane: LaneName = lane

    def deliver(
        self, connection: int, messages: list[Publish], caught_up: bool, timeout_s: float
    ) -> Delivery:
        return self._intake.deliver(self._lane, connection, messages, caught_up, timeout_s)

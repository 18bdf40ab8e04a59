"""The replay: a recorded log through the exact core the service runs, as an alarm timeline.

`replay()` feeds the lines, grouped by received time, to `run_batch` (the service's own
per-batch function) with a tick at the service's 1 s cadence of received time, then hands every
signal to a gateway `AlarmBook` and fires its due timers on the same ticks. Same log and config,
same timeline, byte for byte.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from nabij.config import Config
from nabij.contract import AlarmSignal, DeviceCommand, Notice, QueueName, Topics
from services.alarm_gateway.core.book import AlarmBook
from services.alarm_gateway.core.record import Decision
from services.proximity.core.batch import PoisonedInputError, run_batch
from services.proximity.core.engine import ProximityEngine
from services.replay.records import Recorded

TICK_MS = 1000
"""The proximity shell's tick interval (`service.TICK_INTERVAL_S`)."""


@dataclass(frozen=True, slots=True)
class Line:
    """One line of the alarm timeline."""

    at: int
    type: Literal["signal", "notice", "command"]
    signal: AlarmSignal | None = None
    notice: Notice | None = None
    queue: QueueName | None = None
    device: str | None = None
    command: DeviceCommand | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """A pair's state after a batch that compared it (for plots)."""

    at: int
    pair: tuple[str, str, str]
    distance_m: float
    uncertainty_m: float
    pre_alert: str
    alarm: str


@dataclass(slots=True)
class Timeline:
    lines: list[Line] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    messages: int = 0
    rejected: int = 0
    ignored: dict[str, int] = field(default_factory=dict)


def replay(
    config: Config,
    records: Sequence[Recorded],
    *,
    tail_s: float = 0.0,
    samples: bool = False,
    on_batch: Callable[[int, ProximityEngine], None] | None = None,
) -> Timeline:
    """Run `records` (in received order) through the proximity core and the gateway book.

    A record that trips a bug in the core is set aside (counted as rejected) and the replay runs
    again from the start without it, as the service rolls back to its last commit and goes on.
    """
    poisoned: set[int] = set()
    while True:
        run = _Replay(config, samples=samples, on_batch=on_batch, skip=poisoned)
        try:
            return run.play(records, tail_s=tail_s)
        except _PoisonedRecordError as err:
            poisoned.add(err.index)


class _PoisonedRecordError(Exception):
    def __init__(self, index: int) -> None:
        super().__init__(f"record {index} trips a bug in the core")
        self.index = index


class _Replay:
    """One pass over a log: batches by received time, a tick every `TICK_MS` of it."""

    def __init__(
        self,
        config: Config,
        *,
        samples: bool,
        on_batch: Callable[[int, ProximityEngine], None] | None,
        skip: set[int],
    ) -> None:
        settings = config.settings
        self.engine = ProximityEngine(config.orders, settings.proximity, settings.privacy)
        self.book = AlarmBook(settings)
        self.topics = Topics(settings.mqtt.topic_prefix)
        self.timeline = Timeline(rejected=len(skip))
        self.samples = samples
        self.on_batch = on_batch
        self.skip = skip
        self.next_tick: int | None = None

    def play(self, records: Sequence[Recorded], *, tail_s: float) -> Timeline:
        index = 0
        while index < len(records):
            now = records[index].received_ms
            end = index
            while end < len(records) and records[end].received_ms == now:
                end += 1
            self.ticks_until(now, inclusive=False)
            due = self.next_tick is None or self.next_tick <= now
            self.batch([i for i in range(index, end) if i not in self.skip], records, now, due)
            if due:
                self.next_tick = now + TICK_MS
            index = end
        if records and tail_s > 0:
            self.ticks_until(records[-1].received_ms + round(tail_s * 1000), inclusive=True)
        return self.timeline

    def ticks_until(self, limit: int, *, inclusive: bool) -> None:
        while self.next_tick is not None and (
            self.next_tick < limit or (inclusive and self.next_tick == limit)
        ):
            self.batch([], (), self.next_tick, True)
            self.next_tick += TICK_MS

    def batch(self, indexes: list[int], records: Sequence[Recorded], now: int, tick: bool) -> None:
        items = [records[i] for i in indexes]
        try:
            result = run_batch(self.engine, self.topics, items, now, tick=tick)
        except PoisonedInputError as err:
            if err.index is None:
                raise  # a bug in the tick: no record to leave out, the replay says so
            raise _PoisonedRecordError(indexes[err.index]) from err
        effects, timeline = result.effects, self.timeline
        timeline.messages += len(items)
        timeline.rejected += len(result.rejected)
        for _, reason in effects.ignored:
            timeline.ignored[reason] = timeline.ignored.get(reason, 0) + 1
        for device, command in effects.commands:
            timeline.lines.append(Line(now, "command", device=device, command=command))
        for signal in effects.signals:
            timeline.lines.append(Line(now, "signal", signal=signal))
            self.notices(self.book.apply(signal, now), now)
        if tick:
            for alarm_id in self.book.due(now):
                self.notices(self.book.fire_due(alarm_id, now), now)
        if self.samples:
            self.sample(effects.changed_pairs, now)
        if self.on_batch is not None:
            self.on_batch(now, self.engine)

    def sample(self, changed: set[tuple[str, str, str]], now: int) -> None:
        for key in sorted(changed):
            pair = self.engine.pair(key)
            if pair.last_distance_m is not None and pair.last_uncertainty_m is not None:
                self.timeline.samples.append(
                    Sample(
                        now,
                        key,
                        pair.last_distance_m,
                        pair.last_uncertainty_m,
                        pair.pre_alert.phase,
                        pair.alarm.phase,
                    )
                )

    def notices(self, decision: Decision, now: int) -> None:
        for queue, notice in decision.notices:
            self.timeline.lines.append(Line(now, "notice", notice=notice, queue=queue))


# --- output ------------------------------------------------------------------------------------


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def format_line(line: Line) -> str:
    """One human-readable line."""
    when = iso(line.at)
    if line.signal is not None:
        s = line.signal
        who = f"zone {s.zone}" if s.zone else (s.victim_device or "-")
        about = (
            f"{s.order_id} {s.offender_device}/{who}"
            if s.order_id is not None
            else f"platform ({len(s.orders)} orders)"
        )
        parts = [f"{when}  signal  {s.action:<7}{s.kind:<20}{about}"]
        if s.distance_m is not None:
            parts.append(f"{s.distance_m:.0f} m ±{s.uncertainty_m or 0:.0f}")
        if s.confidence is not None:
            parts.append(f"conf {s.confidence:.2f}")
        if s.closing_speed_mps is not None:
            parts.append(f"closing {s.closing_speed_mps:.1f} m/s")
        if s.eta_s is not None:
            parts.append(f"eta {s.eta_s:.0f} s")
        return "  ".join(parts) + f"  | {s.reason}"
    if line.notice is not None:
        n = line.notice
        return (
            f"{when}  notice  {n.event:<12}{n.kind:<20}{n.alarm_id} -> {line.queue} "
            f"(level {n.level})  | {n.reason}"
        )
    body = msgspec.json.encode(line.command).decode()
    return f"{when}  command {line.device} {body}"


def format_json(line: Line) -> str:
    body: dict[str, Any] = {"at": line.at, "type": line.type}
    if line.signal is not None:
        body["signal"] = msgspec.to_builtins(line.signal)
    if line.notice is not None:
        body["queue"] = line.queue
        body["notice"] = msgspec.to_builtins(line.notice)
    if line.command is not None:
        body["device"] = line.device
        body["command"] = msgspec.to_builtins(line.command)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def render(timeline: Timeline, *, as_json: bool = False, commands: bool = True) -> str:
    out = [
        (format_json if as_json else format_line)(line)
        for line in timeline.lines
        if commands or line.type != "command"
    ]
    return "\n".join(out) + ("\n" if out else "")

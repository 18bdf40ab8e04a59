"""Record and replay: device traffic as JSON lines, run again through the exact core.

A log line is what the proximity service received: `{"topic", "payload" | "payload_b64",
"received_ms"}` (the payload as text when it is UTF-8, else base64). `replay()` feeds the lines,
grouped by received time, to `run_batch` (the service's own per-batch function) with a tick at
the service's 1 s cadence of received time, then hands every signal to a gateway `AlarmBook` and
fires its due timers on the same ticks. Same log and config, same timeline, byte for byte.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import pydantic

from nabij.config import Config, ConfigError, ConfigProblem, Order, Settings
from nabij.contract import AlarmSignal, DeviceCommand, Notice, QueueName, Topics
from services.alarm_gateway.core.book import AlarmBook
from services.alarm_gateway.core.record import Decision
from services.proximity.core.batch import run_batch
from services.proximity.core.engine import ProximityEngine

TICK_MS = 1000
"""The proximity shell's tick interval (`service.TICK_INTERVAL_S`)."""


@dataclass(frozen=True, slots=True)
class Recorded:
    topic: str
    payload: bytes
    received_ms: int


def encode_line(topic: str, payload: bytes, received_ms: int) -> str:
    """One log line (no newline)."""
    try:
        body: dict[str, Any] = {"topic": topic, "payload": payload.decode("utf-8")}
    except UnicodeDecodeError:
        body = {"topic": topic, "payload_b64": base64.b64encode(payload).decode("ascii")}
    body["received_ms"] = received_ms
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def decode_lines(lines: Iterable[str]) -> tuple[list[Recorded], int]:
    """The records of a log, and how many lines were unreadable (skipped, never fatal)."""
    records: list[Recorded] = []
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            topic, received_ms = raw["topic"], raw["received_ms"]
            if "payload_b64" in raw:
                payload = base64.b64decode(raw["payload_b64"], validate=True)
            else:
                payload = str(raw["payload"]).encode("utf-8")
            if not isinstance(topic, str) or not isinstance(received_ms, int):
                raise TypeError("topic or received_ms of the wrong type")
        except (ValueError, KeyError, TypeError, binascii.Error):
            bad += 1
            continue
        records.append(Recorded(topic, payload, received_ms))
    return records, bad


def read_log(path: Path) -> tuple[list[Recorded], int]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        return decode_lines(handle)


# --- what-if: `--set key=value` ------------------------------------------------------------


def apply_overrides(config: Config, assignments: Sequence[str]) -> Config:
    """`proximity.enter_dwell_s=5`, `gateway.update_min_interval_s=0`, `order.ORD-1.alarm_m=300`:
    values are TOML (`5`, `"text"`, `[1, 2]`), else taken as text. Every problem is reported."""
    problems: list[ConfigProblem] = []
    settings_raw = config.settings.model_dump(exclude_unset=True)
    orders_raw = {order.id: order.model_dump(exclude_unset=True) for order in config.orders}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        path = key.strip().split(".")
        if not sep or not all(path):
            problems.append(ConfigProblem("--set", key, None, "expected KEY=VALUE"))
            continue
        value = _value(text.strip())
        if path[0] == "order":
            if len(path) != 3 or path[1] not in orders_raw:
                problems.append(ConfigProblem("--set", key, None, "expected order.ID.KEY"))
                continue
            orders_raw[path[1]][path[2]] = value
        else:
            target = settings_raw
            for part in path[:-1]:
                target = target.setdefault(part, {})
                if not isinstance(target, dict):
                    break
            if not isinstance(target, dict):
                problems.append(ConfigProblem("--set", key, None, "not a settings table"))
                continue
            target[path[-1]] = value
    settings = config.settings
    orders = list(config.orders)
    try:
        settings = Settings.model_validate(settings_raw)
    except pydantic.ValidationError as err:
        problems.extend(_problems(err, ""))
    for index, order in enumerate(config.orders):
        try:
            orders[index] = Order.model_validate(orders_raw[order.id])
        except pydantic.ValidationError as err:
            problems.extend(_problems(err, f"order.{order.id}."))
    if problems:
        raise ConfigError(problems)
    return Config(directory=config.directory, settings=settings, orders=tuple(orders))


def _problems(err: pydantic.ValidationError, prefix: str) -> list[ConfigProblem]:
    return [
        ConfigProblem("--set", prefix + ".".join(str(p) for p in item["loc"]), None, item["msg"])
        for item in err.errors()
    ]


def _value(text: str) -> object:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


# --- the replay itself -----------------------------------------------------------------------


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
    """Run `records` (in received order) through the proximity core and the gateway book."""
    settings = config.settings
    engine = ProximityEngine(config.orders, settings.proximity)
    book = AlarmBook(settings)
    topics = Topics(settings.mqtt.topic_prefix)
    timeline = Timeline()
    next_tick: int | None = None

    def batch(items: Sequence[Recorded], now: int, tick: bool) -> None:
        result = run_batch(engine, topics, items, now, tick=tick)
        effects = result.effects
        timeline.messages += len(items)
        timeline.rejected += len(result.rejected)
        for _, reason in effects.ignored:
            timeline.ignored[reason] = timeline.ignored.get(reason, 0) + 1
        for device, command in effects.commands:
            timeline.lines.append(Line(now, "command", device=device, command=command))
        for signal in effects.signals:
            timeline.lines.append(Line(now, "signal", signal=signal))
            _notices(book.apply(signal, now), now, timeline)
        if tick:
            for alarm_id in book.due(now):
                _notices(book.fire_due(alarm_id, now), now, timeline)
        if samples:
            for key in sorted(effects.changed_pairs):
                pair = engine.pair(key)
                if pair.last_distance_m is not None and pair.last_uncertainty_m is not None:
                    timeline.samples.append(
                        Sample(
                            now,
                            key,
                            pair.last_distance_m,
                            pair.last_uncertainty_m,
                            pair.pre_alert.phase,
                            pair.alarm.phase,
                        )
                    )
        if on_batch is not None:
            on_batch(now, engine)

    def ticks_until(limit: int, *, inclusive: bool) -> None:
        nonlocal next_tick
        while next_tick is not None and (next_tick < limit or (inclusive and next_tick == limit)):
            batch((), next_tick, True)
            next_tick += TICK_MS

    index = 0
    while index < len(records):
        now = records[index].received_ms
        end = index
        while end < len(records) and records[end].received_ms == now:
            end += 1
        ticks_until(now, inclusive=False)
        due = next_tick is None or next_tick <= now
        batch(records[index:end], now, due)
        if due:
            next_tick = now + TICK_MS
        index = end
    if records and tail_s > 0:
        ticks_until(records[-1].received_ms + round(tail_s * 1000), inclusive=True)
    return timeline


def _notices(decision: Decision, now: int, timeline: Timeline) -> None:
    for queue, notice in decision.notices:
        timeline.lines.append(Line(now, "notice", notice=notice, queue=queue))


# --- output ------------------------------------------------------------------------------------


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def format_line(line: Line) -> str:
    """One human-readable line."""
    when = iso(line.at)
    if line.signal is not None:
        s = line.signal
        who = f"zone {s.zone}" if s.zone else (s.victim_device or "-")
        parts = [f"{when}  signal  {s.action:<7}{s.kind:<20}{s.order_id} {s.offender_device}/{who}"]
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

"""The wire contract: every message nabij exchanges, as typed, validated structs.

Device firmware, dispatch consoles, both services, the simulators and the JSON Schema export
(`docs/schemas/`) all import these definitions; nothing else defines a message. Field meanings are
documented in `docs/contract.md`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta, Struct

DEVICE_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
MAX_BACKLOG_FIXES: Final = 1000

DeviceId = Annotated[str, Meta(pattern=DEVICE_ID_PATTERN, description="Device identifier.")]
# 2000-01-01 .. 2100-01-01: anything outside is a broken clock, not a position in time.
EpochMs = Annotated[
    int, Meta(ge=946_684_800_000, le=4_102_444_800_000, description="Unix epoch milliseconds, UTC.")
]
# Bounded to a signed 64-bit integer: state is stored as msgpack, and no firmware counts further.
Seq = Annotated[
    int, Meta(ge=0, le=2**63 - 1, description="Per-device counter that increases by message.")
]
# Firmware picks a new boot id at every start (random, or a boot counter): `seq` restarts with it.
BootId = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="Identifies one run of the device's firmware; seq counts within it.",
    ),
]
Latitude = Annotated[float, Meta(ge=-90.0, le=90.0, description="WGS84 latitude, degrees.")]
Longitude = Annotated[float, Meta(ge=-180.0, le=180.0, description="WGS84 longitude, degrees.")]
AccuracyM = Annotated[
    float, Meta(ge=0.0, le=100_000.0, description="Horizontal accuracy radius, metres.")
]
Battery = Annotated[int, Meta(ge=0, le=100, description="Battery charge, percent.")]
PositionSource = Literal["gnss", "wifi", "cell"]
Confidence = Annotated[
    float, Meta(ge=0.0, le=1.0, description="Probability that the pair is really inside the ring.")
]
ClosingSpeed = Annotated[float, Meta(description="Rate at which the distance shrinks, m/s.")]
EtaSeconds = Annotated[float, Meta(ge=0.0, description="Predicted seconds until the alarm ring.")]
LateSeconds = Annotated[
    int, Meta(ge=0, description="Seconds between when it happened and when nabij learned of it.")
]

EventType = Literal[
    "aware_button", "strap_tamper", "battery_low", "gnss_lost", "gnss_restored", "power_off"
]
SAFETY_EVENTS: Final[frozenset[EventType]] = frozenset({"aware_button", "strap_tamper"})
"""A press or a cut strap: taken whenever it comes, it moves no `seq` at nabij (so it may overtake
earlier fixes); a `Committed` covers it once a later message of the device is committed."""
AlarmKind = Literal[
    "proximity_pre_alert",
    "proximity_alarm",
    "zone_alarm",
    "aware_button",
    "strap_tamper",
    "location_unknown",
    "device_offline",
    "battery_low",
    "device_fault",
    "victim_unprotected",
    "platform_degraded",
    "platform_restored",
]
# The platform kinds (nabij cannot see / sees again) concern no single order: their signals and
# notices carry `order_id: null`, `offender_device: null` and the affected orders in `orders`.
ALARM_KINDS: Final[tuple[AlarmKind, ...]] = AlarmKind.__args__  # type: ignore[attr-defined]  # Literal exposes its values here
NoticeEvent = Literal["opened", "updated", "escalated", "acknowledged", "cleared", "resolved"]
# Why a condition was cleared by a change of the orders rather than by the devices: a closed set,
# so it can reach probation (free text could carry facts). Absent on an ordinary clear.
ClearCause = Literal["order_ended", "order_not_started", "order_changed"]
QueueName = Literal["probation", "police"]
QUEUE_NAMES: Final[tuple[QueueName, ...]] = ("probation", "police")
WarnLevel = Literal["pre_alert", "alarm", "clear"]


# --- device to nabij -------------------------------------------------------------------------


class FixPosition(Struct, frozen=True, omit_defaults=True, gc=False):
    """The part of a fix that a comparison needs; a fix whose optional fields are broken is
    still kept as this. Untracked by the garbage collector (`gc=False`, here and on every
    struct of numbers and strings that the proximity core keeps per device): such a struct
    can be in no reference cycle, and a full collection that scans one per fix ever taken
    stalled the service for ~100 ms at 10,000 devices (docs/benchmarks.md)."""

    device_id: DeviceId
    seq: Seq
    ts: EpochMs
    lat: Latitude
    lon: Longitude
    acc: AccuracyM
    src: PositionSource | None = None
    boot: BootId | None = None


class Fix(FixPosition, frozen=True, omit_defaults=True, gc=False):
    """One position of one device, as the device measured it."""

    speed: Annotated[float, Meta(ge=0.0, le=350.0, description="Ground speed, m/s.")] | None = None
    heading: Annotated[float, Meta(ge=0.0, lt=360.0, description="Course, degrees.")] | None = None
    batt: Battery | None = None


class DeviceEvent(Struct, frozen=True, omit_defaults=True):
    """Something a device reports that is not a plain fix (button press, tamper, power)."""

    device_id: DeviceId
    seq: Seq
    ts: EpochMs
    type: EventType
    lat: Latitude | None = None
    lon: Longitude | None = None
    acc: AccuracyM | None = None
    batt: Battery | None = None
    boot: BootId | None = None


class DeviceStatus(Struct, frozen=True, omit_defaults=True):
    """Retained presence message; devices publish `{"online": false}` as their MQTT last will."""

    online: bool
    ts: EpochMs | None = None


# --- nabij to device -------------------------------------------------------------------------


class SetInterval(Struct, frozen=True, tag_field="type", tag="set_interval"):
    """Ask a device to report a fix every `seconds`."""

    seconds: Annotated[int, Meta(ge=1, le=3600)]


class Warn(Struct, frozen=True, tag_field="type", tag="warn"):
    """Warn the wearer. Carries a level only: never the other party's position or distance."""

    level: WarnLevel


DeviceCommand = SetInterval | Warn


class Committed(Struct, frozen=True, omit_defaults=True, tag_field="type", tag="committed"):
    """nabij has committed every message of this device up to `seq` of `boot` (cumulative): the
    device may forget them. Sent on the device's `cmd` topic (QoS 0: the next one replaces a lost
    one) at most once per device per commit. Names only the device's own counter: nothing about
    any other party."""

    seq: Seq
    boot: BootId | None = None


DeviceDownlink = DeviceCommand | Committed
"""Everything nabij sends on a device's `cmd` topic."""


# --- dispatch queues -------------------------------------------------------------------------


class Position(Struct, frozen=True, omit_defaults=True, gc=False):
    lat: Latitude
    lon: Longitude
    acc: AccuracyM
    ts: EpochMs


class DistanceBand(Struct, frozen=True, omit_defaults=True):
    """How far apart offender and victim are, as a band of configured edges (never metres)."""

    min_m: Annotated[float, Meta(ge=0.0, description="Lower edge, metres (inclusive).")]
    max_m: Annotated[
        float | None, Meta(description="Upper edge, metres (exclusive); absent: beyond the last.")
    ] = None


PlatformOrders = Annotated[
    tuple[str, ...],
    Meta(description="Platform notices only: ids of the orders nabij cannot see (sorted)."),
]


class AlarmFacts(Struct, frozen=True, omit_defaults=True, kw_only=True):
    """What the proximity service observed about a condition, as a signal tells the gateway and a
    notice passes it on: a new fact is added here once and both carry it.

    PRIVACY (docs/privacy.md): the exact figures (`distance_m`, `uncertainty_m`, `confidence`,
    `closing_speed_mps`, `eta_s`, `victim`) reach the police queue only; the gateway decides per
    queue what a notice keeps (`services/alarm_gateway/core/notices.py`).

    Keyword-only: a subclass's own fields come first on the wire (its ids), these after them.
    """

    kind: AlarmKind
    order_id: str | None
    offender_device: DeviceId | None
    at: EpochMs
    reason: str
    victim_device: DeviceId | None = None
    distance_m: float | None = None
    uncertainty_m: float | None = None
    offender: Position | None = None
    # Police notices only: the victim's position never reaches probation or the offender.
    victim: Position | None = None
    zone: str | None = None
    confidence: Confidence | None = None
    closing_speed_mps: ClosingSpeed | None = None
    eta_s: EtaSeconds | None = None
    # Set when the condition was found late (in a backlog after a coverage gap): when it really
    # happened, and how long before nabij learned of it.
    happened_at: EpochMs | None = None
    late_s: LateSeconds | None = None
    cause: ClearCause | None = None
    """On a clear that a change of the orders caused (not the devices): which change."""
    orders: PlatformOrders = ()


class Notice(AlarmFacts, frozen=True, omit_defaults=True):
    """One entry of a dispatch queue (field `notice` of a Redis Stream entry).

    Probation hears the `distance_band` and whether the offender is `approaching` instead of the
    exact figures, and the `offender` position only while no alarm about the victim's
    whereabouts is open in the order.

    A platform notice (`platform_degraded`, `platform_restored`) is about no single order:
    `order_id` and `offender_device` are null and `orders` lists the orders it concerns (ids
    only, no device and no position, so both queues read the same list).
    """

    notice_id: str
    alarm_id: str
    event: NoticeEvent
    priority: Annotated[int, Meta(ge=1, le=3)]
    level: Annotated[int, Meta(ge=1)]
    queues: list[QueueName] = []
    by: str | None = None
    note: str | None = None
    distance_band: DistanceBand | None = None
    approaching: bool | None = None


# --- proximity to alarm gateway (internal, Redis Stream `{prefix}:gateway:inbox`) -----------

SignalAction = Literal["open", "update", "clear"]


class AlarmSignal(AlarmFacts, frozen=True, omit_defaults=True, tag="signal"):
    """A condition that the proximity service observed: it opens, updates or clears an alarm.

    `alarm_key` names the condition (kind, order, and the role: offender, victim N, zone; the
    device for a device's own condition) so that repeats of the same condition land on the same
    alarm, also across a swap of a device. A platform signal has no order or device: its key names
    the outage, and `orders` lists the orders it concerns. `signal_id` is deterministic for a given
    input, so a replayed input after a crash yields the same id and the gateway applies it once.
    """

    signal_id: str
    action: SignalAction
    alarm_key: str


# Operator text is shown on terminals and consoles: no control characters of any kind (C0, DEL,
# C1), no line or paragraph separators, no bidirectional overrides, marks or isolates, so a name or
# note can never forge a line or reorder what is shown around it. `(?!\n)` after `$`: Python's `$`
# also matches before a final newline.
_OPERATOR_TEXT_CHAR: Final = r"[^\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]"
OPERATOR_NAME_MAX: Final = 128
OPERATOR_NOTE_MAX: Final = 1000
SAFE_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$(?!\n)"
OperatorName = Annotated[
    str,
    Meta(
        pattern=rf"^(?=\s*\S){_OPERATOR_TEXT_CHAR}+$(?!\n)",
        min_length=1,
        max_length=OPERATOR_NAME_MAX,
        description="Who acts: a name or badge number, not blank, no control characters.",
    ),
]
OperatorNote = Annotated[
    str,
    Meta(
        pattern=rf"^{_OPERATOR_TEXT_CHAR}*$(?!\n)",
        max_length=OPERATOR_NOTE_MAX,
        description="Free text from the operator, one line, no control characters.",
    ),
]
RequestId = Annotated[
    str, Meta(pattern=SAFE_ID_PATTERN, description="Unique id of one request; names its outcome.")
]
AlarmId = Annotated[str, Meta(pattern=SAFE_ID_PATTERN, description="Id of an alarm (`AL-...`).")]
# Where a request came from: `cli` (an administrator on the host names who acts with `--by`) or
# `console` (the console server sets `by` from the logged-in session, never from the client).
RequestVia = Literal["cli", "console"]
OPERATOR_FIELD_RULES: Final = {
    "by": f"`by` must be a name of 1-{OPERATOR_NAME_MAX} characters, not blank, with no control "
    "characters",
    "note": f"`note` must be at most {OPERATOR_NOTE_MAX} characters on one line, with no control "
    "characters",
    "request_id": "`request_id` must be 1-64 letters, digits, `_` or `-`",
    "alarm_id": "`alarm_id` must be 1-64 letters, digits, `_` or `-`",
}


class HumanRequest(Struct, frozen=True, omit_defaults=True):
    """What a person asks of one alarm, from a terminal or a console (stream
    `{prefix}:gateway:requests`, which only the CLI's and the console's Redis users may append to).
    """

    request_id: RequestId
    alarm_id: AlarmId
    by: OperatorName
    via: RequestVia
    at: EpochMs
    note: OperatorNote | None = None


class AckRequest(HumanRequest, frozen=True, omit_defaults=True, tag="ack"):
    """A human acknowledges an alarm: escalation stops."""


class ResolveRequest(HumanRequest, frozen=True, omit_defaults=True, tag="resolve"):
    """A human closes an alarm: escalation stops and a later repeat opens a new alarm."""


OutcomeStatus = Literal["applied", "already_acknowledged", "no_such_alarm", "refused"]


class RequestOutcome(Struct, frozen=True, omit_defaults=True):
    """What the gateway did with one human request (`{prefix}:gateway:outcome:{request_id}`,
    kept an hour), written in the transaction that applied it, so the tool that asked can tell
    the operator the truth: who holds the acknowledgement, or why nothing happened."""

    request_id: RequestId
    status: OutcomeStatus
    at: EpochMs
    detail: str
    alarm_id: str | None = None
    # Who holds the acknowledgement now, and since when (applied or already acknowledged).
    acknowledged_by: str | None = None
    acknowledged_at: EpochMs | None = None


def explain_request_error(err: msgspec.ValidationError) -> str:
    """A refused request's reason, in the operator's terms where the field is one of theirs."""
    message = str(err)
    for field, rule in OPERATOR_FIELD_RULES.items():
        if message.endswith(f"at `$.{field}`"):
            return rule
    return message


GatewayInput = AlarmSignal | AckRequest | ResolveRequest


def concerned_orders(order_id: str | None, platform_orders: tuple[str, ...]) -> tuple[str, ...]:
    """The orders an alarm, signal or notice concerns: its own, or a platform one's list."""
    return platform_orders if order_id is None else (order_id,)


# --- topics ----------------------------------------------------------------------------------

TopicKind = Literal["fix", "event", "status", "cmd"]


@dataclass(frozen=True, slots=True)
class TopicFilters:
    """Topic filters `{prefix}{name}{suffix}`: each name with each suffix, in that order. A
    shard's readers subscribe to 4 topics of each of its devices and keep them to subscribe again
    on every reconnect: kept as the device ids (the strings its orders hold anyway), they cost 8
    bytes a device a reader, not a string and an entry a topic (~150 bytes); the topics are made
    only while a packet is built. Plain topics are names alone (no prefix, one empty suffix)."""

    names: tuple[str, ...]
    prefix: str = ""
    suffixes: tuple[str, ...] = ("",)

    def __len__(self) -> int:
        return len(self.names) * len(self.suffixes)

    def __iter__(self) -> Iterator[str]:
        prefix, suffixes = self.prefix, self.suffixes
        return (f"{prefix}{name}{suffix}" for name in self.names for suffix in suffixes)

    def of(self, names: Iterable[str]) -> TopicFilters:
        """The same filters for other names."""
        return replace(self, names=tuple(names))

    def adding(self, names: Iterable[str]) -> TopicFilters:
        return self.of((*self.names, *names))

    def removing(self, names: Collection[str]) -> TopicFilters:
        return self.of(name for name in self.names if name not in names)

    def parts(self, most: int) -> Iterator[TopicFilters]:
        """These filters in parts of at most `most` topics (of one name at least), in order."""
        step = max(1, most // len(self.suffixes))
        return (self.of(self.names[i : i + step]) for i in range(0, len(self.names), step))


TOPICS_CACHED: Final = 100_000
"""Parsed topic strings a `Topics` keeps (three a device); beyond it its cache starts again, so
topics a client invents cannot grow it without bound."""


class Topics:
    """Topic names under one configurable prefix (default `nabij/v1`)."""

    def __init__(self, prefix: str, *, cached: int = TOPICS_CACHED) -> None:
        self.prefix = prefix.rstrip("/")
        self._device_prefix = f"{self.prefix}/devices/"
        self._cached = cached
        self._parsed: dict[str, tuple[str, str] | None] = {}

    def device(self, device_id: str, kind: TopicKind) -> str:
        return f"{self._device_prefix}{device_id}/{kind}"

    def subscriptions(self, devices: Iterable[str] | None = None) -> TopicFilters:
        """What the proximity service subscribes to: every device's uplinks, or only those of
        `devices` (a shard's own: the broker then delivers it nothing of another shard's)."""
        return self._filters(devices, ("fix", "event", "status"))

    def events(self, devices: Iterable[str] | None = None) -> TopicFilters:
        """The event topics alone (presses, tampers: the fast lane's), of all or of `devices`."""
        return self._filters(devices, ("event",))

    def _filters(self, devices: Iterable[str] | None, kinds: tuple[TopicKind, ...]) -> TopicFilters:
        names = ("+",) if devices is None else tuple(sorted(devices))
        return TopicFilters(names, self._device_prefix, tuple(f"/{kind}" for kind in kinds))

    def parse(self, topic: str) -> tuple[str, str] | None:
        """Split a device topic into (device_id, kind); None if it is not one of ours. Split once
        per topic string: the proximity service's reader and its core ask of every message, and
        a device sends on the same few topics. (Shared by threads: each dict step is atomic.)"""
        try:
            return self._parsed[topic]
        except KeyError:
            if len(self._parsed) >= self._cached:
                self._parsed.clear()
            split = self._parsed[topic] = self._split(topic)
            return split

    def _split(self, topic: str) -> tuple[str, str] | None:
        if not topic.startswith(self._device_prefix):
            return None
        parts = topic[len(self._device_prefix) :].split("/")
        if len(parts) != 2:
            return None
        return parts[0], parts[1]


# --- codecs (built once: building them is the expensive part) --------------------------------

fix_payload_decoder: Final = msgspec.json.Decoder(Fix | list[msgspec.Raw])
fix_decoder: Final = msgspec.json.Decoder(Fix)
fix_position_decoder: Final = msgspec.json.Decoder(FixPosition)
event_decoder: Final = msgspec.json.Decoder(DeviceEvent)
status_decoder: Final = msgspec.json.Decoder(DeviceStatus)
command_decoder: Final = msgspec.json.Decoder(DeviceCommand)
downlink_decoder: Final = msgspec.json.Decoder(DeviceDownlink)
notice_decoder: Final = msgspec.json.Decoder(Notice)
gateway_input_decoder: Final = msgspec.json.Decoder(GatewayInput)
outcome_decoder: Final = msgspec.json.Decoder(RequestOutcome)
encoder: Final = msgspec.json.Encoder()


def encode(message: Struct) -> bytes:
    """Encode any contract struct as compact JSON."""
    return encoder.encode(message)


SCHEMA_TYPES: Final[dict[str, object]] = {
    "fix": Fix,
    "fix_batch": Annotated[list[Fix], Meta(min_length=1, max_length=MAX_BACKLOG_FIXES)],
    "event": DeviceEvent,
    "status": DeviceStatus,
    "command": DeviceCommand,
    "committed": Committed,
    "notice": Notice,
    "gateway_input": GatewayInput,
    "request_outcome": RequestOutcome,
}

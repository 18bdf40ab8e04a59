"""The alarm record (persisted state of one alarm), the `Decision` a transition returns, and ids.

An alarm is one condition (one `alarm_key`) from the moment it opens until a human resolves it. Its
record is the only state the gateway keeps: it is stored as JSON in the Redis hash of open alarms
and carries its own escalation due time, so a restart loses no timer.

PRIVACY: a stored record holds only what the probation role may read (`SafeFacts`). The exact
figures and every position (`PoliceFacts`) ride along in memory as `AlarmRecord.police` and are
stored apart, in the police-only hash (`Keys.police_facts`): `encode_record` never writes them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final, Literal

import msgspec

from nabij.contract import (
    AlarmKind,
    AlarmSignal,
    ClearCause,
    ClosingSpeed,
    Confidence,
    DistanceBand,
    EtaSeconds,
    Notice,
    Position,
    QueueName,
    RequestOutcome,
    RequestVia,
)

APPLIED_IDS_KEPT: Final = 64
"""How many applied input ids a record remembers, to drop redelivered inputs."""

Condition = Literal["active", "cleared"]


class SafeFacts(msgspec.Struct, frozen=True, omit_defaults=True):
    """The latest facts of an alarm that the probation role may read: no position, no metres."""

    band: DistanceBand | None = None
    approaching: bool | None = None
    zone: str | None = None
    status: str | None = None
    """The signal's reason for kinds that describe a device (battery, presence, button): those
    texts state no distance. Proximity and zone reasons do, and are never copied here."""
    happened_at: int | None = None
    late_s: int | None = None
    cause: ClearCause | None = None
    """A clear caused by a change of the orders: which change (a closed set, no facts)."""
    orders: tuple[str, ...] = ()
    """Platform alarms: the orders nabij cannot see (ids only)."""


class PoliceFacts(msgspec.Struct, frozen=True, omit_defaults=True):
    """The latest exact facts of an alarm: police only (stored in `Keys.police_facts`)."""

    reason: str
    distance_m: float | None = None
    uncertainty_m: float | None = None
    offender: Position | None = None
    victim: Position | None = None
    confidence: Confidence | None = None
    closing_speed_mps: ClosingSpeed | None = None
    eta_s: EtaSeconds | None = None
    resolved_at: int | None = None
    """Set when the alarm is resolved: retention counts from here."""


class AlarmRecord(msgspec.Struct, omit_defaults=True):
    """One alarm, open or (in `Decision.resolved`) just resolved.

    The gateway core never mutates a record it has handed out: every transition builds a new one,
    so records in earlier `Decision`s stay exactly as they were when decided.
    """

    alarm_id: str
    alarm_key: str
    kind: AlarmKind
    order_id: str | None  # None: a platform alarm (`latest.orders` names the orders)
    offender_device: str | None
    victim_device: str | None
    priority: int
    level: int  # escalation step, 1 first
    queues: list[QueueName]  # every queue that has received this alarm so far, in order
    opened_at: int
    condition: Condition
    acknowledged_by: str | None
    acknowledged_at: int | None
    next_due_ms: int | None  # earliest of escalation_due_ms (if unacknowledged) and update flush
    last_notice_at: int
    notices_sent: int  # events notified so far; numbers the notice ids
    latest: SafeFacts  # latest probation-safe facts, for later notices
    pending_update: bool = False  # an update held back by the rate limit
    escalation_due_ms: int | None = None  # next escalation or reminder; None once acknowledged
    last_update_at: int | None = None  # when the last `updated` notice went out (rate limit)
    applied_ids: list[str] = []  # the last APPLIED_IDS_KEPT input ids applied, oldest first
    cleared_at: int | None = None  # when the condition last cleared (None while never cleared)
    ack_note: str | None = None
    resolved_at: int | None = None
    resolved_by: str | None = None
    resolve_note: str | None = None
    # Through what the acknowledgement and the resolution came (`cli`, `console`).
    acknowledged_via: RequestVia | None = None
    resolved_via: RequestVia | None = None
    # In memory only: `encode_record` leaves it out; the shell stores it in the police-only hash.
    police: PoliceFacts | None = None


@dataclass(slots=True)
class Decision:
    """What one input or one due timer changed: records to write or delete, notices to send."""

    upserts: list[AlarmRecord] = field(default_factory=list)
    resolved: list[AlarmRecord] = field(default_factory=list)  # removed from the open set
    notices: list[tuple[QueueName, Notice]] = field(default_factory=list)
    rejection: str | None = None  # human reason when the input cannot apply
    outcome: RequestOutcome | None = None  # what a human request got, told to whoever asked


def alarm_id_for(signal: AlarmSignal) -> str:
    """The id of the alarm that `signal` opens: derived from its signal id, so replay-stable."""
    return derive_alarm_id(signal.signal_id, 0)


def derive_alarm_id(signal_id: str, attempt: int) -> str:
    """Attempt 0 is `alarm_id_for`; later attempts only serve to step around an id already used."""
    seed = signal_id if attempt == 0 else f"{signal_id}#{attempt}"
    return "AL-" + hashlib.sha256(seed.encode("utf-8")).hexdigest()[:16]


record_encoder: Final = msgspec.json.Encoder()
record_decoder: Final = msgspec.json.Decoder(AlarmRecord)
police_facts_decoder: Final = msgspec.json.Decoder(PoliceFacts)


def encode_record(record: AlarmRecord) -> bytes:
    """The record as stored where the probation role reads: without its police facts."""
    return record_encoder.encode(msgspec.structs.replace(record, police=None))


def encode_police_facts(facts: PoliceFacts) -> bytes:
    return record_encoder.encode(facts)


def decode_record(blob: bytes | str) -> AlarmRecord:
    return record_decoder.decode(blob)

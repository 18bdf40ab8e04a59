"""The alarm record (persisted state of one alarm), the `Decision` a transition returns, and ids.

An alarm is one condition (one `alarm_key`) from the moment it opens until a human resolves it. Its
record is the only state the gateway keeps: it is stored as JSON in the Redis hash of open alarms
and carries its own escalation due time, so a restart loses no timer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final, Literal

import msgspec

from nabij.contract import (
    AlarmKind,
    AlarmSignal,
    Notice,
    QueueName,
    RequestOutcome,
    RequestVia,
)

APPLIED_IDS_KEPT: Final = 64
"""How many applied input ids a record remembers, to drop redelivered inputs."""

Condition = Literal["active", "cleared"]


class AlarmRecord(msgspec.Struct):
    """One alarm, open or (in `Decision.resolved`) just resolved.

    The gateway core never mutates a record it has handed out: every transition builds a new one,
    so records in earlier `Decision`s stay exactly as they were when decided.
    """

    alarm_id: str
    alarm_key: str
    kind: AlarmKind
    order_id: str
    offender_device: str
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
    latest: AlarmSignal  # latest facts (positions, distance) for later notices
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


def encode_record(record: AlarmRecord) -> bytes:
    return record_encoder.encode(record)


def decode_record(blob: bytes | str) -> AlarmRecord:
    return record_decoder.decode(blob)

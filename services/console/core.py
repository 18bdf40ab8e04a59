"""The console's pure decisions: who sees which alarm and which fields, the board's order and
grouping, sessions' validity and the login throttle. Data and a clock value in, data out.

PRIVACY (docs/privacy.md): an operator's role decides what any page, live update or API answer
may carry. A probation operator sees what a probation notice carries and nothing else: the
stored record's probation-safe facts and the probation queue's notices. Police facts (exact
distance, both positions, closing speed, time to contact) are only ever read for police.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import msgspec

from nabij.contract import Notice, Position, QueueName
from services.alarm_gateway.core.alarms import AlarmRecord, PoliceFacts, about_victim, scrub
from services.alarm_gateway.core.notices import without_lengths

Role = Literal["probation", "police"]
ROLES: Final[tuple[Role, ...]] = ("probation", "police")
# Notice fields only police may read (the same list the gateway's privacy rule withholds).
POLICE_ONLY_NOTICE_FIELDS: Final = frozenset(
    {"distance_m", "uncertainty_m", "victim", "closing_speed_mps", "eta_s"}
)


def queue_of(role: Role) -> QueueName:
    """The dispatch queue an operator of `role` works from."""
    return role


def visible(record: AlarmRecord, role: Role) -> bool:
    """An alarm is on an operator's board once it has reached their role's queue."""
    return queue_of(role) in record.queues


def notice_for(notice: Notice, role: Role) -> Notice:
    """`notice` as `role` may read it. The probation queue's notices already are; a police notice
    (one with any police-only field) handed here for probation by mistake loses those fields,
    the offender's position on an alarm about her whereabouts, and every length and coordinate
    in its reason: the second line of defence."""
    wire = msgspec.structs.asdict(notice)
    if role == "police" or not any(wire[name] is not None for name in POLICE_ONLY_NOTICE_FIELDS):
        return notice
    whereabouts = about_victim(notice.kind, notice.victim_device)
    return msgspec.structs.replace(
        notice,
        **{name: None for name in POLICE_ONLY_NOTICE_FIELDS},
        reason=without_lengths(scrub(notice.reason)),
        offender=None if whereabouts else notice.offender,
        confidence=None if whereabouts else notice.confidence,
    )


class BoardAlarm(msgspec.Struct, frozen=True, omit_defaults=True):
    """One row of the board: what an operator of either role may read of an open alarm."""

    alarm_id: str
    kind: str
    priority: int
    level: int
    order_id: str | None  # None: a platform alarm, about the orders in `orders`
    offender_device: str | None
    opened_at: int
    last_notice_at: int
    condition: str
    age_s: int
    since_notice_s: int
    victim_device: str | None = None
    acknowledged_by: str | None = None
    acknowledged_at: int | None = None
    orders: tuple[str, ...] = ()


class Situation(msgspec.Struct, frozen=True):
    """Alarms of one order and pair (a pre-alert with its alarm), the most urgent first."""

    order_id: str | None
    offender_device: str | None
    victim_device: str | None
    alarms: list[BoardAlarm]


def urgency(alarm: BoardAlarm | AlarmRecord) -> tuple[int, int, int, str]:
    """Sort key, most urgent first: priority (1 first), then escalation level (highest first),
    then age (oldest first); the id breaks ties so the order is total."""
    return (alarm.priority, -alarm.level, alarm.opened_at, alarm.alarm_id)


def board_alarm(record: AlarmRecord, now_ms: int) -> BoardAlarm:
    return BoardAlarm(
        alarm_id=record.alarm_id,
        kind=record.kind,
        priority=record.priority,
        level=record.level,
        order_id=record.order_id,
        offender_device=record.offender_device,
        victim_device=record.victim_device,
        opened_at=record.opened_at,
        last_notice_at=record.last_notice_at,
        condition=record.condition,
        age_s=max(0, (now_ms - record.opened_at) // 1000),
        since_notice_s=max(0, (now_ms - record.last_notice_at) // 1000),
        acknowledged_by=record.acknowledged_by,
        acknowledged_at=record.acknowledged_at,
        orders=record.latest.orders,
    )


def board(records: Iterable[AlarmRecord], role: Role, now_ms: int) -> list[Situation]:
    """The open alarms `role` may see, grouped by order and pair, most urgent situation first."""
    # Platform alarms (no order) form one situation of their own: nabij's sight.
    groups: dict[tuple[str | None, str | None, str | None], list[BoardAlarm]] = {}
    for record in records:
        if visible(record, role):
            pair = (record.order_id, record.offender_device, record.victim_device)
            groups.setdefault(pair, []).append(board_alarm(record, now_ms))
    situations = [
        Situation(order, offender, victim, sorted(alarms, key=urgency))
        for (order, offender, victim), alarms in groups.items()
    ]
    return sorted(situations, key=lambda s: urgency(s.alarms[0]))


class Track(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the alarm page's map draws: the offender's positions in the role's notices, and for
    police the victim's latest position with the rings around her."""

    offender: list[Position]
    victim: Position | None = None
    rings_m: list[float] = []


class AlarmDetail(msgspec.Struct, frozen=True, omit_defaults=True):
    """The alarm page and `GET /api/alarms/{id}`: the row, its latest facts and timeline."""

    alarm: BoardAlarm
    timeline: list[Notice]
    track: Track
    resolved_by: str | None = None
    ack_note: str | None = None
    distance_band: dict[str, float | None] | None = None
    approaching: bool | None = None
    zone: str | None = None
    status: str | None = None
    # Police only.
    distance_m: float | None = None
    uncertainty_m: float | None = None
    confidence: float | None = None
    eta_s: float | None = None
    unreadable_notices: int = 0


def alarm_detail(
    record: AlarmRecord,
    notices: Sequence[Notice],
    role: Role,
    now_ms: int,
    *,
    police: PoliceFacts | None,
    rings_m: Sequence[float],
) -> AlarmDetail:
    """What `role` may read of one alarm. `police` (the police-only facts) must be None for a
    probation operator: the caller never reads them then, and this drops them if it did."""
    timeline = [notice_for(n, role) for n in notices if n.alarm_id == record.alarm_id]
    offender = [n.offender for n in timeline if n.offender is not None]
    latest = record.latest
    band = latest.band
    detail = AlarmDetail(
        alarm=board_alarm(record, now_ms),
        timeline=timeline,
        track=Track(offender=offender),
        resolved_by=record.resolved_by,
        ack_note=record.ack_note,
        distance_band=None if band is None else {"min_m": band.min_m, "max_m": band.max_m},
        approaching=latest.approaching,
        zone=latest.zone,
        status=latest.status,
    )
    if role != "police":
        return detail
    facts = police or PoliceFacts(reason="")
    victims = [n.victim for n in timeline if n.victim is not None]
    victim = facts.victim or (victims[-1] if victims else None)
    return msgspec.structs.replace(
        detail,
        track=Track(offender=offender, victim=victim, rings_m=list(rings_m) if victim else []),
        distance_m=facts.distance_m,
        uncertainty_m=facts.uncertainty_m,
        confidence=facts.confidence,
        eta_s=facts.eta_s,
    )


# --- sessions and logins ----------------------------------------------------------------------


class Session(msgspec.Struct, frozen=True):
    """A logged-in operator (stored by the SHA-256 of its cookie)."""

    name: str
    role: Role
    csrf_token: str
    expires_at: int


def session_valid(session: Session, now_ms: int) -> bool:
    return now_ms < session.expires_at


@dataclass(frozen=True, slots=True)
class Throttle:
    """At most `attempts` failed logins per key within `window_ms`."""

    attempts: int
    window_ms: int

    def recent(self, failures: Sequence[int], now_ms: int) -> list[int]:
        """The failures that still count at `now_ms`."""
        return [at for at in failures if now_ms - at < self.window_ms]

    def blocked_for_ms(self, failures: Sequence[int], now_ms: int) -> int:
        """How long a login for this key is refused (0: allowed)."""
        recent = sorted(self.recent(failures, now_ms))
        if len(recent) < self.attempts:
            return 0
        return recent[-self.attempts] + self.window_ms - now_ms

"""Pure transitions of one alarm record: open, update, clear, acknowledge, resolve, fire a timer.

Each takes the current record (never changed) and returns the new record with the notices the
step sends. Looking records up, deduplicating inputs and indexing them is `AlarmBook`'s job.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from nabij.contract import AckRequest, AlarmKind, AlarmSignal, Notice, QueueName, ResolveRequest
from nabij.settings import Settings
from services.alarm_gateway.core.notices import CAUSE_TEXT, build_notices, split_facts
from services.alarm_gateway.core.record import APPLIED_IDS_KEPT, AlarmRecord, SafeFacts

Notices = list[tuple[QueueName, Notice]]
Step = tuple[AlarmRecord, Notices]
NO_NOTICES: Final[Notices] = []


def fresh(record: AlarmRecord, token: str | None = None) -> AlarmRecord:
    """A copy to change (records handed out in a Decision are never mutated afterwards), with
    `token` appended to its ring of applied input ids."""
    copy = msgspec.structs.replace(
        record, queues=list(record.queues), applied_ids=list(record.applied_ids)
    )
    if token is not None:
        copy.applied_ids.append(token)
        del copy.applied_ids[:-APPLIED_IDS_KEPT]
    return copy


class Rules:
    """The timing the settings give: acknowledgement timeouts and the update rate limit."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.update_interval_ms = max(0, round(settings.gateway.update_min_interval_s * 1000))
        self.band_edges = settings.privacy.probation_distance_bands_m

    def timeout_ms(self, kind: AlarmKind) -> int:
        return max(1, round(self.settings.policy(kind).ack_timeout_s * 1000))

    def flush_at(self, record: AlarmRecord) -> int:
        """When a held-back update may go out: one interval after the last `updated` notice."""
        anchor = record.last_update_at if record.last_update_at is not None else record.opened_at
        return anchor + self.update_interval_ms

    def next_due(self, record: AlarmRecord) -> int | None:
        """The escalation time while unacknowledged, or the flush of a held update if earlier."""
        times: list[int] = []
        if record.acknowledged_by is None and record.escalation_due_ms is not None:
            times.append(record.escalation_due_ms)
        if record.pending_update:
            times.append(self.flush_at(record))
        return min(times) if times else None

    def take(self, record: AlarmRecord, signal: AlarmSignal) -> None:
        """`signal`'s facts as `record`'s latest: safe ones stored, exact ones police-only. The
        devices too: after a swap the alarm (keyed by order and role) names the new device."""
        record.latest, record.police = split_facts(signal, self.band_edges)
        record.offender_device = signal.offender_device
        record.victim_device = signal.victim_device

    def settle(self, record: AlarmRecord, notices: Notices) -> Step:
        record.next_due_ms = self.next_due(record)
        return record, notices


def open_alarm(rules: Rules, signal: AlarmSignal, alarm_id: str, token: str, now_ms: int) -> Step:
    """A new alarm at level 1: `opened` to the policy's queues, escalation one timeout away."""
    policy = rules.settings.policy(signal.kind)
    record = AlarmRecord(
        alarm_id=alarm_id,
        alarm_key=signal.alarm_key,
        kind=signal.kind,
        order_id=signal.order_id,
        offender_device=signal.offender_device,
        victim_device=signal.victim_device,
        priority=policy.priority,
        level=1,
        queues=list(dict.fromkeys(policy.queues)),
        opened_at=now_ms,
        condition="active",
        acknowledged_by=None,
        acknowledged_at=None,
        next_due_ms=None,
        last_notice_at=now_ms,
        notices_sent=0,
        latest=SafeFacts(),
        escalation_due_ms=now_ms + rules.timeout_ms(signal.kind),
        applied_ids=[token],
    )
    rules.take(record, signal)
    return rules.settle(record, build_notices(record, "opened", now_ms))


def clear(
    rules: Rules, current: AlarmRecord, signal: AlarmSignal, token: str, now_ms: int
) -> Step | None:
    """The condition passed: `cleared` to every queue told so far, under the update rate limit.

    Within an interval of the last `updated`/`cleared` notice the clear is held
    (`pending_update`) and `fire` tells it when the interval has passed; a return before then is
    no return at all for the queues (they were never told it ended). None if already cleared.
    """
    if current.condition == "cleared":
        return None  # already told; a second `cleared` would only add noise
    record = fresh(current, token)
    record.condition = "cleared"
    record.cleared_at = now_ms
    rules.take(record, signal)
    if held(rules, record, now_ms):
        record.pending_update = True
        return rules.settle(record, NO_NOTICES.copy())
    return rules.settle(record, _tell(record, now_ms))


def update_now(
    rules: Rules,
    current: AlarmRecord,
    signal: AlarmSignal,
    token: str,
    now_ms: int,
    *,
    lead: str,
) -> Step:
    """An `updated` notice at once, outside the rate limit: a press, or a real return (the
    condition back after the queues were told it cleared; see `told_cleared`).

    Either is new danger that an earlier acknowledgement did not cover: the acknowledgement is
    withdrawn and escalation re-arms, so a human must take this one too. A real return can
    follow a told clear at once, but a told clear is itself rate limited: withdrawals of one
    alarm's acknowledgement are at least an update interval apart.
    """
    record = fresh(current, token)
    if record.acknowledged_by is not None:
        record.acknowledged_by = None
        record.acknowledged_at = None
        record.escalation_due_ms = now_ms + rules.timeout_ms(record.kind)
    record.condition = "active"
    rules.take(record, signal)
    record.pending_update = False
    record.last_update_at = now_ms
    return rules.settle(record, build_notices(record, "updated", now_ms, lead=lead))


def update_limited(
    rules: Rules, current: AlarmRecord, signal: AlarmSignal, token: str, now_ms: int
) -> Step:
    """New facts (or a condition back before its clear was told): `updated` unless an
    `updated`/`cleared` notice went out less than an interval ago; then it is held
    (`pending_update`) and `fire` sends it when the interval has passed."""
    record = fresh(current, token)
    rules.take(record, signal)
    record.condition = "active"
    if held(rules, record, now_ms):
        record.pending_update = True
        return rules.settle(record, NO_NOTICES.copy())
    return rules.settle(record, _tell(record, now_ms))


def told_cleared(record: AlarmRecord) -> bool:
    """Whether the queues were told the condition ended (a clear held back is not told yet; an
    escalation tells it too, in its reason)."""
    return record.condition == "cleared" and not record.pending_update


def held(rules: Rules, record: AlarmRecord, now_ms: int) -> bool:
    """Whether the rate limit holds a notice back: one went out less than an interval ago."""
    return record.last_update_at is not None and now_ms < rules.flush_at(record)


def _tell(record: AlarmRecord, now_ms: int) -> Notices:
    """The record's condition and latest facts, now: `cleared` or `updated` (rate limited)."""
    record.pending_update = False
    record.last_update_at = now_ms
    if record.condition == "cleared":
        tail = "" if record.acknowledged_by else "; escalation continues until acknowledged"
        cause = record.latest.cause
        lead = "Condition cleared" if cause is None else f"Condition cleared ({CAUSE_TEXT[cause]})"
        return build_notices(record, "cleared", now_ms, lead=lead, tail=tail)
    return build_notices(record, "updated", now_ms, lead="Update")


def acknowledge(
    rules: Rules, current: AlarmRecord, request: AckRequest, token: str, now_ms: int
) -> Step | None:
    """Escalation stops; `acknowledged` to every queue told so far. None if already acked."""
    if current.acknowledged_by is not None:
        return None  # acknowledged already: nothing new to say
    record = fresh(current, token)
    record.acknowledged_by = request.by
    record.acknowledged_at = now_ms
    record.acknowledged_via = request.via
    record.ack_note = request.note
    record.escalation_due_ms = None  # a held-back update may still be due
    return rules.settle(record, _told_by(record, "acknowledged", request, now_ms))


def resolve(current: AlarmRecord, request: ResolveRequest, token: str, now_ms: int) -> Step:
    """The alarm is closed (and acknowledged, if it was not): `resolved` to every queue told."""
    record = fresh(current, token)
    if record.acknowledged_by is None:
        record.acknowledged_by = request.by
        record.acknowledged_at = now_ms
        record.acknowledged_via = request.via
    record.resolved_by = request.by
    record.resolved_via = request.via
    record.resolved_at = now_ms
    record.resolve_note = request.note
    record.escalation_due_ms = None
    record.pending_update = False
    record.next_due_ms = None
    if record.police is not None:
        # Retention of the police facts counts from here (`core.retention`).
        record.police = msgspec.structs.replace(record.police, resolved_at=now_ms)
    return record, _told_by(record, "resolved", request, now_ms)


def _told_by(
    record: AlarmRecord,
    event: Literal["acknowledged", "resolved"],
    request: AckRequest | ResolveRequest,
    now_ms: int,
) -> Notices:
    """A person's act, to every queue told so far: who did it and their note, no facts."""
    lead = f"{event.capitalize()} by {request.by}"
    return build_notices(
        record, event, now_ms, lead=lead, with_situation=False, by=request.by, note=request.note
    )


def fire(rules: Rules, current: AlarmRecord, now_ms: int) -> Step | None:
    """What is due at `now_ms`: an escalation or reminder, else a held-back update. None if
    nothing is due."""
    if current.next_due_ms is None or current.next_due_ms > now_ms:
        return None
    record = fresh(current)
    escalation_due = record.escalation_due_ms
    if record.acknowledged_by is None and escalation_due is not None and escalation_due <= now_ms:
        notices = escalate(rules, record, now_ms)
        if record.pending_update and rules.flush_at(record) <= now_ms:
            notices += _tell(record, now_ms)  # a held clear due as well: one turn tells both
        return rules.settle(record, notices)
    if record.pending_update and rules.flush_at(record) <= now_ms:
        return rules.settle(record, _tell(record, now_ms))
    record, notices = rules.settle(record, NO_NOTICES.copy())
    return None if record.next_due_ms == current.next_due_ms else (record, notices)


def escalate(rules: Rules, record: AlarmRecord, now_ms: int) -> Notices:
    """Not acknowledged in time: widen to the escalation queues, or remind the same ones.

    The escalated notice goes to the new queues and to every queue already told, so probation
    sees that police got it. It carries the latest facts, so a held-back update goes with it; a
    held-back clear stays held (its reason says the condition cleared, but the `cleared` notice
    keeps to the rate limit, so a return after it is still no real return).
    """
    policy = rules.settings.policy(record.kind)
    waited_s = max(0, now_ms - record.opened_at) // 1000
    widen = [q for q in dict.fromkeys(policy.escalate_to) if q not in record.queues]
    state = "" if record.condition == "active" else " (condition has cleared)"
    record.level += 1
    if widen:
        record.queues.extend(widen)
        action = f", escalated to {' and '.join(widen)}"
    else:
        action = f": reminder, level {record.level}"
    lead = f"Not acknowledged after {waited_s} s{action}{state}"
    if record.condition == "active":
        record.pending_update = False
    record.escalation_due_ms = now_ms + rules.timeout_ms(record.kind)
    return build_notices(record, "escalated", now_ms, lead=lead)

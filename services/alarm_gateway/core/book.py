"""`AlarmBook`: every open alarm, found by id or by alarm key, and the inputs applied to them.

The book is the gateway's only in-memory state. It is rebuilt from the persisted records with
`load()`; `apply()` and `fire_due()` change it and return a `Decision` saying what to persist and
which notices to send. It never reads a clock: the shell passes `now_ms`. The record-level
rules live in `transitions.py`; the book finds the record, drops redelivered inputs and keeps its
indexes.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from nabij.contract import (
    AckRequest,
    AlarmSignal,
    GatewayInput,
    OutcomeStatus,
    RequestOutcome,
    ResolveRequest,
)
from nabij.settings import Settings
from services.alarm_gateway.core import transitions as t
from services.alarm_gateway.core.notices import MEASURED_KINDS, VICTIM_POSITION_QUEUES, about_victim
from services.alarm_gateway.core.record import AlarmRecord, Decision, derive_alarm_id

RESOLVED_KEPT = 1024
"""How many resolved alarms the book remembers, to recognise their redelivered inputs."""


def input_token(item: GatewayInput) -> str:
    """The idempotency id of an input; prefixed so a signal and a request can never collide."""
    if isinstance(item, AlarmSignal):
        return f"sig:{item.signal_id}"
    if isinstance(item, AckRequest):
        return f"ack:{item.request_id}"
    return f"res:{item.request_id}"


def legacy_alarm_key(signal: AlarmSignal) -> str:
    """The key the proximity service gave a ring or zone condition before keys named the order's
    roles instead of its devices (issue 10): records stored then still hold it."""
    role = signal.zone if signal.kind == "zone_alarm" else signal.victim_device
    return f"{signal.kind}|{signal.order_id}|{signal.offender_device}|{role}"


def _unknown(alarm_id: str) -> str:
    return f"unknown alarm {alarm_id!r}: no open alarm has this id (never opened or resolved)"


def _outcome(
    request: AckRequest | ResolveRequest,
    status: OutcomeStatus,
    detail: str,
    now_ms: int,
    record: AlarmRecord | None = None,
) -> RequestOutcome:
    return RequestOutcome(
        request_id=request.request_id,
        status=status,
        at=now_ms,
        detail=detail,
        alarm_id=request.alarm_id,
        acknowledged_by=record.acknowledged_by if record else None,
        acknowledged_at=record.acknowledged_at if record else None,
    )


class AlarmBook:
    """The open alarms, indexed by id and by alarm key (at most one open alarm per key)."""

    def __init__(self, settings: Settings) -> None:
        self._rules = t.Rules(settings)
        self._open: dict[str, AlarmRecord] = {}
        self._by_key: dict[str, str] = {}
        # Orders with an open alarm about the victim's whereabouts, and those alarms' ids.
        # (Keyed by order id: platform alarms, of no order, are never about her whereabouts.)
        self._near: dict[str | None, set[str]] = {}
        # Recently resolved alarms (oldest first) and the input ids they had applied.
        self._resolved: dict[str, AlarmRecord] = {}
        self._resolved_tokens: dict[str, str] = {}

    # --- state ---------------------------------------------------------------------------------

    def load(self, records: Iterable[AlarmRecord]) -> None:
        """Add persisted records (after a restart).

        Records with `resolved_at` set (e.g. the tail of the resolved stream) are not reopened;
        they only let the book recognise their inputs when redelivered. Due times are re-derived
        so that every unacknowledged alarm has one.
        """
        for loaded in records:
            record = t.fresh(loaded)
            if record.resolved_at is not None:
                self._remember_resolved(record)
                continue
            if record.acknowledged_by is not None:
                record.escalation_due_ms = None
            elif record.escalation_due_ms is None:
                record.escalation_due_ms = (
                    record.next_due_ms
                    if record.next_due_ms is not None
                    else record.last_notice_at + self._rules.timeout_ms(record.kind)
                )
            record.next_due_ms = self._rules.next_due(record)
            self._put(record)

    def get(self, alarm_id: str) -> AlarmRecord | None:
        return self._open.get(alarm_id)

    def open_alarms(self) -> list[AlarmRecord]:
        """Every open alarm, most urgent priority first, then oldest first."""
        return sorted(self._open.values(), key=lambda r: (r.priority, r.opened_at, r.alarm_id))

    def due(self, now_ms: int) -> list[str]:
        """Ids of alarms whose next due time has come, most urgent priority first."""
        ready = [
            r for r in self._open.values() if r.next_due_ms is not None and r.next_due_ms <= now_ms
        ]
        ready.sort(key=lambda r: (r.priority, r.next_due_ms or 0, r.alarm_id))
        return [r.alarm_id for r in ready]

    def next_due_ms(self) -> int | None:
        """The earliest due time of any open alarm (the shell may sleep until then)."""
        times = [r.next_due_ms for r in self._open.values() if r.next_due_ms is not None]
        return min(times) if times else None

    # --- inputs --------------------------------------------------------------------------------

    def apply(self, item: GatewayInput, now_ms: int) -> Decision:
        """Apply one signal or human request. Applying the same input twice changes nothing."""
        if isinstance(item, AlarmSignal):
            return self._apply_signal(item, now_ms)
        return self._apply_request(item, now_ms)

    def fire_due(self, alarm_id: str, now_ms: int) -> Decision:
        """Escalate or remind an unacknowledged alarm, or flush a held-back update, if due."""
        current = self._open.get(alarm_id)
        if current is None:
            return Decision(rejection=_unknown(alarm_id))
        return self._upsert(t.fire(self._rules, current, now_ms))

    def _apply_signal(self, signal: AlarmSignal, now_ms: int) -> Decision:
        rules = self._rules
        token = input_token(signal)
        if token in self._resolved_tokens:
            return Decision()  # redelivery of an input that an already resolved alarm applied
        alarm_id = self._by_key.get(signal.alarm_key) or self._adopt_legacy(signal)
        if alarm_id is None:
            if signal.action == "clear":
                return Decision()  # nothing open for this condition: normal after a resolve
            # `update` without an open alarm opens one: a lost `open` must not hide a condition.
            new_id = self._new_alarm_id(signal)
            return self._upsert(t.open_alarm(rules, signal, new_id, token, now_ms))
        current = self._open[alarm_id]
        if token in current.applied_ids:
            return Decision()  # redelivery
        if signal.action == "clear":
            return self._upsert(t.clear(rules, current, signal, token, now_ms))
        if signal.kind == "aware_button":
            # Every press is a notice: never rate limited, held, filtered or merged.
            lead = "Alarm button pressed again"
            return self._upsert(t.update_now(rules, current, signal, token, now_ms, lead=lead))
        if t.told_cleared(current):
            # A real return: the queues were told the condition ended, and it is back. That is
            # news the acknowledgement did not cover. A return before the clear was told is
            # not: the queues never heard it end, so it is an update like any other.
            lead = "Condition returned"
            return self._upsert(t.update_now(rules, current, signal, token, now_ms, lead=lead))
        return self._upsert(t.update_limited(rules, current, signal, token, now_ms))

    def _adopt_legacy(self, signal: AlarmSignal) -> str | None:
        """An alarm opened before its key named roles (`legacy_alarm_key`): moved to the
        signal's key, so the condition stays one alarm across the upgrade. The move persists
        with the record the signal's step writes; until then a restart finds it the same way."""
        if signal.kind not in MEASURED_KINDS:
            return None  # a device's own alarms were always keyed by device
        alarm_id = self._by_key.get(legacy_alarm_key(signal))
        if alarm_id is None:
            return None
        record = self._open[alarm_id]
        self._drop(alarm_id)
        self._put(msgspec.structs.replace(record, alarm_key=signal.alarm_key))
        return alarm_id

    def _apply_request(self, request: AckRequest | ResolveRequest, now_ms: int) -> Decision:
        token = input_token(request)
        current = self._open.get(request.alarm_id)
        if current is None:
            if token in self._resolved_tokens:
                return Decision()  # redelivery of a request that was applied before
            reason = _unknown(request.alarm_id)
            return Decision(
                rejection=reason, outcome=_outcome(request, "no_such_alarm", reason, now_ms)
            )
        if token in current.applied_ids:
            return Decision()  # redelivery
        if isinstance(request, AckRequest):
            step = t.acknowledge(self._rules, current, request, token, now_ms)
            if step is None:
                detail = f"already acknowledged by {current.acknowledged_by}"
                held = _outcome(request, "already_acknowledged", detail, now_ms, current)
                return Decision(outcome=held)
            decision = self._upsert(step)
            decision.outcome = _outcome(request, "applied", "acknowledged", now_ms, step[0])
            return decision
        record, notices = t.resolve(current, request, token, now_ms)
        self._drop(record.alarm_id)
        self._remember_resolved(record)
        outcome = _outcome(request, "applied", "resolved", now_ms, record)
        return Decision(resolved=[record], notices=self._shield(notices), outcome=outcome)

    # --- indexes -------------------------------------------------------------------------------

    def _upsert(self, step: t.Step | None) -> Decision:
        if step is None:
            return Decision()
        record, notices = step
        self._put(record)
        return Decision(upserts=[record], notices=self._shield(notices))

    def _shield(self, notices: t.Notices) -> t.Notices:
        """PRIVACY: while an alarm about the victim's whereabouts is open in an order, no
        probation notice of that order (battery, tamper, zone, presence...) carries the
        offender's position or a confidence: he may be within a ring of her, and a band would
        make his position an annulus around her."""
        return [
            (queue, msgspec.structs.replace(notice, offender=None, confidence=None))
            if queue not in VICTIM_POSITION_QUEUES and notice.order_id in self._near
            else (queue, notice)
            for queue, notice in notices
        ]

    def _new_alarm_id(self, signal: AlarmSignal) -> str:
        """`alarm_id_for(signal)`, stepping around an id already in use (a reused signal id)."""
        attempt = 0
        while True:
            candidate = derive_alarm_id(signal.signal_id, attempt)
            if candidate not in self._open and candidate not in self._resolved:
                return candidate
            attempt += 1

    def _put(self, record: AlarmRecord) -> None:
        self._open[record.alarm_id] = record
        if about_victim(record.kind, record.victim_device):
            self._near.setdefault(record.order_id, set()).add(record.alarm_id)
        holder = self._by_key.get(record.alarm_key)
        if holder is None or holder == record.alarm_id:
            self._by_key[record.alarm_key] = record.alarm_id
            return
        # Two open records for one key can only come from loaded data: the oldest one wins.
        other = self._open[holder]
        if (record.opened_at, record.alarm_id) < (other.opened_at, other.alarm_id):
            self._by_key[record.alarm_key] = record.alarm_id

    def _drop(self, alarm_id: str) -> None:
        record = self._open.pop(alarm_id)
        near = self._near.get(record.order_id, set())
        near.discard(alarm_id)
        if not near:
            self._near.pop(record.order_id, None)
        if self._by_key.get(record.alarm_key) == alarm_id:
            del self._by_key[record.alarm_key]
            rest = [r for r in self._open.values() if r.alarm_key == record.alarm_key]
            if rest:
                heir = min(rest, key=lambda r: (r.opened_at, r.alarm_id))
                self._by_key[record.alarm_key] = heir.alarm_id

    def _remember_resolved(self, record: AlarmRecord) -> None:
        self._resolved.pop(record.alarm_id, None)
        self._resolved[record.alarm_id] = record
        for token in record.applied_ids:
            self._resolved_tokens[token] = record.alarm_id
        while len(self._resolved) > RESOLVED_KEPT:
            oldest_id = next(iter(self._resolved))
            oldest = self._resolved.pop(oldest_id)
            for token in oldest.applied_ids:
                if self._resolved_tokens.get(token) == oldest_id:
                    del self._resolved_tokens[token]

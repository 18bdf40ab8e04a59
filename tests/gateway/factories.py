"""Builders shared by the gateway core tests: settings, signals, requests, positions."""

from __future__ import annotations

from typing import Any

from nabij.config import EscalationPolicy, GatewaySettings, Settings
from nabij.contract import (
    AckRequest,
    AlarmKind,
    AlarmSignal,
    Notice,
    Position,
    QueueName,
    ResolveRequest,
    SignalAction,
)
from services.alarm_gateway.core.alarms import Decision

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SECOND = 1000
MINUTE = 60 * SECOND

OFFENDER_AT = Position(lat=52.370216, lon=4.895168, acc=8.0, ts=T0)
VICTIM_AT = Position(lat=52.373000, lon=4.892000, acc=6.0, ts=T0)


def settings(
    *,
    update_min_interval_s: float = 30,
    escalation: dict[AlarmKind, EscalationPolicy] | None = None,
) -> Settings:
    return Settings(
        gateway=GatewaySettings(update_min_interval_s=update_min_interval_s),
        escalation=escalation or {},
    )


def signal(
    signal_id: str,
    action: SignalAction = "open",
    *,
    kind: AlarmKind = "proximity_alarm",
    key: str | None = None,
    at: int = T0,
    distance_m: float | None = 480.0,
    reason: str | None = None,
    **extra: Any,
) -> AlarmSignal:
    if reason is None:
        reason = (
            "Offender within 480 m of victim (alarm ring 500 m)"
            if kind.startswith("proximity")
            else "Victim pressed the alarm button"
        )
    return AlarmSignal(
        signal_id=signal_id,
        action=action,
        kind=kind,
        alarm_key=key if key is not None else f"{kind}:ORD-1:ank-1:vic-1",
        order_id="ORD-1",
        offender_device="ank-1",
        victim_device="vic-1",
        at=at,
        reason=reason,
        distance_m=distance_m,
        uncertainty_m=12.0 if distance_m is not None else None,
        offender=OFFENDER_AT,
        victim=VICTIM_AT,
        **extra,
    )


def ack(
    request_id: str, alarm_id: str, *, by: str = "op-anna", note: str | None = None
) -> AckRequest:
    return AckRequest(request_id=request_id, alarm_id=alarm_id, by=by, via="cli", at=T0, note=note)


def resolve(request_id: str, alarm_id: str, *, by: str = "op-anna") -> ResolveRequest:
    return ResolveRequest(
        request_id=request_id, alarm_id=alarm_id, by=by, via="cli", at=T0, note="done"
    )


def notice(**fields: Any) -> Notice:
    """A notice as the gateway sends one, with `fields` replaced."""
    base: dict[str, Any] = {
        "notice_id": "n1",
        "alarm_id": "AL-1",
        "event": "acknowledged",
        "kind": "strap_tamper",
        "priority": 1,
        "order_id": "ORD-1",
        "offender_device": "ank-1",
        "level": 1,
        "at": T0,
        "reason": "Acknowledged by op-anna",
    }
    return Notice(**(base | fields))


def queues_of(decision: Decision) -> list[QueueName]:
    return [queue for queue, _ in decision.notices]


def events_of(decision: Decision) -> set[str]:
    return {notice.event for _, notice in decision.notices}


def only_notice(decision: Decision, queue: QueueName) -> Notice:
    found = [notice for q, notice in decision.notices if q == queue]
    assert len(found) == 1, decision.notices
    return found[0]

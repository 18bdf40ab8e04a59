"""Building alarm signals: keys, deterministic ids and human reasons (never coordinates)."""

from __future__ import annotations

from dataclasses import dataclass

from nabij.contract import AlarmKind, AlarmSignal, Position, SignalAction
from services.proximity.core.hysteresis import RingParams
from services.proximity.core.topology import Membership

RING_NAMES: dict[AlarmKind, str] = {
    "proximity_pre_alert": "pre-alert ring",
    "proximity_alarm": "alarm ring",
}


def pair_alarm_key(kind: AlarmKind, order_id: str, victim: str) -> str:
    """By order and role (`topology.victim_role`), not device: a swapped device keeps the alarm."""
    return f"{kind}|{order_id}|offender|{victim}"


def device_alarm_key(kind: AlarmKind, order_id: str, device_id: str) -> str:
    return f"{kind}|{order_id}|{device_id}"


def signal_id(alarm_key: str, action: SignalAction, device_id: str, tag: str) -> str:
    """`tag` is the seq of the input that caused the signal, plus a suffix for seq-less inputs."""
    return f"{alarm_key}|{action}|{device_id}|{tag}"


@dataclass(slots=True)  # not frozen: built on every comparison, and frozen init costs double
class Observation:
    """One comparison of a pair, as the ring signals need it."""

    order_id: str
    offender_device: str
    victim_device: str
    victim_role: str
    distance_m: float
    uncertainty_m: float
    offender: Position
    victim: Position
    reporter: str
    tag: str
    """Names the reporter's input (`DeviceState.tag`) in signal ids."""
    now_ms: int
    late_s: int | None = None
    """Set when the reporter's fix is late (a backlog): how long before receipt it was measured."""


@dataclass(frozen=True, slots=True)
class Facts:
    """What a signal adds beyond the observation: how sure, how fast, and why (if unusual)."""

    confidence: float | None = None
    closing_speed_mps: float | None = None
    eta_s: float | None = None
    cause: str | None = None
    """Replaces the usual explanation in an `open` reason (a prediction, an ended exemption)."""
    note: str | None = None
    """Appended to the reason (e.g. the low confidence of a coarse fix)."""


NO_FACTS = Facts()


def ring_signal(
    obs: Observation,
    params: RingParams,
    action: SignalAction,
    held_ms: int,
    facts: Facts = NO_FACTS,
) -> AlarmSignal:
    """An open, update or clear of a proximity ring; `held_ms` is how long the condition held."""
    key = pair_alarm_key(params.kind, obs.order_id, obs.victim_role)
    ring = f"{RING_NAMES[params.kind]} {params.ring_m:.0f} m"
    parties = f"Offender device {obs.offender_device}"
    victim = f"victim device {obs.victim_device}"
    if action == "open":
        if facts.cause is not None:
            reason = f"{parties} {obs.distance_m:.0f} m from {victim} ({ring}): {facts.cause}."
        else:
            if held_ms > 0 or obs.distance_m >= params.critical_m:
                why = f"{ring}) for {held_ms // 1000} s"
            else:
                why = f"{ring}, under the critical {params.critical_m:.0f} m)"
            reason = f"{parties} within {obs.distance_m:.0f} m of {victim} ({why}."
    elif action == "update":
        reason = f"{parties} now {obs.distance_m:.0f} m from {victim} ({ring})."
    else:
        reason = (
            f"{parties} beyond {params.exit_m:.0f} m of {victim} for {held_ms // 1000} s "
            f"({ring}, exit margin {params.exit_margin_m:.0f} m)."
        )
    if facts.note is not None:
        reason = f"{reason[:-1]}; {facts.note}."
    measured = obs.offender if obs.reporter == obs.offender_device else obs.victim
    return AlarmSignal(
        signal_id=signal_id(key, action, obs.reporter, obs.tag),
        action=action,
        kind=params.kind,
        alarm_key=key,
        order_id=obs.order_id,
        offender_device=obs.offender_device,
        at=obs.now_ms,
        victim_device=obs.victim_device,
        distance_m=round(obs.distance_m, 1),
        uncertainty_m=round(obs.uncertainty_m, 1),
        offender=obs.offender,
        victim=obs.victim,
        confidence=facts.confidence,
        closing_speed_mps=facts.closing_speed_mps,
        eta_s=facts.eta_s,
        reason=late_reason(reason, obs.late_s),
        happened_at=None if obs.late_s is None else measured.ts,
        late_s=obs.late_s,
    )


def late_reason(reason: str, late_s: int | None) -> str:
    """The reason, saying how late a condition found in a backlog was detected."""
    if late_s is None:
        return reason
    return f"{reason[:-1]}; DETECTED LATE: it happened {late_s} s ago (device out of coverage)."


def zone_alarm_key(order_id: str, zone: str) -> str:
    """By order and role, not device: a swapped ankle monitor keeps the alarm."""
    return f"zone_alarm|{order_id}|offender|{zone}"


def zone_signal(
    order_id: str,
    offender_device: str,
    zone: str,
    action: SignalAction,
    *,
    offender: Position,
    signed_m: float,
    params: RingParams,
    held_ms: int,
    tag: str,
    now_ms: int,
    facts: Facts = NO_FACTS,
    late_s: int | None = None,
) -> AlarmSignal:
    """An open or clear of an exclusion zone. Names the zone, never its geometry. `late_s`: the
    offender's fix was late (a backlog)."""
    key = zone_alarm_key(order_id, zone)
    who = f"Offender device {offender_device}"
    where = f"{abs(signed_m):.0f} m {'inside' if signed_m <= 0 else 'outside'}"
    if action == "open":
        if facts.cause is not None:
            why = facts.cause
        elif held_ms > 0 or signed_m >= params.critical_m:
            why = f"for {held_ms // 1000} s"
        else:
            why = f"deeper than {-params.critical_m:.0f} m"
        reason = f"{who} entered exclusion zone {zone!r} of order {order_id} ({where}, {why})."
    else:
        reason = (
            f"{who} left exclusion zone {zone!r} of order {order_id}: beyond "
            f"{params.exit_margin_m:.0f} m for {held_ms // 1000} s (now {where})."
        )
    if facts.note is not None:
        reason = f"{reason[:-1]}; {facts.note}."
    return AlarmSignal(
        signal_id=signal_id(key, action, offender_device, tag),
        action=action,
        kind="zone_alarm",
        alarm_key=key,
        order_id=order_id,
        offender_device=offender_device,
        at=now_ms,
        reason=late_reason(reason, late_s),
        offender=offender,
        zone=zone,
        confidence=facts.confidence,
        happened_at=None if late_s is None else offender.ts,
        late_s=late_s,
    )


def device_signal(
    kind: AlarmKind,
    action: SignalAction,
    device_id: str,
    membership: Membership,
    *,
    tag: str,
    now_ms: int,
    reason: str,
    offender: Position | None,
    victim: Position | None = None,
) -> AlarmSignal:
    """A condition of one device (button, tamper, battery, presence, silence) in one order."""
    key = device_alarm_key(kind, membership.order_id, device_id)
    return AlarmSignal(
        signal_id=signal_id(key, action, device_id, tag),
        action=action,
        kind=kind,
        alarm_key=key,
        order_id=membership.order_id,
        offender_device=membership.offender_device,
        at=now_ms,
        reason=reason,
        victim_device=device_id if membership.role == "victim" else None,
        offender=offender,
        victim=victim,
    )

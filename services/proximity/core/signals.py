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


def pair_alarm_key(kind: AlarmKind, order_id: str, offender: str, victim: str) -> str:
    return f"{kind}|{order_id}|{offender}|{victim}"


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
    distance_m: float
    uncertainty_m: float
    offender: Position
    victim: Position
    reporter: str
    seq: int
    now_ms: int


def ring_signal(
    obs: Observation,
    params: RingParams,
    action: SignalAction,
    held_ms: int,
) -> AlarmSignal:
    """An open, update or clear of a proximity ring; `held_ms` is how long the condition held."""
    key = pair_alarm_key(params.kind, obs.order_id, obs.offender_device, obs.victim_device)
    ring = f"{RING_NAMES[params.kind]} {params.ring_m:.0f} m"
    parties = f"Offender device {obs.offender_device}"
    victim = f"victim device {obs.victim_device}"
    if action == "open":
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
    return AlarmSignal(
        signal_id=signal_id(key, action, obs.reporter, str(obs.seq)),
        action=action,
        kind=params.kind,
        alarm_key=key,
        order_id=obs.order_id,
        offender_device=obs.offender_device,
        at=obs.now_ms,
        reason=reason,
        victim_device=obs.victim_device,
        distance_m=round(obs.distance_m, 1),
        uncertainty_m=round(obs.uncertainty_m, 1),
        offender=obs.offender,
        victim=obs.victim,
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

"""Tests of the pure proximity core; shared builders live here (no broker, no Redis, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence

from geographiclib.geodesic import Geodesic

from nabij.config import Order, ProximitySettings
from nabij.contract import AlarmSignal, DeviceCommand, DeviceEvent, EventType, Fix
from services.proximity.core.engine import Effects, ProximityEngine

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, device and server time alike
DAM = (52.3731, 4.8926)  # Amsterdam, Dam square: where the victim stands
OFFENDER = "ank-0001"
VICTIM = "vic-0001"


def point_at(
    distance_m: float, bearing: float = 90.0, origin: tuple[float, float] = DAM
) -> tuple[float, float]:
    """The WGS84 point `distance_m` from `origin` along `bearing`."""
    out = Geodesic.WGS84.Direct(origin[0], origin[1], bearing, distance_m)
    return out["lat2"], out["lon2"]


def fix_at(
    device: str,
    seq: int,
    ts: int,
    distance_m: float = 0.0,
    *,
    bearing: float = 90.0,
    acc: float = 5.0,
    batt: int | None = None,
) -> Fix:
    lat, lon = point_at(distance_m, bearing) if distance_m else DAM
    return Fix(device_id=device, seq=seq, ts=ts, lat=lat, lon=lon, acc=acc, batt=batt)


def event(
    device: str,
    seq: int,
    ts: int,
    kind: EventType,
    *,
    batt: int | None = None,
    at: float | None = None,
) -> DeviceEvent:
    if at is None:
        return DeviceEvent(device_id=device, seq=seq, ts=ts, type=kind, batt=batt)
    lat, lon = point_at(at)
    return DeviceEvent(
        device_id=device, seq=seq, ts=ts, type=kind, lat=lat, lon=lon, acc=8.0, batt=batt
    )


def order(
    order_id: str = "O-1",
    offender: str = OFFENDER,
    victims: Sequence[str] = (VICTIM,),
    alarm_m: float = 500,
    pre_alert_m: float | None = None,
) -> Order:
    return Order(
        id=order_id,
        offender_device=offender,
        victim_devices=list(victims),
        alarm_m=alarm_m,
        pre_alert_m=pre_alert_m,
    )


def engine(
    orders: Sequence[Order] | None = None, **settings: float | int | None
) -> ProximityEngine:
    return ProximityEngine(orders or [order()], ProximitySettings.model_validate(settings))


class Drive:
    """Drives an engine like the shell does, keeping the device seqs and collecting all effects."""

    def __init__(self, eng: ProximityEngine) -> None:
        self.engine = eng
        self.seqs: dict[str, int] = {}
        self.effects = Effects()

    def next_seq(self, device: str) -> int:
        self.seqs[device] = self.seqs.get(device, -1) + 1
        return self.seqs[device]

    def fix(
        self,
        device: str,
        ts: int,
        distance_m: float = 0.0,
        *,
        bearing: float = 90.0,
        acc: float = 5.0,
        batt: int | None = None,
    ) -> Effects:
        """A fix from `device` at `distance_m` from the Dam, received at its own ts."""
        step_effects = Effects()
        seq = self.next_seq(device)
        f = fix_at(device, seq, ts, distance_m, bearing=bearing, acc=acc, batt=batt)
        self.engine.apply(f, ts, step_effects)
        self._collect(step_effects)
        return step_effects

    def event(self, device: str, ts: int, kind: EventType, *, batt: int | None = None) -> Effects:
        step_effects = Effects()
        self.engine.apply(
            event(device, self.next_seq(device), ts, kind, batt=batt), ts, step_effects
        )
        self._collect(step_effects)
        return step_effects

    def _collect(self, step_effects: Effects) -> None:
        self.effects.signals.extend(step_effects.signals)
        self.effects.commands.extend(step_effects.commands)
        self.effects.ignored.extend(step_effects.ignored)
        self.effects.changed_devices |= step_effects.changed_devices
        self.effects.changed_pairs |= step_effects.changed_pairs


def opens(signals: Sequence[AlarmSignal], kind: str | None = None) -> list[AlarmSignal]:
    return [s for s in signals if s.action == "open" and (kind is None or s.kind == kind)]


def of_action(signals: Sequence[AlarmSignal], action: str, kind: str) -> list[AlarmSignal]:
    return [s for s in signals if s.action == action and s.kind == kind]


def commands_to(commands: Sequence[tuple[str, DeviceCommand]], device: str) -> list[DeviceCommand]:
    return [command for target, command in commands if target == device]

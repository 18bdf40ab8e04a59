"""Exclusion zones against an offender's accepted fixes: the same hysteresis as the rings.

The distance that a zone's ring machine sees is the signed distance to the zone's boundary
(negative inside), so the ring is at 0 m, the exit margin lies outside the zone and the critical
distance ("deep inside") is negative. The accuracy rule applies as for pairs, with the zone's size
(radius, or equivalent radius of a polygon) in place of the ring. A straight path between two
consecutive fine fixes that passes through a zone opens it even when neither fix is inside.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Final

import msgspec

from nabij.contract import AlarmSignal, ClearCause, Position, SignalAction
from nabij.settings import ProximitySettings
from services.proximity.core.accuracy import zone_inside_probability, zone_reading
from services.proximity.core.effects import Effects
from services.proximity.core.exemptions import Exemptions
from services.proximity.core.hysteresis import Transition, step
from services.proximity.core.signals import NO_FACTS, Facts, zone_signal
from services.proximity.core.state import DeviceState, RingState, ZoneState
from services.proximity.core.timing import lateness_s
from services.proximity.core.zones import ZoneSet, ZoneSpec

_CLOSED: Final = frozenset({"outside", "entering"})
ZoneChange = tuple[ZoneSpec, Transition]


class ZoneJudge:
    def __init__(
        self,
        zones: dict[str, ZoneSet],
        exemptions: dict[str, Exemptions],
        settings: ProximitySettings,
    ) -> None:
        self._zones = zones
        self._exemptions = exemptions
        self._max_gap_ms = round(settings.max_fix_age_s * 1000)
        self._late_ms = round(settings.late_after_s * 1000)

    def has_zones(self, device_id: str) -> bool:
        return device_id in self._zones

    def on_fix(
        self,
        device: DeviceState,
        previous: Position | None,
        now_ms: int,
        effects: Effects,
    ) -> list[ZoneChange]:
        """Judge the device's newest fix (and its path from `previous`) against its zones."""
        zone_set = self._zones.get(device.device_id)
        fix = device.fix
        if zone_set is None or fix is None:
            return []
        if previous is not None and fix.ts - previous.ts > self._max_gap_ms:
            previous = None  # after a long gap a straight line says nothing
        lat_min, lat_max, lon_min, lon_max = fix.lat, fix.lat, fix.lon, fix.lon
        if previous is not None:
            lat_min, lat_max = min(lat_min, previous.lat), max(lat_max, previous.lat)
            lon_min, lon_max = min(lon_min, previous.lon), max(lon_max, previous.lon)
        specs = zone_set.near(lat_min, lon_min, lat_max, lon_max)
        if device.zones:
            # Zones not outside must see every fix, near or not, to be able to clear.
            extra = [
                s
                for s in zone_set.specs
                if s.key in device.zones
                and (device.zones[s.key].ring.phase != "outside" or device.zones[s.key].exempt)
                and s not in specs
            ]
            specs = specs + extra
        return self._judge(
            device, zone_set, specs, previous=previous, now_ms=now_ms, effects=effects
        )

    def judge_orders(
        self, device: DeviceState, order_ids: Collection[str], now_ms: int, effects: Effects
    ) -> list[ZoneChange]:
        """The zones of new or changed orders, judged at once from the offender's latest fix
        (a new version of the orders): a zone he is in opens without waiting for his next fix."""
        zone_set = self._zones.get(device.device_id)
        if zone_set is None or device.fix is None:
            return []
        specs = [spec for spec in zone_set.specs if spec.order_id in order_ids]
        if specs:
            effects.changed_devices.add(device.device_id)
        tag = f"{device.tag(device.last_seq)}|order-{now_ms}"
        return self._judge(
            device, zone_set, specs, previous=None, now_ms=now_ms, effects=effects, tag=tag
        )

    def ended(
        self,
        device: DeviceState,
        spec: ZoneSpec,
        cause: ClearCause,
        now_ms: int,
        effects: Effects,
    ) -> list[ZoneChange]:
        """The zone's order ended or no longer has it: an open zone alarm is cleared, saying
        why (the gateway still escalates it until a human acknowledges); its state is dropped."""
        state = device.pop_zone(spec.key)
        if state is None:
            return []
        effects.changed_devices.add(device.device_id)
        fix = device.fix
        if state.ring.phase in _CLOSED or fix is None or state.signed_m is None:
            return []
        signal = _judged_on_state(
            spec, fix, state.signed_m, "clear", tag=f"order-{now_ms}", now_ms=now_ms
        )
        reason = (
            f"Order {spec.order_id} no longer binds offender device {spec.offender} to exclusion "
            f"zone {spec.name!r} ({cause.replace('_', ' ')})."
        )
        effects.signals.append(msgspec.structs.replace(signal, reason=reason, cause=cause))
        return [(spec, "cleared")]

    def _judge(
        self,
        device: DeviceState,
        zone_set: ZoneSet,
        specs: Sequence[ZoneSpec],
        *,
        previous: Position | None,
        now_ms: int,
        effects: Effects,
        tag: str | None = None,
    ) -> list[ZoneChange]:
        """`specs` against the device's newest fix, and the path from `previous` if given."""
        fix = device.fix
        if fix is None or not specs:
            return []
        projection = zone_set.projection
        here = projection.xy(fix.lat, fix.lon)
        there = None if previous is None else projection.xy(previous.lat, previous.lon)
        changes: list[ZoneChange] = []
        for spec in specs:
            old = device.zones.get(spec.key) or ZoneState()
            shape = spec.shape
            signed = shape.signed_m(*here)
            acc = fix.acc
            reading = zone_reading(signed, acc, shape.size_m)
            fine = reading.fine
            exemptions = self._exemptions.get(spec.order_id)
            exempt = exemptions is not None and exemptions.exempt(spec.name, fix.ts, fix)
            ring, transition = old.ring, None
            facts = Facts(round(zone_inside_probability(signed, acc), 3))
            if exempt and ring.phase in _CLOSED:
                ring = ring if ring.phase == "outside" else RingState("outside", fix.ts)
            else:
                ring, transition = step(old.ring, reading, fix.ts, spec.params)
                if (
                    transition is None
                    and ring.phase in _CLOSED
                    and there is not None
                    and previous is not None
                    and fine
                    and previous.acc <= shape.size_m
                    and reading.enter_m > 0.0
                    and shape.crossed(there, here)
                ):
                    ring, transition = RingState("inside", fix.ts), "opened"
                    gap_s = (fix.ts - previous.ts) // 1000
                    facts = Facts(
                        facts.confidence,
                        cause=f"the path between two fixes {gap_s} s apart crossed it",
                    )
            if transition is not None:
                held_ms = (
                    fix.ts - old.ring.since_ts if old.ring.phase in ("entering", "exiting") else 0
                )
                if facts.cause is None and not fine:
                    facts = Facts(facts.confidence, note=f"coarse position (±{acc:.0f} m)")
                action: SignalAction = "open" if transition == "opened" else "clear"
                effects.signals.append(
                    zone_signal(
                        spec.order_id,
                        spec.offender,
                        spec.name,
                        action,
                        offender=fix,
                        signed_m=signed,
                        params=spec.params,
                        held_ms=held_ms,
                        tag=device.tag(device.last_seq) if tag is None else tag,
                        now_ms=now_ms,
                        facts=facts,
                        late_s=lateness_s(fix.ts, now_ms, self._late_ms),
                    )
                )
                changes.append((spec, transition))
            new = ZoneState(ring, round(signed, 1), acc, exempt)
            if new != old:
                device.set_zone(spec.key, new)
        return changes

    def tick(self, device: DeviceState, now_ms: int, effects: Effects) -> list[ZoneChange]:
        """Zones whose exemption ended: open those the offender's last fix is inside."""
        zone_set = self._zones.get(device.device_id)
        if zone_set is None or not device.zones:
            return []
        changes: list[ZoneChange] = []
        for spec in zone_set.specs:
            state = device.zones.get(spec.key)
            exemptions = self._exemptions.get(spec.order_id)
            if state is None or not state.exempt or exemptions is None:
                continue
            if exemptions.exempt(spec.name, now_ms, device.fix):
                continue
            effects.changed_devices.add(device.device_id)
            ring = state.ring
            fix = device.fix
            if (
                ring.phase in _CLOSED
                and fix is not None
                and state.signed_m is not None
                and state.acc is not None
                and (reading := zone_reading(state.signed_m, state.acc, spec.shape.size_m)).may_open
                and reading.enter_m <= 0.0
            ):
                ring = RingState("inside", fix.ts)
                facts = Facts(
                    round(zone_inside_probability(state.signed_m, state.acc), 3),
                    cause="exemption window ended with the offender inside",
                )
                tag = f"{device.tag(device.last_seq)}|exemption-end"
                effects.signals.append(
                    _judged_on_state(
                        spec, fix, state.signed_m, "open", tag=tag, now_ms=now_ms, facts=facts
                    )
                )
                changes.append((spec, "opened"))
            device.set_zone(spec.key, ZoneState(ring, state.signed_m, state.acc, False))
        return changes


def _judged_on_state(
    spec: ZoneSpec,
    fix: Position,
    signed_m: float,
    action: SignalAction,
    *,
    tag: str,
    now_ms: int,
    facts: Facts = NO_FACTS,
) -> AlarmSignal:
    """A zone signal that a change of time or orders, not a new fix, caused: judged on the
    offender's last fix and its stored distance to the boundary."""
    return zone_signal(
        spec.order_id, spec.offender, spec.name, action, offender=fix, signed_m=signed_m,
        params=spec.params, held_ms=0, tag=tag, now_ms=now_ms, facts=facts,
    )  # fmt: skip

"""The proximity engine: device and pair states in, signals and device commands out.

The shell feeds it uplinks (from `ingest`) and a tick about every second, then persists exactly
the states named in `Effects.changed_*` together with the signals, and sends the commands.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

from nabij.config import Order, ProximitySettings
from nabij.contract import (
    DeviceEvent,
    Fix,
    Position,
    SetInterval,
    SignalAction,
    Warn,
    WarnLevel,
)
from services.proximity.core.conditions import DeviceConditions
from services.proximity.core.effects import Effects
from services.proximity.core.geo import distance_m
from services.proximity.core.hysteresis import RingParams, Transition, step
from services.proximity.core.ingest import CLOCK_EXEMPT_EVENTS, Uplink
from services.proximity.core.signals import Observation, ring_signal
from services.proximity.core.state import DeviceState, PairKey, PairState, RingState
from services.proximity.core.topology import PairSpec, Topology

__all__ = ["Effects", "ProximityEngine"]

# While a ring is open, an update is sent only when the distance moved by 10% or 50 m (whichever
# is smaller) since the last one sent: enough for an operator, and it keeps Redis traffic down.
UPDATE_MIN_FRACTION: Final = 0.1
UPDATE_MIN_M: Final = 50.0
_OPEN_PHASES: Final = frozenset({"inside", "exiting"})


class ProximityEngine:
    def __init__(self, orders: Sequence[Order], settings: ProximitySettings) -> None:
        self._topology = topology = Topology.build(orders, settings)
        self._pairs_of = topology.pairs_of
        self._alarm_interval_s = settings.alarm_interval_s
        self._normal_interval_s = settings.normal_interval_s
        self._max_fix_age_ms = round(settings.max_fix_age_s * 1000)
        self._devices = {device: DeviceState(device) for device in topology.memberships}
        self._pairs = {key: PairState(*key) for key in topology.pairs}
        self._conditions = DeviceConditions(topology, self._devices, settings)

    # --- state access ------------------------------------------------------------------------

    def is_known(self, device_id: str) -> bool:
        return device_id in self._devices

    def load(self, devices: Iterable[DeviceState], pairs: Iterable[PairState]) -> None:
        """Restore persisted states; those of devices or pairs no longer in an order are dropped."""
        for device in devices:
            if device.device_id in self._devices:
                self._devices[device.device_id] = device
        for pair in pairs:
            if pair.key in self._pairs:
                self._pairs[pair.key] = pair

    def device(self, device_id: str) -> DeviceState:
        return self._devices[device_id]

    def pair(self, key: PairKey) -> PairState:
        return self._pairs[key]

    # --- inputs ------------------------------------------------------------------------------

    def apply(self, uplink: Uplink, now_ms: int, effects: Effects) -> None:
        """Apply one uplink received at server time `now_ms`."""
        if isinstance(uplink, Fix):
            self._on_fix(uplink, now_ms, effects)
        elif isinstance(uplink, DeviceEvent):
            self._on_event(uplink, now_ms, effects)
        elif (device := self._known(uplink.device_id, effects)) is not None:
            self._conditions.on_status(device, uplink.status.online, now_ms, effects)

    def tick(self, now_ms: int, effects: Effects) -> None:
        """Time-driven checks: offender silence (location_unknown), on server time."""
        self._conditions.tick(now_ms, effects)

    def _on_fix(self, fix: Fix, now_ms: int, effects: Effects) -> None:
        device = self._known(fix.device_id, effects)
        if device is None or not self._fresh_seq(device, fix.seq, effects):
            return
        if fix.ts < device.last_ts:
            # Newer seq but older clock: never let a position move backwards in time.
            effects.ignored.append((device.device_id, "out_of_order"))
            return
        device.advance_seq(fix.seq)
        device.last_ts = fix.ts
        device.fix = Position(lat=fix.lat, lon=fix.lon, acc=fix.acc, ts=fix.ts)
        heard_before = device.last_heard_ms
        device.last_heard_ms = now_ms
        effects.changed_devices.add(device.device_id)
        self._conditions.on_fix(device, fix.batt, heard_before, now_ms, effects)
        for spec in self._pairs_of.get(device.device_id, ()):
            self._compare(spec, device, fix.seq, now_ms, effects)

    def _on_event(self, event: DeviceEvent, now_ms: int, effects: Effects) -> None:
        device = self._known(event.device_id, effects)
        if device is None:
            return
        if event.type in CLOCK_EXEMPT_EVENTS:
            # A press or a cut strap is never dropped for its clock or for arriving late: only a
            # known duplicate is. Its signal id carries its seq, so a replay stays one signal.
            if event.seq > device.last_seq:
                device.advance_seq(event.seq)
            elif device.seq_seen(event.seq):
                effects.ignored.append((device.device_id, "duplicate"))
                return
            else:
                device.mark_seen(event.seq)
        elif not self._fresh_seq(device, event.seq, effects):
            return
        elif event.ts < device.last_ts:
            effects.ignored.append((device.device_id, "out_of_order"))
            return
        else:
            device.advance_seq(event.seq)
        effects.changed_devices.add(device.device_id)
        self._conditions.on_event(device, event, now_ms, effects)

    def _known(self, device_id: str, effects: Effects) -> DeviceState | None:
        device = self._devices.get(device_id)
        if device is None:
            effects.ignored.append((device_id, "unknown_device"))
        return device

    def _fresh_seq(self, device: DeviceState, seq: int, effects: Effects) -> bool:
        if seq > device.last_seq:
            return True
        reason = "duplicate" if device.seq_seen(seq) else "out_of_order"
        effects.ignored.append((device.device_id, reason))
        return False

    # --- pairs -------------------------------------------------------------------------------

    def _compare(
        self, spec: PairSpec, reporter: DeviceState, seq: int, now_ms: int, effects: Effects
    ) -> None:
        """Compare the reporter's new fix with its partner's latest, if recent enough."""
        is_offender = reporter.device_id == spec.offender
        own = reporter.fix
        partner = self._devices[spec.victim if is_offender else spec.offender].fix
        if own is None or partner is None or abs(own.ts - partner.ts) > self._max_fix_age_ms:
            return
        offender, victim = (own, partner) if is_offender else (partner, own)
        distance = distance_m(offender.lat, offender.lon, victim.lat, victim.lon)
        uncertainty = offender.acc + victim.acc
        pair = self._pairs[spec.key]
        t_ms = max(own.ts, pair.last_obs_ts)  # pair time never goes backwards
        pair.last_obs_ts = t_ms
        pair.last_distance_m = distance
        pair.last_uncertainty_m = uncertainty
        effects.changed_pairs.add(spec.key)
        obs = Observation(
            order_id=spec.order_id,
            offender_device=spec.offender,
            victim_device=spec.victim,
            distance_m=distance,
            uncertainty_m=uncertainty,
            offender=offender,
            victim=victim,
            reporter=reporter.device_id,
            seq=seq,
            now_ms=now_ms,
        )
        old_pre, old_alarm = pair.pre_alert, pair.alarm
        pair.pre_alert, pre_change = self._ring(old_pre, spec.pre_alert, obs, t_ms, effects)
        pair.alarm, alarm_change = self._ring(old_alarm, spec.alarm, obs, t_ms, effects)
        if pair.pre_alert.phase == old_pre.phase and pair.alarm.phase == old_alarm.phase:
            return
        self._command(spec, pre_change, alarm_change, effects)

    def _ring(
        self, old: RingState, params: RingParams, obs: Observation, t_ms: int, effects: Effects
    ) -> tuple[RingState, Transition | None]:
        new, transition = step(old, obs.distance_m, t_ms, params)
        if transition is not None:
            # How long the condition held: the dwell served, or zero when it did not apply.
            held_ms = t_ms - old.since_ts if old.phase in ("entering", "exiting") else 0
            action: SignalAction = "open" if transition == "opened" else "clear"
            effects.signals.append(ring_signal(obs, params, action, held_ms))
        elif new.phase in _OPEN_PHASES and new.reported_m is not None:
            moved = abs(obs.distance_m - new.reported_m)
            if moved >= min(UPDATE_MIN_M, UPDATE_MIN_FRACTION * new.reported_m):
                effects.signals.append(ring_signal(obs, params, "update", 0))
                new = msgspec.structs.replace(new, reported_m=obs.distance_m)
        return new, transition

    # --- device commands: levels and intervals only, never a position or a distance ----------

    def _command(
        self,
        spec: PairSpec,
        pre_change: Transition | None,
        alarm_change: Transition | None,
        effects: Effects,
    ) -> None:
        offender = self._devices[spec.offender]
        victim = self._devices[spec.victim]
        if alarm_change == "opened":
            self._warn(offender, "alarm", effects)
            self._warn(victim, "alarm", effects)
        elif pre_change == "opened" and offender.warned != "alarm":
            # French practice: at pre-alert only the offender is told to turn back.
            self._warn(offender, "pre_alert", effects)
        if "cleared" in (pre_change, alarm_change):
            for device in (offender, victim):
                if device.warned in ("alarm", "pre_alert") and not self._warning_holds(device):
                    self._warn(device, "clear", effects)
        self._set_interval(offender, effects)
        self._set_interval(victim, effects)

    def _warn(self, device: DeviceState, level: WarnLevel, effects: Effects) -> None:
        device.warned = level
        effects.commands.append((device.device_id, Warn(level=level)))
        effects.changed_devices.add(device.device_id)

    def _warning_holds(self, device: DeviceState) -> bool:
        """Whether an open ring of any pair still warrants a warning to this device."""
        for spec in self._pairs_of.get(device.device_id, ()):
            pair = self._pairs[spec.key]
            if pair.alarm.phase in _OPEN_PHASES:
                return True
            if spec.offender == device.device_id and pair.pre_alert.phase in _OPEN_PHASES:
                return True
        return False

    def _set_interval(self, device: DeviceState, effects: Effects) -> None:
        """Fast fixes while any pair of the device is entering or inside a ring."""
        near = False
        for spec in self._pairs_of.get(device.device_id, ()):
            pair = self._pairs[spec.key]
            if pair.pre_alert.phase != "outside" or pair.alarm.phase != "outside":
                near = True
                break
        wanted = self._alarm_interval_s if near else self._normal_interval_s
        # Nothing asked yet and nothing near: the device keeps its own configured default.
        if wanted == device.interval_s or (device.interval_s is None and not near):
            return
        device.interval_s = wanted
        effects.commands.append((device.device_id, SetInterval(seconds=wanted)))
        effects.changed_devices.add(device.device_id)

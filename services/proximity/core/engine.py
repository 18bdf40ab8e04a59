"""The proximity engine: device and pair states in, signals and device commands out.

The shell feeds it uplinks (from `ingest`) and a tick about every second, then persists exactly
the states named in `Effects.changed_*` together with the signals, and sends the commands.

A fix passes, in order: the sequence and clock checks, the per-source accuracy floor, the GPS-jump
filter (`motion`), and then every pair of the device (`pairs`) and, for an offender, his zones
(`zone_rules`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from nabij.config import Order, ProximitySettings
from nabij.contract import DeviceEvent, Fix, Position, SetInterval, Warn, WarnLevel
from services.proximity.core.accuracy import effective_acc
from services.proximity.core.conditions import DeviceConditions
from services.proximity.core.effects import Effects
from services.proximity.core.hysteresis import Transition
from services.proximity.core.ingest import CLOCK_EXEMPT_EVENTS, Uplink
from services.proximity.core.motion import TRACK_LEN, classify
from services.proximity.core.pairs import OPEN_PHASES, PairJudge
from services.proximity.core.state import DeviceState, PairKey, PairState
from services.proximity.core.topology import PairSpec, Topology
from services.proximity.core.zone_rules import ZoneChange, ZoneJudge

__all__ = ["Effects", "ProximityEngine"]

_OPEN_PHASES: Final = OPEN_PHASES


class ProximityEngine:
    def __init__(self, orders: Sequence[Order], settings: ProximitySettings) -> None:
        self._topology = topology = Topology.build(orders, settings)
        self._pairs_of = topology.pairs_of
        self._alarm_interval_s = settings.alarm_interval_s
        self._normal_interval_s = settings.normal_interval_s
        self._max_speed_mps = settings.max_speed_mps
        self._jump_confirm = settings.jump_confirm_fixes
        self._devices = {device: DeviceState(device) for device in topology.memberships}
        self._pairs = {key: PairState(*key) for key in topology.pairs}
        self._conditions = DeviceConditions(topology, self._devices, settings)
        self._judge = PairJudge(self._devices, self._pairs, settings)
        self._zones = ZoneJudge(topology.zones, topology.exemptions, settings)
        self._exempt_pairs = tuple(s for s in topology.pairs.values() if s.exemptions is not None)
        self._zone_offenders = tuple(topology.zones)

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

    def pair_keys(self) -> list[PairKey]:
        return list(self._pairs)

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
        """Time-driven checks on server time: offender silence (location_unknown), and exemption
        windows that ended while a pair or an offender was inside."""
        self._conditions.tick(now_ms, effects)
        for spec in self._exempt_pairs:
            pair = self._pairs[spec.key]
            if not pair.exempt or spec.exemptions is None:
                continue
            offender = self._devices[spec.offender].fix
            if spec.exemptions.exempt("proximity", now_ms, offender):
                continue
            changes = self._judge.reopen_after_exemption(spec, now_ms, effects)
            if changes is not None:
                self._command(spec, changes[0], changes[1], effects)
        for device_id in self._zone_offenders:
            device = self._devices[device_id]
            if device.zones:
                self._zone_commands(device, self._zones.tick(device, now_ms, effects), effects)

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
        effects.changed_devices.add(device.device_id)
        acc = effective_acc(fix.acc, fix.src)
        position = Position(lat=fix.lat, lon=fix.lon, acc=acc, ts=fix.ts)
        verdict = classify(
            device.track,
            device.candidates,
            position,
            acc=acc,
            max_speed_mps=self._max_speed_mps,
            confirm=self._jump_confirm,
        )
        if verdict == "outlier":
            # A GPS jump: kept as a candidate, counted, and it moves nothing on its own.
            device.outliers += 1
            effects.ignored.append((device.device_id, "outlier"))
            return
        previous = device.fix
        if verdict == "relocated":
            device.track = device.candidates[-TRACK_LEN:]
            device.candidates = []
            previous = None  # no straight path from before the move
        else:
            device.track.append(position)
            del device.track[:-TRACK_LEN]
            if device.candidates:
                device.candidates = []
        device.fix = position
        heard_before = device.last_heard_ms
        device.last_heard_ms = now_ms
        self._conditions.on_fix(device, fix.batt, heard_before, now_ms, effects)
        for spec in self._pairs_of.get(device.device_id, ()):
            changes = self._judge.compare(spec, device, device.tag(fix.seq), now_ms, effects)
            if changes is not None:
                self._command(spec, changes[0], changes[1], effects)
        if self._zones.has_zones(device.device_id):
            self._zone_commands(
                device, self._zones.on_fix(device, previous, now_ms, effects), effects
            )

    def _on_event(self, event: DeviceEvent, now_ms: int, effects: Effects) -> None:
        device = self._known(event.device_id, effects)
        if device is None:
            return
        if event.type in CLOCK_EXEMPT_EVENTS:
            # A press or a cut strap is never dropped for its clock or for arriving late: only a
            # known duplicate is. Its signal id carries its seq, so a replay stays one signal.
            # It moves no seq: it comes on the fast connection too, and may overtake its device's
            # earlier fixes and events, which must not become out of order because of it.
            if device.seq_seen(event.seq):
                effects.ignored.append((device.device_id, "duplicate"))
                return
            if event.seq > device.last_seq:
                device.take_ahead(event.seq)
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

    # --- device commands: levels and intervals only, never a position, distance or zone ------

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

    def _zone_commands(
        self, offender: DeviceState, changes: list[ZoneChange], effects: Effects
    ) -> None:
        """The offender is told he is in a banned place (a level only: never which, never where)."""
        if not changes:
            return
        transitions = {transition for _, transition in changes}
        if "opened" in transitions and offender.warned != "alarm":
            self._warn(offender, "alarm", effects)
        elif (
            transitions == {"cleared"}
            and offender.warned in ("alarm", "pre_alert")
            and not self._warning_holds(offender)
        ):
            self._warn(offender, "clear", effects)
        self._set_interval(offender, effects)

    def _warn(self, device: DeviceState, level: WarnLevel, effects: Effects) -> None:
        device.warned = level
        effects.commands.append((device.device_id, Warn(level=level)))
        effects.changed_devices.add(device.device_id)

    def _warning_holds(self, device: DeviceState) -> bool:
        """Whether an open ring of any pair (or an open zone) still warrants a warning."""
        for spec in self._pairs_of.get(device.device_id, ()):
            pair = self._pairs[spec.key]
            if pair.alarm.phase in _OPEN_PHASES:
                return True
            if spec.offender == device.device_id and pair.pre_alert.phase in _OPEN_PHASES:
                return True
        return any(zone.ring.phase in _OPEN_PHASES for zone in device.zones.values())

    def _set_interval(self, device: DeviceState, effects: Effects) -> None:
        """Fast fixes while a ring or zone of the device is open.

        Only the victim's device speeds up already while a pair is entering (to confirm the dwell
        sooner): an offender's device that sped up before any alarm opened would tell him where
        a ring, or a zone's edge, lies, while no operator had been told anything.
        """
        near = any(zone.ring.phase in _OPEN_PHASES for zone in device.zones.values())
        if not near:
            for spec in self._pairs_of.get(device.device_id, ()):
                pair = self._pairs[spec.key]
                phases = (pair.pre_alert.phase, pair.alarm.phase)
                entering_counts = spec.offender != device.device_id
                if any(
                    phase in _OPEN_PHASES or (entering_counts and phase == "entering")
                    for phase in phases
                ):
                    near = True
                    break
        wanted = self._alarm_interval_s if near else self._normal_interval_s
        # Nothing asked yet and nothing near: the device keeps its own configured default.
        if wanted == device.interval_s or (device.interval_s is None and not near):
            return
        device.interval_s = wanted
        effects.commands.append((device.device_id, SetInterval(seconds=wanted)))
        effects.changed_devices.add(device.device_id)

"""The proximity engine: device and pair states in, signals and device commands out.

The shell feeds it uplinks (from `ingest`) and a tick about every second, then persists exactly
the states named in `Effects.changed_*` together with the signals, and sends the commands.

A fix passes, in order: the counter check (`sequence`), its placement on nabij's clock
(`timing`), the per-source accuracy floor, the GPS-jump filter (`motion`), and then every pair of
the device (`pairs`) and, for an offender, his zones (`zone_rules`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

from nabij.contract import (
    SAFETY_EVENTS,
    ClearCause,
    DeviceEvent,
    Fix,
    SetInterval,
    Warn,
    WarnLevel,
)
from nabij.orders import AnyOrder, held_orders
from nabij.settings import PlatformSettings, PrivacySettings, ProximitySettings
from services.proximity.core.accuracy import effective_acc
from services.proximity.core.agenda import Agenda
from services.proximity.core.cells import SnapGrid
from services.proximity.core.census import PairRings
from services.proximity.core.conditions import DeviceConditions
from services.proximity.core.devices import DeviceTable
from services.proximity.core.effects import Effects
from services.proximity.core.faults import DeviceFaults
from services.proximity.core.history import POINT_BYTES, appended, newest, quantised
from services.proximity.core.ingest import Uplink
from services.proximity.core.motion import TRACK_LEN, classify, led_to, on_track
from services.proximity.core.pairs import OPEN_PHASES, Changes, PairJudge
from services.proximity.core.platform import PlatformState, PlatformWatch
from services.proximity.core.sequence import (
    admit,
    note_overtaking,
    safety_digest,
    seen_press,
    take,
)
from services.proximity.core.state import RARE_DEFAULTS, DeviceState, PairKey, PairState
from services.proximity.core.timing import anchor_backlog, place, remember
from services.proximity.core.topology import PairSpec, Topology
from services.proximity.core.zone_rules import ZoneChange, ZoneJudge
from services.proximity.core.zones import ZoneSet

__all__ = ["Effects", "ProximityEngine"]

_OPEN_PHASES: Final = OPEN_PHASES
_DEFAULT_PRIVACY: Final = PrivacySettings()
_DEFAULT_PLATFORM: Final = PlatformSettings()
_NO_REASONS: Final[Mapping[str, ClearCause | None]] = {}
_PAIR_START: Final = PairState("", "", "")
"""A pair's state before any comparison (`PairSpec.restore` reads no ids)."""


class ProximityEngine:
    def __init__(
        self,
        orders: Sequence[AnyOrder],
        settings: ProximitySettings,
        privacy: PrivacySettings = _DEFAULT_PRIVACY,
        platform: PlatformSettings | None = _DEFAULT_PLATFORM,
        *,
        predecessor: ProximityEngine | None = None,
    ) -> None:
        """`predecessor`: the engine of the orders before (see `successor`): what it built for
        orders that did not change is reused. `platform` None: another process judges whether
        nabij is blind (a shard other than the first, `shards.platform_judge`)."""
        # For `successor`, compact (`held_orders`): the service's own tuple is kept, not copied.
        self._orders = held_orders(orders)
        self._settings, self._privacy, self._platform_settings = settings, privacy, platform
        grid = SnapGrid(privacy.offender_grid_m)
        known_zones = {} if predecessor is None else predecessor.zone_sets()
        self._topology = topology = Topology.build(orders, settings, grid, known_zones)
        self._alarm_interval_s = settings.alarm_interval_s
        self._normal_interval_s = settings.normal_interval_s
        self._max_speed_mps = settings.max_speed_mps
        self._jump_confirm = settings.jump_confirm_fixes
        self._devices = DeviceTable(topology.records)
        self._late_ms = round(settings.late_after_s * 1000)
        self._history_ms = round(settings.history_s * 1000)
        # When each device's silence next needs a look: one booking for the devices' own
        # checks and the platform's alike, at the sooner of their times (`Agenda.book`).
        self._silences = Agenda(topology.device_ids)
        self._conditions = DeviceConditions(topology, self._devices, settings, self._silences)
        self._faults = DeviceFaults(topology, self._devices, settings)
        self._judge = PairJudge(self._devices, settings, grid)
        self._zones = ZoneJudge(topology.zones, topology.exemptions, settings)
        self._exempt_pairs = tuple(s for s in topology.pairs if s.exemptions is not None)
        # Offenders with a zone of an order with exemption windows: the only ones whose zones
        # the tick can change (`ZoneJudge.tick`); the others' states are not thawed for a look.
        self._exempt_zone_offenders = tuple(
            offender
            for offender, zone_set in topology.zones.items()
            if any(spec.order_id in topology.exemptions for spec in zone_set.specs)
        )
        self._platform = PlatformWatch(
            topology, platform or _DEFAULT_PLATFORM, self._devices, self._silences
        )

    # --- state access ------------------------------------------------------------------------

    def is_known(self, device_id: str) -> bool:
        return device_id in self._devices

    def orders_of(self, device_id: str) -> tuple[str, ...]:
        """The ids of the orders the device is in, in the order of the orders (none: unknown)."""
        topology = self._topology
        return topology.orders(device_id) if device_id in topology.records else ()

    def load(self, devices: Iterable[DeviceState], pairs: Iterable[PairState]) -> None:
        """Restore persisted states; those of devices or pairs no longer in an order are dropped."""
        for device in devices:
            if device.device_id in self._devices:
                self._devices[device.device_id] = device
                self._book(device, self._topology.rank(device.device_id))
        for pair in pairs:
            if (spec := self._topology.pair(pair.key)) is not None:
                spec.restore(pair)

    def successor(
        self,
        orders: Sequence[AnyOrder],
        now_ms: int,
        effects: Effects,
        ended_why: Mapping[str, ClearCause | None] = _NO_REASONS,
    ) -> ProximityEngine:
        """The engine for a new version of the orders. Devices keep their state (latest fix
        included) and every pair that still exists keeps its rings. A device swapped within an
        order (same order, same role) hands its rings and zones to the new one: the alarms stay
        the same alarms (keyed by order and role), and the new device is told at once what the
        old one was told. A pair of a new or changed order, and its zones, are judged at once
        from the offender's latest fix, so a wider ring opens and a narrower one starts its exit
        dwell. A pair or zone that no longer exists (order ended, victim or zone removed) has its
        open alarms cleared, saying why (`ended_why`: order id -> why it left, `order_ended` by
        default; `order_changed` while the order goes on; None: the order moved to another shard,
        which takes its state over, so its alarms are left open here, as they are)."""
        engine = ProximityEngine(
            orders, self._settings, self._privacy, self._platform_settings, predecessor=self
        )
        engine._platform.carry_over(self._platform)
        before = {order.id: order for order in self._orders}
        after = {order.id: order for order in engine._orders}
        unchanged = {i for i, order in after.items() if before.get(i) == order}
        for device_id in engine._devices.take_over(self._devices):
            engine._book(engine._devices.peek(device_id), engine._topology.rank(device_id))
        for spec in self._topology.pairs:
            if (kept := engine._topology.pair(spec.key)) is not None:
                kept.restore(spec)

        def cause(order_id: str) -> ClearCause | None:
            if order_id in after:
                return "order_changed"
            return ended_why.get(order_id, "order_ended")

        heirs = self._hand_over_pairs(engine, cause, now_ms, effects)
        heirs |= self._hand_over_zones(engine, cause, now_ms, effects)
        for device_id in heirs:
            engine._brief(engine._devices[device_id], effects)
        for spec in engine._topology.pairs:
            if spec.order_id in unchanged:
                continue  # before its offender is read: no thawing of every device in force
            offender = engine._devices[spec.offender]
            if offender.fix is None:
                continue
            changes = engine._judge.compare(spec, offender, offender.last_seq, now_ms, effects)
            effects.changed_pairs.add(spec.key)
            if changes is not None:
                engine._command(spec, changes, effects)
        changed = after.keys() - unchanged
        for device_id, zone_set in engine._topology.zones.items():
            if not any(spec.order_id in changed for spec in zone_set.specs):
                continue  # nothing to judge (`judge_orders`): not thawed for it
            device = engine._devices[device_id]
            zone_changes = engine._zones.judge_orders(device, changed, now_ms, effects)
            engine._zone_commands(device, zone_changes, effects)
        # A device or pair that left the orders is no longer the new engine's to persist.
        effects.changed_devices.intersection_update(engine._devices)
        effects.changed_pairs.difference_update(
            [key for key in effects.changed_pairs if engine._topology.pair(key) is None]
        )
        return engine

    def _hand_over_pairs(
        self,
        engine: ProximityEngine,
        cause: Callable[[str], ClearCause | None],
        now_ms: int,
        effects: Effects,
    ) -> set[str]:
        """Each pair of this engine into `engine`: kept as it is, handed to the pair that took
        its order and role (a swapped device; returns the new devices), or ended (its open rings
        cleared). A victim whose role moved (one before her left the order) is judged afresh
        under her new alarm keys."""
        by_role = {(s.order_id, s.victim_role): s for s in engine._topology.pairs}
        heirs: set[str] = set()
        for spec in self._topology.pairs:
            kept = engine._topology.pair(spec.key)
            if kept is not None and kept.victim_role == spec.victim_role:
                continue
            heir = by_role.get((spec.order_id, spec.victim_role))
            if kept is None and heir is not None and self._topology.pair(heir.key) is None:
                heir.restore(spec)
                effects.changed_pairs.add(heir.key)
                heirs |= {heir.offender, heir.victim} - {spec.offender, spec.victim}
                continue
            why = cause(spec.order_id)
            if why is not None:
                self._judge.ended(spec, why, now_ms, effects)
            if kept is not None:
                kept.restore(_PAIR_START)
                effects.changed_pairs.add(kept.key)
        return heirs

    def _hand_over_zones(
        self,
        engine: ProximityEngine,
        cause: Callable[[str], ClearCause | None],
        now_ms: int,
        effects: Effects,
    ) -> set[str]:
        """Each zone state of this engine's offenders into `engine`: moved to the offender who
        took the order (a swapped ankle monitor; returns the new devices), or ended (an open zone
        alarm cleared) when the order ended or no longer has the zone."""
        owner = {
            spec.key: offender
            for offender, zone_set in engine._topology.zones.items()
            for spec in zone_set.specs
        }
        heirs: set[str] = set()
        for offender, zone_set in self._topology.zones.items():
            device = self._devices[offender]
            for spec in zone_set.specs:
                heir = owner.get(spec.key)
                if heir is None:
                    if (why := cause(spec.order_id)) is not None:
                        self._zones.ended(device, spec, why, now_ms, effects)
                elif heir != offender and (state := device.pop_zone(spec.key)):
                    engine._devices[heir].set_zone(spec.key, state)
                    effects.changed_devices.update((offender, heir))
                    heirs.add(heir)
        return heirs

    def zone_sets(self) -> Mapping[str, ZoneSet]:
        """Offender device -> his zones, as projected for this engine's orders."""
        return self._topology.zones

    def device(self, device_id: str) -> DeviceState:
        return self._devices[device_id]

    def pair(self, key: PairKey) -> PairState:
        spec = self._topology.pair(key)
        if spec is None:
            raise KeyError(key)
        return spec.state()

    def pair_keys(self) -> list[PairKey]:
        return [spec.key for spec in self._topology.pairs]

    def devices(self) -> Sequence[DeviceState]:
        """Every device's state, to read: decoded one at a time, none kept (`DeviceTable`)."""
        return self._devices.states()

    def encoded_device(self, device_id: str) -> bytes:
        """The device's state as the shell stores it (after `freeze`: encoded by it)."""
        return self._devices.encoded(device_id)

    def freeze(self) -> None:
        """At a batch's end: every device state the batch looked at back into its encoded form
        (`DeviceTable.freeze`); the decisions never depend on whether it was called."""
        self._devices.freeze()

    def pairs(self) -> Iterable[PairState]:
        """Every pair's state, made one at a time as it is asked for."""
        return (spec.state() for spec in self._topology.pairs)

    def pair_rings(self) -> Sequence[PairRings]:
        """Every pair's rings, to read (the census): the records, no state made for them."""
        return self._topology.pairs

    @property
    def platform(self) -> PlatformState:
        return self._platform.state

    def load_platform(self, state: PlatformState) -> None:
        """Restore the persisted outage (after a restart or a rollback)."""
        self._platform.state = state

    # --- inputs ------------------------------------------------------------------------------

    def apply(self, uplink: Uplink, now_ms: int, effects: Effects) -> None:
        """Apply one uplink received at server time `now_ms`."""
        device = self._devices.get(uplink.device_id)
        if device is None:
            effects.ignored.append((uplink.device_id, "unknown_device"))
            return
        # Unpacked once for all that reads it (`Topology.rank`): its pairs, its bookings.
        rank = self._topology.rank(uplink.device_id)
        self._platform.heard(now_ms)
        if isinstance(uplink, Fix):
            self._on_fix(uplink, device, rank, now_ms, effects)
        elif isinstance(uplink, DeviceEvent):
            self._on_event(uplink, device, now_ms, effects)
        else:
            self._conditions.on_status(device, uplink.status.online, now_ms, effects)
        self._book(device, rank)

    def backlog(self, fixes: list[Fix], now_ms: int) -> None:
        """A backlog array is about to be applied (its fixes in seq order): a device that has
        never been heard learns its clock offset from the newest of them (`anchor_backlog`)."""
        device = self._devices.get(fixes[-1].device_id)
        if device is not None:
            anchor_backlog(device, fixes[-1].ts, now_ms)

    def tick(self, now_ms: int, effects: Effects, *, broker_up: bool = True) -> None:
        """Time-driven checks on server time: whether nabij is blind (`platform`; `broker_up`:
        the shell's MQTT link), offender silence (location_unknown), presence, faults, and
        exemption windows that ended while a pair or an offender was inside. Of the devices, only
        those due are looked at (`agenda`): every change of a device books it again (`_book`)."""
        silent = self._silences.take(now_ms)
        if self._platform_settings is not None:
            for device_id in self._platform.tick(now_ms, silent, effects, broker_up=broker_up):
                # Grouped or released.
                self._conditions.book(self._devices[device_id], self._topology.rank(device_id))
            # A device released may be silent by now (a silence limit below `quiet_after_s`).
            silent = list(dict.fromkeys([*silent, *self._silences.take(now_ms)]))
        self._conditions.tick(now_ms, silent, effects)
        self._faults.tick(now_ms, effects)
        for spec in self._exempt_pairs:
            if not spec.exempt or spec.exemptions is None:
                continue
            offender = self._devices.peek(spec.offender).fix
            if spec.exemptions.exempt("proximity", now_ms, offender):
                continue
            changes = self._judge.reopen_after_exemption(spec, now_ms, effects)
            if changes is not None:
                self._command(spec, changes, effects)
        for device_id in self._exempt_zone_offenders:
            device = self._devices[device_id]
            if device.zones:
                self._zone_commands(device, self._zones.tick(device, now_ms, effects), effects)

    def refused(self, device_id: str, reason: str, now_ms: int, effects: Effects) -> None:
        """A message of a known device was refused before reaching the core (bad input)."""
        device = self._devices.get(device_id)
        if device is not None:
            self._faults.on_refused(device, reason, now_ms, effects)
            self._faults.book(device, self._topology.rank(device_id))

    def _book(self, device: DeviceState, rank: int) -> None:
        """After a change of the device (at `rank`), tell each time-driven check when the tick
        next needs to look at it (their indexes are rebuilt this way after a restart, never
        persisted)."""
        self._conditions.book(device, rank)
        self._faults.book(device, rank)
        if self._platform_settings is not None:
            self._platform.book(device, rank)

    def _on_fix(
        self, fix: Fix, device: DeviceState, rank: int, now_ms: int, effects: Effects
    ) -> None:
        verdict = admit(device, fix.boot, fix.seq, fix.ts)
        if verdict != "new":
            self._ignore(device, verdict, fix.seq, now_ms, effects)
            return
        at = place(device, fix.ts, now_ms, late_after_ms=self._late_ms, window_ms=self._history_ms)
        take(device, fix.seq, fix.ts)
        effects.changed_devices.add(device.device_id)
        live = now_ms - at <= self._late_ms  # `lateness_s(...) is None`, without its call
        self._faults.on_accepted(device, live=live, now_ms=now_ms, effects=effects)
        acc = effective_acc(fix.acc, fix.src)
        position, point = quantised(fix.lat, fix.lon, acc, at)  # on the grid its history packs
        track = device.packed_track
        last = newest(track) if track else None  # read once for the jump filter and on_track
        # Rare fields (candidates, off_track, led_to): read without a call, written only to
        # change them.
        rare = device.rare or RARE_DEFAULTS
        verdict_move, candidates = classify(
            last,
            rare.packed_candidates,
            position,
            point,
            max_speed_mps=self._max_speed_mps,
            confirm=self._jump_confirm,
        )
        if verdict_move == "outlier" or rare.packed_candidates:
            device.packed_candidates = candidates if verdict_move == "outlier" else b""
        if verdict_move == "outlier":
            # A GPS jump: kept as a candidate, counted, and it moves nothing on its own.
            device.outliers += 1
            effects.ignored.append((device.device_id, "outlier"))
            return
        previous = device.fix
        if verdict_move == "relocated":
            device.packed_track = candidates[-TRACK_LEN * POINT_BYTES :]
            device.off_track = False  # the candidates agreed with each other
            device.led_to = None
            previous = None  # no straight path from before the move
        else:
            # A fix on the track before a fix off it: that one was a jump, and leaves the track
            # (its velocity); one on the track of the fix off it confirms a real move.
            on = on_track(track, position, last=last)
            # Judged against the track before an off-track fix as well (that one may be a jump).
            before = track[:-POINT_BYTES] if rare.off_track else track
            if not on and rare.off_track and on_track(before, position):
                track = before
                on = True
            if not on or rare.off_track:
                device.off_track = not on
            leads_to = None if on or not before else led_to(before, position)
            if leads_to is not None or rare.led_to is not None:
                device.led_to = leads_to
            device.packed_track = appended(track, point, limit=TRACK_LEN)
        device.fix = position
        remember(device, point, now_ms, self._history_ms)
        heard_before = device.last_heard_ms
        device.last_heard_ms = max(at, heard_before or at)
        if live:
            # A late fix says nothing of now: it neither ends a silence nor reports a battery.
            self._conditions.on_fix(device, fix.batt, heard_before, now_ms, effects)
        held = self._topology.held[rank]  # its pairs (`pairs_of`), read at the rank at hand
        for spec in held if isinstance(held, tuple) else (held,):
            changes = self._judge.compare(spec, device, fix.seq, now_ms, effects)
            if changes is not None:
                self._command(spec, changes, effects)
        if self._zones.has_zones(device.device_id):
            self._zone_commands(
                device, self._zones.on_fix(device, previous, now_ms, effects), effects
            )

    def _on_event(
        self, event: DeviceEvent, device: DeviceState, now_ms: int, effects: Effects
    ) -> None:
        verdict = admit(device, event.boot, event.seq, event.ts)  # a new boot restarts the counter
        tag = None
        if event.type in SAFETY_EVENTS:
            # A press or a cut strap is never dropped for its clock, its counter or for arriving
            # late: only the very same event again is a repeat (a reboot may reuse its seq).
            digest = safety_digest(
                event.boot, event.seq, event.ts, event.type, event.lat, event.lon, event.acc
            )
            if seen_press(device, digest):
                effects.ignored.append((device.device_id, "duplicate"))
                return
            # It moves no counter either: it may come on the fast lane, ahead of earlier fixes.
            note_overtaking(device, event.boot, event.seq)
            tag = f"{event.type}-{digest}"
        elif verdict == "new":
            take(device, event.seq, event.ts)
        else:
            self._ignore(device, verdict, event.seq, now_ms, effects)
            return
        effects.changed_devices.add(device.device_id)
        effects.events.append(event.type)
        self._faults.on_accepted(device, live=False, now_ms=now_ms, effects=effects)
        self._conditions.on_event(device, event, now_ms, effects, tag=tag)

    def _ignore(
        self, device: DeviceState, verdict: str, seq: int, now_ms: int, effects: Effects
    ) -> None:
        """A repeat is normal (QoS 1); a late or implausible counter counts towards a fault. A
        late message is remembered as seen: it is accounted for (a repeat of it is a duplicate)
        and the device's confirmation can pass it, though its content comes too late to use."""
        effects.ignored.append((device.device_id, verdict))
        if verdict == "out_of_order":
            device.mark_seen(seq)
        if verdict != "duplicate":
            self._faults.on_refused(device, verdict, now_ms, effects)

    # --- device commands: levels and intervals only, never a position, distance or zone ------

    def _command(self, spec: PairSpec, changes: Changes, effects: Effects) -> None:
        """Her device follows her rings; his follows his own, judged on her grid cell (`cells`):
        nothing he is sent, nor when, depends on where in that cell she is."""
        offender = self._devices[spec.offender]
        victim = self._devices[spec.victim]
        if changes.alarm == "opened":
            self._warn(victim, "alarm", effects)
        if changes.offender_alarm == "opened":
            self._warn(offender, "alarm", effects)
        elif changes.offender_pre_alert == "opened" and offender.warned != "alarm":
            # French practice: at pre-alert only the offender is told to turn back.
            self._warn(offender, "pre_alert", effects)
        for device, cleared in (
            (offender, "cleared" in (changes.offender_pre_alert, changes.offender_alarm)),
            (victim, "cleared" in (changes.pre_alert, changes.alarm)),
        ):
            warned = device.warned in ("alarm", "pre_alert")
            if cleared and warned and not self._warning_holds(device):
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
        """Whether an open ring of any pair (or an open zone) still warrants a warning: for an
        offender his own rings, for a victim the alarm ring."""
        return self._warning_level(device) is not None

    def _warning_level(self, device: DeviceState) -> WarnLevel | None:
        """The warning the device's open rings and zones call for: `alarm` for an open zone, his
        own alarm ring or her alarm ring; `pre_alert` for his own pre-alert ring only."""
        if any(zone.ring.phase in _OPEN_PHASES for zone in device.zones.values()):
            return "alarm"
        level: WarnLevel | None = None
        for spec in self._topology.pairs_of(device.device_id):
            if spec.offender != device.device_id:
                ring = spec.alarm
            else:
                ring = spec.offender_alarm
                if spec.offender_pre_alert.phase in _OPEN_PHASES:
                    level = "pre_alert"
            if ring.phase in _OPEN_PHASES:
                return "alarm"
        return level

    def _brief(self, device: DeviceState, effects: Effects) -> None:
        """A device swapped in while its order's rings or zones are open: told at once what the
        old device was told, and set to the interval they call for."""
        level = self._warning_level(device)
        if level is not None:
            self._warn(device, level, effects)
        self._set_interval(device, effects)

    def _set_interval(self, device: DeviceState, effects: Effects) -> None:
        """Fast fixes while a ring or zone of the device is open.

        Only the victim's device speeds up already while a pair is entering (to confirm the dwell
        sooner): an offender's device that sped up before any warning would tell him where a
        ring, or a zone's edge, lies. His follows his own rings only (`cells`), never hers.
        """
        near = any(zone.ring.phase in _OPEN_PHASES for zone in device.zones.values())
        if not near:
            for spec in self._topology.pairs_of(device.device_id):
                if spec.offender == device.device_id:
                    near = _offender_near(spec)
                else:
                    near = any(
                        phase in _OPEN_PHASES or phase == "entering"
                        for phase in (spec.pre_alert.phase, spec.alarm.phase)
                    )
                if near:
                    break
        wanted = self._alarm_interval_s if near else self._normal_interval_s
        # Nothing asked yet and nothing near: the device keeps its own configured default.
        if wanted == device.interval_s or (device.interval_s is None and not near):
            return
        device.interval_s = wanted
        effects.commands.append((device.device_id, SetInterval(seconds=wanted)))
        effects.changed_devices.add(device.device_id)


def _offender_near(pair: PairSpec) -> bool:
    """His own rings (judged on her grid cell) hold a warning."""
    return (
        pair.offender_pre_alert.phase in _OPEN_PHASES or pair.offender_alarm.phase in _OPEN_PHASES
    )

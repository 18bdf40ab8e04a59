"""One comparison of a pair: the accuracy rule, the prediction, exemptions, and both rings.

Runs whenever *either* device of the pair reports an accepted fix, so a victim walking towards a
still offender is judged exactly like the reverse.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import msgspec

from nabij.contract import ClearCause, Position, SignalAction
from nabij.settings import ProximitySettings
from services.proximity.core.accuracy import (
    Reading,
    inside_probability,
    off_track_reading,
    ring_reading,
    sigma_m,
)
from services.proximity.core.cells import SnapGrid, beyond, cell_reading
from services.proximity.core.devices import DeviceTable
from services.proximity.core.effects import Effects
from services.proximity.core.geo import distance_m
from services.proximity.core.hysteresis import RingParams, Transition, step
from services.proximity.core.motion import Approach, approach, velocity
from services.proximity.core.signals import Facts, Observation, ring_signal
from services.proximity.core.state import RARE_DEFAULTS, DeviceState, RingState
from services.proximity.core.timing import lateness_s, position_at
from services.proximity.core.topology import PairSpec

# While a ring is open, an update is sent only when the distance moved by 10% or 50 m (whichever
# is smaller) since the last one sent: enough for an operator, and it keeps Redis traffic down.
UPDATE_MIN_FRACTION: Final = 0.1
UPDATE_MIN_M: Final = 50.0
MIN_PREDICT_CLOSING_MPS: Final = 1.0
"""A prediction opens the pre-alert only for a pair closing at least this fast."""
OPEN_PHASES: Final = frozenset({"inside", "exiting"})
_CLOSED_PHASES: Final = frozenset({"outside", "entering"})


class Changes(NamedTuple):
    """What one comparison changed: her rings (signals, her device) and his (his device)."""

    pre_alert: Transition | None
    alarm: Transition | None
    offender_pre_alert: Transition | None
    offender_alarm: Transition | None


class PairJudge:
    def __init__(
        self,
        devices: DeviceTable,
        settings: ProximitySettings,
        grid: SnapGrid,
    ) -> None:
        self._devices = devices  # shared with the engine
        self._grid = grid
        self._snap_error_m = grid.worst_error_m
        self._max_fix_age_ms = round(settings.max_fix_age_s * 1000)
        self._late_ms = round(settings.late_after_s * 1000)
        self._horizon_s = settings.predict_horizon_s
        # Beyond this, no prediction within the horizon can reach the alarm ring.
        self._predict_reach_m = 2 * settings.max_speed_mps * settings.predict_horizon_s

    def compare(
        self, spec: PairSpec, reporter: DeviceState, seq: int, now_ms: int, effects: Effects
    ) -> Changes | None:
        """Compare the reporter's new fix with where its partner was at that time (its latest
        position for a live fix, its history for a late one); returns the rings' transitions,
        or None when no ring (hers or his) changed phase."""
        order_id, offender_id, victim_id = spec.order_id, spec.offender, spec.victim
        is_offender = reporter.device_id == offender_id
        own = reporter.fix
        if own is None:
            return None
        # Read, never changed here: a cold partner is decoded for the look and not kept, so
        # the batch's freeze does not encode it again (`DeviceTable.peek`).
        partner_device = self._devices.peek(victim_id if is_offender else offender_id)
        partner = position_at(partner_device, own.ts, self._max_fix_age_ms)
        if partner is None:
            return None
        offender, victim = (own, partner) if is_offender else (partner, own)
        distance = distance_m(offender.lat, offender.lon, victim.lat, victim.lon)
        uncertainty = offender.acc + victim.acc
        terms = spec.terms
        rings, exemptions = terms.rings, terms.exemptions
        t_ms = spec.pair_time(own.ts)  # pair time never goes backwards
        effects.changed_pairs.add((order_id, offender_id, victim_id))
        exempt = exemptions is not None and exemptions.exempt("proximity", t_ms, offender)
        spec.observe(t_ms, distance, uncertainty, exempt)
        old_pre, old_alarm, old_his_pre, old_his_alarm = spec.ring_states
        pre_ring = rings.pre_alert.ring_m
        if (
            old_pre.phase == "outside"
            and old_alarm.phase == "outside"
            and old_his_pre.phase == "outside"
            and old_his_alarm.phase == "outside"
            and (
                exempt
                or (
                    # Her cell beyond his pre-alert ring: so is she beyond hers, and beyond both
                    # alarm rings (a pre-alert ring is always the larger).
                    beyond(distance, uncertainty, rings.offender_pre_alert, self._snap_error_m)
                    and distance - uncertainty > rings.alarm.ring_m + self._predict_reach_m
                )
            )
        ):
            return None  # the common case: far apart (or exempt), nothing can change
        obs = Observation(
            order_id=order_id,
            offender_device=offender_id,
            victim_device=victim_id,
            victim_role=spec.victim_role,
            distance_m=distance,
            uncertainty_m=uncertainty,
            offender=offender,
            victim=victim,
            reporter=reporter.device_id,
            tag=reporter.tag(seq),  # formatted only past the far-apart shortcut
            now_ms=now_ms,
            late_s=lateness_s(own.ts, now_ms, self._late_ms),
        )
        motion = _Motion(self, spec, offender, victim)
        pre_reading = ring_reading(distance, uncertainty, pre_ring, pre_alert=True)
        alarm_reading = ring_reading(distance, uncertainty, rings.alarm.ring_m, pre_alert=False)
        # A late fix meets the partner's history, of which her newest fix's flag says nothing.
        partner_off_track = obs.late_s is None and (partner_device.rare or RARE_DEFAULTS).off_track
        confirmed = not ((reporter.rare or RARE_DEFAULTS).off_track or partner_off_track)
        if not confirmed:
            led = _led_to(reporter, own, partner_device if partner_off_track else None, partner)
            led_pre = led_alarm = None
            if led is not None:
                led_pre = ring_reading(*led, pre_ring, pre_alert=True)
                led_alarm = ring_reading(*led, rings.alarm.ring_m, pre_alert=False)
            pre_reading = off_track_reading(
                pre_reading, led_pre, pre_ring, entering=old_pre.phase == "entering"
            )
            alarm_reading = off_track_reading(
                alarm_reading,
                led_alarm,
                rings.alarm.ring_m,
                entering=old_alarm.phase == "entering",
            )
        spec.pre_alert, pre_change = self._ring(
            old_pre, rings.pre_alert, pre_reading, obs=obs, t_ms=t_ms, exempt=exempt, motion=motion,
            effects=effects,
        )  # fmt: skip
        spec.alarm, alarm_change = self._ring(
            old_alarm, rings.alarm, alarm_reading, obs=obs, t_ms=t_ms, exempt=exempt, motion=motion,
            effects=effects,
        )  # fmt: skip
        if (
            not exempt
            and pre_change is None
            and spec.pre_alert.phase in _CLOSED_PHASES
            and alarm_reading.fine
            and confirmed  # a fix off its track predicts nothing: it bends the velocity
            and self._horizon_s > 0
        ):
            spec.pre_alert, pre_change = self._predict(
                spec.pre_alert, spec, obs=obs, t_ms=t_ms, motion=motion, effects=effects
            )
        if (
            old_his_pre.phase == "outside"
            and old_his_alarm.phase == "outside"
            and beyond(distance, uncertainty, rings.offender_pre_alert, self._snap_error_m)
        ):
            # His rings stay outside, as in the far-apart shortcut: no cell geodesic needed.
            his_pre_change = his_alarm_change = None
        else:
            cell_m = self._cell_distance(offender, victim)
            spec.offender_pre_alert, his_pre_change = _offender_step(
                old_his_pre, rings.offender_pre_alert, rings.pre_alert,
                cell_m=cell_m, uncertainty_m=uncertainty, t_ms=t_ms, exempt=exempt,
                off_track=not confirmed,
            )  # fmt: skip
            spec.offender_alarm, his_alarm_change = _offender_step(
                old_his_alarm, rings.offender_alarm, rings.alarm,
                cell_m=cell_m, uncertainty_m=uncertainty, t_ms=t_ms, exempt=exempt,
                off_track=not confirmed,
            )  # fmt: skip
        if (
            spec.pre_alert.phase == old_pre.phase
            and spec.alarm.phase == old_alarm.phase
            and spec.offender_pre_alert.phase == old_his_pre.phase
            and spec.offender_alarm.phase == old_his_alarm.phase
        ):
            return None
        return Changes(pre_change, alarm_change, his_pre_change, his_alarm_change)

    def ended(self, spec: PairSpec, cause: ClearCause, now_ms: int, effects: Effects) -> None:
        """The pair's order ended or no longer binds these two devices: each of her open rings
        is cleared, saying why (the gateway still escalates it until a human acknowledges)."""
        offender, victim = (
            self._devices.peek(spec.offender).fix,
            self._devices.peek(spec.victim).fix,
        )
        if offender is None or victim is None:
            return  # a ring opens only on two fixes: none of hers is open
        obs = Observation(
            order_id=spec.order_id,
            offender_device=spec.offender,
            victim_device=spec.victim,
            victim_role=spec.victim_role,
            distance_m=distance_m(offender.lat, offender.lon, victim.lat, victim.lon),
            uncertainty_m=offender.acc + victim.acc,
            offender=offender,
            victim=victim,
            reporter=spec.offender,
            tag=f"order-{now_ms}",
            now_ms=now_ms,
        )
        for params, ring in (
            (spec.rings.pre_alert, spec.pre_alert),
            (spec.rings.alarm, spec.alarm),
        ):
            if ring.phase in OPEN_PHASES:
                signal = ring_signal(obs, params, "clear", 0)
                reason = (
                    f"Order {spec.order_id} no longer binds offender device {spec.offender} "
                    f"and victim device {spec.victim} ({cause.replace('_', ' ')})."
                )
                effects.signals.append(msgspec.structs.replace(signal, reason=reason, cause=cause))

    def _cell_distance(self, offender: Position, victim: Position) -> float:
        """From him to the centre of her grid cell: all his rings ever see of where she is."""
        return distance_m(offender.lat, offender.lon, *self._grid.centre(victim.lat, victim.lon))

    def reopen_after_exemption(
        self, spec: PairSpec, now_ms: int, effects: Effects
    ) -> Changes | None:
        """The tick found the pair's exemption over: open what the last comparison is inside."""
        spec.exempt = False
        effects.changed_pairs.add(spec.key)
        offender = self._devices[spec.offender]
        victim = self._devices[spec.victim]
        pair_ts, distance, uncertainty = spec.last_comparison()
        if (
            distance is None
            or uncertainty is None
            or offender.fix is None
            or victim.fix is None
            or not self._recent(offender, now_ms)
            or not self._recent(victim, now_ms)
        ):
            return None
        obs = Observation(
            order_id=spec.order_id,
            offender_device=spec.offender,
            victim_device=spec.victim,
            victim_role=spec.victim_role,
            distance_m=distance,
            uncertainty_m=uncertainty,
            offender=offender.fix,
            victim=victim.fix,
            reporter=spec.offender,
            tag=offender.tag(offender.last_seq),
            now_ms=now_ms,
        )
        changes: list[Transition | None] = []
        for params, attr in ((spec.rings.pre_alert, "pre_alert"), (spec.rings.alarm, "alarm")):
            state: RingState = getattr(spec, attr)
            reading = ring_reading(
                distance, uncertainty, params.ring_m, pre_alert=attr == "pre_alert"
            )
            if _reopens(state, reading, params):
                facts = self._facts(obs, params, _Motion(self, spec, obs.offender, obs.victim))
                facts = Facts(
                    facts.confidence,
                    facts.closing_speed_mps,
                    facts.eta_s,
                    cause="exemption window ended with the pair inside",
                )
                signal = ring_signal(obs, params, "open", 0, facts)
                effects.signals.append(
                    msgspec.structs.replace(signal, signal_id=f"{signal.signal_id}|exemption-end")
                )
                setattr(spec, attr, RingState("inside", pair_ts, distance))
                changes.append("opened")
            else:
                changes.append(None)
        cell_m = self._cell_distance(offender.fix, victim.fix)
        for his, real, attr in (
            (spec.rings.offender_pre_alert, spec.rings.pre_alert, "offender_pre_alert"),
            (spec.rings.offender_alarm, spec.rings.alarm, "offender_alarm"),
        ):
            state = getattr(spec, attr)
            reading = cell_reading(cell_m, uncertainty, his, real)
            if _reopens(state, reading, his):
                setattr(spec, attr, RingState("inside", pair_ts, reading.enter_m))
                changes.append("opened")
            else:
                changes.append(None)
        if changes == [None] * 4:
            return None
        return Changes(*changes)

    def _recent(self, device: DeviceState, now_ms: int) -> bool:
        heard = device.last_heard_ms
        return heard is not None and now_ms - heard <= self._max_fix_age_ms

    def _ring(
        self,
        old: RingState,
        params: RingParams,
        reading: Reading,
        *,
        obs: Observation,
        t_ms: int,
        exempt: bool,
        motion: _Motion,
        effects: Effects,
    ) -> tuple[RingState, Transition | None]:
        if exempt and old.phase in _CLOSED_PHASES:
            return _suspended(old, t_ms), None
        new, transition = step(old, reading, t_ms, params)
        if transition is not None:
            # How long the condition held: the dwell served, or zero when it did not apply.
            held_ms = t_ms - old.since_ts if old.phase in ("entering", "exiting") else 0
            action: SignalAction = "open" if transition == "opened" else "clear"
            facts = self._facts(obs, params, motion)
            if not reading.fine:
                facts = Facts(
                    facts.confidence,
                    facts.closing_speed_mps,
                    facts.eta_s,
                    note=(
                        f"coarse position (uncertainty {obs.uncertainty_m:.0f} m), "
                        f"confidence {100 * (facts.confidence or 0):.0f}%"
                    ),
                )
            effects.signals.append(ring_signal(obs, params, action, held_ms, facts))
            if transition == "opened":
                new = msgspec.structs.replace(new, reported_m=obs.distance_m)
        elif new.phase in OPEN_PHASES and new.reported_m is not None:
            moved = abs(obs.distance_m - new.reported_m)
            if moved >= min(UPDATE_MIN_M, UPDATE_MIN_FRACTION * new.reported_m):
                facts = self._facts(obs, params, motion)
                effects.signals.append(ring_signal(obs, params, "update", 0, facts))
                new = msgspec.structs.replace(new, reported_m=obs.distance_m)
        return new, transition

    def _predict(
        self,
        state: RingState,
        spec: PairSpec,
        *,
        obs: Observation,
        t_ms: int,
        motion: _Motion,
        effects: Effects,
    ) -> tuple[RingState, Transition | None]:
        """Open the pre-alert early when the pair is predicted inside the alarm ring soon."""
        predicted = motion.get()
        if (
            predicted is None
            or predicted.closing_speed_mps < MIN_PREDICT_CLOSING_MPS
            or predicted.closest_m > spec.rings.alarm.ring_m
        ):
            return state, None
        facts = self._facts(obs, spec.rings.pre_alert, motion)
        cause = (
            f"closing at {predicted.closing_speed_mps:.0f} m/s, predicted within "
            f"{predicted.closest_m:.0f} m in {predicted.closest_in_s:.0f} s"
        )
        facts = Facts(facts.confidence, facts.closing_speed_mps, facts.eta_s, cause=cause)
        effects.signals.append(ring_signal(obs, spec.rings.pre_alert, "open", 0, facts))
        return RingState("inside", t_ms, obs.distance_m), "opened"

    def _facts(self, obs: Observation, params: RingParams, motion: _Motion) -> Facts:
        sigma = sigma_m(obs.offender.acc, obs.victim.acc)
        confidence = round(inside_probability(obs.distance_m, params.ring_m, sigma), 3)
        predicted = motion.get()
        if predicted is None:
            return Facts(confidence)
        eta = None if predicted.eta_s is None else round(predicted.eta_s, 1)
        return Facts(confidence, round(predicted.closing_speed_mps, 1) + 0.0, eta)


def _reopens(state: RingState, reading: Reading, params: RingParams) -> bool:
    """Whether a ring closed during an exemption is inside now that the window has ended."""
    return state.phase in _CLOSED_PHASES and reading.may_open and reading.enter_m <= params.ring_m


def _offender_step(
    old: RingState,
    ring: RingParams,
    real: RingParams,
    *,
    cell_m: float,
    uncertainty_m: float,
    t_ms: int,
    exempt: bool,
    off_track: bool,
) -> tuple[RingState, Transition | None]:
    """Advance one of his rings on his distance to her cell; suspended like hers when exempt."""
    if exempt and old.phase in _CLOSED_PHASES:
        return _suspended(old, t_ms), None
    return step(
        old, cell_reading(cell_m, uncertainty_m, ring, real, off_track=off_track), t_ms, ring
    )


def _suspended(old: RingState, t_ms: int) -> RingState:
    """A closed ring in an exemption window: nothing opens (an open ring still runs, to clear)."""
    return old if old.phase == "outside" else RingState("outside", t_ms)


class _Motion:
    """The pair's predicted approach, computed at most once per comparison and only if asked."""

    __slots__ = ("_done", "_judge", "_offender", "_spec", "_value", "_victim")

    def __init__(
        self, judge: PairJudge, spec: PairSpec, offender: Position, victim: Position
    ) -> None:
        self._judge, self._spec = judge, spec
        self._offender, self._victim = offender, victim
        self._done = False
        self._value: Approach | None = None

    def get(self) -> Approach | None:
        if not self._done:
            self._done = True
            devices = self._judge._devices
            self._value = approach(
                self._offender,
                velocity(devices[self._spec.offender].packed_track),
                self._victim,
                velocity(devices[self._spec.victim].packed_track),
                alarm_m=self._spec.rings.alarm.ring_m,
                horizon_s=self._judge._horizon_s,
            )
        return self._value


def _led_to(
    reporter: DeviceState, own: Position, partner_device: DeviceState | None, partner: Position
) -> tuple[float, float] | None:
    """Distance and uncertainty with each off-track fix replaced by where its device's track led
    (`partner_device`: the partner, when its newest fix is off track); None when unknown."""
    mine = reporter.led_to if reporter.off_track else own
    theirs = partner if partner_device is None else partner_device.led_to
    if mine is None or theirs is None:
        return None
    return distance_m(mine.lat, mine.lon, theirs.lat, theirs.lon), mine.acc + theirs.acc

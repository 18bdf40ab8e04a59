"""The accuracy rule, the confidence model, the GPS-jump filter and time to contact."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from nabij.contract import Fix, Position
from services.proximity.core.accuracy import (
    Reading,
    effective_acc,
    inside_probability,
    ring_reading,
    sigma_m,
)
from services.proximity.core.engine import Effects
from services.proximity.core.history import pack, quantised
from services.proximity.core.hysteresis import RingParams, Transition, step
from services.proximity.core.motion import approach, led_to, offset_m, on_track, velocity
from services.proximity.core.state import RingState
from tests.proximity import (
    OFFENDER,
    T0,
    VICTIM,
    Drive,
    engine,
    fix_at,
    of_action,
    opens,
    order,
    point_at,
)

S = 1_000
RING = RingParams("proximity_alarm", 500.0, 50.0, 10_000, 60_000, 100.0)


def test_confidence_agrees_with_a_monte_carlo_of_two_gaussian_errors() -> None:
    """P(inside) from the Rice model matches 200,000 simulated error pairs to within 0.01, from
    far outside to deep inside, for fine and coarse fixes."""
    rng = random.Random(5)
    for distance, acc_o, acc_v in [(450, 5, 5), (520, 30, 10), (0, 1500, 5), (900, 300, 300)]:
        sigma = sigma_m(acc_o, acc_v)
        inside = 0
        trials = 200_000
        for _ in range(trials):
            dx, dy = rng.gauss(0, sigma), rng.gauss(0, sigma)
            inside += (distance + dx) ** 2 + dy**2 <= 500.0**2
        assert abs(inside_probability(distance, 500.0, sigma) - inside / trials) < 0.01


def test_source_floors_raise_claimed_accuracy() -> None:
    """A cell fix claiming 50 m is taken as 300 m, wifi as at least 20 m; GNSS is believed."""
    assert effective_acc(50, "cell") == 300
    assert effective_acc(5, "wifi") == 20
    assert effective_acc(3, "gnss") == 3
    assert effective_acc(3, None) == 3


def test_a_coarse_reading_opens_at_most_the_pre_alert_and_never_clears() -> None:
    """A 1,500 m uncertainty next to the victim may open the pre-alert ring but not the alarm
    ring; once open, no coarse reading ever starts an exit or clears, however far it says."""
    pre = RingParams("proximity_pre_alert", 1000.0, 100.0, 0, 0, 100.0)
    state, change = step(RingState(), ring_reading(0.0, 1505.0, 1000.0, pre_alert=True), 0, pre)
    assert change == "opened"
    state_a, change_a = step(
        RingState(), ring_reading(0.0, 1505.0, 500.0, pre_alert=False), 0, RING
    )
    assert (state_a.phase, change_a) == ("outside", None)
    for distance in (3_000.0, 10_000.0, 90_000.0):
        later, change = step(state, ring_reading(distance, 1505.0, 1000.0, pre_alert=True), 1, pre)
        assert later is state and change is None


def run(readings: list[tuple[Reading, int]], params: RingParams = RING) -> list[Transition]:
    state, out = RingState(), []
    for reading, t in readings:
        state, change = step(state, reading, t, params)
        if change is not None:
            out.append(change)
    return out


@settings(max_examples=300, deadline=None)
@given(
    centre=st.floats(400.0, 600.0),
    noise=st.lists(st.floats(-24.9, 24.9), min_size=5, max_size=200),
    accs=st.lists(st.floats(0.0, 200.0), min_size=5, max_size=200),
)
def test_no_flapping_under_noise_below_the_exit_margin_whatever_the_accuracy(
    centre: float, noise: list[float], accs: list[float]
) -> None:
    """Distances within +-25 m of any centre (spread under the 50 m margin) and any accuracies:
    the accuracy-aware ring opens at most once and, once open, never clears (entry uses
    d - min(U, ring/2), exit d - U: the gap between them is at least the margin)."""
    readings = [
        (ring_reading(centre + n, accs[i % len(accs)], 500.0, pre_alert=False), i * 5 * S)
        for i, n in enumerate(noise)
    ]
    transitions = run(readings)
    assert transitions in ([], ["opened"])


@settings(max_examples=300, deadline=None)
@given(
    inside=st.lists(st.floats(0.0, 500.0), min_size=4, max_size=60),
    accs=st.lists(st.floats(0.0, 500.0), min_size=1, max_size=60),
    gap_s=st.integers(1, 15),
)
def test_no_missed_entry_when_truly_inside_longer_than_the_dwell(
    inside: list[float], accs: list[float], gap_s: int
) -> None:
    """A pair truly inside the ring, observed with any accuracy up to the ring's size for longer
    than the enter dwell, opens the ring: the rule never ignores a plausible approach."""
    readings = [
        (ring_reading(d, accs[i % len(accs)], 500.0, pre_alert=False), i * gap_s * S)
        for i, d in enumerate(inside)
    ]
    if readings[-1][1] - readings[0][1] < RING.enter_dwell_ms:
        return
    assert run(readings)[:1] == ["opened"]


def test_a_five_km_jump_is_an_outlier_and_moves_nothing() -> None:
    """One fix 5 km away 15 s after the last is ignored as "outlier" (counted), opens nothing and
    leaves the device's position where it was; the next normal fix is accepted."""
    drive = Drive(engine())
    drive.fix(VICTIM, T0, 5000)
    drive.fix(OFFENDER, T0)
    before = drive.engine.device(OFFENDER).fix
    step_effects = drive.fix(OFFENDER, T0 + 15 * S, 4990, acc=8)
    assert step_effects.ignored == [(OFFENDER, "outlier")]
    assert step_effects.signals == [] and step_effects.commands == []
    assert drive.engine.device(OFFENDER).fix == before
    assert drive.engine.device(OFFENDER).outliers == 1
    again = drive.fix(OFFENDER, T0 + 30 * S)
    assert again.ignored == [] and drive.engine.device(OFFENDER).candidates == []


def test_three_consistent_fixes_at_a_new_place_relocate_the_device() -> None:
    """After a 40 km jump, two fixes are outliers; the third, agreeing with them, is accepted as
    a real move (a train) and the pair is compared at the new place."""
    drive = Drive(engine(enter_dwell_s=0))
    drive.fix(VICTIM, T0)
    drive.fix(OFFENDER, T0, 40_000)
    verdicts = [drive.fix(OFFENDER, T0 + (60 + 15 * i) * S, 400 - 10 * i) for i in range(3)]
    assert [v.ignored for v in verdicts] == [[(OFFENDER, "outlier")]] * 2 + [[]]
    assert [s.kind for s in opens(verdicts[2].signals)] == [
        "proximity_pre_alert",
        "proximity_alarm",
    ]


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(st.tuples(st.floats(0, 20_000), st.integers(1, 120)), min_size=1, max_size=40),
    order=st.randoms(use_true_random=False),
)
def test_with_the_jump_filter_state_stays_monotonic_under_reordering(
    steps: list[tuple[float, int]], order: random.Random
) -> None:
    """Shuffled and duplicated fixes, many of them jumps: a device's seq never goes down (device
    time orders nothing beyond it), its accepted position is always one of its fixes (on the grid)
    no newer than its seq, and an outlier never changes the pair."""
    fixes: list[Fix] = []
    t = T0
    for seq, (distance, gap) in enumerate(steps):
        t += gap * S
        fixes.append(fix_at(OFFENDER, seq, t, distance))
    stream = fixes + fixes[::3]
    order.shuffle(stream)
    eng = engine()
    eng.apply(fix_at(VICTIM, 0, T0), T0, Effects())
    last_seq = -1
    for fix in stream:
        effects = Effects()
        before = eng.pair(("O-1", OFFENDER, VICTIM)).last_obs_ts
        eng.apply(fix, fix.ts, effects)
        device = eng.device(OFFENDER)
        assert device.last_seq >= last_seq
        last_seq = device.last_seq
        if device.fix is not None:
            assert any(
                quantised(f.lat, f.lon, f.acc, f.ts)[0] == device.fix and f.seq <= device.last_seq
                for f in fixes
            )
        if (OFFENDER, "outlier") in effects.ignored:
            # Out-of-order fixes in a row may raise or clear a device_fault; nothing else moves.
            assert [s for s in effects.signals if s.kind != "device_fault"] == []
            assert effects.changed_pairs == set()
            assert eng.pair(("O-1", OFFENDER, VICTIM)).last_obs_ts == before


def test_closing_speed_and_eta_of_a_car_towards_a_still_victim() -> None:
    """A car at 30 m/s heading straight for a still victim 1,500 m away closes at 30 m/s and
    reaches the 500 m ring in about 33 s; its closest approach within 60 s is (near) zero."""
    drive = Drive(engine())
    drive.fix(VICTIM, T0)
    drive.fix(VICTIM, T0 + 15 * S)
    drive.fix(OFFENDER, T0 + 15 * S, 1950)
    drive.fix(OFFENDER, T0 + 30 * S, 1500)
    offender, victim = drive.engine.device(OFFENDER), drive.engine.device(VICTIM)
    assert offender.fix is not None and victim.fix is not None
    predicted = approach(
        offender.fix,
        velocity(offender.packed_track),
        victim.fix,
        velocity(victim.packed_track),
        alarm_m=500,
        horizon_s=60,
    )
    assert predicted is not None
    assert abs(predicted.closing_speed_mps - 30) < 0.5
    assert predicted.eta_s is not None and abs(predicted.eta_s - 33.3) < 1
    assert predicted.closest_m < 20


def test_a_fast_approach_opens_the_pre_alert_early_with_speed_and_eta() -> None:
    """Predicted inside the alarm ring within the 60 s horizon: the pre-alert opens while the
    car is still beyond the 1 km ring, and the signal carries closing speed and eta."""
    drive = Drive(engine())
    drive.fix(VICTIM, T0)
    drive.fix(OFFENDER, T0, 3000)
    drive.fix(OFFENDER, T0 + 15 * S, 2550)
    step_effects = drive.fix(OFFENDER, T0 + 30 * S, 2100)
    pre = of_action(step_effects.signals, "open", "proximity_pre_alert")
    assert len(pre) == 1 and "predicted" in pre[0].reason
    assert pre[0].closing_speed_mps is not None and pre[0].closing_speed_mps > 25
    assert pre[0].eta_s is not None and 50 < pre[0].eta_s < 60
    assert opens(step_effects.signals, "proximity_alarm") == []


def test_victim_and_offender_approach_give_the_same_timeline() -> None:
    """Both sides are always checked: the victim walking to a still offender opens the same
    rings at the same times as the offender walking to a still victim."""

    def timeline(mover: str, still: str) -> list[tuple[str, str, int]]:
        drive = Drive(engine())
        out = []
        for i, distance in enumerate(range(2000, 100, -45)):
            t = T0 + i * 15 * S
            for step_effects in (
                drive.fix(still, t),
                drive.fix(mover, t + 5 * S, float(distance), bearing=45.0),
            ):
                out.extend((s.action, s.kind, t) for s in step_effects.signals)
        return out

    assert timeline(VICTIM, OFFENDER) == timeline(OFFENDER, VICTIM)
    assert ("open", "proximity_alarm") in {(a, k) for a, k, _ in timeline(VICTIM, OFFENDER)}


def _walk(speed_mps: float, heading: float, interval_s: int, n: int) -> list[Position]:
    """`n` exact fixes (5 m accuracy) of a device going straight from the Dam."""
    return [
        Position(
            *point_at(speed_mps * i * interval_s, heading), acc=5.0, ts=T0 + i * interval_s * S
        )
        for i in range(n)
    ]


@settings(max_examples=200, deadline=None)
@given(
    speed=st.floats(0.0, 60.0),
    heading=st.floats(0.0, 359.0),
    interval_s=st.integers(5, 60),
    stop_after=st.integers(2, 5),
)
def test_going_on_slowing_down_or_stopping_stays_on_the_track(
    speed: float, heading: float, interval_s: int, stop_after: int
) -> None:
    """A device going straight at any speed up to 60 m/s, then stopping dead, is never off its
    track once the track gives a velocity (from its second fix on): a real arrival waits for no
    extra fix (a multipath jump sideways would)."""
    fixes = _walk(speed, heading, interval_s, stop_after)
    stopped = fixes[-1]
    fixes += [Position(stopped.lat, stopped.lon, 5.0, stopped.ts + i * interval_s * S)
              for i in range(1, 3)]  # fmt: skip
    for i in range(2, len(fixes)):
        assert on_track(pack(fixes[max(0, i - 5) : i]), fixes[i])


@settings(max_examples=200, deadline=None)
@given(
    sideways_m=st.floats(110.0, 400.0),
    interval_s=st.integers(10, 60),
    side=st.sampled_from([-1, 1]),
)
def test_a_multipath_jump_off_a_walk_is_off_the_track(
    sideways_m: float, interval_s: int, side: int
) -> None:
    """A walker (1.4 m/s) whose next fix is thrown 110-400 m sideways (the simulators' multipath
    jumps: 100-400 m; the speed filter lets them through) is off the track."""
    fixes = _walk(1.4, 90.0, interval_s, 4)
    ahead = _walk(1.4, 90.0, interval_s, 5)[-1]
    lat, lon = point_at(sideways_m, 90.0 + side * 90.0, (ahead.lat, ahead.lon))
    assert not on_track(pack(fixes), Position(lat, lon, 5.0, ahead.ts))


def test_a_single_jump_under_the_critical_distance_opens_nothing() -> None:
    """A walker passing 150 m from the victim (alarm ring 100 m), one fix thrown onto her
    doorstep (a multipath jump within 70 m/s of the track; on main it opened the alarm at once,
    under the critical distance): the alarm does not open, neither on her next fix the dwell
    later nor on his next fix, back on the track."""
    drive = Drive(engine([order(alarm_m=100)], predict_horizon_s=0))
    drive.fix(VICTIM, T0)
    for i in range(4):
        drive.fix(OFFENDER, T0 + i * 15 * S, 150 + 20 * i, bearing=0.0)
    drive.fix(OFFENDER, T0 + 60 * S, 0.0)
    assert drive.engine.device(OFFENDER).off_track
    drive.fix(VICTIM, T0 + 72 * S)
    drive.fix(OFFENDER, T0 + 75 * S, 250, bearing=0.0)
    assert not drive.engine.device(OFFENDER).off_track
    assert opens(drive.effects.signals, "proximity_alarm") == []


def test_a_steady_walk_to_her_door_opens_on_the_fix_under_the_critical_distance() -> None:
    """The rule costs a fix only when the arrival lies off the track: a steady walk (1.5 m/s)
    up to her door (alarm ring 100 m) opens the alarm on the very fix that brings him under the
    critical distance (100 m, less both 5 m radii: none of his fixes lies on it, where the grid's
    millimetres would break the tie)."""
    drive = Drive(engine([order(alarm_m=100)], predict_horizon_s=0))
    drive.fix(VICTIM, T0)
    for i, distance in enumerate([201, 171, 141, 111, 81]):
        drive.fix(OFFENDER, T0 + i * 20 * S, distance)
    (alarm,) = opens(drive.effects.signals, "proximity_alarm")
    assert alarm.at == T0 + 80 * S


def _walk_in(drive: Drive, distances: list[float], interval_s: int = 60) -> None:
    """The offender walking straight in from the north, one fix every `interval_s`."""
    for i, distance in enumerate(distances):
        drive.fix(OFFENDER, T0 + i * interval_s * S, distance, bearing=0.0)


def test_an_off_track_fix_opens_when_his_track_leads_inside_too() -> None:
    """Quality case Q000023 (urban_canyon): a walker 90 m a minute towards her, the pre-alert
    ring 400 m; his fix at 180 s is thrown sideways to 250 m east of her, while his track leads
    to 370 m north: off the track, but it is not what puts the pair inside, so her fix the
    dwell later opens the pre-alert (before, it waited for his next fix, a minute on)."""
    drive = Drive(engine([order(alarm_m=200, pre_alert_m=400)], predict_horizon_s=0,
                         max_fix_age_s=600))  # fmt: skip
    drive.fix(VICTIM, T0)
    _walk_in(drive, [640, 550, 460])
    drive.fix(OFFENDER, T0 + 180 * S, 250, bearing=90.0)
    assert drive.engine.device(OFFENDER).off_track
    drive.fix(VICTIM, T0 + 195 * S)
    (pre,) = opens(drive.effects.signals, "proximity_pre_alert")
    assert pre.at == T0 + 195 * S
    assert opens(drive.effects.signals, "proximity_alarm") == []


def test_a_jump_outward_cancels_no_entry_dwell_his_track_still_serves() -> None:
    """Quality case Q003893 (urban_canyon): the pre-alert ring's dwell starts on his fix at
    370 m; his next is thrown 650 m out while his track leads to 280 m: it moves nothing
    outward, so the fix after, back on the track, opens at once (before, the jump cancelled the
    dwell and the open waited one more fix)."""
    drive = Drive(engine([order(alarm_m=100, pre_alert_m=400)], predict_horizon_s=0,
                         max_fix_age_s=600))  # fmt: skip
    drive.fix(VICTIM, T0)
    _walk_in(drive, [640, 550, 460, 370])
    assert drive.engine.pair(drive.engine.pair_keys()[0]).pre_alert.phase == "entering"
    drive.fix(OFFENDER, T0 + 240 * S, 650, bearing=45.0)
    assert drive.engine.device(OFFENDER).off_track
    assert drive.engine.pair(drive.engine.pair_keys()[0]).pre_alert.phase == "entering"
    drive.fix(OFFENDER, T0 + 300 * S, 190, bearing=0.0)
    (pre,) = opens(drive.effects.signals, "proximity_pre_alert")
    assert pre.at == T0 + 300 * S


def test_where_a_track_leads_is_not_bent_by_its_own_newest_jump() -> None:
    """Quality case Q000023: a walker (1.5 m/s north) whose newest fix was itself thrown 40 m
    back (on the track by its margin, so it bent the velocity); his next fix, thrown 200 m
    sideways of where the walk leads, is judged against where the walk before the bent fix
    leads (360 m north), not against the bent one (280 m)."""
    walk = _walk(1.5, 0.0, 60, 4)
    thrown_back = Position(*point_at(270 - 40, 0.0), acc=5.0, ts=walk[3].ts)
    track = [*walk[:3], thrown_back]
    fix = Position(*point_at(200, 90.0, point_at(360, 0.0)), acc=5.0, ts=T0 + 240 * S)
    north, east = offset_m(walk[0], led_to(pack(track), fix))
    assert abs(north - 360) < 5 and abs(east) < 5

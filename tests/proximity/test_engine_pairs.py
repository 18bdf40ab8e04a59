"""Engine scenarios for pairs: approach and leave, wobble, critical distance, backlog, orders."""

from __future__ import annotations

import json
import random

import msgspec

from nabij.contract import Fix, SetInterval, Topics, Warn, encode
from services.proximity.core.engine import Effects
from services.proximity.core.ingest import parse_uplink
from tests.proximity import (
    OFFENDER,
    T0,
    VICTIM,
    Drive,
    commands_to,
    engine,
    fix_at,
    of_action,
    opens,
    order,
)

PAIR = ("O-1", OFFENDER, VICTIM)
S = 1_000


def approach_and_leave() -> Drive:
    """Victim still at the Dam; the offender walks in from 3 km to 300 m, then away to 2 km.

    Both report every 15 s (the victim a second after the offender).
    """
    drive = Drive(engine())
    path = [3000, 2500, 1500, 950, 900, 800, 600, 450, 420, 300, 300]
    path += [700, 700, 700, 700, 700, 700, 1200, 1500, 2000, 2000, 2000, 2000, 2000, 2000]
    for i, distance in enumerate(path):
        t = T0 + i * 15 * S
        drive.fix(OFFENDER, t, distance)
        drive.fix(VICTIM, t + S)
    return drive


def test_approach_opens_pre_alert_then_alarm_and_leaving_clears_both() -> None:
    """An approach opens the pre-alert ring (1 km, twice the alarm ring) first and the alarm ring
    (500 m) later, each once; walking away clears the alarm ring and then the pre-alert ring."""
    drive = approach_and_leave()
    sequence = [(s.action, s.kind) for s in drive.effects.signals if s.action != "update"]
    assert sequence == [
        ("open", "proximity_pre_alert"),
        ("open", "proximity_alarm"),
        ("clear", "proximity_alarm"),
        ("clear", "proximity_pre_alert"),
    ]
    pair = drive.engine.pair(PAIR)
    assert (pair.pre_alert.phase, pair.alarm.phase) == ("outside", "outside")


def test_ring_signals_carry_key_id_distance_and_both_positions() -> None:
    """An alarm open names the order and the victim's role in its key (not the devices), has a
    deterministic id from the reporting device and seq, a rounded distance, the summed accuracy,
    both positions and a reason without coordinates."""
    drive = approach_and_leave()
    alarm = opens(drive.effects.signals, "proximity_alarm")[0]
    assert alarm.alarm_key == "proximity_alarm|O-1|offender|victim1"
    assert alarm.signal_id.startswith(f"{alarm.alarm_key}|open|")
    reporter, seq = alarm.signal_id.split("|")[-2:]
    assert reporter in (OFFENDER, VICTIM) and seq.isdigit()
    assert alarm.order_id == "O-1" and alarm.victim_device == VICTIM
    assert alarm.distance_m is not None and alarm.distance_m == round(alarm.distance_m, 1)
    assert 400 <= alarm.distance_m <= 500
    assert alarm.uncertainty_m == 10.0
    assert alarm.offender is not None and alarm.victim is not None
    assert "alarm ring 500 m" in alarm.reason and "for 15 s" in alarm.reason
    for signal in drive.effects.signals:
        assert f"{alarm.offender.lat:.3f}"[:5] not in signal.reason
        assert "52.3" not in signal.reason and "4.89" not in signal.reason


def test_the_same_inputs_give_the_same_signals() -> None:
    """Determinism: replaying the same inputs on a fresh engine yields identical signals, ids
    included."""
    first, second = approach_and_leave(), approach_and_leave()
    assert encode_all(first.effects) == encode_all(second.effects)


def encode_all(effects: Effects) -> list[bytes]:
    return [encode(signal) for signal in effects.signals]


def test_updates_only_when_the_distance_moved_enough() -> None:
    """While open, an update goes out only when the distance moved 10% or 50 m (the smaller)
    from the last reported one, never for a steady distance."""
    drive = Drive(engine())
    drive.fix(VICTIM, T0)
    for i, distance in enumerate([400, 400, 395, 380, 340, 340, 339, 200, 190, 178]):
        drive.fix(OFFENDER, T0 + i * 10 * S, distance)
    updates = of_action(drive.effects.signals, "update", "proximity_alarm")
    assert [u.distance_m for u in updates] == [340.0, 200.0, 178.0]


def test_ten_minutes_of_wobble_around_the_alarm_ring_opens_exactly_one_alarm() -> None:
    """An offender loitering at the 500 m ring with GPS noise of +-40 m (less than the 50 m exit
    margin) for 10 minutes opens the alarm once and never clears it."""
    rng = random.Random(7)
    drive = Drive(engine())
    for i in range(10 * 60 // 5):
        t = T0 + i * 5 * S
        if i % 6 == 0:
            drive.fix(VICTIM, t, rng.uniform(0, 10), bearing=rng.uniform(0, 360))
        drive.fix(OFFENDER, t + 500, 500 + rng.uniform(-40, 40))
    signals = drive.effects.signals
    assert len(opens(signals, "proximity_alarm")) == 1
    assert of_action(signals, "clear", "proximity_alarm") == []
    assert len(opens(signals, "proximity_pre_alert")) == 1
    warns = [c for c in commands_to(drive.effects.commands, VICTIM) if isinstance(c, Warn)]
    assert warns == [Warn(level="alarm")]


def test_critical_distance_opens_both_rings_at_once() -> None:
    """A car arriving from 3 km to under the critical distance (100 m) in one fix interval opens
    the pre-alert and the alarm ring on that one fix, and warns both devices of the alarm (no
    pre-alert warning)."""
    drive = Drive(engine(predict_horizon_s=0))
    drive.fix(VICTIM, T0)
    drive.fix(OFFENDER, T0 + S, 3000)
    step = drive.fix(OFFENDER, T0 + 61 * S, 80)
    assert [(s.action, s.kind) for s in step.signals] == [
        ("open", "proximity_pre_alert"),
        ("open", "proximity_alarm"),
    ]
    assert "critical" in step.signals[1].reason
    assert commands_to(step.commands, OFFENDER)[0] == Warn(level="alarm")
    assert commands_to(step.commands, VICTIM)[0] == Warn(level="alarm")
    assert Warn(level="pre_alert") not in commands_to(step.commands, OFFENDER)


def test_backlog_array_is_applied_in_seq_order() -> None:
    """A backlog array, sent shuffled after a coverage gap, is decoded sorted by seq and replays
    the approach in order at the times it was measured: pre-alert before alarm, the alarm marked
    as detected late, pair time ending at the receipt of the newest fix."""
    eng = engine()
    effects = Effects()
    eng.apply(fix_at(OFFENDER, 0, T0 + 465 * S, 1600), T0 + 465 * S, effects)  # before the gap
    eng.apply(fix_at(VICTIM, 0, T0 + 600 * S), T0 + 600 * S, effects)
    distances = [1500, 1200, 900, 800, 700, 450, 400, 350, 300]
    backlog = [
        msgspec.to_builtins(fix_at(OFFENDER, seq, T0 + (465 + 15 * seq) * S, d))
        for seq, d in enumerate(distances, start=1)
    ]
    random.Random(3).shuffle(backlog)
    topics = Topics("nabij/v1")
    now = T0 + 601 * S
    parsed = parse_uplink(
        topics, topics.device(OFFENDER, "fix"), json.dumps(backlog).encode(), now, eng.is_known
    )
    assert [u.seq for u in parsed.uplinks if isinstance(u, Fix)] == list(range(1, 10))
    for uplink in parsed.uplinks:
        eng.apply(uplink, now, effects)
    assert effects.ignored == []
    opened = [s for s in effects.signals if s.action == "open"]
    assert [s.kind for s in opened] == ["proximity_pre_alert", "proximity_alarm"]
    alarm = opened[1]
    assert alarm.happened_at == T0 + (465 + 15 * 7) * S  # 400 m, dwell served since 450 m
    assert alarm.late_s == 31 and "DETECTED LATE" in alarm.reason
    assert eng.device(OFFENDER).last_seq == len(distances)
    assert eng.pair(PAIR).last_obs_ts == now


def test_no_comparison_with_a_stale_partner_fix() -> None:
    """A partner position received more than max_fix_age_s (120 s) before is not compared
    against, whatever the device clocks say."""
    eng = engine()
    eng.apply(fix_at(VICTIM, 0, T0), T0, Effects())
    step = Effects()
    eng.apply(fix_at(OFFENDER, 0, T0, 50), T0 + 121 * S, step)  # stamped like the victim's
    assert step.signals == [] and step.changed_pairs == set()
    step = Effects()
    eng.apply(fix_at(OFFENDER, 1, T0 + 900 * S, 50), T0 + 120 * S, step)  # clock far ahead
    assert step.changed_pairs == {PAIR}


def test_a_victim_fix_triggers_the_comparison_too() -> None:
    """The check runs when either device reports: a victim walking towards a still offender."""
    drive = Drive(engine(enter_dwell_s=0))
    drive.fix(OFFENDER, T0, 300)
    step = drive.fix(VICTIM, T0 + S)
    assert [s.kind for s in opens(step.signals)] == ["proximity_pre_alert", "proximity_alarm"]
    assert all(s.signal_id.endswith(f"|{VICTIM}|0") for s in step.signals)


def test_one_offender_with_three_victims_has_three_independent_pairs() -> None:
    """Approaching one of three victims opens that pair only; only that victim and the offender
    get commands."""
    eng = engine([order(victims=("vic-a", "vic-b", "vic-c"))], enter_dwell_s=0)
    drive = Drive(eng)
    drive.fix("vic-a", T0)  # at the Dam
    drive.fix("vic-b", T0, 3000, bearing=0)  # 3 km north
    drive.fix("vic-c", T0, 3000, bearing=180)  # 3 km south
    step = drive.fix(OFFENDER, T0 + S, 2600, bearing=0)  # 400 m from vic-b
    assert {s.victim_device for s in step.signals} == {"vic-b"}
    assert {s.kind for s in step.signals} == {"proximity_pre_alert", "proximity_alarm"}
    assert {target for target, _ in step.commands} == {OFFENDER, "vic-b"}
    assert eng.pair(("O-1", OFFENDER, "vic-a")).alarm.phase == "outside"
    assert eng.pair(("O-1", OFFENDER, "vic-b")).alarm.phase == "inside"
    assert step.changed_pairs == {("O-1", OFFENDER, v) for v in ("vic-a", "vic-b", "vic-c")}


def test_a_victim_under_two_orders_is_protected_by_each() -> None:
    """A victim in two orders (two offenders, different rings) has one pair per order; each
    opens on its own ring."""
    orders = [order("O-1", "ank-x", alarm_m=500), order("O-2", "ank-y", alarm_m=1000)]
    eng = engine(orders, enter_dwell_s=0)
    drive = Drive(eng)
    drive.fix(VICTIM, T0)
    drive.fix("ank-x", T0 + S, 800)
    step = drive.fix("ank-y", T0 + S, 800)
    assert [(s.order_id, s.kind) for s in opens(drive.effects.signals, "proximity_alarm")] == [
        ("O-2", "proximity_alarm")
    ]
    assert {s.order_id for s in opens(drive.effects.signals, "proximity_pre_alert")} == {
        "O-1",
        "O-2",
    }
    assert step.changed_pairs == {("O-2", "ank-y", VICTIM)}
    assert eng.pair(("O-1", "ank-x", VICTIM)).alarm.phase == "outside"


def test_commands_go_to_the_pair_only_and_never_carry_a_position() -> None:
    """Interval and warn commands reach only the pair's two devices; the victim is never told of
    a pre-alert (not even a predicted one); no command carries a coordinate or distance."""
    drive = approach_and_leave()
    commands = drive.effects.commands
    assert {target for target, _ in commands} <= {OFFENDER, VICTIM}
    for target, command in commands:
        body = msgspec.to_builtins(command)
        assert set(body) <= {"type", "seconds", "level"}
        if target == VICTIM:
            assert command != Warn(level="pre_alert")
    # At 50 m/s the pre-alert opens by prediction, straight from outside: warn, then interval.
    assert commands_to(commands, OFFENDER) == [
        Warn(level="pre_alert"),
        SetInterval(seconds=15),
        Warn(level="alarm"),
        Warn(level="clear"),
        SetInterval(seconds=60),
    ]
    assert commands_to(commands, VICTIM) == [
        SetInterval(seconds=15),
        Warn(level="alarm"),
        Warn(level="clear"),
        SetInterval(seconds=60),
    ]

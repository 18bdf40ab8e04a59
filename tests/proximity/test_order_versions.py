"""A new version of the orders applied to a running engine (`ProximityEngine.successor`)."""

from __future__ import annotations

from services.proximity.core.engine import Effects
from tests.proximity import OFFENDER, T0, VICTIM, Drive, engine, of_action, opens, order

S = 1_000


def standing(drive: Drive, distance_m: float, fixes: int, start: int = T0) -> int:
    """Both devices report every 10 s, the offender `distance_m` from her."""
    t = start
    for _ in range(fixes):
        drive.fix(OFFENDER, t, distance_m)
        drive.fix(VICTIM, t + S)
        t += 10 * S
    return t


def test_unchanged_order_keeps_its_pair_state_and_signals_nothing() -> None:
    """Adding another order leaves an open alarm of an unchanged order open, with no new signal."""
    drive = Drive(engine([order(alarm_m=500)]))
    t = standing(drive, 200, 6)
    assert opens(drive.effects.signals, "proximity_alarm")
    effects = Effects()
    other = order("O-2", offender="ank-0002", victims=["vic-0002"])
    successor = drive.engine.successor([order(alarm_m=500), other], t, effects)
    assert effects.signals == []
    assert successor.pair(("O-1", OFFENDER, VICTIM)).alarm.phase == "inside"
    assert successor.is_known("ank-0002")


def test_a_new_order_is_judged_at_once_from_the_latest_fixes() -> None:
    """An offender already within the new order's critical distance: the alarm opens on apply."""
    drive = Drive(engine([order("O-1", alarm_m=20, pre_alert_m=30)]))
    t = standing(drive, 60, 3)
    assert drive.effects.signals == []
    effects = Effects()
    drive.engine.successor([order("O-1", alarm_m=20, pre_alert_m=30), order("O-2")], t, effects)
    assert {(s.order_id, s.kind) for s in opens(effects.signals)} >= {("O-2", "proximity_alarm")}


def test_a_widened_ring_opens_a_pre_alert_the_old_ring_did_not() -> None:
    drive = Drive(engine([order(alarm_m=100, pre_alert_m=200)]))
    t = standing(drive, 700, 6)
    assert drive.effects.signals == []
    successor = drive.engine.successor([order(alarm_m=300, pre_alert_m=1000)], t, Effects())
    drive.engine = successor
    standing(drive, 700, 6, start=t + 10 * S)
    assert [s.kind for s in opens(drive.effects.signals)] == ["proximity_pre_alert"]


def test_an_ended_order_clears_its_open_rings_saying_why() -> None:
    drive = Drive(engine([order(alarm_m=500)]))
    t = standing(drive, 200, 6)
    effects = Effects()
    successor = drive.engine.successor([], t, effects)
    cleared = {s.kind for s in of_action(effects.signals, "clear", "proximity_alarm")}
    cleared |= {s.kind for s in of_action(effects.signals, "clear", "proximity_pre_alert")}
    assert cleared == {"proximity_alarm", "proximity_pre_alert"}
    assert all("order ended" in s.reason for s in effects.signals)
    assert not successor.is_known(OFFENDER)


def test_a_replaced_device_becomes_unknown_and_the_new_one_is_judged_from_its_first_fix() -> None:
    drive = Drive(engine([order(alarm_m=500)]))
    t = standing(drive, 3000, 2)
    drive.engine = drive.engine.successor([order(offender="ank-0009")], t, Effects())
    assert not drive.engine.is_known(OFFENDER)
    drive.fix("ank-0009", t, 50)
    drive.fix(VICTIM, t + S)
    assert [s.offender_device for s in opens(drive.effects.signals, "proximity_alarm")] == [
        "ank-0009"
    ]

"""A new version of the orders applied to a running engine (`ProximityEngine.successor`)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nabij.config import Order
from nabij.contract import Warn
from services.proximity.core.engine import Effects
from services.proximity.core.state import (
    device_state_decoder,
    encode_pair,
    encoded_device,
    pair_state_decoder,
)
from tests.proximity import (
    DAM,
    OFFENDER,
    T0,
    VICTIM,
    Drive,
    commands_to,
    engine,
    of_action,
    opens,
    order,
)

S = 1_000


def standing(drive: Drive, distance_m: float, fixes: int, start: int = T0) -> int:
    """Both devices report every 10 s, the offender `distance_m` from her."""
    return standing_as(drive, OFFENDER, VICTIM, distance_m, fixes, start=start)


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
    assert {s.cause for s in effects.signals} == {"order_ended"}
    assert not successor.is_known(OFFENDER)


def test_an_order_not_yet_in_force_clears_saying_so() -> None:
    """The shell says why an order left the engine (`ended_why`): the clears carry that cause."""
    drive = Drive(engine([order(alarm_m=500)]))
    t = standing(drive, 200, 6)
    effects = Effects()
    drive.engine.successor([], t, effects, {"O-1": "order_not_started"})
    assert {s.cause for s in effects.signals} == {"order_not_started"}
    assert all("(order not started)" in s.reason for s in effects.signals)


def test_an_order_moved_to_another_shard_leaves_unclear_and_goes_on_there_as_it_was() -> None:
    """A live hand-over (docs/architecture.md) as its two engines see it: the source drops the
    moved order without a signal (`ended_why` None); the destination loads the source's last
    state of it under the order as it was, then steps to the new orders: the open alarm stays
    the same open alarm (no signal), beside a new order joining it to the destination's."""
    source = Drive(engine([order(alarm_m=500)]))
    t = standing(source, 200, 6)
    assert opens(source.effects.signals, "proximity_alarm")
    effects = Effects()
    source.engine.successor([], t, effects, {"O-1": None})
    assert effects.signals == [] and effects.changed_pairs == set()
    kept = order("O-2", offender="ank-0002", victims=["vic-0002"])
    destination = engine([kept]).successor([kept, order(alarm_m=500)], t, Effects())
    destination.load(
        [source.engine.device(OFFENDER), source.engine.device(VICTIM)],
        [source.engine.pair(("O-1", OFFENDER, VICTIM))],
    )
    joining = order("O-3", offender=OFFENDER, victims=["vic-0002"], alarm_m=500)
    effects = Effects()
    after = destination.successor([kept, order(alarm_m=500), joining], t, effects)
    assert after.pair(("O-1", OFFENDER, VICTIM)).alarm.phase == "inside"
    assert not [s for s in effects.signals if s.order_id == "O-1"]
    assert after.is_known("vic-0002") and after.device(OFFENDER).last_seq >= 0


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


NEW_OFFENDER = "ank-0009"
NEW_VICTIM = "vic-0009"


def test_an_offender_swap_keeps_the_open_alarm_and_the_new_device_carries_it() -> None:
    """The ankle monitor is swapped while the alarm is open: no clear, no second open; the new
    device is warned at once; its fixes update and then clear the same alarm (same key)."""
    drive = Drive(engine([order(alarm_m=500)]))
    t = standing(drive, 200, 6)
    [opened] = opens(drive.effects.signals, "proximity_alarm")
    effects = Effects()
    drive.engine = drive.engine.successor([order(offender=NEW_OFFENDER)], t, effects)
    assert effects.signals == []
    assert Warn(level="alarm") in commands_to(effects.commands, NEW_OFFENDER)
    assert not drive.engine.is_known(OFFENDER)
    assert drive.engine.pair(("O-1", NEW_OFFENDER, VICTIM)).alarm.phase == "inside"
    drive.effects = Effects()
    t = standing_as(drive, NEW_OFFENDER, VICTIM, 200, 2, start=t + 10 * S)
    assert opens(drive.effects.signals) == []
    standing_as(drive, NEW_OFFENDER, VICTIM, 3000, 12, start=t)
    [cleared] = of_action(drive.effects.signals, "clear", "proximity_alarm")
    assert cleared.alarm_key == opened.alarm_key
    assert cleared.offender_device == NEW_OFFENDER and cleared.cause is None
    assert opens(drive.effects.signals) == []


def test_a_victim_swap_keeps_the_open_alarm_and_warns_her_new_device_at_once() -> None:
    drive = Drive(engine([order(alarm_m=500)]))
    t = standing(drive, 200, 6)
    [opened] = opens(drive.effects.signals, "proximity_alarm")
    effects = Effects()
    drive.engine = drive.engine.successor([order(victims=[NEW_VICTIM])], t, effects)
    assert effects.signals == []
    assert Warn(level="alarm") in commands_to(effects.commands, NEW_VICTIM)
    assert ("O-1", OFFENDER, NEW_VICTIM) in effects.changed_pairs
    drive.effects = Effects()
    standing_as(drive, OFFENDER, NEW_VICTIM, 3000, 12, start=t + 10 * S)
    [cleared] = of_action(drive.effects.signals, "clear", "proximity_alarm")
    assert cleared.alarm_key == opened.alarm_key and cleared.victim_device == NEW_VICTIM
    assert opens(drive.effects.signals) == []


def test_a_victim_leaving_a_going_order_clears_her_alarm_as_order_changed() -> None:
    """Her alarm clears with `order_changed`; the victim after her moves up a role, so her pair
    starts afresh under its new key rather than inherit a stranger's rings."""
    drive = Drive(engine([order(victims=[VICTIM, "vic-0002"], alarm_m=500)]))
    t = standing(drive, 200, 6)
    effects = Effects()
    drive.engine = drive.engine.successor([order(victims=["vic-0002"])], t, effects)
    [cleared] = of_action(effects.signals, "clear", "proximity_alarm")
    assert cleared.alarm_key == "proximity_alarm|O-1|offender|victim1"
    assert cleared.victim_device == VICTIM and cleared.cause == "order_changed"
    assert drive.engine.pair(("O-1", OFFENDER, "vic-0002")).alarm.phase == "outside"


def standing_as(
    drive: Drive, offender: str, victim: str, distance_m: float, fixes: int, *, start: int
) -> int:
    """Both devices report every 10 s, `offender` `distance_m` from `victim`."""
    t = start
    for _ in range(fixes):
        drive.fix(offender, t, distance_m)
        drive.fix(victim, t + S)
        t += 10 * S
    return t


def zone_order(offender: str = OFFENDER, zones: bool = True, radius_m: float = 300) -> Order:
    zone = [{"name": "home", "lat": DAM[0], "lon": DAM[1], "radius_m": radius_m}] if zones else []
    return Order.model_validate(
        {
            "id": "O-1",
            "offender_device": offender,
            "victim_devices": [VICTIM],
            "alarm_m": 50,
            "zone": zone,
        }
    )


def in_zone(drive: Drive, fixes: int, start: int = T0, offender: str = OFFENDER) -> int:
    """The offender 100 m from the zone's centre (deep inside), her far away."""
    t = start
    for _ in range(fixes):
        drive.fix(VICTIM, t, 9000, bearing=0)
        drive.fix(offender, t + S, 100, bearing=180)
        t += 15 * S
    return t


def test_a_new_zone_opens_at_once_from_the_offender_latest_fix() -> None:
    """He stands deep inside a zone the order did not have: applying it opens the zone alarm with
    no new fix, and he is warned."""
    drive = Drive(engine([zone_order(zones=False)]))
    t = in_zone(drive, 3)
    assert drive.effects.signals == []
    effects = Effects()
    drive.engine.successor([zone_order()], t, effects)
    assert [(s.action, s.kind, s.zone) for s in effects.signals] == [("open", "zone_alarm", "home")]
    assert Warn(level="alarm") in commands_to(effects.commands, OFFENDER)


def test_an_unchanged_order_does_not_judge_its_zones_again() -> None:
    drive = Drive(engine([zone_order()]))
    t = in_zone(drive, 3)
    assert opens(drive.effects.signals, "zone_alarm")
    effects = Effects()
    drive.engine.successor([zone_order(), order("O-2", "ank-0002", ["vic-0002"])], t, effects)
    assert effects.signals == [] and effects.commands == []


def test_an_ended_order_or_a_removed_zone_clears_the_open_zone_alarm_saying_why() -> None:
    for successor_orders, cause in (
        ([], "order_ended"),
        ([zone_order(zones=False)], "order_changed"),
    ):
        drive = Drive(engine([zone_order()]))
        t = in_zone(drive, 3)
        [opened] = opens(drive.effects.signals, "zone_alarm")
        effects = Effects()
        successor = drive.engine.successor(successor_orders, t, effects)
        [cleared] = effects.signals
        assert all(successor.is_known(d) for d in effects.changed_devices)
        assert (cleared.action, cleared.alarm_key, cleared.cause) == (
            "clear",
            opened.alarm_key,
            cause,
        )
        assert "'home'" in cleared.reason and cause.replace("_", " ") in cleared.reason


def test_an_offender_swap_keeps_the_open_zone_alarm() -> None:
    """The new ankle monitor takes over the zone's state: no clear at the swap, warned at once,
    and leaving the zone clears the same alarm."""
    drive = Drive(engine([zone_order()]))
    t = in_zone(drive, 3)
    [opened] = opens(drive.effects.signals, "zone_alarm")
    effects = Effects()
    drive.engine = drive.engine.successor([zone_order(NEW_OFFENDER)], t, effects)
    assert effects.signals == []
    assert Warn(level="alarm") in commands_to(effects.commands, NEW_OFFENDER)
    assert NEW_OFFENDER in effects.changed_devices
    assert OFFENDER not in effects.changed_devices  # unknown now: nothing of it to persist
    drive.effects = Effects()
    for i in range(12):
        drive.fix(NEW_OFFENDER, t + i * 15 * S, 2000, bearing=180)
    [cleared] = of_action(drive.effects.signals, "clear", "zone_alarm")
    assert cleared.alarm_key == opened.alarm_key and cleared.offender_device == NEW_OFFENDER
    assert opens(drive.effects.signals) == []


def test_a_swap_survives_a_restart_through_msgpack() -> None:
    """What the swap marks to persist (the new pair's rings, the new device) is enough: a fresh
    engine of the new orders loaded from it (as the service restarts) clears the same alarm on the
    new device's far fixes, and opens no second one."""
    drive = Drive(engine([order(alarm_m=500)]))
    t = standing(drive, 200, 6)
    [opened] = opens(drive.effects.signals, "proximity_alarm")
    effects = Effects()
    swapped = drive.engine.successor([order(offender=NEW_OFFENDER)], t, effects)
    pairs = [swapped.pair(key) for key in effects.changed_pairs]
    devices = [swapped.device(d) for d in effects.changed_devices | {VICTIM}]
    fresh = engine([order(offender=NEW_OFFENDER)])
    fresh.load(
        [device_state_decoder.decode(d.device_id, encoded_device(d, bytearray())) for d in devices],
        [pair_state_decoder.decode(encode_pair(p), p.key) for p in pairs],
    )
    drive.engine, drive.effects = fresh, Effects()
    standing_as(drive, NEW_OFFENDER, VICTIM, 3000, 12, start=t + 10 * S)
    [cleared] = of_action(drive.effects.signals, "clear", "proximity_alarm")
    assert cleared.alarm_key == opened.alarm_key
    assert opens(drive.effects.signals) == []


@settings(max_examples=60, deadline=None)
@given(
    distances=st.lists(st.floats(min_value=0, max_value=2500), min_size=1, max_size=8),
    swap_offender=st.booleans(),
    swap_victim=st.booleans(),
)
def test_a_swap_never_signals_and_hands_over_every_ring(
    distances: list[float], swap_offender: bool, swap_victim: bool
) -> None:
    """Wherever he stood before, swapping the offender's or the victim's device (or both) in
    place signals nothing (no clear, no open) and the new pair holds the old pair's rings."""
    drive = Drive(engine([order(alarm_m=500, pre_alert_m=1000)]))
    t = T0
    for distance in distances:
        t = standing(drive, distance, 1, start=t)
    before = drive.engine.pair(("O-1", OFFENDER, VICTIM))
    offender = NEW_OFFENDER if swap_offender else OFFENDER
    victim = NEW_VICTIM if swap_victim else VICTIM
    effects = Effects()
    new_order = order(offender=offender, victims=[victim], alarm_m=500, pre_alert_m=1000)
    swapped = drive.engine.successor([new_order], t, effects)
    assert effects.signals == []
    after = swapped.pair(("O-1", offender, victim))
    rings = ("pre_alert", "alarm", "offender_pre_alert", "offender_alarm")
    assert [getattr(after, r) for r in rings] == [getattr(before, r) for r in rings]


def test_a_new_version_reuses_the_zones_of_offenders_whose_zones_did_not_change() -> None:
    """Projecting zones is most of what a new version costs (docs/benchmarks.md): an offender
    whose zones did not change keeps the very same zone set; a changed zone is projected anew."""
    first = engine([zone_order()])
    other = order("O-2", "ank-0002", ["vic-0002"])
    same = first.successor([zone_order(), other], T0, Effects())
    assert same.zone_sets()[OFFENDER] is first.zone_sets()[OFFENDER]
    wider = first.successor([zone_order(radius_m=400)], T0, Effects())
    assert wider.zone_sets()[OFFENDER] is not first.zone_sets()[OFFENDER]
    assert wider.zone_sets()[OFFENDER].specs[0].shape.size_m == 400

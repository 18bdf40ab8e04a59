"""Engine scenarios for devices: sequence rules, events, presence, silence and restart."""

from __future__ import annotations

import msgspec

from nabij.config import ProximitySettings
from nabij.contract import DeviceStatus
from services.proximity.core.engine import Effects, ProximityEngine
from services.proximity.core.history import quantised
from services.proximity.core.ingest import StatusUpdate, Uplink
from services.proximity.core.state import DeviceState, PairState
from tests.proximity import (
    OFFENDER,
    T0,
    VICTIM,
    Drive,
    engine,
    event,
    fix_at,
    of_action,
    opens,
    order,
)

S = 1_000
TWO_ORDERS = [order("O-1", OFFENDER, (VICTIM,)), order("O-2", OFFENDER, ("vic-0002",))]


def apply(eng: ProximityEngine, uplink: Uplink, now_ms: int) -> Effects:
    effects = Effects()
    eng.apply(uplink, now_ms, effects)
    return effects


def snapshot(eng: ProximityEngine) -> bytes:
    """All device and pair states, encoded: equal snapshots mean nothing moved."""
    devices = [eng.device(d) for d in (OFFENDER, VICTIM)]
    return msgspec.msgpack.encode([devices, eng.pair(("O-1", OFFENDER, VICTIM))])


def test_duplicates_and_late_fixes_are_ignored_and_move_nothing() -> None:
    """A seq already seen is a duplicate and changes nothing at all; a lower seq never seen is
    out_of_order: it moves no position, pair or alarm, and only counts towards a device fault."""
    eng = engine()
    apply(eng, fix_at(VICTIM, 0, T0), T0)
    for seq in (1, 2, 4):
        apply(eng, fix_at(OFFENDER, seq, T0 + seq * S, 900 - seq), T0 + seq * S)
    before = snapshot(eng)
    position_before = eng.device(OFFENDER).fix
    for uplink, reason in [
        (fix_at(OFFENDER, 4, T0 + 4 * S, 10), "duplicate"),
        (fix_at(OFFENDER, 2, T0 + 2 * S, 10), "duplicate"),
        (fix_at(OFFENDER, 3, T0 + 3 * S, 10), "out_of_order"),
        (fix_at(OFFENDER, 0, T0, 10), "out_of_order"),
    ]:
        effects = apply(eng, uplink, T0 + 10 * S)
        assert effects.ignored == [(OFFENDER, reason)]
        assert (effects.signals, effects.commands, effects.changed_pairs) == ([], [], set())
        if reason == "duplicate":
            assert effects.changed_devices == set()
            assert snapshot(eng) == before
        else:
            offender = eng.device(OFFENDER)
            assert (offender.last_seq, offender.fix) == (4, position_before)
            assert offender.refused_reason == "out_of_order"


def test_a_newer_seq_with_an_older_device_time_is_taken() -> None:
    """Device time orders nothing beyond seq: a newer seq whose clock jumped back is a position
    like any other, placed at its receive time."""
    eng = engine()
    apply(eng, fix_at(OFFENDER, 4, T0 + 4 * S, 900), T0 + 4 * S)
    effects = apply(eng, fix_at(OFFENDER, 5, T0 - 300 * S, 890), T0 + 10 * S)
    assert effects.ignored == []
    offender = eng.device(OFFENDER)
    assert (offender.last_seq, offender.fix is not None and offender.fix.ts) == (5, T0 + 10 * S)


def test_events_share_the_seq_counter_with_fixes() -> None:
    """An event with a seq at or below the last fix's seq (and no newer time: that would be a
    counter reset) is ignored like a fix would be."""
    eng = engine(offline_dwell_s=0)
    apply(eng, fix_at(OFFENDER, 5, T0), T0)
    effects = apply(eng, event(OFFENDER, 5, T0, "power_off"), T0)
    assert effects.ignored == [(OFFENDER, "duplicate")] and effects.signals == []
    effects = apply(eng, event(OFFENDER, 6, T0, "power_off"), T0)
    assert [s.kind for s in effects.signals] == ["device_offline"]
    effects = apply(eng, fix_at(OFFENDER, 6, T0), T0 + S)
    assert effects.ignored == [(OFFENDER, "duplicate")]


def test_aware_press_is_never_dropped() -> None:
    """A press opens aware_button with the victim's press position and the offender's latest fix,
    even when its ts is older than the last fix or it arrives after a later seq; each press has
    its own signal id; only a replay of the same press is a duplicate."""
    eng = engine()
    apply(eng, fix_at(OFFENDER, 0, T0, 2000), T0)
    apply(eng, fix_at(VICTIM, 10, T0 + 60 * S), T0 + 60 * S)
    old_press = event(VICTIM, 11, T0 - 3600 * S, "aware_button", at=5.0)
    effects = apply(eng, old_press, T0 + 61 * S)
    (press,) = effects.signals
    assert (press.kind, press.action, press.order_id) == ("aware_button", "open", "O-1")
    assert press.alarm_key == f"aware_button|O-1|{VICTIM}"
    assert press.signal_id.startswith(f"aware_button|O-1|{VICTIM}|open|{VICTIM}|aware_button-")
    assert press.victim is not None and press.victim.ts == old_press.ts
    assert old_press.lat is not None and old_press.lon is not None
    assert press.victim == quantised(old_press.lat, old_press.lon, 8.0, old_press.ts)[0]
    assert press.offender == eng.device(OFFENDER).fix
    late_press = event(VICTIM, 9, T0 + 50 * S, "aware_button")  # sent before fix 10, came after
    effects = apply(eng, late_press, T0 + 62 * S)
    (second,) = effects.signals
    assert second.signal_id != press.signal_id
    assert effects.signals[0].victim == eng.device(VICTIM).fix  # no position: latest fix
    for replay in (old_press, late_press):
        effects = apply(eng, replay, T0 + 63 * S)
        assert effects.ignored == [(VICTIM, "duplicate")] and effects.signals == []
    assert eng.device(VICTIM).last_seq == 10  # a press moves no seq


def test_a_press_that_overtakes_its_devices_fixes_leaves_them_in_order() -> None:
    """A press read on the fast connection before the victim's earlier fixes (still on the bulk
    connection) opens at once; those fixes are then applied, not dropped as out of order; the
    press's copy from the bulk connection is a duplicate, before and after later fixes."""
    eng = engine()
    apply(eng, fix_at(VICTIM, 10, T0), T0)
    press = event(VICTIM, 13, T0 + 3 * S, "aware_button")
    assert [s.kind for s in apply(eng, press, T0 + 3 * S).signals] == ["aware_button"]
    for seq in (11, 12):
        effects = apply(eng, fix_at(VICTIM, seq, T0 + (seq - 10) * S), T0 + 4 * S)
        assert effects.ignored == [] and eng.device(VICTIM).last_seq == seq
    assert apply(eng, press, T0 + 4 * S).ignored == [(VICTIM, "duplicate")]
    apply(eng, fix_at(VICTIM, 14, T0 + 5 * S), T0 + 5 * S)
    effects = apply(eng, press, T0 + 6 * S)
    assert effects.ignored == [(VICTIM, "duplicate")] and effects.signals == []


def test_aware_press_opens_one_signal_per_order_of_the_device() -> None:
    """A victim protected by two orders raises the press in both; an offender's own press is
    taken too, without a victim."""
    orders = [order("O-1", "ank-x"), order("O-2", "ank-y")]
    eng = engine(orders)
    effects = apply(eng, event(VICTIM, 0, T0, "aware_button"), T0)
    assert [(s.order_id, s.offender_device, s.victim_device) for s in effects.signals] == [
        ("O-1", "ank-x", VICTIM),
        ("O-2", "ank-y", VICTIM),
    ]
    effects = apply(eng, event("ank-x", 0, T0, "aware_button"), T0)
    assert [(s.order_id, s.victim_device, s.victim) for s in effects.signals] == [
        ("O-1", None, None)
    ]


def test_strap_tamper_opens_per_order_and_is_kept_even_when_late() -> None:
    """A tamper opens strap_tamper in every order of the offender, with its last position, even
    when its ts is older than the last fix."""
    eng = engine(TWO_ORDERS)
    apply(eng, fix_at(OFFENDER, 3, T0), T0)
    effects = apply(eng, event(OFFENDER, 4, T0 - 60 * S, "strap_tamper"), T0 + S)
    assert [(s.kind, s.alarm_key) for s in effects.signals] == [
        ("strap_tamper", f"strap_tamper|O-1|{OFFENDER}"),
        ("strap_tamper", f"strap_tamper|O-2|{OFFENDER}"),
    ]
    assert all(s.offender == eng.device(OFFENDER).fix for s in effects.signals)


def test_battery_low_opens_once_and_clears_ten_points_above_the_threshold() -> None:
    """battery_low opens on the event (not again while flagged) and clears only when a later
    report exceeds the threshold (15%) by more than 10 points."""
    drive = Drive(engine())
    drive.event(VICTIM, T0, "battery_low", batt=14)
    drive.fix(VICTIM, T0 + S, batt=12)
    drive.fix(VICTIM, T0 + 2 * S, batt=25)
    assert of_action(drive.effects.signals, "clear", "battery_low") == []
    step = drive.fix(VICTIM, T0 + 3 * S, batt=26)
    signals = [s for s in drive.effects.signals if s.kind == "battery_low"]
    assert [(s.action, s.victim_device) for s in signals] == [
        ("open", VICTIM),
        ("clear", VICTIM),
    ]
    assert signals[0].alarm_key == f"battery_low|O-1|{VICTIM}"
    assert "14%" in signals[0].reason
    assert step.changed_devices == {VICTIM}
    assert not drive.engine.device(VICTIM).battery_low


def test_gnss_events_are_recorded_without_an_alarm() -> None:
    """gnss_lost and gnss_restored only flag the device state."""
    drive = Drive(engine())
    step = drive.event(OFFENDER, T0, "gnss_lost")
    assert step.signals == [] and drive.engine.device(OFFENDER).gnss_lost
    step = drive.event(OFFENDER, T0 + S, "gnss_restored")
    assert step.signals == [] and not drive.engine.device(OFFENDER).gnss_lost
    assert step.changed_devices == {OFFENDER}


def test_without_dwells_status_offline_and_online_open_and_clear_device_offline_at_once() -> None:
    """With both presence dwells at 0, online:false opens device_offline in every order of the
    device at once, a repeat changes nothing, online:true clears it; a second outage gets new
    signal ids."""
    eng = ProximityEngine(TWO_ORDERS, ProximitySettings(offline_dwell_s=0, online_dwell_s=0))
    offline = StatusUpdate(OFFENDER, DeviceStatus(online=False))
    online = StatusUpdate(OFFENDER, DeviceStatus(online=True))
    first = apply(eng, offline, T0)
    assert [(s.action, s.order_id) for s in first.signals] == [("open", "O-1"), ("open", "O-2")]
    assert first.changed_devices == {OFFENDER}
    repeat = apply(eng, offline, T0 + S)
    assert repeat.signals == [] and repeat.changed_devices == set()
    back = apply(eng, online, T0 + 2 * S)
    assert [s.action for s in back.signals] == ["clear", "clear"]
    second = apply(eng, offline, T0 + 3 * S)
    ids = {s.signal_id for s in first.signals + back.signals + second.signals}
    assert len(ids) == 6


def test_without_dwells_power_off_opens_device_offline_and_a_fix_clears_it() -> None:
    """With both presence dwells at 0, power_off opens device_offline; the next accepted fix
    shows the device is back."""
    drive = Drive(engine(offline_dwell_s=0, online_dwell_s=0))
    drive.event(VICTIM, T0, "power_off")
    assert not drive.engine.device(VICTIM).online
    step = drive.fix(VICTIM, T0 + 60 * S)
    assert [(s.action, s.kind) for s in step.signals if s.kind == "device_offline"] == [
        ("clear", "device_offline")
    ]


def test_location_unknown_opens_on_tick_after_silence_and_a_fix_clears_it() -> None:
    """An offender silent (server time) beyond location_unknown_s opens location_unknown once per
    order at a tick; the next fix clears it. A silent victim or a never-heard device does not
    (the victim's silence is victim_unprotected, tested in test_presence.py)."""
    eng = engine(TWO_ORDERS)
    apply(eng, fix_at(OFFENDER, 0, T0), T0)
    apply(eng, fix_at(VICTIM, 0, T0), T0)
    effects = Effects()
    eng.tick(T0 + 180 * S, effects)
    assert effects.signals == [] and effects.changed_devices == set()
    eng.tick(T0 + 180 * S + 1, effects)
    assert [(s.action, s.kind, s.order_id) for s in effects.signals] == [
        ("open", "location_unknown", "O-1"),
        ("open", "location_unknown", "O-2"),
    ]
    assert effects.signals[0].signal_id == f"location_unknown|O-1|{OFFENDER}|open|{OFFENDER}|0|tick"
    assert effects.changed_devices == {OFFENDER}
    again = Effects()
    eng.tick(T0 + 400 * S, again)
    assert [s for s in again.signals if s.kind != "victim_unprotected"] == []
    cleared = apply(eng, fix_at(OFFENDER, 1, T0 + 401 * S), T0 + 401 * S)
    assert [(s.action, s.kind) for s in opens(cleared.signals)] == []
    assert [(s.action, s.order_id) for s in cleared.signals] == [("clear", "O-1"), ("clear", "O-2")]
    assert not eng.device(OFFENDER).location_unknown


def test_silence_is_measured_on_server_time_not_device_time() -> None:
    """A device whose clock runs fast is not silent while the server keeps hearing it."""
    eng = engine()
    apply(eng, fix_at(OFFENDER, 0, T0 + 250 * S), T0)  # clock 250 s ahead, within the lead
    effects = Effects()
    eng.tick(T0 + 100 * S, effects)
    assert effects.signals == []


def test_state_survives_a_restart_through_msgpack() -> None:
    """States persisted as msgpack and loaded into a fresh engine continue exactly: the last
    fix replayed is a duplicate and the open alarm is not opened again."""
    drive = Drive(engine(enter_dwell_s=0))
    drive.fix(VICTIM, T0)
    drive.fix(OFFENDER, T0 + S, 300)
    eng = drive.engine
    devices = [msgspec.msgpack.encode(eng.device(d)) for d in (OFFENDER, VICTIM)]
    pair = msgspec.msgpack.encode(eng.pair(("O-1", OFFENDER, VICTIM)))
    fresh = engine(enter_dwell_s=0)
    fresh.load(
        [msgspec.msgpack.decode(d, type=DeviceState) for d in devices],
        [msgspec.msgpack.decode(pair, type=PairState)],
    )
    assert snapshot(fresh) == snapshot(eng)
    replay = apply(fresh, fix_at(OFFENDER, 0, T0 + S, 300), T0 + 9 * S)
    assert replay.ignored == [(OFFENDER, "duplicate")]
    nearer = apply(fresh, fix_at(OFFENDER, 1, T0 + 2 * S, 290), T0 + 9 * S)
    assert opens(nearer.signals) == [] and nearer.commands == []


def test_load_drops_states_of_devices_and_pairs_no_longer_in_an_order() -> None:
    """Persisted state of a removed order does not come back."""
    eng = engine()
    eng.load([DeviceState("gone-1")], [PairState("O-9", "gone-1", VICTIM)])
    assert not eng.is_known("gone-1")


def test_uplinks_of_unknown_devices_are_ignored() -> None:
    """The engine ignores a device in no order (ingest normally rejects it first)."""
    eng = engine()
    effects = apply(eng, fix_at("stranger", 0, T0), T0)
    assert effects.ignored == [("stranger", "unknown_device")]

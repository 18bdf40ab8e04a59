"""Presence debounced (device_offline) and victim_unprotected: the core alone, time injected.

Defaults: offline_dwell_s 60, online_dwell_s 120, flap_drops 3 in flap_window_s 600,
victim_silence_s 300.
"""

from __future__ import annotations

from nabij.contract import AlarmSignal, DeviceStatus
from services.proximity.core.engine import Effects, ProximityEngine
from services.proximity.core.ingest import StatusUpdate
from services.proximity.core.state import DeviceState
from tests.proximity import OFFENDER, T0, VICTIM, engine, event, fix_at, order

S = 1_000
TWO_ORDERS = [order("O-1", OFFENDER, (VICTIM,)), order("O-2", OFFENDER, ("vic-0002",))]
VICTIM_IN_TWO = [order("O-1", OFFENDER, (VICTIM,)), order("O-2", "ank-0002", (VICTIM,))]


def status(eng: ProximityEngine, device: str, online: bool, now_ms: int) -> Effects:
    effects = Effects()
    eng.apply(StatusUpdate(device, DeviceStatus(online=online)), now_ms, effects)
    return effects


def tick(eng: ProximityEngine, now_ms: int) -> Effects:
    effects = Effects()
    eng.tick(now_ms, effects)
    return effects


def of(effects: Effects, kind: str) -> list[AlarmSignal]:
    return [s for s in effects.signals if s.kind == kind]


def run_ticks(eng: ProximityEngine, start_ms: int, end_ms: int, kind: str) -> list[AlarmSignal]:
    """Tick every second from `start_ms` to `end_ms` (inclusive); the `kind` signals raised."""
    found: list[AlarmSignal] = []
    for now in range(start_ms, end_ms + 1, S):
        found.extend(of(tick(eng, now), kind))
    return found


def test_offline_opens_device_offline_only_after_the_dwell() -> None:
    """online:false opens nothing at once; the tick opens device_offline in every order once the
    device has been offline for 60 s of server time, with the reason and a tick-born id."""
    eng = engine(TWO_ORDERS)
    assert of(status(eng, OFFENDER, False, T0), "device_offline") == []
    assert run_ticks(eng, T0, T0 + 59 * S, "device_offline") == []
    opened = of(tick(eng, T0 + 60 * S), "device_offline")
    assert [(s.action, s.order_id) for s in opened] == [("open", "O-1"), ("open", "O-2")]
    assert opened[0].reason == (
        f"Offender device {OFFENDER}: offline for 60 s (reported offline; limit 60 s)."
    )
    assert opened[0].signal_id.endswith(f"|{OFFENDER}|-1|tick0")
    assert run_ticks(eng, T0 + 61 * S, T0 + 300 * S, "device_offline") == []


def test_a_drop_shorter_than_the_dwell_raises_nothing() -> None:
    """A reconnect within the dwell (a cell handover, a broker restart) never reaches anyone."""
    eng = engine()
    status(eng, OFFENDER, False, T0)
    status(eng, OFFENDER, True, T0 + 59 * S)
    assert run_ticks(eng, T0, T0 + 400 * S, "device_offline") == []
    device = eng.device(OFFENDER)
    assert device.online and not device.offline_open and device.drops_ms == (T0,)


def test_more_drops_than_flap_drops_within_the_window_open_at_once_as_unstable() -> None:
    """The fourth drop within the window opens device_offline at that status message, without
    the dwell, saying how many drops in how long; its id names the status message."""
    eng = engine()
    for n in range(3):
        status(eng, OFFENDER, False, T0 + n * 10 * S)
        assert of(status(eng, OFFENDER, True, T0 + n * 10 * S + 5 * S), "device_offline") == []
    fourth = of(status(eng, OFFENDER, False, T0 + 30 * S), "device_offline")
    assert [s.action for s in fourth] == ["open"]
    assert fourth[0].reason == f"Offender device {OFFENDER}: connection unstable: 4 drops in 30 s."
    assert fourth[0].signal_id.endswith("|-1|status7")


def test_power_off_then_a_fix_clears_only_after_the_online_dwell() -> None:
    """power_off is a drop; an accepted fix is a return; device_offline clears once the device
    has been online for 120 s, not before."""
    eng = engine()
    eng.apply(fix_at(OFFENDER, 0, T0), T0, Effects())
    eng.apply(event(OFFENDER, 1, T0 + S, "power_off"), T0 + S, Effects())
    [opened] = run_ticks(eng, T0 + 2 * S, T0 + 61 * S, "device_offline")
    assert "reported power off" in opened.reason
    back = Effects()
    eng.apply(fix_at(OFFENDER, 2, T0 + 90 * S), T0 + 90 * S, back)
    assert of(back, "device_offline") == [] and eng.device(OFFENDER).online
    assert run_ticks(eng, T0 + 91 * S, T0 + 209 * S, "device_offline") == []
    [cleared] = of(tick(eng, T0 + 210 * S), "device_offline")
    assert cleared.action == "clear"
    assert (
        cleared.reason == f"Offender device {OFFENDER}: back online for 120 s, connection steady."
    )


def test_an_unstable_connection_clears_only_once_it_is_steady() -> None:
    """Opened as unstable, the alarm stays open while more than one drop lies within the window,
    however long the device has been online since: it clears when the third-newest drop has
    aged out (hysteresis: opens above 3 drops, clears at 1)."""
    eng = engine()
    for n in range(4):
        status(eng, OFFENDER, False, T0 + n * 10 * S)
        status(eng, OFFENDER, True, T0 + n * 10 * S + 5 * S)
    assert eng.device(OFFENDER).offline_open
    assert run_ticks(eng, T0 + 35 * S, T0 + 619 * S, "device_offline") == []
    assert [s.action for s in of(tick(eng, T0 + 620 * S), "device_offline")] == ["clear"]


def test_twenty_flaps_in_a_minute_on_an_open_alarm_signal_nothing_until_it_is_steady() -> None:
    """The bug this fixes: 20 offline/online flaps in 60 s after device_offline opened. Nothing
    is signalled during them (no clear, no reopen); one clear follows once the link is steady."""
    eng = engine()
    status(eng, OFFENDER, False, T0)
    assert len(run_ticks(eng, T0, T0 + 60 * S, "device_offline")) == 1
    signals: list[AlarmSignal] = []
    flaps_from = T0 + 100 * S
    for n in range(20):
        signals += of(status(eng, OFFENDER, True, flaps_from + n * 3 * S), "device_offline")
        signals += of(status(eng, OFFENDER, False, flaps_from + n * 3 * S + 1500), "device_offline")
        signals += run_ticks(
            eng, flaps_from + n * 3 * S + 1000, flaps_from + n * 3 * S + 2000, "device_offline"
        )
    signals += of(status(eng, OFFENDER, True, flaps_from + 60 * S), "device_offline")
    assert signals == []
    later = run_ticks(eng, flaps_from + 61 * S, flaps_from + 900 * S, "device_offline")
    assert [s.action for s in later] == ["clear"]
    second_newest_drop = flaps_from + 18 * 3 * S + 1500
    assert later[0].at == second_newest_drop + 600 * S + 500  # the first whole-second tick after


def test_tick_signal_ids_depend_on_state_not_on_when_the_tick_runs() -> None:
    """A replay after a crash ticks at other instants: the ids are the same. A second outage
    gets new ids."""
    ids = []
    for late_ms in (0, 1_700):
        eng = engine()
        status(eng, OFFENDER, False, T0)
        ids.append([s.signal_id for s in of(tick(eng, T0 + 60 * S + late_ms), "device_offline")])
    assert ids[0] == ids[1] and len(ids[0]) == 1
    eng = engine(online_dwell_s=0)
    status(eng, OFFENDER, False, T0)
    first = of(tick(eng, T0 + 60 * S), "device_offline")
    status(eng, OFFENDER, True, T0 + 61 * S)
    status(eng, OFFENDER, False, T0 + 700 * S)
    second = of(tick(eng, T0 + 760 * S), "device_offline")
    assert [s.action for s in first + second] == ["open", "open"]
    assert first[0].signal_id != second[0].signal_id


def test_a_state_saved_before_the_debounce_keeps_its_open_alarm() -> None:
    """A persisted `online: false` from before meant device_offline was open: the tick adopts it
    without a second open, and it clears like any other."""
    eng = engine()
    eng.load([DeviceState(OFFENDER, online=False)], [])
    assert of(tick(eng, T0), "device_offline") == []
    assert eng.device(OFFENDER).offline_open
    status(eng, OFFENDER, True, T0 + S)
    [cleared] = run_ticks(eng, T0 + 2 * S, T0 + 121 * S, "device_offline")
    assert cleared.action == "clear"


def test_a_silent_victim_device_opens_victim_unprotected_in_each_of_its_orders() -> None:
    """No fix from a victim device for more than 300 s of server time opens victim_unprotected
    (probation kind) in every order it is a victim in, naming the silence and carrying no victim
    position; its next fix clears it. The offenders' silence is not the victim's."""
    eng = engine(VICTIM_IN_TWO)
    eng.apply(fix_at(VICTIM, 0, T0), T0, Effects())
    assert of(tick(eng, T0 + 300 * S), "victim_unprotected") == []
    opened = of(tick(eng, T0 + 300 * S + 1), "victim_unprotected")
    assert [(s.action, s.order_id, s.offender_device) for s in opened] == [
        ("open", "O-1", OFFENDER),
        ("open", "O-2", "ank-0002"),
    ]
    assert all(s.victim is None and s.victim_device == VICTIM for s in opened)
    assert opened[0].alarm_key == f"victim_unprotected|O-1|{VICTIM}"
    assert opened[0].reason == (
        f"Victim device {VICTIM} cannot protect its victim: no fix for 300 s (limit 300 s)."
    )
    assert run_ticks(eng, T0 + 301 * S, T0 + 400 * S, "victim_unprotected") == []
    back = Effects()
    eng.apply(fix_at(VICTIM, 1, T0 + 401 * S), T0 + 401 * S, back)
    assert [(s.action, s.order_id) for s in of(back, "victim_unprotected")] == [
        ("clear", "O-1"),
        ("clear", "O-2"),
    ]


def test_offline_and_battery_low_are_causes_and_a_change_of_causes_updates() -> None:
    """Battery low opens victim_unprotected at the event; the debounced offline adds a cause
    (update); a charged battery leaves only offline (update); it clears when device_offline
    clears. Every signal has its own id."""
    eng = engine()
    eng.apply(fix_at(VICTIM, 0, T0, batt=50), T0, Effects())
    low = Effects()
    eng.apply(event(VICTIM, 1, T0 + 10 * S, "battery_low", batt=12), T0 + 10 * S, low)
    seen = of(low, "victim_unprotected")
    status(eng, VICTIM, False, T0 + 20 * S)
    seen += run_ticks(eng, T0 + 21 * S, T0 + 80 * S, "victim_unprotected")
    status(eng, VICTIM, True, T0 + 100 * S)
    charged = Effects()
    eng.apply(fix_at(VICTIM, 2, T0 + 110 * S, batt=30), T0 + 110 * S, charged)
    seen += of(charged, "victim_unprotected")
    seen += run_ticks(eng, T0 + 111 * S, T0 + 230 * S, "victim_unprotected")
    assert [(s.action, s.reason.partition(": ")[2]) for s in seen] == [
        ("open", "battery low (12%)."),
        ("update", "offline; battery low (12%)."),
        ("update", "offline."),
        ("clear", "reporting, online, battery not low."),
    ]
    assert seen[-1].at == T0 + 220 * S
    assert len({s.signal_id for s in seen}) == len(seen)


def test_a_victim_device_never_heard_raises_nothing() -> None:
    """Silence counts from a device's first fix: a fresh start does not alarm every device."""
    eng = engine()
    assert tick(eng, T0 + 10_000 * S).signals == []

"""Faulty devices never switch protection off: wrong clocks, reboots, coverage gaps, forged
counters. Each test replays what a misbehaving device did to main, in the pure core."""

from __future__ import annotations

from typing import NamedTuple

import msgspec
import pytest

from nabij.config import Order
from nabij.contract import AlarmSignal, DeviceEvent, Fix, Topics
from services.proximity.core.batch import run_batch
from services.proximity.core.engine import Effects, ProximityEngine
from services.proximity.core.sequence import RESET_CONFIRM
from services.proximity.core.state import DeviceState
from tests.proximity import DAM, OFFENDER, T0, VICTIM, engine, fix_at, of_action, opens

S = 1_000
PATH = [1000, 800, 600, 400, 200, 40, 40, 40, 40, 40]
"""The offender's approach, one fix every 15 s; the victim stands at the Dam."""


def fix(device: str, seq: int, ts: int, distance: float = 0.0, boot: str | None = None) -> Fix:
    return msgspec.structs.replace(fix_at(device, seq, ts, distance), boot=boot)


def feed(eng: ProximityEngine, uplink: Fix | DeviceEvent, now_ms: int, into: Effects) -> Effects:
    step = Effects()
    eng.apply(uplink, now_ms, step)
    into.signals.extend(step.signals)
    into.ignored.extend(step.ignored)
    return step


def approach(skews_s: dict[str, int], glitch_at: int | None = None) -> list[AlarmSignal]:
    """The approach on server time, each device stamping its own clock (skew in s); the
    offender's fix number `glitch_at` is stamped 290 s ahead. Returns the signals."""
    eng = engine()
    out = Effects()
    for i, distance in enumerate(PATH):
        now = T0 + i * 15 * S
        victim_ts = now + 1 * S + skews_s.get(VICTIM, 0) * S
        feed(eng, fix(VICTIM, i, victim_ts), now + 1 * S, out)
        offender_ts = now + skews_s.get(OFFENDER, 0) * S + (290 * S if i == glitch_at else 0)
        feed(eng, fix(OFFENDER, i, offender_ts, distance), now + 2 * S, out)
    return out.signals


def timeline(signals: list[AlarmSignal]) -> list[tuple[str, str, int]]:
    return [(s.kind, s.action, s.at) for s in signals if s.kind.startswith("proximity")]


@pytest.mark.parametrize(
    "skews",
    [
        {VICTIM: -150},
        {VICTIM: 150},
        {OFFENDER: -150},
        {OFFENDER: 150},
        {VICTIM: 150, OFFENDER: -150},
    ],
    ids=["victim-slow", "victim-fast", "offender-slow", "offender-fast", "both-opposite"],
)
def test_a_clock_150_s_off_alarms_exactly_like_a_right_one(skews: dict[str, int]) -> None:
    """Freshness and pairing are judged on receipt: with either device's clock 150 s off (on
    main: no notice for 160 s at 40 m), the pre-alert and alarm open at the same server time as
    with right clocks."""
    right = timeline(approach({}))
    assert ("proximity_alarm", "open") in [(k, a) for k, a, _ in right]
    assert timeline(approach(skews)) == right


def test_one_fix_290_s_ahead_blinds_nothing() -> None:
    """One offender fix stamped 290 s ahead by a GNSS glitch (on main: every later fix was out
    of order until location_unknown): later fixes are taken and the alarm opens on time."""
    right = timeline(approach({}))
    for glitch_at in (2, 4):
        assert timeline(approach({}, glitch_at=glitch_at)) == right


def test_a_clock_off_for_long_is_a_device_fault_and_clears_when_right() -> None:
    """A victim clock 150 s slow keeps protection on and, after the fault dwell (120 s), opens
    one device_fault saying so; a right clock again clears it."""
    eng = engine()
    out = Effects()
    for i in range(20):
        now = T0 + i * 15 * S
        feed(eng, fix(VICTIM, i, now - 150 * S), now, out)
    faults = [s for s in out.signals if s.kind == "device_fault"]
    assert [(s.action, s.at) for s in faults] == [("open", T0 + 120 * S)]
    assert "150 s behind" in faults[0].reason
    feed(eng, fix(VICTIM, 20, T0 + 300 * S), T0 + 300 * S, out)
    faults = [s for s in out.signals if s.kind == "device_fault"]
    assert [s.action for s in faults] == ["open", "clear"]


def test_refused_messages_that_persist_are_a_device_fault() -> None:
    """Three or more refused messages with nothing accepted for the fault dwell raise a
    device_fault (never only a metric); an accepted fix clears it."""
    eng = engine()
    out = Effects()
    feed(eng, fix(OFFENDER, 0, T0, 900), T0, out)
    for i in range(1, 10):
        eng.refused(OFFENDER, "schema", T0 + i * 15 * S, out)
    eng.tick(T0 + 200 * S, out)
    faults = [s for s in out.signals if s.kind == "device_fault"]
    assert [s.action for s in faults] == ["open"]
    assert "9 messages refused" in faults[0].reason and "schema" in faults[0].reason
    feed(eng, fix(OFFENDER, 1, T0 + 210 * S, 900), T0 + 210 * S, out)
    assert [s.action for s in out.signals if s.kind == "device_fault"] == ["open", "clear"]


def press(seq: int, ts: int, boot: str | None = None) -> DeviceEvent:
    return DeviceEvent(device_id=VICTIM, seq=seq, ts=ts, type="aware_button", boot=boot)


@pytest.mark.parametrize("boots", [("b1", "b2"), (None, None)], ids=["boot-id", "old-firmware"])
def test_a_press_after_a_reboot_with_a_reused_seq_is_a_new_press(
    boots: tuple[str | None, str | None],
) -> None:
    """After the counter restarts, a press reusing an old seq is a press of its own (on main:
    taken for a redelivery, no police notice); only the very same press again is a repeat."""
    eng = engine()
    out = Effects()
    for seq in range(5):
        feed(eng, fix(VICTIM, seq, T0 + seq * 15 * S, boot=boots[0]), T0 + seq * 15 * S, out)
    first = press(3, T0 + 70 * S, boots[0])
    feed(eng, first, T0 + 70 * S, out)
    for seq in range(4):  # rebooted: the counter starts again
        now = T0 + (100 + seq * 15) * S
        feed(eng, fix(VICTIM, seq, now, boot=boots[1]), now, out)
    second = press(3, T0 + 200 * S, boots[1])
    feed(eng, second, T0 + 200 * S, out)
    repeat = feed(eng, second, T0 + 201 * S, out)
    presses = opens(out.signals, "aware_button")
    assert len(presses) == 2 and presses[0].signal_id != presses[1].signal_id
    assert repeat.ignored == [(VICTIM, "duplicate")] and repeat.signals == []


@pytest.mark.parametrize("boot", ["b2", None], ids=["boot-id", "old-firmware"])
def test_a_victim_rebooted_mid_approach_is_still_protected(boot: str | None) -> None:
    """The victim's device reboots (counter back to 0) while the offender approaches: its new
    fixes are taken (on main: all ignored as old) and the alarm opens."""
    eng = engine()
    out = Effects()
    for i, distance in enumerate(PATH):
        now = T0 + i * 15 * S
        seq, victim_boot = (100 + i, "b1" if boot else None) if i < 3 else (i - 3, boot)
        feed(eng, fix(VICTIM, seq, now + S, boot=victim_boot), now + S, out)
        feed(eng, fix(OFFENDER, i, now + 2 * S, distance), now + 2 * S, out)
    assert [s for s in out.ignored if s[0] == VICTIM] == []
    assert opens(out.signals, "proximity_alarm")


def test_a_forged_top_counter_blinds_nothing() -> None:
    """A fix with seq 2**63-1 on the victim's topic (on main: her device blind for good) is
    refused as an implausible jump; her next fixes are taken."""
    eng = engine()
    out = Effects()
    feed(eng, fix(VICTIM, 7, T0), T0, out)
    step = feed(eng, fix(VICTIM, 2**63 - 1, T0 + S, 5000), T0 + S, out)
    assert step.ignored == [(VICTIM, "seq_jump")]
    feed(eng, fix(VICTIM, 8, T0 + 15 * S), T0 + 15 * S, out)
    assert eng.device(VICTIM).last_seq == 8
    assert eng.device(VICTIM).fix is not None and eng.device(VICTIM).fix.lat == DAM[0]


def test_a_forged_boot_blinds_nothing() -> None:
    """A forged message under another boot id with the top counter: the real boot goes on."""
    eng = engine()
    out = Effects()
    feed(eng, fix(VICTIM, 7, T0, boot="real"), T0, out)
    feed(eng, fix(VICTIM, 2**63 - 1, T0 + S, 5000, boot="forged"), T0 + S, out)
    step = feed(eng, fix(VICTIM, 8, T0 + 15 * S, boot="real"), T0 + 15 * S, out)
    assert step.ignored == [] and eng.device(VICTIM).last_seq == 8
    again = feed(eng, fix(VICTIM, 7, T0, boot="real"), T0 + 16 * S, out)
    assert again.ignored == [(VICTIM, "duplicate")]


def test_a_counter_poisoned_before_heals() -> None:
    """State stored before this fix, with the counter at 2**63-1 and device time far ahead,
    heals: after RESET_CONFIRM fixes in a row far below it, the counter restarts."""
    eng = engine()
    poisoned = DeviceState(VICTIM, last_seq=2**63 - 1, last_ts=T0 + 10**10)
    eng.load([poisoned], [])
    out = Effects()
    for seq in range(RESET_CONFIRM):
        feed(eng, fix(VICTIM, seq, T0 + seq * S), T0 + seq * S, out)
    assert eng.device(VICTIM).last_seq == RESET_CONFIRM - 1
    assert eng.device(VICTIM).fix is not None


def coverage_gap(with_zone: bool, backlog_upto_s: int = 360) -> tuple[ProximityEngine, Effects]:
    """The offender reports live at 1,500 m, goes silent at 60 s, walks to 40 m of the victim
    (90-150 s), stays 2 minutes, leaves; at 360 s his 5-minute backlog arrives in one array.
    The victim reports live every 30 s throughout."""
    zones = [{"name": "home", "lat": DAM[0], "lon": DAM[1], "radius_m": 200}] if with_zone else []
    orders = [
        Order.model_validate(
            {
                "id": "O-1",
                "offender_device": OFFENDER,
                "victim_devices": [VICTIM],
                "alarm_m": 500,
                "zone": zones,
            }
        )
    ]
    eng = engine(orders)
    out = Effects()
    route = {0: 1500, 15: 1500, 30: 1500, 45: 1500, 60: 1500}
    for t in range(75, 361, 15):
        route[t] = 1500 - (t - 60) * 16 if t < 150 else 40 if t <= 270 else 40 + (t - 270) * 16
    victim_seq = 0
    backlog: list[Fix] = []
    for seq, t in enumerate(sorted(route)):
        if t % 30 == 0:
            feed(eng, fix(VICTIM, victim_seq, T0 + t * S + 500), T0 + t * S + 500, out)
            victim_seq += 1
        offender_fix = fix(OFFENDER, seq, T0 + t * S, min(route[t], 1500))
        if t <= 60:
            feed(eng, offender_fix, T0 + t * S, out)
        else:
            backlog.append(offender_fix)
        eng.tick(T0 + t * S + 600, out)
    now = T0 + 361 * S
    for item in backlog:  # the array's fixes, in seq order, as ingest hands them over
        if item.ts <= T0 + backlog_upto_s * S:
            feed(eng, item, now, out)
    return eng, out


def test_a_breach_inside_a_coverage_gap_alarms_when_the_backlog_arrives_marked_late() -> None:
    """On main the backlog was compared with the victim's latest fix only: no notice ever. Now
    each backlog fix meets where the victim was then: the alarm opens on arrival, at full
    priority, saying when it really happened and how late it was found."""
    _, out = coverage_gap(with_zone=False)
    (alarm,) = of_action(out.signals, "open", "proximity_alarm")
    assert alarm.at == T0 + 361 * S
    assert alarm.happened_at is not None and alarm.late_s is not None
    assert T0 + 90 * S <= alarm.happened_at <= T0 + 160 * S
    assert alarm.late_s == (alarm.at - alarm.happened_at) // 1000
    assert "DETECTED LATE" in alarm.reason
    assert alarm.victim is not None and alarm.victim.ts <= alarm.happened_at + 30 * S


def test_a_zone_entered_inside_a_coverage_gap_alarms_late_too() -> None:
    """The same for an exclusion zone: zone_alarm opens when the backlog arrives, marked late."""
    _, out = coverage_gap(with_zone=True)
    (zone,) = of_action(out.signals, "open", "zone_alarm")
    assert zone.late_s is not None and zone.happened_at is not None
    assert zone.happened_at < zone.at - 60 * S


def test_late_fixes_end_no_silence() -> None:
    """A late fix says nothing of now: location_unknown, opened during the gap, stays open after
    a backlog of old fixes only, and clears with a live one."""
    eng, out = coverage_gap(with_zone=False, backlog_upto_s=300)
    assert of_action(out.signals, "open", "location_unknown")
    eng.tick(T0 + 362 * S, out)
    assert eng.device(OFFENDER).location_unknown
    assert of_action(out.signals, "clear", "location_unknown") == []
    feed(eng, fix(OFFENDER, 99, T0 + 363 * S, 1500), T0 + 363 * S, out)
    assert len(of_action(out.signals, "clear", "location_unknown")) == 1


class _Message(NamedTuple):
    topic: str
    payload: bytes


def first_contact_backlog(offender_skew_s: int, victim_jump: bool = False) -> list[AlarmSignal]:
    """The offender is never heard live before his gap: his first message, at 361 s, is the
    backlog of the whole walk (1,500 m, to 40 m at 90-150 s, two minutes there, away), one
    array through `run_batch` as the service gets it, his clock `offender_skew_s` off. The
    victim reports live every 30 s throughout; with `victim_jump` her last fix before the
    array is thrown 300 m off (off her track)."""
    eng = engine()
    out = Effects()
    topics = Topics("nabij/v1")
    backlog: list[Fix] = []
    for seq, t in enumerate(range(0, 361, 15)):
        if t % 30 == 0:
            thrown = 300.0 if victim_jump and t == 360 else 0.0
            feed(eng, fix(VICTIM, t // 30, T0 + t * S + 500, thrown), T0 + t * S + 500, out)
        distance = 1500 if t <= 60 else max(40, 1500 - (t - 60) * 16) if t <= 270 else 1500
        backlog.append(fix(OFFENDER, seq, T0 + (t + offender_skew_s) * S, distance))
    message = _Message(topics.device(OFFENDER, "fix"), msgspec.json.encode(backlog))
    result = run_batch(eng, topics, [message], T0 + 361 * S, tick=True)
    return out.signals + result.effects.signals


@pytest.mark.parametrize("skew_s", [0, -300, 300], ids=["right", "clock-slow", "clock-fast"])
def test_a_backlog_as_first_contact_is_judged_as_measured_and_alarms_late(skew_s: int) -> None:
    """A backlog array as the device's first contact (on main: its oldest fix set the clock
    offset as if live, so every fix was placed at receipt and the breach, over by then, was never
    seen): the offset comes from its newest fix, so the breach is found, marked detected late,
    whatever the device's clock says."""
    signals = first_contact_backlog(skew_s)
    (alarm,) = of_action(signals, "open", "proximity_alarm")
    assert alarm.at == T0 + 361 * S
    assert alarm.late_s is not None and alarm.happened_at is not None
    assert T0 + 90 * S <= alarm.happened_at <= T0 + 180 * S
    assert "DETECTED LATE" in alarm.reason


def test_a_first_contact_backlog_alarms_though_her_newest_fix_is_off_her_track() -> None:
    """Her newest fix off her track (a jump) holds back live comparisons only: the backlog meets
    her history, so the late alarm still opens."""
    signals = first_contact_backlog(0, victim_jump=True)
    (alarm,) = of_action(signals, "open", "proximity_alarm")
    assert alarm.late_s is not None

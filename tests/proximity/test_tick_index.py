"""The tick looks only at the devices due (`core/agenda.py`) and finds what a pass over every
device finds: an engine checked against a twin that looks at every device on every tick, under
random fixes, events, statuses, refusals, restarts, new orders and a clock that steps back."""

from __future__ import annotations

import re
import sys
from typing import cast

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nabij.config import Order, ProximitySettings
from nabij.contract import AlarmSignal, DeviceStatus, EventType
from nabij.settings import PlatformSettings
from services.proximity.core.agenda import ALWAYS, Agenda
from services.proximity.core.engine import Effects, ProximityEngine
from services.proximity.core.ingest import StatusUpdate
from services.proximity.core.platform import platform_state_decoder
from services.proximity.core.state import (
    device_state_decoder,
    encode_pair,
    encoded_device,
    pair_state_decoder,
    state_encoder,
)
from tests.proximity import OFFENDER, T0, VICTIM, Drive, engine, event, fix_at, of_action, order

S = 1_000
# vic-1 is a victim in O-1 before she is the offender of O-3: the offenders' order (the silence
# checks') differs from the devices' (the presence checks'), and both must be kept.
ORDERS = [
    order("O-1", "ank-1", ["vic-1"]),
    order("O-2", "ank-2", ["vic-2", "vic-3"]),
    order("O-3", "vic-1", ["vic-4"]),
]
NEW_ORDERS = [ORDERS[0], order("O-2", "ank-2", ["vic-3"]), order("O-4", "ank-4", ["vic-2"])]
DEVICES = ["ank-1", "vic-1", "ank-2", "vic-2", "vic-3", "vic-4", "ank-4"]
# Every limit within seconds, so random steps cross them all.
SETTINGS = ProximitySettings(
    location_unknown_s=6,
    victim_silence_s=9,
    offline_dwell_s=3,
    online_dwell_s=4,
    flap_drops=2,
    flap_window_s=12,
    fault_dwell_s=3,
    clock_fault_s=2,
    late_after_s=5,
)
PLATFORM = PlatformSettings(blind_after_s=8, quiet_after_s=4, group_window_s=3, group_min_devices=2)
EVENTS: list[EventType] = ["power_off", "battery_low", "gnss_lost", "strap_tamper"]

device_ids = st.sampled_from(DEVICES)
steps = st.lists(
    st.one_of(
        # A fix: its device clock on time, a little or far off (late), somewhere near or far.
        st.tuples(
            st.just("fix"),
            device_ids,
            st.sampled_from([0, 3 * S, -3 * S, 20 * S]),
            st.sampled_from([0.0, 400.0, 3000.0]),
            st.one_of(st.none(), st.integers(0, 100)),
        ),
        st.tuples(st.just("event"), device_ids, st.sampled_from(EVENTS)),
        st.tuples(st.just("status"), device_ids, st.booleans()),
        st.tuples(st.just("refused"), device_ids),
        st.tuples(st.just("stale"), device_ids),  # a seq already passed: a fault's cause
        st.tuples(st.just("everyone")),  # a fix from every device: an outage ends
        # A tick after this much time: mostly forward, sometimes a step back (NTP); the broker
        # link up five times in six.
        st.tuples(st.just("tick"), st.integers(0, 3 * S), st.integers(0, 5).map(bool)),
        st.tuples(st.just("tick"), st.integers(-25 * S, 10 * S), st.integers(0, 5).map(bool)),
        st.tuples(st.just("restart")),
        st.tuples(st.just("orders"), st.booleans()),
    ),
    min_size=30,
    max_size=150,
)
Step = tuple[object, ...]


def look_at_every_device(eng: ProximityEngine) -> None:
    """Make the next tick a pass over every device, as every tick was before the index: the
    platform's quiet devices found afresh from the states (`load`), and every device due for
    each check (whose own tests then decide, as they did in that pass): silence, presence,
    faults, and the release of a grouped device that is not quiet. The silence checks take
    every device as due, whatever its state says (`DeviceConditions.tick` books again without
    a look the devices whose silence it finds not due)."""
    eng.load(list(eng.devices()), [])
    eng._conditions._silence_due = lambda device, rank: ALWAYS  # type: ignore[method-assign]
    for device in eng.devices():
        rank = eng._topology.rank(device.device_id)
        eng._silences.book(rank, ALWAYS)
        eng._conditions._unsettled.add(device.device_id)
        eng._faults._agenda.book(rank, ALWAYS)
        eng._platform._heard_again.add(device.device_id)


def restarted(
    eng: ProximityEngine, orders: list[Order], platform: PlatformSettings | None
) -> ProximityEngine:
    """The engine after a restart: its states back from what the shell persisted."""
    again = ProximityEngine(orders, SETTINGS, platform=platform)
    again.load(
        [
            device_state_decoder.decode(d.device_id, encoded_device(d, bytearray()))
            for d in eng.devices()
        ],
        [pair_state_decoder.decode(encode_pair(p), p.key) for p in eng.pairs()],
    )
    again.load_platform(platform_state_decoder.decode(state_encoder.encode(eng.platform)))
    return again


def outcome(effects: Effects, eng: ProximityEngine) -> tuple[object, ...]:
    states = state_encoder.encode([*eng.devices(), *eng.pairs(), eng.platform])
    return (
        effects.signals,
        effects.commands,
        effects.changed_devices,
        effects.changed_pairs,
        effects.ignored,
        effects.platform_changed,
        states,
    )


class Run:
    """One engine driven through the steps; the seqs and the clock are the test's."""

    def __init__(self, platform: PlatformSettings | None, *, every_device: bool) -> None:
        self.platform = platform
        self.engine = ProximityEngine(ORDERS, SETTINGS, platform=platform)
        self.every_device = every_device
        self.seqs = dict.fromkeys(DEVICES, 0)
        self.now = T0
        self.orders = ORDERS

    def step(self, step: Step) -> tuple[object, ...]:
        effects, eng = Effects(), self.engine
        kind = step[0]
        if kind == "tick":
            _, delta, broker_up = step
            assert isinstance(delta, int) and isinstance(broker_up, bool)
            self.now += delta
            if self.every_device:
                look_at_every_device(eng)
            eng.tick(self.now, effects, broker_up=broker_up)
        elif kind == "restart":
            self.engine = eng = restarted(eng, self.orders, self.platform)
        elif kind == "orders":
            self.orders = NEW_ORDERS if step[1] else ORDERS
            self.engine = eng = eng.successor(self.orders, self.now, effects)
        elif kind == "everyone":
            for device in DEVICES:
                self._input(("fix", device, 0, 0.0, None), effects)
        else:
            self._input(step, effects)
        return outcome(effects, eng)

    def _input(self, step: Step, effects: Effects) -> None:
        kind, device = step[0], step[1]
        assert isinstance(device, str)
        self.seqs[device] += 1
        seq, now = self.seqs[device], self.now
        if kind == "fix":
            _, _, skew, distance, batt = step
            assert isinstance(skew, int) and isinstance(distance, float)
            assert batt is None or isinstance(batt, int)
            fix = fix_at(device, seq, now - skew, distance, batt=batt)
            self.engine.apply(fix, now, effects)
        elif kind == "event":
            event_type = cast(EventType, step[2])
            batt = 10 if event_type == "battery_low" else None
            self.engine.apply(event(device, seq, now, event_type, batt=batt), now, effects)
        elif kind == "status":
            online = step[2]
            assert isinstance(online, bool)
            self.engine.apply(StatusUpdate(device, DeviceStatus(online=online)), now, effects)
        elif kind == "refused":
            self.engine.refused(device, "invalid", now, effects)
        else:  # stale: a seq below the counter
            self.engine.apply(fix_at(device, max(seq - 5, 0), now, 0.0), now, effects)


@settings(max_examples=300, deadline=None)
@given(steps=steps, judges_platform=st.booleans())
def test_the_tick_over_the_devices_due_finds_what_a_pass_over_every_device_finds(
    steps: list[Step], judges_platform: bool
) -> None:
    """Every step's signals, commands, changed states and the states themselves are the same
    as the twin's, whose every tick looks at every device. Among the steps: devices never
    heard, silences and presence dwells that pass, faults, platform outages (devices grouped and
    released), restarts (the index rebuilt from the persisted states), new orders, and ticks
    that step back in time; with and without the platform watch (a shard that does not judge
    it: no device is ever grouped, so more silences are the devices' own)."""
    platform = PLATFORM if judges_platform else None
    indexed, every = Run(platform, every_device=False), Run(platform, every_device=True)
    for step in [*steps, ("tick", 60 * S, True)]:
        assert indexed.step(step) == every.step(step), step


PLACES = {device_id: rank for rank, device_id in enumerate("abcde")}


def test_the_agenda_gives_each_device_once_it_is_due_whichever_way_the_clock_moves() -> None:
    agenda = Agenda(list(PLACES))
    agenda.book(PLACES["a"], T0 + 1_500)
    agenda.book(PLACES["b"], T0 + 1_200)
    agenda.book(PLACES["c"], T0 + 9_000)
    agenda.book(PLACES["c"], T0 + 1_000)  # moved earlier: booked once, at the new time
    agenda.book(PLACES["d"], T0 + 1_100)
    agenda.book(PLACES["d"], None)  # no longer needs a look
    assert sorted(agenda.take(T0 + 1_200)) == ["b", "c"]  # "a" is due later in this second
    assert agenda.take(T0 + 500) == []  # stepped back: nothing early, and "a" stays booked
    assert agenda.take(T0 + 1_500) == ["a"]
    assert (agenda.take(T0 + 60_000), len(agenda)) == ([], 0)  # taken devices are unbooked
    agenda.book(PLACES["e"], ALWAYS)
    assert agenda.take(T0 - 10**9) == ["e"]


def test_a_later_due_time_keeps_the_booking_and_an_earlier_one_moves_it() -> None:
    agenda = Agenda(list(PLACES))
    agenda.book(PLACES["a"], T0 + 1_000)
    agenda.book(PLACES["a"], T0 + 5_000)  # heard again: the earlier booking stays, nothing moves
    assert agenda.take(T0 + 1_000) == ["a"]  # taken early: its owner books it again
    agenda.book(PLACES["a"], T0 + 5_000)
    agenda.book(PLACES["a"], T0 + 3_000)  # earlier: moved
    assert agenda.take(T0 + 2_999) == []
    assert agenda.take(T0 + 3_000) == ["a"]
    agenda.book(PLACES["b"], None)  # never booked: nothing to cancel
    assert (agenda.take(T0 + 10**6), len(agenda)) == ([], 0)


def test_a_take_hands_back_the_devices_own_strings() -> None:
    """A device is booked by its place, and handed back as the string its owner gave for that
    place, never one an input came with (a fix's, ~110 bytes a pair kept alive)."""
    ids = ["ank-1", "vic-1"]
    agenda = Agenda(ids)
    agenda.book(1, T0 + 1_000)
    (taken,) = agenda.take(T0 + 1_000)
    assert taken is ids[1]


def test_no_fix_keeps_its_device_id_string_alive_in_the_engine() -> None:
    """A million devices reporting must not cost a million more id strings: once the batch is
    frozen, nothing the engine holds refers to a fix's own string (only to the orders')."""
    eng = engine(ORDERS)
    effects = Effects()
    fixes = [fix_at("-".join(["ank", "1"]), 1, T0), fix_at("-".join(["vic", "1"]), 1, T0)]
    held = [sys.getrefcount(fix.device_id) for fix in fixes]
    for fix in fixes:
        eng.apply(fix, T0, effects)
    eng.tick(T0 + S, effects)
    eng.apply(fix_at("-".join(["ank", "1"]), 2, T0 + S), T0 + S, effects)
    del effects
    eng.freeze()
    assert [sys.getrefcount(fix.device_id) for fix in fixes] == held


agenda_steps = st.lists(
    st.one_of(
        # Due times within a few slots, so devices move between slots, back into a slot they
        # left (still listed there) and within one; None unbooks.
        st.tuples(st.sampled_from("abc"), st.one_of(st.none(), st.integers(0, 2_999))),
        st.tuples(st.just("take"), st.integers(-500, 3_499)),  # a clock that may step back
    ),
    max_size=80,
)


@settings(max_examples=1000, deadline=None)
@given(steps=agenda_steps, sparse=st.booleans())
# Listed in slot 2 still when booked there again: once after moving away (and being taken),
# once after being unbooked. The old listing (2,500) must not take it before 2,800.
@example(
    steps=[("a", 2_500), ("a", 200), ("take", 300), ("a", 2_800), ("take", 2_600)], sparse=False
)
@example(
    steps=[("a", 2_500), ("a", None), ("a", 2_800), ("take", 2_600), ("take", 2_800)], sparse=True
)
def test_the_agenda_takes_exactly_the_devices_due_as_a_table_of_due_times_does(
    steps: list[tuple[str, int | None]], sparse: bool
) -> None:
    """The agenda against a plain table of due times (a booking keeps the sooner time, None
    removes it; a take gives every device due by then, once, and removes it): devices a slot
    still lists after they left it, or twice, are neither given early, nor twice, nor lost. A
    sparse agenda holds the devices booked and no other."""
    agenda, table = Agenda(list(PLACES), sparse=sparse), dict[str, int]()
    for name, ms in steps:
        at = None if ms is None else T0 + ms
        if name != "take":
            agenda.book(PLACES[name], at)
            if at is None:
                table.pop(name, None)
            elif at < table.get(name, at + 1):
                table[name] = at
            continue
        assert at is not None
        due = sorted(device_id for device_id, due_ms in table.items() if due_ms <= at)
        assert sorted(agenda.take(at)) == due
        for device_id in due:
            del table[device_id]
        assert len(agenda) == len(table)
        if sparse:
            assert len(agenda._due) == len(table)


@pytest.mark.parametrize("judges_platform", [True, False])
def test_devices_that_report_again_and_again_then_fall_silent_signal_as_in_a_full_pass(
    judges_platform: bool,
) -> None:
    """Every fix only moves the devices' due times later, so they stay booked early and the
    tick keeps taking them before they are due: no silence may come of it while they report,
    and once they stop, what a pass over every device finds (silences, presence, an outage)."""
    platform = PLATFORM if judges_platform else None
    indexed, every = Run(platform, every_device=False), Run(platform, every_device=True)
    reporting: list[Step] = [("everyone",), *[("tick", 1_000, True)] * 3] * 20
    silent: list[Step] = [("tick", 700, True)] * 40
    kinds: list[list[str]] = [[], []]
    for phase, phase_steps in enumerate((reporting, silent)):
        for step in phase_steps:
            found = indexed.step(step)
            assert found == every.step(step), step
            kinds[phase] += [signal.kind for signal in cast(list[AlarmSignal], found[0])]
    # The devices are side by side, so proximity alarms come and go meanwhile.
    assert "location_unknown" not in kinds[0] and "location_unknown" in kinds[1]


def test_silence_is_found_to_the_millisecond_and_a_step_back_loses_nothing() -> None:
    """location_unknown opens on the first tick past the limit (180 s), not before, not twice;
    a clock stepped back in between neither fires it early nor loses it."""
    drive = Drive(engine())
    drive.fix(OFFENDER, T0)
    for now in (T0 + 180 * S, T0 + 100 * S, T0 + 180 * S):
        effects = Effects()
        drive.engine.tick(now, effects)
        assert effects.signals == []
    for opened in (1, 0):
        effects = Effects()
        drive.engine.tick(T0 + 180 * S + 1, effects)
        assert len(of_action(effects.signals, "open", "location_unknown")) == opened


def test_a_restart_rebuilds_the_index_from_the_states() -> None:
    """Nothing of the index is persisted: an engine that loads the states finds the offender
    silent and the victim unprotected as the one before would have."""
    drive = Drive(engine())
    drive.fix(OFFENDER, T0)
    drive.fix(VICTIM, T0)
    again = restarted(drive.engine, [order()], PlatformSettings())
    effects = Effects()
    again.tick(T0 + 301 * S, effects)
    assert [s.kind for s in effects.signals] == ["location_unknown", "victim_unprotected"]


def test_devices_never_heard_are_never_silent() -> None:
    effects = Effects()
    engine().tick(T0 + 10**9, effects)
    assert effects.signals == []


def test_the_devices_due_signal_in_the_order_a_pass_over_every_device_took() -> None:
    """Silent offenders in the order of the orders (vic-1 became one in O-3, after ank-2's
    O-2, though she is known since O-1), then the other checks in the order of the devices."""
    eng = ProximityEngine(ORDERS, SETTINGS, platform=None)
    for device in eng.devices():
        eng.apply(fix_at(device.device_id, 1, T0), T0, Effects())
    effects = Effects()
    eng.tick(T0 + 60 * S, effects)
    devices = [re.findall(r"(?:ank|vic)-\d", s.reason) for s in effects.signals]
    assert [(s.kind, s.order_id, *d) for s, d in zip(effects.signals, devices, strict=True)] == [
        ("location_unknown", "O-1", "ank-1"),
        ("location_unknown", "O-2", "ank-2"),
        ("location_unknown", "O-3", "vic-1"),
        ("victim_unprotected", "O-1", "vic-1"),
        ("victim_unprotected", "O-2", "vic-2"),
        ("victim_unprotected", "O-2", "vic-3"),
        ("victim_unprotected", "O-3", "vic-4"),
    ]

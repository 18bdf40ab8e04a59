"""Device states held encoded between batches (`core/devices.py`): a freeze changes no decision
and loses no change, and reading every state keeps none of them live."""

from __future__ import annotations

import sys
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from services.proximity.core.devices import DeviceTable
from services.proximity.core.engine import Effects
from services.proximity.core.state import DeviceState, device_state_decoder, encoded_device
from services.proximity.core.topology import RANK_BYTES, RANK_PREFIX
from tests.proximity import OFFENDER, T0, VICTIM, engine, fix_at, order
from tests.proximity.test_tick_index import PLATFORM, Run, Step, steps

S = 1_000


class FreezingRun(Run):
    """The same steps, the states frozen after those the test picks (a batch's end)."""

    def step_and_freeze(self, step: Step, freeze: bool) -> tuple[object, ...]:
        outcome = self.step(step)
        if freeze:
            self.engine.freeze()
            assert not self.engine._devices._thawed  # cold indeed: the twin could differ
        return outcome


@settings(max_examples=200, deadline=None)
@given(steps=steps, judges_platform=st.booleans(), data=st.data())
def test_freezes_between_steps_change_no_effect_and_no_state(
    steps: list[Step], judges_platform: bool, data: st.DataObject
) -> None:
    """Every step's signals, commands, changed states and the encoded states themselves are the
    same as a twin's that never freezes, whichever steps a freeze follows: fixes, events,
    statuses, refusals, ticks (forward and back), outages, restarts and new orders."""
    platform = PLATFORM if judges_platform else None
    freezing, live = FreezingRun(platform, every_device=False), Run(platform, every_device=False)
    freezes = data.draw(st.lists(st.booleans(), min_size=len(steps) + 1, max_size=len(steps) + 1))
    for step, freeze in zip([*steps, ("tick", 60 * S, True)], freezes, strict=True):
        assert freezing.step_and_freeze(step, freeze) == live.step(step), step


def test_a_change_to_a_thawed_state_survives_the_freeze() -> None:
    """Every thawed state is encoded back, changed in an `Effects` or not."""
    eng = engine()
    eng.apply(fix_at(OFFENDER, 1, T0), T0, Effects())
    eng.freeze()
    eng.device(VICTIM).batt = 42  # no Effects names it
    eng.device(OFFENDER).outliers = 3  # a rare field: `rare` made while thawed
    eng.freeze()
    assert eng.device(VICTIM).batt == 42
    assert eng.device(OFFENDER).outliers == 3
    assert eng.device(OFFENDER).fix is not None


def test_reading_every_state_thaws_none_and_keeps_none() -> None:
    """The census reads every device (`devices()`): each is decoded for the look only, so a
    million of them are never live at once, and a change made to one is not kept."""
    eng = engine()
    eng.apply(fix_at(OFFENDER, 1, T0), T0, Effects())
    eng.freeze()
    states = eng.devices()
    assert [d.device_id for d in states] == [OFFENDER, VICTIM]
    assert states[0].fix is not None and states[1].fix is None
    assert [d.device_id for d in states[0:1]] == [OFFENDER]
    states[0].batt = 7
    assert not eng._devices._thawed
    assert eng.device(OFFENDER).batt is None


def test_the_commit_writes_the_blob_the_freeze_made() -> None:
    """`encoded_device` is what the shell writes to Redis: the state encoded as Redis holds it,
    after a freeze what the freeze made after the device's rank in its record (encoded once:
    asking leaves the record as it is)."""
    eng = engine()
    eng.apply(fix_at(OFFENDER, 1, T0), T0, Effects())
    live = encoded_device(eng.device(OFFENDER), bytearray())
    assert eng.encoded_device(OFFENDER) == live  # thawed: encoded on the call
    eng.freeze()
    record = eng._topology.records[OFFENDER]
    blob = eng.encoded_device(OFFENDER)
    assert blob == live and record == RANK_PREFIX.pack(0) + blob
    assert eng._topology.records[OFFENDER] is record and not eng._devices._thawed
    assert device_state_decoder.decode(OFFENDER, blob) == eng.device(OFFENDER)
    # Never heard: its rank alone, and the default state for Redis.
    assert eng._topology.records[VICTIM] == RANK_PREFIX.pack(1)
    assert eng.encoded_device(VICTIM) == encoded_device(DeviceState(VICTIM), bytearray())


def test_an_orders_change_takes_the_blobs_over_as_they_are() -> None:
    """The new engine holds the very blobs of the devices it keeps (none decoded for good)."""
    eng = engine()
    eng.apply(fix_at(OFFENDER, 1, T0), T0, Effects())
    eng.freeze()
    record = eng._topology.records[OFFENDER]
    after = eng.successor(eng._orders, T0, Effects())
    assert after._topology.records[OFFENDER] is record  # its rank the same: shared
    assert not after._devices._thawed


def test_a_device_whose_rank_moved_keeps_its_state_under_its_new_rank() -> None:
    """Orders that move a device's rank (an order before its own): its state is taken over
    under the new rank, the old engine's record left as it was, and one never heard stays its
    rank alone; a device in several pairs (an offender of two victims) reads all of them."""
    eng = engine()
    eng.apply(fix_at(OFFENDER, 1, T0), T0, Effects())
    eng.freeze()
    before = eng._topology.records[OFFENDER]
    orders = [order("O-0", "ank-0000", ["vic-0000"]), order("O-1", victims=[VICTIM, "vic-0002"])]
    after = eng.successor(orders, T0, Effects())
    records = after._topology.records
    assert [after._topology.rank(device) for device in records] == [0, 1, 2, 3, 4]
    assert records[OFFENDER] == RANK_PREFIX.pack(2) + before[RANK_BYTES:]
    assert eng._topology.records[OFFENDER] is before and eng._topology.rank(OFFENDER) == 0
    assert after.device(OFFENDER) == eng.device(OFFENDER)
    assert records["vic-0002"] == RANK_PREFIX.pack(4)  # never heard
    assert [spec.victim for spec in after._topology.pairs_of(OFFENDER)] == [VICTIM, "vic-0002"]
    for victim in (VICTIM, "vic-0002"):
        after.apply(fix_at(victim, 1, T0), T0, Effects())
    after.freeze()
    after.apply(fix_at(OFFENDER, 2, T0 + S), T0 + S, Effects())
    assert [spec.last_obs_ts for spec in after._topology.pairs_of(OFFENDER)] == [T0 + S] * 2


def test_a_blob_takes_its_size_not_the_encoders_buffer() -> None:
    """msgspec's `encode` returns its working buffer, ~half as large again as the state: the
    table keeps an exact copy (~240 bytes a device at a fix a minute)."""
    table = DeviceTable({f"d{i}": RANK_PREFIX.pack(i) for i in range(200)})
    for i in range(200):
        table[f"d{i}"].packed_history = bytes(range(200)) + i.to_bytes(2)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        table.freeze()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    exact = sum(sys.getsizeof(table.encoded(f"d{i}")) for i in range(200))
    assert grown < exact * 1.1

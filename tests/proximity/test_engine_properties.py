"""Engine properties under redelivery and reordering, as MQTT QoS 1 and crashes produce them."""

from __future__ import annotations

import random

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from nabij.contract import Fix
from services.proximity.core.engine import Effects, ProximityEngine
from services.proximity.core.history import quantised
from tests.proximity import OFFENDER, T0, VICTIM, engine, fix_at

S = 1_000
PAIR = ("O-1", OFFENDER, VICTIM)


def track(device: str, distances: list[float], start_ms: int) -> list[Fix]:
    return [fix_at(device, seq, start_ms + seq * 10 * S, d) for seq, d in enumerate(distances)]


def states(eng: ProximityEngine) -> bytes:
    return msgspec.msgpack.encode([eng.device(OFFENDER), eng.device(VICTIM), eng.pair(PAIR)])


distances = st.lists(st.floats(0.0, 3_000.0), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    offender_path=distances,
    victim_path=distances,
    order=st.randoms(use_true_random=False),
    duplicates=st.lists(st.integers(0, 200), max_size=40),
)
def test_reordered_and_duplicated_fixes_never_move_state_backwards(
    offender_path: list[float],
    victim_path: list[float],
    order: random.Random,
    duplicates: list[int],
) -> None:
    """Fed a shuffled sequence with duplicates, a device's state only ever comes from a newer
    seq (its fix is always the one of its last_seq, on the grid, placed at its receipt; last_seq
    and pair time never go down), and feeding any message a second time right away is a
    duplicate that changes nothing (a late one was remembered as seen the first time)."""
    fixes = track(OFFENDER, offender_path, T0) + track(VICTIM, victim_path, T0 + 3 * S)
    stream = fixes + [fixes[i % len(fixes)] for i in duplicates]
    order.shuffle(stream)
    by_seq = {(f.device_id, f.seq): f for f in fixes}
    # No speed limit here: the jump filter has properties of its own (test_accuracy_and_tracks).
    eng = engine(enter_dwell_s=0, max_speed_mps=1e9)
    last = {OFFENDER: -1, VICTIM: -1}
    received: dict[tuple[str, int], int] = {}
    pair_time = 0
    for now, fix in enumerate(stream):
        first = Effects()
        eng.apply(fix, T0 + now, first)
        received.setdefault((fix.device_id, fix.seq), T0 + now)
        for device_id in (OFFENDER, VICTIM):
            device = eng.device(device_id)
            assert device.last_seq >= last[device_id]
            last[device_id] = device.last_seq
            if device.fix is not None:
                newest = by_seq[(device_id, device.last_seq)]
                placed = received[(device_id, device.last_seq)]
                assert device.fix == quantised(newest.lat, newest.lon, newest.acc, placed)[0]
        assert eng.pair(PAIR).last_obs_ts >= pair_time
        pair_time = eng.pair(PAIR).last_obs_ts
        before = states(eng)
        again = Effects()
        eng.apply(fix, T0 + now, again)
        # Applied, a duplicate or late the first time: a duplicate now.
        assert again.ignored == [(fix.device_id, "duplicate")]
        assert (again.signals, again.commands, again.changed_pairs) == ([], [], set())
        assert again.changed_devices == set()
        assert states(eng) == before


@settings(max_examples=100, deadline=None)
@given(
    offender_path=distances,
    redeliveries=st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100)), max_size=30),
)
def test_redelivered_fixes_produce_the_same_signals_as_a_clean_stream(
    offender_path: list[float], redeliveries: list[tuple[int, int]]
) -> None:
    """Redelivering already applied fixes (a crash before the broker ack) adds no signal: the
    signals equal those of the clean stream."""
    victim = fix_at(VICTIM, 0, T0)
    fixes = track(OFFENDER, offender_path, T0)

    def run(stream: list[Fix]) -> list[bytes]:
        eng, effects = engine(enter_dwell_s=0, exit_dwell_s=0), Effects()
        eng.apply(victim, T0, effects)
        for fix in stream:
            eng.apply(fix, T0, effects)
        return [msgspec.json.encode(s) for s in effects.signals]

    noisy: list[Fix] = []
    for index, fix in enumerate(fixes):
        noisy.append(fix)
        # After fix `index`, redeliver some fix at or before it.
        noisy.extend(
            fixes[which % (index + 1)]
            for after, which in redeliveries
            if after % len(fixes) == index
        )
    assert run(noisy) == run(fixes)

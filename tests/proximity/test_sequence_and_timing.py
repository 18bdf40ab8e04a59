"""Counters and clocks, against plain references: what is taken once, and where fixes land."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nabij.contract import Position
from services.proximity.core.history import quantised
from services.proximity.core.sequence import MAX_SEQ_JUMP, admit, take
from services.proximity.core.state import DeviceState
from services.proximity.core.timing import (
    HISTORY_POINTS,
    lateness_s,
    place,
    position_at,
    remember,
)
from tests.proximity import T0

S = 1_000
LATE_MS = 30 * S
WINDOW_MS = 900 * S


@settings(max_examples=200, deadline=None)
@given(
    boots=st.lists(st.integers(1, 60), min_size=1, max_size=4),
    redeliveries=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 200)), max_size=40),
)
def test_each_message_of_each_boot_is_taken_once(
    boots: list[int], redeliveries: list[tuple[int, int]]
) -> None:
    """Boots one after another, each counting from 0, with QoS 1 redeliveries of any earlier
    message of the current or the previous boot slipped in (a plain set is the reference): every
    message is taken exactly once, and no repeat is ever taken."""
    device = DeviceState("d")
    sent: list[tuple[str, int, int]] = []
    taken: set[tuple[str, int]] = set()
    t = T0
    for boot_no, length in enumerate(boots):
        boot = f"b{boot_no}"
        for seq in range(length):
            t += S
            message = (boot, seq, t)
            sent.append(message)
            stream = [message]
            for at, pick in redeliveries:
                if at == len(sent) and sent:
                    earlier = sent[pick % len(sent)]
                    if earlier[0] in (boot, f"b{boot_no - 1}") and earlier != message:
                        stream.insert(0, earlier)
            for b, s, ts in stream:
                verdict = admit(device, b, s, ts)
                if verdict == "new":
                    take(device, s, ts)
                    assert (b, s) not in taken, f"{(b, s)} taken twice"
                    taken.add((b, s))
    assert taken == {(b, s) for b, s, _ in sent}


@given(start=st.integers(0, 10**12), jump=st.integers(MAX_SEQ_JUMP + 1, 2**63 - 1 - 10**12))
def test_an_implausible_jump_is_refused_and_changes_nothing(start: int, jump: int) -> None:
    """Within a boot, a counter step beyond MAX_SEQ_JUMP is refused; the counter stays."""
    device = DeviceState("d", boot="b", last_seq=start, last_ts=T0)
    assert admit(device, "b", start + jump, T0 + S) == "seq_jump"
    assert admit(device, "b", start + 1, T0 + S) == "new"
    assert device.last_seq == start


@settings(max_examples=200, deadline=None)
@given(
    offset_s=st.integers(-3600, 3600),
    gaps_s=st.lists(st.integers(1, 120), min_size=1, max_size=30),
    latency_ms=st.lists(st.integers(0, 5_000), min_size=1, max_size=30),
)
def test_live_fixes_land_at_their_receipt_whatever_the_clock(
    offset_s: int, gaps_s: list[int], latency_ms: list[int]
) -> None:
    """A device reporting live, its clock any constant amount off and deliveries taking up to
    5 s: every fix is placed no later than its receipt and within the latency of it, and none is
    taken for late."""
    device = DeviceState("d")
    measured = T0
    for i, gap in enumerate(gaps_s):
        measured += gap * S
        received = measured + latency_ms[i % len(latency_ms)]
        at = place(
            device, measured - offset_s * S, received, late_after_ms=LATE_MS, window_ms=WINDOW_MS
        )
        take(device, i, measured - offset_s * S)
        assert received - 5_000 <= at <= received
        assert lateness_s(at, received, LATE_MS) is None


def test_a_backlog_lands_when_it_was_measured() -> None:
    """After live fixes taught the offset (the clock 150 s slow), fixes uploaded 5 minutes late
    are placed at their true times, in order, and count as late."""
    device = DeviceState("d")
    for i in range(3):
        now = T0 + i * 15 * S
        place(device, now - 150 * S, now, late_after_ms=LATE_MS, window_ms=WINDOW_MS)
        take(device, i, now - 150 * S)
        device.fix = Position(lat=0.0, lon=0.0, acc=5.0, ts=now)
    arrival = T0 + 400 * S
    placed = []
    for i, true_s in enumerate(range(60, 330, 30), start=3):
        at = place(
            device, T0 + true_s * S - 150 * S, arrival, late_after_ms=LATE_MS, window_ms=WINDOW_MS
        )
        take(device, i, T0 + true_s * S - 150 * S)
        placed.append(at)
    assert placed == [T0 + t * S for t in range(60, 330, 30)]
    assert all(lateness_s(at, arrival, LATE_MS) for at in placed)


@settings(max_examples=100, deadline=None)
@given(
    times_s=st.lists(st.integers(0, 3000), min_size=1, max_size=200), probe_s=st.integers(0, 3000)
)
def test_history_is_bounded_and_finds_a_near_position(times_s: list[int], probe_s: int) -> None:
    """However many positions come, the history stays within HISTORY_POINTS and the window,
    keeps the newest, and answers a time with a position within the asked age of it, if any."""
    device = DeviceState("d")
    now = T0
    for t in sorted(times_s):
        now = T0 + t * S
        device.fix, point = quantised(0.0, 0.0, 5.0, now)
        remember(device, point, now, WINDOW_MS)
    history = device.history
    assert len(history) <= HISTORY_POINTS
    assert history[-1] == device.fix
    assert all(p.ts >= now - WINDOW_MS for p in history)
    assert [p.ts for p in history] == sorted(p.ts for p in history)
    probe = T0 + probe_s * S
    found = position_at(device, probe, 120 * S)
    if found is not None:
        assert abs(found.ts - probe) <= 120 * S

"""Ingest lanes: per-device fairness, the two bounds and their answers, refusal bursts."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from services.proximity.core.lanes import SAMPLE_BYTES, FairLane, LaneLimits, Refusals

LIMITS = LaneLimits(device_max=3, lane_max=10, lane_max_bytes=1000)


def always(_: object = None) -> bool:
    return True


def never(_: object = None) -> bool:
    return False


def test_a_flooding_device_gets_one_turn_per_round_like_every_other() -> None:
    """Round-robin: with a flood queued for one device, the others' messages come out in the
    first round, each device's own messages in arrival order."""
    lane: FairLane[str] = FairLane(LaneLimits(device_max=100, lane_max=100, lane_max_bytes=10**6))
    for n in range(50):
        lane.push("flood", f"flood-{n}", 1)
    lane.push("vic-1", "vic-1-a", 1)
    lane.push("ank-1", "ank-1-a", 1)
    lane.push("vic-1", "vic-1-b", 1)
    assert lane.take(4) == ["flood-0", "vic-1-a", "ank-1-a", "flood-1"]
    assert lane.take(3) == ["vic-1-b", "flood-2", "flood-3"]
    assert len(lane) == 46 and lane.depth("vic-1") == 0


def test_surplus_of_a_device_is_refused_live_and_judged_while_catching_up() -> None:
    """Beyond `device_max` a live message is refused whatever it is; while catching up only a
    message that is not plausible is (a backlog of valid messages is no flood). Other devices
    are admitted meanwhile."""
    lane: FairLane[str] = FairLane(LIMITS)
    for n in range(3):
        assert lane.verdict("ank-0", b"m", 0, live=True, plausible=never) == "admit"
        lane.push("ank-0", f"m{n}", 1)
    assert lane.verdict("ank-0", b"m", 0, live=True, plausible=always) == "refuse"
    assert lane.verdict("ank-0", b"m", 0, live=False, plausible=never) == "refuse"
    assert lane.verdict("ank-0", b"m", 0, live=False, plausible=always) == "admit"
    assert lane.verdict("vic-1", b"m", 0, live=True, plausible=never) == "admit"


def test_a_live_device_sustains_its_rate_after_a_burst_of_its_bound() -> None:
    """A device may send `device_max` at once, then `device_rate` a second; beyond that it is
    refused although its queue is empty (it is being drained), and another device is not."""
    limits = LaneLimits(device_max=5, lane_max=100, lane_max_bytes=10**6, device_rate=10)
    lane: FairLane[str] = FairLane(limits)
    verdicts = [lane.verdict("ank-0", b"m", 0, live=True, plausible=always) for _ in range(7)]
    assert verdicts == ["admit"] * 5 + ["refuse"] * 2
    assert lane.verdict("ank-0", b"m", 99, live=True, plausible=always) == "refuse"
    assert lane.verdict("ank-0", b"m", 100, live=True, plausible=always) == "admit"
    assert lane.verdict("vic-1", b"m", 100, live=True, plausible=always) == "admit"
    assert lane.verdict("ank-0", b"m", 10_000, live=False, plausible=never) == "admit"


@given(
    gaps=st.lists(st.sampled_from([0, 0, 0, 1, 30, 400]), min_size=1, max_size=60),
    rate=st.sampled_from([0.5, 10.0, 1000.0, float("inf")]),
)
def test_the_token_bucket_admits_as_one_refill_per_message_would(
    gaps: list[int], rate: float
) -> None:
    """The bucket is refilled once per distinct read time (messages of one read share it): the
    verdicts are those of the plain rule, refill `elapsed x rate` on every message, capped at
    `device_max` (an unbounded rate: never empty)."""
    limits = LaneLimits(device_max=4, lane_max=10**6, lane_max_bytes=10**9, device_rate=rate)
    lane: FairLane[str] = FairLane(limits)
    allowance, since = 4.0, 0
    for now in itertools.accumulate(gaps):  # ms between messages; 0: the same read
        refill = 4.0 if rate == float("inf") else (now - since) * rate / 1000
        allowance, since = min(4.0, allowance + refill), now
        expected = "admit" if allowance >= 1 else "refuse"
        allowance -= 1 if expected == "admit" else 0
        assert lane.verdict("ank-0", b"m", now, live=True, plausible=always) == expected


def test_a_full_lane_makes_the_reader_wait_by_count_and_by_bytes() -> None:
    """The lane bound answers `wait` (backpressure), never `refuse`; a single message larger
    than the byte bound is still taken into an empty lane (it could never fit otherwise)."""
    lane: FairLane[str] = FairLane(LIMITS)
    for n in range(10):
        lane.push(f"dev-{n}", "m", 1)
    assert lane.verdict("dev-x", b"m", 0, live=True, plausible=always) == "wait"
    lane.take(1)
    assert lane.verdict("dev-x", b"m", 0, live=True, plausible=always) == "admit"
    assert lane.verdict("dev-x", bytes(992), 0, live=True, plausible=always) == "wait"
    empty: FairLane[str] = FairLane(LIMITS)
    assert empty.verdict("dev-x", bytes(5000), 0, live=True, plausible=always) == "admit"
    empty.push("dev-x", "big", 5000)
    assert (len(empty), empty.bytes) == (1, 5000)
    assert empty.take(5) == ["big"] and (len(empty), empty.bytes) == (0, 0)


def test_plausibility_is_asked_only_for_surplus_while_catching_up() -> None:
    """The costly check (a JSON parse) runs only where its answer matters."""
    asked: list[bool] = []

    def judge(_payload: bytes) -> bool:
        asked.append(True)
        return True

    lane: FairLane[str] = FairLane(LIMITS)
    lane.verdict("ank-0", b"m", 0, live=False, plausible=judge)
    for n in range(3):
        lane.push("ank-0", f"m{n}", 1)
    lane.verdict("ank-0", b"m", 0, live=True, plausible=judge)
    assert asked == []
    lane.verdict("ank-0", b"m", 0, live=False, plausible=judge)
    assert asked == [True]


def test_refusals_are_one_burst_until_a_pause_and_one_report_per_interval() -> None:
    """Refusals of one kind pile into one burst (count, first and last time, the first topic
    and the start of its payload); it is due after a quiet second, or every report interval
    while it goes on; flood bursts are per device."""
    refusals = Refusals(quiet_ms=1000, report_every_ms=10_000)
    for t in range(0, 5000, 10):
        refusals.add("flood", "ank-0", "t/ank-0/fix", b"x" * 5000, t)
    refusals.add("flood", "vic-1", "t/vic-1/fix", b"y", 100)
    refusals.add("unknown_device", None, "t/stranger/fix", b"z", 200)
    assert refusals.due(1099) == []
    due = refusals.due(1200)
    assert sorted((b.reason, b.device_id, b.count) for b in due) == [
        ("flood", "vic-1", 1),
        ("unknown_device", None, 1),
    ]
    for t in range(5000, 12_000, 10):
        refusals.add("flood", "ank-0", "t/ank-0/fix", b"x", t)
    (running,) = refusals.due(11_990)
    assert (running.count, running.first_ms, running.last_ms) == (1200, 0, 11_990)
    assert running.topic == "t/ank-0/fix" and running.sample == b"x" * SAMPLE_BYTES
    assert refusals.due(11_990) == []
    refusals.add("flood", "ank-0", "t/ank-0/fix", b"x", 12_000)
    assert [b.count for b in refusals.all()] == [1] and refusals.all() == []


@given(
    messages=st.lists(
        st.tuples(st.sampled_from("abcde"), st.integers(min_value=1, max_value=5000)),
        max_size=60,
    ),
    limit=st.integers(min_value=1, max_value=20),
    max_bytes=st.integers(min_value=1, max_value=12_000),
)
def test_batches_keep_to_their_byte_budget_and_lose_nothing(
    messages: list[tuple[str, int]], limit: int, max_bytes: int
) -> None:
    """Whatever the sizes: a batch holds at most `limit` items and `max_bytes` of payload, or
    one item that alone is larger; draining batch by batch takes every item exactly once, each
    key's in arrival order, and without `at_least_one` an oversized head waits (empty batch)."""
    lane: FairLane[int] = FairLane(LaneLimits(device_max=100, lane_max=100, lane_max_bytes=10**9))
    for n, (key, size) in enumerate(messages):
        lane.push(key, n, size)
    sizes = {n: size for n, (_, size) in enumerate(messages)}
    if messages and sizes[0] > 1:
        assert lane.take(limit, 0, at_least_one=False) == []
    taken: list[int] = []
    while batch := lane.take(limit, max_bytes):
        assert len(batch) <= limit
        assert len(batch) == 1 or sum(sizes[n] for n in batch) <= max_bytes
        taken += batch
    assert sorted(taken) == list(range(len(messages)))
    assert len(lane) == 0 and lane.bytes == 0
    for key in "abcde":
        mine = [n for n in taken if messages[n][0] == key]
        assert mine == sorted(mine)

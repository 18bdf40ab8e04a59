"""The end-to-end alarm path over a real Mosquitto and a real Redis, services in this process."""

from __future__ import annotations

import random

import pytest

from nabij.contract import AckRequest, Notice, SetInterval, Warn
from services.alarm_gateway import operators
from tests.integration.conftest import StackFactory
from tests.integration.stack import (
    VICTIM_HOME,
    ManualClock,
    SimDevice,
    north_of,
    now_ms,
    wait_until,
)

pytestmark = pytest.mark.integration

STEP_MS = 10_000


def fast_escalation(ack_timeout_s: float = 1) -> str:
    return f"""
[escalation.proximity_alarm]
priority = 1
queues = ["probation"]
ack_timeout_s = {ack_timeout_s}
escalate_to = ["police"]
"""


def walk(offender: SimDevice, victim: SimDevice, start_ts: int, distances_m: list[float]) -> int:
    """Offender fixes at the given distances north of the stationary victim, one every 10 s."""
    ts = start_ts
    for distance in distances_m:
        victim.fix(ts, VICTIM_HOME)
        offender.fix(ts, north_of(VICTIM_HOME, distance))
        ts += STEP_MS
    return ts


def kinds(notices: list[Notice], event: str) -> list[str]:
    return [n.kind for n in notices if n.event == event]


def test_approach_pre_alert_then_alarm_then_police_then_cleared(make_stack: StackFactory) -> None:
    """Walking in, lingering at 200 m and leaving: pre-alert, alarm, police, then clear."""
    stack = make_stack(extra_toml=fast_escalation())
    stack.start_in_process()
    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    inbound = [3000 - 100 * i for i in range(29)]  # 3000 .. 200 m
    ts = walk(offender, victim, stack.clock(), [*inbound, *[200] * 12])
    police = stack.wait_notices(
        "police",
        lambda ns: "proximity_alarm" in kinds(ns, "escalated"),
        "alarm escalated to police",
    )
    walk(offender, victim, ts, [200 + 200 * i for i in range(1, 15)] + [3000] * 8)
    probation = stack.wait_notices(
        "probation",
        lambda ns: {"proximity_alarm", "proximity_pre_alert"} <= set(kinds(ns, "cleared")),
        "both rings cleared",
    )
    opened = kinds(probation, "opened")
    assert opened == ["proximity_pre_alert", "proximity_alarm"]
    assert all(n.victim is None for n in probation)
    escalated = next(n for n in police if n.event == "escalated")
    assert escalated.level == 2 and escalated.victim is not None
    assert any(isinstance(c, SetInterval) and c.seconds == 15 for c in offender.commands)
    assert Warn(level="alarm") in victim.commands


def test_wobble_around_alarm_threshold_opens_one_alarm(make_stack: StackFactory) -> None:
    """Ten minutes at the 500 m threshold with GPS noise under the exit margin: one alarm only."""
    stack = make_stack()
    stack.start_in_process()
    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    noise = random.Random(20261129)
    distances = [500 + noise.uniform(-40, 40) for _ in range(12 * 10)]  # every 5 s for 10 min
    ts = stack.clock()
    for distance in distances:
        victim.fix(ts, VICTIM_HOME)
        offender.fix(ts, north_of(VICTIM_HOME, distance))
        ts += 5_000
    offender.event(ts, "strap_tamper")
    probation = stack.wait_notices(
        "probation", lambda ns: "strap_tamper" in kinds(ns, "opened"), "tamper processed"
    )
    stack.wait_applied("ank-1", offender.seq - 1)
    stack.wait_applied("vic-1", victim.seq)
    wait_until(stack.inbox_settled, what="gateway applied every signal")
    probation = stack.notices("probation")
    assert kinds(probation, "opened").count("proximity_alarm") == 1
    alarm_ids = {n.alarm_id for n in probation if n.kind == "proximity_alarm"}
    assert len(alarm_ids) == 1


def test_escalation_to_police_after_ack_timeout(make_stack: StackFactory) -> None:
    """Unacknowledged, a proximity alarm reaches police once the ack timeout passes."""
    clock = ManualClock(now_ms())
    stack = make_stack(extra_toml=fast_escalation(ack_timeout_s=60))
    stack.start_in_process(clock=clock)
    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    walk(offender, victim, clock(), [50])  # under critical_m: opens at once
    stack.wait_notices("probation", lambda ns: "proximity_alarm" in kinds(ns, "opened"), "opened")
    assert stack.notices("police") == []
    clock.advance(61_000)
    police = stack.wait_notices("police", bool, "escalation")
    assert [(n.event, n.kind, n.level) for n in police] == [("escalated", "proximity_alarm", 2)]


def test_ack_before_timeout_stops_escalation(make_stack: StackFactory) -> None:
    """Of two alarms, the acknowledged one never escalates; the other proves the timer ran."""
    clock = ManualClock(now_ms())
    orders = """
[[order]]
id = "ORD-A"
offender_device = "ank-1"
victim_devices = ["vic-1"]
alarm_m = 500

[[order]]
id = "ORD-B"
offender_device = "ank-2"
victim_devices = ["vic-2"]
alarm_m = 500
"""
    stack = make_stack(orders_toml=orders, extra_toml=fast_escalation(ack_timeout_s=60))
    stack.start_in_process(clock=clock)
    walk(stack.device("ank-1"), stack.device("vic-1"), clock(), [50])
    walk(stack.device("ank-2"), stack.device("vic-2"), clock(), [50])
    probation = stack.wait_notices(
        "probation", lambda ns: kinds(ns, "opened").count("proximity_alarm") == 2, "two alarms"
    )
    alarm_a = next(
        n.alarm_id
        for n in probation
        if (n.order_id, n.kind, n.event) == ("ORD-A", "proximity_alarm", "opened")
    )
    operators.request(
        stack.redis, stack.keys, AckRequest, alarm_a, by="officer-17", note=None, now_ms=clock()
    )
    stack.wait_notices(
        "probation", lambda ns: "acknowledged" in [n.event for n in ns], "acknowledgement"
    )
    clock.advance(120_000)
    stack.wait_notices("police", bool, "the other alarm escalating")
    clock.advance(120_000)  # a second timer pass: A had every chance to escalate by now
    police = stack.wait_notices(
        "police", lambda ns: any(n.level == 3 for n in ns), "the other alarm reminded"
    )
    assert {n.order_id for n in police} == {"ORD-B"}
    acked = [n for n in stack.notices("probation") if n.event == "acknowledged"]
    assert [(n.alarm_id, n.by) for n in acked] == [(alarm_a, "officer-17")]


def test_aware_press_reaches_police_at_once(make_stack: StackFactory) -> None:
    """A press of the aware button is a priority 1 notice to police and probation, even if old."""
    stack = make_stack()
    stack.start_in_process()
    victim = stack.device("vic-1")
    victim.event(
        stack.clock() - 86_400_000, "aware_button", lat=VICTIM_HOME[0], lon=VICTIM_HOME[1], acc=10.0
    )
    police = stack.wait_notices("police", bool, "aware notice")
    assert [(n.event, n.kind, n.priority, n.level) for n in police] == [
        ("opened", "aware_button", 1, 1)
    ]
    assert police[0].victim is not None
    probation = stack.wait_notices("probation", bool, "aware notice to probation")
    assert probation[0].kind == "aware_button" and probation[0].victim is None


def test_backlog_array_is_applied_in_seq_order(make_stack: StackFactory) -> None:
    """A shuffled backlog sent after a coverage gap is applied by seq, each fix at the time it
    was measured: the close pass inside it opens the alarm, marked as detected late."""
    stack = make_stack()
    stack.start_in_process()
    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    start = stack.clock()
    offender.fix(start, north_of(VICTIM_HOME, 3500))  # live, then out of coverage
    distances = [3000, 2000, 1200, 40, 40, 1500, 2500]
    # 30 s apart: a plausible car (under 40 m/s), not a GPS jump the core would set aside.
    backlog = [
        offender.stored_fix(start + (i + 1) * 3 * STEP_MS, north_of(VICTIM_HOME, d))
        for i, d in enumerate(distances)
    ]
    for minute in range(5):
        victim.fix(start + minute * 6 * STEP_MS, VICTIM_HOME)
    random.Random(7).shuffle(backlog)
    offender.backlog(backlog)
    probation = stack.wait_notices(
        "probation", lambda ns: "proximity_alarm" in kinds(ns, "opened"), "the late alarm"
    )
    (alarm,) = [n for n in probation if n.kind == "proximity_alarm" and n.event == "opened"]
    assert alarm.late_s is not None and alarm.late_s > 60
    assert alarm.happened_at is not None and start < alarm.happened_at < start + 18 * STEP_MS
    state = stack.device_state("ank-1")
    assert state is not None and state.last_seq == 8


def test_duplicate_and_out_of_order_fixes_are_ignored(make_stack: StackFactory) -> None:
    """A lower seq or a repeated seq never moves state, however close the position it claims."""
    stack = make_stack()
    stack.start_in_process()
    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    ts = stack.clock()
    minute = 60_000
    # A minute apart, so each claimed move is a plausible speed (< 50 m/s): only seq order
    # keeps the 30 m fixes out; were they applied, the first would open the alarm at once.
    for step, (seq, distance) in enumerate([(10, 3000), (9, 30), (10, 30), (11, 2900)]):
        victim.fix(ts + step * minute, VICTIM_HOME)
        offender.fix(ts + step * minute, north_of(VICTIM_HOME, distance), seq=seq)
    stack.wait_applied("ank-1", 11)
    wait_until(stack.inbox_settled, what="gateway applied every signal")
    assert not [n for n in stack.notices("probation") if n.kind.startswith("proximity")]


BAD_INPUTS: list[tuple[str, str, bytes]] = [
    ("invalid_json", "fix", b"{not json"),
    ("schema", "fix", b'{"device_id": "ank-1", "seq": 1, "ts": 1764403200123, "lat": 52.1}'),
    (
        "schema",
        "fix",
        b'{"device_id": "ank-1", "seq": 1, "ts": 1764403200123, "lat": 91.0, "lon": 4.9, "acc": 5}',
    ),
    (
        "nan",
        "fix",
        b'{"device_id": "ank-1", "seq": 1, "ts": 1764403200123, "lat": NaN, "lon": 4.9, "acc": 5}',
    ),
    (
        "device_mismatch",
        "fix",
        b'{"device_id": "ank-9", "seq": 1, "ts": 1764403200123, "lat": 52.1, "lon": 4.9, "acc": 5}',
    ),
    (
        "event_type",
        "event",
        b'{"device_id": "ank-1", "seq": 1, "ts": 1764403200123, "type": "self_destruct"}',
    ),
    (
        "ts_after_2100",
        "fix",
        b'{"device_id": "ank-1", "seq": 1, "ts": 5000000000000, "lat": 52.1, "lon": 4.9, "acc": 5}',
    ),
    ("empty_batch", "fix", b"[]"),
    ("status", "status", b'{"online": "maybe"}'),
]


def test_bad_input_goes_to_deadletter_and_service_keeps_working(make_stack: StackFactory) -> None:
    """Every kind of bad input is kept with a reason in the dead-letter stream; nothing stops."""
    stack = make_stack()
    stack.start_in_process()
    offender = stack.device("ank-1")
    for _label, kind, payload in BAD_INPUTS:
        offender.publish_raw(kind, payload)
    stranger = stack.device("unknown-7")
    stranger.fix(stack.clock(), VICTIM_HOME)
    offender.event(stack.clock(), "strap_tamper")  # the service still works after all of it
    stack.wait_notices("probation", lambda ns: "strap_tamper" in kinds(ns, "opened"), "marker")
    expected = len(BAD_INPUTS) + 1
    wait_until(
        lambda: len(stack.deadletters()) >= expected, what="dead letters", detail=stack.deadletters
    )
    letters = stack.deadletters()
    payloads = {fields[b"payload"] for fields in letters}
    assert {payload for _l, _k, payload in BAD_INPUTS} <= payloads
    reasons = {fields[b"reason"].decode() for fields in letters}
    assert {"invalid_json", "schema", "device_mismatch", "unknown_device"} <= reasons
    assert all(fields[b"detail"] for fields in letters)


def test_gateway_dead_letters_bad_inbox_entries_and_keeps_working(
    make_stack: StackFactory,
) -> None:
    """Garbage in the gateway's inbox (a broken writer, a poisoned entry) is kept with its reason
    in the dead-letter stream, acknowledged, and the gateway goes on routing."""
    stack = make_stack()
    stack.start_in_process()
    for raw in (b"{not json", b'{"type": "ack", "alarm_id": 7}', b"[" * 5000 + b"]" * 5000):
        stack.redis.xadd(stack.shard_keys.gateway_inbox, {"input": raw})
    stack.device("vic-1").event(stack.clock(), "aware_button")
    stack.wait_notices("police", lambda ns: "aware_button" in kinds(ns, "opened"), "aware press")
    wait_until(stack.inbox_settled, what="gateway applied every entry")
    from_gateway = [f for f in stack.deadletters() if f[b"source"] == b"gateway"]
    assert len(from_gateway) == 3
    assert {f[b"reason"] for f in from_gateway} == {b"invalid_input"}

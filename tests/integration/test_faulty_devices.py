"""Faulty and hostile devices never switch protection off, over real Mosquitto and Redis.

Each test reproduces a way main went blind (issue "No silent blindness") and shows the alarm
now. Server time is the test's (`ManualClock`), and every message is committed before the clock
moves on, so times on nabij's clock can be compared exactly.
"""

from __future__ import annotations

import msgspec
import pytest

from nabij.contract import Fix, Notice, encode
from services.proximity.core.state import DeviceState
from tests.integration.conftest import StackFactory
from tests.integration.stack import (
    VICTIM_HOME,
    ManualClock,
    SimDevice,
    Stack,
    north_of,
    now_ms,
    wait_until,
)

pytestmark = pytest.mark.integration

STEP_MS = 10_000
PATH = [1500, 1000, 700, 450, 300, 200, 150, 150]
TWO_PAIRS = """
[[order]]
id = "ORD-A"
offender_device = "ank-1"
victim_devices = ["vic-1"]
alarm_m = 500
pre_alert_m = 1000

[[order]]
id = "ORD-B"
offender_device = "ank-2"
victim_devices = ["vic-2"]
alarm_m = 500
pre_alert_m = 1000
"""


def opened(notices: list[Notice], kind: str, order: str | None = None) -> list[Notice]:
    return [
        n
        for n in notices
        if n.event == "opened" and n.kind == kind and (order is None or n.order_id == order)
    ]


def step(stack: Stack, device: SimDevice, t_ms: int, distance_m: float) -> None:
    """One live fix at server time `t_ms`, committed before the test goes on."""
    device.fix(t_ms, north_of(VICTIM_HOME, distance_m))
    stack.wait_committed(device)


@pytest.mark.parametrize(
    ("device", "skew_s", "glitch"),
    [("vic-2", -150, False), ("vic-2", 150, False), ("ank-2", -150, False),
     ("ank-2", 150, False), ("ank-2", 0, True)],
    ids=["victim-slow", "victim-fast", "offender-slow", "offender-fast", "offender-glitch"],
)  # fmt: skip
def test_a_wrong_clock_alarms_at_the_same_time_as_a_right_one(
    make_stack: StackFactory, device: str, skew_s: int, glitch: bool
) -> None:
    """Two pairs walk the same approach in lockstep: pair A with right clocks, pair B with one
    device's clock 150 s off, or one offender fix stamped 290 s ahead (on main: no notice for
    minutes at 40 m). Both alarms open at the same server time, within the normal dwell."""
    clock = ManualClock(now_ms())
    stack = make_stack(orders_toml=TWO_PAIRS)
    stack.start_in_process(clock=clock)
    devices = {name: stack.device(name) for name in ("ank-1", "vic-1", "ank-2", "vic-2")}
    devices[device].skew_ms = skew_s * 1000
    start = clock()
    for i, distance in enumerate(PATH):
        t = start + (i + 1) * STEP_MS
        for pair in ("1", "2"):
            step(stack, devices[f"vic-{pair}"], t, 0)
        for pair in ("1", "2"):
            glitched = glitch and pair == "2" and i == 3
            devices[f"ank-{pair}"].skew_ms += 290_000 if glitched else 0
            step(stack, devices[f"ank-{pair}"], t + 1000, distance)
            devices[f"ank-{pair}"].skew_ms -= 290_000 if glitched else 0
        # A notice's `at` is the gateway's clock when it applies the signal: let it catch up.
        wait_until(stack.inbox_settled, what="gateway applied every signal")
    probation = stack.wait_notices(
        "probation",
        lambda ns: len(opened(ns, "proximity_alarm")) == 2,
        "both alarms opened",
    )
    (right,) = opened(probation, "proximity_alarm", "ORD-A")
    (wrong,) = opened(probation, "proximity_alarm", "ORD-B")
    assert right.at == wrong.at
    entered = start + 4 * STEP_MS + 1000  # the offender's fix at 450 m
    assert right.at - entered <= 10_000 + STEP_MS  # the 10 s dwell, served at the next fix


@pytest.mark.parametrize("boots", [("b1", "b2"), (None, None)], ids=["boot-id", "old-firmware"])
def test_a_press_after_a_reboot_with_a_reused_seq_reaches_police(
    make_stack: StackFactory, boots: tuple[str | None, str | None]
) -> None:
    """The victim presses, her device reboots (counter back to 0), and she presses again with a
    seq she used before (on main: taken for a redelivery, no police notice): police get both."""
    clock = ManualClock(now_ms())
    stack = make_stack()
    stack.start_in_process(clock=clock)
    victim = stack.device("vic-1")
    victim.boot = boots[0]
    t = clock()
    for _ in range(3):
        t += STEP_MS
        step(stack, victim, t, 0)
    victim.event(t + 1000, "aware_button")
    stack.wait_notices("police", lambda ns: len(ns) == 1, "the first press")
    victim.reboot(boots[1])
    for _ in range(3):
        t += STEP_MS
        step(stack, victim, t, 0)
    victim.event(t + 1000, "aware_button")  # seq 3 again, as the first press had
    police = stack.wait_notices("police", lambda ns: len(ns) == 2, "the second press")
    assert [(n.kind, n.event) for n in police] == [
        ("aware_button", "opened"),
        ("aware_button", "updated"),
    ]
    assert "pressed again" in police[1].reason


def test_a_breach_inside_a_coverage_gap_alarms_when_the_backlog_arrives(
    make_stack: StackFactory,
) -> None:
    """The offender's uplink goes silent for 5 minutes; he walks to 40 m of the victim, stays
    two minutes, leaves, and then uploads his backlog (on main: location_unknown opened and
    cleared, no proximity notice ever). The alarm opens when the backlog arrives, marked late:
    when it happened and how late nabij learned of it."""
    clock = ManualClock(now_ms())
    stack = make_stack()
    stack.start_in_process(clock=clock)
    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    start = clock()
    stored: list[Fix] = []
    for t_s in range(0, 331, 15):
        t = start + t_s * 1000
        if t_s % 30 == 0:
            step(stack, victim, t, 0)
        east = 1500 if t_s <= 30 else max(40, 1500 - (t_s - 30) * 20) if t_s < 240 else 40
        distance = east if t_s < 240 else min(1500, 40 + (t_s - 240) * 20)
        if t_s <= 30:
            step(stack, offender, t, distance)
        else:
            stored.append(offender.stored_fix(t, north_of(VICTIM_HOME, distance)))
    clock.advance_to(start + 335_000)
    offender.backlog(stored)
    stack.wait_committed(offender)
    probation = stack.wait_notices(
        "probation", lambda ns: bool(opened(ns, "proximity_alarm")), "the late alarm"
    )
    (alarm,) = opened(probation, "proximity_alarm")
    assert alarm.priority == 1 and alarm.at == start + 335_000
    assert alarm.happened_at is not None and alarm.late_s is not None
    assert start + 60_000 <= alarm.happened_at <= start + 150_000
    assert alarm.late_s == (alarm.at - alarm.happened_at) // 1000
    assert "DETECTED LATE" in alarm.reason


def approach_alarms(stack: Stack, offender: SimDevice, victim: SimDevice, start: int) -> None:
    for i, distance in enumerate(PATH):
        t = start + (i + 1) * STEP_MS
        step(stack, victim, t, 0)
        step(stack, offender, t + 1000, distance)
    stack.wait_notices(
        "probation", lambda ns: bool(opened(ns, "proximity_alarm")), "the approach alarm"
    )


def test_a_forged_top_counter_blinds_nothing(make_stack: StackFactory) -> None:
    """A hostile client publishes one well-formed fix with seq 2**63-1 on the victim's topic (on
    main: her device blind for good, across restarts): it is refused, her next fixes count and
    the approach alarms."""
    clock = ManualClock(now_ms())
    stack = make_stack()
    stack.start_in_process(clock=clock)
    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    start = clock()
    step(stack, victim, start, 0)
    forged = Fix("vic-1", 2**63 - 1, start + 500, *north_of(VICTIM_HOME, 5000), 5.0)
    victim.publish_raw("fix", encode(forged))
    approach_alarms(stack, offender, victim, start)
    state = stack.device_state("vic-1")
    assert state is not None and state.last_seq == victim.seq


def test_a_counter_poisoned_before_heals(make_stack: StackFactory) -> None:
    """State written by main after such a forgery (seq 2**63-1, device time far ahead), found in
    Redis at start: the victim's fixes are taken again after three, and the approach alarms."""
    clock = ManualClock(now_ms())
    stack = make_stack()
    poisoned = DeviceState("vic-1", last_seq=2**63 - 1, last_ts=clock() + 10**9)
    stack.redis.set(stack.shard_keys.device_state("vic-1"), msgspec.msgpack.encode(poisoned))
    stack.redis.sadd(stack.shard_keys.proximity_devices, "vic-1")
    stack.start_in_process(clock=clock)
    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    start = clock()
    for i in range(3):
        victim.fix(start - 3000 + i * 1000, VICTIM_HOME)
    stack.wait_committed(victim)
    approach_alarms(stack, offender, victim, start)

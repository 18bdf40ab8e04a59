"""Presence and the victim's protection over a real Mosquitto and a real Redis, on a manual clock.

The services run in this process with server time in the test's hands (`ManualClock`): the
dwells pass by moving the clock, never by sleeping. Before moving it, the test waits until the
proximity service has committed the message it just sent (its device state counts it).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from nabij.contract import AckRequest, DeviceStatus, Notice, encode
from services.alarm_gateway import operators
from services.alarm_gateway.core.record import decode_record
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

MINUTE_MS = 60_000


def state_of(stack: Stack, device_id: str) -> DeviceState | None:
    blob = stack.redis.get(stack.shard_keys.device_state(device_id))
    return None if blob is None else msgspec.msgpack.decode(blob, type=DeviceState)


def committed(stack: Stack, device_id: str, check: Callable[[DeviceState], bool]) -> None:
    """Wait until the proximity service has committed a state of `device_id` passing `check`."""

    def done() -> bool:
        state = state_of(stack, device_id)
        return state is not None and check(state)

    wait_until(done, what=f"{device_id} state committed", detail=lambda: state_of(stack, device_id))


def say_online(stack: Stack, device: SimDevice, online: bool, changes: int) -> None:
    """Publish a status message and wait until it is the device's `changes`-th presence change."""
    device.publish_raw("status", encode(DeviceStatus(online=online)))
    committed(stack, device.device_id, lambda s: s.status_changes == changes)


def of_kind(notices: list[Notice], kind: str) -> list[Notice]:
    return [n for n in notices if n.kind == kind]


def test_twenty_flaps_after_an_acknowledged_offline_alarm_keep_one_alarm_and_the_ack(
    make_stack: StackFactory,
) -> None:
    """The reported bug: the ankle monitor goes offline, device_offline opens after the dwell and
    an officer acknowledges it; then 20 offline/online flaps in 60 s. Probation sees one alarm
    and exactly three notices (opened, acknowledged, and one cleared once the link is steady),
    never an `updated`, and the acknowledgement stands throughout."""
    clock = ManualClock(now_ms())
    stack = make_stack()
    stack.start_in_process(clock=clock)
    ankle = stack.device("ank-1")
    say_online(stack, ankle, False, 1)
    clock.advance(MINUTE_MS + 1000)
    probation = stack.wait_notices(
        "probation", lambda ns: len(of_kind(ns, "device_offline")) == 1, "device_offline opened"
    )
    [opened] = probation
    assert (opened.event, opened.kind, opened.victim) == ("opened", "device_offline", None)
    operators.request(
        stack.redis,
        stack.keys,
        AckRequest,
        opened.alarm_id,
        by="officer-17",
        note=None,
        now_ms=clock(),
    )
    stack.wait_notices("probation", lambda ns: len(ns) == 2, "acknowledgement")
    changes = 1
    for _ in range(20):  # one flap every 3 s of server time: 20 in 60 s
        say_online(stack, ankle, True, changes := changes + 1)
        clock.advance(1500)
        say_online(stack, ankle, False, changes := changes + 1)
        clock.advance(1500)
    say_online(stack, ankle, True, changes + 1)  # back for good
    wait_until(stack.inbox_settled, what="gateway applied every signal")
    assert [n.event for n in stack.notices("probation")] == ["opened", "acknowledged"]
    clock.advance(11 * MINUTE_MS)  # steady: no second drop within the 600 s window
    probation = stack.wait_notices(
        "probation", lambda ns: "cleared" in [n.event for n in ns], "device_offline cleared"
    )
    wait_until(stack.inbox_settled, what="gateway applied every signal")
    probation = stack.notices("probation")
    assert [n.event for n in probation] == ["opened", "acknowledged", "cleared"]
    assert {n.alarm_id for n in probation} == {opened.alarm_id}
    assert stack.notices("police") == []
    record = decode_record(stack.redis.hget(stack.keys.alarms, opened.alarm_id))
    assert (record.acknowledged_by, record.condition) == ("officer-17", "cleared")


def test_a_silent_victim_device_raises_victim_unprotected_until_it_reports_again(
    make_stack: StackFactory,
) -> None:
    """The victim device falls silent: after 300 s of server time victim_unprotected reaches the
    probation queue (priority 2, no victim position, the silence named), never police; her next
    fix clears it."""
    clock = ManualClock(now_ms())
    stack = make_stack()
    stack.start_in_process(clock=clock)
    victim, ankle = stack.device("vic-1"), stack.device("ank-1")
    ankle.fix(clock(), north_of(VICTIM_HOME, 5000))
    victim.fix(clock(), VICTIM_HOME)
    committed(stack, "vic-1", lambda s: s.last_seq == 1)
    clock.advance(5 * MINUTE_MS)  # exactly the limit: not yet
    ankle.fix(clock(), north_of(VICTIM_HOME, 5000))  # the offender keeps reporting
    committed(stack, "ank-1", lambda s: s.last_seq == 2)
    wait_until(stack.inbox_settled, what="gateway applied every signal")
    assert of_kind(stack.notices("probation"), "victim_unprotected") == []
    clock.advance(1000)
    probation = stack.wait_notices(
        "probation",
        lambda ns: len(of_kind(ns, "victim_unprotected")) == 1,
        "victim_unprotected opened",
    )
    [opened] = of_kind(probation, "victim_unprotected")
    assert (opened.event, opened.priority, opened.victim_device) == ("opened", 2, "vic-1")
    assert opened.victim is None
    assert "no fix for 301 s (limit 300 s)" in opened.reason
    victim.fix(clock(), VICTIM_HOME)
    probation = stack.wait_notices(
        "probation",
        lambda ns: "cleared" in [n.event for n in of_kind(ns, "victim_unprotected")],
        "victim_unprotected cleared",
    )
    assert [n.event for n in of_kind(probation, "victim_unprotected")] == ["opened", "cleared"]
    assert of_kind(stack.notices("police"), "victim_unprotected") == []

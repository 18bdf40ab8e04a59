"""kill -9 of each service during a burst of commands and alarms: nothing is lost or doubled.

Eight pairs come within 50 m at once (critical distance: every pair's alarm opens on its first
close fix), which makes a burst of device commands (a warning and a faster interval for both
devices of every pair) and of alarm signals. The service under test is killed with SIGKILL right
after the burst is published, then started again.
"""

from __future__ import annotations

from collections import Counter

import pytest

from bench.pipeline import orders_toml
from nabij.contract import Warn
from tests.integration.conftest import StackFactory
from tests.integration.stack import VICTIM_HOME, SimDevice, Stack, north_of, wait_until

PAIRS = 8


def _burst(stack: Stack) -> list[SimDevice]:
    """Every pair's victim at home and offender 50 m away, published as fast as possible once
    every device is connected (so that no fix is stamped long before it is sent)."""
    pairs = [(stack.device(f"vic-{i}"), stack.device(f"ank-{i}")) for i in range(PAIRS)]
    ts = stack.clock()
    for i, (victim, offender) in enumerate(pairs):
        home = (VICTIM_HOME[0] + i * 0.05, VICTIM_HOME[1])
        victim.fix(ts, home)
        offender.fix(ts, north_of(home, 50))
    return [device for pair in pairs for device in pair]


def _patient(stack: Stack) -> None:
    """On the test's 20x clock a restart of some seconds makes every fix waiting at the broker
    minutes late: it would be judged as a backlog at its measured time (when the partner's
    position was not known yet) or find the partner's fix too old. Here the restart must change
    nothing, so lateness and fix age get an hour (the service processes read the file at start)."""
    toml = stack.config_dir / "nabij.toml"
    patient = "[proximity]\nlate_after_s = 3600\nmax_fix_age_s = 3600\n"
    toml.write_text(toml.read_text().replace("[proximity]\n", patient, 1))


def _unwarned(devices: list[SimDevice]) -> list[str]:
    return [d.device_id for d in devices if Warn(level="alarm") not in d.commands]


def _alarms_opened(stack: Stack) -> Counter[str]:
    return Counter(
        n.order_id
        for n in stack.notices("probation")
        if n.kind == "proximity_alarm" and n.event == "opened"
    )


@pytest.mark.integration
@pytest.mark.parametrize("killed", ["proximity", "gateway"])
def test_a_service_killed_during_a_command_burst_loses_and_doubles_nothing(
    make_stack: StackFactory, killed: str
) -> None:
    """Whichever service dies mid-burst, after its restart every device has received its alarm
    warning at least once (commands leave the outbox only on PUBACK, and uncommitted fixes are
    redelivered), and every pair's proximity alarm opened exactly once at probation."""
    stack = make_stack(orders_toml=orders_toml(PAIRS))
    _patient(stack)
    stack.start_process("proximity")
    stack.start_process("gateway")
    devices = _burst(stack)
    stack.kill_process(killed)
    stack.start_process(killed)
    wait_until(
        lambda: not _unwarned(devices),
        what="every device warned",
        detail=lambda: _unwarned(devices),
    )
    wait_until(
        lambda: len(_alarms_opened(stack)) == PAIRS,
        what="every pair's alarm opened",
        detail=lambda: _alarms_opened(stack),
    )
    wait_until(stack.inbox_settled, what="the gateway has applied every signal")
    assert set(_alarms_opened(stack).values()) == {1}

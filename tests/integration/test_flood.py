"""A junk flood on one device's topic blinds nabij to nothing else (no timing asserted).

The flood is the incident's: 1,000,000 junk messages of 42 bytes, published by
`simulators.fleet.wire` from another process as fast as the broker takes them (about 30,000 QoS 1
messages/s relayed to the service on this 2-core machine: 30-55 s a test). The delays are
measured by `bench/flood.py` (docs/benchmarks.md), not here.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable

import pytest

from bench.flood import JUNK, flood, orders
from nabij.contract import Notice
from tests.integration.conftest import StackFactory
from tests.integration.stack import VICTIM_HOME, north_of, wait_until

pytestmark = pytest.mark.integration

FLOOD_COUNT = 1_000_000


def opened(kind: str) -> Callable[[list[Notice]], bool]:
    return lambda notices: any(n.kind == kind and n.event == "opened" for n in notices)


@pytest.mark.parametrize("topic_kind", ["fix", "event"])
def test_a_press_and_an_approach_get_through_a_junk_flood(
    make_stack: StackFactory, topic_kind: str
) -> None:
    """While one client floods ank-0's fix (or event) topic with junk, a victim's press reaches
    the police queue and another pair's approach opens its proximity_alarm; the flood is
    refused in bursts (a few dead letters, not one per message) and the flooded device's own
    later fix is still applied once the flood is over."""
    stack = make_stack(orders())  # the benchmark's: ank-0 is flooded, ank-1 approaches vic-1
    stack.start_in_process()
    offender, victim, flooded = stack.device("ank-1"), stack.device("vic-1"), stack.device("ank-0")
    start = stack.clock()
    victim.fix(start, VICTIM_HOME)
    offender.fix(start, north_of(VICTIM_HOME, 600))
    stack.wait_applied("ank-1", offender.seq)
    hostile = multiprocessing.get_context("spawn").Process(
        target=flood,
        args=(stack.mqtt_url, stack.topics.device("ank-0", topic_kind), FLOOD_COUNT),  # type: ignore[arg-type]  # a topic kind
    )
    hostile.start()
    try:
        wait_until(
            lambda: stack.redis.xlen(stack.keys.deadletter) > 0, what="the flood reaching nabij"
        )
        victim.event(stack.clock(), "aware_button")
        victim.fix(stack.clock(), VICTIM_HOME)
        offender.fix(stack.clock(), north_of(VICTIM_HOME, 40))
        stack.wait_notices("police", opened("aware_button"), "press at police")
        stack.wait_notices("probation", opened("proximity_alarm"), "approach alarm")
    finally:
        hostile.join(timeout=300)
    assert hostile.exitcode == 0
    # A fix of ank-0's read right behind its junk is still part of its flood (refused with it,
    # by its rate), and on a loaded machine nabij reads the junk long after the broker took
    # it. So first read past the flood: ank-1's fix, published after the last junk message,
    # is applied only once every junk message before it on the connection has been read.
    # Draining them can take longer than the usual 30 s give-up bound (a bound, not a timing).
    offender.fix(stack.clock(), north_of(VICTIM_HOME, 40))
    stack.wait_applied("ank-1", offender.seq, timeout_s=180)
    flooded.fix(stack.clock(), north_of(VICTIM_HOME, 5000), seq=1)
    stack.wait_applied("ank-0", 1)

    def floods() -> list[dict[bytes, bytes]]:
        return [fields for fields in stack.deadletters() if fields[b"reason"] == b"flood"]

    wait_until(lambda: bool(floods()), what="the flood's dead letters")
    assert all(fields[b"payload"] == JUNK for fields in floods())
    letters = stack.deadletters()
    assert len(letters) < FLOOD_COUNT / 10

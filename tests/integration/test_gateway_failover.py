"""One gateway writes at a time (real Mosquitto and Redis): a second one waits as a standby on
the gateway's lease, never applies a signal while the first lives, and takes over when the first
stops."""

from __future__ import annotations

import threading

import pytest

from services.alarm_gateway.service import GatewayService
from tests.integration.conftest import StackFactory
from tests.integration.stack import VICTIM_HOME, wait_until

pytestmark = pytest.mark.integration


def test_a_standby_gateway_takes_over_only_when_the_first_stops(make_stack: StackFactory) -> None:
    stack = make_stack()
    stack.start_in_process()
    standby_stop = threading.Event()
    standby = GatewayService(stack.config, consumer="gateway-2", clock=stack.clock)
    thread = threading.Thread(target=standby.run, args=(standby_stop,), daemon=True)
    thread.start()
    try:
        victim = stack.device("vic-1")
        press = {"lat": VICTIM_HOME[0], "lon": VICTIM_HOME[1], "acc": 10.0}
        victim.event(stack.clock(), "aware_button", **press)
        stack.wait_notices("police", bool, "first press")
        wait_until(stack.inbox_settled, what="first press applied")
        assert len(stack.notices("police")) == 1  # the standby did not apply it again
        stack.stop()  # the first gateway releases its lease; proximity and devices stop too
        stack.start_in_process("proximity")
        stack.device("ank-1").event(stack.clock(), "strap_tamper")
        stack.wait_notices(
            "probation", lambda ns: any(n.kind == "strap_tamper" for n in ns), "tamper notice"
        )
        assert thread.is_alive()
    finally:
        standby_stop.set()
        thread.join(timeout=10)

"""Nothing is lost when the broker itself crashes (kill -9) under a steady load.

Mosquitto acknowledges a QoS 1 message on receipt and saves it only every `autosave_interval`:
a kill loses what it held for nabij, and nabij's session (subscriptions) with it, so messages
published before nabij has subscribed again go nowhere. The firmware keeps every message until
nabij confirms it committed it (`Committed`) and sends it again after a reconnect or a timeout;
nabij takes a repeat as a duplicate.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from bench.pipeline import orders_toml
from nabij.contract import Notice
from simulators.firmware import Behaviour
from tests.integration.conftest import StackFactory
from tests.integration.stack import wait_until
from tests.integration.steady_load import SteadyLoad
from tests.servers import MosquittoServer

PAIRS = 5
STEPS = 45
KILL_AT_STEP = 15
DOWN_S = 1.0
SETTLE_S = 45.0


def _opened(notices: list[Notice], kind: str, order_id: str) -> int:
    return sum(n.event == "opened" and n.kind == kind and n.order_id == order_id for n in notices)


def _repeated(notices: list[Notice]) -> list[str]:
    return [notice_id for notice_id, n in Counter(n.notice_id for n in notices).items() if n > 1]


@pytest.mark.integration
def test_a_broker_killed_under_load_loses_no_seq_and_no_notice(
    make_stack: StackFactory, mosquitto: MosquittoServer
) -> None:
    """Five pairs send a fix every 0.1 s (wall) each; Mosquitto is killed (-9) mid-stream, a
    victim presses her button while it is down, and it comes back a second later without any
    saved state. Afterwards every seq every device sent is accounted for in nabij's committed
    state (taken, or seen late when a re-send filled a gap), the
    close pair's proximity alarm opened once, the press opened one alarm at police, and no
    notice appears twice."""
    stack = make_stack(orders_toml=orders_toml(PAIRS))
    stack.start_in_process()
    load = SteadyLoad(stack, PAIRS, Behaviour())
    load.connect()
    try:
        load.start(STEPS)
        load.wait_steps(KILL_AT_STEP)
        mosquitto.kill()
        load.press("vic-1")
        time.sleep(DOWN_S)
        mosquitto.start()
        load.wait()
        wait_until(
            lambda: not load.missing(),
            what="every seq accounted for",
            timeout_s=SETTLE_S,
            detail=load.missing,
        )
        police = stack.wait_notices(
            "police",
            lambda ns: any(n.kind == "aware_button" for n in ns),
            "the press made while the broker was down",
        )
        probation = stack.notices("probation")
    finally:
        load.close()
    assert _repeated(police) == [] and _repeated(probation) == []
    assert _opened(probation, "proximity_alarm", "O0") == 1
    assert _opened(police, "aware_button", "O1") == 1
    assert sum(f.resent for f in load.devices) > 0  # the firmware did have to send again

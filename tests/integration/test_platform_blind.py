"""A platform that tells dispatchers when it is blind (issue 11), on real Mosquitto and Redis with
both services running: the broker killed is one `platform_degraded` and one `platform_restored`
per queue (a proximity crash in between changes nothing); 200 devices going silent at once are
one grouped notice listing their orders; a single silent device keeps its own alarm.

The stack's clock runs TEST_SPEED times the wall: the windows below are nabij seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from nabij.contract import Fix, Notice, QueueName, encode
from services.shell.mqtt import MqttEndpoint, make_client
from tests.integration.conftest import StackFactory
from tests.integration.stack import VICTIM_HOME, Stack, north_of, wait_until
from tests.servers import MosquittoServer

pytestmark = pytest.mark.integration

QUEUES: tuple[QueueName, ...] = ("probation", "police")
# Blind after 100 s (5 s of wall), quiet after 60 s, one event within 60 s: short, yet wide
# enough that a loaded machine's gaps in the test devices' reports are no outage. A device's own
# silence alarms stay at their defaults (location_unknown 180 s, victim_unprotected 300 s).
PLATFORM = """
[platform]
blind_after_s = 100
quiet_after_s = 60
group_window_s = 60
group_min_devices = 50
"""
SILENCE_KINDS = {"location_unknown", "victim_unprotected", "device_offline"}


def orders_toml(count: int) -> str:
    return "".join(
        f'[[order]]\nid = "ORD-{i:03d}"\noffender_device = "ank-{i:03d}"\n'
        f'victim_devices = ["vic-{i:03d}"]\nalarm_m = 500\npre_alert_m = 1000\n\n'
        for i in range(count)
    )


def devices_of(orders: range) -> list[str]:
    return [d for i in orders for d in (f"ank-{i:03d}", f"vic-{i:03d}")]


class Chorus:
    """Many devices through one test client (the observer may publish on every device topic):
    each `sing` sends one live fix per device, offenders 5 km from their victims."""

    def __init__(self, stack: Stack, url: str) -> None:
        self._stack = stack
        endpoint = MqttEndpoint.from_url(url)
        self._client = make_client(
            endpoint, f"chorus-{time.monotonic_ns()}", persistent_session=False
        )
        self._client.connect(endpoint.host, endpoint.port)
        self._client.loop_start()
        self._seq = 0

    def sing(self, devices: list[str]) -> None:
        self._seq += 1
        now = self._stack.clock()
        far = north_of(VICTIM_HOME, 5000)
        infos = []
        for device in devices:
            lat, lon = far if device.startswith("ank") else VICTIM_HOME
            fix = Fix(device, self._seq, now, lat, lon, 5.0, src="gnss")
            topic = self._stack.topics.device(device, "fix")
            infos.append(self._client.publish(topic, encode(fix), qos=1))
        for info in infos:
            info.wait_for_publish(timeout=10)

    @contextmanager
    def keep_singing(self, devices: list[str], every_s: float = 0.5) -> Iterator[None]:
        """`devices` report every `every_s` of wall (10 s of nabij) on a thread meanwhile."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every_s):
                self.sing(devices)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=15)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def opened(stack: Stack, queue: QueueName, kind: str) -> list[Notice]:
    return [n for n in stack.notices(queue) if n.kind == kind and n.event == "opened"]


def silence_notices(stack: Stack, queue: QueueName) -> list[Notice]:
    return [n for n in stack.notices(queue) if n.kind in SILENCE_KINDS]


def test_broker_killed_is_one_degraded_and_one_restored_per_queue_across_a_crash(
    make_stack: StackFactory, mosquitto: MosquittoServer
) -> None:
    """kill -9 of the broker for longer than blind_after_s: exactly one platform_degraded on
    each queue, naming both orders and the broker; the proximity service killed (-9) during the
    outage and started again after the broker returns sends no second one, and exactly one
    platform_restored per queue follows; still one of each a while later."""
    stack = make_stack(orders_toml=orders_toml(2), extra_toml=PLATFORM)
    stack.start_in_process("gateway")
    stack.start_process("proximity")
    chorus = Chorus(stack, mosquitto.url)
    chorus.sing(devices_of(range(2)))
    wait_until(lambda: stack.device_state("vic-001") is not None, what="devices heard")
    chorus.close()
    mosquitto.kill()
    for queue in QUEUES:
        stack.wait_notices(
            queue, lambda ns: any(n.kind == "platform_degraded" for n in ns), "degraded"
        )
    stack.kill_process("proximity")
    stack.clock.advance_to(stack.clock() + 200_000)  # the outage goes on: 2 more blind windows
    mosquitto.start()
    stack.start_process("proximity")
    for queue in QUEUES:
        stack.wait_notices(
            queue, lambda ns: any(n.kind == "platform_restored" for n in ns), "restored"
        )
    stack.clock.advance_to(stack.clock() + 60_000)
    wait_until(stack.inbox_settled, what="gateway caught up")
    for queue in QUEUES:
        [degraded] = opened(stack, queue, "platform_degraded")
        [restored] = opened(stack, queue, "platform_restored")
        assert (degraded.priority, degraded.order_id, degraded.offender_device) == (1, None, None)
        assert degraded.orders == ("ORD-000", "ORD-001")
        assert "MQTT broker unreachable" in degraded.reason
        assert set(degraded.queues) == set(QUEUES)
        assert restored.at > degraded.at and restored.orders == degraded.orders
        assert [n.event for n in stack.notices(queue) if n.alarm_id == degraded.alarm_id].count(
            "opened"
        ) == 1


def test_200_devices_silent_within_a_minute_are_one_grouped_notice(
    make_stack: StackFactory, mosquitto: MosquittoServer
) -> None:
    """100 orders' devices (200) stop reporting together while 10 orders' keep on: one
    platform_degraded per queue listing exactly the 100 silent orders, and none of the 200
    raises its own silence alarm, even past location_unknown_s and victim_silence_s."""
    stack = make_stack(orders_toml=orders_toml(110), extra_toml=PLATFORM)
    stack.start_in_process()
    chorus = Chorus(stack, mosquitto.url)
    silent, talking = devices_of(range(100)), devices_of(range(100, 110))
    chorus.sing(silent + talking)
    wait_until(lambda: stack.device_state("vic-099") is not None, what="devices heard")
    stopped_at = stack.clock()
    with chorus.keep_singing(talking):
        for queue in QUEUES:
            stack.wait_notices(
                queue, lambda ns: any(n.kind == "platform_degraded" for n in ns), "grouped"
            )
        stack.clock.advance_to(stopped_at + 320_000)  # past victim_silence_s (300 s)
        wait_until(stack.inbox_settled, what="gateway caught up")
    chorus.close()
    silent_orders = tuple(f"ORD-{i:03d}" for i in range(100))
    for queue in QUEUES:
        [grouped] = opened(stack, queue, "platform_degraded")
        assert grouped.orders == silent_orders
        assert "200 of 220 devices went silent or offline" in grouped.reason
        assert silence_notices(stack, queue) == []
    states = [stack.device_state(d) for d in silent]
    assert all(state is not None and state.grouped for state in states)


def test_a_single_silent_device_gets_its_own_notice_not_a_grouped_one(
    make_stack: StackFactory, mosquitto: MosquittoServer
) -> None:
    """Among 60 reporting devices one offender stops: location_unknown for his order only, and
    no platform notice."""
    stack = make_stack(orders_toml=orders_toml(30), extra_toml=PLATFORM)
    stack.start_in_process()
    chorus = Chorus(stack, mosquitto.url)
    everyone = devices_of(range(30))
    chorus.sing(everyone)
    with chorus.keep_singing(everyone[1:]):
        notices = stack.wait_notices(
            "probation",
            lambda ns: any(n.kind == "location_unknown" for n in ns),
            "location_unknown",
        )
        stack.clock.advance_to(stack.clock() + 130_000)  # past quiet and grouping windows
        wait_until(stack.inbox_settled, what="gateway caught up")
    chorus.close()
    notices = stack.notices("probation")
    assert [(n.kind, n.order_id, n.event) for n in notices if n.kind in SILENCE_KINDS] == [
        ("location_unknown", "ORD-000", "opened")
    ]
    assert not [n for n in notices if n.order_id is None]
    assert not [n for n in stack.notices("police") if n.order_id is None]

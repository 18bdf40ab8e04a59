"""Fleet mode: orders, vectorised noise model, and what it publishes over a real broker."""

from __future__ import annotations

import itertools
import math
import threading
import time
import tomllib
from collections import defaultdict

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from nabij.config import validate_orders
from nabij.contract import Topics, fix_decoder
from nabij.mqtt import MqttEndpoint
from services.cli import build_parser
from simulators.fleet.generator import run_fleet
from simulators.fleet.motion import NOISE, FleetMotion
from simulators.fleet.plan import FleetPlan
from simulators.noise import ACC_PER_SIGMA


def test_orders_pair_each_ankle_monitor_with_its_victim_device() -> None:
    """`--write-orders` output is a valid orders.toml naming every device of the fleet."""
    plan = FleetPlan(pairs=3, interval_s=30)
    orders = validate_orders(tomllib.loads(plan.orders_toml())["order"], "fleet")
    assert [(o.offender_device, o.victim_devices) for o in orders] == [
        (f"ank-f{k:06d}", [f"vic-f{k:06d}"]) for k in range(3)
    ]
    assert plan.rate == pytest.approx(0.2)


def test_fleet_noise_follows_the_scenario_noise_model() -> None:
    """Vectorised error per axis: deviation sigma, lag-1 correlation exp(-dt/tau), and jumps
    at about the configured rate (1 per device-hour)."""
    plan = FleetPlan(pairs=500, interval_s=10)
    motion = FleetMotion(plan, seed=3)
    idx = np.arange(plan.devices)
    east = []
    jumps = 0
    for _ in range(400):
        motion.step(idx)
        east.append(motion.ex.copy())
        jumps += int(np.count_nonzero(motion.jump_left == 20.0))
    series = np.array(east)
    assert series.std() == pytest.approx(NOISE.sigma_m, rel=0.05)
    lag1 = np.mean([np.corrcoef(series[:-1, d], series[1:, d])[0, 1] for d in range(200)])
    assert lag1 == pytest.approx(math.exp(-10 / NOISE.correlation_s), abs=0.03)
    hours = plan.devices * 400 * 10 / 3600
    assert jumps / hours == pytest.approx(1.0, rel=0.15)
    assert motion.acc_m == pytest.approx(NOISE.sigma_m * ACC_PER_SIGMA)


def test_cli_accepts_the_fleet_form_and_the_scenario_form() -> None:
    """`nabij simulate fleet --pairs N ...` and `nabij simulate --scenario X` both parse."""
    fleet = build_parser().parse_args(
        ["simulate", "fleet", "--pairs", "10", "--interval", "5", "--duration", "3"]
    )
    assert (fleet.mode, fleet.pairs, fleet.interval, fleet.duration) == ("fleet", 10, 5.0, 3.0)
    scenario = build_parser().parse_args(["simulate", "--scenario", "approach", "--check"])
    assert (scenario.mode, scenario.scenario, scenario.check) == (None, "approach", True)


@pytest.mark.integration
@pytest.mark.parametrize("qos", [0, 1])
def test_fleet_publishes_contract_fixes_on_every_device_topic(
    mosquitto: object, unique_prefix: str, qos: int
) -> None:
    """At a modest rate every device publishes valid fixes on its own topic, its seq counting
    from 0 under the run's boot id and its `ts` one interval apart, with the device id of the
    topic."""
    url: str = mosquitto.url  # type: ignore[attr-defined]  # fixture from tests/servers.py
    topics = Topics(unique_prefix)
    plan = FleetPlan(pairs=5, interval_s=1.0)
    received: dict[str, list[bytes]] = defaultdict(list)
    subscribed = threading.Event()
    lock = threading.Lock()

    def on_message(_c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        with lock:
            received[message.topic].append(bytes(message.payload))

    endpoint = MqttEndpoint.from_url(url)
    observer = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="obs")
    observer.on_message = on_message
    observer.on_subscribe = lambda *_a: subscribed.set()
    observer.username_pw_set(endpoint.username, endpoint.password)  # the test broker's observer
    observer.connect(endpoint.host, endpoint.port)
    observer.subscribe(topics.device("+", "fix"), qos=1)
    observer.loop_start()
    try:
        assert subscribed.wait(10)
        report = run_fleet(plan, url, unique_prefix, duration_s=3.0, qos=qos, connections=2)
        deadline = time.monotonic() + 10  # until the broker has delivered the last ones
        while time.monotonic() < deadline:
            with lock:
                if sum(map(len, received.values())) >= 30:
                    break
            time.sleep(0.02)
    finally:
        observer.loop_stop()
        observer.disconnect()
    assert report.stats.sent == 30
    if qos == 1:
        assert report.stats.acked == 30
    expected = {topics.device(plan.device_id(i), "fix") for i in range(plan.devices)}
    boots = {fix_decoder.decode(p).boot for payloads in received.values() for p in payloads}
    assert len(boots) == 1  # one start of the whole fleet
    assert set(received) == expected
    for topic, payloads in received.items():
        fixes = [fix_decoder.decode(p) for p in payloads]
        assert len(fixes) == 3
        assert {f.device_id for f in fixes} == {topics.parse(topic)[0]}  # type: ignore[index]
        assert [f.seq for f in fixes] == [0, 1, 2]
        assert fixes[0].boot is not None and {f.boot for f in fixes} == boots
        assert [b.ts - a.ts for a, b in itertools.pairwise(fixes)] == [1000, 1000]
        # Inside the Amsterdam box, give or take the GNSS error.
        assert all(52.28 <= f.lat <= 52.43 and 4.75 <= f.lon <= 5.01 for f in fixes)
        assert all(f.src == "gnss" and f.acc > 0 for f in fixes)

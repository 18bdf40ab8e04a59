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
from services.cli import build_parser
from services.shell.mqtt import MqttEndpoint
from simulators.fleet.generator import run_fleet
from simulators.fleet.motion import NOISE, VELOCITY_SIGMA_MPS, FleetMotion
from simulators.fleet.plan import FleetPlan
from simulators.noise import ACC_PER_SIGMA


def test_orders_pair_each_ankle_monitor_with_its_victim_device() -> None:
    """`--write-orders` output is a valid orders.toml naming every device of the fleet."""
    plan = FleetPlan(pairs=3, interval_s=30)
    orders = validate_orders(tomllib.loads(plan.orders_toml())["order"], "fleet")
    assert [(o.offender_device, o.victim_devices) for o in orders] == [
        (f"ank-f{k:06d}", (f"vic-f{k:06d}",)) for k in range(3)
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


def _true_distances(motion: FleetMotion, plan: FleetPlan) -> np.ndarray:
    pairs = np.arange(plan.pairs)
    victims = pairs + plan.pairs
    return np.hypot(motion.x[pairs] - motion.x[victims], motion.y[pairs] - motion.y[victims])


def test_approaching_pairs_come_inside_the_alarm_distance_and_go_again() -> None:
    """With `approaching=0.1` the first tenth of the pairs shuttle: each offender comes to his
    victim's door (inside the alarm distance) and leaves beyond it again, more than once in
    six hours, while she stays home; the other pairs start and stay as before (far, random)."""
    plan = FleetPlan(pairs=100, interval_s=10, seed=5, approaching=0.1)
    assert plan.approaching_pairs == 10
    motion = FleetMotion(plan, seed=5)
    victims_home = motion.x[plan.pairs : plan.pairs + 10].copy()
    idx = np.arange(plan.devices)
    inside = np.zeros((2200, plan.pairs), dtype=bool)
    for t in range(2200):
        motion.step(idx)
        inside[t] = _true_distances(motion, plan) < plan.alarm_m
    entries = np.count_nonzero(inside[1:] & ~inside[:-1], axis=0)
    assert (entries[:10] >= 2).all()  # came in, left, came in again
    assert not inside[0, :10].any()  # every approach starts outside
    np.testing.assert_array_equal(motion.x[plan.pairs : plan.pairs + 10], victims_home)
    assert entries[10:].mean() < 0.5  # the rest meet by chance only (passing her street)


def test_without_approaching_no_pair_is_steered() -> None:
    """The default plan has no approaching pair: nobody is sent to a victim's door."""
    plan = FleetPlan(pairs=50, interval_s=30)
    motion = FleetMotion(plan, seed=1)
    assert plan.approaching_pairs == 0 and not motion.chaser.any()
    with pytest.raises(ValueError, match="share"):
        FleetPlan(pairs=50, interval_s=30, approaching=1.5)


def test_reported_speed_and_heading_carry_doppler_noise() -> None:
    """Reported speed and heading scatter around the truth by the velocity error: a driving
    device's speed by about sigma, its heading by about a degree; a device at rest reports
    a small speed (Rayleigh, mean sigma * sqrt(pi/2)) in any direction."""
    plan = FleetPlan(pairs=400, interval_s=10, seed=2)
    motion = FleetMotion(plan, seed=2)
    idx = np.arange(plan.devices)
    speed_err, heading_err, rest_speed, rest_heading = [], [], [], []
    for _ in range(50):
        _lat, _lon, speed, heading = motion.step(idx)
        driving = motion.moving & (motion.speed == 11.0)
        resting = ~motion.moving
        speed_err.append(speed[driving] - 11.0)
        heading_err.append((heading[driving] - motion.heading[driving] + 180.0) % 360.0 - 180.0)
        rest_speed.append(speed[resting])
        rest_heading.append(heading[resting])
    assert np.concatenate(speed_err).std() == pytest.approx(VELOCITY_SIGMA_MPS, rel=0.1)
    expected_deg = math.degrees(VELOCITY_SIGMA_MPS / 11.0)
    assert np.concatenate(heading_err).std() == pytest.approx(expected_deg, rel=0.1)
    at_rest = np.concatenate(rest_speed)
    assert at_rest.mean() == pytest.approx(VELOCITY_SIGMA_MPS * math.sqrt(math.pi / 2), rel=0.1)
    # Any direction: each quadrant holds about a quarter of the resting headings.
    quadrants = np.bincount((np.concatenate(rest_heading) // 90).astype(int), minlength=4)
    assert quadrants.min() / quadrants.sum() > 0.2

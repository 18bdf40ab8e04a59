"""A short scenario against a real Mosquitto: the devices behave as MQTT clients of the contract."""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from nabij.contract import (
    DeviceEvent,
    Fix,
    SetInterval,
    Topics,
    Warn,
    encode,
    event_decoder,
    fix_decoder,
    status_decoder,
)
from services.shell.mqtt import MqttEndpoint
from simulators.runner import DeviceConnectError, ScenarioRun, parse_scenario
from tests.integration.stack import wait_until

SHORT = """
name = "short"
duration_s = 120
seed = 1
[[order]]
id = "ORD-IT-1"
offender_device = "ank-it-1"
victim_devices = ["vic-it-1"]
alarm_m = 500
[[device]]
id = "ank-it-1"
role = "offender"
interval_s = 10
route = [{ lat = 52.37, lon = 4.90, speed_mps = 1.4 }, { bearing_deg = 270, distance_m = 100 }]
[[device]]
id = "vic-it-1"
role = "victim"
interval_s = 10
route = [{ lat = 52.37, lon = 4.89 }]
[[event]]
at_s = 60
device = "vic-it-1"
type = "aware_button"
"""


@pytest.mark.integration
def test_devices_publish_obey_commands_and_announce_presence(
    mosquitto: object, unique_prefix: str
) -> None:
    """Over a real broker: retained online/offline status, contract-valid fixes and events
    with one seq counter per device, and set_interval / warn commands obeyed mid-run."""
    url: str = mosquitto.url  # type: ignore[attr-defined]  # fixture object from tests/servers.py
    topics = Topics(unique_prefix)
    endpoint = MqttEndpoint.from_url(url)
    received: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
    subscribed = threading.Event()
    commanded = threading.Event()

    def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        parsed = topics.parse(message.topic)
        assert parsed is not None
        device_id, kind = parsed
        received[device_id].append((kind, bytes(message.payload)))
        # Answer the first offender fix the way nabij would when a pair comes close.
        if kind == "fix" and device_id == "ank-it-1" and not commanded.is_set():
            commanded.set()
            client.publish(topics.device("ank-it-1", "cmd"), encode(SetInterval(seconds=5)), 1)
            client.publish(topics.device("vic-it-1", "cmd"), encode(Warn(level="alarm")), 1)

    observer = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="observer")
    observer.on_message = on_message
    observer.on_subscribe = lambda *args: subscribed.set()
    observer.username_pw_set(endpoint.username, endpoint.password)  # the test broker's observer
    observer.connect(endpoint.host, endpoint.port)
    observer.subscribe([(topics.device("+", k), 1) for k in ("fix", "event", "status")])
    observer.loop_start()
    try:
        assert subscribed.wait(10)
        run = ScenarioRun(parse_scenario(SHORT), url, unique_prefix, speed=20.0)
        report = run.run()

        def announced_offline(device_id: str) -> bool:
            statuses = [p for k, p in list(received[device_id]) if k == "status"]
            return bool(statuses) and status_decoder.decode(statuses[-1]).online is False

        # The broker relays the last status after the run returns: wait for it, not a sleep.
        wait_until(lambda: all(map(announced_offline, ("ank-it-1", "vic-it-1"))),
                   what="both devices' offline status")  # fmt: skip
    finally:
        observer.loop_stop()
        observer.disconnect()

    assert report.commands_received == {"ank-it-1": [SetInterval(5)], "vic-it-1": [Warn("alarm")]}
    assert run.devices["vic-it-1"].warnings == ["alarm"]
    for device_id in ("ank-it-1", "vic-it-1"):
        statuses = [status_decoder.decode(p) for k, p in received[device_id] if k == "status"]
        assert statuses[0].online and statuses[-1].online is False
        messages: list[Fix | DeviceEvent] = [
            fix_decoder.decode(p) if k == "fix" else event_decoder.decode(p)
            for k, p in received[device_id]
            if k in {"fix", "event"}
        ]
        assert all(m.device_id == device_id for m in messages)
        seqs = [m.seq for m in messages]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # QoS 1, in order, no loss
        assert report.fixes_sent[device_id] == sum(isinstance(m, Fix) for m in messages)
    (press,) = [p for k, p in received["vic-it-1"] if k == "event"]
    assert event_decoder.decode(press).type == "aware_button"
    # After the command the ankle monitor reports every 5 simulated seconds.
    applied_at = run.devices["ank-it-1"].commands[0].ts
    fixes = [fix_decoder.decode(p) for k, p in received["ank-it-1"] if k == "fix"]
    later = [f.ts for f in fixes if f.ts > applied_at]
    assert {b - a for a, b in itertools.pairwise(later)} == {5_000}


@pytest.mark.integration
def test_unreachable_broker_fails_with_a_clear_error(unique_prefix: str) -> None:
    """No broker: run() raises DeviceConnectError naming the URL instead of hanging."""
    run = ScenarioRun(
        parse_scenario(SHORT), "mqtt://127.0.0.1:1", unique_prefix, connect_timeout_s=1.0
    )
    with pytest.raises(DeviceConnectError, match=r"mqtt://127\.0\.0\.1:1"):
        run.run()

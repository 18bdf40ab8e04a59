"""Store-and-forward against the real stack: a coverage gap loses no fix and doubles none."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from pathlib import Path

import msgspec
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import REGISTRY

from nabij.config import load_config
from nabij.contract import DeviceEvent, Fix, Topics
from nabij.keys import Keys, Shard
from services.proximity.core.state import DeviceState
from services.shell.mqtt import MqttEndpoint
from simulators.check import run_checked
from simulators.runner import load_scenario
from tests.integration.stack import wait_until
from tests.simulators.checked import SPEED, checked_stack

_wire_decoder = msgspec.json.Decoder(Fix | list[Fix])
_event_decoder = msgspec.json.Decoder(DeviceEvent)


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _proximity_counts() -> dict[str, float]:
    received, ignored = "nabij_messages_received_total", "nabij_messages_ignored_total"
    return {
        "fixes": _metric(received, service="proximity", kind="Fix"),
        "events": _metric(received, service="proximity", kind="DeviceEvent"),
        "duplicate": _metric(ignored, service="proximity", reason="duplicate"),
        "out_of_order": _metric(ignored, service="proximity", reason="out_of_order"),
    }


class WireTap:
    """Subscribes to every fix and event topic and records each seq it sees, arrays unpacked."""

    def __init__(self, url: str, topics: Topics) -> None:
        self.topics = topics
        self.seqs: dict[str, list[int]] = defaultdict(list)
        self.arrays = Counter[str]()
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        endpoint = MqttEndpoint.from_url(url)
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id="wire-tap"
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.username_pw_set(endpoint.username, endpoint.password)  # the test observer
        self.client.connect(endpoint.host, endpoint.port)
        self.client.subscribe([(topics.device("+", "fix"), 1), (topics.device("+", "event"), 1)])
        self.client.loop_start()
        assert self._subscribed.wait(10)

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        device_id, kind = self.topics.parse(message.topic) or ("?", "?")
        payload = message.payload
        decoded = _wire_decoder.decode(payload) if kind == "fix" else _event_decoder.decode(payload)
        with self._lock:
            if isinstance(decoded, list):
                self.arrays[device_id] += 1
                self.seqs[device_id].extend(f.seq for f in decoded)
            else:
                self.seqs[device_id].append(decoded.seq)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _taken(before: dict[str, float], after: dict[str, float]) -> float:
    """Fixes and events proximity has taken in since `before`, duplicates included."""
    return sum(after[key] - before[key] for key in ("fixes", "events"))


@pytest.mark.integration
def test_every_seq_of_a_coverage_gap_reaches_nabij_exactly_once_in_effect(
    tmp_path: Path, mosquitto: object, redis_server: object, unique_prefix: str
) -> None:
    """The `coverage_gap` scenario (10 minutes without network, 10% duplicates): every seq the
    devices produced is on the wire (the gap's fixes inside backlog arrays), duplicates appear
    on the wire, and nabij takes each seq once: accepted = unique seqs, ignored = duplicates,
    nothing out of order, and its device state ends at the last seq."""
    mqtt_url: str = mosquitto.url  # type: ignore[attr-defined]  # fixture from tests/servers.py
    redis_url: str = redis_server.url  # type: ignore[attr-defined]  # as above
    scenario = load_scenario("coverage_gap")
    stack = checked_stack(tmp_path, scenario, mqtt_url, redis_url, unique_prefix)
    tap = WireTap(mqtt_url, Topics(stack.config.settings.mqtt.topic_prefix))
    try:
        before = _proximity_counts()
        report, result = run_checked(scenario, load_config(stack.config_dir, env={}), speed=SPEED)
        sent = sum(len(device.seqs_sent) for device in report.devices.values())
        # Duplicates at the very end raise no signal; wait until proximity has taken every
        # message the devices put on the wire (or give up and let the assertions say what's off).
        wait_until(
            lambda: (
                sum(len(seqs) for seqs in tap.seqs.values()) >= sent
                and _taken(before, _proximity_counts()) >= sum(len(s) for s in tap.seqs.values())
            ),
            what="proximity took every message on the wire",
        )
        after = _proximity_counts()
        state_blob = stack.redis.get(
            Keys(unique_prefix).proximity(Shard()).device_state("ank-sim-05")
        )
    finally:
        tap.close()
        stack.stop()
    assert result.ok, str(result)

    offender = report.devices["ank-sim-05"]
    assert offender.backlog_uploads >= 1 and tap.arrays["ank-sim-05"] == offender.backlog_uploads
    unique_total = 0
    duplicates_on_wire = 0
    for device_id, device in report.devices.items():
        seen = Counter(tap.seqs[device_id])
        assert set(seen) == set(device.seqs_sent), f"{device_id}: a seq was lost or invented"
        unique_total += len(seen)
        duplicates_on_wire += sum(seen.values()) - len(seen)
    assert duplicates_on_wire > 0  # the scenario sends 10% twice: the test must see some

    delta = {key: after[key] - before[key] for key in before}
    received = delta["fixes"] + delta["events"]
    assert delta["out_of_order"] == 0
    assert delta["duplicate"] == duplicates_on_wire
    assert received - delta["duplicate"] == unique_total
    assert state_blob is not None
    state = msgspec.msgpack.decode(state_blob, type=DeviceState)
    assert state.last_seq == max(offender.seqs_sent)

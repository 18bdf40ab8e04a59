"""Only real devices speak: a real Mosquitto on the shipped secure config, a throwaway CA.

Every test here runs the broker as `config/mosquitto/nabij.conf` configures it (password file,
ACL rendered by `nabij device init`, TLS listener with client certificates and a CRL); devices
and services are provisioned with `nabij device add` and revoked with `nabij device revoke`.
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import REGISTRY

from nabij.contract import encode
from services.shell.mqtt import MqttEndpoint, make_client
from simulators.runner import ScenarioRun, parse_scenario
from tests.integration.conftest import StackFactory
from tests.integration.stack import (
    ONE_PAIR,
    VICTIM_HOME,
    SimDevice,
    Stack,
    north_of,
    wait_until,
    write_config,
)
from tests.servers import MosquittoServer, MqttProbe, RedisServer
from tests.simulators.test_integration import SHORT

pytestmark = pytest.mark.integration

NOT_AUTHORISED = 135
STEP_MS = 10_000


class Client:
    """A paho client that keeps every CONNACK, PUBACK and message as the broker sent them."""

    def __init__(self, endpoint: MqttEndpoint, client_id: str) -> None:
        self.endpoint = endpoint
        self.client = make_client(endpoint, client_id, persistent_session=False)
        self.connacks: queue.Queue[ReasonCode] = queue.Queue()
        self.pubacks: dict[int, ReasonCode] = {}
        self.messages: list[paho.MQTTMessage] = []
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connacks.put(rc)
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self.pubacks.__setitem__(mid, rc)
        self.client.on_message = lambda _c, _u, message: self.messages.append(message)

    def connect(self) -> ReasonCode:
        self.client.connect(self.endpoint.host, self.endpoint.port)
        self.client.loop_start()
        return self.connacks.get(timeout=10)

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        """The PUBACK's reason code (MQTT 5)."""
        mid = self.client.publish(topic, payload, qos=1).mid
        wait_until(lambda: mid in self.pubacks, what=f"PUBACK for {topic}")
        return self.pubacks[mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def approach(offender: SimDevice, victim: SimDevice, start_ts: int) -> None:
    """From 1,500 m to 100 m of the victim, a fix each 10 s: a proximity alarm on the way."""
    ts = start_ts
    for distance in [1500 - 100 * i for i in range(15)]:
        victim.fix(ts, VICTIM_HOME)
        offender.fix(ts, north_of(VICTIM_HOME, distance))
        ts += STEP_MS


def alarm_opened(stack: Stack) -> None:
    stack.wait_notices(
        "probation",
        lambda ns: any(n.kind == "proximity_alarm" and n.event == "opened" for n in ns),
        "proximity alarm opened",
    )


def one_pair_stack(
    tmp_path: Path,
    mqtt_url: str,
    redis_server: RedisServer,
    prefix: str,
    *,
    mqtt_toml: str = "",
    test_url: str | None = None,
    device_url: Callable[[str], str] | None = None,
) -> Stack:
    """A stack whose services connect to `mqtt_url` with `mqtt_toml` in `[mqtt]`; the test's
    own helpers use `test_url` (default: `mqtt_url`)."""
    config_dir = write_config(
        tmp_path / "config",
        mqtt_url=mqtt_url,
        redis_url=redis_server.url,
        prefix=prefix,
        orders_toml=ONE_PAIR,
        mqtt_toml=mqtt_toml,
    )
    return Stack(config_dir, test_url or mqtt_url, redis_server.url, device_url=device_url)


def test_a_device_cannot_publish_as_another(
    make_stack: StackFactory, mosquitto: MosquittoServer
) -> None:
    """The offender's tag publishing a fix on the victim's topic gets PUBACK 135 (MQTT 5), and
    the fix reaches neither the proximity service nor any other subscriber; its own fix does."""
    stack = make_stack()
    stack.start_in_process()
    observer = MqttProbe(mosquitto.url, "observer")
    observer.connect()
    observer.subscribe(f"{stack.topics.prefix}/devices/#")
    offender = Client(MqttEndpoint.from_url(mosquitto.url_for("ank-1")), "ank-1")
    assert offender.connect() == 0
    spoof = SimDevice("vic-1", offender.client, stack.topics, stack.clock)
    ts = stack.clock()
    spoofed = encode(spoof.stored_fix(ts, north_of(VICTIM_HOME, 5000)))
    refused = offender.publish(stack.topics.device("vic-1", "fix"), spoofed)
    assert refused.value == NOT_AUTHORISED
    own = SimDevice("ank-1", offender.client, stack.topics, stack.clock)
    own.fix(ts, north_of(VICTIM_HOME, 3000))
    stack.wait_committed(own)
    assert stack.device_state("vic-1") is None
    assert observer.next_message().topic == stack.topics.device("ank-1", "fix")
    assert observer.messages.empty()
    offender.close()
    observer.disconnect()


def test_a_device_reads_only_its_own_commands(
    make_stack: StackFactory, mosquitto: MosquittoServer
) -> None:
    """The victim's device subscribing to every device's fixes and commands is granted the
    subscription (Mosquitto 2.0 checks on delivery), but through a whole approach, with commands
    to both devices, receives nothing but its own commands."""
    stack = make_stack()
    stack.start_in_process()
    snoop = Client(MqttEndpoint.from_url(mosquitto.url_for("vic-1")), "vic-1-snoop")
    assert snoop.connect() == 0
    devices = f"{stack.topics.prefix}/devices"
    snoop.client.subscribe([(f"{devices}/+/fix", 1), (f"{devices}/+/cmd", 1), ("#", 1)])
    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    approach(offender, victim, stack.clock())
    alarm_opened(stack)
    wait_until(lambda: bool(offender.commands and victim.commands), what="commands to both")
    wait_until(lambda: bool(snoop.messages), what="the snoop's own commands")
    assert {m.topic for m in snoop.messages} == {stack.topics.device("vic-1", "cmd")}
    snoop.close()


def test_no_credentials_a_wrong_password_and_a_revoked_device_are_refused(
    mosquitto: MosquittoServer,
) -> None:
    """CONNECT without credentials or with a wrong password gets 135; after `nabij device
    revoke` and the broker's reload (SIGHUP from the pid file), the device's live connection is
    dropped and it cannot connect again."""
    anonymous = Client(MqttEndpoint.from_url(mosquitto.open_url), "anonymous")
    assert anonymous.connect().value == NOT_AUTHORISED
    anonymous.close()
    good = MqttEndpoint.from_url(mosquitto.url_for("ank-1"))
    wrong = Client(good.for_device("ank-1", _secret_dir(mosquitto, "ank-1", "not-it")), "x")
    assert wrong.connect().value == NOT_AUTHORISED
    wrong.close()
    device = Client(good, "ank-1")
    assert device.connect() == 0
    mosquitto.revoke("ank-1")
    wait_until(lambda: not device.client.is_connected(), what="revoked device dropped")
    again = Client(good, "ank-1-again")
    assert again.connect().value == NOT_AUTHORISED
    again.close()
    device.close()


def _secret_dir(mosquitto: MosquittoServer, device_id: str, password: str) -> Path:
    directory = mosquitto.directory / "wrong-secrets"
    directory.mkdir(exist_ok=True)
    (directory / f"{device_id}.password").write_text(f"{password}\n", encoding="utf-8")
    return directory


def test_the_alarm_path_over_tls_with_client_certificates_and_a_revoked_certificate(
    tmp_path: Path,
    mosquitto: MosquittoServer,
    redis_server: RedisServer,
    unique_prefix: str,
) -> None:
    """The proximity service and both devices on the TLS listener, each with a certificate whose
    CN is its user name (no password): an approach opens a proximity alarm. The offender's
    certificate, revoked into the CRL and reloaded, no longer gets through the handshake."""
    service_cert, service_key = mosquitto.certificate("nabij.proximity", service=True)
    tls_toml = (
        f'ca_file = "{mosquitto.ca_cert}"\n'
        f'cert_file = "{service_cert}"\nkey_file = "{service_key}"\n'
    )
    stack = one_pair_stack(
        tmp_path, mosquitto.tls_url, redis_server, unique_prefix, mqtt_toml=tls_toml,
        test_url=mosquitto.url,
    )  # fmt: skip
    try:
        stack.start_in_process()
        tls = MqttEndpoint.from_settings(stack.config.settings.mqtt, env={})
        devices = {}
        for device_id in ("ank-1", "vic-1"):
            mosquitto.certificate(device_id)
            endpoint = tls.for_device(device_id, mosquitto.secrets_dir)
            assert endpoint.password is None and endpoint.cert_file is not None
            devices[device_id] = stack.device(device_id, endpoint)
        approach(devices["ank-1"], devices["vic-1"], stack.clock())
        alarm_opened(stack)
        mosquitto.revoke("ank-1")
        logged = len(mosquitto.log_path.read_bytes())
        revoked = Client(tls.for_device("ank-1", mosquitto.secrets_dir), "ank-1-revoked")
        with contextlib.suppress(OSError):  # the handshake's failure may surface here or later
            revoked.client.connect(revoked.endpoint.host, revoked.endpoint.port)
        revoked.client.loop_start()
        wait_until(
            lambda: b"certificate verify failed" in mosquitto.log_path.read_bytes()[logged:],
            what="the broker refusing the revoked certificate",
        )
        revoked.close()
        assert revoked.connacks.empty()
    finally:
        stack.stop()


def test_an_open_development_broker_takes_a_url_without_credentials(
    tmp_path: Path, redis_server: RedisServer, unique_prefix: str
) -> None:
    """The development path: a broker that admits anonymous clients, a URL without credentials
    for the services and the devices, and the alarm path works as before."""
    broker = MosquittoServer(tmp_path / "open-mosquitto", secure=False)
    broker.start()
    try:
        stack = one_pair_stack(tmp_path, broker.url, redis_server, unique_prefix)
        assert MqttEndpoint.from_url(broker.url).username is None
        try:
            stack.start_in_process()
            approach(stack.device("ank-1"), stack.device("vic-1"), stack.clock())
            alarm_opened(stack)
        finally:
            stack.stop()
    finally:
        broker.stop()


def test_a_command_the_broker_refuses_is_counted_logged_and_not_retried(
    tmp_path: Path,
    mosquitto: MosquittoServer,
    redis_server: RedisServer,
    unique_prefix: str,
) -> None:
    """The proximity service under an identity that may read uplinks but not write commands
    (the recorder's): each command comes back PUBACK 135, is counted with its reason, and leaves
    the outbox (resending would be refused forever) instead of passing as delivered."""
    stack = one_pair_stack(
        tmp_path, mosquitto.open_url, redis_server, unique_prefix,
        mqtt_toml=mosquitto.service_identity_toml("recorder"), test_url=mosquitto.url,
        device_url=mosquitto.url_for,
    )  # fmt: skip
    refused = {"reason": "not_authorized"}
    before = REGISTRY.get_sample_value("nabij_commands_refused_total", refused) or 0.0
    try:
        stack.start_in_process()
        offender, victim = stack.device("ank-1"), stack.device("vic-1")
        approach(offender, victim, stack.clock())
        alarm_opened(stack)
        wait_until(
            lambda: (
                (REGISTRY.get_sample_value("nabij_commands_refused_total", refused) or 0) > before
            ),
            what="refused commands counted",
        )
        ts = stack.clock()
        victim.fix(ts, VICTIM_HOME)  # one more commit trims what the broker answered
        stack.wait_committed(victim)
        wait_until(
            lambda: stack.redis.xlen(stack.shard_keys.command_outbox) == 0, what="outbox emptied"
        )
        assert offender.commands == [] and victim.commands == []
    finally:
        stack.stop()


def test_simulated_devices_connect_over_tls_each_with_its_own_certificate(
    mosquitto: MosquittoServer, unique_prefix: str
) -> None:
    """`ScenarioRun` with a credentials directory as `nabij device add --cert` writes it: every
    device connects on the TLS listener under its own certificate, and everything it sends
    arrives (which the ACL allows only under its own id)."""
    prefix = f"{unique_prefix}/v1"
    scenario = parse_scenario(SHORT)
    for spec in scenario.device:
        mosquitto.certificate(spec.id)
    observer = MqttProbe(mosquitto.url, "observer")
    observer.connect()
    observer.subscribe(f"{prefix}/devices/+/fix")
    run = ScenarioRun(
        scenario,
        mosquitto.tls_url,
        prefix,
        speed=20.0,
        credentials=mosquitto.secrets_dir,
        ca_file=mosquitto.ca_cert,
    )
    report = run.run()
    sent = sum(report.fixes_sent.values())
    topics = [observer.next_message().topic for _ in range(sent)]
    assert {t.split("/")[-2] for t in topics} == {spec.id for spec in scenario.device}
    assert all(count > 0 for count in report.fixes_sent.values())
    observer.disconnect()


def test_the_recorders_identity_reads_every_uplink_and_writes_nothing(
    mosquitto: MosquittoServer, unique_prefix: str
) -> None:
    """`nabij.recorder` (what `nabij record` connects as) receives any device's fix, and its
    attempt to command a device is refused with PUBACK 135."""
    topics = f"{unique_prefix}/v1/devices"
    mosquitto.service_identity_toml("recorder")
    recorder = Client(MqttEndpoint.from_url(mosquitto.url_for("nabij.recorder")), "recorder")
    assert recorder.connect() == 0
    recorder.client.subscribe(f"{topics}/+/fix", qos=1)
    device = MqttProbe(mosquitto.url_for("ank-1"), "ank-1")
    device.connect()

    def fix_arrives() -> bool:
        device.publish(f"{topics}/ank-1/fix", b"{}")  # again until the subscription is in place
        return bool(recorder.messages)

    wait_until(fix_arrives, what="the recorder receiving the device's fix")
    assert recorder.publish(f"{topics}/ank-1/cmd", b"{}").value == NOT_AUTHORISED
    device.disconnect()
    recorder.close()

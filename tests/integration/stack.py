"""A running nabij for integration tests: real Mosquitto, real Redis, real connections.

Services run either in this process (threads, fast) or as `nabij` subprocesses (for kill -9).
Test devices are plain paho clients publishing contract messages with the times the test chooses.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import msgspec
import paho.mqtt.client as paho
import redis

from nabij import streams
from nabij.clock import Timescale
from nabij.config import Config, load_config, with_shard
from nabij.contract import (
    Committed,
    DeviceCommand,
    DeviceEvent,
    Fix,
    Notice,
    QueueName,
    TopicKind,
    Topics,
    downlink_decoder,
    encode,
    notice_decoder,
)
from nabij.keys import Keys, Shard
from nabij.settings import REDIS_ROLES, RedisRole
from services.access.redis_acl import default_username
from services.proximity.core.state import DeviceState, device_state_decoder
from services.proximity.layout import device_state_key
from services.proximity.service import ProximityService, shard_name
from services.runner import Service, build_services
from services.shell.health import HealthServer
from services.shell.mqtt import MqttEndpoint, make_client
from services.shell.redis_io import connect

# Amsterdam Centraal; the victim stays here in most tests.
VICTIM_HOME = (52.37881, 4.90005)
METRES_PER_DEG_LAT = 111_200.0


def north_of(origin: tuple[float, float], metres: float) -> tuple[float, float]:
    """A point `metres` due north (good to well under 0.1% at these distances)."""
    return origin[0] + metres / METRES_PER_DEG_LAT, origin[1]


TEST_SPEED = 20.0
"""nabij's clock in integration tests runs this many times faster than the wall (`[clock]`), and
the test devices stamp and pace their messages on it: a 10 s fix interval takes 0.5 s."""


class TestClock(Protocol):
    """nabij's clock as a test drives it: devices `advance_to` a message's time before sending."""

    def __call__(self) -> int: ...

    def advance_to(self, t_ms: int) -> None: ...


class PacedClock:
    """The stack's scaled clock; `advance_to` waits on the wall until it reads `t_ms`."""

    def __init__(self, timescale: Timescale) -> None:
        self._timescale = timescale

    def __call__(self) -> int:
        return self._timescale.at(now_ms())

    def advance_to(self, t_ms: int) -> None:
        while (ahead_ms := t_ms - self()) > 0:
            time.sleep(self._timescale.wall_s(ahead_ms / 1000))


class ManualClock:
    """Server time the test moves by hand (epoch ms), so timeouts need no waiting."""

    def __init__(self, start_ms: int) -> None:
        self._now = start_ms
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            return self._now

    def advance(self, ms: int) -> None:
        with self._lock:
            self._now += ms

    def advance_to(self, t_ms: int) -> None:
        with self._lock:
            self._now = max(self._now, t_ms)


def write_config(
    directory: Path,
    *,
    mqtt_url: str,
    redis_url: str,
    prefix: str,
    orders_toml: str,
    extra_toml: str = "",
    mqtt_toml: str = "",
    speed: float = TEST_SPEED,
    cluster: bool = False,
) -> Path:
    """A config for a test stack, on a clock `speed` times the wall (anchored now); `mqtt_toml`
    goes into `[mqtt]` (the services' broker identity); `cluster`: `redis_url` is a node of a
    Redis Cluster (the key prefix then gets its hash tag)."""
    key_prefix = f"{{{prefix}}}" if cluster else prefix
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "nabij.toml").write_text(
        f"""
[clock]
speed = {speed}
anchor_ms = {now_ms()}

[mqtt]
url = "{mqtt_url}"
topic_prefix = "{prefix}/v1"
client_id = "{prefix}-proximity"
{mqtt_toml}

[redis]
url = "{redis_url}"
key_prefix = "{key_prefix}"
cluster = {str(cluster).lower()}
# A service killed -9 is replaced this soon (production: 5 s).
lease_ttl_s = 1

[proximity]

[log]
level = "debug"
{extra_toml}
""",
        encoding="utf-8",
    )
    (directory / "orders.toml").write_text(orders_toml, encoding="utf-8")
    return directory


def redis_users_toml(secrets_dir: Path) -> tuple[str, dict[RedisRole, str]]:
    """`[redis.users.*]` sections giving every component its own Redis user, each password in a
    file of its own under `secrets_dir`; returns the TOML and the passwords."""
    secrets_dir.mkdir(parents=True, exist_ok=True)
    passwords: dict[RedisRole, str] = {}
    sections: list[str] = []
    for role in REDIS_ROLES:
        passwords[role] = secrets.token_hex(16)
        password_file = secrets_dir / f"redis-{role}"
        password_file.write_text(passwords[role] + "\n", encoding="utf-8")
        sections.append(
            f'[redis.users.{role}]\nusername = "{default_username(role)}"\n'
            f'password_file = "{password_file}"\n'
        )
    return "\n".join(sections), passwords


ONE_PAIR = """
[[order]]
id = "ORD-T-1"
offender_device = "ank-1"
victim_devices = ["vic-1"]
alarm_m = 500
pre_alert_m = 1000
"""

# ank-1's component hashes to shard 2 of 2, ank-5's to shard 1 (services/proximity/core/shards.py).
TWO_SHARDED_PAIRS = """
[[order]]
id = "ORD-A"
offender_device = "ank-1"
victim_devices = ["vic-1"]
alarm_m = 500

[[order]]
id = "ORD-B"
offender_device = "ank-5"
victim_devices = ["vic-5"]
alarm_m = 500
"""


@dataclass
class SimDevice:
    """A device under the test's control: it publishes exactly what and when the test says."""

    device_id: str
    client: paho.Client
    topics: Topics
    clock: TestClock
    seq: int = 0
    boot: str | None = None
    skew_ms: int = 0
    """How far this device's clock is off nabij's (stamped on, never waited for)."""
    commands: list[DeviceCommand] = field(default_factory=list)
    committed: list[Committed] = field(default_factory=list)
    """nabij's confirmations of how far this device's messages are committed, in order."""

    def fix(
        self, ts: int, where: tuple[float, float], acc: float = 5.0, seq: int | None = None
    ) -> Fix:
        """Sent when nabij's clock reads `ts`, stamped `ts` plus the device's clock skew."""
        self.clock.advance_to(ts)
        self.seq = self.seq + 1 if seq is None else seq
        fix = Fix(
            self.device_id, self.seq, ts + self.skew_ms, where[0], where[1], acc, src="gnss",
            boot=self.boot,
        )  # fmt: skip
        self.publish_raw("fix", encode(fix))
        return fix

    def backlog(self, fixes: Iterable[Fix]) -> None:
        """Stored fixes sent now, as one array (their times are when they were measured)."""
        self.publish_raw("fix", msgspec.json.encode(list(fixes)))

    def stored_fix(self, ts: int, where: tuple[float, float], acc: float = 5.0) -> Fix:
        """A fix measured at `ts` while out of coverage: counted, not sent (see `backlog`)."""
        self.seq += 1
        return Fix(
            self.device_id, self.seq, ts + self.skew_ms, where[0], where[1], acc, src="gnss",
            boot=self.boot,
        )  # fmt: skip

    def event(self, ts: int, type_: str, **extra: float) -> None:
        """Sent when nabij's clock reads `ts` (a time in the past is sent at once)."""
        self.clock.advance_to(ts)
        self.seq += 1
        event = DeviceEvent(
            self.device_id, self.seq, ts + self.skew_ms, type_,  # type: ignore[arg-type]  # type_ is checked by the decoder at nabij's end
            boot=self.boot, **extra,  # type: ignore[arg-type]  # as above
        )  # fmt: skip
        self.publish_raw("event", encode(event))

    def reboot(self, boot: str | None) -> None:
        """The counter starts again, under a new boot id (None: old firmware sends none)."""
        self.boot = boot
        self.seq = -1

    def publish_raw(self, kind: TopicKind, payload: bytes, topic: str | None = None) -> None:
        info = self.client.publish(
            topic or self.topics.device(self.device_id, kind), payload, qos=1
        )
        info.wait_for_publish(timeout=10)


class Stack:
    """nabij configured for one test, with helpers to drive devices and read the queues."""

    def __init__(
        self,
        config_dir: Path,
        mqtt_url: str,
        redis_url: str,
        *,
        device_url: Callable[[str], str] | None = None,
    ) -> None:
        """`mqtt_url` is the test's own (an observer's, on a secure broker); `device_url(id)`
        the URL a device connects with, with its own credentials (default: `mqtt_url`)."""
        self.config_dir = config_dir
        self.config: Config = load_config(config_dir, env={})
        self.keys = Keys(self.config.settings.redis.key_prefix)
        self.shard_keys = self.keys.proximity(Shard())
        self.topics = Topics(self.config.settings.mqtt.topic_prefix)
        self.redis = connect(redis_url, cluster=self.config.settings.redis.cluster)
        self.mqtt_url = mqtt_url
        self._device_url = device_url or (lambda _device_id: mqtt_url)
        self._clients: list[paho.Client] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self.services: dict[str, Service] = {}
        self.clock: TestClock = PacedClock(self.config.settings.clock.timescale())
        """nabij's clock: the services run on it, the devices stamp and pace by it."""

    # --- services ---------------------------------------------------------------------------

    def start_in_process(
        self,
        *names: str,
        clock: TestClock | None = None,
        health: HealthServer | None = None,
        shards: int = 1,
    ) -> None:
        """Run the services on threads of this process, on `clock` (default: the config's, which
        the devices then pace by); `health` gets their readiness checks; `shards` proximity
        processes (threads named `proximity-KofN`) when more than one."""
        if clock is not None:
            self.clock = clock
        self._stop.clear()
        wanted = names or ("proximity", "gateway")
        unsharded = [n for n in wanted if shards == 1 or n != "proximity"]
        self.services = build_services(self.config, unsharded, health, self.clock)
        if shards > 1 and "proximity" in wanted:
            for index in range(1, shards + 1):
                config = with_shard(self.config, Shard(index, shards))
                shard = ProximityService(config, health=health, clock=self.clock)
                self.services[shard.name] = shard
        for name, service in self.services.items():
            thread = threading.Thread(
                target=service.run, args=(self._stop,), name=name, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        self.wait_ready(*self.services)

    def start_process(
        self, name: str, shard: Shard | None = None, *, wait: bool = True
    ) -> subprocess.Popen[bytes]:
        """Run a service in a process of its own (`shard`: a proximity shard, known afterwards
        by its `shard_name`, e.g. `proximity-2of2`); `wait`: until it is ready."""
        command = [sys.executable, "-m", "services.cli", name, "--config", str(self.config_dir)]
        if shard is not None:
            command += ["--shard", str(shard)]
            name = shard_name(shard)
        log_path = self.config_dir / f"{name}.log"
        process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=log_path.open("ab"),
            env={k: v for k, v in os.environ.items() if not k.startswith("NABIJ_")},
        )
        self._processes[name] = process
        if wait:
            self.wait_ready(name)
        return process

    def kill_process(self, name: str) -> None:
        process = self._processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def threads_alive(self) -> dict[str, bool]:
        """Whether each in-process service is still running (a service that raised is not)."""
        return {thread.name: thread.is_alive() for thread in self._threads}

    def processes_alive(self) -> dict[str, bool]:
        return {name: process.poll() is None for name, process in self._processes.items()}

    def wait_ready(self, *names: str) -> None:
        """Each service has written its heartbeat: subscribed to MQTT, consuming its inbox."""
        for name in names or ("proximity", "gateway"):
            self.redis.delete(self.keys.health(name))
        for name in names or ("proximity", "gateway"):
            wait_until(partial(self._healthy, name), what=f"{name} ready", detail=self.logs)

    def _healthy(self, name: str) -> bool:
        return self.redis.exists(self.keys.health(name)) == 1

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        self.stop_processes()
        for client in self._clients:
            client.loop_stop()
            client.disconnect()
        self.redis.close()

    def stop_processes(self, *names: str) -> None:
        """Stop these (default: all) service processes cleanly (SIGTERM)."""
        for name in names or list(self._processes):
            process = self._processes.pop(name)
            process.terminate()
            process.wait(timeout=10)

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.config_dir.glob("*.log"))

    # --- devices and queues -----------------------------------------------------------------

    def device_url(self, device_id: str) -> str:
        """The URL a device connects with, under its own identity."""
        return self._device_url(device_id)

    def device(self, device_id: str, endpoint: MqttEndpoint | None = None) -> SimDevice:
        """A device connected under its own identity (or `endpoint`'s), subscribed to its
        commands."""
        endpoint = endpoint or MqttEndpoint.from_url(self.device_url(device_id))
        client = make_client(
            endpoint, f"test-{device_id}-{time.monotonic_ns()}", persistent_session=False
        )
        device = SimDevice(device_id, client, self.topics, self.clock)

        def on_message(_c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
            downlink = downlink_decoder.decode(message.payload)
            if isinstance(downlink, Committed):
                device.committed.append(downlink)
            else:
                device.commands.append(downlink)

        client.on_message = on_message
        client.connect(endpoint.host, endpoint.port)
        client.loop_start()
        result, _mid = client.subscribe(self.topics.device(device_id, "cmd"), qos=1)
        assert result == paho.MQTT_ERR_SUCCESS
        self._clients.append(client)
        return device

    def notices(self, queue: QueueName) -> list[Notice]:
        return [
            notice_decoder.decode(fields[b"notice"])
            for _id, fields in streams.entries(self.redis, self.keys.dispatch(queue))
        ]

    def wait_notices(
        self, queue: QueueName, predicate: Callable[[list[Notice]], bool], what: str
    ) -> list[Notice]:
        wait_until(
            lambda: predicate(self.notices(queue)), what=what, detail=lambda: self.notices(queue)
        )
        return self.notices(queue)

    def device_state(self, device_id: str) -> DeviceState | None:
        """The device's state as the proximity service last committed it."""
        key = device_state_key(self.redis, self.keys, self.config.orders, device_id)
        [blob] = streams.values(self.redis, [key])
        return None if blob is None else device_state_decoder.decode(device_id, blob)

    def wait_committed(self, device: SimDevice) -> None:
        """Until the proximity service has committed the device's latest message."""

        def taken() -> bool:
            state = self.device_state(device.device_id)
            return state is not None and (state.boot, state.last_seq) == (device.boot, device.seq)

        wait_until(taken, what=f"{device.device_id} seq {device.seq} committed")

    def wait_applied(self, device_id: str, seq: int, *, timeout_s: float = 30.0) -> None:
        """The device's fixes and events up to `seq` are committed. (A press or tamper is no
        marker for this: it comes on the fast connection too and may overtake them.)"""

        def applied() -> bool:
            state = self.device_state(device_id)
            return state is not None and state.last_seq >= seq

        wait_until(applied, what=f"{device_id} applied up to seq {seq}", timeout_s=timeout_s)

    def deadletters(self) -> list[dict[bytes, bytes]]:
        return [fields for _id, fields in streams.entries(self.redis, self.keys.deadletter)]

    def inbox_settled(self) -> bool:
        """Every signal the proximity shards wrote has been applied by the gateway."""
        inboxes = self.redis.smembers(self.keys.signal_inboxes)
        try:
            groups = [g for inbox in inboxes for g in self.redis.xinfo_groups(inbox)]
        except redis.ResponseError:
            return False
        return bool(inboxes) and all(
            g["pending"] == 0 and g.get("lag", 0) in (0, None) for g in groups
        )


def wait_until(
    check: Callable[[], bool],
    *,
    what: str,
    timeout_s: float = 30.0,
    detail: Callable[[], object] | None = None,
) -> None:
    """Poll until `check` holds; fail with what we waited for (never a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    if check():
        return
    raise AssertionError(f"gave up waiting for {what}" + (f": {detail()!r}" if detail else ""))


def now_ms() -> int:
    return time.time_ns() // 1_000_000

"""Simulated device firmware: an ankle monitor and a victim device speaking the wire contract.

`DeviceModel` is the pure part (true route, GNSS error, sequence counter, battery) and builds
the messages. `Firmware` gives a model a link to publish through and obeys commands; with an
`MqttLink` each device is a real MQTT client, as the hardware is: client id = device id,
persistent session, QoS 1, a retained `{"online": false}` last will on its status topic and a
retained `{"online": true, "ts": ...}` on every (re)connect.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

import msgspec
import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from nabij.contract import (
    DeviceCommand,
    DeviceEvent,
    DeviceStatus,
    EventType,
    Fix,
    SetInterval,
    Topics,
    Warn,
    WarnLevel,
    command_decoder,
    encode,
)
from nabij.mqtt import ConnectionWatch, MqttEndpoint, make_client
from simulators import geo
from simulators.movement import Route, State
from simulators.noise import GnssNoise, NoiseParams, NoiseSample

log = logging.getLogger(__name__)

Post = Callable[[Callable[[], None]], None]
"""Hands work to the thread that owns the device (the scheduler); default: run it at once."""


def _run_now(work: Callable[[], None]) -> None:
    work()


class Link(Protocol):
    """Where a device's messages go: MQTT for real runs, a list in tests."""

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None: ...

    def close(self, timeout_s: float) -> None: ...


@dataclass(frozen=True, slots=True)
class ReceivedCommand:
    ts: int
    """Device time at which the device applied the command."""
    command: DeviceCommand


class DeviceModel:
    """One device's truth and its measurements of it; deterministic for a given seed."""

    def __init__(
        self,
        device_id: str,
        route: Route,
        noise: NoiseParams,
        *,
        seed: int,
        seq_base: int = 0,
        battery_pct: float = 100.0,
        battery_drain_pct_per_h: float = 0.0,
    ) -> None:
        self.device_id = device_id
        self.route = route
        self.noise = GnssNoise(noise, seed)
        # One counter for fixes and events: nabij deduplicates redeliveries on it.
        self.seq = seq_base
        self.battery_pct = battery_pct
        self.battery_drain_pct_per_h = battery_drain_pct_per_h

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq += 1
        return seq

    def battery_at(self, t_s: float) -> int:
        level = self.battery_pct - self.battery_drain_pct_per_h * t_s / 3600.0
        return max(0, min(100, round(level)))

    def measure(self, t_s: float) -> tuple[State, NoiseSample, float, float]:
        """True state, the error drawn for it, and the measured (lat, lon)."""
        truth = self.route.at(t_s)
        error = self.noise.sample(t_s)
        lat, lon = geo.offset(truth.lat, truth.lon, error.east_m, error.north_m)
        return truth, error, lat, lon

    def fix(self, t_s: float, ts_ms: int) -> Fix:
        truth, error, lat, lon = self.measure(t_s)
        moving = truth.speed_mps > 0
        return Fix(
            device_id=self.device_id,
            seq=self._next_seq(),
            ts=ts_ms,
            lat=round(lat, 7),
            lon=round(lon, 7),
            acc=round(error.acc_m, 1),
            src=self.noise.params.src,
            speed=round(truth.speed_mps, 2),
            # A receiver reports a course only while moving.
            heading=round(truth.heading_deg, 1) % 360.0
            if moving and truth.heading_deg is not None
            else None,
            batt=self.battery_at(t_s),
        )

    def event(self, event_type: EventType, t_s: float, ts_ms: int) -> DeviceEvent:
        """An event carries the position of the moment, as a panic press must."""
        _, error, lat, lon = self.measure(t_s)
        return DeviceEvent(
            device_id=self.device_id,
            seq=self._next_seq(),
            ts=ts_ms,
            type=event_type,
            lat=round(lat, 7),
            lon=round(lon, 7),
            acc=round(error.acc_m, 1),
            batt=self.battery_at(t_s),
        )


class Firmware:
    """A device: publishes fixes and events through its link and obeys nabij's commands."""

    role: ClassVar[str] = "device"
    VERB: ClassVar[str] = "shows"
    MESSAGES: ClassVar[dict[str, str]] = {
        "pre_alert": "pre-alert",
        "alarm": "alarm",
        "clear": "clear",
    }

    def __init__(
        self,
        model: DeviceModel,
        topics: Topics,
        interval_s: int,
        *,
        now_ms: Callable[[], int],
        post: Post = _run_now,
    ) -> None:
        self.model = model
        self.device_id = model.device_id
        self.topics = topics
        self.interval_s = interval_s
        self.now_ms = now_ms
        self._post = post
        self.link: Link | None = None
        self.commands: list[ReceivedCommand] = []
        self.rejected_commands: list[bytes] = []
        self.fixes_sent = 0
        self.events_sent = 0
        self.last_fix: Fix | None = None
        self.warnings: list[WarnLevel] = []
        """Warn levels received, in order."""
        self.shown: list[str] = []
        """What the device showed or told its wearer for each warning."""
        self.on_interval_change: Callable[[Firmware], None] | None = None
        self.on_command: Callable[[Firmware, DeviceCommand], None] | None = None

    # --- uplink -------------------------------------------------------------------------------

    def _link(self) -> Link:
        if self.link is None:
            raise RuntimeError(f"{self.device_id}: no link attached")
        return self.link

    def send_fix(self, t_s: float, ts_ms: int) -> Fix:
        fix = self.model.fix(t_s, ts_ms)
        self._link().publish(self.topics.device(self.device_id, "fix"), encode(fix))
        self.fixes_sent += 1
        self.last_fix = fix
        return fix

    def send_event(self, event_type: EventType, t_s: float, ts_ms: int) -> DeviceEvent:
        event = self.model.event(event_type, t_s, ts_ms)
        self._link().publish(self.topics.device(self.device_id, "event"), encode(event))
        self.events_sent += 1
        log.info("%s %s: sent %s", self.role, self.device_id, event_type)
        return event

    # --- downlink -----------------------------------------------------------------------------

    def receive(self, payload: bytes) -> None:
        """A `cmd` payload arrived (on any thread): decode here, apply on the owner's thread."""
        try:
            command = command_decoder.decode(payload)
        except msgspec.DecodeError as err:
            # Real firmware drops what it cannot parse; keep it visible for tests.
            log.warning("%s: ignoring bad command %r: %s", self.device_id, payload[:200], err)
            self.rejected_commands.append(payload)
            return
        self._post(lambda: self.apply(command))

    def apply(self, command: DeviceCommand) -> None:
        self.commands.append(ReceivedCommand(self.now_ms(), command))
        if isinstance(command, SetInterval):
            if command.seconds != self.interval_s:
                log.info(
                    "%s %s: fix interval %d s -> %d s",
                    self.role,
                    self.device_id,
                    self.interval_s,
                    command.seconds,
                )
                self.interval_s = command.seconds
                if self.on_interval_change is not None:
                    self.on_interval_change(self)
        elif isinstance(command, Warn):
            self.on_warn(command.level)
        if self.on_command is not None:
            self.on_command(self, command)

    def on_warn(self, level: WarnLevel) -> None:
        text = self.MESSAGES[level]
        self.warnings.append(level)
        self.shown.append(text)
        log.warning("%s %s %s: %s", self.role, self.device_id, self.VERB, text)


class AnkleMonitor(Firmware):
    """The offender's device: a warning is an instruction to the wearer (vibrate, beep)."""

    role: ClassVar[str] = "offender"
    VERB: ClassVar[str] = "instructs the wearer"
    MESSAGES: ClassVar[dict[str, str]] = {
        "pre_alert": "you are approaching a protected person: turn back",
        "alarm": "you are too close to a protected person: leave now, the police are informed",
        "clear": "you are outside the restricted distance again",
    }


class VictimDevice(Firmware):
    """The victim's device: shows the warning. It never learns where the offender is."""

    role: ClassVar[str] = "victim"
    VERB: ClassVar[str] = "shows"
    MESSAGES: ClassVar[dict[str, str]] = {
        "pre_alert": "the offender may be nearby: stay alert, keep your phone at hand",
        "alarm": "the offender is close: go to a safe place, help is on its way",
        "clear": "the warning has ended",
    }


FIRMWARE_BY_ROLE: dict[str, type[Firmware]] = {"offender": AnkleMonitor, "victim": VictimDevice}


class DeviceConnectError(RuntimeError):
    """A device could not connect to the broker in time."""


class MqttLink:
    """One paho client for one device, set up as the hardware would set itself up."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        firmware: Firmware,
        *,
        keepalive_s: int = 30,
        announce_offline: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.firmware = firmware
        self.announce_offline = announce_offline
        self.keepalive_s = keepalive_s
        self.watch = ConnectionWatch()
        self.last_error: str | None = None
        device_id = firmware.device_id
        self.status_topic = firmware.topics.device(device_id, "status")
        self.cmd_topic = firmware.topics.device(device_id, "cmd")
        self._pending: list[paho.MQTTMessageInfo] = []
        self._lock = threading.Lock()
        self.client = make_client(
            endpoint,
            device_id,
            persistent_session=True,
            will=(self.status_topic, encode(DeviceStatus(online=False))),
            max_inflight=100,
        )
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        """Connect in the background; paho reconnects by itself after a drop."""
        self.client.connect_async(self.endpoint.host, self.endpoint.port, self.keepalive_s)
        self.client.loop_start()

    def wait_connected(self, timeout_s: float) -> bool:
        return self.watch.wait(timeout_s)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: object,
        reason_code: ReasonCode,
        properties: object,
    ) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            return
        # The persistent session keeps the subscription, but a broker may have lost it.
        client.subscribe(self.cmd_topic, qos=1)
        online = DeviceStatus(online=True, ts=self.firmware.now_ms())
        client.publish(self.status_topic, encode(online), qos=1, retain=True)
        self.last_error = None
        self.watch.mark(True)

    def _on_connect_fail(self, client: paho.Client, userdata: object) -> None:
        self.last_error = "cannot reach the broker"

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: object,
        reason_code: ReasonCode,
        properties: object,
    ) -> None:
        self.watch.mark(False)

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        # A persistent session can still hold commands for the same device id under another
        # topic prefix (an earlier run); they are not for us.
        if message.topic != self.cmd_topic:
            log.info("%s: ignoring message on %s", self.firmware.device_id, message.topic)
            return
        self.firmware.receive(bytes(message.payload))

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        # While disconnected paho keeps QoS 1 messages and sends them on reconnect, like a
        # device buffering its fixes.
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self._lock:
            self._pending = [p for p in self._pending if not p.is_published()]
            self._pending.append(info)

    def close(self, timeout_s: float) -> None:
        """Flush what is in flight, say goodbye (retained offline status) and disconnect."""
        deadline = time.monotonic() + timeout_s
        if self.announce_offline and self.watch.connected:
            offline = DeviceStatus(online=False, ts=self.firmware.now_ms())
            self.publish(self.status_topic, encode(offline), retain=True)
        with self._lock:
            pending = list(self._pending)
        for info in pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if not info.is_published():
                try:
                    info.wait_for_publish(remaining)
                except (RuntimeError, ValueError):
                    break  # not connected any more: nothing more will be flushed
        self.client.disconnect()
        self.client.loop_stop()

"""How a device reaches the broker: one paho client per device, set up as the hardware does it.

Client id = device id, persistent session (commands queued while away reach the device), QoS 1,
a retained `{"online": false}` last will, a retained `{"online": true, "ts": ...}` on every
(re)connect. paho reconnects by itself after a drop, with exponential backoff (1 s doubling
to 30 s, `services.shell.mqtt.make_client`), and resends unacknowledged QoS 1 messages with the
DUP flag.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import TYPE_CHECKING, Protocol

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from nabij.contract import DeviceStatus, encode
from nabij.failures import NabijError
from services.shell.mqtt import ConnectionWatch, MqttEndpoint, make_client

if TYPE_CHECKING:
    from simulators.firmware import Firmware


class Link(Protocol):
    """Where a device's messages go: MQTT for real runs, a list in tests."""

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None: ...

    @property
    def connected(self) -> bool:
        """Whether a publish goes out now (not into the client's offline queue)."""

    def drop(self) -> None:
        """Lose the connection without a goodbye (the broker publishes the last will)."""

    def resume(self) -> None:
        """Connect again after `drop`."""

    def close(self, timeout_s: float) -> None: ...


class DeviceConnectError(NabijError, RuntimeError):
    """A device could not connect to the broker in time."""


class MqttLink:
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
        self.connects = 0
        device_id = firmware.device_id
        self.status_topic = firmware.topics.device(device_id, "status")
        self.cmd_topic = firmware.topics.device(device_id, "cmd")
        self._pending: list[paho.MQTTMessageInfo] = []
        self._lock = threading.Lock()
        self._stopper: threading.Thread | None = None
        self._closed = False
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
        self.connects += 1
        # Ahead of paho's own re-sends of unacknowledged publishes, and before the firmware sees
        # the link up (a new fix must not overtake them), so nabij gets them in order.
        self.firmware.resend_unconfirmed()
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
            return
        self.firmware.receive(bytes(message.payload))

    @property
    def connected(self) -> bool:
        return self.watch.connected

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        # While disconnected paho keeps QoS 1 messages and sends them on reconnect.
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self._lock:
            self._pending = [p for p in self._pending if not _settled(p)]
            self._pending.append(info)

    def drop(self) -> None:
        """Cut the TCP connection without DISCONNECT, as a device losing its radio does.

        The broker sees the socket close and publishes the will at once (a real broker would
        after 1.5 keepalives; under time acceleration "at once" is the closer match). Stopping
        paho's loop takes up to a second, so it happens off the scheduler thread."""
        self.watch.mark(False)
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._stopper = threading.Thread(target=self.client.loop_stop, daemon=True)
        self._stopper.start()

    def resume(self) -> None:
        """Reconnect after `drop`: the first attempt at once, then paho's backoff."""
        if self._stopper is not None:
            self._stopper.join(timeout=5.0)
            self._stopper = None
        self.client.connect_async(self.endpoint.host, self.endpoint.port, self.keepalive_s)
        self.client.loop_start()

    def close(self, timeout_s: float) -> None:
        """Flush what is in flight, say goodbye (retained offline status) and disconnect."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout_s
        if self.announce_offline and self.watch.connected:
            offline = DeviceStatus(online=False, ts=self.firmware.now_ms())
            self.publish(self.status_topic, encode(offline), retain=True)
        with self._lock:
            pending = list(self._pending)
        for info in pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.watch.connected:
                break
            if not _settled(info):
                try:
                    info.wait_for_publish(remaining)
                except (RuntimeError, ValueError):
                    break  # not connected any more: nothing more will be flushed
        if self._stopper is not None:
            self._stopper.join(timeout=5.0)
        self.client.disconnect()
        self.client.loop_stop()


def _settled(info: paho.MQTTMessageInfo) -> bool:
    """Acknowledged, or untrackable: paho raises for messages queued while disconnected
    (they still go out on reconnect, but their info never reports it)."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return True

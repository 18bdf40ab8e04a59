"""A publish-only MQTT 3.1.1 connection that sends many messages in one write.

Why not paho: paho spends ~40 us of Python per QoS 1 publish (packet object, in-flight
bookkeeping, a PUBACK callback), so 20,000 fixes/s would take the whole core the generator may
use. Here a publish is a few bytes concatenated onto a buffer; a batch of hundreds goes out in one
`sendall`, and PUBACKs are counted, not tracked one by one (a load generator has no use for
per-message delivery reports). It speaks only what it needs: CONNECT/CONNACK, PUBLISH (QoS 0 or
1), PUBACK, PINGREQ/PINGRESP, DISCONNECT.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from typing import Final

from nabij.failures import NabijError
from services.shell import mqtt_packets
from services.shell.mqtt import MqttEndpoint
from services.shell.mqtt_ingest import MqttConnectionError, handshake

CONNECT_TIMEOUT_S: Final = 10.0


class WireError(NabijError, RuntimeError):
    """The broker refused or dropped the connection."""


class PublishConnection:
    def __init__(self, endpoint: MqttEndpoint, client_id: str, *, qos: int, keepalive_s: int = 60):
        if endpoint.tls:
            raise WireError("fleet mode speaks plain MQTT only (no TLS)")
        self.qos = qos
        self.keepalive_s = keepalive_s
        self.sent = 0
        self.acked = 0
        self._packet_id = 0
        self._inbox = b""
        self._last_write = time.monotonic()
        self.sock = socket.create_connection((endpoint.host, endpoint.port), CONNECT_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._connect(client_id, endpoint)
        self.sock.setblocking(False)

    def _connect(self, client_id: str, endpoint: MqttEndpoint) -> None:
        # Clean session: a load generator keeps nothing at the broker.
        try:
            handshake(
                self.sock, client_id, endpoint, clean_session=True, keepalive_s=self.keepalive_s
            )
        except MqttConnectionError as err:
            raise WireError(str(err)) from err

    def packet(self, topic: bytes, payload: bytes) -> bytes:
        """One PUBLISH packet; `topic` already length-prefixed (see `topic_field`)."""
        if self.qos:
            self._packet_id = self._packet_id % 65535 + 1
        return mqtt_packets.publish(topic, payload, qos=self.qos, packet_id=self._packet_id)

    def send(self, packets: Iterable[bytes], count: int) -> None:
        """Write a batch (blocking until the kernel took it all) and count PUBACKs."""
        data = b"".join(packets)
        self.sock.setblocking(True)
        try:
            self.sock.sendall(data)
        finally:
            self.sock.setblocking(False)
        self.sent += count
        self._last_write = time.monotonic()
        self.poll()

    def poll(self) -> None:
        """Read whatever the broker sent (PUBACKs, PINGRESP); ping when idle for a while."""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                break
            if not chunk:
                raise WireError("broker closed the connection")
            self._inbox += chunk
        self._parse()
        if time.monotonic() - self._last_write > self.keepalive_s / 2:
            self.sock.setblocking(True)
            self.sock.sendall(b"\xc0\x00")
            self.sock.setblocking(False)
            self._last_write = time.monotonic()

    def _parse(self) -> None:
        data, pos = self._inbox, 0
        while len(data) - pos >= 2:
            kind = data[pos] >> 4
            length = data[pos + 1]  # PUBACK and PINGRESP are short: one length byte
            if len(data) - pos < 2 + length:
                break
            if kind == mqtt_packets.PUBACK:
                self.acked += 1
            pos += 2 + length
        self._inbox = data[pos:]

    @property
    def unacked(self) -> int:
        return self.sent - self.acked if self.qos else 0

    def drain(self, timeout_s: float) -> None:
        """Wait for outstanding PUBACKs (QoS 1), up to `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while self.unacked and time.monotonic() < deadline:
            time.sleep(0.01)
            self.poll()

    def close(self) -> None:
        try:
            self.sock.setblocking(True)
            self.sock.sendall(b"\xe0\x00")
        except OSError:
            pass
        self.sock.close()


def topic_field(topic: str) -> bytes:
    """A topic as it goes into a PUBLISH packet (length-prefixed UTF-8)."""
    return mqtt_packets.utf8(topic)

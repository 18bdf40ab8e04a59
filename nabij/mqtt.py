"""MQTT plumbing shared by services and simulators: URL parsing and paho client construction.

paho-mqtt runs its own network loop thread (`loop_start`): it carries ~18k QoS 1 messages/s in
(~9k/s with a PUBACK each) against ~14k for aiomqtt. Callers hand messages to their own thread
through a queue and never touch shared state from paho's thread. The proximity service reads its
device traffic with `nabij.mqtt_ingest` instead (it must keep up with the broker under a flood)
and publishes with paho.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from nabij.failures import NabijError

DEFAULT_PORT = 1883


class MqttUrlError(NabijError, ValueError):
    """The MQTT URL cannot be used."""


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> MqttEndpoint:
        """`mqtt://[user:pass@]host[:port]` or `mqtts://...` (TLS)."""
        parts = urlsplit(url)
        if parts.scheme not in {"mqtt", "mqtts", "tcp", "ssl"}:
            raise MqttUrlError(f"unsupported MQTT URL scheme {parts.scheme!r} in {url!r}")
        if not parts.hostname:
            raise MqttUrlError(f"no host in MQTT URL {url!r}")
        tls = parts.scheme in {"mqtts", "ssl"}
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else DEFAULT_PORT),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )


def make_client(
    endpoint: MqttEndpoint,
    client_id: str,
    *,
    persistent_session: bool,
    manual_ack: bool = False,
    will: tuple[str, bytes] | None = None,
    max_inflight: int = 1000,
) -> paho.Client:
    """A configured, not yet connected, paho client.

    `persistent_session` keeps subscriptions and queued QoS 1 messages at the broker while the
    client is away; `manual_ack` delays the PUBACK until the caller calls `client.ack(mid, qos)`,
    which is how a service acknowledges only what it has durably processed.
    """
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=not persistent_session,
        protocol=paho.MQTTv311,
        manual_ack=manual_ack,
    )
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    if endpoint.tls:
        client.tls_set()
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    client.max_inflight_messages_set(max_inflight)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


class ConnectionWatch:
    """Tracks whether a client is connected, for readiness probes; set from paho's callbacks."""

    def __init__(self) -> None:
        self._connected = threading.Event()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def mark(self, connected: bool) -> None:
        if connected:
            self._connected.set()
        else:
            self._connected.clear()

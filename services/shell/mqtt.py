"""MQTT plumbing shared by services and simulators: URL parsing and paho client construction.

paho-mqtt runs its own network loop thread (`loop_start`): it carries ~18k QoS 1 messages/s in
(~9k/s with a PUBACK each) against ~14k for aiomqtt. Callers hand messages to their own thread
through a queue and never touch shared state from paho's thread. The proximity service reads its
device traffic with `services.shell.mqtt_ingest` instead (it must keep up with the broker under a
flood) and publishes with paho.

paho clients speak MQTT 5: a publish the broker's ACL denies comes back as a PUBACK with reason
code 135 (not authorised) instead of being acknowledged as if delivered (3.1.1 cannot say no).

Credentials: a username and password from the URL (development), or from `[mqtt] username` and
`password_file` / `NABIJ_MQTT_PASSWORD`; TLS with `ca_file` and a client certificate
(`cert_file`, `key_file`). Secrets are read here, when the connection is made, so they never sit
in the settings object that `nabij config` prints.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from nabij.failures import NabijError

if TYPE_CHECKING:
    from nabij.settings import MqttSettings

DEFAULT_PORT = 1883
MQTT311_QUERY = "protocol=3.1.1"
"""`mqtt://host:port?protocol=3.1.1`: a broker that cannot speak MQTT 5 (the embedded demo
broker); a denied publish is then acknowledged as if delivered."""
PASSWORD_ENV = "NABIJ_MQTT_PASSWORD"
SESSION_EXPIRY_S = 7 * 24 * 3600
"""How long the broker keeps a persistent session (subscriptions, queued QoS 1 messages) of a
client that is away: MQTT 5 ends a session at disconnect unless it is given an expiry."""


class MqttUrlError(NabijError, ValueError):
    """The MQTT URL cannot be used."""


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line or traceback
    tls: bool = False
    mqtt5: bool = True
    ca_file: Path | None = None
    """Trusted CA for the broker's certificate (None: the system's)."""
    cert_file: Path | None = None
    key_file: Path | None = None
    """Client certificate and key: on a `use_identity_as_username` listener the certificate's
    CN is the username."""

    @classmethod
    def from_url(cls, url: str) -> MqttEndpoint:
        """`mqtt://[user:pass@]host[:port][?protocol=3.1.1]` or `mqtts://...` (TLS)."""
        parts = urlsplit(url)
        if parts.scheme not in {"mqtt", "mqtts", "tcp", "ssl"}:
            raise MqttUrlError(f"unsupported MQTT URL scheme {parts.scheme!r} in {url!r}")
        if parts.query not in {"", MQTT311_QUERY}:
            raise MqttUrlError(f"unsupported MQTT URL query {parts.query!r} in {url!r}")
        if not parts.hostname:
            raise MqttUrlError(f"no host in MQTT URL {url!r}")
        tls = parts.scheme in {"mqtts", "ssl"}
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else DEFAULT_PORT),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            mqtt5=parts.query != MQTT311_QUERY,
        )

    @classmethod
    def from_settings(
        cls, mqtt: MqttSettings, env: Mapping[str, str] | None = None
    ) -> MqttEndpoint:
        """The URL's endpoint with the configured identity and TLS files on top.

        The password comes from `NABIJ_MQTT_PASSWORD`, else from `password_file` (its first line),
        else from the URL. TLS files need an `mqtts://` URL: a certificate must never be
        configured for a connection that would then go out in clear text."""
        endpoint = cls.from_url(mqtt.url)
        tls_files = (mqtt.ca_file, mqtt.cert_file, mqtt.key_file)
        if not endpoint.tls and any(path is not None for path in tls_files):
            raise MqttUrlError(
                f"[mqtt] ca_file, cert_file and key_file need an mqtts:// URL, not {mqtt.url!r}"
            )
        password = (os.environ if env is None else env).get(PASSWORD_ENV)
        if password is None and mqtt.password_file is not None:
            password = read_secret(mqtt.password_file)
        return replace(
            endpoint,
            username=mqtt.username or endpoint.username,
            password=endpoint.password if password is None else password,
            ca_file=mqtt.ca_file,
            cert_file=mqtt.cert_file,
            key_file=mqtt.key_file,
        )

    def for_device(self, device_id: str, credentials: Path) -> MqttEndpoint:
        """This endpoint under a device's own identity, from a directory as `nabij device add
        --secrets DIR` writes it: `ID.password`, and on TLS `ID.crt` + `ID.key` if issued."""
        certificate = credentials / f"{device_id}.crt"
        if self.tls and certificate.exists():
            return replace(self, cert_file=certificate, key_file=credentials / f"{device_id}.key")
        return replace(
            self, username=device_id, password=read_secret(credentials / f"{device_id}.password")
        )

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the broker against `ca_file` (or the system's CAs) and its host name."""
        context = ssl.create_default_context(
            cafile=None if self.ca_file is None else str(self.ca_file)
        )
        if self.cert_file is not None:
            context.load_cert_chain(
                self.cert_file, None if self.key_file is None else str(self.key_file)
            )
        return context


def read_secret(path: Path) -> str:
    """The first line of a secret file, as `nabij device add` writes it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise MqttUrlError(f"cannot read MQTT password file {path}: {err.strerror}") from err
    if not lines or not lines[0]:
        raise MqttUrlError(f"MQTT password file {path} is empty")
    return lines[0]


class _Client(paho.Client):
    """paho's client with this connection's MQTT 5 session rules on every connect (`mqtt5`
    False: MQTT 3.1.1, for a broker that cannot speak 5).

    A persistent session is never cleaned (not even on the first connect: a restarted service
    must find what the broker queued while it was away) and outlives a disconnect by
    `SESSION_EXPIRY_S`; any other session starts clean and ends with the connection."""

    # Any: paho's own keyword arguments, passed through.
    def __init__(self, *, persistent_session: bool, mqtt5: bool, **kwargs: Any) -> None:
        if mqtt5:
            super().__init__(protocol=paho.MQTTv5, **kwargs)
        else:  # 3.1.1 has no session expiry: the clean-session flag decides
            super().__init__(protocol=paho.MQTTv311, clean_session=not persistent_session, **kwargs)
        self._persistent = persistent_session
        self._mqtt5 = mqtt5

    def connect_async(  # noqa: PLR0917  # paho's signature: connect() passes these by position
        self,
        host: str,
        port: int = DEFAULT_PORT,
        keepalive: int = 60,
        bind_address: str = "",
        bind_port: int = 0,
        clean_start: paho.CleanStartOption = paho.MQTT_CLEAN_START_FIRST_ONLY,
        properties: Properties | None = None,
    ) -> None:
        if self._mqtt5 and clean_start == paho.MQTT_CLEAN_START_FIRST_ONLY:  # left to us
            clean_start = not self._persistent
            if self._persistent and properties is None:
                properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it unannotated
                properties.SessionExpiryInterval = SESSION_EXPIRY_S
        super().connect_async(
            host, port, keepalive, bind_address, bind_port, clean_start, properties
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
    client = _Client(
        persistent_session=persistent_session,
        mqtt5=endpoint.mqtt5,
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        manual_ack=manual_ack,
    )
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    if endpoint.tls:
        client.tls_set_context(endpoint.ssl_context())
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

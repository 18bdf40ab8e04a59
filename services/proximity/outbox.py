"""Device commands, from the commit that caused them until the broker has acknowledged them.

A command (`set_interval`, `warn`) is committed to the outbox stream in the same `MULTI` as the
state that caused it, published after the commit, and removed from the stream only once the
broker acknowledged it (QoS 1 PUBACK, reported by paho's `on_publish` on its own thread). A
command published while MQTT is down waits in paho's queue and in the stream; a crash before its
PUBACK leaves it in the stream, and `resend` publishes it at the next start (at least once: a
repeated command is harmless, it sets an interval or a warning level).

Removal is a trim queued in the next commit: `XTRIM MAXLEN <entries not yet acknowledged>`. The
stream is oldest first and this service is its only writer, so the outbox knows its length; it
trims only the acknowledged prefix (a PUBACK out of order waits for the older ones).
`MQTTMessageInfo.is_published()` cannot say this: it raises for a message published while
disconnected, although paho sends that one on reconnection.

A command the broker refuses (MQTT 5 PUBACK with a reason code >= 0x80, e.g. 135 when the ACL
does not let this service write the device's `cmd` topic) is logged, counted in
`nabij_commands_refused_total` and leaves the outbox like an acknowledged one: resending it would
be refused the same way, forever.
"""

from __future__ import annotations

import threading
from collections import deque

import paho.mqtt.client as paho
import redis
import structlog
from paho.mqtt.reasoncodes import ReasonCode
from redis.client import Pipeline

from nabij import streams
from nabij.contract import DeviceCommand, Topics, encode
from services.shell import metrics

log = structlog.get_logger(service="proximity")


class CommandOutbox:
    def __init__(self, client: paho.Client, topics: Topics, key: str) -> None:
        """Takes over `client.on_publish` to learn which commands the broker acknowledged."""
        self._client = client
        self._topics = topics
        self._key = key
        # Message ids of the stream's entries, oldest first: one per entry, always.
        self._unconfirmed: deque[int] = deque()
        self._acked: set[int] = set()
        self._devices: dict[int, str] = {}
        """The device of each command not yet acknowledged, to say whose command was refused."""
        self._lock = threading.Lock()
        self._trimming = 0
        client.on_publish = self._on_publish

    def resend(self, client: redis.Redis) -> None:
        """Publish what a previous run committed but saw no PUBACK for (call once, at start)."""
        for _id, fields in streams.entries(client, self._key):
            self._send(fields[b"device"].decode(), fields[b"command"])

    def queue(self, pipe: Pipeline, commands: list[tuple[str, DeviceCommand]]) -> None:
        """In the commit's transaction: drop the acknowledged entries, append these commands."""
        self._trimming = self._acknowledged_prefix()
        if self._trimming:
            pipe.xtrim(self._key, maxlen=len(self._unconfirmed) - self._trimming)
        for device_id, command in commands:
            pipe.xadd(self._key, {"device": device_id, "command": encode(command)})

    def committed(self) -> None:
        """The transaction `queue` wrote into has landed: forget what it trimmed."""
        with self._lock:
            for _ in range(self._trimming):
                self._acked.discard(self._unconfirmed.popleft())
        self._trimming = 0

    def publish(self, commands: list[tuple[str, DeviceCommand]]) -> None:
        """Publish committed commands (QoS 1; paho queues them while disconnected)."""
        for device_id, command in commands:
            self._send(device_id, encode(command))
            metrics.COMMANDS_SENT.labels(type=type(command).__name__).inc()

    def unconfirmed(self) -> int:
        """Commands in the stream that the broker has not acknowledged yet."""
        return len(self._unconfirmed) - self._acknowledged_prefix()

    def _send(self, device_id: str, payload: bytes) -> None:
        info = self._client.publish(self._topics.device(device_id, "cmd"), payload, qos=1)
        with self._lock:
            self._unconfirmed.append(info.mid)
            self._devices[info.mid] = device_id

    def _acknowledged_prefix(self) -> int:
        with self._lock:
            done = 0
            for mid in self._unconfirmed:
                if mid not in self._acked:
                    break
                done += 1
            return done

    def _on_publish(
        self, _client: paho.Client, _u: object, mid: int, reason: ReasonCode, _p: object
    ) -> None:
        with self._lock:
            self._acked.add(mid)
            device_id = self._devices.pop(mid, None)
        if reason.is_failure:
            label = reason.getName().lower().replace(" ", "_")
            metrics.COMMANDS_REFUSED.labels(reason=label).inc()
            log.error("command_refused", device_id=device_id, reason=label, code=reason.value)

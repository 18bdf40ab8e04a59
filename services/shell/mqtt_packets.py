"""The MQTT 3.1.1 packets nabij's lean clients speak: encoders, and a reader for a byte stream.

Pure: bytes in, packets out. `services.shell.mqtt_ingest` (the services' subscriber) and
`simulators.fleet.wire` (the load generator's publisher) build their packets here, so the wire
format is written once.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from nabij.failures import NabijError

CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
PUBREC: Final = 5
PUBREL: Final = 6
PUBCOMP: Final = 7
SUBSCRIBE: Final = 8
SUBACK: Final = 9
PINGREQ: Final = 12
PINGRESP: Final = 13
DISCONNECT: Final = 14

PINGREQ_PACKET: Final = b"\xc0\x00"
DISCONNECT_PACKET: Final = b"\xe0\x00"
SUBACK_FAILURE: Final = 0x80
_MAX_LENGTH_BYTES: Final = 4


class MqttProtocolError(NabijError):
    """The peer sent bytes that are not MQTT 3.1.1 as this client speaks it."""


def remaining_length(n: int) -> bytes:
    """The variable-length 'remaining length' field of a fixed header."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(text: str) -> bytes:
    """A length-prefixed UTF-8 string."""
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def connect(
    client_id: str,
    *,
    clean_session: bool,
    keepalive_s: int,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    flags = 0x02 if clean_session else 0x00
    payload = utf8(client_id)
    if username:
        flags |= 0x80
        payload += utf8(username)
        if password is not None:
            flags |= 0x40
            payload += utf8(password)
    body = utf8("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive_s) + payload
    return b"\x10" + remaining_length(len(body)) + body


def subscribe(packet_id: int, filters: Sequence[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(utf8(f) + bytes([qos]) for f, qos in filters)
    return b"\x82" + remaining_length(len(body)) + body


def unsubscribe(packet_id: int, filters: Sequence[str]) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(utf8(f) for f in filters)
    return b"\xa2" + remaining_length(len(body)) + body


def publish(topic: bytes, payload: bytes, *, qos: int, packet_id: int = 0) -> bytes:
    """One PUBLISH; `topic` already length-prefixed (`utf8(topic)`), so a sender reuses it."""
    if qos == 0:
        return b"\x30" + remaining_length(len(topic) + len(payload)) + topic + payload
    header = 0x32 if qos == 1 else 0x34
    return (
        bytes([header])
        + remaining_length(len(topic) + 2 + len(payload))
        + topic
        + struct.pack("!H", packet_id)
        + payload
    )


def acks(received: Iterable[tuple[int, int]]) -> bytes:
    """The acknowledgements of received (packet id, qos) pairs, in one buffer: PUBACK for QoS 1,
    PUBREC for QoS 2 (QoS 0 needs none)."""
    out = bytearray()
    for mid, qos in received:
        if qos == 1:
            out += b"\x40\x02" + mid.to_bytes(2, "big")
        elif qos == 2:
            out += b"\x50\x02" + mid.to_bytes(2, "big")
    return bytes(out)


def pubcomp(mid: int) -> bytes:
    return b"\x70\x02" + mid.to_bytes(2, "big")


# Not frozen: a frozen dataclass's __init__ sets each field through `object.__setattr__`, ~6x
# the cost, and one Publish is made per message (docs/benchmarks.md, the profile).
@dataclass(slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    mid: int
    """Packet id; 0 for QoS 0."""


@dataclass(frozen=True, slots=True)
class Control:
    """Any packet other than PUBLISH: its type and its body after the fixed header."""

    kind: int
    body: bytes


class PacketReader:
    """Cuts a byte stream into packets; a packet split across reads waits for its tail."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Publish | Control]:
        buffer = self._buffer + data if self._buffer else data
        packets: list[Publish | Control] = []
        pos, end = 0, len(buffer)
        while end - pos >= 2:
            header = buffer[pos]
            length, multiplier, i = 0, 1, pos + 1
            while True:
                if i >= end:
                    length = -1
                    break
                byte = buffer[i]
                length += (byte & 0x7F) * multiplier
                i += 1
                if not byte & 0x80:
                    break
                if i - pos > _MAX_LENGTH_BYTES:
                    raise MqttProtocolError("remaining length longer than 4 bytes")
                multiplier *= 128
            if length < 0 or i + length > end:
                break
            kind = header >> 4
            if kind == PUBLISH:
                packets.append(_publish(header, buffer, i, i + length))
            else:
                packets.append(Control(kind, buffer[i : i + length]))
            pos = i + length
        self._buffer = buffer[pos:]
        return packets


def _publish(header: int, buffer: bytes, start: int, end: int) -> Publish:
    qos = (header >> 1) & 0x03
    if qos == 3 or end - start < 2:
        raise MqttProtocolError("malformed PUBLISH")
    topic_end = start + 2 + ((buffer[start] << 8) | buffer[start + 1])
    if topic_end + (2 if qos else 0) > end:
        raise MqttProtocolError("PUBLISH topic runs past the packet")
    topic = buffer[start + 2 : topic_end].decode("utf-8", errors="replace")
    if qos:
        mid = (buffer[topic_end] << 8) | buffer[topic_end + 1]
        return Publish(topic, buffer[topic_end + 2 : end], qos, mid)
    return Publish(topic, buffer[topic_end:end], 0, 0)

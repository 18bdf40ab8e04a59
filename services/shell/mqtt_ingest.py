"""A lean MQTT 3.1.1 subscriber for a service's ingest: persistent session, acks after commit.

Why not paho here: paho reads one packet per `select` with several `recv` calls and builds a
message object and a callback per packet; measured on this 2-core machine it takes ~18k QoS 1
messages/s (~9k/s with a PUBACK each), while Mosquitto pushes ~30k/s to one subscriber. Under a
flood the broker's queue for the service then grows, and a press behind it waits for the reader
(58 s in the incident). This reader takes 256 KB per `recv`, cuts the packets in one loop, hands
a whole read to the sink at once and writes PUBACKs in batches: it keeps up with the broker, so
what decides the order of processing is the sink, not the TCP stream.

One thread per connection owns the socket (reads, writes, keepalive, reconnect with backoff).
Other threads only queue acknowledgements (`ack`) and wake it. It speaks what ingest needs:
CONNECT (clean session off), SUBSCRIBE, UNSUBSCRIBE, PUBLISH in at QoS 0/1/2, PUBACK/PUBREC
out when the caller says, PINGREQ, DISCONNECT, and QoS 1 PUBLISH out of its markers.

Catch-up marker: after subscribing, the subscriber publishes a token to a topic of its own that it
also subscribes to. The broker queues it behind everything it held for this session, so when the
token comes back, the backlog of the time away has been read: from then on the traffic is live.
(`caught_up`; without the marker topic, or if the broker's ACL drops it, it stays False.) The
same token on demand is a barrier (`barrier`, `passed`): once it is back, every message the
broker queued for this session before it was published has been handed to the sink (a shard
handing devices over waits for that: docs/architecture.md, "Live hand-over").

Refusals are loud (logged as errors, counted in `nabij_mqtt_refused_total`, readiness false): a
CONNACK that refuses the credentials, a SUBACK failure, and a marker that has not come back within
`marker_timeout_s`. The last one matters most: Mosquitto 2.0's acl_file grants every SUBSCRIBE
and silently withholds the messages the ACL does not let this user read, so a reader under the
wrong identity would be deaf; its marker, under the same ACL section as its subscriptions, never
returns, and `subscribed` drops to False until it does.

Why MQTT 3.1.1 still: this client only subscribes; what MQTT 5 would add (reason codes on a
denied publish) concerns its one publish, the marker, whose non-arrival it detects as above.
The services' publishes (device commands) go through paho on MQTT 5.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import structlog

from nabij.contract import TopicFilters
from nabij.failures import NabijError
from services.shell import metrics
from services.shell import mqtt_packets as packets
from services.shell.mqtt import MqttEndpoint
from services.shell.mqtt_packets import Control, MqttProtocolError, Publish

READ_SIZE: Final = 256 * 1024
CONNECT_TIMEOUT_S: Final = 10.0
SEND_TIMEOUT_S: Final = 30.0
MIN_BACKOFF_S: Final = 1.0
MAX_BACKOFF_S: Final = 30.0
WAIT_SLICE_S: Final = 0.1
"""How long a full sink is waited on before the acks and keepalive are seen to again."""
MARKER_TIMEOUT_S: Final = 300.0
"""A marker not back by then: not a long backlog any more, but an ACL that drops our messages."""
FILTERS_PER_PACKET: Final = 10_000
"""Filters a SUBSCRIBE or UNSUBSCRIBE carries at most, so that their topics are made a packet at a
time: a shard's bulk reader of 100,000 pairs built its one 21 MB SUBSCRIBE with a peak of 119 MB
of heap, in packets of this size 5 MB."""
_MARKER_ID: Final = 2
_FIRST_ID: Final = 3
"""The packet ids of subscriptions and barriers cycle from here."""

log = structlog.get_logger(__name__)


class MqttConnectionError(NabijError):
    """The broker refused, dropped or stopped answering the connection."""


class MqttRefusedError(MqttConnectionError):
    """The broker said no (credentials, subscription): retrying alone will not fix it."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(slots=True)
class Delivery:
    """What a sink did with a read: `rest` has no room yet (offer again), `ack_now` is done with
    (refused or not wanted: acknowledged at once)."""

    rest: list[Publish] = field(default_factory=list)
    ack_now: list[Publish] = field(default_factory=list)


class Sink(Protocol):
    def deliver(
        self, connection: int, messages: list[Publish], caught_up: bool, timeout_s: float
    ) -> Delivery:
        """Take the messages of one read, in order; may wait up to `timeout_s` for room."""
        ...


class Subscriber:
    """One MQTT connection that reads subscriptions into a `Sink` until `stop()`."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        client_id: str,
        subscriptions: TopicFilters | Sequence[str],
        sink: Sink,
        *,
        keepalive_s: int,
        connection_ids: Iterator[int],
        marker_topic: str | None = None,
        marker_timeout_s: float = MARKER_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._endpoint = endpoint
        self.client_id = client_id
        # Replaced, never changed: the I/O thread builds a reconnect's SUBSCRIBE from one.
        self._filters = (
            subscriptions
            if isinstance(subscriptions, TopicFilters)
            else TopicFilters(tuple(subscriptions))
        )
        self._marker_topic = marker_topic
        self._marker_timeout_s = marker_timeout_s
        self._sink = sink
        self._keepalive_s = keepalive_s
        self._ids = connection_ids
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: deque[tuple[int, list[tuple[int, int]]]] = deque()
        self._outgoing: deque[bytes] = deque()
        """QoS 0 PUBLISH packets to send on whichever connection is up (`publish`)."""
        # Names subscribed or unsubscribed while connected, still to send; and sent SUBSCRIBEs
        # not answered yet: packet id -> (its filters, the `subscribe` call its SUBACK confirms
        # up to, None if a later packet's does).
        self._filters_lock = threading.Lock()
        self._added: list[str] = []
        self._removed: list[str] = []
        self._unanswered: dict[int, tuple[TopicFilters, int | None]] = {}
        self._asked = self._confirmed = 0
        # Barriers: asked (by number), still to send (token, number), and passed up to.
        self._barriers_asked = self._barriers_passed = 0
        self._barriers_unsent: list[tuple[bytes, int]] = []
        self._barriers_sent: dict[bytes, int] = {}
        self._next_id = _FIRST_ID
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._log = log.bind(client_id=client_id)
        # Written by the I/O thread only; read by anyone.
        self.connection = 0
        """Id of the live connection (unique across this process's subscribers); 0 when down."""
        self.subscribed = False
        self.caught_up = False
        self.session_present = False
        """The broker kept this client's session (and so its subscriptions) from before."""

    # --- any thread ----------------------------------------------------------------------------

    def start(self) -> None:
        name = f"mqtt-{self.client_id}"
        # In the starter's context, so its lines carry the starting service's name.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name=name, daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Disconnect cleanly (unacknowledged messages stay with the broker) and end the thread."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._wake_r.close()
        self._wake_w.close()

    def subscribe(self, names: Collection[str]) -> int:
        """Add the subscriptions of `names` (topics, or what the `TopicFilters` it was given are
        made of: a shard's device ids): sent on the live connection now and with every later
        one. A refusal is as loud as one at connect (`MqttRefusedError`: logged, counted,
        reconnect). Returns the number `confirmed` takes: the broker has them from its SUBACK on."""
        with self._filters_lock:
            if names:
                self._asked += 1
                self._filters = self._filters.adding(names)
                self._added.extend(names)
            asked = self._asked
        self._wake()
        return asked

    @property
    def names(self) -> tuple[str, ...]:
        """What its subscriptions are made of now (a shard's device ids), `subscribe`d and not
        `unsubscribe`d: the owner asks it instead of keeping its own copy."""
        return self._filters.names

    def confirmed(self, asked: int) -> bool:
        """The broker acknowledged the subscriptions of `subscribe` call `asked` (SUBACK)."""
        return self._confirmed >= asked

    def unsubscribe(self, names: Collection[str]) -> None:
        """Drop the subscriptions of `names` (as `subscribe`'s): UNSUBSCRIBE on the live
        connection (or the next one: the persistent session keeps them until then), and never
        subscribed again."""
        if names:
            gone = set(names)
            with self._filters_lock:
                self._filters = self._filters.removing(gone)
                self._added = [name for name in self._added if name not in gone]
                self._removed.extend(names)
            self._wake()

    def barrier(self) -> int:
        """Publish a fresh token to the marker topic; `passed` tells when it is back (needs the
        marker topic). Returns its number."""
        with self._filters_lock:
            self._barriers_asked += 1
            self._barriers_unsent.append((os.urandom(8).hex().encode(), self._barriers_asked))
            asked = self._barriers_asked
        self._wake()
        return asked

    def passed(self, barrier: int) -> bool:
        """Everything queued for this session before `barrier` was published has been handed
        to the sink (its token came back, or a later connection caught up)."""
        return self._barriers_passed >= barrier

    def ack(self, connection: int, received: list[tuple[int, int]]) -> None:
        """Acknowledge (packet id, qos) pairs received on `connection`; dropped if that
        connection is gone (the broker redelivers them on the next one)."""
        if received:
            self._pending.append((connection, received))
            self._wake()

    def publish(self, data: bytes) -> None:
        """Send QoS 0 PUBLISH packets (`mqtt_packets.publish`, joined) on the live connection,
        in one write with the acknowledgements pending then. Dropped when the connection goes
        down first, as QoS 0 may be: what a service confirms this way, its next confirmation
        says again (the proximity service's confirmations to devices)."""
        if data:
            self._outgoing.append(data)
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    # --- I/O thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = MIN_BACKOFF_S
        while not self._stop.is_set():
            sock: socket.socket | None = None
            try:
                sock = self._open()
                backoff = MIN_BACKOFF_S
                self._serve(sock)
            except MqttRefusedError as err:
                self._refused(err.reason, str(err), retry_in_s=backoff)
            except (OSError, MqttConnectionError, MqttProtocolError) as err:
                self._log.warning("mqtt_connection_lost", error=str(err), retry_in_s=backoff)
            except Exception:  # a bug in a sink must not end ingest silently: log, reconnect
                self._log.exception("mqtt_reader_failed", retry_in_s=backoff)
            finally:
                metrics.MQTT_CONNECTED.labels(client=self.client_id).set(0)
                self.connection = 0
                self.subscribed = self.session_present = False
                self.caught_up = False
                self._pending.clear()
                if sock is not None:
                    sock.close()
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _open(self) -> socket.socket:
        endpoint = self._endpoint
        sock = socket.create_connection((endpoint.host, endpoint.port), CONNECT_TIMEOUT_S)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if endpoint.tls:
                sock = endpoint.ssl_context().wrap_socket(sock, server_hostname=endpoint.host)
            self.session_present = handshake(
                sock, self.client_id, endpoint, clean_session=False, keepalive_s=self._keepalive_s
            )
        except BaseException:
            sock.close()
            raise
        sock.settimeout(SEND_TIMEOUT_S)
        return sock

    def _serve(self, sock: socket.socket) -> None:
        connection = next(self._ids)
        self.connection = connection
        self._pending.clear()  # acks of an earlier connection are void
        self._outgoing.clear()  # and so are QoS 0 messages that found no connection
        token = os.urandom(8).hex().encode()
        with self._filters_lock:  # everything added so far goes in the first SUBSCRIBEs
            self._added.clear()
            filters, asked = self._filters, self._asked
            # This connection's catch-up marker is a barrier behind every one asked so far.
            self._barriers_unsent.clear()
            self._barriers_sent.clear()
            barriers_before = self._barriers_asked
        link = _Link(sock, self._clock)
        self._subscribe_all(link, filters, asked, token)
        self._log.info("mqtt_connected", connection=connection)
        metrics.MQTT_CONNECTIONS.labels(client=self.client_id).inc()
        metrics.MQTT_CONNECTED.labels(client=self.client_id).set(1)
        reader = packets.PacketReader()
        selector = selectors.DefaultSelector()
        selector.register(sock, selectors.EVENT_READ)
        selector.register(self._wake_r, selectors.EVENT_READ)
        connected_at = self._clock()
        reported = False
        try:
            while not self._stop.is_set():
                selector.select(timeout=0 if link.buffered else 1.0)
                self._flush_acks(link, connection)
                self._flush_subscriptions(link)
                data = link.read()
                if data:
                    publishes = self._controls(link, reader.feed(data))
                    self._deliver_read(link, connection, publishes, token, barriers_before)
                link.keepalive(self._keepalive_s)
                waited_s = self._clock() - connected_at
                overdue = self._marker_topic is not None and waited_s > self._marker_timeout_s
                if overdue and not (self.caught_up or reported):
                    reported = True
                    self.subscribed = False
                    self._refused(
                        "marker_missing",
                        f"catch-up marker on {self._marker_topic} not back after {waited_s:.0f} s:"
                        " the broker withholds this client's messages (ACL, identity), or a"
                        " backlog that large is still being read",
                    )
            with contextlib.suppress(OSError):
                self._flush_acks(link, connection)
                link.send(packets.DISCONNECT_PACKET)
        finally:
            selector.close()

    def _subscribe_all(self, link: _Link, filters: TopicFilters, asked: int, token: bytes) -> None:
        """A connection's first packets: SUBSCRIBE to every filter in force (and the marker
        topic), then the catch-up marker behind them."""
        self._unanswered.clear()
        if self._marker_topic is None:
            link.send_each(self._subscribe_packets([filters], asked))
            return
        marker = TopicFilters((self._marker_topic,))
        link.send_each(self._subscribe_packets([filters, marker], asked))
        topic = packets.utf8(self._marker_topic)
        link.send(packets.publish(topic, token, qos=1, packet_id=_MARKER_ID))

    def _controls(self, link: _Link, received: list[Publish | Control]) -> list[Publish]:
        publishes = []
        for packet in received:
            if isinstance(packet, Publish):
                publishes.append(packet)
            elif packet.kind == packets.SUBACK:
                self._on_suback(packet.body)
            elif packet.kind == packets.PUBREL:  # QoS 2, second half: the message is ours
                link.send(packets.pubcomp(int.from_bytes(packet.body[:2], "big")))
        return publishes

    def _refused(self, reason: str, detail: str, **extra: float) -> None:
        metrics.MQTT_REFUSED.labels(client=self.client_id, reason=reason).inc()
        self._log.error("mqtt_refused", reason=reason, detail=detail, **extra)

    def _flush_subscriptions(self, link: _Link) -> None:
        """Send what `subscribe`, `unsubscribe` and `barrier` asked for since the last time."""
        with self._filters_lock:
            added, self._added = self._added, []
            removed, self._removed = self._removed, []
            barriers, self._barriers_unsent = self._barriers_unsent, []
            filters, asked = self._filters, self._asked
        if added:
            link.send_each(self._subscribe_packets([filters.of(added)], asked))
        if removed:
            link.send_each(
                packets.unsubscribe(self._packet_id(), list(part))
                for part in filters.of(removed).parts(FILTERS_PER_PACKET)
            )
        if barriers and self._marker_topic is not None:
            topic = packets.utf8(self._marker_topic)
            out = []
            for token, number in barriers:
                self._barriers_sent[token] = number
                out.append(packets.publish(topic, token, qos=1, packet_id=self._packet_id()))
            link.send(b"".join(out))

    def _subscribe_packets(self, asked: Iterable[TopicFilters], upto: int) -> Iterator[bytes]:
        """SUBSCRIBE packets of `FILTERS_PER_PACKET` filters at most, each made as it is sent
        (its topics gone with it); the last one's SUBACK confirms `subscribe` call `upto`."""
        parts = [part for filters in asked for part in filters.parts(FILTERS_PER_PACKET)]
        for number, part in enumerate(parts, start=1):
            packet_id = self._packet_id()
            self._unanswered[packet_id] = (part, upto if number == len(parts) else None)
            yield packets.subscribe(packet_id, [(topic, 1) for topic in part])

    def _packet_id(self) -> int:
        packet_id = self._next_id
        self._next_id = _FIRST_ID + (packet_id - _FIRST_ID + 1) % 60_000
        return packet_id

    def _on_suback(self, body: bytes) -> None:
        asked, upto = self._unanswered.pop(int.from_bytes(body[:2], "big"), (TopicFilters(()), 0))
        codes = body[2:]
        failed = [
            topic for topic, c in zip(asked, codes, strict=False) if c >= packets.SUBACK_FAILURE
        ]
        if failed:
            raise MqttRefusedError("subscription_refused", f"broker refused subscriptions {failed}")
        if upto is not None:
            self.subscribed = True
            self._confirmed = max(self._confirmed, upto)

    def _deliver_read(
        self,
        link: _Link,
        connection: int,
        publishes: list[Publish],
        token: bytes,
        barriers_before: int,
    ) -> None:
        """Deliver a read; what came before this connection's marker is still backlog, and
        what came before a barrier's token has been delivered once it is back."""
        start = 0
        for index, message in enumerate(publishes):
            if message.topic != self._marker_topic:
                continue
            self._deliver(link, connection, publishes[start:index])
            start = index + 1
            link.send(packets.acks([(message.mid, message.qos)]))
            if message.payload == token and not self.caught_up:
                self.caught_up = self.subscribed = True
                self._barriers_passed = max(self._barriers_passed, barriers_before)
                self._log.info("mqtt_caught_up", connection=connection)
            elif (number := self._barriers_sent.pop(message.payload, None)) is not None:
                self._barriers_passed = max(self._barriers_passed, number)
        self._deliver(link, connection, publishes[start:])

    def _deliver(self, link: _Link, connection: int, messages: list[Publish]) -> None:
        """Hand a read to the sink; while it has no room, keep acking and pinging (the socket is
        not read meanwhile, so the broker holds the rest: backpressure)."""
        while messages and not self._stop.is_set():
            delivery = self._sink.deliver(connection, messages, self.caught_up, WAIT_SLICE_S)
            if delivery.ack_now:
                link.send(packets.acks((m.mid, m.qos) for m in delivery.ack_now))
            messages = delivery.rest
            if messages:
                self._flush_acks(link, connection)
                link.keepalive(self._keepalive_s, reading=False)

    def _flush_acks(self, link: _Link, connection: int) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        batches = []
        while self._pending:
            batch_connection, received = self._pending.popleft()
            if batch_connection == connection:
                batches.append(packets.acks(received))
        while self._outgoing:
            batches.append(self._outgoing.popleft())
        if batches:
            link.send(b"".join(batches))


def handshake(
    sock: socket.socket,
    client_id: str,
    endpoint: MqttEndpoint,
    *,
    clean_session: bool,
    keepalive_s: int,
) -> bool:
    """CONNECT on a fresh socket and wait for a CONNACK that accepts it; whether the broker
    kept a session for this client id (CONNACK's session-present flag)."""
    sock.sendall(
        packets.connect(
            client_id,
            clean_session=clean_session,
            keepalive_s=keepalive_s,
            username=endpoint.username,
            password=endpoint.password,
        )
    )
    reply = b""
    while len(reply) < 4:
        chunk = sock.recv(4 - len(reply))
        if not chunk:
            raise MqttConnectionError("broker closed the connection during CONNECT")
        reply += chunk
    if reply[0] >> 4 != packets.CONNACK:
        raise MqttConnectionError(f"broker answered CONNECT with packet type {reply[0] >> 4}")
    if reply[3] != 0:
        meaning = _CONNACK_REFUSALS.get(reply[3], "unknown reason")
        raise MqttRefusedError(
            "connect_refused", f"broker refused the connection: {meaning} (CONNACK {reply[3]})"
        )
    return bool(reply[2] & 1)


_CONNACK_REFUSALS: Final = {
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class _Link:
    """The socket of one connection, with the time of its last write and unanswered ping."""

    def __init__(self, sock: socket.socket, clock: Callable[[], float]) -> None:
        self._sock = sock
        self._clock = clock
        self._last_write = clock()
        self._ping_sent: float | None = None

    def send(self, data: bytes) -> None:
        if data:
            self._sock.sendall(data)
            self._last_write = self._clock()

    def send_each(self, each: Iterable[bytes]) -> None:
        """Send packets as they are made: never all of them in memory at once."""
        for packet in each:
            self.send(packet)

    def read(self) -> bytes:
        """What the socket has now, one read's worth (b"" if nothing); raises when the broker
        closed it."""
        self._sock.setblocking(False)
        try:
            chunk = self._sock.recv(READ_SIZE)
        except (BlockingIOError, ssl.SSLWantReadError):
            return b""
        finally:
            self._sock.settimeout(SEND_TIMEOUT_S)
        if not chunk:
            raise MqttConnectionError("broker closed the connection")
        self._ping_sent = None
        return chunk

    @property
    def buffered(self) -> bool:
        """TLS: decrypted bytes wait in the socket object, where `select` does not see them."""
        return isinstance(self._sock, ssl.SSLSocket) and self._sock.pending() > 0

    def keepalive(self, keepalive_s: int, *, reading: bool = True) -> None:
        """Ping when nothing was written for half the keepalive; give up on a broker that has
        not answered a ping within the keepalive (only judged while reading)."""
        now = self._clock()
        if reading and self._ping_sent is not None and now - self._ping_sent > keepalive_s:
            raise MqttConnectionError(f"no answer from the broker for {keepalive_s} s")
        if now - self._last_write >= keepalive_s / 2:
            self._sock.sendall(packets.PINGREQ_PACKET)
            self._last_write = now
            if reading and self._ping_sent is None:
                self._ping_sent = now

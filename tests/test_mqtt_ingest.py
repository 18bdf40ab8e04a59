"""The ingest subscriber and its packet reader: what it reads, acknowledges and gets again."""

from __future__ import annotations

import contextlib
import gc
import itertools
import socket
import threading
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from nabij.contract import Topics
from services.shell import mqtt_ingest
from services.shell import mqtt_packets as packets
from services.shell.mqtt import MqttEndpoint
from services.shell.mqtt_ingest import Delivery, Subscriber
from services.shell.mqtt_packets import Control, MqttProtocolError, PacketReader, Publish
from tests.integration.stack import wait_until
from tests.servers import MosquittoServer, MqttProbe


def test_the_reader_cuts_packets_however_the_stream_is_split() -> None:
    """QoS 0 and 1 publishes (one with a 3-byte remaining length) and control packets come out
    whole and in order, fed at once or byte by byte."""
    big = bytes(range(256)) * 80
    stream = (
        packets.publish(packets.utf8("a/b"), b"zero", qos=0)
        + packets.publish(packets.utf8("a/c"), big, qos=1, packet_id=513)
        + b"\xd0\x00"  # PINGRESP
        + b"\x90\x03\x00\x01\x01"  # SUBACK
        + packets.publish(packets.utf8("a/d"), b"", qos=1, packet_id=7)
    )
    expected = [
        Publish("a/b", b"zero", 0, 0),
        Publish("a/c", big, 1, 513),
        Control(packets.PINGRESP, b""),
        Control(packets.SUBACK, b"\x00\x01\x01"),
        Publish("a/d", b"", 1, 7),
    ]
    assert PacketReader().feed(stream) == expected
    reader = PacketReader()
    assert [p for i in range(len(stream)) for p in reader.feed(stream[i : i + 1])] == expected


def test_broken_packets_are_protocol_errors() -> None:
    """A remaining length over four bytes, or a topic longer than its packet, is refused."""
    with pytest.raises(MqttProtocolError):
        PacketReader().feed(b"\x30\xff\xff\xff\xff\x01")
    with pytest.raises(MqttProtocolError):
        PacketReader().feed(b"\x32\x04\x00\x09ab")


def test_acks_are_puback_for_qos1_pubrec_for_qos2_and_nothing_for_qos0() -> None:
    """One buffer acknowledges a whole batch."""
    assert packets.acks([(1, 1), (2, 0), (258, 2)]) == b"\x40\x02\x00\x01\x50\x02\x01\x02"


class Recorder:
    """A sink that keeps everything and notes whether the backlog had been read by then."""

    def __init__(self) -> None:
        self.got: list[tuple[int, Publish, bool]] = []
        self.lock = threading.Lock()

    def deliver(
        self, connection: int, messages: list[Publish], caught_up: bool, timeout_s: float
    ) -> Delivery:
        with self.lock:
            self.got.extend((connection, m, caught_up) for m in messages)
        return Delivery()


@contextlib.contextmanager
def caught_up_reader(
    tmp_path: Path, client_id: str, filters: list[str]
) -> Iterator[tuple[Callable[[], Subscriber], Subscriber, MqttProbe, Recorder]]:
    """On a broker of its own: a factory of `client_id`'s subscribers (persistent session, its
    catch-up marker, one `Recorder`), the first of them started and caught up, and a connected
    device; and that recorder."""
    broker = MosquittoServer(tmp_path / "mosquitto")
    broker.start()
    try:
        endpoint, ids, sink = MqttEndpoint.from_url(broker.url), itertools.count(1), Recorder()

        def subscriber() -> Subscriber:
            return Subscriber(
                endpoint, client_id, filters, sink, keepalive_s=10, connection_ids=ids,
                marker_topic=f"t/service/{client_id}/caught-up",
            )  # fmt: skip

        reader = subscriber()
        reader.start()
        wait_until(lambda: reader.caught_up, what="caught up")
        device = MqttProbe(broker.url, "device")
        device.connect()
        yield subscriber, reader, device, sink
    finally:
        broker.stop()


@pytest.mark.integration
def test_a_persistent_session_gets_its_backlog_before_the_marker_and_unacked_messages_again(
    tmp_path: Path,
) -> None:
    """Messages published while the subscriber was away arrive before its catch-up marker;
    those it acknowledged are gone after a reconnect, the others come again (new packet ids),
    and the marker is never handed to the sink."""
    broker = MosquittoServer(tmp_path / "mosquitto")
    broker.start()
    try:
        endpoint, ids = MqttEndpoint.from_url(broker.url), itertools.count(1)

        def subscriber(sink: Recorder) -> Subscriber:
            return Subscriber(
                endpoint,
                "ingest-test",
                ["t/+/fix"],
                sink,
                keepalive_s=10,
                connection_ids=ids,
                marker_topic="t/service/ingest-test/caught-up",
            )

        first = subscriber(Recorder())
        first.start()
        wait_until(lambda: first.caught_up, what="first connection caught up")
        first.stop()
        device = MqttProbe(broker.url, "device")
        device.connect()
        for n in range(50):
            device.publish(f"t/dev-{n % 5}/fix", str(n).encode())
        sink = Recorder()
        second = subscriber(sink)
        second.start()
        wait_until(lambda: second.caught_up and len(sink.got) >= 50, what="backlog read")
        assert [int(m.payload) for _c, m, _u in sink.got] == list(range(50))
        assert not any(caught_up for _c, _m, caught_up in sink.got)
        connection = second.connection
        second.ack(connection, [(m.mid, m.qos) for _c, m, _u in sink.got[:30]])
        second.stop()
        again = Recorder()
        third = subscriber(again)
        third.start()
        wait_until(lambda: third.caught_up, what="third connection caught up")
        third.stop()
        device.disconnect()
        assert [int(m.payload) for _c, m, _u in again.got] == list(range(30, 50))
        assert {c for c, _m, _u in again.got} == {third.connection or 3}
    finally:
        broker.stop()


def test_names_are_what_the_subscriptions_are_made_of_after_subscribe_and_unsubscribe() -> None:
    """A shard asks its bulk reader which devices it hears (it keeps no copy of its own)."""
    reader = Subscriber(
        MqttEndpoint("localhost", 1883),
        "names-test",
        Topics("t").subscriptions(["vic-2", "ank-1"]),
        Recorder(),
        keepalive_s=10,
        connection_ids=itertools.count(1),
    )
    try:
        assert reader.names == ("ank-1", "vic-2")
        reader.subscribe(["ank-3"])
        reader.unsubscribe(["ank-1"])
        assert reader.names == ("vic-2", "ank-3")
    finally:
        reader.stop()


@pytest.mark.integration
def test_added_subscriptions_are_confirmed_a_barrier_follows_the_backlog_and_unsubscribed_go(
    tmp_path: Path,
) -> None:
    """What a shard handing devices over relies on: `subscribe` is confirmed once the broker
    has it; a barrier is back only after everything published before it was delivered; after
    `unsubscribe` the broker sends nothing more of those topics."""
    broker = MosquittoServer(tmp_path / "mosquitto")
    broker.start()
    sink = Recorder()
    reader = Subscriber(
        MqttEndpoint.from_url(broker.url),
        "handover-test",
        ["t/a/fix"],
        sink,
        keepalive_s=10,
        connection_ids=itertools.count(1),
        marker_topic="t/service/handover-test/caught-up",
    )
    device = MqttProbe(broker.url, "device")
    try:
        reader.start()
        wait_until(lambda: reader.caught_up, what="caught up")
        asked = reader.subscribe(["t/b/fix"])
        wait_until(lambda: reader.confirmed(asked), what="subscription confirmed")
        device.connect()
        for n in range(200):
            device.publish(f"t/{'ab'[n % 2]}/fix", str(n).encode())
        barrier = reader.barrier()
        wait_until(lambda: reader.passed(barrier), what="barrier back")
        with sink.lock:
            assert [int(m.payload) for _c, m, _u in sink.got] == list(range(200))
        reader.unsubscribe(["t/b/fix"])
        after = reader.barrier()
        wait_until(lambda: reader.passed(after), what="second barrier back")
        device.publish("t/b/fix", b"gone")
        device.publish("t/a/fix", b"kept")
        wait_until(lambda: sink.got[-1][1].payload == b"kept", what="the kept topic's message")
        assert b"gone" not in [m.payload for _c, m, _u in sink.got]
    finally:
        device.disconnect()
        reader.stop()
        broker.stop()


def _refusals(client_id: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "nabij_mqtt_refused_total", {"client": client_id, "reason": reason}
    )
    return value or 0.0


@pytest.mark.integration
@pytest.mark.parametrize("password", [None, "wrong"])
def test_refused_credentials_keep_the_reader_unsubscribed_logged_and_counted(
    tmp_path: Path, password: str | None
) -> None:
    """Against the shipped secure config, a reader without credentials or with a wrong password
    is refused at CONNECT: never subscribed (readiness false), an error logged and counted, and
    it keeps retrying (credentials may be fixed by a broker reload)."""
    broker = MosquittoServer(tmp_path / "mosquitto")
    broker.start()
    client_id = f"refused-{password}"
    before = _refusals(client_id, "connect_refused")
    endpoint = MqttEndpoint.from_url(broker.open_url)
    if password is not None:
        endpoint = replace(endpoint, username="nabij.proximity", password=password)
    reader = Subscriber(
        endpoint, client_id, ["t/+/fix"], Recorder(), keepalive_s=10,
        connection_ids=itertools.count(1),
    )  # fmt: skip
    try:
        with capture_logs() as logs:
            reader.start()
            wait_until(
                lambda: _refusals(client_id, "connect_refused") > before, what="refusal counted"
            )
        assert not reader.subscribed
        refused = [entry for entry in logs if entry["event"] == "mqtt_refused"]
        assert refused and refused[0]["log_level"] == "error"
        assert "not authorised" in refused[0]["detail"]
    finally:
        reader.stop()
        broker.stop()


@pytest.mark.integration
def test_a_reader_the_acl_withholds_everything_from_is_not_ready_and_says_so(
    tmp_path: Path,
) -> None:
    """Mosquitto 2.0's acl_file grants every SUBSCRIBE and silently withholds what the user may
    not read: a reader connected under a device's identity (no right to others' fixes nor to
    the service's marker topic) gets SUBACK success, but its marker never comes back, so it
    turns unready, logs an error and counts `marker_missing`, and receives nothing."""
    broker = MosquittoServer(tmp_path / "mosquitto")
    broker.start()
    prefix = "acl/v1"
    client_id = "deaf-reader"
    recorder = Recorder()
    endpoint = MqttEndpoint.from_url(broker.url_for("ank-9"))
    reader = Subscriber(
        endpoint, client_id, [f"{prefix}/devices/+/fix"], recorder, keepalive_s=10,
        connection_ids=itertools.count(1), marker_topic=f"{prefix}/service/{client_id}/caught-up",
        marker_timeout_s=1.0,
    )  # fmt: skip
    before = _refusals(client_id, "marker_missing")
    try:
        reader.start()
        wait_until(lambda: reader.connection != 0, what="connected")
        device = MqttProbe(broker.url_for("ank-1"), "ank-1")
        device.connect()
        device.publish(f"{prefix}/devices/ank-1/fix", b"{}")
        wait_until(lambda: _refusals(client_id, "marker_missing") > before, what="marker missing")
        assert not reader.subscribed and not reader.caught_up
        assert recorder.got == []
        device.disconnect()
    finally:
        reader.stop()
        broker.stop()


def test_a_suback_failure_is_refused_loudly_and_never_ready() -> None:
    """Brokers that check subscriptions (unlike Mosquitto 2.0's acl_file, e.g. its dynamic
    security plugin) answer SUBACK 0x80: the reader does not call itself subscribed, logs an
    error, counts `subscription_refused` and reconnects. The broker here is a scripted socket:
    no Mosquitto configuration refuses a SUBSCRIBE with the ACL nabij ships."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def refuse_every_subscription() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(1024)  # CONNECT
                    conn.sendall(b"\x20\x02\x00\x00")
                    subscribe = conn.recv(1024)
                    packet_id = subscribe[2:4]
                    conn.sendall(b"\x90\x03" + packet_id + b"\x80")
                    conn.recv(1024)  # until the reader hangs up

    threading.Thread(target=refuse_every_subscription, daemon=True).start()
    client_id = "suback-refused"
    before = _refusals(client_id, "subscription_refused")
    reader = Subscriber(
        MqttEndpoint.from_url(f"mqtt://127.0.0.1:{port}"), client_id, ["t/+/fix"], Recorder(),
        keepalive_s=10, connection_ids=itertools.count(1),
    )  # fmt: skip
    try:
        with capture_logs() as logs:
            reader.start()
            wait_until(
                lambda: _refusals(client_id, "subscription_refused") > before,
                what="refused subscription counted",
            )
        assert not reader.subscribed
        refused = [e for e in logs if e["event"] == "mqtt_refused"]
        assert refused[0]["log_level"] == "error" and "t/+/fix" in refused[0]["detail"]
    finally:
        reader.stop()
        listener.close()


@pytest.mark.integration
def test_subscriptions_added_while_connected_are_heard_now_and_after_a_reconnect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard that takes over a device subscribes to it on the live connection: that device's
    messages arrive from then on, on this connection and (the session kept) on the next one,
    which subscribes with a packet a filter; nothing of a device it never subscribed to
    arrives."""
    monkeypatch.setattr(mqtt_ingest, "FILTERS_PER_PACKET", 1)
    with caught_up_reader(tmp_path, "shard-test", ["t/a/fix"]) as (
        subscriber,
        reader,
        device,
        sink,
    ):
        reader.subscribe(["t/b/fix"])
        wait_until(
            lambda: (
                device.publish("t/b/fix", b"b0"),
                any(m.payload == b"b0" for _c, m, _u in sink.got),
            )[1],
            what="the added subscription heard",
        )
        reader.stop()
        for topic, payload in [("t/a/fix", b"a1"), ("t/b/fix", b"b1"), ("t/c/fix", b"c1")]:
            device.publish(topic, payload)
        again = subscriber()
        again.start()
        wait_until(lambda: again.caught_up, what="caught up again")
        again.stop()
        device.disconnect()
        payloads = [m.payload for _c, m, _u in sink.got]
        assert {b"a1", b"b1"} <= set(payloads)
        assert b"c1" not in payloads


@pytest.mark.integration
def test_qos0_publishes_go_out_with_the_acks_on_the_live_connection(tmp_path: Path) -> None:
    """What a service confirms to devices (`publish`) reaches them, in order, from the reader's
    own connection, and the acknowledgements written with it hold: nothing is delivered again."""
    with caught_up_reader(tmp_path, "confirm-test", ["t/+/fix"]) as (
        subscriber,
        reader,
        device,
        sink,
    ):
        device.subscribe("t/+/cmd")
        for n in range(3):
            device.publish(f"t/dev-{n}/fix", str(n).encode())
        wait_until(lambda: len(sink.got) == 3, what="fixes read")
        confirmations = [(f"t/dev-{n}/cmd", f"committed {n}".encode()) for n in range(3)]
        reader.publish(
            b"".join(packets.publish(packets.utf8(t), p, qos=0) for t, p in confirmations)
        )
        reader.ack(reader.connection, [(m.mid, m.qos) for _c, m, _u in sink.got])
        got = [device.next_message() for _ in confirmations]
        assert [(m.topic, m.payload) for m in got] == confirmations
        reader.stop()
        again = subscriber()
        again.start()
        wait_until(lambda: again.caught_up, what="caught up again")
        again.stop()
        device.disconnect()
        assert [m.payload for _c, m, _u in sink.got] == [b"0", b"1", b"2"]


class ScriptedBroker:
    """A broker on a socket that notes each connection's SUBSCRIBE and UNSUBSCRIBE filters,
    grants them all and sends every QoS 1 message (the markers) back. A connection waits for its
    CONNACK until `admit`; `drop` closes the current one."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"mqtt://127.0.0.1:{self._listener.getsockname()[1]}"
        self.packets: list[tuple[int, str, list[str]]] = []
        """(connection, "subscribe" or "unsubscribe", its filters), in the order received."""
        self._admitted = threading.Semaphore(0)
        self._dropped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def admit(self) -> None:
        self._admitted.release()

    def drop(self) -> None:
        self._dropped.set()

    def filters(self, connection: int, kind: str) -> list[list[str]]:
        return [f for c, k, f in list(self.packets) if (c, k) == (connection, kind)]

    def close(self) -> None:
        self._listener.close()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            for connection in itertools.count(1):
                conn, _ = self._listener.accept()
                with conn:
                    self._admitted.acquire()
                    self._dropped.clear()
                    self._converse(conn, connection)

    def _converse(self, conn: socket.socket, connection: int) -> None:
        conn.settimeout(0.05)
        reader, echoed = packets.PacketReader(), itertools.count(1)
        while not self._dropped.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            for packet in reader.feed(data):
                if isinstance(packet, Publish):  # a marker: acknowledged, and back to its sender
                    conn.sendall(packets.acks([(packet.mid, 1)]))
                    topic = packets.utf8(packet.topic)
                    conn.sendall(
                        packets.publish(topic, packet.payload, qos=1, packet_id=next(echoed))
                    )
                elif packet.kind == packets.CONNECT:
                    conn.sendall(b"\x20\x02\x00\x00")
                elif packet.kind in (packets.SUBSCRIBE, 10):  # 10: UNSUBSCRIBE
                    subscribe = packet.kind == packets.SUBSCRIBE
                    filters = _filters(packet.body[2:], with_qos=subscribe)
                    kind = "subscribe" if subscribe else "unsubscribe"
                    self.packets.append((connection, kind, filters))
                    if subscribe:
                        body = packet.body[:2] + b"\x01" * len(filters)
                        conn.sendall(b"\x90" + packets.remaining_length(len(body)) + body)
                    else:
                        conn.sendall(b"\xb0\x02" + packet.body[:2])
                elif packet.kind == packets.PINGREQ:
                    conn.sendall(b"\xd0\x00")


def _filters(data: bytes, *, with_qos: bool) -> list[str]:
    filters, pos = [], 0
    while pos < len(data):
        end = pos + 2 + int.from_bytes(data[pos : pos + 2], "big")
        filters.append(data[pos + 2 : end].decode())
        pos = end + with_qos
    return filters


def test_every_reconnect_subscribes_to_exactly_the_filters_in_force(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A shard's reader subscribes to its devices' topics in packets of a bounded size; while
    connected it sends exactly what is added or removed; a reconnect subscribes to exactly the
    filters in force then, each once (what changed while it was away included, and nothing
    gone), and unsubscribes from what went while it was away (the session still had it)."""
    monkeypatch.setattr(mqtt_ingest, "FILTERS_PER_PACKET", 4)  # 3 filters a device: 1 a packet
    topics = Topics("t")
    broker = ScriptedBroker()
    reader = Subscriber(
        MqttEndpoint.from_url(broker.url), "filters-test", topics.subscriptions({"a", "b"}),
        Recorder(), keepalive_s=10, connection_ids=itertools.count(1),
        marker_topic="t/service/filters-test/caught-up",
    )  # fmt: skip
    marker = ["t/service/filters-test/caught-up"]

    def uplinks(*devices: str) -> list[str]:
        return list(topics.subscriptions(devices))

    def subscribed(connection: int) -> Counter[str]:
        return Counter(t for f in broker.filters(connection, "subscribe") for t in f)

    try:
        broker.admit()
        reader.start()
        wait_until(lambda: reader.caught_up, what="caught up")
        assert broker.filters(1, "subscribe") == [uplinks("a"), uplinks("b"), marker]
        asked = reader.subscribe(["c", "d"])
        wait_until(lambda: reader.confirmed(asked), what="added subscriptions confirmed")
        reader.unsubscribe(["a"])
        barrier = reader.barrier()
        wait_until(lambda: reader.passed(barrier), what="barrier back")
        assert broker.filters(1, "subscribe")[3:] == [uplinks("c"), uplinks("d")]
        assert broker.filters(1, "unsubscribe") == [uplinks("a")]
        broker.drop()
        wait_until(lambda: reader.connection == 0, what="connection lost")
        asked = reader.subscribe(["e"])
        reader.unsubscribe(["c"])
        broker.admit()
        wait_until(lambda: reader.caught_up and reader.confirmed(asked), what="caught up again")
        barrier = reader.barrier()  # behind the UNSUBSCRIBE
        wait_until(lambda: reader.passed(barrier), what="barrier back")
        assert subscribed(2) == Counter(uplinks("b", "d", "e") + marker)
        assert broker.filters(2, "unsubscribe") == [uplinks("c")]
    finally:
        reader.stop()
        broker.close()


def test_a_subscriber_holds_its_filters_names_not_a_string_a_filter() -> None:
    """A shard's reader keeps its 3 filters a device as the device ids it was given: a
    reference to each (plus what waits to be sent), not a topic string a filter (~100 bytes)."""
    devices = [f"ank-{n:06}" for n in range(30_000)]
    topics = Topics("nabij/v1")
    gc.collect()
    tracemalloc.start()
    reader = Subscriber(
        MqttEndpoint("localhost", 1883), "held", topics.subscriptions(devices[:20_000]),
        Recorder(), keepalive_s=10, connection_ids=itertools.count(1),
    )  # fmt: skip
    reader.subscribe(devices[20_000:])
    reader.unsubscribe(devices[:5_000])
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    reader.stop()
    # 25,000 devices subscribed, 10,000 of them and 5,000 others still to send: 8 bytes each.
    assert held < 16 * len(devices)

"""The embedded broker and store (for `make demo`) against the real clients nabij uses.

Each test pins one capability the services rely on; no external binaries are needed.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from nabij.keys import Keys
from services.demo.embedded import EmbeddedBroker, EmbeddedStore
from services.shell.redis_io import DeadLetter, add_deadletter, connect, wait_until_ready
from tests.servers import MqttProbe

JOIN_TIMEOUT_S = 15.0


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    """One embedded amqtt broker for this module (tests use unique topics and client ids)."""
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def store() -> Iterator[EmbeddedStore]:
    """A fresh embedded fakeredis store per test."""
    with EmbeddedStore() as running:
        yield running


@pytest.fixture
def client(store: EmbeddedStore) -> Iterator[redis.Redis]:
    """nabij's own Redis client (`redis_io.connect`) on the embedded store."""
    redis_client = connect(store.url)
    wait_until_ready(redis_client, timeout_s=5)
    try:
        yield redis_client
    finally:
        redis_client.close()


@pytest.fixture
def topic() -> str:
    """A topic no other test uses."""
    return f"t-{uuid.uuid4().hex[:10]}"


# --- EmbeddedBroker ---------------------------------------------------------------------------


def test_broker_url_points_at_a_free_local_port(broker: EmbeddedBroker) -> None:
    """`.url` is mqtt://127.0.0.1:<port it really bound>, not 1883, and asks for MQTT 3.1.1
    (amqtt cannot speak 5)."""
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}?protocol=3.1.1"
    assert broker.port != 1883


def test_broker_qos1_round_trip(broker: EmbeddedBroker, topic: str) -> None:
    """A QoS 1 publish reaches a QoS 1 subscriber once the broker has acked it."""
    sub = MqttProbe(broker.url, f"{topic}-sub")
    sub.connect()
    sub.subscribe(f"{topic}/#", qos=1)
    pub = MqttProbe(broker.url, f"{topic}-pub")
    pub.connect()
    pub.publish(f"{topic}/fix", b"payload", qos=1)
    message = sub.next_message()
    assert (message.topic, message.payload, message.qos) == (f"{topic}/fix", b"payload", 1)
    sub.disconnect()
    pub.disconnect()


def test_broker_queues_qos1_for_an_offline_persistent_session(
    broker: EmbeddedBroker, topic: str
) -> None:
    """clean_session=False: the subscription and the messages published while the client was
    away survive its disconnect; it gets them, in order, on reconnect (session_present)."""
    client_id = f"{topic}-svc"
    sub = MqttProbe(broker.url, client_id, persistent_session=True, manual_ack=True)
    assert sub.connect() is False
    sub.subscribe(f"{topic}/#", qos=1)
    sub.disconnect()

    pub = MqttProbe(broker.url, f"{topic}-pub")
    pub.connect()
    for n in range(3):
        pub.publish(f"{topic}/fix", str(n).encode(), qos=1)
    pub.disconnect()

    back = MqttProbe(broker.url, client_id, persistent_session=True, manual_ack=True)
    assert back.connect() is True
    received = [back.next_message() for _ in range(3)]
    assert [m.payload for m in received] == [b"0", b"1", b"2"]
    for message in received:
        back.ack(message)
    back.disconnect()


@pytest.mark.xfail(
    strict=True,
    reason="amqtt 0.12 drops in-flight QoS 1 messages when the connection closes (stop() cancels"
    " the PUBACK waiter, whose `finally` pops the message from inflight_out): not at-least-once"
    " across a client crash. Mosquitto does redeliver (tests/test_servers.py).",
)
def test_broker_redelivers_a_message_not_acked_before_a_crash(
    broker: EmbeddedBroker, topic: str
) -> None:
    """paho manual_ack on amqtt: a message received but not PUBACKed when the client vanishes
    should come again when the persistent session reconnects. It does not: pinned as xfail."""
    client_id = f"{topic}-svc"
    svc = MqttProbe(broker.url, client_id, persistent_session=True, manual_ack=True)
    svc.connect()
    svc.subscribe(f"{topic}/#", qos=1)
    pub = MqttProbe(broker.url, f"{topic}-pub")
    pub.connect()
    pub.publish(f"{topic}/fix", b"unacked", qos=1)
    assert svc.next_message().payload == b"unacked"
    svc.drop()

    again = MqttProbe(broker.url, client_id, persistent_session=True, manual_ack=True)
    again.connect()
    try:
        message = again.next_message(timeout_s=3)
        assert message.payload == b"unacked"
        again.ack(message)
    finally:
        again.disconnect()
        pub.disconnect()


def test_broker_keeps_retained_messages(broker: EmbeddedBroker, topic: str) -> None:
    """A retained message is handed to a client that subscribes later, flagged retained."""
    pub = MqttProbe(broker.url, f"{topic}-pub")
    pub.connect()
    pub.publish(f"{topic}/status", b'{"online":true}', qos=1, retain=True)
    pub.disconnect()

    late = MqttProbe(broker.url, f"{topic}-late")
    late.connect()
    late.subscribe(f"{topic}/#", qos=1)
    message = late.next_message()
    assert (message.payload, message.retain) == (b'{"online":true}', True)
    late.disconnect()


def test_broker_publishes_the_last_will_of_a_vanished_client(
    broker: EmbeddedBroker, topic: str
) -> None:
    """A client that drops without DISCONNECT gets its will published (retained, QoS 1)."""
    watcher = MqttProbe(broker.url, f"{topic}-watch")
    watcher.connect()
    watcher.subscribe(f"{topic}/will", qos=1)
    device = MqttProbe(broker.url, f"{topic}-dev", will=(f"{topic}/will", b'{"online":false}'))
    device.connect()
    device.drop()
    message = watcher.next_message()
    assert (message.topic, message.payload) == (f"{topic}/will", b'{"online":false}')
    watcher.disconnect()


def test_broker_stop_closes_the_port() -> None:
    """stop() ends the broker: nothing listens on its port afterwards; stop() twice is fine."""
    running = EmbeddedBroker()
    running.start()
    port = running.port
    running.stop()
    running.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


# --- EmbeddedStore ----------------------------------------------------------------------------


def test_store_url_points_at_a_free_local_port(store: EmbeddedStore) -> None:
    """`.url` is redis://127.0.0.1:<port it really bound>/0, not 6379."""
    assert store.url == f"redis://127.0.0.1:{store.port}/0"
    assert store.port != 6379


def test_store_transaction_pipeline_applies_all_commands(client: redis.Redis) -> None:
    """pipeline(transaction=True) sends MULTI/EXEC: hash, stream and dead letter land together,
    and HGETALL reads the hash back as bytes."""
    keys = Keys("demo")
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.alarms, mapping={"a1": b'{"kind":"aware_button"}'})
    pipe.xadd(keys.human_requests, {"signal": b"s1"}, maxlen=1000, approximate=True)
    add_deadletter(
        pipe,
        keys,
        100,
        DeadLetter.bounded(
            source="proximity",
            reason="schema",
            detail="lat out of range",
            topic="nabij/v1/devices/d1/fix",
            payload=b'{"lat": 91}',
            received_ms=1_700_000_000_000,
            payload_bytes=4096,
        ),
    )
    results = pipe.execute()
    assert len(results) == 3
    assert client.hgetall(keys.alarms) == {b"a1": b'{"kind":"aware_button"}'}
    assert client.xlen(keys.human_requests) == 1
    ((_, fields),) = client.xrange(keys.deadletter)
    assert DeadLetter.from_fields(fields).payload == b'{"lat": 91}'


def test_store_transaction_aborts_when_a_watched_key_changes(
    store: EmbeddedStore, client: redis.Redis
) -> None:
    """WATCH + MULTI/EXEC: a write by another client in between makes EXEC fail."""
    other = connect(store.url)
    with client.pipeline(transaction=True) as pipe:
        pipe.watch("k")
        other.set("k", b"theirs")
        pipe.multi()
        pipe.set("k", b"mine")
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert client.get("k") == b"theirs"
    other.close()


def test_store_xadd_maxlen_caps_the_stream(client: redis.Redis) -> None:
    """XADD MAXLEN (exact and ~) keeps the stream bounded."""
    for n in range(50):
        client.xadd("exact", {"n": n}, maxlen=10, approximate=False)
        client.xadd("approx", {"n": n}, maxlen=10, approximate=True)
    assert client.xlen("exact") == 10
    assert 10 <= client.xlen("approx") <= 50


def test_store_xreadgroup_block_wakes_when_another_client_xadds(
    store: EmbeddedStore, client: redis.Redis
) -> None:
    """XREADGROUP BLOCK over TCP waits for data and returns the entry another connection adds
    (not at the end of the block time, which is beyond the join's wait)."""
    client.xgroup_create("inbox", "gateway", id="0", mkstream=True)
    result: dict[str, Any] = {}
    reader = connect(store.url)

    def read() -> None:
        result["entries"] = reader.xreadgroup("gateway", "g1", {"inbox": ">"}, block=4000)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    # The consumer exists once XREADGROUP is being served, i.e. blocked.
    _wait_for(lambda: len(client.xinfo_consumers("inbox", "gateway")) == 1)
    entry_id = client.xadd("inbox", {"signal": b"s1"})
    # Joined well before the 4 s block ends: a store that answered only at the end of the block
    # would still be blocked here (the wait is generous, and no assertion is made on it).
    thread.join(timeout=3.0)
    assert not thread.is_alive()
    assert result["entries"] == [[b"inbox", [(entry_id, {b"signal": b"s1"})]]]
    reader.close()


def test_store_xreadgroup_block_times_out_empty(client: redis.Redis) -> None:
    """With nothing to read, a short BLOCK returns an empty result instead of hanging."""
    client.xgroup_create("idle", "gateway", id="$", mkstream=True)
    assert not client.xreadgroup("gateway", "g1", {"idle": ">"}, block=50)


def test_store_pending_entries_can_be_inspected_claimed_and_acked(client: redis.Redis) -> None:
    """An entry read but not acked shows in XPENDING, XAUTOCLAIM hands it to another consumer
    (how a restarted gateway re-reads its crashed predecessor's work), XACK clears it."""
    client.xgroup_create("inbox", "gateway", id="0", mkstream=True)
    entry_id = client.xadd("inbox", {"signal": b"s1"})
    client.xreadgroup("gateway", "crashed", {"inbox": ">"}, count=10)

    summary = client.xpending("inbox", "gateway")
    assert summary["pending"] == 1
    assert summary["consumers"] == [{"name": b"crashed", "pending": 1}]

    _next, claimed, _deleted = client.xautoclaim("inbox", "gateway", "fresh", 0, "0-0")
    assert claimed == [(entry_id, {b"signal": b"s1"})]
    # Re-reading own pending entries from id 0, as a consumer does on start.
    own = client.xreadgroup("gateway", "fresh", {"inbox": "0"})
    assert own == [[b"inbox", [(entry_id, {b"signal": b"s1"})]]]

    assert client.xack("inbox", "gateway", entry_id) == 1
    assert client.xpending("inbox", "gateway")["pending"] == 0


def test_store_stop_closes_the_port() -> None:
    """stop() ends the store (open client connections included); stop() twice is fine."""
    running = EmbeddedStore()
    running.start()
    port = running.port
    open_client = connect(running.url, retries=0)
    assert open_client.ping()
    running.stop()
    running.stop()
    open_client.close()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def _wait_for(condition: Any, timeout_s: float = JOIN_TIMEOUT_S) -> None:
    """Poll `condition` every 10 ms until it holds; fail after `timeout_s`."""
    event = threading.Event()
    deadline_hits = int(timeout_s / 0.01)
    for _ in range(deadline_hits):
        if condition():
            return
        event.wait(0.01)
    raise AssertionError(f"condition not met within {timeout_s} s")

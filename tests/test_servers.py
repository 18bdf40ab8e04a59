"""The server fixtures themselves: real processes that start, stop, crash and come back."""

from __future__ import annotations

import socket

import pytest
import redis

from tests.servers import HOST, MosquittoServer, MqttProbe, RedisServer

pytestmark = pytest.mark.integration


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def test_mosquitto_fixture_starts_and_stops(mosquitto: MosquittoServer) -> None:
    """`mosquitto` answers MQTT on its own port (not 1883), with the test observer's credentials
    in its URL (it runs the shipped secure config), and is gone after stop()."""
    assert mosquitto.running
    assert mosquitto.port != 1883
    assert mosquitto.open_url == f"mqtt://127.0.0.1:{mosquitto.port}"
    assert mosquitto.url.startswith(f"mqtt://{MosquittoServer.OBSERVER}:")
    probe = MqttProbe(mosquitto.url, "fixture-check")
    probe.connect()
    probe.disconnect()
    mosquitto.stop()
    assert not mosquitto.running
    assert not _port_open(mosquitto.port)


def test_redis_fixture_starts_and_stops(redis_server: RedisServer) -> None:
    """`redis_server` answers PING on its own port (not 6379) and is gone after stop()."""
    assert redis_server.running
    assert redis_server.port != 6379
    client = redis_server.client()
    assert client.ping()
    client.close()
    redis_server.stop()
    assert not redis_server.running
    assert not _port_open(redis_server.port)


def test_redis_client_fixture_is_connected_and_empty(redis_client: redis.Redis) -> None:
    """`redis_client` talks bytes to an empty database."""
    assert redis_client.dbsize() == 0
    redis_client.set("k", "v")
    assert redis_client.get("k") == b"v"


def test_unique_prefix_differs_per_call(unique_prefix: str) -> None:
    """`unique_prefix` is topic-safe (no wildcards or separators) and starts with the test name."""
    assert unique_prefix.startswith("test_unique_prefix_differs_per_call-")
    assert not set(unique_prefix) & set("+#/ ")


def test_qos1_message_waits_for_a_disconnected_persistent_subscriber(
    mosquitto: MosquittoServer, unique_prefix: str
) -> None:
    """A QoS 1 message published while a clean_session=False subscriber is away reaches it on
    reconnect, and the broker reports the session as present."""
    topic = f"{unique_prefix}/fix"
    subscriber = MqttProbe(mosquitto.url, f"{unique_prefix}-sub", persistent_session=True)
    assert subscriber.connect() is False
    subscriber.subscribe(topic, qos=1)
    subscriber.disconnect()

    publisher = MqttProbe(mosquitto.url, f"{unique_prefix}-pub")
    publisher.connect()
    publisher.publish(topic, b"while away", qos=1)
    publisher.disconnect()

    back = MqttProbe(mosquitto.url, f"{unique_prefix}-sub", persistent_session=True)
    assert back.connect() is True
    message = back.next_message()
    assert (message.topic, message.payload, message.qos) == (topic, b"while away", 1)
    back.disconnect()


def test_unacked_message_is_redelivered_after_subscriber_crash(
    mosquitto: MosquittoServer, unique_prefix: str
) -> None:
    """With manual_ack, a message received but not acked before the client vanishes is
    delivered again (dup) when the persistent session reconnects."""
    topic = f"{unique_prefix}/fix"
    client_id = f"{unique_prefix}-svc"
    service = MqttProbe(mosquitto.url, client_id, persistent_session=True, manual_ack=True)
    service.connect()
    service.subscribe(topic, qos=1)
    publisher = MqttProbe(mosquitto.url, f"{unique_prefix}-pub")
    publisher.connect()
    publisher.publish(topic, b"one", qos=1)
    assert service.next_message().payload == b"one"
    service.drop()  # crash before the ack

    again = MqttProbe(mosquitto.url, client_id, persistent_session=True, manual_ack=True)
    again.connect()
    message = again.next_message()
    assert message.payload == b"one"
    again.ack(message)
    again.disconnect()
    publisher.disconnect()


def test_queued_message_survives_mosquitto_restart(
    mosquitto: MosquittoServer, unique_prefix: str
) -> None:
    """restart() keeps port and persistence file: a message queued for an offline persistent
    session before a graceful restart is delivered after it."""
    topic = f"{unique_prefix}/fix"
    subscriber = MqttProbe(mosquitto.url, f"{unique_prefix}-sub", persistent_session=True)
    subscriber.connect()
    subscriber.subscribe(topic, qos=1)
    subscriber.disconnect()
    publisher = MqttProbe(mosquitto.url, f"{unique_prefix}-pub")
    publisher.connect()
    publisher.publish(topic, b"before restart", qos=1)
    publisher.disconnect()
    port = mosquitto.port

    mosquitto.restart()

    assert mosquitto.port == port
    assert mosquitto.persistence_file.exists()
    back = MqttProbe(mosquitto.url, f"{unique_prefix}-sub", persistent_session=True)
    assert back.connect() is True
    assert back.next_message().payload == b"before restart"
    back.disconnect()


def test_redis_appendonly_data_survives_kill_and_restart(redis_server: RedisServer) -> None:
    """Writes acknowledged before a SIGKILL (AOF, fsync always) are there after restart(),
    transactions and streams included."""
    client = redis_server.client()
    pipe = client.pipeline(transaction=True)
    pipe.hset("alarms", mapping={"a1": b"open"})
    pipe.xadd("inbox", {"signal": b"x"})
    pipe.execute()
    port, pid = redis_server.port, redis_server.pid
    client.close()

    redis_server.kill()
    assert not redis_server.running
    redis_server.restart()

    assert redis_server.port == port
    assert redis_server.pid != pid
    client = redis_server.client()
    assert client.hgetall("alarms") == {b"a1": b"open"}
    assert client.xlen("inbox") == 1
    client.close()

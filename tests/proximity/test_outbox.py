"""Device commands stay in the outbox until the broker acknowledged them (real Mosquitto, Redis)."""

from __future__ import annotations

import paho.mqtt.client as paho
import pytest
import redis

from nabij.contract import DeviceCommand, SetInterval, Topics, Warn, command_decoder
from nabij.keys import Keys, Shard
from services.proximity.outbox import CommandOutbox
from services.shell.mqtt import MqttEndpoint, make_client
from tests.integration.stack import wait_until
from tests.servers import MosquittoServer, MqttProbe, RedisServer

pytestmark = pytest.mark.integration


def _commit(
    client: redis.Redis, outbox: CommandOutbox, commands: list[tuple[str, DeviceCommand]]
) -> None:
    """What the proximity shell does per batch: commit, then publish."""
    pipe = client.pipeline(transaction=True)
    outbox.queue(pipe, commands)
    pipe.execute()
    outbox.committed()
    outbox.publish(commands)


def _client(url: str, client_id: str, *, connect: bool) -> paho.Client:
    client = make_client(MqttEndpoint.from_url(url), client_id, persistent_session=True)
    if connect:
        endpoint = MqttEndpoint.from_url(url)
        client.connect(endpoint.host, endpoint.port)
        client.loop_start()
    return client


def test_commands_published_while_mqtt_is_down_survive_a_crash_and_go_out_after_it(
    mosquitto: MosquittoServer, redis_server: RedisServer, unique_prefix: str
) -> None:
    """Two batches commit commands while the broker cannot be reached; the service then dies.
    Both commands are still in the outbox (the second commit must not trim the first, which
    paho only queued), the restarted service publishes both, and once the broker acknowledged
    them the next commit empties the outbox."""
    topics, key = (
        Topics(f"{unique_prefix}/v1"),
        Keys(unique_prefix).proximity(Shard()).command_outbox,
    )
    store = redis_server.client()
    device = MqttProbe(mosquitto.url, f"{unique_prefix}-device")
    device.connect()
    device.subscribe(topics.device("vic-1", "cmd"))

    unreachable = _client(mosquitto.url, f"{unique_prefix}-proximity", connect=False)
    before_crash = CommandOutbox(unreachable, topics, key)
    _commit(store, before_crash, [("vic-1", Warn(level="alarm"))])
    _commit(store, before_crash, [("vic-1", SetInterval(seconds=15))])
    assert store.xlen(key) == 2
    assert before_crash.unconfirmed() == 2

    restarted = _client(mosquitto.url, f"{unique_prefix}-proximity", connect=True)
    after_crash = CommandOutbox(restarted, topics, key)
    after_crash.resend(store)
    received = [command_decoder.decode(device.next_message().payload) for _ in range(2)]
    assert received == [Warn(level="alarm"), SetInterval(seconds=15)]
    wait_until(lambda: after_crash.unconfirmed() == 0, what="both PUBACKs")
    assert store.xlen(key) == 2  # acknowledged, trimmed only by the next commit
    _commit(store, after_crash, [])
    assert store.xlen(key) == 0

    restarted.disconnect()
    restarted.loop_stop()
    device.disconnect()
    store.close()


def test_a_trim_removes_only_the_acknowledged_prefix(
    mosquitto: MosquittoServer, redis_server: RedisServer, unique_prefix: str
) -> None:
    """Commands acknowledged are trimmed at the next commit, which appends its own after the
    ones still waiting: the stream always holds exactly the unacknowledged commands, oldest
    first."""
    topics, key = (
        Topics(f"{unique_prefix}/v1"),
        Keys(unique_prefix).proximity(Shard()).command_outbox,
    )
    store = redis_server.client()
    client = _client(mosquitto.url, f"{unique_prefix}-proximity", connect=True)
    outbox = CommandOutbox(client, topics, key)
    _commit(store, outbox, [("ank-1", SetInterval(seconds=15)), ("vic-1", Warn(level="alarm"))])
    wait_until(lambda: outbox.unconfirmed() == 0, what="PUBACKs")
    _commit(store, outbox, [("vic-1", Warn(level="clear"))])
    entries = store.xrange(key)
    assert [command_decoder.decode(fields[b"command"]) for _id, fields in entries] == [
        Warn(level="clear")
    ]
    client.disconnect()
    client.loop_stop()
    store.close()

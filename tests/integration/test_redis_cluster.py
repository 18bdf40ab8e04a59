"""nabij on a real Redis Cluster (three masters started by the test): every commit stays in one
hash slot, so an approach and a button press go end to end with two proximity shards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.crc import key_slot

from nabij.contract import Notice
from nabij.keys import Shard
from tests.integration.stack import TWO_SHARDED_PAIRS, VICTIM_HOME, Stack, north_of, write_config
from tests.servers import MosquittoServer, RedisClusterServers

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster_stack(
    tmp_path: Path,
    mosquitto: MosquittoServer,
    redis_cluster: RedisClusterServers,
    unique_prefix: str,
) -> Iterator[Stack]:
    config_dir = write_config(
        tmp_path / "config",
        mqtt_url=mosquitto.open_url,
        redis_url=redis_cluster.url,
        prefix=unique_prefix,
        orders_toml=TWO_SHARDED_PAIRS,
        mqtt_toml=mosquitto.service_identity_toml("proximity"),
        cluster=True,
    )
    stack = Stack(config_dir, mosquitto.url, redis_cluster.url, device_url=mosquitto.url_for)
    yield stack
    stack.stop()


def test_approach_and_press_end_to_end_on_a_redis_cluster(cluster_stack: Stack) -> None:
    """Two shards and the gateway on a three-master cluster: ank-1 walks up to vic-1 (shard 2)
    and vic-5 presses its button (shard 1). Each shard's keys sit in a slot of their own, the
    gateway's in another, and the notices are exactly the alarm and the press."""
    stack = cluster_stack
    keys = stack.keys
    slots = {
        key_slot(keys.proximity(Shard(1, 2)).gateway_inbox.encode()),
        key_slot(keys.proximity(Shard(2, 2)).gateway_inbox.encode()),
        key_slot(keys.alarms.encode()),
    }
    assert len(slots) == 3
    stack.start_in_process(shards=2)
    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    ts = stack.clock()
    victim.fix(ts, VICTIM_HOME)
    offender.fix(ts, north_of(VICTIM_HOME, 50))  # under critical_m: the alarm opens at once
    pressing = stack.device("vic-5")
    pressing.event(stack.clock(), "aware_button", lat=VICTIM_HOME[0], lon=VICTIM_HOME[1], acc=10.0)

    def opened(notices: list[Notice]) -> list[tuple[str, str]]:
        return sorted((n.kind, n.order_id) for n in notices if n.event == "opened")

    police = stack.wait_notices("police", bool, "press to police")
    probation = stack.wait_notices("probation", lambda ns: len(opened(ns)) >= 3, "all opened")
    assert opened(police) == [("aware_button", "ORD-B")]
    assert opened(probation) == [
        ("aware_button", "ORD-B"),
        ("proximity_alarm", "ORD-A"),
        ("proximity_pre_alert", "ORD-A"),
    ]
    # Each shard committed its own device's state into its own slot.
    assert stack.device_state("ank-1") is not None
    assert stack.redis.exists(keys.proximity(Shard(2, 2)).device_state("ank-1")) == 1
    assert stack.redis.exists(keys.proximity(Shard(1, 2)).device_state("vic-5")) == 1
    assert stack.threads_alive() == dict.fromkeys(stack.threads_alive(), True)

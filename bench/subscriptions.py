"""What a proximity shard's MQTT subscriptions hold per pair.

A shard (`--shard K/N`, N > 1) subscribes to its own devices' topics only: its bulk reader to
each device's fix, event and status topics, its fast reader to its event topic. Builds the two
`Subscriber`s as `ProximityService` does for `--pairs` one-pair orders (no connection: what they
keep to subscribe again on every reconnect), the device ids built before, as the ownership holds
them; reports the Python heap they hold (`tracemalloc`), per pair.

    .venv/bin/python -m bench.subscriptions --pairs 100000
"""

from __future__ import annotations

import argparse
import gc
import itertools
import tracemalloc

from bench.orders import one_victim_orders
from nabij.contract import Topics
from nabij.keys import Shard
from services.proximity.core.shards import Ownership
from services.shell.mqtt import MqttEndpoint
from services.shell.mqtt_ingest import Delivery, Subscriber
from services.shell.mqtt_packets import Publish

PREFIX = "nabij/v1"


class _Unread:
    """A sink for readers that never connect."""

    def deliver(
        self, connection: int, messages: list[Publish], caught_up: bool, timeout_s: float
    ) -> Delivery:
        return Delivery()


def held_bytes(pairs: int) -> float:
    """Bytes a pair the bulk and fast readers of a shard judging `pairs` one-pair orders hold."""
    heard = Ownership(tuple(one_victim_orders(pairs)), Shard(1, 1)).devices()
    topics, endpoint, ids = Topics(PREFIX), MqttEndpoint("localhost", 1883), itertools.count(1)
    gc.collect()
    tracemalloc.start()
    readers = [
        Subscriber(endpoint, client_id, filters, _Unread(), keepalive_s=30, connection_ids=ids)
        for client_id, filters in [
            ("bench-bulk", topics.subscriptions(heard)),
            ("bench-fast", topics.events(heard)),
        ]
    ]
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    for reader in readers:
        reader.stop()
    return held / pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    args = parser.parse_args(argv)
    print(f"held by a shard's two readers: {held_bytes(args.pairs):,.0f} bytes a pair")


if __name__ == "__main__":
    main()

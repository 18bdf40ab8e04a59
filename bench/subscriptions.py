"""What a proximity process holds per pair beside its core: its ownership and subscriptions.

A shard (`--shard K/N`, N > 1) subscribes to its own devices' topics only: its bulk reader to
each device's fix, event and status topics, its fast reader to its event topic; a single process
to every device's topics with one wildcard. Builds the `Ownership` and the two `Subscriber`s as
`ProximityService` does for `--pairs` one-pair orders (no connection: what they keep to subscribe
again on every reconnect; the orders built before, as the process holds them anyway), for a
single process and for shard 1 of `--shards`; reports the Python heap they hold (`tracemalloc`),
per pair the process judges.

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
from nabij.orders import held_orders
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


def held_bytes(pairs: int, shard: Shard) -> float:
    """Bytes a pair it judges the ownership and the two readers of `shard` hold, of `pairs`
    one-pair orders in all."""
    orders = held_orders(one_victim_orders(pairs))  # as the service holds them
    topics, endpoint, ids = Topics(PREFIX), MqttEndpoint("localhost", 1883), itertools.count(1)
    gc.collect()
    tracemalloc.start()
    ownership = Ownership(orders, shard)
    heard = None if shard.count == 1 else ownership.devices()
    readers = [
        Subscriber(endpoint, client_id, filters, _Unread(), keepalive_s=30, connection_ids=ids)
        for client_id, filters in [
            ("bench-bulk", topics.subscriptions(heard)),
            ("bench-fast", topics.events(heard)),
        ]
    ]
    # As the service asks of each message, so what it keeps on the way is counted too.
    for order in orders:
        ownership.elsewhere(order.offender_device)
    del heard
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    for reader in readers:
        reader.stop()
    return held / len(ownership.orders())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=2, help="N of the shard measured")
    args = parser.parse_args(argv)
    for label, shard in [
        ("a single process", Shard(1, 1)),
        (f"shard 1/{args.shards}", Shard(1, args.shards)),
    ]:
        held = held_bytes(args.pairs, shard)
        print(f"held by {label}'s ownership and two readers: {held:,.0f} bytes a pair it judges")


if __name__ == "__main__":
    main()

"""Memory per pair at steady state: the proximity core's in-memory state and Redis' bytes.

Builds the pure core (`ProximityEngine`) for `--pairs` orders and feeds every device fixes 15 s
apart for `--minutes` (long enough to fill its position history, the largest part of a device's
state), the pairs 20 km apart. Then:
- core: Python heap allocated by building and feeding the engine (`tracemalloc`, which also
  counts the orders themselves), per pair;
- Redis: every device and pair state written as the service writes it (`encoded_device`,
  `encode_pair`: one key each, plus the set of device ids) into a fresh redis-server; growth of
  `used_memory` per pair, and the encoded sizes that make it up.

`--resident`: the process's resident memory (`VmRSS`) instead, without the Redis part: for a
million pairs, where tracemalloc's own bookkeeping would double the memory and the time; it
counts what the allocator holds as well (arenas, free lists), so it reads higher.

    .venv/bin/python -m bench.memory --pairs 1000
    .venv/bin/python -m bench.memory --pairs 1000 --interval 60
    .venv/bin/python -m bench.memory --pairs 1000000 --interval 60 --resident
"""

from __future__ import annotations

import argparse
import gc
import math
import tempfile
import tracemalloc
from pathlib import Path
from typing import Final

import redis

from bench.orders import one_victim_orders
from nabij.config import ProximitySettings
from nabij.contract import Fix
from nabij.keys import Keys, Shard
from nabij.orders import held_orders
from services.proximity.core.engine import Effects, ProximityEngine
from services.proximity.core.state import encode_pair, state_encoder
from tests.servers import RedisServer

T0: Final = 1_790_000_000_000
INTERVAL_S: Final = 15.0
BASE: Final = (52.0, 5.0)
BATCH: Final = 500
"""Fixes between two freezes (`ProximityEngine.freeze`), as the shell does after each batch."""


def feed(
    engine: ProximityEngine, pairs: int, minutes: float, interval_s: float = INTERVAL_S
) -> None:
    """Every device a fix each `interval_s`; a batch (`BATCH` fixes: a freeze and a new
    `Effects`, as the shell does) ends within a round and at its end: the states are held
    as the shell holds them between batches."""
    spacing_ms = round(interval_s * 1000)
    rounds = math.ceil(minutes * 60_000 / spacing_ms)
    for r in range(rounds):
        ts = T0 + r * spacing_ms
        wobble = 0.00005 * math.sin(r)
        effects = Effects()
        for i in range(pairs):
            lat = BASE[0] + (i % 1000) * 0.001 + wobble
            engine.apply(Fix(f"ank-{i}", r + 1, ts, lat, BASE[1], 5.0), ts, effects)
            engine.apply(
                Fix(f"vic-{i}", r + 1, ts + 500, lat, BASE[1] + 0.3, 5.0), ts + 500, effects
            )
            if i % (BATCH // 2) == BATCH // 2 - 1:
                engine.freeze()
                effects = Effects()
        engine.freeze()


def resident_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def core_bytes(
    pairs: int, minutes: float, interval_s: float = INTERVAL_S, *, resident: bool = False
) -> tuple[ProximityEngine, float]:
    """The engine fed, and the memory it took per pair (`resident`: growth of the process's
    resident memory, else of tracemalloc's count)."""

    def used() -> int:
        return resident_bytes() if resident else tracemalloc.get_traced_memory()[0]

    gc.collect()
    if not resident:
        tracemalloc.start()
    before = used()
    # Held as the service holds them (`Ownership`): validated, then compact, the validated
    # models let go before the engine is built from them.
    orders = held_orders(one_victim_orders(pairs))
    engine = ProximityEngine(orders, ProximitySettings())
    del orders  # the engine keeps them
    feed(engine, pairs, minutes, interval_s)
    gc.collect()
    after = used()
    if not resident:
        tracemalloc.stop()
    return engine, (after - before) / pairs


def redis_bytes(engine: ProximityEngine, pairs: int) -> dict[str, float]:
    keys = Keys("nabij").proximity(Shard())
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis")
        server.start()
        try:
            store = redis.Redis.from_url(server.url)
            before = int(store.info("memory")["used_memory"])
            device_sizes, pair_sizes, history_sizes = [], [], []
            pipe = store.pipeline(transaction=False)
            for i in range(pairs):
                for device in (f"ank-{i}", f"vic-{i}"):
                    blob = engine.encoded_device(device)  # as the service writes it
                    device_sizes.append(len(blob))
                    history = engine.device(device).packed_history
                    history_sizes.append(len(state_encoder.encode(history)))
                    pipe.set(keys.device_state(device), blob)
                    pipe.sadd(keys.proximity_devices, device)
                pair_key = (f"O-{i}", f"ank-{i}", f"vic-{i}")
                blob = encode_pair(engine.pair(pair_key))
                pair_sizes.append(len(blob))
                pipe.set(keys.pair_state(f"ank-{i}", f"O-{i}", f"vic-{i}"), blob)
                if i % 1000 == 999:
                    pipe.execute()
            pipe.execute()
            after = int(store.info("memory")["used_memory"])
        finally:
            server.stop()
    return {
        "redis_bytes_per_pair": (after - before) / pairs,
        "device_state_bytes": sum(device_sizes) / len(device_sizes),
        "of_which_history_bytes": sum(history_sizes) / len(history_sizes),
        "pair_state_bytes": sum(pair_sizes) / len(pair_sizes),
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=17.0, help="of fixes")
    parser.add_argument(
        "--interval", type=float, default=INTERVAL_S, help="seconds between a device's fixes"
    )
    parser.add_argument(
        "--resident",
        action="store_true",
        help="the process's resident memory instead of tracemalloc's count; no Redis part",
    )
    args = parser.parse_args(argv)
    engine, per_pair = core_bytes(args.pairs, args.minutes, args.interval, resident=args.resident)
    result = {
        "pairs": float(args.pairs),
        "interval_s": args.interval,
        "resident_bytes_per_pair" if args.resident else "core_bytes_per_pair": per_pair,
    }
    if not args.resident:
        result |= redis_bytes(engine, args.pairs)
    print(", ".join(f"{k} {v:,.0f}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()

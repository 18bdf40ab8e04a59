"""What the orders alone cost a process: resident memory per parsed order, and the CPU time a
shard takes to parse its orders at start (an orders version's JSON, as the order store holds it).

    .venv/bin/python -m bench.order_cost --orders 100000 --parse 75000

Resident memory: growth of `VmRSS` while building `--orders` orders (`Order(...)`, one pair each,
as `bench.orders.one_victim_orders`), in a fresh process. Parse: median CPU ms of 5
`OrdersVersion.model_validate_json` of `--parse` such orders.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from bench.memory import resident_bytes
from bench.orders import one_victim_orders
from nabij.order_store import OrdersVersion

RUNS = 5


def resident_per_order(count: int) -> float:
    gc.collect()
    before = resident_bytes()
    orders = one_victim_orders(count)
    gc.collect()
    grown = resident_bytes() - before
    del orders
    return grown / count


def parse_ms(count: int) -> float:
    version = OrdersVersion(
        version=1,
        by="bench",
        at="2026-12-06T12:00:00+00:00",
        reason="bench",
        apply_id="x",
        orders=one_victim_orders(count),
    )
    blob = version.model_dump_json().encode()
    del version
    times = []
    for _ in range(RUNS):
        gc.collect()
        start = time.process_time()
        OrdersVersion.model_validate_json(blob)
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000, help="built for resident memory")
    parser.add_argument("--parse", type=int, default=75_000, help="orders in the parsed version")
    args = parser.parse_args(argv)
    result = {
        "resident_bytes_per_order": resident_per_order(args.orders),
        "parse_ms": parse_ms(args.parse),
    }
    print(", ".join(f"{k} {v:,.0f}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()

"""What the orders alone cost a process: resident memory per parsed order, and the CPU time a
shard takes to parse its orders at start (an orders version's JSON, as the order store holds it).

    .venv/bin/python -m bench.order_cost --orders 100000 --parse 75000
    .venv/bin/python -m bench.order_cost --orders 100000 --parse 75000 --zone

Resident memory: growth of `VmRSS` while building `--orders` orders (one pair each, as
`bench.orders.one_victim_orders`; `--zone`: each with a circular home zone too), in a fresh
process. Parse: median CPU ms of 5 `OrdersVersion.model_validate_json` of `--parse` such orders.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from bench.memory import resident_bytes
from bench.orders import one_victim_orders
from nabij.order_store import OrdersVersion
from nabij.orders import Order

RUNS = 5


def build(count: int, *, zone: bool) -> list[Order]:
    if not zone:
        return one_victim_orders(count)
    return [
        Order.model_validate(
            {
                "id": f"O-{i}",
                "offender_device": f"ank-{i}",
                "victim_devices": [f"vic-{i}"],
                "alarm_m": 500,
                "zone": [{"name": "home", "lat": 52 + i * 1e-5, "lon": 5.0, "radius_m": 300}],
            }
        )
        for i in range(count)
    ]


def resident_per_order(count: int, *, zone: bool) -> float:
    gc.collect()
    before = resident_bytes()
    orders = build(count, zone=zone)
    gc.collect()
    grown = resident_bytes() - before
    del orders
    return grown / count


def parse_ms(count: int, *, zone: bool) -> float:
    version = OrdersVersion(
        version=1,
        by="bench",
        at="2026-12-06T12:00:00+00:00",
        reason="bench",
        apply_id="x",
        orders=build(count, zone=zone),
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
    parser.add_argument("--zone", action="store_true", help="a circular home zone per order")
    args = parser.parse_args(argv)
    result = {
        "resident_bytes_per_order": resident_per_order(args.orders, zone=args.zone),
        "parse_ms": parse_ms(args.parse, zone=args.zone),
    }
    print(", ".join(f"{k} {v:,.0f}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()

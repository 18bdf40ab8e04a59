"""The orders the core benchmarks build engines from."""

from __future__ import annotations

from nabij.config import Order


def one_victim_orders(count: int) -> list[Order]:
    """`count` orders of one pair each: `ank-i` must stay away from `vic-i` (alarm at 500 m)."""
    return [
        Order(id=f"O-{i}", offender_device=f"ank-{i}", victim_devices=(f"vic-{i}",), alarm_m=500)
        for i in range(count)
    ]

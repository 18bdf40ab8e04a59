"""What a new orders version costs the proximity service: CPU milliseconds of
`ProximityEngine.successor` (which runs between batches, so ingestion waits for it) when one order
of N changes, for N orders each with a pair and a home zone, every device with a fix.

Run: `.venv/bin/python -m bench.order_versions`. Cases: one order's rings widened; one
offender's device swapped. Median of 5 runs each, CPU time (the two cores are shared). 200
and 2,000 orders; 10,000 take minutes (figures in docs/benchmarks.md).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from bench.proximity_core import BASE, T0, offset
from nabij.config import Order, ProximitySettings
from nabij.contract import Fix
from services.proximity.core.engine import Effects, ProximityEngine

RUNS = 5


def fleet(n: int, *, alarm_m: float = 500, swapped: bool = False) -> list[Order]:
    """`n` orders; the first one widened (`alarm_m`) or with its offender's device swapped."""
    out = []
    for i in range(n):
        lat, lon = offset(*BASE, i * 100.0, 0.0)
        zlat, zlon = offset(lat, lon, 0.0, 10_000.0)
        offender = "ank-new" if swapped and i == 0 else f"ank-{i}"
        raw = {
            "id": f"O-{i}",
            "offender_device": offender,
            "victim_devices": [f"vic-{i}"],
            "alarm_m": alarm_m if i == 0 else 500,
            "zone": [{"name": "home", "lat": zlat, "lon": zlon, "radius_m": 300}],
        }
        out.append(Order.model_validate(raw))
    return out


def engine_with_fixes(orders: list[Order]) -> ProximityEngine:
    engine = ProximityEngine(orders, ProximitySettings())
    effects = Effects()
    for i in range(len(orders)):
        lat, lon = offset(*BASE, i * 100.0, 0.0)
        engine.apply(Fix(f"vic-{i}", 0, T0, lat, lon, 5.0), T0, effects)
        engine.apply(Fix(f"ank-{i}", 0, T0, *offset(lat, lon, 0.0, 2_000.0), 5.0), T0, effects)
    return engine


def median_ms(n: int, change: Callable[[int], list[Order]]) -> tuple[float, float]:
    """Median CPU ms of the successor, and of building an engine of the same orders afresh."""
    current = fleet(n)
    following = change(n)
    successor_ms, build_ms = [], []
    for _ in range(RUNS):
        engine = engine_with_fixes(current)
        start = time.process_time()
        engine.successor(following, T0 + 1000, Effects())
        successor_ms.append((time.process_time() - start) * 1000)
        start = time.process_time()
        ProximityEngine(following, ProximitySettings())
        build_ms.append((time.process_time() - start) * 1000)
    return statistics.median(successor_ms), statistics.median(build_ms)


def main() -> None:
    cases: dict[str, Callable[[int], list[Order]]] = {
        "rings widened": lambda n: fleet(n, alarm_m=800),
        "offender swapped": lambda n: fleet(n, swapped=True),
    }
    for n in (200, 2_000):
        for name, change in cases.items():
            successor, build = median_ms(n, change)
            print(
                f"{n:>6} orders, {name:<16}: successor {successor:7.1f} ms "
                f"(building the engine alone {build:7.1f} ms, ratio {successor / build:.2f})"
            )


if __name__ == "__main__":
    main()

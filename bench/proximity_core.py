"""Micro-benchmark of the pure proximity core: fixes per second through `ProximityEngine.apply`.

Run: `.venv/bin/python -m bench.proximity_core`. Three cases, each 200 orders (one offender,
one victim) fed 100,000 fixes in turn, 15 s apart per device:
- far: the pair 20 km apart, every order with a home circle and a work polygon 10+ km away;
- near: the pair wobbling inside the alarm ring (every fix steps both rings);
- zones: as far, but the offender passes 400 m from his zones (bounding box hit, geometry runs).

And the tick (every second in the shell): CPU milliseconds per `ProximityEngine.tick` over 10,000
orders (20,000 devices, all heard), with every device online, and with 10% of them offline
(judged on every tick until their device_offline opens after the dwell, 60 of the 300 ticks).
"""

from __future__ import annotations

import math
import time
from typing import Final

from bench.orders import one_victim_orders
from nabij.config import Order, ProximitySettings
from nabij.contract import DeviceStatus, Fix
from nabij.settings import PlatformSettings
from services.proximity.core.engine import Effects, ProximityEngine
from services.proximity.core.ingest import StatusUpdate

T0 = 1_767_225_600_000
ORDERS = 200
FIXES = 100_000
BASE = (52.0, 5.0)


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return lat + north_m / 111_200.0, lon + east_m / (111_200.0 * math.cos(math.radians(lat)))


def orders(zone_east_m: float) -> list[Order]:
    out = []
    for i in range(ORDERS):
        lat, lon = offset(*BASE, i * 100.0, 0.0)
        raw: dict[str, object] = {
            "id": f"O-{i}",
            "offender_device": f"ank-{i}",
            "victim_devices": [f"vic-{i}"],
            "alarm_m": 500,
        }
        zlat, zlon = offset(lat, lon, 0.0, zone_east_m)
        w = 0.003
        raw["zone"] = [
            {"name": "home", "lat": zlat, "lon": zlon, "radius_m": 300},
            {
                "name": "work",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [
                            [zlon + 0.01, zlat],
                            [zlon + 0.01 + w, zlat],
                            [zlon + 0.01 + w, zlat + w],
                            [zlon + 0.01, zlat + w],
                            [zlon + 0.01, zlat],
                        ]
                    ],
                },
            },
        ]
        out.append(Order.model_validate(raw))
    return out


def run(case: str) -> float:
    zone_east = 10_400.0 if case == "zones" else 40_000.0
    engine = ProximityEngine(orders(zone_east), ProximitySettings())
    fixes = []
    for n in range(FIXES):
        i = n % ORDERS
        round_ = n // (2 * ORDERS)
        victim = (n // ORDERS) % 2 == 1
        lat, lon = offset(*BASE, i * 100.0, 0.0)
        if victim:
            device = f"vic-{i}"
        else:
            device = f"ank-{i}"
            east = {"far": 20_000.0, "near": 300.0, "zones": 10_000.0}[case]
            wobble = 20.0 * math.sin(round_)
            lat, lon = offset(lat, lon, wobble, east)
        ts = T0 + round_ * 15_000 + (500 if victim else 0)
        fixes.append(Fix(device_id=device, seq=round_, ts=ts, lat=lat, lon=lon, acc=5.0))
    effects = Effects()
    start = time.perf_counter()
    for fix in fixes:
        engine.apply(fix, fix.ts, effects)
    elapsed = time.perf_counter() - start
    return FIXES / elapsed


TICK_ORDERS = 10_000
TICKS = 300


# Every device silent for the 300 ticks is a platform outage (blind at 60 s, all grouped from
# 90 s); with these windows the platform watch only checks that everyone was heard lately.
PLATFORM_IDLE: Final = PlatformSettings(blind_after_s=3600, quiet_after_s=3600)


def run_tick(offline_share: float, platform: PlatformSettings | None = None) -> float:
    """Mean ms per tick over `TICKS` seconds; `offline_share` of the devices went offline."""
    orders = one_victim_orders(TICK_ORDERS)
    engine = ProximityEngine(orders, ProximitySettings(), platform=platform or PlatformSettings())
    effects = Effects()
    for i in range(TICK_ORDERS):
        lat, lon = offset(*BASE, i * 100.0, 0.0)
        for n, device in enumerate((f"ank-{i}", f"vic-{i}")):
            engine.apply(Fix(device, 0, T0, lat, lon + n * 0.3, 5.0), T0, effects)
    flapping = [f"ank-{i}" for i in range(round(2 * TICK_ORDERS * offline_share))]
    for device in flapping:
        engine.apply(StatusUpdate(device, DeviceStatus(online=False)), T0, effects)
    start = time.process_time()  # CPU time: the two cores are shared, wall time is noisy
    for k in range(1, TICKS + 1):
        engine.tick(T0 + k * 1000, effects)
    return (time.process_time() - start) * 1000 / TICKS


def main() -> None:
    for case in ("far", "near", "zones"):
        best = max(run(case) for _ in range(3))
        print(f"{case:>6}: {best:,.0f} fixes/s")
    for share in (0.0, 0.1):
        best_ms = min(run_tick(share) for _ in range(3))
        print(f"  tick: {best_ms:.2f} ms per tick, 20,000 devices, {share:.0%} offline")
    best_ms = min(run_tick(0.0, PLATFORM_IDLE) for _ in range(3))
    print(f"  tick: {best_ms:.2f} ms per tick, 20,000 devices, platform watch idle")


if __name__ == "__main__":
    main()

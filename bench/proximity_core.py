"""Micro-benchmark of the pure proximity core: fixes per second through `ProximityEngine.apply`.

Run: `.venv/bin/python -m bench.proximity_core`. Three cases, each 200 orders (one offender,
one victim) fed 100,000 fixes in turn, 15 s apart per device:
- far: the pair 20 km apart, every order with a home circle and a work polygon 10+ km away;
- near: the pair wobbling inside the alarm ring (every fix steps both rings);
- zones: as far, but the offender passes 400 m from his zones (bounding box hit, geometry runs).
"""

from __future__ import annotations

import math
import time

from nabij.config import Order, ProximitySettings
from nabij.contract import Fix
from services.proximity.core.engine import Effects, ProximityEngine

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


def main() -> None:
    for case in ("far", "near", "zones"):
        best = max(run(case) for _ in range(3))
        print(f"{case:>6}: {best:,.0f} fixes/s")


if __name__ == "__main__":
    main()

"""The zone_exemption family: exemption windows and corridors, their truth and their outcome."""

from __future__ import annotations

import numpy as np

from simulators import geo
from simulators.quality.case import START_MS
from simulators.quality.exemption import Corridor, ZoneExemption
from simulators.quality.run import run_cases

DAM = (52.3731, 4.8926)


def test_a_window_is_the_orders_local_time_from_the_case_start() -> None:
    """Cases start on Monday 5 January 2026, 10:00 UTC: 11:00 in Amsterdam (CET)."""
    entry = ZoneExemption(18).order_entry(START_MS)
    assert entry == {"days": ["mon"], "start": "11:00", "end": "11:18", "rules": ["zone"]}
    times = np.array([0.0, 1079.0, 1080.0])
    assert ZoneExemption(18).exempt(times, np.zeros(3), np.zeros(3)).tolist() == [
        True,
        True,
        False,
    ]


def test_a_corridor_holds_within_its_half_width_of_the_line() -> None:
    """A strip 50 m either side of a 1 km line going east: 40 m beside it inside, 60 m not,
    and its GeoJSON polygon is closed."""
    a, b = DAM, geo.destination(*DAM, 90.0, 1000.0)
    corridor = Corridor(a, b, 50.0)
    mid = geo.destination(*DAM, 90.0, 500.0)
    points = [geo.destination(*mid, 0.0, 40.0), geo.destination(*mid, 180.0, 60.0)]
    lat, lon = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    assert corridor.holds(lat, lon).tolist() == [True, False]
    ring = corridor.polygon()["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 5
    entry = ZoneExemption(None, corridor).order_entry(START_MS)
    assert (entry["start"], entry["end"]) == ("00:00", "23:59")


def test_exempt_crossings_raise_nothing_and_the_rest_are_detected() -> None:
    """24 cases of zone_exemption (seed 2026): no alarm opens while the window or corridor
    holds (no false zone alarm), and every breach outside it (the window ended while he was
    inside, or he rode beside the corridor) is detected, none missed."""
    scores = run_cases(24 * 16, 2026, processes=2, families=["zone_exemption"])
    assert len(scores) == 24
    assert sum(s.false_alarms.get("zone", 0) for s in scores) == 0
    outcomes = [o for s in scores for o in s.outcomes]
    assert len(outcomes) >= 12
    assert all(o.detected for o in outcomes)
    assert any(s.opens.get("zone", 0) == 0 for s in scores)  # exempt all along: nothing raised

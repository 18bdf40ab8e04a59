"""Routes: where a device truly is over time, and geodesic helpers."""

from __future__ import annotations

import pytest

from simulators import geo
from simulators.movement import Route, RouteError, Waypoint

HOME = (52.37, 4.89)


def test_single_waypoint_is_stationary_forever() -> None:
    """A one-point route never moves and reports no course."""
    route = Route([Waypoint(*HOME)])
    assert route.stationary
    for t in (0.0, 10.0, 1e6):
        state = route.at(t)
        assert (state.lat, state.lon, state.speed_mps, state.heading_deg) == (*HOME, 0.0, None)


def test_leg_is_travelled_at_constant_speed_along_the_bearing() -> None:
    """Half-way in time is half-way in distance; the course is the leg's bearing."""
    end = geo.destination(*HOME, 90.0, 1400.0)
    route = Route([Waypoint(*HOME, speed_mps=1.4), Waypoint(*end)])
    assert route.end_s == pytest.approx(1000.0)
    mid = route.at(500.0)
    assert geo.distance_m(*HOME, mid.lat, mid.lon) == pytest.approx(700.0, abs=0.01)
    assert mid.speed_mps == 1.4
    assert mid.heading_deg == pytest.approx(90.0, abs=0.05)
    last = route.at(1000.0)
    assert (last.lat, last.lon, last.speed_mps) == (*end, 0.0)


def test_dwell_holds_the_device_before_it_leaves() -> None:
    """`dwell_s` keeps the device at its waypoint; speed carries over to later legs."""
    a = geo.destination(*HOME, 0.0, 100.0)
    b = geo.destination(*a, 0.0, 100.0)
    route = Route(
        [Waypoint(*HOME, speed_mps=2.0, dwell_s=30), Waypoint(*a, dwell_s=60), Waypoint(*b)]
    )
    assert route.at(29.0).lat == HOME[0]
    assert route.at(40.0).speed_mps == 2.0
    assert route.at(100.0).lat == pytest.approx(a[0])  # arrived at 80, waits until 140
    assert route.at(100.0).speed_mps == 0.0
    assert route.at(190.0).lat == pytest.approx(b[0])
    assert route.end_s == pytest.approx(190.0)


def test_a_leg_without_any_speed_is_an_error() -> None:
    """Travelling needs a speed; the error names the waypoint."""
    with pytest.raises(RouteError, match="waypoint 0"):
        Route([Waypoint(*HOME), Waypoint(*geo.destination(*HOME, 0.0, 10.0))])


def test_offset_moves_by_local_metres() -> None:
    """A local east/north offset lands that many metres away in that direction."""
    lat, lon = geo.offset(*HOME, east_m=3.0, north_m=4.0)
    bearing, distance = geo.inverse(*HOME, lat, lon)
    assert distance == pytest.approx(5.0, abs=1e-6)
    assert bearing == pytest.approx(36.87, abs=0.01)
    assert geo.offset(*HOME, 0.0, 0.0) == HOME

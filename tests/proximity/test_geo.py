"""Geodesic distance against geographiclib, the reference implementation of Karney's algorithm."""

from __future__ import annotations

import random

from geographiclib.geodesic import Geodesic

from services.proximity.core.geo import distance_m, held_inverse, pyproj_inverse

# (lat_min, lat_max, lon_min, lon_max)
NETHERLANDS = (50.75, 53.55, 3.35, 7.25)
EUROPE = (35.0, 71.0, -10.0, 40.0)


def test_distance_agrees_with_geographiclib_on_ten_thousand_pairs() -> None:
    """Distances 1 m..100 km across the Netherlands and Europe match geographiclib's inverse to
    0.05% or 0.5 m, whichever is larger."""
    rng = random.Random(20251201)
    geod = Geodesic.WGS84
    worst = 0.0
    for index in range(10_000):
        lat_min, lat_max, lon_min, lon_max = NETHERLANDS if index % 2 else EUROPE
        lat1 = rng.uniform(lat_min, lat_max)
        lon1 = rng.uniform(lon_min, lon_max)
        # Log-uniform length so short distances (where alarms live) are as common as long ones.
        length = 10 ** rng.uniform(0.0, 5.0)
        end = geod.Direct(lat1, lon1, rng.uniform(-180.0, 180.0), length)
        expected = geod.Inverse(lat1, lon1, end["lat2"], end["lon2"])["s12"]
        got = distance_m(lat1, lon1, end["lat2"], end["lon2"])
        tolerance = max(0.0005 * expected, 0.5)
        assert abs(got - expected) <= tolerance, (index, got, expected)
        worst = max(worst, abs(got - expected))
    assert worst < 0.5


def test_distance_is_zero_for_the_same_point_and_symmetric() -> None:
    """The same point is 0 m away, and A->B equals B->A."""
    assert distance_m(52.37, 4.89, 52.37, 4.89) == 0.0
    there = distance_m(52.37, 4.89, 51.92, 4.48)
    back = distance_m(51.92, 4.48, 52.37, 4.89)
    assert abs(there - back) < 1e-6
    assert 55_000 < there < 60_000  # Amsterdam to Rotterdam, about 57 km


def test_distance_is_pyprojs_to_the_last_bit_with_the_gil_held() -> None:
    """The distance the core uses is PROJ's `geod_inverse` called with the GIL held, and it is
    the very double pyproj's `Geod.inv` returns, on random pairs near and far, on the poles,
    across the antimeridian and between antipodes (decisions cannot move by a bit)."""
    assert distance_m is not pyproj_inverse, "this build of pyproj exports geod_inverse"
    rng = random.Random(20261206)
    points = [
        (rng.uniform(-90.0, 90.0), rng.uniform(-180.0, 180.0), rng.uniform(-90.0, 90.0),
         rng.uniform(-180.0, 180.0))
        for _ in range(20_000)
    ]  # fmt: skip
    lat, lon = rng.uniform(50.0, 54.0), rng.uniform(3.0, 7.0)
    points += [
        (lat, lon, lat + rng.gauss(0, 0.01), lon + rng.gauss(0, 0.01)) for _ in range(20_000)
    ]
    points += [
        (90.0, 0.0, -90.0, 0.0),
        (0.0, 0.0, 0.0, 180.0),
        (0.0, 0.0, 0.5, 179.7),
        (52.0, 179.9999, 52.0, -179.9999),
        (lat, lon, lat, lon),
    ]
    for point in points:
        assert distance_m(*point) == pyproj_inverse(*point), point


def test_without_geod_inverse_there_is_no_held_inverse() -> None:
    """An object that does not export PROJ's `geod_inverse` gives no held inverse (the module then
    falls back on pyproj's `Geod.inv`, the same distance with the GIL released)."""
    assert held_inverse(None) is None  # the interpreter itself: no PROJ in its symbols
    assert held_inverse("/nonexistent/libproj.so") is None

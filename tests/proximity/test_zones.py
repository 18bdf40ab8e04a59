"""Exclusion zones: geometry against a direct shapely check, and the zone rules in the engine."""

from __future__ import annotations

import random

import msgspec
from geographiclib.geodesic import Geodesic
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from shapely.geometry import Point, Polygon

from nabij.config import Order, ProximitySettings, Zone
from nabij.contract import Warn
from services.proximity.core.zones import RD_NEW, ZoneSet, projection_for
from tests.proximity import DAM, OFFENDER, T0, VICTIM, Drive, engine, of_action, opens, point_at

S = 1_000


def polygon_zone(name: str, centre: tuple[float, float], size_deg: float) -> Zone:
    lat, lon = centre
    ring = [
        [lon - size_deg, lat - size_deg * 0.6],
        [lon + size_deg, lat - size_deg * 0.8],
        [lon + size_deg * 0.3, lat],  # a notch: not convex
        [lon + size_deg * 1.1, lat + size_deg * 0.7],
        [lon - size_deg * 0.9, lat + size_deg * 0.9],
        [lon - size_deg, lat - size_deg * 0.6],
    ]
    return Zone.model_validate(
        {"name": name, "geometry": {"type": "Polygon", "coordinates": [ring]}}
    )


def test_projection_is_rd_new_in_the_netherlands_and_utm_elsewhere() -> None:
    """Amsterdam is projected to RD New; Madrid to UTM 30N, Sydney to UTM 56S."""
    assert projection_for(52.37, 4.89) == RD_NEW
    assert projection_for(40.42, -3.70) == "EPSG:32630"
    assert projection_for(-33.87, 151.21) == "EPSG:32756"


def test_polygon_containment_agrees_with_a_direct_shapely_check() -> None:
    """For 5,000 seeded random points around a non-convex polygon (in the Netherlands and in
    Spain), the zone set's containment equals shapely's `contains` on the polygon projected
    independently to the same CRS."""
    rng = random.Random(1234)
    for centre in ((52.37, 4.89), (40.42, -3.70)):
        zone = polygon_zone("work", centre, 0.01)
        zone_set = ZoneSet(OFFENDER, [("O-1", zone)], ProximitySettings())
        spec = zone_set.specs[0]
        crs = projection_for(*centre)
        forward = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        assert zone.geometry is not None
        exterior = [forward.transform(lon, lat) for lon, lat in zone.geometry.coordinates[0]]
        reference = Polygon(exterior)
        for _ in range(5_000):
            lat = centre[0] + rng.uniform(-0.015, 0.015)
            lon = centre[1] + rng.uniform(-0.015, 0.015)
            x, y = zone_set.projection.xy(lat, lon)
            assert spec.shape.contains(x, y) == reference.contains(
                Point(*forward.transform(lon, lat))
            )


@settings(max_examples=300, deadline=None)
@given(distance=st.floats(0.0, 600.0), bearing=st.floats(0.0, 360.0))
def test_circle_containment_agrees_with_the_geodesic_distance(
    distance: float, bearing: float
) -> None:
    """A point is inside a 300 m circular zone exactly when its geodesic (WGS84, geographiclib)
    distance to the centre is at most 300 m, except within 0.5 m of the edge, where the
    projection's scale is allowed to decide."""
    zone = Zone(name="home", lat=DAM[0], lon=DAM[1], radius_m=300)
    zone_set = ZoneSet(OFFENDER, [("O-1", zone)], ProximitySettings())
    lat, lon = point_at(distance, bearing)
    geodesic_m = Geodesic.WGS84.Inverse(DAM[0], DAM[1], lat, lon)["s12"]
    assume(abs(geodesic_m - 300) > 0.5)
    x, y = zone_set.projection.xy(lat, lon)
    assert zone_set.specs[0].shape.contains(x, y) == (geodesic_m <= 300)


def test_the_strtree_finds_the_same_zones_as_the_plain_list() -> None:
    """With many zones (an STRtree), `near` returns every zone the per-zone box check returns,
    for random query boxes (it may add a near miss, which the exact geometry then settles)."""
    rng = random.Random(9)
    zones = [
        (
            "O-1",
            Zone(name=f"z{i}", lat=52 + rng.uniform(0, 1), lon=4 + rng.uniform(0, 2), radius_m=200),
        )
        for i in range(40)
    ]
    zone_set = ZoneSet(OFFENDER, zones, ProximitySettings())
    assert zone_set._tree is not None
    for _ in range(300):
        lat, lon = 52 + rng.uniform(-0.1, 1.1), 4 + rng.uniform(-0.1, 2.1)
        box = (lat, lon, lat + rng.uniform(0, 0.02), lon + rng.uniform(0, 0.02))
        plain = {
            s.name
            for s in zone_set.specs
            if not (
                box[2] < s.reach[0]
                or box[0] > s.reach[2]
                or box[3] < s.reach[1]
                or box[1] > s.reach[3]
            )
        }
        assert {s.name for s in zone_set.near(*box)} >= plain


def zone_order(**zone: object) -> Order:
    return Order.model_validate(
        {
            "id": "O-1",
            "offender_device": OFFENDER,
            "victim_devices": [VICTIM],
            "alarm_m": 500,
            "zone": [{"name": "home", "lat": DAM[0], "lon": DAM[1], "radius_m": 300, **zone}],
        }
    )


def test_entering_a_zone_opens_after_the_dwell_and_leaving_clears_it() -> None:
    """An offender walking into the home zone opens `zone_alarm` (naming the zone, with the
    offender's position and no victim position) after the enter dwell; walking out clears it
    after the exit dwell. The offender is warned with a level only."""
    drive = Drive(engine([zone_order()]))
    drive.fix(VICTIM, T0, 9000, bearing=0)
    for i, distance in enumerate([800, 500, 290, 280, 270, 700, 800, 900, 900, 900, 900, 900]):
        drive.fix(OFFENDER, T0 + i * 15 * S, distance)
    signals = [s for s in drive.effects.signals if s.kind == "zone_alarm"]
    assert [(s.action, s.zone) for s in signals] == [("open", "home"), ("clear", "home")]
    opened = signals[0]
    assert opened.alarm_key == "zone_alarm|O-1|offender|home"
    assert opened.victim is None and opened.offender is not None
    assert "'home'" in opened.reason and "52." not in opened.reason
    assert opened.confidence is not None and opened.confidence > 0.9
    for target, command in drive.effects.commands:
        assert target == OFFENDER or not isinstance(command, Warn)
        assert set(msgspec.to_builtins(command)) <= {"type", "seconds", "level"}


def test_deep_inside_opens_at_once() -> None:
    """Deeper than zone_deep_m (50 m) inside opens on the first fix, without the dwell."""
    drive = Drive(engine([zone_order()]))
    drive.fix(OFFENDER, T0, 2000)
    step_effects = drive.fix(OFFENDER, T0 + 60 * S, 100)
    assert [s.kind for s in opens(step_effects.signals)] == ["zone_alarm"]


def test_a_coarse_fix_near_a_zone_opens_nothing_and_clears_nothing() -> None:
    """A 1,500 m cell fix at the zone's edge neither opens the zone (it is not certainly
    inside) nor, once the zone is open, clears it."""
    drive = Drive(engine([zone_order()]))
    drive.fix(OFFENDER, T0, 2000)
    drive.fix(OFFENDER, T0 + 60 * S, 310, acc=1500)
    drive.fix(OFFENDER, T0 + 75 * S, 320, acc=1500)
    assert opens(drive.effects.signals) == []
    drive.fix(OFFENDER, T0 + 200 * S, 0)
    for i in range(10):
        drive.fix(OFFENDER, T0 + (215 + 15 * i) * S, 900, acc=1500)
    assert of_action(drive.effects.signals, "clear", "zone_alarm") == []


@settings(max_examples=100, deadline=None)
@given(noise=st.lists(st.floats(-24.0, 24.0), min_size=10, max_size=120), seed=st.integers(0, 99))
def test_zone_wobble_below_the_exit_margin_never_flaps(noise: list[float], seed: int) -> None:
    """Fixes wobbling within +-24 m of the zone's edge (the margin is 50 m): the zone opens at
    most once and never clears."""
    rng = random.Random(seed)
    drive = Drive(engine([zone_order()]))
    for i, n in enumerate(noise):
        drive.fix(OFFENDER, T0 + i * 10 * S, 300 + n, bearing=rng.uniform(80, 100))
    kinds = [(s.action, s.kind) for s in drive.effects.signals if s.kind == "zone_alarm"]
    assert kinds in ([], [("open", "zone_alarm")])


def test_a_fix_far_from_every_zone_is_not_projected() -> None:
    """Bounding boxes first: a fix 20 km from every zone never reaches the projection."""
    drive = Drive(engine([zone_order()]))
    zone_set = drive.engine._zones._zones[OFFENDER]
    calls = []
    real = zone_set.projection.xy
    zone_set.projection.xy = lambda lat, lon: calls.append(1) or real(lat, lon)  # type: ignore[method-assign]
    for i in range(5):
        drive.fix(OFFENDER, T0 + i * 15 * S, 20_000 + i)
    assert calls == []

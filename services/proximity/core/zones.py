"""Fixed exclusion zones in a metric projection: containment, distance to the boundary, and
whether the straight path between two fixes crosses a zone.

Geometry is projected once, when the engine is built: to RD New (EPSG:28992) in and around the
Netherlands, else to the UTM zone of the zones' centre. Every fix is first held against
bounding boxes in degrees (a few comparisons); only a fix near a zone is projected and measured
with shapely's prepared geometries, through an STRtree when an offender has many zones.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import shapely
from pyproj import Transformer
from shapely.geometry import LineString, Point, Polygon, box

from nabij.orders import PolygonGeometry, Zone
from nabij.settings import ProximitySettings
from services.proximity.core.hysteresis import RingParams

RD_NEW: Final = "EPSG:28992"
# (lat_min, lat_max, lon_min, lon_max): RD New's area of use, with a little room.
RD_AREA: Final = (50.6, 53.8, 3.0, 7.5)
STRTREE_FROM: Final = 16
"""An offender with at least this many zones gets an STRtree instead of a list."""
CIRCLE_QUAD_SEGS: Final = 32
BBox = tuple[float, float, float, float]
"""(min_lat, min_lon, max_lat, max_lon), WGS84 degrees."""


def projection_for(lat: float, lon: float) -> str:
    """RD New for the Netherlands, else the WGS84 UTM zone of the point."""
    lat_min, lat_max, lon_min, lon_max = RD_AREA
    if lat_min <= lat <= lat_max and lon_min <= lon <= lon_max:
        return RD_NEW
    zone = min(60, max(1, int((lon + 180.0) // 6.0) + 1))
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


@functools.cache
def _transformer(crs: str) -> Any:
    # Building a transformer costs tens of milliseconds: one per CRS, shared by every zone set.
    return Transformer.from_crs("EPSG:4326", crs, always_xy=True)


class Projection:
    """WGS84 (lat, lon) to metric (x, y) in one CRS."""

    def __init__(self, crs: str) -> None:
        self.crs = crs
        self._forward = _transformer(crs).transform

    def xy(self, lat: float, lon: float) -> tuple[float, float]:
        x, y = self._forward(lon, lat)
        return float(x), float(y)

    def geometry(self, polygons: Sequence[Sequence[Sequence[tuple[float, float]]]]) -> Any:
        """Project polygons given as rings of (lon, lat); returns a shapely (Multi)Polygon."""
        parts = []
        for rings in polygons:
            projected = [[self.xy(lat, lon) for lon, lat in ring] for ring in rings]
            parts.append(Polygon(projected[0], projected[1:]))
        return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


@dataclass(frozen=True, slots=True)
class Shape:
    """One zone or corridor, projected and prepared."""

    geometry: Any
    """shapely (Multi)Polygon in the projected CRS, prepared (for a circle: its polygon)."""
    boundary: Any
    circle: tuple[float, float, float] | None
    """Projected centre and radius: circles are measured exactly, not by their polygon."""
    size_m: float
    """Radius, or the radius of a circle of the polygon's area: what counts as a coarse fix."""
    bbox: BBox

    def signed_m(self, x: float, y: float) -> float:
        """Distance to the boundary, negative inside."""
        if self.circle is not None:
            cx, cy, radius = self.circle
            return math.hypot(x - cx, y - cy) - radius
        if shapely.contains_xy(self.geometry, x, y):
            return -float(self.boundary.distance(Point(x, y)))
        return float(self.geometry.distance(Point(x, y)))

    def contains(self, x: float, y: float) -> bool:
        return self.signed_m(x, y) <= 0.0

    def crossed(self, a: tuple[float, float], b: tuple[float, float]) -> bool:
        """Whether the straight segment a-b passes through the zone."""
        if self.circle is not None:
            cx, cy, radius = self.circle
            return _segment_point_distance(a, b, (cx, cy)) <= radius
        return bool(self.geometry.intersects(LineString([a, b])))


def build_shape(projection: Projection, zone: Zone | PolygonGeometry) -> Shape:
    if isinstance(zone, Zone) and zone.geometry is None:
        assert zone.lat is not None and zone.lon is not None and zone.radius_m is not None
        x, y = projection.xy(zone.lat, zone.lon)
        radius = zone.radius_m
        geometry = Point(x, y).buffer(radius, quad_segs=CIRCLE_QUAD_SEGS)
        dlat = radius / 110_500.0
        dlon = radius / (111_000.0 * max(0.01, math.cos(math.radians(zone.lat))))
        bbox = (zone.lat - dlat, zone.lon - dlon, zone.lat + dlat, zone.lon + dlon)
        circle: tuple[float, float, float] | None = (x, y, radius)
    else:
        polygon = zone.geometry if isinstance(zone, Zone) else zone
        assert polygon is not None
        rings = polygon.polygons()
        geometry = projection.geometry(rings)
        lons = [lon for rs in rings for lon, _ in rs[0]]
        lats = [lat for rs in rings for _, lat in rs[0]]
        bbox = (min(lats), min(lons), max(lats), max(lons))
        circle = None
        radius = math.sqrt(float(geometry.area) / math.pi)
    shapely.prepare(geometry)
    return Shape(geometry, geometry.boundary, circle, radius, bbox)


def grow(bbox: BBox, metres: float) -> BBox:
    """`bbox` widened by `metres` on every side (generously: degrees of longitude shrink)."""
    lat_min, lon_min, lat_max, lon_max = bbox
    dlat = metres / 110_500.0
    worst_lat = min(89.0, max(abs(lat_min), abs(lat_max)))
    dlon = metres / (111_000.0 * math.cos(math.radians(worst_lat)))
    return (lat_min - dlat, lon_min - dlon, lat_max + dlat, lon_max + dlon)


def touches(bbox: BBox, lat_min: float, lon_min: float, lat_max: float, lon_max: float) -> bool:
    return not (lat_max < bbox[0] or lat_min > bbox[2] or lon_max < bbox[1] or lon_min > bbox[3])


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    order_id: str
    offender: str
    name: str
    key: str
    """`{order_id}|{name}`: the zone's entry in the offender's `DeviceState.zones`."""
    shape: Shape
    reach: BBox
    """The zone's box grown by how far a fix can be outside and still count (entry share)."""
    params: RingParams


class ZoneSet:
    """All zones of one offender device (from every order he is in), in one projection."""

    def __init__(
        self, offender: str, zones: Sequence[tuple[str, Zone]], settings: ProximitySettings
    ) -> None:
        self.source = tuple(zones)
        """(order id, zone) as given: a new version of the orders reuses the set if they match."""
        lats: list[float] = []
        lons: list[float] = []
        for _, zone in zones:
            if zone.geometry is not None:
                for rings in zone.geometry.polygons():
                    lons.extend(lon for lon, _ in rings[0])
                    lats.extend(lat for _, lat in rings[0])
            elif zone.lat is not None and zone.lon is not None:
                lats.append(zone.lat)
                lons.append(zone.lon)
        self.projection = Projection(
            projection_for((min(lats) + max(lats)) / 2, (min(lons) + max(lons)) / 2)
        )
        specs: list[ZoneSpec] = []
        for order_id, zone in zones:
            shape = build_shape(self.projection, zone)
            params = RingParams(
                kind="zone_alarm",
                ring_m=0.0,
                exit_margin_m=settings.zone_exit_margin_m,
                enter_dwell_ms=round(settings.enter_dwell_s * 1000),
                exit_dwell_ms=round(settings.exit_dwell_s * 1000),
                critical_m=-settings.zone_deep_m,
            )
            # A fix at most size/2 outside may count as inside (the accuracy rule's entry share).
            reach = grow(shape.bbox, shape.size_m / 2 + 1.0)
            key = f"{order_id}|{zone.name}"
            specs.append(ZoneSpec(order_id, offender, zone.name, key, shape, reach, params))
        self.specs = tuple(specs)
        self.reach = (
            min(s.reach[0] for s in specs),
            min(s.reach[1] for s in specs),
            max(s.reach[2] for s in specs),
            max(s.reach[3] for s in specs),
        )
        self._tree: Any = None
        if len(specs) >= STRTREE_FROM:
            self._tree = shapely.STRtree([box(*_xy_box(self.projection, s.reach)) for s in specs])

    def near(
        self, lat_min: float, lon_min: float, lat_max: float, lon_max: float
    ) -> list[ZoneSpec]:
        """Zones whose reach touches the given box (degrees); cheap when none do."""
        if not touches(self.reach, lat_min, lon_min, lat_max, lon_max):
            return []
        if self._tree is None:
            return [s for s in self.specs if touches(s.reach, lat_min, lon_min, lat_max, lon_max)]
        query = box(*_xy_box(self.projection, (lat_min, lon_min, lat_max, lon_max)))
        return [self.specs[int(i)] for i in sorted(self._tree.query(query))]


def _xy_box(projection: Projection, bbox: BBox) -> tuple[float, float, float, float]:
    corners = [projection.xy(lat, lon) for lat in (bbox[0], bbox[2]) for lon in (bbox[1], bbox[3])]
    xs = [c[0] for c in corners]
    ys = [c[1] for c in corners]
    return min(xs), min(ys), max(xs), max(ys)


def _segment_point_distance(
    a: tuple[float, float], b: tuple[float, float], p: tuple[float, float]
) -> float:
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    length2 = dx * dx + dy * dy
    t = (
        0.0
        if length2 == 0.0
        else max(0.0, min(1.0, ((p[0] - ax) * dx + (p[1] - ay) * dy) / length2))
    )
    return math.hypot(ax + t * dx - p[0], ay + t * dy - p[1])

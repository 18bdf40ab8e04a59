"""Geodesy for the simulators: distances, moving along bearings, local metric offsets (WGS84)."""

from __future__ import annotations

import math
from typing import Final

from pyproj import Geod

GEOD: Final = Geod(ellps="WGS84")


def destination(
    lat: float, lon: float, bearing_deg: float, distance_m: float
) -> tuple[float, float]:
    """The point `distance_m` from (lat, lon) along the geodesic leaving at `bearing_deg`."""
    lon2, lat2, _ = GEOD.fwd(lon, lat, bearing_deg, distance_m)
    return float(lat2), float(lon2)


def inverse(lat1: float, lon1: float, lat2: float, lon2: float) -> tuple[float, float]:
    """(initial bearing in degrees [0, 360), distance in metres) from point 1 to point 2."""
    azimuth, _, distance = GEOD.inv(lon1, lat1, lon2, lat2)
    return float(azimuth) % 360.0, float(distance)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    return inverse(lat1, lon1, lat2, lon2)[1]


def along(
    lat: float, lon: float, bearing_deg: float, distance_m: float
) -> tuple[float, float, float]:
    """Like `destination`, plus the course (degrees [0, 360)) at the arrival point."""
    lon2, lat2, back_azimuth = GEOD.fwd(lon, lat, bearing_deg, distance_m)
    return float(lat2), float(lon2), (float(back_azimuth) + 180.0) % 360.0


def offset(lat: float, lon: float, east_m: float, north_m: float) -> tuple[float, float]:
    """Shift a point by a small local east/north offset in metres (GPS error sized, not km)."""
    distance = math.hypot(east_m, north_m)
    if distance == 0.0:
        return lat, lon
    return destination(lat, lon, math.degrees(math.atan2(east_m, north_m)), distance)

"""Geodesic distance on the WGS84 ellipsoid."""

from __future__ import annotations

from typing import Final

from pyproj import Geod

# Built once: pyproj's scalar fast path then costs about a microsecond per call.
_WGS84: Final = Geod(ellps="WGS84")
_inverse: Final = _WGS84.inv


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Geodesic distance in metres between two WGS84 points given in degrees."""
    distance: float = _inverse(lon1, lat1, lon2, lat2)[2]
    return distance

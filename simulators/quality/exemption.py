"""Exemption windows and corridors of a case's zone: the order's `exemption` entry, and when the
truth is exempt (computed here from the window and the strip's geometry, not by the core)."""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from nabij.orders import DEFAULT_TIMEZONE, WEEKDAYS
from simulators import geo

METRES_PER_DEG: Final = 111_195.0


@dataclass(frozen=True, slots=True)
class Corridor:
    """A straight strip: the segment `a`-`b` (lat, lon) widened by `half_width_m` either side."""

    a: tuple[float, float]
    b: tuple[float, float]
    half_width_m: float

    def polygon(self) -> dict[str, Any]:
        """The strip as a GeoJSON Polygon ([lon, lat] positions)."""
        bearing, _ = geo.inverse(*self.a, *self.b)
        corners = [
            geo.destination(*end, bearing + side, self.half_width_m)
            for end, side in ((self.a, 90.0), (self.b, 90.0), (self.b, -90.0), (self.a, -90.0))
        ]
        ring = [[lon, lat] for lat, lon in (*corners, corners[0])]
        return {"type": "Polygon", "coordinates": [ring]}

    def holds(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Whether each point lies within the strip (local flat metres around `a`)."""
        scale = METRES_PER_DEG * math.cos(math.radians(self.a[0]))
        bn = (self.b[0] - self.a[0]) * METRES_PER_DEG
        be = (self.b[1] - self.a[1]) * scale
        pn = (lat - self.a[0]) * METRES_PER_DEG
        pe = (lon - self.a[1]) * scale
        share = np.clip((pn * bn + pe * be) / (bn * bn + be * be), 0.0, 1.0)
        off: np.ndarray = np.hypot(pn - share * bn, pe - share * be)
        return off <= self.half_width_m


@dataclass(frozen=True, slots=True)
class ZoneExemption:
    """Every zone rule of the order is exempt from the case's start for `minutes` (None: all
    day) and, with a `corridor`, only while the offender is inside it."""

    minutes: int | None
    corridor: Corridor | None = None

    def order_entry(self, start_ms: int) -> dict[str, Any]:
        """The order's `exemption` item, in its (default) time zone's local time."""
        local = dt.datetime.fromtimestamp(start_ms / 1000, zoneinfo.ZoneInfo(DEFAULT_TIMEZONE))
        start, end = "00:00", "23:59"
        if self.minutes is not None:
            start, end = f"{local:%H:%M}", f"{local + dt.timedelta(minutes=self.minutes):%H:%M}"
        entry: dict[str, Any] = {
            "days": [WEEKDAYS[local.weekday()]],
            "start": start,
            "end": end,
            "rules": ["zone"],
        }
        if self.corridor is not None:
            entry["corridor_geometry"] = self.corridor.polygon()
        return entry

    def exempt(self, times: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """At each case time (s), with the offender's true position: whether the zones are
        exempt."""
        held = np.ones(len(times), dtype=bool)
        if self.minutes is not None:
            held &= times < 60.0 * self.minutes
        if self.corridor is not None:
            held &= self.corridor.holds(lat, lon)
        return held

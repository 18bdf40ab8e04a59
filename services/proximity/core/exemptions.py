"""Scheduled exemptions: weekly windows, in the order's time zone, that suspend some rules.

A window names its rules ("proximity", "zone", "zone:NAME"). With a corridor, it holds only
while the offender's latest accepted fix lies inside the corridor. The engine asks `exempt(...)`
before each decision; the tick asks again for every pair or zone that was exempt, so a window
that ends while the offender is inside opens the alarm then, without waiting for a fix.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import Final

from nabij.contract import Position
from nabij.orders import WEEKDAYS, AnyOrder
from services.proximity.core.zones import Projection, Shape, build_shape, projection_for

PROXIMITY: Final = "proximity"


@dataclass(frozen=True, slots=True)
class Window:
    days: frozenset[int]
    """Weekdays the window starts on, Monday 0."""
    start_min: int
    end_min: int
    """Minutes after local midnight; end <= start runs past midnight."""
    proximity: bool
    all_zones: bool
    zones: frozenset[str]
    corridor: tuple[Projection, Shape] | None

    def covers(self, rule: str) -> bool:
        if rule == PROXIMITY:
            return self.proximity
        return self.all_zones or rule in self.zones

    def open_at(self, local: dt.datetime) -> bool:
        minute = local.hour * 60 + local.minute
        weekday = local.weekday()
        if self.start_min < self.end_min:
            return weekday in self.days and self.start_min <= minute < self.end_min
        return (weekday in self.days and minute >= self.start_min) or (
            (weekday - 1) % 7 in self.days and minute < self.end_min
        )

    def holds_for(self, offender: Position | None) -> bool:
        if self.corridor is None:
            return True
        if offender is None:
            return False
        projection, shape = self.corridor
        return shape.contains(*projection.xy(offender.lat, offender.lon))


class Exemptions:
    """The exemption windows of one order."""

    def __init__(self, order: AnyOrder) -> None:
        self.tz = zoneinfo.ZoneInfo(order.timezone)
        windows: list[Window] = []
        for item in order.exemption:
            start, end = item.minutes()
            corridor = None
            if item.corridor_geometry is not None:
                ring = item.corridor_geometry.polygons()[0][0]
                centre_lon, centre_lat = ring[0]
                projection = Projection(projection_for(centre_lat, centre_lon))
                corridor = (projection, build_shape(projection, item.corridor_geometry))
            windows.append(
                Window(
                    days=frozenset(WEEKDAYS.index(day) for day in item.days),
                    start_min=start,
                    end_min=end,
                    proximity=PROXIMITY in item.rules,
                    all_zones="zone" in item.rules,
                    zones=frozenset(r[5:] for r in item.rules if r.startswith("zone:")),
                    corridor=corridor,
                )
            )
        self.windows = tuple(windows)

    def exempt(self, rule: str, t_ms: int, offender: Position | None) -> bool:
        """Whether `rule` ("proximity" or a zone name) is suspended at `t_ms` (epoch ms)."""
        local: dt.datetime | None = None
        for window in self.windows:
            if not window.covers(rule):
                continue
            if local is None:
                local = dt.datetime.fromtimestamp(t_ms / 1000.0, self.tz)
            if window.open_at(local) and window.holds_for(offender):
                return True
        return False

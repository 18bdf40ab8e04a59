"""Routes: waypoints with speeds and dwell times, and where a device truly is at time t.

Legs follow the geodesic between waypoints at constant speed. Before the first waypoint's dwell
ends the device waits there; after the last waypoint it stays put for good.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from nabij.failures import NabijError
from simulators import geo


class RouteError(NabijError, ValueError):
    """The waypoints do not describe a route that can be travelled; `index` is the waypoint."""

    def __init__(self, index: int, reason: str) -> None:
        self.index = index
        self.reason = reason
        super().__init__(f"waypoint {index}: {reason}")


@dataclass(frozen=True, slots=True)
class Waypoint:
    """An absolute point. `speed_mps` is the speed of the leg that *leaves* this point (and of
    later legs until another waypoint sets one); `dwell_s` is the wait here before leaving."""

    lat: float
    lon: float
    speed_mps: float | None = None
    dwell_s: float = 0.0


@dataclass(frozen=True, slots=True)
class State:
    """The true position and motion of a device at one moment."""

    lat: float
    lon: float
    speed_mps: float
    heading_deg: float | None  # None while standing: a course is meaningless then


@dataclass(frozen=True, slots=True)
class _Segment:
    start_s: float
    end_s: float
    lat: float
    lon: float
    bearing_deg: float
    speed_mps: float  # 0 for a dwell


class Route:
    """A piecewise schedule of dwells and constant-speed geodesic legs."""

    def __init__(self, waypoints: Sequence[Waypoint]) -> None:
        if not waypoints:
            raise RouteError(0, "a route needs at least one waypoint")
        self.waypoints = tuple(waypoints)
        self._segments: list[_Segment] = []
        t = 0.0
        speed: float | None = None
        for i, point in enumerate(self.waypoints):
            if point.dwell_s < 0:
                raise RouteError(i, "dwell_s must not be negative")
            if point.dwell_s > 0:
                self._segments.append(
                    _Segment(t, t + point.dwell_s, point.lat, point.lon, 0.0, 0.0)
                )
                t += point.dwell_s
            if point.speed_mps is not None:
                if point.speed_mps <= 0:
                    raise RouteError(i, "speed_mps must be positive")
                speed = point.speed_mps
            if i + 1 == len(self.waypoints):
                break
            nxt = self.waypoints[i + 1]
            bearing, distance = geo.inverse(point.lat, point.lon, nxt.lat, nxt.lon)
            if distance < 0.01:
                continue
            if speed is None:
                raise RouteError(
                    i,
                    f"no speed_mps for the leg to waypoint {i + 1} "
                    "(set it on this or an earlier waypoint)",
                )
            self._segments.append(
                _Segment(t, t + distance / speed, point.lat, point.lon, bearing, speed)
            )
            t += distance / speed
        self.end_s = t
        self._starts = [segment.start_s for segment in self._segments]
        last = self.waypoints[-1]
        self._final = State(last.lat, last.lon, 0.0, None)

    @property
    def stationary(self) -> bool:
        return all(segment.speed_mps == 0.0 for segment in self._segments)

    def at(self, t_s: float) -> State:
        """Where the device truly is `t_s` seconds after the scenario started."""
        if t_s >= self.end_s or not self._segments:
            return self._final
        if t_s <= 0:
            t_s = 0.0
        segment = self._segments[max(0, bisect.bisect_right(self._starts, t_s) - 1)]
        if segment.speed_mps == 0.0:
            return State(segment.lat, segment.lon, 0.0, None)
        travelled = (t_s - segment.start_s) * segment.speed_mps
        lat, lon, course = geo.along(segment.lat, segment.lon, segment.bearing_deg, travelled)
        return State(lat, lon, segment.speed_mps, course)

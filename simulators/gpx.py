"""GPX tracks as device movement: a recorded (or generated) trip replayed at its own pace.

Each pair of consecutive track points becomes a leg travelled at the speed the timestamps
imply; a point repeated in place becomes a dwell. The first point's time is scenario time 0
(plus `start_s`, during which the device waits at the first point).

`python -m simulators.gpx` regenerates the packaged `scenarios/commute.gpx` (made here, from
street-level waypoints through Amsterdam, not downloaded).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import gpxpy
import gpxpy.gpx

from nabij.failures import NabijError
from simulators import geo
from simulators.movement import Route, Waypoint

# Closer than this, two track points are the same place: the device stood still.
SAME_PLACE_M: Final = 0.5


class GpxError(NabijError, ValueError):
    """The GPX file cannot be replayed."""


def route_from_gpx(path: Path, start_s: float = 0.0) -> Route:
    """The first track of `path` (all its segments, in order) as a Route."""
    try:
        with path.open(encoding="utf-8") as handle:
            parsed = gpxpy.parse(handle)
    except OSError as err:
        raise GpxError(f"{path}: cannot read: {err.strerror or err}") from None
    except gpxpy.gpx.GPXException as err:
        raise GpxError(f"{path}: not valid GPX: {err}") from None
    points = [p for track in parsed.tracks[:1] for seg in track.segments for p in seg.points]
    if not points:
        raise GpxError(f"{path}: no track points")
    if any(p.time is None for p in points):
        raise GpxError(f"{path}: every track point needs a <time> to be replayed")
    waypoints: list[Waypoint] = []
    dwell = start_s
    anchor = points[0]
    for point in points[1:]:
        assert point.time is not None and anchor.time is not None
        dt = (point.time - anchor.time).total_seconds()
        if dt <= 0:
            raise GpxError(f"{path}: track point times must increase ({point.time})")
        distance = geo.distance_m(
            anchor.latitude, anchor.longitude, point.latitude, point.longitude
        )
        if distance < SAME_PLACE_M:
            dwell += dt  # standing: fold into the wait at the anchor
            anchor = gpxpy.gpx.GPXTrackPoint(anchor.latitude, anchor.longitude, time=point.time)
            continue
        waypoints.append(Waypoint(anchor.latitude, anchor.longitude, distance / dt, dwell))
        dwell = 0.0
        anchor = point
    waypoints.append(Waypoint(anchor.latitude, anchor.longitude, None, dwell))
    return Route(waypoints)


# A bicycle commute through Amsterdam: Oost (Dapperbuurt) to Zuid (Museumplein), with stops at
# traffic lights. Coordinates follow real streets closely enough for a simulation.
COMMUTE_WAYPOINTS: Final = (
    Waypoint(52.36330, 4.93130, 4.5, 0.0),  # Dapperstraat, home
    Waypoint(52.36080, 4.92640, 4.5, 30.0),  # Mauritskade, traffic light
    Waypoint(52.36010, 4.91590, 5.0, 0.0),  # Sarphatistraat
    Waypoint(52.35860, 4.90800, 4.5, 40.0),  # Weesperplein, traffic light
    Waypoint(52.35760, 4.89920, 4.5, 0.0),  # Nicolaas Witsenkade
    Waypoint(52.35830, 4.88850, 4.0, 25.0),  # Vijzelgracht crossing
    Waypoint(52.35800, 4.88150, 4.5, 0.0),  # Stadhouderskade
    Waypoint(52.35730, 4.87950, 4.5, 0.0),  # Museumplein, work
)
COMMUTE_START: Final = datetime(2026, 1, 5, 7, 30, tzinfo=UTC)
COMMUTE_STEP_S: Final = 5.0


def commute_gpx() -> str:
    """The packaged commute as GPX text: a point every 5 s, timed from the waypoint speeds."""
    route = Route(COMMUTE_WAYPOINTS)
    document = gpxpy.gpx.GPX()
    document.creator = "nabij simulators (generated)"
    track = gpxpy.gpx.GPXTrack(name="commute Oost - Museumplein by bicycle")
    segment = gpxpy.gpx.GPXTrackSegment()
    t = 0.0
    while True:
        state = route.at(t)
        when = COMMUTE_START + timedelta(seconds=t)
        segment.points.append(
            gpxpy.gpx.GPXTrackPoint(round(state.lat, 6), round(state.lon, 6), time=when)
        )
        if t >= route.end_s:
            break
        t = min(t + COMMUTE_STEP_S, route.end_s)
    track.segments.append(segment)
    document.tracks.append(track)
    return document.to_xml()


def main(argv: list[str]) -> int:
    target = Path(argv[0]) if argv else Path(__file__).parent / "scenarios" / "commute.gpx"
    target.write_text(commute_gpx(), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

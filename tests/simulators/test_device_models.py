"""Battery, clock skew and GPX tracks: the parts of a device that are not its radio."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators import geo
from simulators.battery import Battery, Charging
from simulators.device_clock import ClockSkew
from simulators.gpx import COMMUTE_WAYPOINTS, GpxError, commute_gpx, route_from_gpx
from simulators.movement import Route

PACKAGED_GPX = Path(__file__).parents[2] / "simulators" / "scenarios" / "commute.gpx"


def test_battery_drains_charges_and_stays_within_0_and_100() -> None:
    """Drain per hour, charging windows add (and stop the drain), clamped at both ends."""
    battery = Battery(30.0, 60.0, [Charging(1800.0, 5400.0, 120.0)])
    assert battery.at(0) == 30
    assert battery.level_at(900.0) == pytest.approx(15.0)
    assert battery.level_at(1800.0) == pytest.approx(0.0)
    assert battery.level_at(3600.0) == pytest.approx(60.0)
    assert battery.level_at(5400.0) == pytest.approx(100.0)  # clamped while charging
    assert battery.level_at(7200.0) == pytest.approx(70.0)
    assert Battery(5.0, 60.0).level_at(3600.0) == 0.0


def test_clock_skew_offsets_and_drifts_the_device_timestamp() -> None:
    """`ts` = true time + offset + drift (ppm) x elapsed time."""
    assert ClockSkew().stamp(1_000_000, 50.0) == 1_000_000
    assert ClockSkew(offset_s=-90.0).stamp(1_000_000, 0.0) == 910_000
    # 100 ppm over 10,000 s is one second.
    assert ClockSkew(drift_ppm=100.0).stamp(1_000_000, 10_000.0) == 1_001_000


def test_packaged_gpx_is_the_generated_commute_and_replays_its_route() -> None:
    """The shipped file is what `python -m simulators.gpx` writes; replayed, it follows the
    original route at its speeds and ends at work after the same time."""
    assert PACKAGED_GPX.read_text(encoding="utf-8") == commute_gpx()
    replay = route_from_gpx(PACKAGED_GPX, start_s=60.0)
    original = Route(COMMUTE_WAYPOINTS)
    assert replay.end_s == pytest.approx(original.end_s + 60.0, abs=1.0)
    assert replay.at(30.0).speed_mps == 0.0  # waiting for the start
    for t in (100.0, 400.0, 700.0):
        a, b = replay.at(t + 60.0), original.at(t)
        assert geo.distance_m(a.lat, a.lon, b.lat, b.lon) < 5.0
    end = replay.at(1e6)
    last = COMMUTE_WAYPOINTS[-1]
    assert geo.distance_m(end.lat, end.lon, last.lat, last.lon) < 1.0


def test_gpx_without_times_is_refused(tmp_path: Path) -> None:
    """A track cannot be replayed at its own pace without timestamps."""
    path = tmp_path / "untimed.gpx"
    path.write_text(
        '<gpx version="1.1" creator="t"><trk><trkseg>'
        '<trkpt lat="52.37" lon="4.89"/><trkpt lat="52.38" lon="4.89"/>'
        "</trkseg></trk></gpx>",
        encoding="utf-8",
    )
    with pytest.raises(GpxError, match="time"):
        route_from_gpx(path)

"""Families of cases with randomised parameters: how offenders and victims really move and measure.

Each family is a function of a seeded `random.Random`: same seed, same case. Approaches stop at
every depth of the rings (from just beside the victim to 30% beyond the alarm ring, so just inside
and just outside both occur), from every bearing, on foot, by bike, car or train.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Collection
from typing import Final

from simulators import geo
from simulators.device_clock import ClockSkew
from simulators.movement import Route, Waypoint
from simulators.noise import ACC_PER_SIGMA, NoiseParams
from simulators.positioning import Sky
from simulators.quality.case import CaseSpec, CircleZone, DeviceSpec, Window
from simulators.quality.exemption import Corridor, ZoneExemption

Family = Callable[[random.Random, str, int], CaseSpec]

HOME: Final = (52.3731, 4.8926)
RINGS_M: Final = (100.0, 200.0, 300.0, 500.0, 1000.0)
OFFENDER_INTERVALS_S: Final = (10.0, 15.0, 30.0, 60.0)
VICTIM_INTERVALS_S: Final = (15.0, 30.0, 60.0)
SPEEDS_MPS: Final = {
    "foot": (1.0, 1.8),
    "bike": (3.5, 7.0),
    "car": (8.0, 25.0),
    "train": (35.0, 60.0),
}
TAIL_S: Final = 240.0
"""The case runs on after the last move: long enough for the exit dwell to clear."""
EDGE_NOISE_ACC_M: Final = 40.0
"""Ring-edge loitering: GNSS noise whose 68% radius is 40 m (per-axis sigma 26.5 m)."""


# --- building blocks ---------------------------------------------------------------------------


def _home(rng: random.Random) -> tuple[float, float]:
    return geo.offset(HOME[0], HOME[1], rng.uniform(-3000, 3000), rng.uniform(-3000, 3000))


def _rings(rng: random.Random) -> tuple[float, float]:
    alarm = rng.choice(RINGS_M)
    return alarm, 2 * alarm


def _gnss(rng: random.Random, *, jumps_per_h: float | None = None) -> NoiseParams:
    """Open-sky GNSS: 2-6 m per axis, correlated, the odd multipath jump."""
    return NoiseParams(
        sigma_m=rng.uniform(2.0, 6.0),
        correlation_s=rng.uniform(20.0, 60.0),
        jump_rate_per_h=rng.uniform(0.0, 1.0) if jumps_per_h is None else jumps_per_h,
    )


def _speed(rng: random.Random, mode: str) -> float:
    low, high = SPEEDS_MPS[mode]
    return rng.uniform(low, high)


def _point(home: tuple[float, float], bearing: float, distance: float) -> tuple[float, float]:
    return geo.destination(home[0], home[1], bearing, distance)


def _approach(
    rng: random.Random, target: tuple[float, float], pre_alert_m: float, stop_m: float, mode: str
) -> tuple[Route, float, float]:
    """From well outside the pre-alert ring straight towards `target`, a stop `stop_m` from it,
    and back out. Returns the route, when the stop begins and when it ends."""
    bearing = rng.uniform(0.0, 360.0)
    start_m = pre_alert_m * rng.uniform(1.3, 1.8) + (3000.0 if mode == "train" else 0.0)
    speed = _speed(rng, mode)
    leave_speed = _speed(rng, "foot" if mode == "train" else mode)
    dwell = rng.uniform(60.0, 1200.0)
    start, stop = _point(target, bearing, start_m), _point(target, bearing, stop_m)
    away = _point(target, bearing + rng.uniform(-60.0, 60.0), pre_alert_m * 1.3)
    route = Route(
        [
            Waypoint(*start, speed_mps=speed),
            Waypoint(*stop, speed_mps=leave_speed, dwell_s=dwell),
            Waypoint(*away),
        ]
    )
    arrive = (start_m - stop_m) / speed
    return route, arrive, arrive + dwell


def _still(home: tuple[float, float]) -> Route:
    return Route([Waypoint(*home)])


def _device(
    rng: random.Random,
    device_id: str,
    route: Route,
    noise: NoiseParams,
    intervals: tuple[float, ...],
    **extra: object,
) -> DeviceSpec:
    interval = rng.choice(intervals)
    return DeviceSpec(
        device_id,
        route,
        noise,
        interval,
        phase_s=round(rng.uniform(0.0, interval), 3),
        **extra,  # type: ignore[arg-type]  # the DeviceSpec keywords each family passes
    )


def _spec(
    family: str,
    case_id: str,
    seed: int,
    *,
    offender: DeviceSpec,
    victim: DeviceSpec,
    rings: tuple[float, float],
    zones: tuple[CircleZone, ...] = (),
    source: str = "gnss",
) -> CaseSpec:
    end = max(offender.route.end_s, victim.route.end_s) + TAIL_S
    return CaseSpec(case_id, family, seed, end, offender, victim, rings[0], rings[1], zones, source)


def _stop_depth(rng: random.Random, alarm_m: float) -> float:
    """Every depth of the rings: beside her, just inside and just outside the alarm ring, and
    within the pre-alert ring."""
    return alarm_m * rng.uniform(0.02, 1.3)


# --- families ------------------------------------------------------------------------------------


def _offender_approaches(mode: str) -> Family:
    def family(rng: random.Random, case_id: str, seed: int) -> CaseSpec:
        home, rings = _home(rng), _rings(rng)
        route, _, _ = _approach(rng, home, rings[1], _stop_depth(rng, rings[0]), mode)
        offender = _device(rng, f"ank-{case_id}", route, _gnss(rng), OFFENDER_INTERVALS_S)
        victim = _device(rng, f"vic-{case_id}", _still(home), _gnss(rng), VICTIM_INTERVALS_S)
        return _spec(
            f"approach_{mode}", case_id, seed, offender=offender, victim=victim, rings=rings
        )

    return family


def victim_approaches(rng: random.Random, case_id: str, seed: int) -> CaseSpec:
    """She walks or cycles towards where he stands, stops, and goes."""
    home, rings = _home(rng), _rings(rng)
    mode = rng.choice(("foot", "bike"))
    route, _, _ = _approach(rng, home, rings[1], _stop_depth(rng, rings[0]), mode)
    offender = _device(rng, f"ank-{case_id}", _still(home), _gnss(rng), OFFENDER_INTERVALS_S)
    victim = _device(rng, f"vic-{case_id}", route, _gnss(rng), VICTIM_INTERVALS_S)
    return _spec("victim_approaches", case_id, seed, offender=offender, victim=victim, rings=rings)


def both_moving(rng: random.Random, case_id: str, seed: int) -> CaseSpec:
    """She walks from home to somewhere and stays; he heads for that place by bike or car."""
    home, rings = _home(rng), _rings(rng)
    there = _point(home, rng.uniform(0, 360), rng.uniform(500.0, 1500.0))
    her_route = Route([Waypoint(*home, speed_mps=_speed(rng, "foot")), Waypoint(*there)])
    route, _, _ = _approach(
        rng, there, rings[1], _stop_depth(rng, rings[0]), rng.choice(("bike", "car"))
    )
    offender = _device(rng, f"ank-{case_id}", route, _gnss(rng), OFFENDER_INTERVALS_S)
    victim = _device(rng, f"vic-{case_id}", her_route, _gnss(rng), VICTIM_INTERVALS_S)
    return _spec("both_moving", case_id, seed, offender=offender, victim=victim, rings=rings)


def passing_by(rng: random.Random, case_id: str, seed: int) -> CaseSpec:
    """He passes on a straight line whose closest point lies outside the alarm ring (2% to
    100% beyond it): no alarm is due; the pre-alert may be."""
    home, rings = _home(rng), _rings(rng)
    bearing = rng.uniform(0, 360)
    closest = _point(home, bearing, rings[0] * rng.uniform(1.02, 2.0))
    half = rings[1] * 1.5
    route = Route(
        [
            Waypoint(*_point(closest, bearing + 90, half), speed_mps=_speed(rng, _mode(rng))),
            Waypoint(*_point(closest, bearing - 90, half)),
        ]
    )
    offender = _device(rng, f"ank-{case_id}", route, _gnss(rng), OFFENDER_INTERVALS_S)
    victim = _device(rng, f"vic-{case_id}", _still(home), _gnss(rng), VICTIM_INTERVALS_S)
    return _spec("passing_by", case_id, seed, offender=offender, victim=victim, rings=rings)


def ring_edge(rng: random.Random, case_id: str, seed: int) -> CaseSpec:
    """He stands 30 to 90 minutes within 40 m of the alarm ring, with GNSS noise of 40 m."""
    home, rings = _home(rng), _rings(rng)
    spot = _point(home, rng.uniform(0, 360), rings[0] + rng.uniform(-40.0, 40.0))
    loiter = rng.uniform(1800.0, 5400.0)
    route = Route([Waypoint(*spot, dwell_s=loiter)])
    noise = NoiseParams(
        sigma_m=EDGE_NOISE_ACC_M / ACC_PER_SIGMA, correlation_s=rng.uniform(20.0, 60.0)
    )
    offender = _device(rng, f"ank-{case_id}", route, noise, OFFENDER_INTERVALS_S)
    victim = _device(rng, f"vic-{case_id}", _still(home), _gnss(rng), VICTIM_INTERVALS_S)
    return _spec("ring_edge", case_id, seed, offender=offender, victim=victim, rings=rings)


def urban_canyon(rng: random.Random, case_id: str, seed: int) -> CaseSpec:
    """An approach on foot between high buildings: 8-15 m noise and frequent multipath jumps
    (10-40 an hour, 100-400 m, 5-30 s each)."""
    home, rings = _home(rng), _rings(rng)
    route, _, _ = _approach(rng, home, rings[1], _stop_depth(rng, rings[0]), "foot")
    noise = NoiseParams(
        sigma_m=rng.uniform(8.0, 15.0),
        correlation_s=rng.uniform(20.0, 60.0),
        jump_rate_per_h=rng.uniform(10.0, 40.0),
        jump_m=rng.uniform(100.0, 400.0),
        jump_duration_s=rng.uniform(5.0, 30.0),
    )
    offender = _device(rng, f"ank-{case_id}", route, noise, OFFENDER_INTERVALS_S)
    victim = _device(rng, f"vic-{case_id}", _still(home), _gnss(rng), VICTIM_INTERVALS_S)
    return _spec(
        "urban_canyon",
        case_id,
        seed,
        offender=offender,
        victim=victim,
        rings=rings,
        source="multipath",
    )


def indoor(source: Sky) -> Family:
    """wifi: she is at home on wifi positions all along while he approaches. cell: he walks up
    and goes indoors at his stop, where only cell positions remain."""

    def family(rng: random.Random, case_id: str, seed: int) -> CaseSpec:
        home, rings = _home(rng), _rings(rng)
        route, arrive, leave = _approach(rng, home, rings[1], _stop_depth(rng, rings[0]), "foot")
        his: tuple[tuple[Window, Sky], ...] = ()
        hers: tuple[tuple[Window, Sky], ...] = ()
        if source == "cell":
            his = ((Window(arrive + 1.0, leave), "cell"),)
        else:
            hers = ((Window(0.0, math.inf), source),)
        offender = _device(
            rng, f"ank-{case_id}", route, _gnss(rng), OFFENDER_INTERVALS_S, indoors=his
        )
        victim = _device(
            rng, f"vic-{case_id}", _still(home), _gnss(rng), VICTIM_INTERVALS_S, indoors=hers
        )
        return _spec(
            f"indoor_{source}",
            case_id,
            seed,
            offender=offender,
            victim=victim,
            rings=rings,
            source=source,
        )

    return family


def coverage_gap(rng: random.Random, case_id: str, seed: int) -> CaseSpec:
    """He loses coverage around his arrival (2-10 minutes) and uploads the backlog after."""
    home, rings = _home(rng), _rings(rng)
    route, arrive, _ = _approach(
        rng, home, rings[1], _stop_depth(rng, rings[0]), rng.choice(("foot", "bike"))
    )
    begin = max(0.0, arrive - rng.uniform(0.0, 300.0))
    gap = Window(begin, begin + rng.uniform(120.0, 600.0))
    offender = _device(rng, f"ank-{case_id}", route, _gnss(rng), OFFENDER_INTERVALS_S, gaps=(gap,))
    victim = _device(rng, f"vic-{case_id}", _still(home), _gnss(rng), VICTIM_INTERVALS_S)
    return _spec("coverage_gap", case_id, seed, offender=offender, victim=victim, rings=rings)


def clock_skew(rng: random.Random, case_id: str, seed: int) -> CaseSpec:
    """An approach with one or both device clocks up to 5 minutes off and drifting."""
    home, rings = _home(rng), _rings(rng)
    route, _, _ = _approach(
        rng, home, rings[1], _stop_depth(rng, rings[0]), rng.choice(("foot", "bike", "car"))
    )
    skews = [ClockSkew(rng.uniform(-300, 300), rng.uniform(-50, 50)) for _ in range(2)]
    if rng.random() < 0.5:
        skews[rng.randrange(2)] = ClockSkew()
    offender = _device(
        rng, f"ank-{case_id}", route, _gnss(rng), OFFENDER_INTERVALS_S, skew=skews[0]
    )
    victim = _device(
        rng, f"vic-{case_id}", _still(home), _gnss(rng), VICTIM_INTERVALS_S, skew=skews[1]
    )
    return _spec("clock_skew", case_id, seed, offender=offender, victim=victim, rings=rings)


def _zone_case(
    family: str, rng: random.Random, case_id: str, seed: int, route_for: ZoneRoute
) -> CaseSpec:
    home, rings = _home(rng), _rings(rng)
    far = _point(home, rng.uniform(0, 360), 20_000.0)
    zone = CircleZone("zone", *far, radius_m=rng.uniform(75.0, 300.0))
    route, exemption = route_for(rng, zone)
    offender = _device(rng, f"ank-{case_id}", route, _gnss(rng), OFFENDER_INTERVALS_S)
    victim = _device(rng, f"vic-{case_id}", _still(home), _gnss(rng), VICTIM_INTERVALS_S)
    spec = _spec(
        family, case_id, seed, offender=offender, victim=victim, rings=rings, zones=(zone,)
    )
    return dataclasses.replace(spec, exemption=exemption)


ZoneRoute = Callable[[random.Random, CircleZone], tuple[Route, ZoneExemption | None]]


def _chord(rng: random.Random, zone: CircleZone, bearing: float, offset_m: float) -> Route:
    """A straight line on `bearing`, `offset_m` beside the zone's centre, 2 km beyond it either
    way, by bike or car (often crossing the zone between two fixes)."""
    start, end = _chord_ends(zone, bearing, offset_m)
    speed = _speed(rng, rng.choice(("bike", "car")))
    return Route([Waypoint(*start, speed_mps=speed), Waypoint(*end)])


def _chord_ends(
    zone: CircleZone, bearing: float, offset_m: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    chord_mid = _point((zone.lat, zone.lon), bearing + 90, offset_m)
    half = zone.radius_m + 2000.0
    return _point(chord_mid, bearing, half), _point(chord_mid, bearing + 180, half)


def _through(rng: random.Random, zone: CircleZone) -> tuple[Route, None]:
    """A straight chord through the zone."""
    bearing = rng.uniform(0, 360)
    return _chord(rng, zone, bearing, zone.radius_m * rng.uniform(0.0, 0.9)), None


def _into(rng: random.Random, zone: CircleZone) -> tuple[Route, None]:
    """On foot into the zone (or to just outside it), a stay, and out."""
    route, _, _ = _approach(
        rng, (zone.lat, zone.lon), zone.radius_m * 3, zone.radius_m * rng.uniform(0.0, 1.3), "foot"
    )
    return route, None


def _exempted(rng: random.Random, zone: CircleZone) -> tuple[Route, ZoneExemption]:
    """Half the cases: a window from the case's start; he walks in and stays, and the window
    ends before he arrives, while he is inside (the alarm is due then) or after he left. The
    others: all day, a corridor 40-80 m either side of a line through the zone, which he rides
    along (nothing is due) or, half of them, 2-3 half-widths beside it, out of it (due)."""
    if rng.random() < 0.5:
        depth = zone.radius_m * rng.uniform(0.0, 0.9)
        route, arrive, leave = _approach(
            rng, (zone.lat, zone.lon), zone.radius_m * 3, depth, "foot"
        )
        minutes = max(1, round(rng.uniform(0.5 * arrive, leave + 120.0) / 60.0))
        return route, ZoneExemption(minutes)
    bearing = rng.uniform(0, 360)
    offset = zone.radius_m * rng.uniform(-0.6, 0.6)
    half_width = rng.uniform(40.0, 80.0)
    beside = half_width * rng.uniform(2.0, 3.0) * rng.choice((-1, 1)) if rng.random() < 0.5 else 0
    corridor = Corridor(*_chord_ends(zone, bearing, offset + beside), half_width)
    return _chord(rng, zone, bearing, offset), ZoneExemption(None, corridor)


def zone_crossing(rng: random.Random, case_id: str, seed: int) -> CaseSpec:
    return _zone_case("zone_crossing", rng, case_id, seed, _through)


def zone_stay(rng: random.Random, case_id: str, seed: int) -> CaseSpec:
    return _zone_case("zone_stay", rng, case_id, seed, _into)


def zone_exemption(rng: random.Random, case_id: str, seed: int) -> CaseSpec:
    return _zone_case("zone_exemption", rng, case_id, seed, _exempted)


def _mode(rng: random.Random) -> str:
    return rng.choice(("foot", "bike", "car"))


FAMILIES: Final[dict[str, Family]] = {
    "approach_foot": _offender_approaches("foot"),
    "approach_bike": _offender_approaches("bike"),
    "approach_car": _offender_approaches("car"),
    "approach_train": _offender_approaches("train"),
    "victim_approaches": victim_approaches,
    "both_moving": both_moving,
    "passing_by": passing_by,
    "ring_edge": ring_edge,
    "urban_canyon": urban_canyon,
    "indoor_wifi": indoor("wifi"),
    "indoor_cell": indoor("cell"),
    "coverage_gap": coverage_gap,
    "clock_skew": clock_skew,
    "zone_crossing": zone_crossing,
    "zone_stay": zone_stay,
    "zone_exemption": zone_exemption,
}


def family_indices(count: int, families: Collection[str]) -> list[int]:
    """The indices below `count` whose case is of one of `families` (the turn `case_spec` takes)."""
    names = list(FAMILIES)
    unknown = set(families) - set(names)
    if unknown:
        raise ValueError(f"unknown families: {', '.join(sorted(unknown))}")
    return [i for i in range(count) if names[i % len(names)] in families]


def case_spec(index: int, seed: int) -> CaseSpec:
    """Case `index` of a run with `seed`: families in turn, parameters from a per-case stream."""
    names = list(FAMILIES)
    family = names[index % len(names)]
    case_seed = (seed * 1_000_003 + index) % 2**63
    return FAMILIES[family](random.Random(case_seed), f"Q{index:06d}", case_seed)

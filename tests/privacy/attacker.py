"""An attacker who tries to locate the victim from documents a role can read (docs/privacy.md).

It reads any JSON (notices, alarm records, device commands) and keeps every fact that bears on
where she is:
- a *sighting*: the offender's position at a time (any `offender` object with lat/lon/ts);
- a *range*: how far he was from her at a time: an exact `distance_m` (± `uncertainty_m`), a
  `distance_band`, or a `warn` command (inside the ring of its level: ring radii are order
  data the attacker knows);
- a *crossing* (timing): when an alarm's band changes from one notice to the next, he crossed
  the edge between them in that interval: a range of that edge ± how far he can have moved;
- a *direct leak*: any other object with lat/lon (a victim position): game over at once.

A range becomes an annulus around the offender: around the sighting in the same document, else
around the nearest sighting within `MAX_GAP_S`, widened by how far he can have moved meanwhile
(the attacker knows his speed: generous to the attacker). Then it tries both classic attacks:
least squares on the annuli's mid radii (trilateration), and the feasible region (every point
inside all annuli, on a grid), whose centroid is its estimate when there are too few annuli.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_GAP_S = 60.0
OFFENDER_SPEED_MPS = 4.0
SEARCH_HALF_M = 3000.0
GRID_M = 10.0
EARTH_M = 6_371_008.8


@dataclass(frozen=True, slots=True)
class Projection:
    """Local metres east/north of a reference point (equirectangular: exact enough over km)."""

    lat0: float
    lon0: float

    def __call__(self, lat: float, lon: float) -> tuple[float, float]:
        east = math.radians(lon - self.lon0) * EARTH_M * math.cos(math.radians(self.lat0))
        return east, math.radians(lat - self.lat0) * EARTH_M


@dataclass(frozen=True, slots=True)
class Annulus:
    east: float
    north: float
    min_m: float
    max_m: float


@dataclass(slots=True)
class Verdict:
    annuli: list[Annulus]
    estimates: list[tuple[float, float]]
    """The attacker's guesses of her position: least squares and the feasible region's centroid
    (or, with no annulus, where he was seen); the test scores the better one."""
    feasible_diameter_m: float
    """How far apart two points consistent with everything read can be (search square: 8.5 km)."""


@dataclass(slots=True)
class _Evidence:
    sightings: list[tuple[int, float, float, float]]  # at_ms, east, north, accuracy
    ranges: list[tuple[int, float, float, tuple[float, float, float] | None]]
    leaks: list[tuple[float, float]]


def _objects(value: Any) -> Iterable[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for child in value.values():
            yield from _objects(child)
    elif isinstance(value, list):
        for child in value:
            yield from _objects(child)


def _position(value: Any, project: Projection) -> tuple[float, float, float] | None:
    if isinstance(value, dict) and "lat" in value and "lon" in value:
        east, north = project(value["lat"], value["lon"])
        return east, north, float(value.get("acc", 0.0))
    return None


def gather(
    documents: Iterable[tuple[int, dict[str, Any]]], project: Projection, rings_m: dict[str, float]
) -> _Evidence:
    """Every sighting, range and leak in `documents` ((time read, decoded JSON) pairs)."""
    evidence = _Evidence([], [], [])
    last_band: dict[str, tuple[int, float, float]] = {}  # alarm id -> at, min_m, max_m
    for read_at, document in sorted(documents, key=lambda d: d[0]):
        for obj in _objects(document):
            at = int(obj.get("at", read_at))
            own: tuple[float, float, float] | None = None
            for key, value in obj.items():
                found = _position(value, project)
                if found is None:
                    continue
                if key == "offender":
                    own = found
                    evidence.sightings.append((int(value.get("ts", at)), *found))
                else:
                    evidence.leaks.append(found[:2])
            if obj.get("distance_m") is not None:
                spread = float(obj.get("uncertainty_m") or 0.0)
                d = float(obj["distance_m"])
                evidence.ranges.append((at, max(0.0, d - spread), d + spread, own))
            elif isinstance(obj.get("distance_band"), dict):
                band = obj["distance_band"]
                low, top = band["min_m"], band.get("max_m")
                high = math.inf if top is None else top
                evidence.ranges.append((at, low, high, own))
                before = last_band.get(str(obj.get("alarm_id")))
                edge = None if before is None else {before[1], before[2]} & {low, high}
                if before is not None and edge and (before[1], before[2]) != (low, high):
                    moved = OFFENDER_SPEED_MPS * (at - before[0]) / 1000
                    crossed = edge.pop()
                    evidence.ranges.append((at, crossed - moved, crossed + moved, own))
                last_band[str(obj.get("alarm_id"))] = (at, low, high)
            elif obj.get("type") == "warn" and obj.get("level") in rings_m:
                evidence.ranges.append((read_at, 0.0, rings_m[obj["level"]], own))
    return evidence


def _annuli(evidence: _Evidence) -> list[Annulus]:
    out: list[Annulus] = []
    for at, low, high, own in evidence.ranges:
        if own is not None:
            east, north, acc = own
            slack = acc
        else:
            near = [s for s in evidence.sightings if abs(s[0] - at) <= MAX_GAP_S * 1000]
            if not near:
                continue  # a range with no centre says nothing about where she is
            seen_at, east, north, acc = min(near, key=lambda s: abs(s[0] - at))
            slack = acc + OFFENDER_SPEED_MPS * abs(seen_at - at) / 1000
        out.append(Annulus(east, north, max(0.0, low - slack), high + slack))
    return out


def attack(
    documents: Iterable[tuple[int, dict[str, Any]]], project: Projection, rings_m: dict[str, float]
) -> Verdict:
    evidence = gather(documents, project, rings_m)
    annuli = _annuli(evidence)
    if evidence.leaks:
        return Verdict(annuli, [evidence.leaks[0]], 0.0)
    centres = [(a.east, a.north) for a in annuli] or [s[1:3] for s in evidence.sightings]
    cx, cy = np.mean(np.array(centres), axis=0) if centres else (0.0, 0.0)
    axis = np.arange(-SEARCH_HALF_M, SEARCH_HALF_M + GRID_M, GRID_M)
    xs, ys = np.meshgrid(cx + axis, cy + axis)
    inside = np.ones(xs.shape, dtype=bool)
    for a in annuli:
        d = np.hypot(xs - a.east, ys - a.north)
        inside &= (d >= a.min_m) & (d <= a.max_m)
    verdict = Verdict(annuli, [], _diameter(xs[inside], ys[inside]))
    finite = [a for a in annuli if math.isfinite(a.max_m)]
    if len(finite) >= 3:
        verdict.estimates.append(_least_squares(finite, xs, ys))
    if inside.any() and annuli:
        verdict.estimates.append((float(xs[inside].mean()), float(ys[inside].mean())))
    if not annuli and centres:  # nothing to go by: he tends to be near her, guess where he was
        verdict.estimates.append((float(cx), float(cy)))
    return verdict


def _least_squares(annuli: list[Annulus], xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
    """The point whose distances best fit the annuli's mid radii: grid, then a 1 m refinement."""

    def cost(px: np.ndarray, py: np.ndarray) -> np.ndarray:
        total = np.zeros(px.shape)
        for a in annuli:
            total += (np.hypot(px - a.east, py - a.north) - (a.min_m + a.max_m) / 2) ** 2
        return total

    coarse = cost(xs, ys)
    i = np.unravel_index(np.argmin(coarse), coarse.shape)
    bx, by = float(xs[i]), float(ys[i])
    fine = np.arange(-2 * GRID_M, 2 * GRID_M + 1, 1.0)
    fx, fy = np.meshgrid(bx + fine, by + fine)
    j = np.unravel_index(np.argmin(cost(fx, fy)), fx.shape)
    return float(fx[j]), float(fy[j])


def _diameter(xs: np.ndarray, ys: np.ndarray) -> float:
    """The largest distance between two points (max extent over directions 1 degree apart)."""
    if xs.size == 0:
        return 0.0
    angles = np.radians(np.arange(0, 180, 1.0))
    projections = np.outer(np.cos(angles), xs) + np.outer(np.sin(angles), ys)
    return float((projections.max(axis=1) - projections.min(axis=1)).max())

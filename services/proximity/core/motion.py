"""Tracks: GPS-jump rejection, velocity from a device's recent fixes, and time to contact.

A device keeps its last few accepted fixes (`DeviceState.packed_track`). A new fix that would
need more than `max_speed_mps` from the newest of them (after both fixes' accuracy radii are
granted) is an *outlier*: it is kept aside as a candidate and changes nothing. When
`jump_confirm_fixes` candidates in a row agree with each other, the device really moved (a train
ride): the candidates become its track. Tracks and candidates are packed (`history`): these rules
read their points as tuples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from nabij.contract import Position
from services.proximity.core.geo import distance_m
from services.proximity.core.history import POINT_BYTES, Point, newest, points

TRACK_LEN: Final = 5
VELOCITY_WINDOW_MS: Final = 90_000
"""Velocity is taken over the newest fix and the oldest one at most this much older."""
MIN_VELOCITY_SPAN_MS: Final = 5_000
MAX_VELOCITY_ACC_M: Final = 50.0
"""Fixes coarser than this give no velocity (their wander would look like motion)."""
METRES_PER_DEG: Final = 111_195.0  # mean Earth radius: short local offsets only

STRAY_MIN_M: Final = 50.0
STRAY_SHARE: Final = 0.5
"""A fix is on its track when within both radii plus the larger of `STRAY_MIN_M` and this share
of the move its track predicts (`on_track`): a turn, a stop or a change of pace stays on it, a
multipath jump of 100-400 m sideways that the speed filter lets through does not."""

Verdict = Literal["accept", "outlier", "relocated"]


def consistent(a: Point, b: Position, max_speed_mps: float) -> bool:
    """Whether `b` can follow `a` at no more than `max_speed_mps`, granting both radii."""
    a_lat, a_lon, a_acc, a_ts = a
    dt_s = abs(b.ts - a_ts) / 1000.0
    reach = max_speed_mps * dt_s + a_acc + b.acc
    # A flat-earth estimate (within 1% at these ranges) settles all but the borderline cases.
    north, east = offset_between(a_lat, a_lon, b.lat, b.lon)
    flat = math.sqrt(north * north + east * east)
    if flat * 1.01 <= reach:
        return True
    if flat * 0.99 > reach:
        return False
    return distance_m(a_lat, a_lon, b.lat, b.lon) <= reach


def classify(
    last: Point | None,
    candidates: bytes,
    fix: Position,
    point: bytes,
    *,
    max_speed_mps: float,
    confirm: int,
) -> tuple[Verdict, bytes]:
    """Judge `fix` (packed: `point`) against the newest point of the track (`last`; None: no
    track); returns the verdict and the candidates after it: none when accepted, else those
    that agree with `fix`, it last (enough relocate)."""
    if last is None or consistent(last, fix, max_speed_mps):
        return "accept", b""
    if candidates and consistent(newest(candidates), fix, max_speed_mps):
        candidates += point
    else:
        candidates = point
    return "relocated" if len(candidates) >= confirm * POINT_BYTES else "outlier", candidates


def on_track(track: bytes, fix: Position, *, last: Point | None = None) -> bool:
    """Whether `fix` lies where the device's recent track (packed) leads: between its newest
    position and that position carried on at the track's velocity (it may have slowed or
    stopped), within both radii plus the larger of `STRAY_MIN_M` and `STRAY_SHARE` of the
    predicted move. A track that gives no velocity (too short, too old, too coarse) confirms
    anything: a device's second fix, or its first after a silence, waits for no third. `last`:
    the track's newest point, when the caller has read it already (one read a fix)."""
    if not track:
        return True
    last_lat, last_lon, last_acc, last_ts = last or newest(track)
    north, east = offset_between(last_lat, last_lon, fix.lat, fix.lon)
    if math.hypot(north, east) <= last_acc + fix.acc + STRAY_MIN_M:
        return True  # near where it was: on any track (it may have stopped); no velocity needed
    moving = velocity(track)
    if moving is None:
        return True
    dt_s = max(0, fix.ts - last_ts) / 1000.0
    ahead_n, ahead_e = moving.north_mps * dt_s, moving.east_mps * dt_s
    predicted_m = math.hypot(ahead_n, ahead_e)
    # The nearest point of the segment last -> last + velocity * dt, as a share of it.
    share = 0.0
    if predicted_m > 0.0:
        share = min(max((north * ahead_n + east * ahead_e) / (predicted_m * predicted_m), 0.0), 1.0)
    off_m = math.hypot(north - share * ahead_n, east - share * ahead_e)
    return off_m <= last_acc + fix.acc + max(STRAY_MIN_M, STRAY_SHARE * predicted_m)


def led_to(track: bytes, fix: Position) -> Position:
    """Where a (non-empty, packed) track leads at `fix`'s time: its newest position carried on
    at its velocity (left where it is when the track gives none), with that position's radius.
    The newest position may itself be a jump that bent the velocity (one near the track passes
    `on_track`), so the track without it is carried on too: the nearer of the two to `fix`."""
    ahead = _carried_on(track, fix.ts)
    if len(track) < 3 * POINT_BYTES:
        return ahead
    before = _carried_on(track[:-POINT_BYTES], fix.ts)
    return min(ahead, before, key=lambda p: math.hypot(*offset_m(p, fix)))


def _carried_on(track: bytes, ts: int) -> Position:
    lat, lon, acc, last_ts = newest(track)
    moving = velocity(track) or STILL
    dt_s = max(0, ts - last_ts) / 1000.0
    north, east = moving.north_mps * dt_s, moving.east_mps * dt_s
    lat_ahead = lat + north / METRES_PER_DEG
    lon_ahead = lon + east / (METRES_PER_DEG * math.cos(math.radians(lat)))
    return Position(lat=lat_ahead, lon=lon_ahead, acc=acc, ts=ts)


@dataclass(slots=True)  # not frozen: built on every comparison, and frozen init costs ~4x
class Velocity:
    north_mps: float
    east_mps: float


STILL: Final = Velocity(0.0, 0.0)


def velocity(track: bytes) -> Velocity | None:
    """Mean velocity over the recent track (packed); STILL when the motion is within the fixes'
    own accuracy; None when the track is too short or too coarse to tell."""
    if len(track) < 2 * POINT_BYTES:
        return None
    newest_lat, newest_lon, newest_acc, newest_ts = newest(track)
    if newest_acc > MAX_VELOCITY_ACC_M:
        return None
    # The oldest point within the window and fine enough. The newest itself qualifies (age 0,
    # fine): found only when no older one is, it gives no span, so None, as no point would.
    for oldest in points(track):
        if newest_ts - oldest[3] <= VELOCITY_WINDOW_MS and oldest[2] <= MAX_VELOCITY_ACC_M:
            break
    oldest_lat, oldest_lon, oldest_acc, oldest_ts = oldest
    if newest_ts - oldest_ts < MIN_VELOCITY_SPAN_MS:
        return None
    north, east = offset_between(oldest_lat, oldest_lon, newest_lat, newest_lon)
    if math.hypot(north, east) <= oldest_acc + newest_acc:
        return STILL
    dt_s = (newest_ts - oldest_ts) / 1000.0
    return Velocity(north / dt_s, east / dt_s)


def offset_m(a: Position, b: Position) -> tuple[float, float]:
    """(north, east) metres from `a` to `b`, on a local tangent plane (good for short offsets)."""
    return offset_between(a.lat, a.lon, b.lat, b.lon)


def offset_between(a_lat: float, a_lon: float, b_lat: float, b_lon: float) -> tuple[float, float]:
    """`offset_m` of two points given by their coordinates."""
    north = (b_lat - a_lat) * METRES_PER_DEG
    east = (b_lon - a_lon) * METRES_PER_DEG * math.cos(math.radians((a_lat + b_lat) / 2.0))
    return north, east


@dataclass(slots=True)  # not frozen: built on every comparison, and frozen init costs ~4x
class Approach:
    """Linear prediction of the pair's motion."""

    closing_speed_mps: float
    """How fast the distance shrinks now (negative: the two draw apart)."""
    closest_m: float
    """Smallest predicted distance within the horizon."""
    closest_in_s: float
    eta_s: float | None
    """Predicted seconds until the distance reaches the alarm ring (0 inside), if it will."""


def approach(
    offender: Position,
    offender_v: Velocity | None,
    victim: Position,
    victim_v: Velocity | None,
    *,
    alarm_m: float,
    horizon_s: float,
) -> Approach | None:
    """Predict from both velocities; None when neither device's motion is known."""
    if offender_v is None and victim_v is None:
        return None
    vo = offender_v or STILL
    vv = victim_v or STILL
    # Both positions carried to the newer fix's time, so a stale partner fix is not mistaken.
    t_ms = max(offender.ts, victim.ts)
    north, east = offset_m(victim, offender)
    north += (
        vo.north_mps * (t_ms - offender.ts) / 1000.0 - vv.north_mps * (t_ms - victim.ts) / 1000.0
    )
    east += vo.east_mps * (t_ms - offender.ts) / 1000.0 - vv.east_mps * (t_ms - victim.ts) / 1000.0
    wn, we = vo.north_mps - vv.north_mps, vo.east_mps - vv.east_mps
    r2 = north * north + east * east
    w2 = wn * wn + we * we
    r = math.sqrt(r2)
    rw = north * wn + east * we
    closing = -rw / r if r > 0.0 else 0.0
    if w2 <= 1e-9:
        return Approach(closing, r, 0.0, 0.0 if r <= alarm_m else None)
    t_star = min(max(-rw / w2, 0.0), horizon_s)
    closest = math.hypot(north + wn * t_star, east + we * t_star)
    eta: float | None
    if r <= alarm_m:
        eta = 0.0
    else:
        disc = rw * rw - w2 * (r2 - alarm_m * alarm_m)
        eta = (-rw - math.sqrt(disc)) / w2 if rw < 0.0 and disc >= 0.0 else None
    return Approach(closing, closest, t_star, eta)

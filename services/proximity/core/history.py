"""A device's recent positions packed in one `bytes`, oldest first.

A `Position` object costs ~170 bytes of heap with its numbers; a packed point costs 32 and the
whole history is one object. Packing is exact (float64 coordinates and accuracy, int64 server
time): a backlog is judged against the very position the device reported, so no rule changes.
Only `timing` mutates a history; it hands back `Position`s one at a time.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

from nabij.contract import Position

_POINT: Final = struct.Struct("<dddq")
"""lat, lon, acc, ts (server ms)."""
POINT_BYTES: Final = _POINT.size
_TS: Final = struct.Struct("<q")
_TS_OFFSET: Final = 24


def pack(positions: Iterable[Position]) -> bytes:
    return b"".join(_POINT.pack(p.lat, p.lon, p.acc, p.ts) for p in positions)


def unpack(packed: bytes) -> list[Position]:
    return [Position(lat, lon, acc, ts) for lat, lon, acc, ts in _POINT.iter_unpack(packed)]


def _ts(packed: bytes, index: int) -> int:
    ts: int = _TS.unpack_from(packed, index * POINT_BYTES + _TS_OFFSET)[0]
    return ts


def _first_after(packed: bytes, t_ms: int, *, inclusive: bool) -> int:
    """Index of the first point later than `t_ms` (`inclusive`: at or later), by bisection."""
    lo, hi = 0, len(packed) // POINT_BYTES
    while lo < hi:
        mid = (lo + hi) // 2
        ts = _ts(packed, mid)
        if ts < t_ms or (ts == t_ms and not inclusive):
            lo = mid + 1
        else:
            hi = mid
    return lo


def added(
    packed: bytes, position: Position, *, horizon_ms: int, spacing_ms: int, limit: int
) -> bytes:
    """`packed` with `position` inserted in time order (after equal times), points before
    `horizon_ms` dropped, the second newest dropped when it lies within `spacing_ms` of the one
    before it (thinning evenly, the newest always kept), and at most `limit` points."""
    point = _POINT.pack(position.lat, position.lon, position.acc, position.ts)
    count = len(packed) // POINT_BYTES
    if not count or position.ts >= _ts(packed, count - 1):
        packed += point
    else:
        at = _first_after(packed, position.ts, inclusive=False) * POINT_BYTES
        packed = packed[:at] + point + packed[at:]
    count += 1
    expired = _first_after(packed, horizon_ms, inclusive=True)
    if expired:
        packed = packed[expired * POINT_BYTES :]
        count -= expired
    if count >= 3 and _ts(packed, count - 2) - _ts(packed, count - 3) < spacing_ms:
        packed = packed[: (count - 2) * POINT_BYTES] + packed[(count - 1) * POINT_BYTES :]
        count -= 1
    return packed[-limit * POINT_BYTES :] if count > limit else packed


def nearest(packed: bytes, t_ms: int, max_age_ms: int) -> Position | None:
    """The point nearest in time to `t_ms` (the earlier on a tie), if within `max_age_ms`."""
    after = _first_after(packed, t_ms, inclusive=True)
    best, best_gap = -1, 0
    for index in range(max(0, after - 1), min(after + 1, len(packed) // POINT_BYTES)):
        gap = abs(_ts(packed, index) - t_ms)
        if gap <= max_age_ms and (best < 0 or gap < best_gap):
            best, best_gap = index, gap
    if best < 0:
        return None
    lat, lon, acc, ts = _POINT.unpack_from(packed, best * POINT_BYTES)
    return Position(lat, lon, acc, ts)

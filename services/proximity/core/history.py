"""A device's recent positions packed in one `bytes`, oldest first: its history, its track.

A `Position` object costs ~170 bytes of heap with its numbers; a packed point costs 20 and the
whole history is one object. A point is integers on a fixed grid: latitude and longitude in
1e-7 degree (int32 "E7", ~1.1 cm, as GPS chips and MAVLink report them), the accuracy radius in
millimetres (uint32, as u-blox's hAcc and MAVLink's h_acc: up to 4,294 km, past the contract's
100 km), the server time in ms (int64, last: the same offset from a point's end as before).
The core puts every position of a fix on that grid once, where it enters (`quantised`: the
position and its point from the same integers), and a point unpacks exactly (`from_point`): a
backlog is judged against the very position the core decided on, nothing is rounded again.
`timing` keeps the history (`remember`) and asks it (`position_at`); a `Position` is made only for
an answer. `motion` reads the track and the candidates (a few points, on every fix) as `Point`
tuples, without a `Position` each.
"""

from __future__ import annotations

import math
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from itertools import starmap
from typing import Final

from nabij.contract import Position

_POINT: Final = struct.Struct("<iiIq")
"""lat E7, lon E7, acc mm, ts (server ms), little-endian."""
POINT_BYTES: Final = _POINT.size
_TS_AT: Final = POINT_BYTES - 8
"""Where a point's time starts in it."""
E7: Final = 1e7
"""Grid steps a degree (1e-7 degree: 1.1 cm of latitude). A float: `n / E7` is `n / 10**7`
exactly (both correctly rounded, n well within 2**53), and faster."""
MM: Final = 1e3
"""Grid steps a metre of accuracy radius."""
_FORMAT_3_POINT: Final = struct.Struct("<dddq")
"""A point as state format 3 stored it: lat, lon, acc, ts."""
Point = tuple[float, float, float, int]
"""A packed point read back: lat, lon, acc, ts."""
_TS: Final = struct.Struct("<q").unpack_from
_pack: Final = _POINT.pack
_floor: Final = math.floor
_unpack_from: Final = _POINT.unpack_from


def quantised(lat: float, lon: float, acc: float, ts: int) -> tuple[Position, bytes]:
    """The position on the grid nearest to these figures (a half step up), and its point: how a
    fix enters the core. Both come from the same integers, so the point unpacks to the very
    position."""
    # `floor(x + 0.5)` costs half of `round(x)` (a fix's hot path). Where the sum drops low bits
    # of x it may take the farther point, only within 1e-7 of a step of a half: still one grid,
    # the same figures always on the same point. The divisions are `from_point`'s, inline for the
    # same reason (test_history holds the two equal).
    lat_e7, lon_e7, acc_mm = _floor(lat * E7 + 0.5), _floor(lon * E7 + 0.5), _floor(acc * MM + 0.5)
    point = _pack(lat_e7, lon_e7, acc_mm, ts)
    return Position(lat_e7 / E7, lon_e7 / E7, acc_mm / MM, ts), point


def to_point(position: Position) -> bytes:
    """`position` put on the grid and packed: for positions stored before the grid."""
    return quantised(position.lat, position.lon, position.acc, position.ts)[1]


def from_point(lat_e7: int, lon_e7: int, acc_mm: int, ts: int) -> Point:
    """A packed point's integers as figures (the one division each that `quantised` makes)."""
    return lat_e7 / E7, lon_e7 / E7, acc_mm / MM, ts


def from_format_3(packed: bytes) -> bytes:
    """Points packed as stored before the grid (float64 figures, 32 bytes) put on it."""
    return b"".join(to_point(Position(*point)) for point in _FORMAT_3_POINT.iter_unpack(packed))


def pack(positions: Iterable[Position]) -> bytes:
    return b"".join(map(to_point, positions))


def unpack(packed: bytes) -> list[Position]:
    return [Position(*from_point(*point)) for point in _POINT.iter_unpack(packed)]


def points(packed: bytes) -> Iterator[Point]:
    return starmap(from_point, _POINT.iter_unpack(packed))


def newest(packed: bytes) -> Point:
    """The last point of a non-empty `packed`."""
    return from_point(*_unpack_from(packed, len(packed) - POINT_BYTES))


def appended(packed: bytes, point: bytes, *, limit: int) -> bytes:
    """`packed` with `point` after its points, the newest `limit` kept."""
    kept = (limit - 1) * POINT_BYTES
    if len(packed) > kept:
        packed = packed[-kept:] if kept else b""
    return packed + point


def _times(packed: bytes) -> tuple[int, ...]:
    """The points' times, read at C speed (bisect searches them likewise)."""
    return _times_unpacker(len(packed) // POINT_BYTES)(packed)


@cache
def _times_unpacker(count: int) -> Callable[[bytes], tuple[int, ...]]:
    # One struct a length (at most the history's limit): it skips all but the times.
    return struct.Struct("<" + f"{_TS_AT}xq" * count).unpack


def added(packed: bytes, point: bytes, *, horizon_ms: int, spacing_ms: int, limit: int) -> bytes:
    """`packed` with `point` inserted in time order (after equal times), points before
    `horizon_ms` dropped, the second newest dropped when it lies within `spacing_ms` of the one
    before it (thinning evenly, the newest always kept), and at most `limit` points."""
    # This runs for every accepted fix: few times read in place (`_TS` at a point's end less
    # 8, the time being last), and the result cut once.
    end = len(packed)
    newest, last = _TS(point, _TS_AT)[0], _TS(packed, end - 8)[0] if end else 0
    if end and newest < last:  # a late fix: rare
        at = bisect_right(_times(packed), newest) * POINT_BYTES
        packed, point = packed[:at] + point + packed[at:-POINT_BYTES], packed[-POINT_BYTES:]
        newest, last = last, _TS(packed, end - 8)[0]
    # Now `point` (at `newest`) goes after the `end` bytes of `packed` (the last at `last`).
    start = 0
    while start < end and _TS(packed, start + _TS_AT)[0] < horizon_ms:
        start += POINT_BYTES
    if start == end and newest < horizon_ms:
        return b""
    thinned = (
        end - start >= 2 * POINT_BYTES and last - _TS(packed, end - 8 - POINT_BYTES)[0] < spacing_ms
    )
    kept_end = end - POINT_BYTES if thinned else end  # the second newest thinned out
    start = max(start, kept_end - (limit - 1) * POINT_BYTES)
    return (packed[start:kept_end] if start or thinned else packed) + point


def nearest(packed: bytes, t_ms: int, max_age_ms: int) -> Position | None:
    """The point nearest in time to `t_ms` (the earlier on a tie), if within `max_age_ms`."""
    times = _times(packed)
    after = bisect_left(times, t_ms)
    best, best_gap = -1, 0
    for index in range(max(0, after - 1), min(after + 1, len(times))):
        gap = abs(times[index] - t_ms)
        if gap <= max_age_ms and (best < 0 or gap < best_gap):
            best, best_gap = index, gap
    if best < 0:
        return None
    return Position(*from_point(*_unpack_from(packed, best * POINT_BYTES)))

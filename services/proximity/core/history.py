"""A device's recent positions packed in one `bytes`, oldest first: its history, its track.

A `Position` object costs ~170 bytes of heap with its numbers; a packed point costs 32 and the
whole history is one object. Packing is exact (float64 coordinates and accuracy, int64 server
time): a backlog is judged against the very position the device reported, so no rule changes.
`timing` keeps the history (`remember`) and asks it (`position_at`); a `Position` is made only for
an answer. `motion` reads the track and the candidates (a few points, on every fix) as `Point`
tuples, without a `Position` each.
"""

from __future__ import annotations

import struct
import sys
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from nabij.contract import Position

_POINT: Final = struct.Struct("<dddq")
"""lat, lon, acc, ts (server ms), little-endian."""
POINT_BYTES: Final = _POINT.size
Point = tuple[float, float, float, int]
"""A packed point read back: lat, lon, acc, ts."""
_TS: Final = struct.Struct("<q").unpack_from
if sys.byteorder != "little":  # `_times` reads the stored int64 in place
    raise ImportError("the packed history needs a little-endian machine")


def pack(positions: Iterable[Position]) -> bytes:
    return b"".join(map(packed_point, positions))


def unpack(packed: bytes) -> list[Position]:
    return [Position(lat, lon, acc, ts) for lat, lon, acc, ts in _POINT.iter_unpack(packed)]


def packed_point(position: Position) -> bytes:
    return _POINT.pack(position.lat, position.lon, position.acc, position.ts)


# Typed as points, without a `cast` call: these run on every fix.
points: Final[Callable[[bytes], Iterator[Point]]] = _POINT.iter_unpack
_point_at: Final[Callable[[bytes, int], Point]] = _POINT.unpack_from


def newest(packed: bytes) -> Point:
    """The last point of a non-empty `packed`."""
    return _point_at(packed, len(packed) - POINT_BYTES)


def appended(packed: bytes, position: Position, *, limit: int) -> bytes:
    """`packed` with `position` after its points, the newest `limit` kept."""
    kept = (limit - 1) * POINT_BYTES
    if len(packed) > kept:
        packed = packed[-kept:] if kept else b""
    return packed + packed_point(position)


def _times(packed: bytes) -> memoryview:
    """The points' times, a view without a copy (bisect searches it at C speed)."""
    return memoryview(packed).cast("q")[3::4]


def added(
    packed: bytes, position: Position, *, horizon_ms: int, spacing_ms: int, limit: int
) -> bytes:
    """`packed` with `position` inserted in time order (after equal times), points before
    `horizon_ms` dropped, the second newest dropped when it lies within `spacing_ms` of the one
    before it (thinning evenly, the newest always kept), and at most `limit` points."""
    # This runs for every accepted fix: few times read in place (`_TS` at a point's end less
    # 8, so `end - 40` is the one before the last), and the result cut once.
    point = packed_point(position)
    end = len(packed)
    newest, last = position.ts, _TS(packed, end - 8)[0] if end else 0
    if end and newest < last:  # a late fix: rare
        at = bisect_right(_times(packed), newest) * POINT_BYTES
        packed, point = packed[:at] + point + packed[at:-POINT_BYTES], packed[-POINT_BYTES:]
        newest, last = last, _TS(packed, end - 8)[0]
    # Now `point` (at `newest`) goes after the `end` bytes of `packed` (the last at `last`).
    start = 0
    while start < end and _TS(packed, start + 24)[0] < horizon_ms:
        start += POINT_BYTES
    if start == end and newest < horizon_ms:
        return b""
    thinned = end - start >= 2 * POINT_BYTES and last - _TS(packed, end - 40)[0] < spacing_ms
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
    lat, lon, acc, ts = _POINT.unpack_from(packed, best * POINT_BYTES)
    return Position(lat, lon, acc, ts)

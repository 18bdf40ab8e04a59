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
an answer. The history, up to 40 points, is coded (`coded`): its newest point whole, last, each
older one as its step to the next newer one, ~8 bytes instead of 20; the very same integers come
back. A fix adds to it in place (steps cut off its ends, one appended), a backlog search reads
the time steps alone; a stored track that is its newest points is told (`ends_with`) and
rebuilt (`newest_points`) from its end. `motion` reads the track and the candidates (a few
points, on every fix, kept whole) as `Point` tuples, without a `Position` each.
"""

from __future__ import annotations

import math
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cache
from itertools import accumulate, starmap
from operator import add, sub
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


def newest_position(packed: bytes) -> Position:
    """The last point of a non-empty `packed`, as a position."""
    lat_e7, lon_e7, acc_mm, ts = _unpack_from(packed, len(packed) - POINT_BYTES)
    return Position(lat_e7 / E7, lon_e7 / E7, acc_mm / MM, ts)


def is_newest(position: Position, packed: bytes) -> bool:
    """Whether `position` is the last point of a non-empty `packed` (equals its
    `newest_position`), without making that position."""
    lat_e7: int
    lon_e7: int
    acc_mm: int
    ts: int
    lat_e7, lon_e7, acc_mm, ts = _unpack_from(packed, len(packed) - POINT_BYTES)
    return (
        position.ts == ts
        and position.lat == lat_e7 / E7
        and position.lon == lon_e7 / E7
        and position.acc == acc_mm / MM
    )


def newest(packed: bytes) -> Point:
    """The last point of a non-empty `packed`."""
    return from_point(*_unpack_from(packed, len(packed) - POINT_BYTES))


def appended(packed: bytes, point: bytes, *, limit: int) -> bytes:
    """`packed` with `point` after its points, the newest `limit` kept."""
    kept = (limit - 1) * POINT_BYTES
    if len(packed) > kept:
        packed = packed[-kept:] if kept else b""
    return packed + point


# --- The history, coded: its newest point whole (last), each older point as its step to the
# next newer one (newer less older, field by field), all steps of one width a field. ---

_WIDTHS: Final = ("hhhH", "iiiI", "qqqQ")
"""A step's fields (lat, lon, acc, time) at each width level: 2, 4 or 8 bytes. The time step is
never negative (a history is in time order). Level 0 holds steps within 3.6 km, 32 m of radius
and 65 s: a person's or a car's minute, 8 bytes a point."""
_TIME: Final = 3
_LEVEL_OF_BITS: Final = tuple(0 if bits <= 15 else 1 if bits <= 31 else 2 for bits in range(64))
"""A signed field's level by the bits of the farthest of its steps from zero (`max(high, ~low)`:
within ±2**15 takes 15); the time's, unsigned, by one bit less (below 2**16 takes 16)."""
_SINGLE: Final = b"\0"
"""The byte of widths of a history of one point (no steps)."""


@cache
def _step(mode: int) -> struct.Struct:
    """A step at the widths of `mode` (two bits a field, its level; lat lowest)."""
    return struct.Struct("<" + "".join(_WIDTHS[mode >> 2 * f & 3][f] for f in range(4)))


@cache
def _steps_struct(mode: int, count: int) -> struct.Struct:
    return struct.Struct("<" + _step(mode).format[1:] * count)


@cache
def _gaps_struct(mode: int, count: int) -> struct.Struct:
    """The time steps alone (the rest skipped): at C speed, for a search in time."""
    time = _step(mode).format[-1]
    return struct.Struct(f"<{f'{_step(mode).size - struct.calcsize(time)}x{time}' * count}")


@cache
def _places_struct(mode: int, count: int) -> struct.Struct:
    """The steps of lat, lon and acc alone (the time skipped)."""
    time = _step(mode).format[-1]
    return struct.Struct(f"<{f'{_step(mode).format[1:-1]}{struct.calcsize(time)}x' * count}")


@cache
def _whole_struct(count: int) -> struct.Struct:
    return struct.Struct("<" + _POINT.format[1:] * count)


def _level(field: int, low: int, high: int) -> int:
    if field != _TIME:
        bits = max(high, ~low).bit_length()
    elif low >= 0:
        bits = max(high.bit_length() - 1, 0)
    else:
        raise ValueError(f"a time step back: {low}")
    if bits >= len(_LEVEL_OF_BITS):
        raise ValueError(f"a step of field {field} beyond 64 bits: {low}..{high}")
    return _LEVEL_OF_BITS[bits]


def _mode(columns: Sequence[Sequence[int]]) -> int:
    """The narrowest width a field that holds all these steps (a column a field)."""
    return sum(
        _level(field, min(column), max(column)) << 2 * field
        for field, column in enumerate(columns)
        if column
    )


def _widths_held(mode: int, removed: Sequence[int]) -> bool:
    """Whether steps (flat, four a step) that leave a history of `mode` held one of its widths
    above the narrowest: the steps left may fit narrower (one coding: they must then be)."""
    held = _mode([removed[field::4] for field in range(4)])
    return any(mode >> s & 3 and held >> s & 3 == mode >> s & 3 for s in range(0, 8, 2))


def coded(points: bytes) -> bytes:
    """A history of these points (packed whole, in time order), coded: a byte that says the
    widths (the narrowest that fit: one history, one coding), the steps, the newest point."""
    if not points:
        return b""
    count = len(points) // POINT_BYTES
    whole = _whole_struct(count).unpack(points)
    steps = list(map(sub, whole[4:], whole[:-4]))  # flat, as packed: each field less its last
    mode = _mode([steps[field::4] for field in range(4)])
    return bytes((mode,)) + _steps_struct(mode, count - 1).pack(*steps) + points[-POINT_BYTES:]


def _count(packed: bytes) -> int:
    """How many steps a (non-empty) coded history holds: its points less the newest."""
    return (len(packed) - 1 - POINT_BYTES) // _step(packed[0]).size


def uncoded(packed: bytes) -> bytes:
    """A coded history's points packed whole, oldest first."""
    return newest_points(packed, _count(packed) + 1) if packed else b""


@cache
def _newest_structs(
    mode: int, steps: int
) -> tuple[int, Callable[[bytes, int], tuple[int, ...]], Callable[..., bytes]]:
    """For the newest `steps` steps of a history of `mode`: their bytes, their reader, and the
    packer of their points whole (one look-up a decode, not three)."""
    return (
        _step(mode).size * steps,
        _steps_struct(mode, steps).unpack_from,
        _whole_struct(steps + 1).pack,
    )


def newest_points(packed: bytes, count: int) -> bytes:
    """The newest `count` points (at least one) of the coded history `packed`, packed whole,
    oldest first (fewer if it holds fewer): only their steps are read, from its end (a step's
    width is the same throughout)."""
    if not packed:
        return b""
    mode, end = packed[0], len(packed) - POINT_BYTES
    span, read_steps, pack_points = _newest_structs(mode, count - 1)
    if span >= end:  # it holds fewer: all of them
        span, read_steps, pack_points = _newest_structs(mode, _count(packed))
    steps = read_steps(packed, end - span)
    # Each point is its newer one less the step between them: with every field reversed, newest
    # first, a difference with the value four before it, which `map` takes at C speed from the
    # list as it grows (~1.5 us for the track's 5 points, a loop ~1.8, a field at a time ~3.9).
    values = list(_unpack_from(packed, end))
    values.reverse()
    values += map(sub, values, reversed(steps))
    values.reverse()
    return pack_points(*values)


def ends_with(packed: bytes, points: bytes) -> bool:
    """Whether the coded history `packed` ends with `points` (packed whole, at least one): their
    newest compared, then their steps, packed at the history's widths, with its last steps as
    they lie (no point rebuilt: a few calls at C speed)."""
    if packed[-POINT_BYTES:] != points[-POINT_BYTES:]:
        return False
    count = len(points) // POINT_BYTES
    mode, end = packed[0], len(packed) - POINT_BYTES
    start = end - (count - 1) * _step(mode).size
    if start < 1:
        return False  # the history holds fewer points
    if count > 1 and _gaps_struct(mode, 1).unpack_from(packed, start)[0] != (
        _TS(points, POINT_BYTES + _TS_AT)[0] - _TS(points, _TS_AT)[0]
    ):
        return False  # at once where the history is thinned and the points are not
    whole = _whole_struct(count).unpack(points)
    try:
        steps = _steps_struct(mode, count - 1).pack(*map(sub, whole[4:], whole[:-4]))
    except struct.error:
        return False  # a step wider than the history's (or back in time): not one of its own
    return steps == packed[start:end]


def added(packed: bytes, point: bytes, *, horizon_ms: int, spacing_ms: int, limit: int) -> bytes:
    """The coded history `packed` with `point` inserted in time order (after equal times),
    points before `horizon_ms` dropped, the second newest dropped when it lies within
    `spacing_ms` of the one before it (thinning evenly, the newest always kept), and at most
    `limit` points."""
    if packed:  # nearly every fix: coded in place
        done = _added_in_place(packed, point, horizon_ms, spacing_ms, limit)
        if done is not None:
            return done
    return coded(_added_whole(uncoded(packed), point, horizon_ms, spacing_ms, limit))


def _added_in_place(
    packed: bytes, point: bytes, horizon_ms: int, spacing_ms: int, limit: int
) -> bytes | None:
    """`added` for a point that comes last, where the widths stay: the steps stay as they are,
    a few cut off the ends, one added. None for any other case: a late fix, a step wider than
    the history's, or steps that leave holding a width (the rest may fit narrower)."""
    mode, end = packed[0], len(packed) - POINT_BYTES
    last_lat, last_lon, last_acc, last = _unpack_from(packed, end)
    lat, lon, acc, ts = _unpack_from(point)
    if ts < last:
        return None  # a late fix
    step_struct = _step(mode)
    size = step_struct.size
    count = (end - 1) // size  # the steps: the points before the newest
    step = (lat - last_lat, lon - last_lon, acc - last_acc, ts - last)
    gaps = _gaps_struct(mode, count).unpack_from(packed, 1)
    # Point i (0 the oldest, `count` the newest) is kept from `first` on: at or after the horizon.
    first, at = 0, last - sum(gaps)
    while at < horizon_ms and first < count:
        at += gaps[first]
        first += 1
    if at < horizon_ms:
        return b"" if ts < horizon_ms else _SINGLE + point
    kept_last, replaced = count, ()
    if count - first >= 1 and gaps[-1] < spacing_ms:  # the second newest thinned out
        kept_last -= 1
        replaced = step_struct.unpack_from(packed, 1 + kept_last * size)
        step = tuple(map(add, step, replaced))
    first = max(first, kept_last - limit + 2)  # at most `limit - 1` points before `point`
    if first > kept_last:
        return _SINGLE + point
    if mode and _widths_held(mode, _steps_struct(mode, first).unpack_from(packed, 1) + replaced):
        return None
    try:
        last_step = step_struct.pack(*step)
    except struct.error:
        return None  # a big step or a long gap: wider steps
    return packed[:1] + packed[1 + first * size : 1 + kept_last * size] + last_step + point


def nearest(packed: bytes, t_ms: int, max_age_ms: int) -> Position | None:
    """The point of the coded history `packed` nearest in time to `t_ms` (the earlier on a
    tie), if within `max_age_ms`."""
    if not packed:
        return None
    mode, count = packed[0], _count(packed)
    newest = _unpack_from(packed, len(packed) - POINT_BYTES)
    gaps = _gaps_struct(mode, count).unpack_from(packed, 1)
    times = list(accumulate(gaps, initial=newest[_TIME] - sum(gaps)))
    after = bisect_left(times, t_ms)
    best, best_gap = -1, 0
    for index in range(max(0, after - 1), min(after + 1, len(times))):
        gap = abs(times[index] - t_ms)
        if gap <= max_age_ms and (best < 0 or gap < best_gap):
            best, best_gap = index, gap
    if best < 0:
        return None
    # Its place: the newest's less the steps from it on (read alone).
    places = _places_struct(mode, count - best).unpack_from(packed, 1 + best * _step(mode).size)
    lat, lon, acc = newest[0] - sum(places[::3]), newest[1] - sum(places[1::3]), newest[2]
    return Position(*from_point(lat, lon, acc - sum(places[2::3]), times[best]))


# --- The history packed whole: where a point comes before the newest (a backlog), and the
# reference the coded one holds exactly. ---


def _times(packed: bytes) -> tuple[int, ...]:
    """The points' times, read at C speed (bisect searches them likewise)."""
    return _times_unpacker(len(packed) // POINT_BYTES)(packed)


@cache
def _times_unpacker(count: int) -> Callable[[bytes], tuple[int, ...]]:
    # One struct a length (at most the history's limit): it skips all but the times.
    return struct.Struct("<" + f"{_TS_AT}xq" * count).unpack


def _added_whole(
    packed: bytes, point: bytes, horizon_ms: int, spacing_ms: int, limit: int
) -> bytes:
    """`added` on points packed whole."""
    # A late fix is inserted once; then the few times read in place (`_TS` at a point's end
    # less 8, the time being last), and the result cut once.
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

"""A point on the grid packs exactly; the packed history keeps exactly what a list of positions
kept, and finds the same ones."""

from __future__ import annotations

import struct
from bisect import bisect_left, insort

from hypothesis import given, settings
from hypothesis import strategies as st

from nabij.contract import Position
from services.proximity.core import history

T0 = 1_767_225_600_000
WINDOW_MS, POINTS, MAX_AGE_MS = 900_000, 40, 120_000
LATS, LONS = st.floats(-90, 90), st.floats(-180, 180)
ACCS = st.floats(0, 100_000)  # the contract's ranges
TIMES = st.integers(946_684_800_000, 4_102_444_800_000)


@settings(max_examples=500, deadline=None)
@given(LATS, LONS, ACCS, TIMES)
def test_a_position_put_on_the_grid_packs_and_unpacks_exactly(
    lat: float, lon: float, acc: float, ts: int
) -> None:
    """Any position the contract allows is put on the grid within half a step (0.5e-7 degree,
    0.5 mm; a hair more for the float products): its point unpacks to it bit for bit, and put
    on the grid or packed again it stays where it is (nothing drifts)."""
    on_grid, point = history.quantised(lat, lon, acc, ts)
    assert len(point) == history.POINT_BYTES == 20
    assert history.unpack(point) == [on_grid]
    assert history.newest(point) == (on_grid.lat, on_grid.lon, on_grid.acc, ts)
    assert history.quantised(on_grid.lat, on_grid.lon, on_grid.acc, ts) == (on_grid, point)
    assert history.to_point(on_grid) == point
    half = 0.5 + 1e-6
    assert abs(on_grid.lat - lat) * 1e7 <= half and abs(on_grid.lon - lon) * 1e7 <= half
    assert abs(on_grid.acc - acc) * 1e3 <= half and on_grid.ts == ts


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(LATS, LONS, ACCS, TIMES), max_size=6))
def test_points_stored_as_float64_figures_load_onto_the_grid(
    figures: list[tuple[float, float, float, int]],
) -> None:
    """Points packed by state format 3 (`<dddq`, 32 bytes) convert to the points of the same
    positions put on the grid, in order."""
    stored = b"".join(struct.pack("<dddq", *point) for point in figures)
    on_grid = [history.quantised(*point)[0] for point in figures]
    assert history.unpack(history.from_format_3(stored)) == on_grid


def listed(kept: list[Position], position: Position, now_ms: int) -> None:
    """The history as a list of positions did it before packing (the reference)."""
    insort(kept, position, key=lambda p: p.ts)
    while kept and kept[0].ts < now_ms - WINDOW_MS:
        del kept[0]
    if len(kept) >= 3 and kept[-2].ts - kept[-3].ts < WINDOW_MS // POINTS:
        del kept[-2]
    del kept[:-POINTS]


def listed_nearest(kept: list[Position], t_ms: int) -> Position | None:
    i = bisect_left(kept, t_ms, key=lambda p: p.ts)
    best: Position | None = None
    for candidate in kept[max(0, i - 1) : i + 1]:
        gap = abs(candidate.ts - t_ms)
        if gap <= MAX_AGE_MS and (best is None or gap < abs(best.ts - t_ms)):
            best = candidate
    return best


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from([0, 1, 15_000, 22_499, 22_500, 400_000]),
            st.sampled_from([0, 1, 15_000, 300_000, 299_999]),  # equal times, late ones
            st.floats(-90, 90),
        ),
        max_size=120,
    ),
    probes=st.lists(st.integers(-1_000_000, 4_000_000), max_size=10),
)
def test_packed_history_matches_a_list_of_positions(
    steps: list[tuple[int, int, float]], probes: list[int]
) -> None:
    """Arrivals now and then, some placed minutes back (a backlog), odd coordinates put on the
    grid: the packed history holds the same positions in the same order, bit for bit, and
    answers every time with the same position as the list did."""
    packed, kept, now = b"", list[Position](), T0
    for advance_ms, back_ms, lat in steps:
        now += advance_ms
        position, point = history.quantised(lat, lat / 3, 1 / 3 + advance_ms, now - back_ms)
        listed(kept, position, now)
        packed = history.added(
            packed, point, horizon_ms=now - WINDOW_MS, spacing_ms=WINDOW_MS // POINTS, limit=40
        )
        assert history.unpack(history.uncoded(packed)) == kept
    for probe in probes:
        assert history.nearest(packed, now - probe, MAX_AGE_MS) == listed_nearest(kept, now - probe)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-90, 90), st.floats(-180, 180), st.floats(0, 5000)),
        max_size=12,
    ),
    st.integers(1, 6),
)
def test_a_packed_track_keeps_the_newest_points_exactly(
    coordinates: list[tuple[float, float, float]], limit: int
) -> None:
    """A track (`appended`) keeps what `del track[:-limit]` after each append kept (positions on
    the grid), read back exactly as positions and as points."""
    packed, kept = b"", []
    for i, (lat, lon, acc) in enumerate(coordinates):
        position, point = history.quantised(lat, lon, acc, T0 + i)
        packed = history.appended(packed, point, limit=limit)
        kept.append(position)
        del kept[:-limit]
        assert history.unpack(packed) == kept
        assert list(history.points(packed)) == [(p.lat, p.lon, p.acc, p.ts) for p in kept]
        assert history.newest(packed) == (position.lat, position.lon, position.acc, T0 + i)


E7_LATS = st.integers(-900_000_000, 900_000_000)
E7_LONS = st.integers(-1_800_000_000, 1_800_000_000)
ACC_MM = st.integers(0, 100_000_000)  # the contract's 100 km
NEAR = st.integers(-40_000, 40_000)  # a few km of E7, 40 m of radius: narrow steps, or not quite


@st.composite
def coordinates(draw: st.DrawFn, previous: tuple[int, int, int]) -> tuple[int, int, int]:
    """Near the previous point (the common case, steps that fit narrow or just not) or anywhere
    (a jump across the globe or the antimeridian, a radius from 0 to 100 km)."""
    if draw(st.integers(0, 9)):
        lat, lon, acc = (value + draw(NEAR) for value in previous)
        return (max(-900_000_000, min(lat, 900_000_000)), lon, max(0, acc))
    return draw(E7_LATS), draw(E7_LONS), draw(ACC_MM)


@st.composite
def arrivals(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    """(now, point) pairs: live fixes a few seconds to hours apart, late ones placed back."""
    now, where, steps = T0, (520_000_000, 50_000_000, 5000), []
    for _ in range(draw(st.integers(0, 90))):
        now += draw(st.sampled_from([0, 1, 15_000, 22_499, 22_500, 60_000, 65_535, 65_536]))
        if draw(st.integers(0, 9)) == 0:
            now += draw(st.sampled_from([400_000, 899_999, 5_000_000_000]))  # a long gap
        back = draw(st.sampled_from([0, 0, 0, 1, 15_000, 299_999, 300_000]))  # late fixes
        where = draw(coordinates(where))
        steps.append((now, struct.pack("<iiIq", *where, now - back)))
    return steps


@settings(max_examples=400, deadline=None)
@given(
    arrivals(),
    st.sampled_from([(900_000, 40), (900_000, 16), (60_000, 3), (900_000, 1)]),
    st.lists(st.integers(-1_000_000, 4_000_000), max_size=8),
    st.integers(1, 45),
)
def test_the_coded_history_holds_exactly_what_points_packed_whole_hold(
    steps: list[tuple[int, bytes]], window: tuple[int, int], probes: list[int], newest: int
) -> None:
    """After every addition (big steps, long gaps, late fixes, coordinates and radii anywhere
    in the contract), the coded history decodes to exactly the points the 20-byte points held
    (`_added_whole`, main's code), is the one coding of those points (as a state loaded from
    format 4 codes them), gives its `newest` points read from its end as their last ones (all
    of them, if it holds fewer) and tells them from others (one of them left out), and finds
    the same position at every time as a list of them."""
    window_ms, limit = window
    coded, whole = b"", b""
    for now, point in steps:
        options = {"horizon_ms": now - window_ms, "spacing_ms": window_ms // limit, "limit": limit}
        coded = history.added(coded, point, **options)
        whole = history._added_whole(whole, point, **options)
        assert history.uncoded(coded) == whole
        assert history.coded(whole) == coded
        tail = whole[-newest * history.POINT_BYTES :]
        assert history.newest_points(coded, newest) == tail
        if tail:
            assert history.ends_with(coded, tail)
            skipped = tail[: history.POINT_BYTES] + tail[2 * history.POINT_BYTES :]
            assert history.ends_with(coded, skipped) == (skipped == whole[-len(skipped) :])
    kept = history.unpack(whole)
    for probe in probes:
        t_ms = steps[-1][0] - probe if steps else T0
        assert history.nearest(coded, t_ms, MAX_AGE_MS) == listed_nearest(kept, t_ms)


def remembered(coded: bytes, lat: float, lon: float, acc: float, now: int) -> bytes:
    """`coded` with a fix at `now`, as `timing.remember` adds it."""
    point = history.quantised(lat, lon, acc, now)[1]
    options = {"horizon_ms": now - WINDOW_MS, "spacing_ms": WINDOW_MS // POINTS, "limit": POINTS}
    return history.added(coded, point, **options)


def test_a_fix_a_minute_codes_in_8_bytes_a_point() -> None:
    """A walk with a fix a minute (its radius wandering by metres) takes 8 bytes a point past
    the newest (21 bytes with the byte of widths); a step that does not fit widens the steps
    only while it is in the history."""
    coded = b""
    for i in range(20):
        coded = remembered(coded, 52 + i * 1e-4, 5 - i * 1e-4, 5 + i % 3, T0 + i * 60_000)
    assert len(history.unpack(history.uncoded(coded))) == 16
    assert len(coded) == 1 + 15 * 8 + 20
    gap_at = T0 + 19 * 60_000 + 70_000  # a gap past 65.5 s: 10-byte steps while it is held
    coded = remembered(coded, 52, 5, 5, gap_at)
    points = len(history.unpack(history.uncoded(coded)))
    assert points == 15 and len(coded) == 1 + (points - 1) * 10 + 20
    for i in range(1, 17):
        coded = remembered(coded, 52, 5, 5, gap_at + i * 60_000)
    assert len(coded) == 1 + 15 * 8 + 20

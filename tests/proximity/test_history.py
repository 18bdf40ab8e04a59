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
        assert history.unpack(packed) == kept
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

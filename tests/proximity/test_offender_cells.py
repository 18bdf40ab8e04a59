"""The offender's warnings and fix interval are judged on the victim's grid cell (`cells`): they
cannot tell her positions within a cell apart, and they never miss a warning her exact
position warrants. See docs/privacy.md and docs/proximity.md."""

from __future__ import annotations

import math

import msgspec
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nabij.contract import Fix, SetInterval, Warn
from nabij.settings import PrivacySettings, ProximitySettings
from services.proximity.core.cells import METRES_PER_DEGREE, SnapGrid
from services.proximity.core.engine import Effects, ProximityEngine
from services.proximity.core.geo import distance_m
from services.proximity.core.pairs import OPEN_PHASES
from services.proximity.core.state import PairState
from tests.proximity import DAM, OFFENDER, T0, VICTIM, order, point_at

S = 1_000
PAIR = ("O-1", OFFENDER, VICTIM)
GRID = SnapGrid(PrivacySettings().offender_grid_m)
CENTRE = GRID.centre(*DAM)


def streams(max_m: float) -> st.SearchStrategy[list[tuple[str, int, float, float, float]]]:
    """Fixes of both devices: (whose, seconds since the previous one, metres from the centre of
    her cell, bearing, accuracy), accuracies including ones too coarse for the alarm ring."""
    return st.lists(
        st.tuples(
            st.sampled_from([OFFENDER, VICTIM]),
            st.integers(1, 30),
            st.floats(0.0, max_m),
            st.floats(0.0, 360.0),
            st.sampled_from([5.0, 40.0, 300.0]),
        ),
        min_size=1,
        max_size=60,
    )


in_cell = st.tuples(st.floats(0.01, 0.99), st.floats(0.01, 0.99))


def _in_cell(fraction: tuple[float, float]) -> tuple[float, float]:
    """A point of the cell of `CENTRE`, at these fractions of its height and width."""
    row_deg = GRID.cell_m / METRES_PER_DEGREE
    col_deg = row_deg / math.cos(math.radians(CENTRE[0]))
    return (
        CENTRE[0] + (fraction[0] - 0.5) * row_deg,
        CENTRE[1] + (fraction[1] - 0.5) * col_deg,
    )


def _offender_commands(
    stream: list[tuple[str, int, float, float, float]],
    her: tuple[float, float],
    grid_m: float = GRID.cell_m,
) -> list[tuple[int, bytes]]:
    """Every command sent to him, with the index of the step that sent it; she stays at `her`."""
    privacy = PrivacySettings(offender_grid_m=grid_m)
    eng = ProximityEngine([order()], ProximitySettings(), privacy)
    now, seqs, out = T0, {OFFENDER: 0, VICTIM: 0}, []
    for index, (device, gap_s, metres, bearing, acc) in enumerate(stream):
        now += gap_s * S
        lat, lon = point_at(metres, bearing, CENTRE) if device == OFFENDER else her
        effects = Effects()
        eng.apply(Fix(device, seqs[device], now, lat, lon, acc), now, effects)
        seqs[device] += 1
        out += [(index, msgspec.json.encode(c)) for d, c in effects.commands if d == OFFENDER]
    return out


@settings(max_examples=150, deadline=None)
@given(stream=streams(1_600.0), first=in_cell, second=in_cell)
def test_her_two_positions_in_one_cell_give_him_the_same_commands(
    stream: list[tuple[str, int, float, float, float]],
    first: tuple[float, float],
    second: tuple[float, float],
) -> None:
    """Indistinguishability: for any track of his (and any timing and accuracy of her fixes),
    her standing anywhere else in the same grid cell changes nothing he is sent: the same
    commands, sent at the same step."""
    her, elsewhere = _in_cell(first), _in_cell(second)
    assert GRID.centre(*her) == GRID.centre(*elsewhere) == CENTRE
    assert _offender_commands(stream, her) == _offender_commands(stream, elsewhere)


def test_her_position_in_the_cell_matters_with_a_1_m_grid() -> None:
    """The property can fail: on a 1 m grid (her exact position, in effect) the same approach
    warns him at a different step when she stands at the other side of the 250 m cell."""
    stream = [
        step
        for i in range(100)
        for step in ((VICTIM, 1, 0.0, 0.0, 5.0), (OFFENDER, 9, 1_000.0 - 10 * i, 0.0, 5.0))
    ]

    def first_alarm(her: tuple[float, float], grid_m: float) -> int:
        sent = _offender_commands(stream, her, grid_m)
        return next(i for i, c in sent if c == msgspec.json.encode(Warn(level="alarm")))

    south, north = _in_cell((0.05, 0.5)), _in_cell((0.95, 0.5))
    assert first_alarm(south, GRID.cell_m) == first_alarm(north, GRID.cell_m)
    assert first_alarm(south, 1.0) > first_alarm(north, 1.0)


# His fix at 22 s jumps out to 441 m from her (off his track): her entry dwell is kept (his track
# still leads inside her ring), and her next fix puts her cell beyond his ring: his dwell must be
# kept too, or her alarm opens at 28 s with his ring merely entering again.
HIS_JUMP_OUT = [(OFFENDER, 1, 0.0, 0.0, 5.0)] * 5 + [
    (OFFENDER, 5, 291.0, 35.0, 5.0),
    (VICTIM, 8, 0.0, 0.0, 5.0),
    (OFFENDER, 4, 441.0, 0.0, 5.0),
    (VICTIM, 3, 133.0, 160.0, 5.0),
    (OFFENDER, 3, 40.0, 0.0, 5.0),
]

# Her fix at 15 s jumps 151 m, to 726 m from him (off her track): her dwell is kept (her track
# leads inside), so his must be too.
HER_JUMP_OUT = [
    (OFFENDER, 1, 291.0, 0.0, 5.0),
    (VICTIM, 2, 0.0, 0.0, 5.0),
    (OFFENDER, 1, 0.0, 0.0, 5.0),
    (OFFENDER, 3, 726.0, 0.0, 40.0),
    (VICTIM, 1, 151.0, 0.0, 40.0),
    (VICTIM, 7, 0.0, 0.0, 5.0),
    (VICTIM, 3, 146.0, 0.0, 40.0),
]

# She stands still; he walks in, his ring opens, hers starts its dwell; her fix jumps 400 m out
# (off her track) and her device is silent for 85 s: on each of his fixes her dwell is kept (her
# track leads inside), so his ring must not start its exit and clear meanwhile.
HER_JUMP_OUT_THEN_SILENT = (
    [(VICTIM, 10, 0.0, 0.0, 5.0)] * 3
    + [(OFFENDER, 5, 700.0 - 25 * i, 0.0, 5.0) for i in range(9)]
    + [(VICTIM, 2, 400.0, 180.0, 5.0)]
    + [(OFFENDER, 20, 500.0, 0.0, 5.0)] * 4
    + [(VICTIM, 5, 0.0, 0.0, 5.0)]
)


@settings(max_examples=150, deadline=None)
@given(walk=streams(1_200.0))
@example(walk=HIS_JUMP_OUT)
@example(walk=HER_JUMP_OUT)
@example(walk=HER_JUMP_OUT_THEN_SILENT)
def test_every_real_alarm_finds_him_warned(
    walk: list[tuple[str, int, float, float, float]],
) -> None:
    """A superset: whenever the alarm ring judged on her exact position is open (both of them
    moving, any accuracy), his own alarm ring is open, his device was told `alarm` at that fix
    or before, and his fixes come fast."""
    eng = ProximityEngine([order()], ProximitySettings())
    fast = ProximitySettings().alarm_interval_s
    now, seqs = T0, {OFFENDER: 0, VICTIM: 0}
    for device, gap_s, metres, bearing, acc in walk:
        now += gap_s * S
        lat, lon = point_at(metres, bearing, CENTRE)
        effects = Effects()
        eng.apply(Fix(device, seqs[device], now, lat, lon, acc), now, effects)
        seqs[device] += 1
        pair, him = eng.pair(PAIR), eng.device(OFFENDER)
        if pair.alarm.phase in OPEN_PHASES:
            assert pair.offender_alarm.phase in OPEN_PHASES
            assert him.warned == "alarm"
            assert him.interval_s == fast


def test_a_position_is_never_further_from_its_cell_centre_than_the_bound() -> None:
    """The bound his rings are enlarged by holds at the cells' corners, from the equator to
    latitude 80, for the default cell and the largest allowed."""
    for cell_m in (GRID.cell_m, 5_000.0):
        grid = SnapGrid(cell_m)
        for lat in (0.0, 1e-9, 37.5, 52.3731, 65.0, 80.0, -45.0):
            for lon in (4.8926, -122.4, 179.9):
                centre = grid.centre(lat, lon)
                row_deg = cell_m / METRES_PER_DEGREE
                col_deg = row_deg / math.cos(math.radians(centre[0]))
                for north in (-0.4999, 0.4999):
                    for east in (-0.4999, 0.4999):
                        corner = (centre[0] + north * row_deg, centre[1] + east * col_deg)
                        assert grid.centre(*corner) == centre
                        assert distance_m(*corner, *centre) <= grid.worst_error_m


def test_pair_state_stored_before_his_rings_existed_still_loads() -> None:
    """A pair state written before this change decodes, his rings outside."""
    old = {"order_id": "O-1", "offender_device": OFFENDER, "victim_device": VICTIM}
    old["alarm"] = {"phase": "inside", "since_ts": T0}
    pair = msgspec.msgpack.decode(msgspec.msgpack.encode(old), type=PairState)
    assert pair.alarm.phase == "inside"
    assert (pair.offender_pre_alert.phase, pair.offender_alarm.phase) == ("outside", "outside")


def test_his_interval_speeds_up_only_with_his_own_rings() -> None:
    """Her device speeds up while a ring of hers is entering; his waits for his own ring to
    open, and then he is told both the warning and the interval."""
    eng = ProximityEngine([order()], ProximitySettings())
    effects = Effects()
    eng.apply(Fix(VICTIM, 0, T0, *DAM, 5.0), T0, effects)
    eng.apply(Fix(OFFENDER, 0, T0 + S, *point_at(900, 0.0, DAM), 5.0), T0 + S, effects)
    assert [c for d, c in effects.commands if d == OFFENDER] == []
    assert (VICTIM, SetInterval(seconds=15)) in effects.commands
    later = Effects()
    eng.apply(Fix(OFFENDER, 1, T0 + 12 * S, *point_at(900, 0.0, DAM), 5.0), T0 + 12 * S, later)
    assert [c for d, c in later.commands if d == OFFENDER] == [
        Warn(level="pre_alert"),
        SetInterval(seconds=15),
    ]

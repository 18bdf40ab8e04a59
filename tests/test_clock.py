"""nabij's clock on a scenario's timescale: the one mapping devices and nabij share."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nabij.clock import Timescale, scaled_clock

ANCHOR = 1_780_000_000_000


def test_the_clock_equals_the_wall_at_the_anchor_and_runs_speed_times_faster() -> None:
    """At the anchor both read the same; a wall second later nabij's clock is `speed` s on."""
    scale = Timescale(100.0, ANCHOR)
    assert scale.at(ANCHOR) == ANCHOR
    assert scale.at(ANCHOR + 1000) == ANCHOR + 100_000
    assert scale.at(ANCHOR - 10) == ANCHOR - 1000  # before the anchor too: one straight line


def test_waits_on_the_wall_shrink_by_the_speed() -> None:
    """A 60 s escalation timeout on a x30 clock is 2 s of waiting on the wall."""
    assert Timescale(30.0, ANCHOR).wall_s(60.0) == pytest.approx(2.0)
    assert Timescale().wall_s(60.0) == 60.0


@given(
    wall=st.integers(min_value=ANCHOR - 10**9, max_value=ANCHOR + 10**9),
    anchor=st.integers(min_value=ANCHOR - 10**9, max_value=ANCHOR + 10**9),
)
def test_speed_one_is_the_wall_clock_whatever_the_anchor(wall: int, anchor: int) -> None:
    """Speed 1 never moves the clock off the wall: an anchor alone changes nothing."""
    assert Timescale(1.0, anchor).at(wall) == wall


@given(
    speed=st.floats(min_value=0.01, max_value=10_000.0),
    a=st.integers(min_value=ANCHOR, max_value=ANCHOR + 10**9),
    b=st.integers(min_value=ANCHOR, max_value=ANCHOR + 10**9),
)
def test_the_clock_never_runs_backwards(speed: float, a: int, b: int) -> None:
    """A later wall time is never an earlier nabij time, at any speed."""
    scale = Timescale(speed, ANCHOR)
    low, high = sorted((a, b))
    assert scale.at(low) <= scale.at(high)


@pytest.mark.parametrize("speed", [0.0, -1.0, float("inf"), float("nan")])
def test_a_speed_that_is_not_positive_and_finite_is_refused(speed: float) -> None:
    """No clock that stands still, runs backwards or jumps to infinity."""
    with pytest.raises(ValueError, match="speed"):
        Timescale(speed, ANCHOR)


def test_scaled_clock_reads_the_wall_through_the_timescale() -> None:
    """The bound clock maps the wall reading it is given; at speed 1 it is the wall itself."""
    wall = [ANCHOR + 2000]
    assert scaled_clock(Timescale(10.0, ANCHOR), lambda: wall[0])() == ANCHOR + 20_000
    wall_ms = lambda: wall[0]  # noqa: E731  # the identity the speed-1 clock must return
    assert scaled_clock(Timescale(), wall_ms) is wall_ms

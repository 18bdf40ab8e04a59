"""The ring state machine, alone: dwell, critical distance, exit margin and their properties."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nabij.config import ProximitySettings
from services.proximity.core.hysteresis import RingParams, Transition, step
from services.proximity.core.state import RingState

RING = RingParams(
    kind="proximity_alarm",
    ring_m=500.0,
    exit_margin_m=50.0,
    enter_dwell_ms=10_000,
    exit_dwell_ms=60_000,
    critical_m=100.0,
)


def run(
    distances_and_times: list[tuple[float, int]], params: RingParams = RING
) -> tuple[RingState, list[Transition]]:
    state = RingState()
    transitions: list[Transition] = []
    for distance, t in distances_and_times:
        state, transition = step(state, distance, t, params)
        if transition is not None:
            transitions.append(transition)
    return state, transitions


def test_entering_needs_the_dwell_before_opening() -> None:
    """Within the ring the pair is first `entering`; it opens once a later observation, still
    within, is at least the enter dwell after the first."""
    state, transition = step(RingState(), 480.0, 1_000, RING)
    assert (state.phase, state.since_ts, transition) == ("entering", 1_000, None)
    state, transition = step(state, 470.0, 10_999, RING)
    assert (state.phase, transition) == ("entering", None)
    state, transition = step(state, 470.0, 11_000, RING)
    assert (state.phase, state.since_ts, transition) == ("inside", 11_000, "opened")


def test_entering_falls_back_outside_when_an_observation_is_beyond_the_ring() -> None:
    """An observation beyond the ring while entering returns to outside without any signal, and
    the dwell starts over."""
    state, _ = step(RingState(), 480.0, 0, RING)
    state, transition = step(state, 501.0, 5_000, RING)
    assert (state.phase, transition) == ("outside", None)
    state, _ = step(state, 480.0, 8_000, RING)
    state, transition = step(state, 480.0, 12_000, RING)
    assert (state.phase, transition) == ("entering", None)


def test_critical_distance_opens_at_once_from_outside_and_from_entering() -> None:
    """Under the critical distance the ring opens on the first observation, dwell or not."""
    state, transition = step(RingState(), 99.0, 0, RING)
    assert (state.phase, transition) == ("inside", "opened")
    entering, _ = step(RingState(), 300.0, 0, RING)
    state, transition = step(entering, 50.0, 1, RING)
    assert (state.phase, transition) == ("inside", "opened")


def test_critical_distance_beyond_a_small_ring_does_not_open_it() -> None:
    """A critical distance larger than the ring only applies within the ring."""
    small = RingParams("proximity_alarm", 50.0, 50.0, 10_000, 60_000, critical_m=100.0)
    state, transition = step(RingState(), 80.0, 0, small)
    assert (state.phase, transition) == ("outside", None)


def test_inside_stays_inside_within_the_exit_margin() -> None:
    """Beyond the ring but within ring + margin is still inside; the state object is unchanged."""
    inside = RingState("inside", 0, 400.0)
    state, transition = step(inside, 549.0, 5_000, RING)
    assert state is inside and transition is None
    state, transition = step(inside, 550.0, 5_000, RING)
    assert state is inside and transition is None


def test_exiting_clears_only_after_the_exit_dwell_beyond_the_margin() -> None:
    """Beyond ring + margin starts `exiting`; it clears once a later observation, still beyond,
    is at least the exit dwell after the first."""
    state, transition = step(RingState("inside", 0, 400.0), 551.0, 1_000, RING)
    assert (state.phase, state.since_ts, state.reported_m, transition) == (
        "exiting",
        1_000,
        400.0,
        None,
    )
    state, transition = step(state, 700.0, 60_999, RING)
    assert (state.phase, transition) == ("exiting", None)
    state, transition = step(state, 700.0, 61_000, RING)
    assert (state.phase, transition) == ("outside", "cleared")


def test_exiting_returns_inside_without_a_new_open() -> None:
    """Coming back within ring + margin while exiting resumes the open condition silently."""
    exiting = RingState("exiting", 1_000, 400.0)
    state, transition = step(exiting, 540.0, 30_000, RING)
    assert (state.phase, state.reported_m, transition) == ("inside", 400.0, None)


def test_zero_dwells_open_and_clear_on_one_observation() -> None:
    """With no dwell configured, one observation within opens and one beyond the margin clears."""
    instant = RingParams("proximity_alarm", 500.0, 50.0, 0, 0, critical_m=0.0)
    state, transition = step(RingState(), 500.0, 0, instant)
    assert (state.phase, transition) == ("inside", "opened")
    state, transition = step(state, 551.0, 0, instant)
    assert (state.phase, transition) == ("outside", "cleared")


def test_default_exit_margin_is_ten_percent_of_the_ring_but_at_least_50_m() -> None:
    """Without a configured margin: 50 m for rings up to 500 m, 10% above that."""
    defaults = ProximitySettings()
    assert RingParams.build("proximity_alarm", 300.0, defaults).exit_margin_m == 50.0
    assert RingParams.build("proximity_alarm", 2_000.0, defaults).exit_margin_m == 200.0
    configured = ProximitySettings(exit_margin_m=25.0)
    assert RingParams.build("proximity_alarm", 2_000.0, configured).exit_margin_m == 25.0


# --- properties ------------------------------------------------------------------------------

params_strategy = st.builds(
    RingParams,
    kind=st.just("proximity_alarm"),
    ring_m=st.floats(50.0, 20_000.0),
    exit_margin_m=st.floats(1.0, 2_000.0),
    enter_dwell_ms=st.integers(0, 120_000),
    exit_dwell_ms=st.integers(0, 600_000),
    critical_m=st.floats(0.0, 200.0),
)
gaps_ms = st.integers(0, 120_000)


def timeline(gaps: list[int]) -> list[int]:
    times, t = [], 0
    for gap in gaps:
        t += gap
        times.append(t)
    return times


@settings(max_examples=300, deadline=None)
@given(
    params=params_strategy,
    series=st.lists(st.tuples(st.floats(-0.999, 0.999), gaps_ms), min_size=1, max_size=400),
    centre_offset=st.floats(-1.0, 1.0),
)
def test_noise_narrower_than_the_exit_margin_opens_at_most_once(
    params: RingParams, series: list[tuple[float, int]], centre_offset: float
) -> None:
    """Distances that wobble over a band narrower than the exit margin, anywhere near the ring,
    open the ring at most once over any number of observations."""
    half_band = params.exit_margin_m / 2
    centre = params.ring_m + centre_offset * params.exit_margin_m
    times = timeline([gap for _, gap in series])
    observations = [
        (max(0.0, centre + noise * half_band), t)
        for (noise, _), t in zip(series, times, strict=True)
    ]
    _, transitions = run(observations, params)
    assert transitions.count("opened") <= 1


@settings(max_examples=300, deadline=None)
@given(
    params=params_strategy,
    approach=st.lists(st.tuples(st.floats(1.0001, 10.0), gaps_ms), max_size=20),
    inside=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 60_000)), min_size=2),
)
def test_a_track_inside_longer_than_the_dwell_is_never_missed(
    params: RingParams,
    approach: list[tuple[float, int]],
    inside: list[tuple[float, int]],
) -> None:
    """However the pair approached, observations that stay within the ring for at least the enter
    dwell leave it open."""
    times = timeline([gap for _, gap in approach + inside])
    fractions = [fraction for fraction, _ in approach + inside]
    observations = [(f * params.ring_m, t) for f, t in zip(fractions, times, strict=True)]
    inside_times = times[len(approach) :]
    state, transitions = run(observations, params)
    if inside_times[-1] - inside_times[0] >= params.enter_dwell_ms:
        assert state.phase == "inside"
        assert transitions[-1:] == ["opened"]


@settings(max_examples=300, deadline=None)
@given(
    params=params_strategy,
    series=st.lists(st.tuples(st.floats(0.0, 30_000.0), gaps_ms), max_size=300),
)
def test_opens_and_clears_alternate_and_the_state_never_goes_back_in_time(
    params: RingParams, series: list[tuple[float, int]]
) -> None:
    """Any series: transitions alternate opened, cleared, opened...; since_ts never decreases;
    an open ring is always inside or exiting and a closed one outside or entering."""
    state = RingState()
    expected: Transition = "opened"
    for (distance, _), t in zip(series, timeline([gap for _, gap in series]), strict=True):
        previous = state
        state, transition = step(state, distance, t, params)
        assert state.since_ts >= previous.since_ts
        if transition is not None:
            assert transition == expected
            expected = "cleared" if transition == "opened" else "opened"
        is_open = expected == "cleared"
        assert (state.phase in ("inside", "exiting")) == is_open

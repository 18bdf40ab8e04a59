"""The census behind the pair and device gauges: every pair in one phase per ring, every device
in one contact-age bucket, on injected time."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.proximity.core.census import (
    CONTACT_AGE_LABELS,
    CensusRound,
    contact_age,
    device_contact,
    pair_phases,
)
from services.proximity.core.state import DeviceState, PairState, Phase, RingState
from tests.proximity import T0


def test_contact_age_buckets_edges() -> None:
    """Under a minute, then 1-5 min, 5-15 min, 15 min-1 h, over an hour; never heard apart."""
    device = DeviceState("d")
    assert contact_age(device, T0) == "never"
    for age_s, bucket in [(0, "under_1m"), (59.9, "under_1m"), (60, "1m_5m"), (299, "1m_5m"),
                          (300, "5m_15m"), (900, "15m_1h"), (3600, "over_1h")]:  # fmt: skip
        device.last_heard_ms = T0 - round(age_s * 1000)
        assert contact_age(device, T0) == bucket, age_s


@given(st.lists(st.tuples(st.integers(0, 10_000), st.booleans(), st.booleans()), max_size=50))
def test_every_device_is_counted_once(devices: list[tuple[int, bool, bool]]) -> None:
    states = []
    for i, (age_s, heard, online) in enumerate(devices):
        state = DeviceState(f"d{i}", online=online)
        state.last_heard_ms = T0 - age_s * 1000 if heard else None
        states.append(state)
    counts = device_contact(states, T0)
    assert sum(counts.values()) == len(devices)
    assert {age for age, _online in counts} <= set(CONTACT_AGE_LABELS)
    assert sum(n for (_age, online), n in counts.items() if online) == sum(
        1 for _a, _h, online in devices if online
    )


def test_pairs_are_counted_per_ring() -> None:
    inside = PairState("O-1", "a", "v", alarm=RingState(phase="inside"))
    outside = PairState("O-2", "b", "w")
    counts = pair_phases([inside, outside])
    assert counts == {("pre_alert", "outside"): 2, ("alarm", "inside"): 1, ("alarm", "outside"): 1}


@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.booleans(), st.booleans()), max_size=40),
    st.lists(st.sampled_from(["outside", "entering", "inside", "exiting"]), max_size=20),
    st.integers(1, 15),
)
def test_a_round_in_slices_counts_what_one_pass_counts(
    devices: list[tuple[int, bool, bool]], phases: list[Phase], budget: int
) -> None:
    """The service counts a slice per loop (`CensusRound`); the slices add up to the whole."""
    states = []
    for i, (age_s, online, grouped) in enumerate(devices):
        states.append(DeviceState(f"d{i}", online=online, last_heard_ms=T0 - age_s * 1000))
        states[-1].grouped = grouped
    pairs = [PairState(f"O{i}", "a", "v", alarm=RingState(phase)) for i, phase in enumerate(phases)]
    census = CensusRound(pairs, states)
    steps = 1
    while not census.step(T0, budget):
        steps += 1
    assert census.contact == device_contact(states, T0)
    assert census.phases == pair_phases(pairs)
    assert census.grouped == sum(1 for _a, _o, grouped in devices if grouped)
    assert steps == max(1, -(-(len(states) + len(pairs)) // budget))

"""A pair's record (`topology.PairSpec`) holds its state itself, its last comparison packed:
it gives back exactly the state it took (loaded, handed over), and its time never goes
backwards. Stored, a pair state holds no ids (`PAIR_FORMAT`): it decodes exactly under its
key, and main's format (a map with the ids) still loads."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from nabij.config import ProximitySettings
from services.proximity.core.cells import SnapGrid
from services.proximity.core.state import (
    PairState,
    RingState,
    encode_pair,
    pair_state_decoder,
    state_encoder,
)
from services.proximity.core.topology import PairSpec, Topology
from tests.proximity import OFFENDER, VICTIM, order

figures = st.none() | st.floats(allow_nan=False)
rings = st.builds(
    RingState,
    st.sampled_from(["outside", "entering", "inside", "exiting"]),
    st.integers(0, 2**62),
    figures,
)
states = st.builds(
    PairState,
    st.just("O-stored"),
    st.just("ank-stored"),
    st.just("vic-stored"),
    pre_alert=rings,
    alarm=rings,
    last_obs_ts=st.integers(-(2**62), 2**62),
    last_distance_m=figures,
    last_uncertainty_m=figures,
    exempt=st.booleans(),
    offender_pre_alert=rings,
    offender_alarm=rings,
)


def a_pair(order_id: str = "O-1", offender: str = OFFENDER, victim: str = VICTIM) -> PairSpec:
    topology = Topology.build(
        [order(order_id, offender, [victim])], ProximitySettings(), SnapGrid(100)
    )
    (spec,) = topology.pairs
    return spec


def with_ids_of(spec: PairSpec, state: PairState) -> PairState:
    return msgspec.structs.replace(
        state, order_id=spec.order_id, offender_device=spec.offender, victim_device=spec.victim
    )


@given(state=states)
def test_a_record_gives_back_the_state_it_took_under_its_own_ids(state: PairState) -> None:
    spec = a_pair()
    spec.restore(state)
    assert spec.state() == with_ids_of(spec, state)
    heir = a_pair("O-1", "ank-new", "vic-new")  # a hand-over: record to record
    heir.restore(spec)
    assert heir.state() == with_ids_of(heir, state)
    assert not gc.is_tracked(spec) and not gc.is_tracked(heir)


def test_a_new_pair_is_a_stored_pair_never_compared() -> None:
    spec = a_pair()
    assert spec.state() == PairState("O-1", OFFENDER, VICTIM)
    assert spec.observed is None


@given(
    comparisons=st.lists(
        st.tuples(st.integers(0, 2**62), st.floats(0, 1e7), st.floats(0, 1e4)), min_size=1
    ),
    start=states,
)
def test_pair_time_never_goes_backwards_and_the_figures_are_the_last(
    comparisons: list[tuple[int, float, float]], start: PairState
) -> None:
    spec = a_pair()
    spec.restore(start)
    newest = start.last_obs_ts
    for index, (ts, distance, uncertainty) in enumerate(comparisons):
        newest = max(newest, ts)
        assert spec.pair_time(ts) == newest
        spec.observe(newest, distance, uncertainty, exempt=index % 2 == 0)
        assert spec.last_obs_ts == newest and spec.exempt == (index % 2 == 0)
        assert (spec.last_distance_m, spec.last_uncertainty_m) == (distance, uncertainty)
    rings = spec.ring_states
    spec.exempt = not spec.exempt  # the tick's, at a window's end: the rest stays
    assert spec.last_comparison() == (newest, distance, uncertainty)
    assert spec.ring_states is rings


def test_pairs_share_their_terms_and_outside_rings_in_a_record_of_64_bytes() -> None:
    topology = Topology.build(
        [order("O-1", OFFENDER, [VICTIM]), order("O-2", "ank-2", ["vic-2"])],
        ProximitySettings(),
        SnapGrid(100),
    )
    one, two = topology.pairs
    assert one.terms is two.terms and one.ring_states is two.ring_states
    one.alarm = RingState("inside", 5, 12.0)
    assert one.alarm == RingState("inside", 5, 12.0) and two.alarm.phase == "outside"
    one.alarm = two.alarm  # outside again: the shared tuple again
    assert one.ring_states is two.ring_states
    assert sys.getsizeof(one) <= 64  # 12 fields took 112


@given(state=states)
def test_a_stored_pair_decodes_exactly_under_its_key(state: PairState) -> None:
    blob = encode_pair(state)
    assert pair_state_decoder.decode(blob, state.key) == state
    assert state.order_id.encode() not in blob  # the key holds the ids
    assert len(blob) < len(state_encoder.encode(state))


def test_a_pair_state_stored_by_the_format_before_loads_as_it_was() -> None:
    """Written by main before `PAIR_FORMAT` 2 (`state_encoder.encode(PairState(...))`): a map
    by field name with its own ids, which it keeps."""
    blob = (Path(__file__).parent / "pair_state_format_1.msgpack").read_bytes()
    assert pair_state_decoder.decode(blob, ("O-7", "ank-7", "vic-7")) == PairState(
        "O-7",
        "ank-7",
        "vic-7",
        pre_alert=RingState("inside", 1_767_225_600_000, 812.5),
        alarm=RingState("entering", 1_767_225_630_000),
        last_obs_ts=1_767_225_660_000,
        last_distance_m=431.25,
        last_uncertainty_m=18.0,
        exempt=True,
        offender_pre_alert=RingState("exiting", 1_767_225_645_000, 900.0),
    )

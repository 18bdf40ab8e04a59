"""The topology's columns by device (`Topology.rank`) say what the five lookups they replaced said:
checked against them, computed the plain way, for random orders (shared devices, a victim who
is an offender elsewhere, an order with no victim, a victim listed twice)."""

from __future__ import annotations

import gc
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from nabij.config import Order, ProximitySettings
from nabij.orders import held_orders
from services.proximity.core.cells import SnapGrid
from services.proximity.core.topology import RANK_PREFIX, Topology
from tests.proximity import order

DEVICES = [f"dev-{i}" for i in range(6)]


@st.composite
def some_orders(draw: st.DrawFn) -> list[Order]:
    made = []
    for i in range(draw(st.integers(0, 6))):
        offender = draw(st.sampled_from(DEVICES))
        others = [d for d in DEVICES if d != offender]
        victims = draw(st.lists(st.sampled_from(others), max_size=3))  # may repeat, or be none
        made.append(order(f"O-{i}", offender, victims))
    return made


def plain_lookups(orders: list[Order]) -> tuple[dict[str, list[object]], dict[str, list[object]]]:
    """Device -> its pairs' keys, and device -> its memberships, as the dicts were built."""
    pairs_of: dict[str, list[object]] = {}
    memberships: dict[str, dict[object, None]] = {}
    for o in orders:
        memberships.setdefault(o.offender_device, {})[o.id, o.offender_device, "offender"] = None
        for victim in dict.fromkeys(o.victim_devices):
            key = (o.id, o.offender_device, victim)
            pairs_of.setdefault(o.offender_device, []).append(key)
            pairs_of.setdefault(victim, []).append(key)
            memberships.setdefault(victim, {})[o.id, o.offender_device, "victim"] = None
    return pairs_of, {device: list(ms) for device, ms in memberships.items()}


@settings(max_examples=300, deadline=None)
@given(orders=some_orders())
def test_each_device_record_says_what_the_plain_lookups_say(orders: list[Order]) -> None:
    topology = Topology.build(orders, ProximitySettings(), SnapGrid(100))
    pairs_of, memberships = plain_lookups(orders)
    offenders = list(dict.fromkeys(o.offender_device for o in orders))
    assert list(topology.records) == list(memberships)  # the devices, in rank order
    # By rank, the very strings of the keys (an agenda hands them back for its places).
    assert list(map(id, topology.device_ids)) == list(map(id, topology.records))
    columns = (topology.held, topology.offender_ranks, topology.victims)
    assert all(len(column) == len(memberships) for column in columns)
    for rank, (device, record) in enumerate(topology.records.items()):
        assert topology.rank(device) == rank
        assert record == RANK_PREFIX.pack(rank)  # never heard: its rank alone
        assert topology.offender_rank(device) == (
            offenders.index(device) if device in offenders else None
        )
        roles = {role for _, _, role in memberships[device]}
        assert topology.is_victim(device) == ("victim" in roles)
        assert topology.role(device) == ("offender" if "offender" in roles else "victim")
        assert [spec.key for spec in topology.pairs_of(device)] == pairs_of.get(device, [])
        # A device in one pair holds the pair itself: no tuple of one.
        assert isinstance(topology.held[rank], tuple) == (len(pairs_of.get(device, [])) != 1)
        assert topology.orders(device) == tuple(order_id for order_id, _, _ in memberships[device])
        # Kept only when its pairs do not say it (an order of it has none of its pairs).
        assert (rank not in topology.other_orders) == all(
            any(key[0] == order_id for key in pairs_of.get(device, []))
            for order_id, _, _ in memberships[device]
        )
        assert [
            (m.order_id, m.offender_device, m.role) for m in topology.memberships(device)
        ] == memberships[device]
    for o in orders:
        for index, victim in enumerate(dict.fromkeys(o.victim_devices)):
            spec = topology.pair((o.id, o.offender_device, victim))
            assert spec is not None and spec.victim_role == f"victim{index + 1}"
            assert spec.key == (o.id, o.offender_device, victim)
    # Every pair once, in the order of the orders; a key of none is none.
    assert [spec.key for spec in topology.pairs] == [
        (o.id, o.offender_device, victim)
        for o in orders
        for victim in dict.fromkeys(o.victim_devices)
    ]
    assert topology.pair(("O-none", DEVICES[0], DEVICES[1])) is None


@settings(max_examples=100, deadline=None)
@given(orders=some_orders())
def test_no_column_can_be_reached_from_what_it_holds(orders: list[Order]) -> None:
    """A pair (`PairSpec`) is untracked by the garbage collector: a cycle through it would
    never be freed. Whatever a device's pairs lead to (their states, rings, exemptions), no
    path comes back to a pair or to a column that holds them."""
    topology = Topology.build(orders, ProximitySettings(), SnapGrid(100))
    for device, record in topology.records.items():
        topology.records[device] = record + b"state"
    held = {id(topology), id(topology.held), id(topology.records), *map(id, topology.pairs)}
    for device in topology.records:
        seen: set[int] = set()
        todo: list[object] = [
            referent for spec in topology.pairs_of(device) for referent in gc.get_referents(spec)
        ]
        while todo:
            found = todo.pop()
            if id(found) in seen or isinstance(found, type):
                continue  # a class leads to modules and everything else: no instance data
            assert id(found) not in held
            seen.add(id(found))
            todo.extend(gc.get_referents(found))


def test_the_build_holds_little_beyond_what_it_keeps() -> None:
    """The process's resident memory keeps the build's peak: fails if the build holds a list of
    joins a device or a dict of ranks again (~675 bytes a pair at its peak)."""
    orders = held_orders(order(f"O-{i}", f"ank-{i}", [f"vic-{i}"]) for i in range(3000))
    gc.collect()
    tracemalloc.start()
    try:
        topology = Topology.build(orders, ProximitySettings(), SnapGrid(100))
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(topology.pairs) == len(orders)
    assert (peak - kept) / len(orders) < 150, (kept, peak)

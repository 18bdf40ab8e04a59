"""Which shard judges which orders: a pure function of the order graph, pairs kept together."""

from __future__ import annotations

import gc
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from nabij.keys import Shard
from nabij.orders import Order, held_orders
from services.proximity.core.shards import Handover, Ownership, components, handover_plan

OFFENDERS = st.sampled_from([f"ank-{i}" for i in range(6)])
VICTIMS = st.sampled_from([f"vic-{i}" for i in range(6)])


def order(order_id: str, offender: str, *victims: str) -> Order:
    return Order(id=order_id, offender_device=offender, victim_devices=list(victims), alarm_m=500)


orders_strategy = st.lists(
    st.tuples(OFFENDERS, st.lists(VICTIMS, min_size=1, max_size=3, unique=True)), max_size=8
).map(lambda rows: [order(f"O-{i}", off, *vics) for i, (off, vics) in enumerate(rows)])


def test_an_offender_with_two_victims_and_a_shared_victim_are_one_component() -> None:
    """ank-1 protects vic-1 and vic-2; vic-2 is also protected from ank-2: one component named
    by its smallest device id. ank-3/vic-3 is a component of its own."""
    found = components(
        [
            order("A", "ank-1", "vic-1", "vic-2"),
            order("B", "ank-2", "vic-2"),
            order("C", "ank-3", "vic-3"),
        ]
    )
    assert {found[d] for d in ("ank-1", "vic-1", "vic-2", "ank-2")} == {"ank-1"}
    assert found["ank-3"] == found["vic-3"] == "ank-3"


@settings(max_examples=200, deadline=None)
@given(orders=orders_strategy, count=st.integers(1, 5))
def test_every_order_is_judged_by_exactly_one_shard_with_both_ends(
    orders: list[Order], count: int
) -> None:
    """The shards' order sets partition the orders; every device of an order belongs to the
    shard that judges it; and the answer does not depend on the order of the orders."""
    shards = [Ownership(orders, Shard(k, count)) for k in range(1, count + 1)]
    judged = [o.id for shard in shards for o in shard.orders()]
    assert sorted(judged) == sorted(o.id for o in orders)
    for shard in shards:
        for o in shard.orders():
            assert all(shard.owns_device(d) for d in (o.offender_device, *o.victim_devices))
    # What each subscribes to (`Ownership.devices`): every device of an order, by one shard.
    heard = [shard.devices() for shard in shards]
    assert sum(len(devices) for devices in heard) == len(set().union(*heard))
    assert set().union(*heard) == {
        d for o in orders for d in (o.offender_device, *o.victim_devices)
    }
    reversed_shards = [Ownership(orders[::-1], Shard(k, count)) for k in range(1, count + 1)]
    for shard, again in zip(shards, reversed_shards, strict=True):
        assert {o.id for o in shard.orders()} == {o.id for o in again.orders()}


@given(device=st.text(min_size=1, max_size=20), count=st.integers(1, 8))
def test_a_device_in_no_order_belongs_to_exactly_one_shard(device: str, count: int) -> None:
    """An unknown device is reported by one shard and left alone by the others."""
    owners = [k for k in range(1, count + 1) if Ownership([], Shard(k, count)).owns_device(device)]
    assert len(owners) == 1


def devices_of(orders: tuple[Order, ...]) -> set[str]:
    return {d for o in orders for d in (o.offender_device, *o.victim_devices)}


def plans(before: list[Order], after: list[Order], count: int) -> dict[int, Handover]:
    return {
        k: handover_plan(Ownership(before, Shard(k, count)), Ownership(after, Shard(k, count)))
        for k in range(1, count + 1)
    }


def test_a_new_order_joining_two_shards_components_moves_one_with_its_order() -> None:
    """ank-1/vic-1 (ORD-A) and ank-5/vic-5 (ORD-B) live on shards 2 and 1 of 2 (as in the
    integration tests). A new order links vic-1 to ank-5: the joined component is named ank-1,
    so shard 2 takes ank-5, vic-5 and ORD-B over from shard 1, which drops ORD-B without a
    clear; shard 2 judges ORD-A throughout, and ORD-B and the new order once it has adopted."""
    before = [order("ORD-A", "ank-1", "vic-1"), order("ORD-B", "ank-5", "vic-5")]
    after = [*before, order("ORD-C", "ank-5", "vic-1")]
    plan = plans(before, after, 2)
    assert plan[1].outgoing == {2: {"ank-5", "vic-5"}} and plan[1].moved == {"ORD-B"}
    assert plan[1].interim == plan[1].final == () and not plan[1].sources
    assert plan[2].incoming == {1: {"ank-5", "vic-5"}} and plan[2].sources == {1}
    assert [o.id for o in plan[2].adopted[1]] == ["ORD-B"]
    assert [o.id for o in plan[2].interim] == ["ORD-A"]
    assert sorted(o.id for o in plan[2].final) == ["ORD-A", "ORD-B", "ORD-C"]
    assert not plan[2].moved and not plan[2].replaced


def test_one_process_hands_nothing_over() -> None:
    before = [order("ORD-A", "ank-1", "vic-1")]
    after = [order("ORD-B", "ank-5", "vic-1")]
    (plan,) = plans(before, after, 1).values()
    assert not (plan.incoming or plan.outgoing or plan.adopted or plan.moved or plan.replaced)
    assert plan.interim == plan.final == held_orders(after)


@settings(max_examples=200, deadline=None)
@given(before=orders_strategy, after=orders_strategy, device=st.sampled_from(["ank-0", "zzz"]))
def test_a_single_process_answers_as_its_orders_say_without_a_map(
    before: list[Order], after: list[Order], device: str
) -> None:
    """Alone, a process judges every order and owns every device (in an order or not); it knows
    which devices are in some order; any step hands nothing over and judges the new orders."""
    alone = Ownership(before, Shard(1, 1))
    assert alone.orders() == held_orders(before) and alone.owns_device(device)
    assert alone.judges() == {o.id: 1 for o in before}
    assert alone.in_some_order(device) == (device in devices_of(tuple(before)))
    plan = handover_plan(alone, Ownership(after, Shard(1, 1)))
    assert not (plan.moves or plan.replaced) and plan.interim == plan.final == held_orders(after)


def test_a_single_process_ownership_holds_nothing_per_device() -> None:
    """No map device -> shard, no second tuple of orders: a single process answers from its
    orders (which it holds anyway, as `HeldOrder`s). Held while it answers a message of each
    device, the way the intake asks; a map by device would be ~90 bytes a pair."""
    orders = held_orders(order(f"O-{i}", f"ank-{i}", f"vic-{i}") for i in range(3000))
    gc.collect()
    tracemalloc.start()
    alone = Ownership(orders, Shard(1, 1))
    assert not any(alone.elsewhere(d) for o in orders for d in (o.offender_device, "zzz"))
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert held / len(orders) < 16, held


@settings(max_examples=300, deadline=None)
@given(before=orders_strategy, after=orders_strategy, count=st.integers(1, 4))
def test_every_shard_hands_over_what_another_takes_over(
    before: list[Order], after: list[Order], count: int
) -> None:
    """Any step between two sets of orders (ids reused: changed orders): what shard j hands to k
    is what k takes from j, devices and orders; no device is judged by two shards in between;
    an order that moves is dropped by its old shard without a clear and adopted (as it was) by
    its new one; each shard judges in between only orders whose devices it already holds."""
    plan = plans(before, after, count)
    for j in plan:
        for k in plan:
            assert plan[j].outgoing.get(k, frozenset()) == plan[k].incoming.get(j, frozenset())
        moved_to = {o.id for k in plan for o in plan[k].adopted.get(j, ())}
        assert plan[j].moved == moved_to
    interims = [devices_of(p.interim) for p in plan.values()]
    assert sum(len(d) for d in interims) == len(set().union(*interims))
    for k, p in plan.items():
        held_before = Ownership(before, Shard(k, count)).devices()
        new_to_all = devices_of(p.final) - devices_of(tuple(before))
        assert devices_of(p.interim) <= (held_before - p.leaving) | new_to_all
        assert devices_of(p.interim) <= devices_of(p.final) | held_before
        assert not (p.arriving & devices_of(p.interim))
        assert {o.id for o in p.final} == {o.id for o in Ownership(after, Shard(k, count)).orders()}
        assert not (p.moved & p.replaced)


def test_shard_parse_refuses_what_is_not_k_of_n() -> None:
    assert Shard.parse("2/3") == Shard(2, 3)
    for text in ("0/2", "3/2", "2", "a/b", "1/0"):
        try:
            Shard.parse(text)
        except ValueError:
            continue
        raise AssertionError(f"{text} accepted")

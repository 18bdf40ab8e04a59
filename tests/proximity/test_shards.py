"""Which shard judges which orders: a pure function of the order graph, pairs kept together."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from nabij.keys import Shard
from nabij.orders import Order
from services.proximity.core.shards import Ownership, components

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


def test_shard_parse_refuses_what_is_not_k_of_n() -> None:
    assert Shard.parse("2/3") == Shard(2, 3)
    for text in ("0/2", "3/2", "2", "a/b", "1/0"):
        try:
            Shard.parse(text)
        except ValueError:
            continue
        raise AssertionError(f"{text} accepted")

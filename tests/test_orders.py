"""An order kept small (every shard keeps all of them) means and reads the same as before."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest

from nabij.config import ConfigError, load_config
from nabij.order_store import OrderChange, describe
from nabij.orders import HeldOrder, Order, OrderTerms, _key_sharing, held_orders
from tests.test_config import ISSUE_ORDERS, ISSUE_SETTINGS, write


def order(i: int, **more: object) -> Order:
    return Order.model_validate(
        {"id": f"O-{i}", "offender_device": f"ank-{i}", "victim_devices": [f"vic-{i}"]}
        | {"alarm_m": 500}
        | more
    )


def test_orders_setting_the_same_fields_share_one_fields_set_that_says_what_was_set() -> None:
    """Fails if pydantic no longer calls `model_post_init` with the fields set in place."""
    a, b, c = order(1), order(2), order(3, pre_alert_m=1500)
    assert a.model_fields_set is b.model_fields_set
    assert a.model_fields_set == {"id", "offender_device", "victim_devices", "alarm_m"}
    assert c.model_fields_set == a.model_fields_set | {"pre_alert_m"}
    assert b.model_dump(exclude_unset=True) == {
        "id": "O-2",
        "offender_device": "ank-2",
        "victim_devices": ("vic-2",),
        "alarm_m": 500,
    }


def test_zones_and_exemptions_share_theirs_too() -> None:
    home = {"name": "home", "lat": 52.0, "lon": 5.0, "radius_m": 300}
    window = {"days": ["mon"], "start": "08:00", "end": "09:00", "rules": ["zone"]}
    a, b = (order(i, zone=[home], exemption=[window]) for i in (1, 2))
    assert a.zone[0].model_fields_set is b.zone[0].model_fields_set
    assert a.zone[0].model_fields_set == set(home)
    assert a.exemption[0].model_fields_set is b.exemption[0].model_fields_set


def test_orders_with_the_same_rings_share_their_floats() -> None:
    a, b = order(1, pre_alert_m=1500), order(2, pre_alert_m=1500.0)
    assert a.alarm_m is b.alarm_m and a.pre_alert_m is b.pre_alert_m
    assert (a.alarm_m, a.pre_alert_m) == (500.0, 1500.0)


def test_a_copy_with_an_update_marks_the_update_set_on_the_copy_only() -> None:
    a, b = order(1), order(2)
    wider = a.model_copy(update={"pre_alert_m": 2000.0})
    assert "pre_alert_m" in wider.model_fields_set
    assert "pre_alert_m" not in b.model_fields_set
    assert a.model_fields_set is b.model_fields_set


def test_arrays_are_tuples_the_empty_one_shared_and_the_json_is_unchanged() -> None:
    a = order(1)
    assert a.victim_devices == ("vic-1",)
    assert a.zone is () and a.exemption is ()  # noqa: F632  # the one empty tuple, shared
    assert a.model_dump_json() == (
        '{"id":"O-1","offender_device":"ank-1","victim_devices":["vic-1"],"alarm_m":500.0,'
        '"pre_alert_m":null,"timezone":"Europe/Amsterdam","zone":[],"exemption":[],'
        '"starts_at":null,"ends_at":null}'
    )
    assert Order.model_validate_json(a.model_dump_json()) == a
    schema = Order.model_json_schema()["properties"]
    assert {schema[k]["type"] for k in ("victim_devices", "zone", "exemption")} == {"array"}


def test_a_file_that_sets_no_zone_leaves_it_unset(tmp_path: Path) -> None:
    """Loading fills GeoJSON shapes in by a copy; an order without any is kept as it was read
    (`nabij replay --set` dumps what the file set)."""
    loaded = load_config(write(tmp_path, ISSUE_SETTINGS, ISSUE_ORDERS), env={}).orders[0]
    assert set(loaded.model_dump(exclude_unset=True)) == {
        "id",
        "offender_device",
        "victim_devices",
        "alarm_m",
        "pre_alert_m",
    }


def test_a_file_still_reads_an_array_as_a_list(tmp_path: Path) -> None:
    orders = ISSUE_ORDERS.replace('["vic-0001"]', '"vic-0001"')
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, ISSUE_SETTINGS, orders), env={})
    assert [(p.path, p.message) for p in caught.value.problems] == [
        ("order[0].victim_devices", "Input should be a valid list")
    ]


def test_a_changed_order_is_described_with_lists_as_the_file_writes_them() -> None:
    before, after = order(1), order(1, victim_devices=["vic-1", "vic-9"])
    change = OrderChange("O-1", "changed", ("victim_devices",))
    assert describe(change, [before], [after])[1:] == [
        "    victim_devices: - ['vic-1']",
        "    victim_devices: + ['vic-1', 'vic-9']",
    ]


def test_orders_keep_their_fields_in_a_key_sharing_dict_the_same_as_pydantics() -> None:
    """Fails if each order has its own table of keys again (~100 bytes an order more)."""
    made = [order(i, pre_alert_m=1500) for i in range(2000)]
    fresh = Order.model_validate_json(made[7].model_dump_json())
    assert fresh == made[7] and fresh.model_dump() == made[7].model_dump()
    assert fresh.model_copy(update={"alarm_m": 600.0}).alarm_m == 600.0 and fresh.alarm_m == 500
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        own = [dict(o.__dict__) for o in made]  # one table of keys each, as pydantic makes
        per_own = (tracemalloc.get_traced_memory()[0] - before) / len(made)
        del own
        before = tracemalloc.get_traced_memory()[0]
        shared = [_key_sharing(o) for o in made]
        per_shared = (tracemalloc.get_traced_memory()[0] - before) / len(made)
    finally:
        tracemalloc.stop()
    assert shared[3] == made[3].__dict__
    assert per_shared < per_own - 80, (per_shared, per_own)


def test_a_held_order_has_the_orders_fields_values_and_answers() -> None:
    """`HeldOrder` declares `Order`'s fields by hand: it fails here if the two drift apart."""
    validated = order(1, pre_alert_m=1500, starts_at="2027-01-01T00:00:00+01:00")
    held = HeldOrder.of(validated)
    named = ("id", "offender_device", "victim_devices", *OrderTerms.__struct_fields__)
    assert sorted(named) == sorted(Order.model_fields)
    assert all(getattr(held, name) == getattr(validated, name) for name in Order.model_fields)
    start_ms = 1_798_758_000_000
    for t_ms in (start_ms - 1, start_ms):
        assert held.validity(t_ms) == validated.validity(t_ms)
        assert held.next_validity_change(t_ms) == validated.next_validity_change(t_ms)
    assert (held.pre_alert_ring_m, held.tz) == (validated.pre_alert_ring_m, validated.tz)
    assert held == HeldOrder.of(order(1, pre_alert_m=1500, starts_at="2027-01-01T00:00:00+01:00"))
    assert held != HeldOrder.of(order(1, pre_alert_m=1600, starts_at="2027-01-01T00:00:00+01:00"))
    assert HeldOrder.alarm_m.name == "alarm_m"  # asked of the class (help, inspect): no error
    several = HeldOrder.of(order(2, victim_devices=["vic-2", "vic-3"]))
    assert several.victim_devices == ("vic-2", "vic-3") and held.victim_devices == ("vic-1",)
    # Plain terms are one object for every order of them; an order's own window is its own.
    assert several.terms is HeldOrder.of(order(9)).terms
    assert held.terms is not HeldOrder.of(validated).terms


def test_held_orders_keep_a_tuple_of_held_ones_and_take_a_fifth_of_the_memory() -> None:
    validated = [order(i, pre_alert_m=1500) for i in range(2000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = held_orders(validated)
        per_held = (tracemalloc.get_traced_memory()[0] - before) / len(held)
    finally:
        tracemalloc.stop()
    assert held_orders(held) is held  # the service's tuple, handed on, is not copied
    assert held_orders([held[0], validated[1]]) == held[:2]
    # The model, its dict and the victim's tuple (~265 bytes) against the struct and its share
    # of terms (~50): fails if one grows back.
    assert per_held < 64, per_held

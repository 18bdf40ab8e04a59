"""Alarms across a change of the orders: a clear the change caused says why, a swapped device
keeps its alarm, and alarms stored under the keys of before keys named roles stay addressable."""

from __future__ import annotations

import msgspec

from services.alarm_gateway.core.alarms import AlarmBook, decode_record, encode_record
from tests.gateway.factories import MINUTE, T0, events_of, only_notice, settings, signal
from tests.roles import assert_probation_safe

ROLE_KEY = "proximity_alarm|ORD-1|offender|victim1"


def test_a_clear_caused_by_an_ended_order_tells_both_queues_why() -> None:
    """Probation's `cleared` notice carries the cause and its reason says it, still probation-safe;
    escalation goes on (every alarm reaches a human) and its notice keeps the cause."""
    book = AlarmBook(settings())
    alarm_id = book.apply(signal("s1", key=ROLE_KEY), T0).upserts[0].alarm_id
    cleared = book.apply(signal("s2", "clear", key=ROLE_KEY, cause="order_ended"), T0 + 5)
    probation = only_notice(cleared, "probation")
    assert probation.event == "cleared" and probation.cause == "order_ended"
    assert probation.reason.startswith("Condition cleared (order ended)")
    assert "escalation continues until acknowledged" in probation.reason
    assert_probation_safe(probation)
    escalated = book.fire_due(alarm_id, T0 + MINUTE)
    assert events_of(escalated) == {"escalated"}
    assert {notice.cause for _, notice in escalated.notices} == {"order_ended"}


def test_an_ordinary_clear_has_no_cause() -> None:
    book = AlarmBook(settings())
    book.apply(signal("s1", key=ROLE_KEY), T0)
    cleared = only_notice(book.apply(signal("s2", "clear", key=ROLE_KEY), T0 + 5), "probation")
    assert cleared.cause is None and cleared.reason.startswith("Condition cleared:")


def test_a_swapped_device_keeps_the_alarm_and_its_notices_name_the_new_device() -> None:
    """Signals of the same role from a new device land on the same alarm: no second alarm, and
    the record and later notices name the device now worn."""
    book = AlarmBook(settings(update_min_interval_s=0))
    alarm_id = book.apply(signal("s1", key=ROLE_KEY), T0).upserts[0].alarm_id
    swapped = signal("s2", "update", key=ROLE_KEY, distance_m=300.0)
    swapped = msgspec.structs.replace(swapped, offender_device="ank-2", victim_device="vic-2")
    decision = book.apply(swapped, T0 + 5)
    assert [r.alarm_id for r in decision.upserts] == [alarm_id]
    assert events_of(decision) == {"updated"}
    notice = only_notice(decision, "probation")
    assert (notice.offender_device, notice.victim_device) == ("ank-2", "vic-2")
    assert [r.alarm_id for r in book.open_alarms()] == [alarm_id]


def test_an_alarm_stored_under_a_device_key_is_found_by_its_role_key_after_a_restart() -> None:
    """A record written before keys named roles (`kind|order|offender device|victim device`):
    after a restart the first signal under the new key updates and then clears that same alarm,
    and the record moves to the new key."""
    book = AlarmBook(settings(update_min_interval_s=0))
    legacy = "proximity_alarm|ORD-1|ank-1|vic-1"
    alarm_id = book.apply(signal("s1", key=legacy), T0).upserts[0].alarm_id
    restarted = AlarmBook(settings(update_min_interval_s=0))
    restarted.load([decode_record(encode_record(r)) for r in book.open_alarms()])
    updated = restarted.apply(signal("s2", "update", key=ROLE_KEY), T0 + 5)
    assert [(r.alarm_id, r.alarm_key) for r in updated.upserts] == [(alarm_id, ROLE_KEY)]
    assert events_of(updated) == {"updated"}
    cleared = restarted.apply(signal("s3", "clear", key=ROLE_KEY), T0 + 10)
    assert events_of(cleared) == {"cleared"}
    assert [r.alarm_id for r in restarted.open_alarms()] == [alarm_id]


def test_a_device_alarm_is_never_taken_for_a_legacy_ring_key() -> None:
    """Only ring and zone kinds changed their keys: a battery alarm under an unknown key opens."""
    book = AlarmBook(settings())
    book.apply(signal("s1", kind="battery_low", key="battery_low|ORD-1|ank-1|vic-1"), T0)
    opened = book.apply(signal("s2", kind="battery_low", key="battery_low|ORD-1|vic-1"), T0 + 5)
    assert events_of(opened) == {"opened"}

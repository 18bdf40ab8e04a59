"""Redelivered inputs (same signal_id / request_id) never produce a second notice."""

from __future__ import annotations

from services.alarm_gateway.core.alarms import APPLIED_IDS_KEPT, AlarmBook
from tests.gateway.factories import SECOND, T0, ack, resolve, settings, signal


def test_duplicate_open_is_silent() -> None:
    """The same opening signal twice: one alarm, one `opened`, the repeat sends nothing."""
    book = AlarmBook(settings(update_min_interval_s=0))
    first = book.apply(signal("s1"), T0)
    again = book.apply(signal("s1"), T0 + SECOND)
    assert len(first.notices) == 1
    assert again.notices == [] and again.upserts == [] and again.rejection is None
    assert len(book.open_alarms()) == 1


def test_duplicate_update_clear_and_press_are_silent() -> None:
    """Redelivered update, clear and aware press are each applied once."""
    book = AlarmBook(settings(update_min_interval_s=0))
    book.apply(signal("s1"), T0)
    for item in (signal("s2", "update"), signal("s3", "clear"), signal("s4", "open")):
        assert book.apply(item, T0 + 1).notices != []
        assert book.apply(item, T0 + 2).notices == []
    press = signal("p1", kind="aware_button", distance_m=None)
    book.apply(press, T0)
    second = signal("p2", kind="aware_button", distance_m=None)
    assert book.apply(second, T0 + 1).notices != []
    assert book.apply(second, T0 + 2).notices == []


def test_duplicate_ack_and_resolve_requests_are_silent() -> None:
    """A redelivered ack or resolve sends nothing and is not a rejection."""
    book = AlarmBook(settings())
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    assert book.apply(ack("a1", alarm_id), T0).notices != []
    repeat = book.apply(ack("a1", alarm_id), T0 + 1)
    assert repeat.notices == [] and repeat.rejection is None
    assert book.apply(resolve("r1", alarm_id), T0 + 2).notices != []
    repeat_resolve = book.apply(resolve("r1", alarm_id), T0 + 3)
    assert repeat_resolve.notices == [] and repeat_resolve.rejection is None


def test_replayed_open_after_resolve_does_not_reopen() -> None:
    """The signal that opened a since-resolved alarm, redelivered, opens nothing."""
    book = AlarmBook(settings())
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    book.apply(resolve("r1", alarm_id), T0 + 1)
    replay = book.apply(signal("s1"), T0 + 2)
    assert replay.notices == [] and replay.upserts == []
    assert book.open_alarms() == []


def test_applied_ids_are_a_bounded_ring() -> None:
    """A record remembers at most APPLIED_IDS_KEPT input ids, the most recent ones."""
    book = AlarmBook(settings(update_min_interval_s=0))
    alarm_id = book.apply(signal("s0"), T0).upserts[0].alarm_id
    total = APPLIED_IDS_KEPT + 10
    for n in range(1, total):
        book.apply(signal(f"s{n}", "update"), T0 + n)
    record = book.get(alarm_id)
    assert record is not None
    assert len(record.applied_ids) == APPLIED_IDS_KEPT
    assert record.applied_ids[-1] == f"sig:s{total - 1}"
    assert book.apply(signal(f"s{total - 1}", "update"), T0 + total).notices == []


def test_same_signal_id_on_another_key_gets_a_distinct_alarm_id() -> None:
    """Two keys opened by signals with one id still get distinct alarm and notice ids."""
    book = AlarmBook(settings())
    a = book.apply(signal("dup", key="k-a"), T0).upserts[0]
    b = book.apply(signal("dup", key="k-b"), T0).upserts[0]
    assert a.alarm_id != b.alarm_id


def test_restart_with_resolved_records_still_recognises_replays() -> None:
    """Resolved records passed to load() (e.g. the tail of the resolved stream) are not opened
    again but still make a replayed input of theirs a no-op after a restart."""
    book = AlarmBook(settings())
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    [gone] = book.apply(resolve("r1", alarm_id), T0 + 1).resolved
    restarted = AlarmBook(settings())
    restarted.load([gone])
    assert restarted.open_alarms() == [] and restarted.next_due_ms() is None
    assert restarted.apply(signal("s1"), T0 + 2).notices == []
    assert restarted.apply(resolve("r1", alarm_id), T0 + 3).rejection is None
    assert restarted.apply(signal("s2"), T0 + 4).upserts[0].alarm_id != alarm_id

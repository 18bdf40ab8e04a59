"""Escalation and reminders when nobody acknowledges, and timers that survive a restart."""

from __future__ import annotations

import msgspec

from nabij.config import EscalationPolicy
from nabij.contract import encode
from services.alarm_gateway.core.alarms import (
    AlarmBook,
    AlarmRecord,
    decode_record,
    encode_police_facts,
    encode_record,
    police_facts_decoder,
)
from tests.gateway.factories import (
    MINUTE,
    SECOND,
    T0,
    VICTIM_AT,
    ack,
    events_of,
    only_notice,
    queues_of,
    settings,
    signal,
)


def test_unacknowledged_alarm_escalates_to_police_and_tells_probation() -> None:
    """No ack within the timeout: `escalated` goes to police AND probation (so probation sees
    police got it), the alarm's queues grow, level 2, next due one timeout later."""
    book = AlarmBook(settings())
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    assert book.due(T0 + MINUTE - 1) == []
    assert book.fire_due(alarm_id, T0 + MINUTE - 1).notices == []
    assert book.next_due_ms() == T0 + MINUTE
    assert book.due(T0 + MINUTE) == [alarm_id]

    decision = book.fire_due(alarm_id, T0 + MINUTE)
    assert sorted(queues_of(decision)) == ["police", "probation"]
    assert events_of(decision) == {"escalated"}
    police = only_notice(decision, "police")
    probation = only_notice(decision, "probation")
    assert police.level == probation.level == 2
    assert probation.queues == ["probation", "police"]
    assert "escalated to police" in police.reason and "60 s" in police.reason
    assert police.victim == VICTIM_AT and probation.victim is None
    [record] = decision.upserts
    assert record.queues == ["probation", "police"]
    assert record.level == 2
    assert record.next_due_ms == T0 + 2 * MINUTE


def test_after_escalation_reminders_go_to_every_queue() -> None:
    """Still no ack after escalating: a reminder to all queues told so far, level 3 and up."""
    book = AlarmBook(settings())
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    book.fire_due(alarm_id, T0 + MINUTE)
    decision = book.fire_due(alarm_id, T0 + 2 * MINUTE)
    assert sorted(queues_of(decision)) == ["police", "probation"]
    police = only_notice(decision, "police")
    assert police.level == 3
    assert "not acknowledged after 120 s: reminder" in police.reason.lower()
    later = book.fire_due(alarm_id, T0 + 3 * MINUTE)
    assert only_notice(later, "police").level == 4


def test_ack_before_timeout_stops_escalation() -> None:
    """Acknowledged in time: nothing is ever due again and fire_due sends nothing."""
    book = AlarmBook(settings())
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    book.apply(ack("a1", alarm_id), T0 + 30 * SECOND)
    assert book.next_due_ms() is None
    assert book.due(T0 + 10 * MINUTE) == []
    decision = book.fire_due(alarm_id, T0 + 10 * MINUTE)
    assert decision.notices == [] and decision.upserts == [] and decision.rejection is None


def test_policy_without_escalation_reminds_same_queues() -> None:
    """With escalate_to empty, an unacknowledged alarm is reminded to the same queues."""
    policy = EscalationPolicy(priority=2, queues=["probation"], ack_timeout_s=300)
    book = AlarmBook(settings(escalation={"proximity_alarm": policy}))
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    decision = book.fire_due(alarm_id, T0 + 5 * MINUTE)
    assert queues_of(decision) == ["probation"]
    notice = only_notice(decision, "probation")
    assert notice.event == "escalated" and notice.level == 2 and notice.priority == 2
    assert "not acknowledged after 300 s: reminder" in notice.reason.lower()
    assert decision.upserts[0].next_due_ms == T0 + 10 * MINUTE


def test_aware_button_reminds_both_queues() -> None:
    """The aware alarm already reached police and probation: it is reminded, not widened."""
    book = AlarmBook(settings())
    alarm_id = (
        book.apply(signal("p1", kind="aware_button", distance_m=None), T0).upserts[0].alarm_id
    )
    decision = book.fire_due(alarm_id, T0 + MINUTE)
    assert sorted(queues_of(decision)) == ["police", "probation"]
    assert "reminder" in decision.notices[0][1].reason


def test_overdue_after_downtime_fires_once() -> None:
    """An escalation that fell due long ago fires once (no burst) and the next is one timeout on."""
    book = AlarmBook(settings())
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    decision = book.fire_due(alarm_id, T0 + 30 * MINUTE)
    assert only_notice(decision, "police").level == 2
    assert decision.upserts[0].next_due_ms == T0 + 31 * MINUTE
    assert book.fire_due(alarm_id, T0 + 30 * MINUTE).notices == []


def test_escalation_carries_held_back_update() -> None:
    """An escalation carries the latest facts, so a held-back update is delivered with it and
    not repeated afterwards."""
    book = AlarmBook(settings(update_min_interval_s=50))
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    book.apply(signal("s2", "update"), T0 + 40 * SECOND)
    book.apply(signal("s3", "update", distance_m=90.0, reason="Within 90 m"), T0 + 45 * SECOND)
    decision = book.fire_due(alarm_id, T0 + MINUTE)
    assert events_of(decision) == {"escalated"}
    assert only_notice(decision, "police").distance_m == 90.0
    [record] = decision.upserts
    assert not record.pending_update
    assert record.next_due_ms == T0 + 2 * MINUTE


def test_fire_due_of_unknown_alarm_is_rejected() -> None:
    """fire_due for an id that is not open (resolved in between) is a rejection, no notice."""
    decision = AlarmBook(settings()).fire_due("AL-gone", T0)
    assert decision.rejection is not None and decision.notices == []


def test_restart_from_persisted_records_keeps_timers() -> None:
    """Records written as JSON and loaded into a new book (a restart) escalate exactly as the
    original book would, with notice ids continuing where they stopped."""
    book = AlarmBook(settings())
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    book.apply(signal("s2", "update"), T0 + SECOND)
    book.apply(signal("s3", "update"), T0 + 2 * SECOND)  # held back
    stored = {r.alarm_id: encode(r) for r in book.open_alarms()}  # as the shell writes it

    restarted = AlarmBook(settings())
    restarted.load(msgspec.json.Decoder(AlarmRecord).decode(blob) for blob in stored.values())
    assert restarted.open_alarms() == book.open_alarms()
    assert restarted.next_due_ms() == book.next_due_ms() == T0 + 31 * SECOND
    for now in (T0 + 31 * SECOND, T0 + MINUTE):
        assert restarted.due(now) == book.due(now) == [alarm_id]
        assert restarted.fire_due(alarm_id, now) == book.fire_due(alarm_id, now)
    escalated = restarted.get(alarm_id)
    assert escalated is not None and escalated.level == 2 and escalated.notices_sent == 4


def test_record_json_round_trip() -> None:
    """encode_record/decode_record round-trip a record exactly (the Redis hash format), except
    its police facts, which encode_record leaves out and the police-only hash holds."""
    book = AlarmBook(settings())
    record = book.apply(signal("s1"), T0).upserts[0]
    assert record.police is not None and record.police.victim == VICTIM_AT
    assert decode_record(encode_record(record)) == msgspec.structs.replace(record, police=None)
    assert police_facts_decoder.decode(encode_police_facts(record.police)) == record.police


def test_loaded_unacknowledged_record_without_due_time_gets_one() -> None:
    """A loaded unacknowledged record missing its due time gets one: it must reach a human."""
    book = AlarmBook(settings())
    record = book.apply(signal("s1"), T0).upserts[0]
    broken = msgspec.structs.replace(record, next_due_ms=None, escalation_due_ms=None)
    restarted = AlarmBook(settings())
    restarted.load([broken])
    loaded = restarted.get(record.alarm_id)
    assert loaded is not None and loaded.next_due_ms == T0 + MINUTE


def test_condition_returning_after_ack_escalates_again() -> None:
    """Acked, cleared, and hours later the offender is back: the same alarm, but the earlier
    ack does not cover the new approach; unacknowledged, it reaches police again."""
    book = AlarmBook(settings())
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    book.apply(ack("a1", alarm_id), T0 + 10 * SECOND)
    book.apply(signal("s2", "clear"), T0 + 5 * MINUTE)
    back = book.apply(signal("s3"), T0 + 180 * MINUTE)
    assert events_of(back) == {"updated"} and back.upserts[0].alarm_id == alarm_id
    assert book.due(T0 + 181 * MINUTE) == [alarm_id]
    escalated = book.fire_due(alarm_id, T0 + 181 * MINUTE)
    assert events_of(escalated) == {"escalated"}
    assert "police" in queues_of(escalated)

"""Signals into alarms: opening, updating (rate limited), clearing, the aware button, resolving."""

from __future__ import annotations

from nabij.contract import DistanceBand, SignalAction, encode, notice_decoder
from services.alarm_gateway.core.alarms import AlarmBook, alarm_id_for
from tests.gateway.factories import (
    MINUTE,
    SECOND,
    T0,
    ack,
    events_of,
    only_notice,
    queues_of,
    resolve,
    settings,
    signal,
)


def test_open_notifies_first_queues_at_level_one() -> None:
    """An `open` with no alarm for its key opens one: `opened` to the policy's queues, level 1,
    priority from the policy, escalation due after the acknowledgement timeout."""
    book = AlarmBook(settings())
    decision = book.apply(signal("s1"), T0)

    assert decision.rejection is None
    assert queues_of(decision) == ["probation"]
    notice = only_notice(decision, "probation")
    assert notice.event == "opened"
    assert notice.level == 1
    assert notice.priority == 1
    assert notice.alarm_id == alarm_id_for(signal("s1"))
    assert notice.notice_id == f"{notice.alarm_id}-00001-probation"
    assert notice.queues == ["probation"]
    # PRIVACY: probation hears the band, never metres nor where the offender (near her) is.
    assert notice.distance_band == DistanceBand(min_m=250, max_m=500)
    assert notice.distance_m is None and notice.offender is None and notice.victim is None
    assert "480 m" not in notice.reason and "250-500 m apart" in notice.reason
    assert notice_decoder.decode(encode(notice)) == notice  # valid against the contract
    [record] = decision.upserts
    assert record.police is not None and record.police.distance_m == 480.0
    assert record.level == 1
    assert record.next_due_ms == T0 + MINUTE
    assert book.open_alarms() == [record]


def test_alarm_id_is_derived_from_signal_id() -> None:
    """Alarm ids are deterministic: the same opening signal id always gives the same id."""
    assert alarm_id_for(signal("abc")) == alarm_id_for(signal("abc", kind="aware_button"))
    assert alarm_id_for(signal("abc")) != alarm_id_for(signal("abd"))
    assert alarm_id_for(signal("abc")).startswith("AL-")


def test_aware_button_reaches_police_and_probation_at_once() -> None:
    """An aware-button press opens at level 1 with notices to police and probation together."""
    book = AlarmBook(settings())
    decision = book.apply(signal("p1", kind="aware_button", distance_m=None), T0)

    assert sorted(queues_of(decision)) == ["police", "probation"]
    assert {n.level for _, n in decision.notices} == {1}
    assert events_of(decision) == {"opened"}


def test_every_aware_press_is_a_notice() -> None:
    """Each aware press is notified at once: never rate limited, never merged, however old,
    even after an acknowledgement (which stays in force)."""
    book = AlarmBook(settings(update_min_interval_s=600))
    first = book.apply(signal("p1", kind="aware_button", distance_m=None), T0)
    alarm_id = first.upserts[0].alarm_id
    for n in range(2, 7):
        decision = book.apply(signal(f"p{n}", kind="aware_button", distance_m=None), T0 + n)
        assert events_of(decision) == {"updated"}, n
        assert sorted(queues_of(decision)) == ["police", "probation"]
        assert decision.upserts[0].alarm_id == alarm_id
    book.apply(ack("a1", alarm_id), T0 + 10)
    old_press = signal("p-old", kind="aware_button", distance_m=None, at=T0 - 3600 * SECOND)
    decision = book.apply(old_press, T0 + 20)
    assert events_of(decision) == {"updated"}
    assert "pressed again" in decision.notices[0][1].reason
    record = book.get(alarm_id)
    # A press after the ack is new danger: the ack is withdrawn and escalation re-arms.
    assert record is not None and record.acknowledged_by is None
    assert record.next_due_ms == T0 + 20 + 60 * SECOND
    assert book.due(T0 + 20 + 60 * SECOND) == [alarm_id]


def test_wobbling_condition_stays_one_alarm_and_its_notices_are_rate_limited() -> None:
    """open/clear/open/clear ... of one key every 30 s over 10 minutes is one alarm id. The first
    clear is told at once and the return after it is a real return (an immediate `updated`);
    from then on clears and returns fall within the 600 s interval and are held, so nothing is
    sent until the interval passes: then one notice tells the latest state (here: cleared)."""
    book = AlarmBook(settings(update_min_interval_s=600))
    ids: set[str] = set()
    events: list[tuple[int, str]] = []
    for step in range(20):
        now = T0 + step * 30 * SECOND
        action: SignalAction = "open" if step % 2 == 0 else "clear"
        decision = book.apply(signal(f"w{step}", action), now)
        ids.update(record.alarm_id for record in decision.upserts)
        events.extend((step, notice.event) for _, notice in decision.notices)
        if step == 2:
            assert "Condition returned" in decision.notices[0][1].reason
    assert events == [(0, "opened"), (1, "cleared"), (2, "updated")]
    assert len(ids) == 1 and len(book.open_alarms()) == 1
    [record] = book.open_alarms()
    assert record.condition == "cleared" and record.pending_update
    book.apply(ack("a1", record.alarm_id), T0 + 600 * SECOND)  # no escalation in the way
    assert book.fire_due(record.alarm_id, T0 + 659 * SECOND).notices == []
    flushed = book.fire_due(record.alarm_id, T0 + 660 * SECOND)
    assert events_of(flushed) == {"cleared"}


def test_a_return_before_the_clear_was_told_keeps_the_acknowledgement() -> None:
    """A clear held by the rate limit was never told, so the condition coming back is only an
    update: the acknowledgement stays, nothing is notified at once, and the flush tells the
    latest (active) facts as an `updated`."""
    book = AlarmBook(settings(update_min_interval_s=30))
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    book.apply(signal("s2", "update"), T0 + SECOND)  # an update goes out: the clock starts
    book.apply(ack("a1", alarm_id), T0 + 2 * SECOND)
    held_clear = book.apply(signal("s3", "clear"), T0 + 3 * SECOND)
    assert held_clear.notices == [] and held_clear.upserts[0].pending_update
    back = book.apply(signal("s4", "open", distance_m=200.0), T0 + 4 * SECOND)
    assert back.notices == []
    record = back.upserts[0]
    assert (record.condition, record.acknowledged_by) == ("active", "op-anna")
    flushed = book.fire_due(alarm_id, T0 + 31 * SECOND)
    band = DistanceBand(min_m=100, max_m=250)
    assert [(n.event, n.distance_band) for _, n in flushed.notices] == [("updated", band)]
    assert flushed.upserts[0].acknowledged_by == "op-anna"


def test_a_real_return_after_a_told_clear_withdraws_the_acknowledgement() -> None:
    """Once the queues were told the condition cleared, its return is notified at once and
    withdraws the acknowledgement (escalation re-arms); the next clear is then held for an
    interval, so a second return inside it withdraws nothing."""
    book = AlarmBook(settings(update_min_interval_s=30))
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    book.apply(ack("a1", alarm_id), T0 + SECOND)
    cleared = book.apply(signal("s2", "clear"), T0 + 2 * SECOND)
    assert events_of(cleared) == {"cleared"}
    back = book.apply(signal("s3", "open"), T0 + 3 * SECOND)
    assert events_of(back) == {"updated"}
    assert back.upserts[0].acknowledged_by is None
    assert back.upserts[0].next_due_ms == T0 + 3 * SECOND + MINUTE
    book.apply(ack("a2", alarm_id), T0 + 4 * SECOND)
    assert book.apply(signal("s4", "clear"), T0 + 5 * SECOND).notices == []
    again = book.apply(signal("s5", "open"), T0 + 6 * SECOND)
    assert again.notices == [] and again.upserts[0].acknowledged_by == "op-anna"


def test_updates_are_rate_limited_and_held_update_is_flushed() -> None:
    """At most one `updated` per interval per alarm; a held-back update is remembered, the due
    time covers it, and fire_due sends it (with the latest facts) once the interval has passed."""
    book = AlarmBook(settings(update_min_interval_s=30))
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    sent = book.apply(signal("s2", "update", distance_m=300.0, reason="Offender within 300 m"), T0)
    assert events_of(sent) == {"updated"}

    held = book.apply(signal("s3", "update", distance_m=250.0, reason="Within 250 m"), T0 + 5000)
    assert held.notices == []
    [record] = held.upserts
    assert record.pending_update
    assert record.next_due_ms == T0 + 30 * SECOND  # before the escalation at T0 + 60 s
    again = book.apply(signal("s3b", "open", distance_m=200.0, reason="Within 200 m"), T0 + 9000)
    assert again.notices == []

    assert book.fire_due(alarm_id, T0 + 29_999).notices == []
    assert book.due(T0 + 29_999) == []
    assert book.due(T0 + 30 * SECOND) == [alarm_id]
    flushed = book.fire_due(alarm_id, T0 + 30 * SECOND)
    assert events_of(flushed) == {"updated"}
    assert flushed.notices[0][1].distance_band == DistanceBand(min_m=100, max_m=250)
    police = flushed.upserts[0].police
    assert police is not None and police.distance_m == 200.0
    assert not flushed.upserts[0].pending_update
    assert flushed.upserts[0].next_due_ms == T0 + MINUTE


def test_pending_update_is_flushed_even_after_ack() -> None:
    """An acknowledgement stops escalation but not a held-back update: it is still flushed,
    after which nothing is due."""
    book = AlarmBook(settings(update_min_interval_s=30))
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    book.apply(signal("s2", "update"), T0 + 1000)
    book.apply(signal("s3", "update"), T0 + 2000)
    acked = book.apply(ack("a1", alarm_id), T0 + 3000)
    assert acked.upserts[0].next_due_ms == T0 + 31 * SECOND
    flushed = book.fire_due(alarm_id, T0 + 31 * SECOND)
    assert events_of(flushed) == {"updated"}
    assert flushed.upserts[0].next_due_ms is None
    assert book.next_due_ms() is None


def test_update_without_alarm_opens_one() -> None:
    """An `update` for a key with no open alarm opens one: a lost `open` must not hide it."""
    book = AlarmBook(settings())
    decision = book.apply(signal("u1", "update"), T0)
    assert events_of(decision) == {"opened"}
    assert decision.upserts[0].alarm_id == alarm_id_for(signal("u1"))


def test_clear_without_alarm_is_ignored_quietly() -> None:
    """A `clear` for a key with no open alarm is normal (e.g. after a resolve): no notice, no
    record, and no rejection."""
    book = AlarmBook(settings())
    decision = book.apply(signal("c1", "clear"), T0)
    assert decision.notices == [] and decision.upserts == [] and decision.rejection is None


def test_clear_notifies_and_escalation_continues() -> None:
    """A `clear` sends `cleared` to the queues told so far and marks the condition cleared, but
    an unacknowledged alarm still escalates; a second clear adds no notice."""
    book = AlarmBook(settings())
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    cleared = book.apply(signal("s2", "clear", distance_m=1500.0, reason="Offender left"), T0 + 5)
    assert events_of(cleared) == {"cleared"}
    assert cleared.upserts[0].condition == "cleared"
    assert cleared.upserts[0].next_due_ms == T0 + MINUTE
    assert book.apply(signal("s3", "clear"), T0 + 6).notices == []
    escalated = book.fire_due(alarm_id, T0 + MINUTE)
    assert events_of(escalated) == {"escalated"}
    assert "cleared" in escalated.notices[0][1].reason


def test_resolve_then_open_starts_a_new_alarm() -> None:
    """Resolve removes the alarm from the book (resolved notice, record in Decision.resolved,
    resolve implies ack); a later `open` for the same key is a new alarm with a new id."""
    book = AlarmBook(settings())
    first_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    done = book.apply(resolve("r1", first_id), T0 + 1000)
    assert events_of(done) == {"resolved"}
    assert done.upserts == []
    [gone] = done.resolved
    assert gone.acknowledged_by == "op-anna" and gone.resolved_at == T0 + 1000
    assert gone.next_due_ms is None
    assert book.get(first_id) is None and book.open_alarms() == []
    assert only_notice(done, "probation").by == "op-anna"

    assert book.apply(signal("s2", "clear"), T0 + 2000).notices == []
    reopened = book.apply(signal("s3"), T0 + 3000)
    assert events_of(reopened) == {"opened"}
    assert reopened.upserts[0].alarm_id == alarm_id_for(signal("s3")) != first_id


def test_ack_stops_escalation_and_notifies() -> None:
    """An ack records who and when, drops the due time and sends `acknowledged` (with by and
    note) to the queues told so far."""
    book = AlarmBook(settings())
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    decision = book.apply(ack("a1", alarm_id, note="calling him"), T0 + 10 * SECOND)
    notice = only_notice(decision, "probation")
    assert notice.event == "acknowledged" and notice.by == "op-anna"
    assert notice.note == "calling him"
    [record] = decision.upserts
    assert record.acknowledged_by == "op-anna"
    assert record.acknowledged_at == T0 + 10 * SECOND
    assert record.next_due_ms is None


def test_ack_of_unknown_or_resolved_alarm_is_rejected() -> None:
    """Ack or resolve of an id that is not open is rejected with an 'unknown alarm' reason."""
    book = AlarmBook(settings())
    decision = book.apply(ack("a1", "AL-nope"), T0)
    assert decision.rejection is not None and decision.rejection.startswith("unknown alarm")
    assert decision.notices == []
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    book.apply(resolve("r1", alarm_id), T0)
    late = book.apply(ack("a2", alarm_id), T0)
    assert late.rejection is not None and late.rejection.startswith("unknown alarm")
    late_resolve = book.apply(resolve("r2", alarm_id), T0)
    assert late_resolve.rejection is not None and late_resolve.notices == []


def test_reack_is_a_quiet_no_op() -> None:
    """A second ack (new request id) of an acknowledged alarm sends nothing and is no error."""
    book = AlarmBook(settings())
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    book.apply(ack("a1", alarm_id), T0)
    again = book.apply(ack("a2", alarm_id, by="op-bert"), T0 + 1)
    assert again.notices == [] and again.upserts == [] and again.rejection is None
    record = book.get(alarm_id)
    assert record is not None and record.acknowledged_by == "op-anna"


def test_reasons_never_carry_coordinates() -> None:
    """Even when the incoming reason text contains coordinates, no notice reason repeats them;
    police keep the metres, probation (whose text for a device kind is the signal's) does not."""
    book = AlarmBook(settings())
    leaky = "Offender at 52.370216, 4.895168 within 480 m of victim at 52.3730 4.8920"
    decision = book.apply(signal("s1", kind="aware_button", reason=leaky), T0)
    for _queue, notice in decision.notices:
        for text in ("52.370216", "4.895168", "52.3730", "4.8920"):
            assert text not in notice.reason
    assert "480 m" in only_notice(decision, "police").reason
    assert "480 m" not in only_notice(decision, "probation").reason


def test_operator_notes_never_carry_coordinates() -> None:
    """A note typed at the desk that quotes a position is scrubbed before any queue gets it."""
    book = AlarmBook(settings())
    alarm_id = book.apply(signal("s1"), T0).upserts[0].alarm_id
    decision = book.apply(ack("a1", alarm_id, note="unit sent to 52.373000, 4.892000"), T0 + 1)
    note = only_notice(decision, "probation").note
    assert note is not None and "52.373" not in note and "4.892" not in note
    assert note.startswith("unit sent to")


def test_distance_added_when_reason_lacks_it() -> None:
    """A police notice always states the distance, added when the reason text omits it."""
    book = AlarmBook(settings())
    near = signal("s1", kind="aware_button", reason="Offender near victim", distance_m=431.6)
    decision = book.apply(near, T0)
    assert "432 m" in only_notice(decision, "police").reason


def test_open_alarms_sorted_by_priority_then_age() -> None:
    """open_alarms lists the most urgent priority first, then the oldest."""
    book = AlarmBook(settings())
    book.apply(signal("b", kind="battery_low", key="k-batt", distance_m=None), T0)
    book.apply(signal("x", key="k-prox-late"), T0 + 2)
    book.apply(signal("y", key="k-prox-early"), T0 + 1)
    keys = [record.alarm_key for record in book.open_alarms()]
    assert keys == ["k-prox-early", "k-prox-late", "k-batt"]

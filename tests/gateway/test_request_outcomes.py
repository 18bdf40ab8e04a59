"""Each human request gets an outcome that tells its sender the truth, and the operator's tools
show it, and anything else from Redis, without a raw control character."""

from __future__ import annotations

import unicodedata

import pytest

from nabij.contract import RequestOutcome
from services.alarm_gateway.core.alarms import AlarmBook
from services.alarm_gateway.operators import format_notice, safe, tell
from tests.gateway import factories
from tests.gateway.factories import SECOND, T0, ack, resolve, settings, signal


def _open(book: AlarmBook) -> str:
    return book.apply(signal("s1"), T0).upserts[0].alarm_id


def test_an_applied_ack_names_who_holds_it() -> None:
    """The first acknowledgement is applied, and its outcome names that officer."""
    book = AlarmBook(settings())
    alarm_id = _open(book)
    outcome = book.apply(ack("a1", alarm_id, by="officer 17"), T0 + SECOND).outcome
    assert outcome == RequestOutcome(
        request_id="a1",
        status="applied",
        at=T0 + SECOND,
        detail="acknowledged",
        alarm_id=alarm_id,
        acknowledged_by="officer 17",
        acknowledged_at=T0 + SECOND,
    )


def test_a_second_ack_is_told_who_acknowledged_first() -> None:
    """A second officer's ack changes nothing and its outcome names the first officer."""
    book = AlarmBook(settings())
    alarm_id = _open(book)
    book.apply(ack("a1", alarm_id, by="officer 17"), T0 + SECOND)
    second = book.apply(ack("a2", alarm_id, by="officer 2"), T0 + 2 * SECOND)
    assert second.notices == [] and second.upserts == []
    assert second.outcome is not None
    assert (second.outcome.status, second.outcome.acknowledged_by) == (
        "already_acknowledged",
        "officer 17",
    )
    assert second.outcome.acknowledged_at == T0 + SECOND
    told = tell(ack("a2", alarm_id, by="officer 2"), second.outcome)
    assert not told.applied
    assert "already acknowledged by officer 17 at 00:00:01Z" in told.message


def test_a_request_for_an_alarm_that_is_not_open_says_so() -> None:
    """Unknown or resolved alarm: a rejection (dead-lettered) and a `no_such_alarm` outcome."""
    book = AlarmBook(settings())
    alarm_id = _open(book)
    unknown = book.apply(ack("a1", "AL-nope"), T0)
    assert unknown.rejection is not None
    assert unknown.outcome is not None and unknown.outcome.status == "no_such_alarm"
    assert book.apply(resolve("r1", alarm_id, by="officer 2"), T0).outcome is not None
    late = book.apply(ack("a2", alarm_id), T0 + SECOND)
    assert late.outcome is not None and late.outcome.status == "no_such_alarm"
    assert not tell(ack("a2", alarm_id), late.outcome).applied


def test_a_redelivered_request_writes_no_second_outcome() -> None:
    """The outcome was committed with the request's effect; a redelivery adds nothing."""
    book = AlarmBook(settings())
    alarm_id = _open(book)
    book.apply(ack("a1", alarm_id), T0)
    assert book.apply(ack("a1", alarm_id), T0 + 1).outcome is None
    book.apply(resolve("r1", alarm_id), T0 + 2)
    assert book.apply(resolve("r1", alarm_id), T0 + 3).outcome is None


def test_requests_record_through_what_they_came() -> None:
    """The record keeps `via` of the acknowledgement and of the resolution."""
    book = AlarmBook(settings())
    alarm_id = _open(book)
    [acked] = book.apply(ack("a1", alarm_id), T0).upserts
    [resolved] = book.apply(resolve("r1", alarm_id), T0 + 1).resolved
    assert (acked.acknowledged_via, resolved.resolved_via) == ("cli", "cli")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain Ünal", "plain Ünal"),
        ("a\nb", "a\\nb"),
        ("a\rb", "a\\rb"),
        ("\x1b[2J", "\\x1b[2J"),
        ("\x9b31m", "\\x9b31m"),
        ("x\u202egnp", "x\\u202egnp"),
        ("x\u2028y", "x\\u2028y"),
        ("x\u2066y", "x\\u2066y"),
    ],
)
def test_safe_escapes_every_control_and_bidi_character(text: str, shown: str) -> None:
    """Printable text is kept as it is; controls, separators and bidi characters are escaped."""
    assert safe(text) == shown


def test_a_notice_is_one_line_whatever_its_fields_hold() -> None:
    """Control characters in any text field of a notice never reach the line raw."""
    injected = "\n12:00:00 [police   ] RESOLVED\r\x1b]0;x\x07\u202e"
    notice = factories.notice(
        alarm_id=f"AL-1{injected}",
        order_id=f"ORD{injected}",
        reason=f"Resolved{injected}",
        by=f"officer{injected}",
    )
    for colour in (False, True):
        line = format_notice(notice, "probation", colour=colour)
        controls = [c for c in line if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
        # With colour, only the event's own SGR sequences (ESC [ ... m) remain.
        assert controls == (["\x1b", "\x1b"] if colour else [])


def test_an_applied_resolve_names_who_resolved() -> None:
    """The CLI's line for an applied resolve names the resolver."""
    outcome = RequestOutcome(
        request_id="r1", status="applied", at=T0, detail="resolved", acknowledged_by="officer 17"
    )
    told = tell(resolve("r1", "AL-1", by="officer 2"), outcome)
    assert told.applied and told.message == "AL-1 resolved by officer 2"

"""Why the gateway may freeze its heap after loading its alarms (`services/shell/heap.py`): its
book holds no reference cycle, so records dropped after a freeze (resolved, or the whole book)
are still freed by their reference counts."""

from __future__ import annotations

import gc

from nabij.config import EscalationPolicy
from services.alarm_gateway.core.alarms import RESOLVED_KEPT, AlarmBook
from tests.gateway.factories import MINUTE, T0, ack, resolve, settings, signal

POLICY = EscalationPolicy(
    priority=1, queues=["probation"], ack_timeout_s=60, escalate_to=["police"]
)


def a_busy_book() -> AlarmBook:
    """Alarms opened, updated, escalated, acknowledged, cleared and resolved, more of them
    resolved than the book remembers."""
    book = AlarmBook(settings(escalation={"proximity_alarm": POLICY}))
    for k in range(RESOLVED_KEPT + 20):
        key = f"proximity_alarm:ORD-{k}:ank-{k}:vic-{k}"
        at = T0 + k * MINUTE
        alarm_id = book.apply(signal(f"s{k}-open", key=key, at=at), at).upserts[0].alarm_id
        book.apply(signal(f"s{k}-update", "update", key=key, at=at + 1), at + 1)
        for due in book.due(at + 2 * MINUTE):
            book.fire_due(due, at + 2 * MINUTE)
        if k % 2:
            book.apply(ack(f"r{k}-ack", alarm_id), at + 3 * MINUTE)
        book.apply(signal(f"s{k}-clear", "clear", key=key, at=at + 4 * MINUTE), at + 4 * MINUTE)
        book.apply(resolve(f"r{k}-resolve", alarm_id), at + 5 * MINUTE)
    return book


def test_a_dropped_book_leaves_no_cyclic_garbage() -> None:
    book = a_busy_book()
    assert book.open_alarms() == []  # every alarm went its whole way
    gc.collect()  # the building's own garbage
    del book
    assert gc.collect() == 0

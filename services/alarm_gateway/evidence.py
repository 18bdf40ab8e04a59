"""What the gateway appends to its evidence chain (pure): every notice it queues, and every
human request (who, when, note) with the outcome it got."""

from __future__ import annotations

from typing import Final

import msgspec

from nabij.contract import (
    AckRequest,
    GatewayInput,
    Notice,
    QueueName,
    RequestOutcome,
    ResolveRequest,
    concerned_orders,
)
from nabij.evidence.chain import Entry
from services.alarm_gateway.core.alarms import Decision


class NoticeData(msgspec.Struct, frozen=True):
    queue: QueueName
    """First, so that a notice's queue can be told without decoding it (`bundle.WITHHELD`)."""
    notice: Notice


class RequestData(msgspec.Struct, frozen=True, omit_defaults=True):
    request: AckRequest | ResolveRequest
    outcome: RequestOutcome | None = None


_encoder: Final = msgspec.json.Encoder()


def decision_entries(
    decision: Decision, now_ms: int, cause: GatewayInput | None = None
) -> list[Entry]:
    """The records of one decision; `cause` is the input it answered (None: a due timer)."""
    entries = [
        Entry(
            "notice",
            now_ms,
            concerned_orders(notice.order_id, notice.orders),
            _encoder.encode(NoticeData(queue, notice)),
        )
        for queue, notice in decision.notices
    ]
    if isinstance(cause, AckRequest | ResolveRequest):
        records = decision.upserts + decision.resolved
        orders = tuple(
            sorted({o for r in records for o in concerned_orders(r.order_id, r.latest.orders)})
        )
        data = _encoder.encode(RequestData(cause, decision.outcome))
        entries.append(Entry("request", now_ms, orders, data))
    return entries

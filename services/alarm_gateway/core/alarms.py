"""The gateway's pure alarm logic, in one import: records, decisions, the book, ids.

- `record.py`: `AlarmRecord` (persisted), `Decision` (what a transition returns), `alarm_id_for`.
- `notices.py`: notices per queue, reasons, and the privacy rule (victim position: police only).
- `transitions.py`: the pure steps of one record (open, update, clear, ack, resolve, escalate).
- `book.py`: `AlarmBook`, the open alarms by id and key, deduplication, and `Decision`s.
"""

from __future__ import annotations

from services.alarm_gateway.core.book import RESOLVED_KEPT, AlarmBook
from services.alarm_gateway.core.notices import (
    VICTIM_POSITION_QUEUES,
    about_victim,
    build_notices,
    distance_band,
    scrub,
)
from services.alarm_gateway.core.record import (
    APPLIED_IDS_KEPT,
    AlarmRecord,
    Decision,
    PoliceFacts,
    SafeFacts,
    alarm_id_for,
    decode_record,
    encode_police_facts,
    encode_record,
    police_facts_decoder,
    record_decoder,
)

__all__ = [
    "APPLIED_IDS_KEPT",
    "RESOLVED_KEPT",
    "VICTIM_POSITION_QUEUES",
    "AlarmBook",
    "AlarmRecord",
    "Decision",
    "PoliceFacts",
    "SafeFacts",
    "about_victim",
    "alarm_id_for",
    "build_notices",
    "decode_record",
    "distance_band",
    "encode_police_facts",
    "encode_record",
    "police_facts_decoder",
    "record_decoder",
    "scrub",
]

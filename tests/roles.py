"""What each role may read, as exact field sets: tests compare the code against these lists, so a
field added to a notice or a command must be added here on purpose (docs/privacy.md)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

import msgspec

from nabij.contract import Notice, encode
from services.alarm_gateway.core.alarms import AlarmRecord, about_victim, encode_record
from services.alarm_gateway.core.notices import describe_band

# Probation (and anything derived from its queue): no exact distance, uncertainty, confidence,
# closing speed, time to contact or victim position. `offender` and `confidence` only on alarms
# that are not about the victim's whereabouts, and only while none such is open in the order.
PROBATION_NOTICE_FIELDS: Final = frozenset(
    {
        "notice_id",
        "alarm_id",
        "event",
        "kind",
        "priority",
        "order_id",
        "offender_device",
        "level",
        "at",
        "reason",
        "victim_device",
        "offender",
        "queues",
        "by",
        "note",
        "zone",
        "confidence",
        "happened_at",
        "late_s",
        "distance_band",
        "approaching",
        "cause",
        # Platform notices: order ids only, the same list for both queues.
        "orders",
    }
)
# Probation fields that must be absent on an alarm about the victim's whereabouts.
WHEREABOUTS_WITHHELD: Final = frozenset({"offender", "confidence"})
POLICE_ONLY_NOTICE_FIELDS: Final = frozenset(
    {"distance_m", "uncertainty_m", "victim", "closing_speed_mps", "eta_s"}
)
POLICE_NOTICE_FIELDS: Final = PROBATION_NOTICE_FIELDS | POLICE_ONLY_NOTICE_FIELDS
# What the offender's device is told: an interval or a warning level, and how far its own
# messages are committed (its own counter), nothing else.
COMMAND_FIELDS: Final = {
    "set_interval": frozenset({"seconds"}),
    "warn": frozenset({"level"}),
    "committed": frozenset({"seq", "boot"}),
}
# A stored alarm record (the hash `nabij alarms` reads, and the resolved stream).
RECORD_LATEST_FIELDS: Final = frozenset(
    {"band", "approaching", "zone", "status", "happened_at", "late_s", "cause", "orders"}
)

_LENGTH = re.compile(r"\d\s*(?:km|m|metres?|meters?)(?![A-Za-z])", re.IGNORECASE)


def assert_probation_safe(notice: Notice) -> None:
    """`notice` holds only probation fields, none of the whereabouts ones on an alarm about the
    victim's whereabouts, and its reason states no length but its band's edges."""
    wire = set(msgspec.json.decode(encode(notice)))
    assert wire <= PROBATION_NOTICE_FIELDS, wire - PROBATION_NOTICE_FIELDS
    if about_victim(notice.kind, notice.victim_device):
        assert not wire & WHEREABOUTS_WITHHELD, notice
    reason = notice.reason
    if notice.distance_band is not None:
        reason = reason.replace(describe_band(notice.distance_band), "")
    assert _LENGTH.search(reason) is None, notice.reason


def assert_record_safe(record: AlarmRecord, secrets: Iterable[str]) -> None:
    """The stored form of `record` has only probation-safe latest facts and none of `secrets`."""
    stored = encode_record(record).decode()
    assert set(msgspec.json.decode(stored)["latest"]) <= RECORD_LATEST_FIELDS, stored
    assert "police" not in msgspec.json.decode(stored), stored
    for secret in secrets:
        assert secret not in stored, (secret, stored)

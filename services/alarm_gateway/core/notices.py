"""Building dispatch notices: one per queue, with the privacy rule applied per queue.

PRIVACY: the victim's position is put only in notices to the `police` queue. Probation (and
anything that derives from its queue) never receives it. Human-readable reasons never carry
coordinates: whatever reason text arrives is scrubbed of anything that looks like one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from nabij.contract import AlarmKind, AlarmSignal, Notice, NoticeEvent, QueueName
from services.alarm_gateway.core.record import AlarmRecord

VICTIM_POSITION_QUEUES: Final[frozenset[QueueName]] = frozenset({"police"})

# A decimal number with four or more decimals (degrees at ~10 m precision or finer), optionally
# followed by a separator and a second one: "52.370216, 4.895168" or "4.8951".
_COORDINATE: Final = re.compile(r"[-+]?\d{1,3}\.\d{4,}(?:\s*[,;/ ]\s*[-+]?\d{1,3}\.\d{4,})?")
WITHHELD: Final = "[position withheld]"

_DEFAULT_FACTS: Final[dict[AlarmKind, str]] = {
    "proximity_pre_alert": "Offender inside the pre-alert ring around the victim",
    "proximity_alarm": "Offender inside the alarm ring around the victim",
    "zone_alarm": "Offender inside an exclusion zone",
    "aware_button": "Victim pressed the alarm button",
    "strap_tamper": "Ankle monitor strap tampered with",
    "location_unknown": "Position of a device unknown",
    "device_offline": "Device offline",
    "battery_low": "Device battery low",
    "device_fault": "Device misbehaving (clock, counter or refused messages)",
    "victim_unprotected": "Victim device not reporting: the victim is not protected",
}


def scrub(text: str) -> str:
    """`text` without anything that looks like a coordinate."""
    return _COORDINATE.sub(WITHHELD, text)


def facts(signal: AlarmSignal) -> str:
    """The situation in words, without a final full stop: the signal's reason plus the distance.

    The proximity service writes reasons such as "Offender within 480 m of victim (alarm ring
    500 m)"; if its text does not already state the (rounded) distance, the distance is added.
    """
    base = " ".join(scrub(signal.reason).split()).rstrip(".;, ")
    if not base:
        base = _DEFAULT_FACTS[signal.kind]
    if signal.zone is not None and signal.zone not in base:
        base = f"{base} (zone {signal.zone!r})"
    if signal.distance_m is not None:
        metres = round(signal.distance_m)
        if re.search(rf"(?<![\d.,]){metres} ?m\b", base) is None:
            uncertainty = (
                f" ± {round(signal.uncertainty_m)} m" if signal.uncertainty_m is not None else ""
            )
            base = f"{base} (distance {metres} m{uncertainty})"
    return base


def sentence(text: str) -> str:
    """One human sentence: scrubbed, with a full stop."""
    text = scrub(text).strip()
    return text if text.endswith(".") else f"{text}."


def build_notices(
    record: AlarmRecord,
    event: NoticeEvent,
    reason: str,
    now_ms: int,
    *,
    queues: Sequence[QueueName] | None = None,
    by: str | None = None,
    note: str | None = None,
) -> list[tuple[QueueName, Notice]]:
    """One notice per queue for one event; counts the event on `record` (which must be fresh).

    `queues` defaults to every queue the alarm has reached (`record.queues`). The notice id is
    `{alarm_id}-{event number:05d}-{queue}`: the event number grows once per event.
    """
    targets: list[QueueName] = list(dict.fromkeys(record.queues if queues is None else queues))
    record.notices_sent += 1
    record.last_notice_at = now_ms
    latest = record.latest
    text = sentence(reason)
    out: list[tuple[QueueName, Notice]] = []
    for queue in targets:
        notice = Notice(
            notice_id=f"{record.alarm_id}-{record.notices_sent:05d}-{queue}",
            alarm_id=record.alarm_id,
            event=event,
            kind=record.kind,
            priority=record.priority,
            order_id=record.order_id,
            offender_device=record.offender_device,
            level=record.level,
            at=now_ms,
            reason=text,
            victim_device=record.victim_device,
            distance_m=latest.distance_m,
            uncertainty_m=latest.uncertainty_m,
            offender=latest.offender,
            # PRIVACY: the victim's position goes to the police queue only, never to probation.
            victim=latest.victim if queue in VICTIM_POSITION_QUEUES else None,
            queues=list(targets),
            # Free text a person typed may name a place: scrubbed like the reason.
            by=None if by is None else scrub(by),
            note=None if note is None else scrub(note),
            zone=latest.zone,
            confidence=latest.confidence,
            closing_speed_mps=latest.closing_speed_mps,
            eta_s=latest.eta_s,
            happened_at=latest.happened_at,
            late_s=latest.late_s,
        )
        out.append((queue, notice))
    return out

"""Building dispatch notices: one per queue, with the privacy rule applied per queue.

PRIVACY (docs/privacy.md): police notices carry the exact figures (distance, uncertainty,
confidence, closing speed, time to contact, both positions). Probation notices carry a distance
band and whether the offender is approaching; on alarms about the victim's whereabouts
(`about_victim`) they carry no offender position either, since he is then within a ring of
her. Probation reasons are built from those structured facts, never from the proximity
service's text (which states metres). Free text is scrubbed of anything that looks like a
coordinate as a second line of defence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from nabij.contract import (
    AlarmKind,
    AlarmSignal,
    ClearCause,
    DistanceBand,
    Notice,
    NoticeEvent,
    QueueName,
)
from services.alarm_gateway.core.record import AlarmRecord, PoliceFacts, SafeFacts

VICTIM_POSITION_QUEUES: Final[frozenset[QueueName]] = frozenset({"police"})
# Kinds whose proximity reasons state metres (distance, depth in a zone): probation's text for
# them is built from the band instead.
MEASURED_KINDS: Final[frozenset[AlarmKind]] = frozenset(
    {"proximity_pre_alert", "proximity_alarm", "zone_alarm"}
)

# A decimal number with four or more decimals (degrees at ~10 m precision or finer), optionally
# followed by a separator and a second one: "52.370216, 4.895168" or "4.8951".
_COORDINATE: Final = re.compile(r"[-+]?\d{1,3}\.\d{4,}(?:\s*[,;/ ]\s*[-+]?\d{1,3}\.\d{4,})?")
WITHHELD: Final = "[position withheld]"
# A length: digits (with separators) then a unit of distance, "480 m", "1,200 metres", "1.2km".
_LENGTH: Final = re.compile(
    r"\d[\d.,]*\s*(?:km|m|metres?|meters?|kilometres?|kilometers?)(?![A-Za-z])", re.IGNORECASE
)
DISTANCE_WITHHELD: Final = "[distance withheld]"

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
    "platform_degraded": "nabij cannot see some devices: no alarm from them can be raised",
    "platform_restored": "nabij sees the devices again",
}


CAUSE_TEXT: Final[dict[ClearCause, str]] = {
    "order_ended": "order ended",
    "order_not_started": "order not yet in force",
    "order_changed": "order changed: it no longer covers this",
}


def scrub(text: str) -> str:
    """`text` without anything that looks like a coordinate."""
    return _COORDINATE.sub(WITHHELD, text)


def without_lengths(text: str) -> str:
    """`text` with every length (a number and a unit of distance) withheld: for the device
    status texts probation reads, which should never state one in the first place."""
    return _LENGTH.sub(DISTANCE_WITHHELD, text)


def about_victim(kind: AlarmKind, victim_device: str | None) -> bool:
    """Whether an alarm tells where the victim is: a ring around her, or her own button press.
    The offender's position on such an alarm is hers to within the ring: police only."""
    return kind in ("proximity_pre_alert", "proximity_alarm") or (
        kind == "aware_button" and victim_device is not None
    )


def distance_band(distance_m: float, edges: Sequence[float]) -> DistanceBand:
    """The band of configured `edges` (increasing) that holds `distance_m`."""
    lower = 0.0
    for edge in edges:
        if distance_m < edge:
            return DistanceBand(min_m=lower, max_m=edge)
        lower = edge
    return DistanceBand(min_m=lower)


def describe_band(band: DistanceBand) -> str:
    if band.max_m is None:
        return f"{band.min_m:.0f} m or more apart"
    if band.min_m == 0:
        return f"under {band.max_m:.0f} m apart"
    return f"{band.min_m:.0f}-{band.max_m:.0f} m apart"


def split_facts(signal: AlarmSignal, band_edges: Sequence[float]) -> tuple[SafeFacts, PoliceFacts]:
    """A signal's facts for the probation role, and the exact ones for police only."""
    safe = SafeFacts(
        band=None if signal.distance_m is None else distance_band(signal.distance_m, band_edges),
        approaching=None if signal.closing_speed_mps is None else signal.closing_speed_mps > 0,
        zone=signal.zone,
        status=None if signal.kind in MEASURED_KINDS else without_lengths(scrub(signal.reason)),
        happened_at=signal.happened_at,
        late_s=signal.late_s,
        cause=signal.cause,
        orders=signal.orders,
    )
    police = PoliceFacts(
        reason=signal.reason,
        distance_m=signal.distance_m,
        uncertainty_m=signal.uncertainty_m,
        offender=signal.offender,
        victim=signal.victim,
        confidence=signal.confidence,
        closing_speed_mps=signal.closing_speed_mps,
        eta_s=signal.eta_s,
    )
    return safe, police


def _tidy(text: str) -> str:
    return " ".join(scrub(text).split()).rstrip(".;, ")


def police_situation(kind: AlarmKind, zone: str | None, police: PoliceFacts) -> str:
    """The situation in words, without a final full stop: the signal's reason plus the distance.

    The proximity service writes reasons such as "Offender within 480 m of victim (alarm ring
    500 m)"; if its text does not already state the (rounded) distance, the distance is added.
    """
    base = _tidy(police.reason) or _DEFAULT_FACTS[kind]
    if zone is not None and zone not in base:
        base = f"{base} (zone {zone!r})"
    if police.distance_m is not None:
        metres = round(police.distance_m)
        if re.search(rf"(?<![\d.,]){metres} ?m\b", base) is None:
            uncertainty = (
                f" ± {round(police.uncertainty_m)} m" if police.uncertainty_m is not None else ""
            )
            base = f"{base} (distance {metres} m{uncertainty})"
    return base


def probation_situation(kind: AlarmKind, latest: SafeFacts) -> str:
    """The situation in words for probation, from the safe facts only: the band, never metres."""
    if latest.status is not None and (status := _tidy(latest.status)):
        return status
    base = _DEFAULT_FACTS[kind]
    if latest.zone is not None:
        base = f"{base} (zone {latest.zone!r})"
    if latest.band is not None:
        base = f"{base}, {describe_band(latest.band)}"
    if latest.approaching:
        base = f"{base}, approaching"
    if latest.late_s is not None:
        base = f"{base}; DETECTED LATE: it happened {latest.late_s} s ago"
    return base


def situation(record: AlarmRecord, queue: QueueName) -> str:
    """The record's latest situation in words, as `queue` may read it."""
    if queue in VICTIM_POSITION_QUEUES and record.police is not None:
        return police_situation(record.kind, record.latest.zone, record.police)
    return probation_situation(record.kind, record.latest)


def sentence(text: str) -> str:
    """One human sentence: scrubbed, with a full stop."""
    text = scrub(text).strip()
    return text if text.endswith(".") else f"{text}."


def build_notices(
    record: AlarmRecord,
    event: NoticeEvent,
    now_ms: int,
    *,
    lead: str | None = None,
    tail: str = "",
    with_situation: bool = True,
    queues: Sequence[QueueName] | None = None,
    by: str | None = None,
    note: str | None = None,
) -> list[tuple[QueueName, Notice]]:
    """One notice per queue for one event; counts the event on `record` (which must be fresh).

    The reason is `lead`, then (`with_situation`) the situation as each queue may read it, then
    `tail`. `queues` defaults to every queue the alarm has reached (`record.queues`). The notice
    id is `{alarm_id}-{event number:05d}-{queue}`: the event number grows once per event.
    """
    targets: list[QueueName] = list(dict.fromkeys(record.queues if queues is None else queues))
    record.notices_sent += 1
    record.last_notice_at = now_ms
    latest = record.latest
    police = record.police or PoliceFacts(reason="")
    # PRIVACY: on an alarm about her whereabouts his position is hers to within the ring.
    shown_to_probation = not about_victim(record.kind, record.victim_device)
    out: list[tuple[QueueName, Notice]] = []
    for queue in targets:
        exact = queue in VICTIM_POSITION_QUEUES
        parts = [lead] if lead is not None else []
        if with_situation:
            parts.append(situation(record, queue))
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
            reason=sentence(": ".join(parts) + tail),
            victim_device=record.victim_device,
            distance_m=police.distance_m if exact else None,
            uncertainty_m=police.uncertainty_m if exact else None,
            offender=police.offender if exact or shown_to_probation else None,
            victim=police.victim if exact else None,
            queues=list(targets),
            # Free text a person typed may name a place: scrubbed like the reason.
            by=None if by is None else scrub(by),
            note=None if note is None else scrub(note),
            zone=latest.zone,
            confidence=police.confidence if exact or shown_to_probation else None,
            closing_speed_mps=police.closing_speed_mps if exact else None,
            eta_s=police.eta_s if exact else None,
            happened_at=latest.happened_at,
            late_s=latest.late_s,
            distance_band=latest.band,
            approaching=latest.approaching,
            cause=latest.cause,
            orders=latest.orders,
        )
        out.append((queue, notice))
    return out

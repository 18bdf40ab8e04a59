"""What the gateway deletes for retention (docs/privacy.md), decided purely from the time given.

Stream entry ids start with the wall-clock milliseconds at which Redis appended them, so an age
limit is an `XTRIM MINID` at `wall - limit` (wall time, which nabij's clock is too unless a
simulation speeds it up). Police facts of a resolved alarm carry when (nabij time) it was resolved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nabij.settings import PrivacySettings
from services.alarm_gateway.core.record import PoliceFacts


@dataclass(frozen=True, slots=True)
class Trim:
    police_queue_min_id: str
    """Police dispatch entries below this id are trimmed (`XTRIM MINID`)."""
    resolved_min_id: str
    """Resolved alarm records below this id are trimmed."""
    expired_police_facts: list[str]
    """Alarm ids whose police facts are deleted: resolved longer ago than the limit."""


def _min_id(now_ms: int, retention_s: float) -> str:
    return f"{max(0, now_ms - round(retention_s * 1000))}-0"


def plan_trim(
    privacy: PrivacySettings, now_ms: int, wall_ms: int, police: Mapping[str, PoliceFacts]
) -> Trim:
    """What is past its retention at `now_ms` (nabij time; `wall_ms` for stream ids). Facts of
    open alarms (not resolved) stay."""
    facts_cutoff = now_ms - round(privacy.police_facts_retention_s * 1000)
    return Trim(
        police_queue_min_id=_min_id(wall_ms, privacy.police_queue_retention_s),
        resolved_min_id=_min_id(wall_ms, privacy.resolved_retention_s),
        expired_police_facts=sorted(
            alarm_id
            for alarm_id, facts in police.items()
            if facts.resolved_at is not None and facts.resolved_at <= facts_cutoff
        ),
    )

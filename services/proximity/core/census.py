"""Counts of pairs and devices for the gauges, taken at a heartbeat: pure, time injected.

Labels are states and buckets only, never a device, person or order id."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Final

from services.proximity.core.state import DeviceState, PairState, Phase

RINGS: Final = ("pre_alert", "alarm")
PHASES: Final[tuple[Phase, ...]] = ("outside", "entering", "inside", "exiting")
# Upper edges (exclusive) of the contact-age buckets, seconds; beyond the last: over_1h.
CONTACT_AGES: Final = ((60, "under_1m"), (300, "1m_5m"), (900, "5m_15m"), (3600, "15m_1h"))
CONTACT_AGE_LABELS: Final = (*(label for _edge, label in CONTACT_AGES), "over_1h", "never")


def pair_phases(pairs: Iterable[PairState]) -> Counter[tuple[str, Phase]]:
    """(ring, phase) -> how many pairs; a combination with none is absent (the caller sets 0)."""
    counts: Counter[tuple[str, Phase]] = Counter()
    for pair in pairs:
        counts["pre_alert", pair.pre_alert.phase] += 1
        counts["alarm", pair.alarm.phase] += 1
    return counts


def contact_age(device: DeviceState, now_ms: int) -> str:
    """The bucket of the time since the device's last accepted fix (server time)."""
    if device.last_heard_ms is None:
        return "never"
    age_s = (now_ms - device.last_heard_ms) / 1000
    return next((label for edge, label in CONTACT_AGES if age_s < edge), "over_1h")


def device_contact(devices: Iterable[DeviceState], now_ms: int) -> Counter[tuple[str, bool]]:
    """(contact age bucket, online) -> how many devices."""
    return Counter((contact_age(device, now_ms), device.online) for device in devices)

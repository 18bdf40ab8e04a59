"""Counts of pairs and devices for the gauges, taken at a heartbeat: pure, time injected.

Labels are states and buckets only, never a device, person or order id.

A count runs a slice at a time (`CensusRound`) between batches: taken whole, it held up the
batch behind it for ~22 ms at 10,000 devices, once a second, and a press in that batch with it
(docs/benchmarks.md, "Latency"); it grows with the shard, the slice does not."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from services.proximity.core.state import DeviceState, Phase, RingState

RINGS: Final = ("pre_alert", "alarm")
PHASES: Final[tuple[Phase, ...]] = ("outside", "entering", "inside", "exiting")
# Upper edges (exclusive) of the contact-age buckets, seconds; beyond the last: over_1h.
CONTACT_AGES: Final = ((60, "under_1m"), (300, "1m_5m"), (900, "5m_15m"), (3600, "15m_1h"))
CONTACT_AGE_LABELS: Final = (*(label for _edge, label in CONTACT_AGES), "over_1h", "never")


class PairRings(Protocol):
    """What the census reads of a pair: a stored state or the engine's record alike."""

    @property
    def pre_alert(self) -> RingState: ...
    @property
    def alarm(self) -> RingState: ...


def pair_phases(pairs: Iterable[PairRings]) -> Counter[tuple[str, Phase]]:
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


@dataclass(slots=True)
class CensusRound:
    """One count of the pairs and devices listed at its start, a slice at a time. A state that
    changes during the round is counted as it is when its slice comes (each state once)."""

    pairs: Sequence[PairRings]
    devices: Sequence[DeviceState]
    phases: Counter[tuple[str, Phase]] = field(default_factory=Counter)
    contact: Counter[tuple[str, bool]] = field(default_factory=Counter)
    grouped: int = 0
    _pairs_done: int = 0
    _devices_done: int = 0

    def step(self, now_ms: int, budget: int) -> bool:
        """Count up to `budget` more states; True once every state is counted."""
        pairs = self.pairs[self._pairs_done : self._pairs_done + budget]
        self.phases.update(pair_phases(pairs))
        self._pairs_done += len(pairs)
        left = budget - len(pairs)
        devices = self.devices[self._devices_done : self._devices_done + left]
        self.contact.update(device_contact(devices, now_ms))
        self.grouped += sum(1 for device in devices if device.grouped)
        self._devices_done += len(devices)
        return self._pairs_done == len(self.pairs) and self._devices_done == len(self.devices)

"""Persisted state of devices and pairs (msgspec structs; the shell stores them as msgpack)."""

from __future__ import annotations

from typing import Literal

import msgspec

from nabij.contract import Position, WarnLevel

Phase = Literal["outside", "entering", "inside", "exiting"]
PairKey = tuple[str, str, str]
"""(order_id, offender_device, victim_device)."""

# How many sequence numbers below `last_seq` are remembered, to tell a redelivery ("duplicate")
# from a late message that was never seen ("out_of_order").
SEEN_WINDOW = 64
_SEEN_MASK = (1 << SEEN_WINDOW) - 1
# How many safety events above `last_seq` are remembered (a device presses rarely).
SEEN_AHEAD_MAX = 16


class RingState(msgspec.Struct, frozen=True, omit_defaults=True):
    """Where one pair stands relative to one ring. Frozen: an unchanged step returns the same
    object, so the engine detects change by identity."""

    phase: Phase = "outside"
    since_ts: int = 0
    """Device time of the last phase change."""
    reported_m: float | None = None
    """Distance last sent in an open or update signal while the ring is open."""


class ZoneState(msgspec.Struct, omit_defaults=True):
    """Where an offender stands relative to one exclusion zone of one order."""

    ring: RingState = msgspec.field(default_factory=RingState)
    signed_m: float | None = None
    """Last distance to the zone's boundary, negative inside."""
    acc: float | None = None
    """Effective accuracy radius of the fix that gave `signed_m`."""
    exempt: bool = False
    """The last evaluation fell in an exemption window (the tick re-checks when it ends)."""


class DeviceState(msgspec.Struct):
    device_id: str
    epoch: int = 0
    """Restarts of the device's counter so far (a new boot, or a reset taken from old firmware).
    Signal ids carry it, so a seq reused after a reboot is never taken for a redelivery."""
    last_seq: int = -1
    seen_below: int = 0
    """Bit k set: seq `last_seq - 1 - k` was accepted (see `SEEN_WINDOW`)."""
    seen_ahead: list[int] = []
    """Seqs above `last_seq` of safety events already taken (they move no seq: a press that
    overtook its device's earlier messages must not make them out of order)."""
    last_ts: int = 0
    """Device time of the newest accepted fix."""
    fix: Position | None = None
    last_heard_ms: int | None = None
    """Server time of the newest accepted fix; silence is measured on it."""
    online: bool = True
    battery_low: bool = False
    batt: int | None = None
    location_unknown: bool = False
    gnss_lost: bool = False
    interval_s: int | None = None
    """Fix interval last asked of the device."""
    warned: WarnLevel | None = None
    """Warn level last sent to the device."""
    status_changes: int = 0
    """Counts presence changes, so signal ids born from status messages (no seq) stay unique."""
    track: list[Position] = []
    """The last few accepted fixes, oldest first (the newest is `fix`): velocity, jumps."""
    candidates: list[Position] = []
    """Outliers (GPS jumps) in a row that agree with each other; enough of them relocate."""
    outliers: int = 0
    """Outliers seen in total (their signal-free inputs still advance `seq`)."""
    zones: dict[str, ZoneState] = {}
    """Offender devices: `{order_id}|{zone name}` -> where the device stands to that zone."""

    def tag(self, seq: int) -> str:
        """What names input `seq` of this device in signal ids: unique across counter restarts."""
        return str(seq) if self.epoch == 0 else f"{seq}@{self.epoch}"

    def seq_seen(self, seq: int) -> bool:
        """Whether `seq` was accepted before, as far as the window remembers."""
        if seq == self.last_seq or seq in self.seen_ahead:
            return True
        offset = self.last_seq - 1 - seq
        return 0 <= offset < SEEN_WINDOW and bool(self.seen_below >> offset & 1)

    def advance_seq(self, seq: int) -> None:
        """Accept `seq` (> last_seq) as the newest message of the device."""
        delta = seq - self.last_seq
        # A large jump forgets everything (and avoids building a huge int only to mask it).
        mask = (self.seen_below << delta) & _SEEN_MASK if delta < SEEN_WINDOW else 0
        if self.last_seq >= 0 and delta <= SEEN_WINDOW:
            mask |= 1 << (delta - 1)
        self.seen_below = mask
        self.last_seq = seq
        if self.seen_ahead:
            passed = [s for s in self.seen_ahead if s <= seq]
            self.seen_ahead = [s for s in self.seen_ahead if s > seq]
            for taken in passed:
                self.mark_seen(taken)

    def take_ahead(self, seq: int) -> None:
        """Remember `seq` (> last_seq) as taken without moving `last_seq` (the newest few)."""
        self.seen_ahead = sorted([*self.seen_ahead, seq])[-SEEN_AHEAD_MAX:]

    def mark_seen(self, seq: int) -> None:
        """Remember a late `seq` (< last_seq) that was taken without moving the state."""
        offset = self.last_seq - 1 - seq
        if 0 <= offset < SEEN_WINDOW:
            self.seen_below |= 1 << offset


class PairState(msgspec.Struct):
    order_id: str
    offender_device: str
    victim_device: str
    pre_alert: RingState = msgspec.field(default_factory=RingState)
    alarm: RingState = msgspec.field(default_factory=RingState)
    last_obs_ts: int = 0
    """Device time of the newest comparison; never goes backwards."""
    last_distance_m: float | None = None
    last_uncertainty_m: float | None = None
    exempt: bool = False
    """The last comparison fell in an exemption window (the tick re-checks when it ends)."""

    @property
    def key(self) -> PairKey:
        return (self.order_id, self.offender_device, self.victim_device)

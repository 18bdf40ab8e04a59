"""Where a message stands in its device's counter: new, a repeat, late, or an implausible jump.

`seq` orders one device's messages within one boot. Firmware that sends a boot id restarts `seq`
with every new boot; firmware that does not is recognised as reset by the rule in `admit`. A
counter never blinds a device for good: an implausible jump is refused, and a counter poisoned
before (by a forged or corrupt message) heals by the same reset rule.
"""

from __future__ import annotations

import hashlib
from typing import Final, Literal

from services.proximity.core.state import RARE_DEFAULTS, SEEN_WINDOW, DeviceState

Verdict = Literal["new", "duplicate", "out_of_order", "seq_jump"]

MAX_SEQ_JUMP: Final = 1_000_000
"""A device at one message a second needs 11 days to count this far; a bigger step is refused."""
RESTART_SEQ_MAX: Final = 3
"""A seq this low, with a newer device time than the newest message taken, is a restarted
counter (firmware counts from 0 or 1 after a reboot); a higher one is merely out of order."""
RESET_CONFIRM: Final = 3
"""Messages in a row, increasing, far below the counter that are taken as a counter reset."""
PRIOR_BOOTS_KEPT: Final = 4
PRESSES_KEPT: Final = 16


def admit(device: DeviceState, boot: str | None, seq: int, ts: int) -> Verdict:
    """Judge message (`boot`, `seq`, device time `ts`); restarts the counter on a new boot or a
    recognised reset. "new" messages must then be taken with `take`."""
    if boot is not None and boot != device.boot:
        ended_at = device.prior_boots.get(boot) if device.prior_boots else None
        if ended_at is not None and seq <= ended_at:
            return "duplicate"  # redelivered from a boot that has ended since
        # A new boot, or an earlier one that goes on (a forged boot id cannot blind the real one).
        restart(device, boot, resume_at=ended_at)
        return "new"
    if seq > device.last_seq:
        if device.last_seq >= 0 and seq - device.last_seq > MAX_SEQ_JUMP:
            return "seq_jump"
        return "new"
    far_below = device.last_seq - seq > SEEN_WINDOW
    if ts > device.last_ts and (seq <= RESTART_SEQ_MAX or far_below):
        # A counter that starts again (or fell far) with a newer time than anything taken is
        # no redelivery (that carries the time it had): a reboot of firmware without boot ids.
        restart(device, boot)
        return "new"
    if device.seq_seen(seq):
        return "duplicate"
    if not far_below:
        return "out_of_order"  # within the window and never seen: a late message
    if _stray_run(device, seq):
        restart(device, boot)
        return "new"
    return "out_of_order"


def _stray_run(device: DeviceState, seq: int) -> bool:
    """`RESET_CONFIRM` messages in a row, increasing, far below the counter: a reset, even when
    the device time of the counter's top cannot be trusted (a forged or glitched message)."""
    device.strays = device.strays + 1 if seq > device.stray_seq >= 0 else 1
    device.stray_seq = seq
    return device.strays >= RESET_CONFIRM


def restart(device: DeviceState, boot: str | None, *, resume_at: int | None = None) -> None:
    """Start the counter afresh (a new epoch), remembering where the ended boot stood; a boot
    that goes on resumes above `resume_at`, with everything up to it taken as seen."""
    boots = dict(device.prior_boots or {})  # a copy at a restart (rare): None stays None
    if device.boot is not None:
        boots[device.boot] = max(device.last_seq, boots.get(device.boot, -1))
        while len(boots) > PRIOR_BOOTS_KEPT:
            del boots[next(iter(boots))]
    boots.pop(boot or "", None)
    device.prior_boots = boots or None
    device.boot = boot
    device.epoch += 1
    device.last_seq = -1 if resume_at is None else resume_at
    device.unseen_below = 0  # none seen (none yet: -1), or every one up to `resume_at`
    device.seen_above = ()
    device.strays = 0
    device.stray_seq = -1


def note_overtaking(device: DeviceState, boot: str | None, seq: int) -> None:
    """A press or tamper was taken without moving the counter: remember its seq as seen, so
    that the device's confirmation can cover it (`DeviceState.committed_upto`)."""
    if boot != device.boot:
        return
    if seq > device.last_seq:
        device.seen_above = (*device.seen_above[-(PRESSES_KEPT - 1) :], seq)
    else:
        device.mark_seen(seq)


def take(device: DeviceState, seq: int, ts: int) -> None:
    """Record a "new" message: it moves the counter."""
    device.advance_seq(seq)
    device.last_ts = ts
    if (device.rare or RARE_DEFAULTS).stray_seq != -1:  # a stray run (rare fields) ends
        device.strays = 0
        device.stray_seq = -1


def safety_digest(*parts: object) -> str:
    """Names one safety event by its whole content: only the very same press is a repeat."""
    return hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()[:16]


def seen_press(device: DeviceState, digest: str) -> bool:
    """Whether this very event was taken before; if not, it is remembered now."""
    if digest in device.presses:
        return True
    device.presses = (*device.presses[-(PRESSES_KEPT - 1) :], digest)
    return False

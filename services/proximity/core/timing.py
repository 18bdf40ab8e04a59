"""Device time onto nabij's clock: when a fix was measured, and where a device was at a time.

nabij judges freshness, pairing and dwell on its own clock. A fix that arrives live is placed at
(about) its receive time, whatever the device's clock says: a clock minutes off, or one glitch
far ahead, changes nothing; the offset between the two clocks is learnt from the fixes. A fix that
the learnt offset puts more than `late_after_s` in the past is late: a backlog sent after a
coverage gap. It is placed when it was measured, so that it is compared with where the partner
was at that time.
"""

from __future__ import annotations

from typing import Final

from nabij.contract import Position
from services.proximity.core import history
from services.proximity.core.state import DeviceState

OFFSET_DRIFT_SHARE: Final = 8
"""A live fix that arrives later than the learnt offset predicts moves it by this share of the
difference: latency wanders, so the offset follows it without jumping to one slow delivery."""
HISTORY_POINTS: Final = 40
"""Positions kept per device over the history window (thinned evenly, the newest always kept)."""


def place(device: DeviceState, ts: int, now_ms: int, *, late_after_ms: int, window_ms: int) -> int:
    """Server time at which a new fix stamped `ts` (device time) was measured.

    The device's clock offset (receipt minus device time) is learnt from its fixes: set afresh
    by the first fix, by a clock that jumped back (device time older than the previous
    message's) and by one that runs ahead of the offset; drifting slowly with live fixes that
    arrive later than it predicts. A fix is placed at device time plus offset, never after its
    receipt: a live one within `late_after_ms` of it, a late one (a backlog) further back, but
    no earlier than the device's previous position or the history window. Call before the fix
    is taken (`device.last_ts` is then the previous message's device time).
    """
    sample = now_ms - ts
    offset = device.clock_offset_ms
    if offset is None or ts < device.last_ts or sample < offset:
        device.clock_offset_ms = sample
        return now_ms
    if sample - offset <= late_after_ms:
        device.clock_offset_ms = offset + (sample - offset) // OFFSET_DRIFT_SHARE
        return ts + offset
    floor = now_ms - window_ms
    if device.fix is not None:
        floor = max(floor, device.fix.ts)
    return min(max(ts + offset, floor), now_ms)


def anchor_backlog(device: DeviceState, newest_ts: int, now_ms: int) -> None:
    """A device whose first contact is a backlog array: learn its clock offset from the array's
    newest fix (measured last, just before the upload) instead of its oldest, so the older fixes
    are placed when they were measured (late) and a breach inside the gap is found. The newest
    fix, not the device's clock, anchors the offset: a clock minutes off changes nothing."""
    if device.clock_offset_ms is None:
        device.clock_offset_ms = now_ms - newest_ts


def lateness_s(measured_ms: int, now_ms: int, late_after_ms: int) -> int | None:
    """Seconds between measurement and receipt, for a late fix; None for a live one."""
    late_ms = now_ms - measured_ms
    return late_ms // 1000 if late_ms > late_after_ms else None


def remember(device: DeviceState, point: bytes, now_ms: int, window_ms: int) -> None:
    """Add an accepted position (server time), packed (`history.quantised`), to the device's
    history, thinned to `HISTORY_POINTS` over the window."""
    device.packed_history = history.added(
        device.packed_history,
        point,
        horizon_ms=now_ms - window_ms,
        spacing_ms=window_ms // HISTORY_POINTS,
        limit=HISTORY_POINTS,
    )


def position_at(device: DeviceState, t_ms: int, max_age_ms: int) -> Position | None:
    """Where `device` was at server time `t_ms`: its newest position if `t_ms` is not before it,
    else the nearest one in its history; None when nothing lies within `max_age_ms`."""
    fix = device.fix
    if fix is None:
        return None
    if t_ms >= fix.ts:
        return fix if t_ms - fix.ts <= max_age_ms else None
    return history.nearest(device.packed_history, t_ms, max_age_ms)

"""Presence debounced, and what leaves a victim unprotected: pure rules on server time.

A device says it is going (status `online:false`, its MQTT last will, a `power_off` event) or
back (status `online:true`, an accepted fix). `Presence.went_offline` and `came_online` record
that raw presence (`DeviceState.online`) and its drops; `Presence.judge` decides, on server time,
when the debounced `device_offline` condition (`DeviceState.offline_open`) opens or clears:

- it opens when the device has been offline for `offline_dwell_s`, or at once when it dropped
  more than `flap_drops` times within `flap_window_s` ("connection unstable");
- it clears when the device has been online for `online_dwell_s` and its connection is steady:
  at most one drop (the one it came back from) within the last `flap_window_s`. The gap between
  "more than `flap_drops`" and "at most one" is a hysteresis: a link that drops now and then
  can neither open nor, once open, clear and reopen on every drop.

`protection_causes` says why a victim device cannot protect its victim: it is silent (no fix
for `victim_silence_s`), offline (`offline_open`), or its battery is low.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nabij.contract import SignalAction
from nabij.settings import ProximitySettings
from services.proximity.core.state import RARE_DEFAULTS, DeviceState

ProtectionCause = Literal["silent", "offline", "battery_low"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """device_offline opens or clears now; `why` is the reason after the device's name."""

    action: SignalAction
    why: str


@dataclass(frozen=True, slots=True)
class Presence:
    offline_dwell_ms: int
    online_dwell_ms: int
    flap_drops: int
    flap_window_ms: int

    @classmethod
    def build(cls, settings: ProximitySettings) -> Presence:
        return cls(
            offline_dwell_ms=round(settings.offline_dwell_s * 1000),
            online_dwell_ms=round(settings.online_dwell_s * 1000),
            flap_drops=settings.flap_drops,
            flap_window_ms=round(settings.flap_window_s * 1000),
        )

    def went_offline(self, device: DeviceState, now_ms: int, *, powered_off: bool) -> bool:
        """Record a drop; False (and nothing changes) if the device was offline already."""
        if not device.online:
            return False
        device.online = False
        device.powered_off = powered_off
        device.online_since_ms = None
        drops = (*self._recent(device.drops_ms, now_ms), now_ms)
        device.drops_ms = drops[-(self.flap_drops + 1) :]
        return True

    def came_online(self, device: DeviceState, now_ms: int) -> bool:
        """Record a return; False (and nothing changes) if the device was online already."""
        if device.online:
            return False
        device.online = True
        device.online_since_ms = now_ms
        return True

    def adopt_legacy(self, device: DeviceState, now_ms: int) -> bool:
        """A state saved before presence was debounced said `online: false` for an open
        device_offline and kept no drops: take that alarm as open, offline since now, without a
        signal (the gateway has it open already)."""
        rare = device.rare or RARE_DEFAULTS  # asked on every tick while offline: no calls
        if device.online or rare.drops_ms or rare.offline_open:
            return False
        device.offline_open = True
        device.drops_ms = (now_ms,)
        return True

    def judge(self, device: DeviceState, now_ms: int) -> Verdict | None:
        """Whether device_offline opens or clears at `now_ms`; None if it stays as it is."""
        rare = device.rare or RARE_DEFAULTS  # judged on every tick while offline: no calls
        drops = rare.drops_ms
        if not rare.offline_open:
            if device.online or not drops:
                return None
            if len(drops) > self.flap_drops:
                recent = self._recent(drops, now_ms)
                if len(recent) > self.flap_drops:
                    span_s = (now_ms - recent[0]) // 1000
                    why = f"connection unstable: {len(recent)} drops in {span_s} s"
                    return Verdict("open", why)
            offline_ms = now_ms - drops[-1]
            if offline_ms < self.offline_dwell_ms:
                return None
            how = "reported power off" if rare.powered_off else "reported offline"
            limit_s = self.offline_dwell_ms // 1000
            return Verdict("open", f"offline for {offline_ms // 1000} s ({how}; limit {limit_s} s)")
        if not device.online:
            return None
        # `came_online` always sets it; a missing value starts the dwell now.
        since = now_ms if rare.online_since_ms is None else rare.online_since_ms
        if now_ms - since < self.online_dwell_ms or len(self._recent(drops, now_ms)) > 1:
            return None
        return Verdict("clear", f"back online for {(now_ms - since) // 1000} s, connection steady")

    def _recent(self, drops: tuple[int, ...], now_ms: int) -> tuple[int, ...]:
        return tuple(at for at in drops if now_ms - at < self.flap_window_ms)


def protection_causes(device: DeviceState, now_ms: int, silence_ms: int) -> list[ProtectionCause]:
    """Why a victim device cannot protect its victim now (empty: it can). A device never heard
    has no silence yet: it is judged from its first fix on."""
    causes: list[ProtectionCause] = []
    if device.last_heard_ms is not None and now_ms - device.last_heard_ms > silence_ms:
        causes.append("silent")
    if device.offline_open:
        causes.append("offline")
    if device.battery_low:
        causes.append("battery_low")
    return causes


def describe_causes(
    device: DeviceState, causes: list[ProtectionCause], now_ms: int, silence_ms: int
) -> str:
    """The causes in words, never a position: "no fix for 312 s (limit 300 s); offline"."""
    words: list[str] = []
    for cause in causes:
        if cause == "silent" and device.last_heard_ms is not None:
            silent_s = (now_ms - device.last_heard_ms) // 1000
            words.append(f"no fix for {silent_s} s (limit {silence_ms // 1000} s)")
        elif cause == "offline":
            words.append("offline")
        elif cause == "battery_low":
            level = "" if device.batt is None else f" ({device.batt}%)"
            words.append(f"battery low{level}")
    return "; ".join(words)

"""Battery charge over time: a steady drain, charging windows, clamped to 0-100 %.

A pure function of time (recomputed from the start on every call: scenarios have a handful of
windows), so it needs no state and gives the same answer whatever order it is asked in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Charging:
    """On the charger from `from_s` to `to_s`, gaining `pct_per_h` (the drain stops meanwhile)."""

    from_s: float
    to_s: float
    pct_per_h: float


class Battery:
    def __init__(
        self, start_pct: float, drain_pct_per_h: float, charging: Sequence[Charging] = ()
    ) -> None:
        self.start_pct = start_pct
        self.drain_pct_per_h = drain_pct_per_h
        self.charging = sorted(charging, key=lambda c: c.from_s)

    def level_at(self, t_s: float) -> float:
        """Charge in percent at `t_s` (unrounded)."""
        level = self.start_pct
        t = 0.0
        for window in self.charging:
            if window.from_s >= t_s:
                break
            level = self._clamp(level - self.drain_pct_per_h * (window.from_s - t) / 3600.0)
            end = min(window.to_s, t_s)
            level = self._clamp(level + window.pct_per_h * (end - window.from_s) / 3600.0)
            t = end
        if t_s > t:
            level = self._clamp(level - self.drain_pct_per_h * (t_s - t) / 3600.0)
        return level

    def at(self, t_s: float) -> int:
        """What the device reports (`batt`): whole percent."""
        return round(self.level_at(t_s))

    @staticmethod
    def _clamp(level: float) -> float:
        return max(0.0, min(100.0, level))

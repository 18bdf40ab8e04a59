"""A device's own clock: the true time plus a fixed offset and a drift (a cheap crystal), and
the odd glitch (a GNSS time fix gone wrong) that puts one fix far off."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClockSkew:
    offset_s: float = 0.0
    """Constant error: positive runs ahead of the true time."""
    drift_ppm: float = 0.0
    """Error growing with time: 20 ppm is 1.7 s a day."""

    def stamp(self, true_ms: int, t_s: float) -> int:
        """What the device writes in `ts` when the true time is `true_ms` (`t_s` into the run)."""
        return true_ms + round(self.offset_s * 1000.0 + self.drift_ppm * t_s * 1e-3)


@dataclass(frozen=True, slots=True)
class ClockGlitch:
    """The first fix measured at or after `at_s` is stamped `offset_s` off; the next is right."""

    at_s: float
    offset_s: float

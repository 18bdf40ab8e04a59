"""nabij's clock: epoch milliseconds, the wall clock unless a simulation asks for its own.

A simulation (settings `[clock]`, never in production) runs nabij on a scenario's clock: `speed`
times faster than the wall from an anchor, `anchor_ms + speed * (wall_ms - anchor_ms)`. The
simulator's devices stamp their messages with the same mapping (`simulators.scheduler.SimClock`),
so device time and nabij's time agree, and every timer, dwell, age and velocity nabij judges on
its own clock follows the scenario at any speed. Waits the shells do on the wall shrink by the
same factor (`Timescale.wall_s`).

`Timescale` is the whole of the clock math, pure; `scaled_clock` binds it to the wall clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Timescale", "scaled_clock", "wall_clock_ms"]


def wall_clock_ms() -> int:
    """The wall clock, epoch milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Timescale:
    """A clock running `speed` times faster than the wall, equal to it at `anchor_ms`."""

    speed: float = 1.0
    anchor_ms: int = 0

    def __post_init__(self) -> None:
        if not (self.speed > 0 and math.isfinite(self.speed)):
            raise ValueError(f"speed must be a positive finite number, not {self.speed!r}")

    def at(self, wall_ms: int) -> int:
        """This clock's epoch ms when the wall clock reads `wall_ms`."""
        return self.anchor_ms + round(self.speed * (wall_ms - self.anchor_ms))

    def wall_s(self, clock_s: float) -> float:
        """Wall seconds that `clock_s` seconds of this clock take."""
        return clock_s / self.speed


def scaled_clock(
    timescale: Timescale, wall_ms: Callable[[], int] = wall_clock_ms
) -> Callable[[], int]:
    """A clock callable (epoch ms) for `timescale`: the wall clock itself at speed 1."""
    if timescale.speed == 1.0:
        return wall_ms
    return lambda: timescale.at(wall_ms())

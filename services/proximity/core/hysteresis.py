"""The ring state machine: outside -> entering -> inside -> exiting -> outside, on device time.

Entering needs the distance to stay within the ring for the enter dwell (or to fall under the
critical distance); leaving needs it to stay beyond ring + exit margin for the exit dwell. A
distance that wobbles by less than the exit margin around the ring can therefore open at most once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from nabij.contract import AlarmKind
from nabij.settings import ProximitySettings
from services.proximity.core.accuracy import Reading
from services.proximity.core.state import RingState

Transition = Literal["opened", "cleared"]

MIN_EXIT_MARGIN_M: Final = 50.0
EXIT_MARGIN_FRACTION: Final = 0.1


@dataclass(frozen=True, slots=True)
class RingParams:
    kind: AlarmKind
    ring_m: float
    exit_margin_m: float
    enter_dwell_ms: int
    exit_dwell_ms: int
    critical_m: float

    @property
    def exit_m(self) -> float:
        return self.ring_m + self.exit_margin_m

    @classmethod
    def build(cls, kind: AlarmKind, ring_m: float, settings: ProximitySettings) -> RingParams:
        margin = settings.exit_margin_m
        if margin is None:
            margin = max(MIN_EXIT_MARGIN_M, EXIT_MARGIN_FRACTION * ring_m)
        return cls(
            kind=kind,
            ring_m=ring_m,
            exit_margin_m=margin,
            enter_dwell_ms=round(settings.enter_dwell_s * 1000),
            exit_dwell_ms=round(settings.exit_dwell_s * 1000),
            critical_m=settings.critical_m,
        )


def step(
    state: RingState, reading: Reading | float, t_ms: int, params: RingParams
) -> tuple[RingState, Transition | None]:
    """Advance one ring by one observation at device time `t_ms` (never earlier than the last).

    `reading` is a plain distance (entry and exit decided on it alike) or a `Reading` from the
    accuracy rule. A reading that is not `fine` never moves the ring outward: it cannot cancel
    an entry dwell, start an exit or clear; nor can it open at once under the critical distance.
    One not `confirmed` cannot open at all (critical distance or dwell): it may start the dwell.
    Returns the same `state` object when nothing changed.
    """
    if isinstance(reading, Reading):
        enter_m, exit_m = reading.enter_m, reading.exit_m
        fine, may_open, confirmed = reading.fine, reading.may_open, reading.confirmed
    else:
        enter_m = exit_m = reading
        fine = may_open = confirmed = True
    phase = state.phase
    if phase in ("outside", "entering"):
        if enter_m > params.ring_m or not may_open:
            if phase == "outside" or not fine:
                return state, None
            return RingState("outside", t_ms), None
        if not confirmed:
            # Perhaps a multipath jump: the dwell may start, the open waits for the next fix.
            return (RingState("entering", t_ms), None) if phase == "outside" else (state, None)
        # Within the ring: a critical distance, a zero dwell, or a dwell served opens at once.
        if (
            (fine and enter_m < params.critical_m)
            or params.enter_dwell_ms <= 0
            or (phase == "entering" and t_ms - state.since_ts >= params.enter_dwell_ms)
        ):
            return RingState("inside", t_ms, enter_m), "opened"
        if phase == "outside":
            return RingState("entering", t_ms), None
        return state, None
    if exit_m <= params.exit_m:
        if phase == "exiting":
            # Back within the margin: still the same open condition, no new signal.
            return RingState("inside", t_ms, state.reported_m), None
        return state, None
    if not fine:
        return state, None  # a poor fix never clears, nor starts the exit dwell
    if params.exit_dwell_ms <= 0 or (
        phase == "exiting" and t_ms - state.since_ts >= params.exit_dwell_ms
    ):
        return RingState("outside", t_ms), "cleared"
    if phase == "inside":
        return RingState("exiting", t_ms, state.reported_m), None
    return state, None

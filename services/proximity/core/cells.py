"""What the offender's device is told is judged on the victim's grid cell, never on her position.

Every byte sent to the offender (his `warn` levels, his fix interval, and when they are sent) is
a function of his own fixes and of the cell her position falls in (and of whether a fix of the
pair lies off its track: like the jump filter, her own track's business): two positions of hers
in one cell give him the very same commands, so his own track and his warnings cannot place her
closer than the cell (docs/privacy.md). His rings are the order's rings enlarged by the worst snap
error, so every warning judged on her exact position is still given to him, at the same fix or
earlier.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Final

from services.proximity.core.accuracy import Reading, entry_m
from services.proximity.core.hysteresis import RingParams

METRES_PER_DEGREE: Final = 111_320.0
"""Of latitude, and of longitude at the equator: the grid's unit (a nominal figure)."""
SNAP_SLACK: Final = 1.02
"""The cells' real sides differ from `cell_m` by the ellipsoid and by cos(latitude) across a row:
under 1% up to latitude 80 for cells up to 5 km. The 2% covers it, so the bound is never short."""


@dataclass(frozen=True, slots=True)
class SnapGrid:
    """Rows of `cell_m` metres of latitude; each row cut into cells of `cell_m` metres of
    longitude at its centre latitude. Deterministic: a position always snaps to the same centre."""

    cell_m: float

    @property
    def worst_error_m(self) -> float:
        """How far a position can be from its cell's centre: half the diagonal, with slack."""
        return self.cell_m * math.sqrt(0.5) * SNAP_SLACK

    def centre(self, lat: float, lon: float) -> tuple[float, float]:
        """The centre (lat, lon) of the cell that holds (lat, lon)."""
        row_deg = self.cell_m / METRES_PER_DEGREE
        centre_lat = (math.floor(lat / row_deg) + 0.5) * row_deg
        # Rows near a pole are clamped: their cells stay finite (nobody is protected there).
        col_deg = row_deg / max(math.cos(math.radians(centre_lat)), 0.01)
        return centre_lat, (math.floor(lon / col_deg) + 0.5) * col_deg


def offender_ring(params: RingParams, error_m: float) -> RingParams:
    """The ring the offender is warned on: the order's ring (and critical distance) enlarged by
    the worst snap error, so a cell centre within it includes every position within the real one."""
    return dataclasses.replace(
        params, ring_m=params.ring_m + error_m, critical_m=params.critical_m + error_m
    )


def cell_reading(
    cell_m: float,
    uncertainty_m: float,
    ring: RingParams,
    real: RingParams,
    *,
    off_track: bool = False,
) -> Reading:
    """What the offender's `ring` sees at distance `cell_m` from her cell's centre.

    Fine and may-open follow the `real` ring (`accuracy.ring_reading`), so a fix too coarse for
    the real ring is too coarse here as well: his ring never moves outward while hers cannot.
    While a fix of the pair lies `off_track`, the real ring keeps an entry dwell if where that
    track led is within it (`accuracy.off_track_reading`). His cannot see where her track led
    (it is finer than her cell), so his ring then never moves outward: it cancels no dwell, or
    the real alarm could open with his merely entering, and starts no exit, or it could clear
    while hers is kept entering."""
    fine = uncertainty_m <= real.ring_m
    enter_m = entry_m(cell_m, uncertainty_m, ring.ring_m)
    return Reading(
        enter_m,
        cell_m - uncertainty_m,
        fine and not (off_track and enter_m > ring.ring_m),
        fine or real.kind == "proximity_pre_alert",
    )


def beyond(distance_m: float, uncertainty_m: float, ring: RingParams, error_m: float) -> bool:
    """Whether her cell's centre is certainly beyond the offender's `ring`, known from the exact
    `distance_m` alone (the centre lies within `error_m` of her): the far-apart shortcut then
    skips the cell's geodesic, and the ring, outside, would not have moved anyway. It implies
    that she is beyond the real ring too (`ring` is the larger, its entry margin no smaller)."""
    return entry_m(distance_m - error_m, uncertainty_m, ring.ring_m) > ring.ring_m

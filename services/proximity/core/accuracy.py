"""How sure one comparison is: per-source accuracy floors, the distances that decide entry and
exit of a ring, and the probability that the pair is really inside it.

The rule (justified in docs/proximity.md):
- Both fixes' accuracy radii, each raised to its source's floor, add up to the uncertainty `U`.
- Entry is decided on `d - min(U, ring/2)`: a plausible approach is never ignored, yet a coarse
  fix cannot pull a pair in from arbitrarily far away.
- Exit is decided on `d - U`, the closest the two could really be: a poor fix can never clear.
- A reading whose `U` exceeds the ring is *coarse* for that ring: it can open only the pre-alert
  ring (attention, with its low confidence stated), never the alarm ring, never at once under the
  critical distance, and it never moves a ring outward (no clear, no cancelled dwell).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final

from nabij.contract import PositionSource

# A fix claiming to be finer than its source can be is not believed: the radius is raised to this.
SOURCE_FLOOR_M: Final[dict[PositionSource, float]] = {"gnss": 0.0, "wifi": 20.0, "cell": 300.0}
ENTRY_SHARE: Final = 0.5
"""Entry uses at most this share of the ring as benefit of the doubt."""
R68: Final = math.sqrt(-2.0 * math.log(1.0 - 0.68))
"""A 2-D Gaussian error with per-axis sigma s falls within R68 * s 68% of the time (1.5096)."""
_TAIL: Final = 8.0  # integration bounds in sigmas: beyond, the density is below 1e-14


def effective_acc(acc: float, src: PositionSource | None) -> float:
    """The accuracy radius nabij believes: the reported one, at least the source's floor."""
    if src is None:
        return acc
    floor = SOURCE_FLOOR_M[src]
    return acc if acc >= floor else floor


@dataclass(slots=True)  # not frozen: built on every comparison, and frozen init costs ~4x
class Reading:
    """What one ring (or zone) sees of one comparison."""

    enter_m: float
    """Compared with the ring to enter it, and with the critical distance to open at once."""
    exit_m: float
    """Compared with ring + exit margin to leave it: the pessimistic distance."""
    fine: bool = True
    """False: too coarse to move the ring outward or to open it at once."""
    may_open: bool = True
    """False: this reading cannot open this ring at all (a coarse fix and the alarm ring)."""
    confirmed: bool = True
    """False: a fix of the pair lies off its device's track (`motion.on_track`), perhaps a
    multipath jump: the entry dwell may start on it, but the ring opens only on a later one."""


def off_track_reading(
    measured: Reading, led: Reading | None, ring_m: float, *, entering: bool
) -> Reading:
    """The reading of a comparison in which a fix lies off its device's track, given where the
    track led (`led`: that fix replaced by it; None when unknown). The ring acts on what the two
    agree on: both within it, it may open, on the farther entry distance (a jump never brings an
    open nearer, nor under the critical distance); both beyond, the fix counts as usual. When
    only the fix is within, it is unconfirmed (the dwell may start, the open waits); when only
    the track is and the ring is `entering`, the fix cancels no dwell. Exits are untouched."""
    if led is None:
        return replace(measured, confirmed=False)
    led_in = led.may_open and led.enter_m <= ring_m
    measured_in = measured.enter_m <= ring_m
    if led_in and measured_in:
        return replace(
            measured, enter_m=max(measured.enter_m, led.enter_m), fine=measured.fine and led.fine
        )
    if led_in and entering:
        return replace(measured, fine=False)
    if measured_in:
        return replace(measured, confirmed=False)
    return measured


def entry_m(distance_m: float, uncertainty_m: float, size_m: float) -> float:
    """The distance that decides entry: the measured one less the benefit of the doubt, at most
    `ENTRY_SHARE` of the ring (or zone) size."""
    return distance_m - min(uncertainty_m, ENTRY_SHARE * size_m)


def ring_reading(
    distance_m: float, uncertainty_m: float, ring_m: float, *, pre_alert: bool
) -> Reading:
    fine = uncertainty_m <= ring_m
    return Reading(
        entry_m(distance_m, uncertainty_m, ring_m),
        distance_m - uncertainty_m,
        fine,
        fine or pre_alert,
    )


def zone_reading(signed_m: float, acc_m: float, size_m: float) -> Reading:
    """What a zone's ring sees of a fix `signed_m` from its boundary (negative inside): a coarse
    fix may open the zone only when it is certainly inside."""
    fine = acc_m <= size_m
    return Reading(
        entry_m(signed_m, acc_m, size_m), signed_m - acc_m, fine, fine or signed_m + acc_m <= 0.0
    )


def sigma_m(acc_a: float, acc_b: float) -> float:
    """Per-axis standard deviation of the difference of two fixes with these 68% radii."""
    return math.hypot(acc_a, acc_b) / R68


def inside_probability(distance_m: float, ring_m: float, sigma: float) -> float:
    """P(true distance <= ring) when the measured offset is `distance_m` and the offset error is
    a circular Gaussian with per-axis `sigma`: the Rice distribution's CDF, integrated with
    Simpson's rule over +-8 sigma around the measured distance."""
    if sigma <= 0.0:
        return 1.0 if distance_m <= ring_m else 0.0
    lo = max(0.0, distance_m - _TAIL * sigma)
    hi = distance_m + _TAIL * sigma
    if hi <= ring_m:
        return 1.0  # the whole distribution lies within the ring
    hi = ring_m
    if hi <= lo:
        return 0.0
    steps = 64
    width = (hi - lo) / steps
    total = 0.0
    for i in range(steps + 1):
        r = lo + i * width
        weight = 1.0 if i in (0, steps) else (4.0 if i % 2 else 2.0)
        total += weight * _rice_pdf(r, distance_m, sigma)
    return max(0.0, min(1.0, total * width / 3.0))


def zone_inside_probability(signed_m: float, acc: float) -> float:
    """P(really inside a zone) for a fix `signed_m` from its boundary (negative inside), with the
    boundary taken as straight: a 1-D normal across it."""
    sigma = acc / R68
    if sigma <= 0.0:
        return 1.0 if signed_m <= 0.0 else 0.0
    return 0.5 * math.erfc(signed_m / (sigma * math.sqrt(2.0)))


def _rice_pdf(r: float, nu: float, sigma: float) -> float:
    s2 = sigma * sigma
    return r / s2 * math.exp(-((r - nu) ** 2) / (2.0 * s2)) * _i0e(r * nu / s2)


def _i0e(x: float) -> float:
    """exp(-x) * I0(x) for x >= 0 (Abramowitz and Stegun 9.8.1-9.8.2, error below 2e-7)."""
    if x <= 3.75:
        t = (x / 3.75) ** 2
        i0 = 1.0 + t * (
            3.5156229
            + t * (3.0899424 + t * (1.2067492 + t * (0.2659732 + t * (0.0360768 + t * 0.0045813))))
        )
        return i0 * math.exp(-x)
    t = 3.75 / x
    poly = 0.39894228 + t * (
        0.01328592
        + t
        * (
            0.00225319
            + t
            * (
                -0.00157565
                + t
                * (
                    0.00916281
                    + t * (-0.02057706 + t * (0.02635537 + t * (-0.01647633 + t * 0.00392377)))
                )
            )
        )
    )
    return poly / math.sqrt(x)

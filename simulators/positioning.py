"""Where a position comes from: GNSS under open sky, or network fallback (wifi, cell) indoors.

Indoors a receiver loses the sky. Devices then report a network position: wifi (access points
seen, 20-50 m) or cell (towers, 300-1500 m), or nothing at all. A network position is wrong by an
offset that depends on where the device is (which access points or towers it hears), so its
error is strongly correlated over time; and unlike multipath the device *knows* it is coarse, so
the reported `acc` tracks the real error: each stay indoors draws an accuracy level in the
source's range, and the error is a 2-D normal whose 68% radius is that level. Every draw comes
from a seeded generator: same seed, same readings.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final, Literal

from nabij.contract import PositionSource
from simulators.noise import ACC_PER_SIGMA, GnssNoise, NoiseParams, derive_seed

Sky = Literal["open", "wifi", "cell", "none"]
"""What the device can use at a moment: GNSS, a network fallback, or nothing."""

FallbackSource = Literal["wifi", "cell"]
FALLBACK_ACC_M: Final[dict[FallbackSource, tuple[float, float]]] = {
    "wifi": (20.0, 50.0),
    "cell": (300.0, 1500.0),
}
# The offset changes as the set of access points / towers heard changes: slowly.
FALLBACK_CORRELATION_S: Final[dict[FallbackSource, float]] = {"wifi": 120.0, "cell": 600.0}


@dataclass(frozen=True, slots=True)
class Reading:
    """The error of one position fix and what the device says about it."""

    east_m: float
    north_m: float
    acc_m: float
    src: PositionSource
    jumping: bool = False

    @property
    def error_m(self) -> float:
        return math.hypot(self.east_m, self.north_m)


class NetworkFallback:
    """Network positioning of one source: a Gauss-Markov offset per stay, honest `acc`."""

    def __init__(self, src: FallbackSource, seed: int) -> None:
        self.src = src
        self._rng = random.Random(seed)
        self._correlation_s = FALLBACK_CORRELATION_S[src]
        self._t: float | None = None
        self.acc_m = 0.0
        self._sigma = 0.0
        self._east = self._north = 0.0

    def begin(self, t_s: float) -> None:
        """A new stay (the device moved indoors): new access points, new accuracy level."""
        low, high = FALLBACK_ACC_M[self.src]
        self.acc_m = self._rng.uniform(low, high)
        self._sigma = self.acc_m / ACC_PER_SIGMA
        self._east = self._rng.gauss(0.0, self._sigma)
        self._north = self._rng.gauss(0.0, self._sigma)
        self._t = t_s

    def sample(self, t_s: float) -> Reading:
        if self._t is None:
            self.begin(t_s)
        else:
            phi = math.exp(-max(0.0, t_s - self._t) / self._correlation_s)
            innovation = self._sigma * math.sqrt(1.0 - phi * phi)
            self._east = phi * self._east + self._rng.gauss(0.0, innovation)
            self._north = phi * self._north + self._rng.gauss(0.0, innovation)
            self._t = t_s
        return Reading(self._east, self._north, round(self.acc_m, 1), self.src)


class Receiver:
    """GNSS (`simulators.noise`) when the sky is open, else the device's network fallback."""

    def __init__(self, params: NoiseParams, seed: int) -> None:
        self.params = params
        self.gnss = GnssNoise(params, seed)
        self._fallbacks: dict[FallbackSource, NetworkFallback] = {
            src: NetworkFallback(src, derive_seed(seed, f"fallback-{src}"))
            for src in FALLBACK_ACC_M
        }
        self._last_sky: Sky = "open"

    def sample(self, t_s: float, sky: Sky = "open") -> Reading | None:
        """The error at `t_s` under `sky`; None when there is no position at all."""
        previous, self._last_sky = self._last_sky, sky
        if sky == "none":
            return None
        if sky == "open":
            error = self.gnss.sample(t_s)
            return Reading(error.east_m, error.north_m, error.acc_m, self.params.src, error.jumping)
        fallback = self._fallbacks[sky]
        if previous != sky:
            fallback.begin(t_s)
        return fallback.sample(t_s)

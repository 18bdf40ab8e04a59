"""A seeded GNSS error model: correlated error per axis, honest accuracy, occasional jumps.

Real receiver error is not white: it wanders slowly (atmosphere, satellite geometry), so
consecutive fixes are wrong in nearly the same direction. Each horizontal axis is a first-order
Gauss-Markov process (the exact discretisation of an Ornstein-Uhlenbeck process), which stays
correct for irregular sample times, e.g. after a `set_interval` command.

The reported `acc` is the radius that holds the true error ~68% of the time (as Android and
OwnTracks define it): with independent normal axes of deviation sigma the error radius is
Rayleigh distributed, so that radius is sigma * sqrt(-2 ln 0.32) ~ 1.51 sigma.

Multipath jumps are gross errors the receiver does not notice: while one lasts the position is
tens to hundreds of metres off and `acc` does not grow. That is what real devices do, and what
nabij must survive (a walker shown at 127 km/h).
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Final

from nabij.contract import PositionSource

ACC_QUANTILE: Final = 0.68
# Radius of the circle holding ACC_QUANTILE of a 2-D isotropic normal error, per unit sigma.
ACC_PER_SIGMA: Final = math.sqrt(-2.0 * math.log(1.0 - ACC_QUANTILE))


@dataclass(frozen=True, slots=True)
class NoiseParams:
    """Parameters of the error model; `sigma_m` is the standard deviation per axis."""

    sigma_m: float = 3.0
    correlation_s: float = 30.0
    jump_rate_per_h: float = 0.0
    jump_m: float = 150.0
    jump_duration_s: float = 20.0
    # < 1: the receiver claims to be better than it is (a common firmware sin).
    acc_scale: float = 1.0
    src: PositionSource = "gnss"

    def __post_init__(self) -> None:
        if self.sigma_m < 0 or self.correlation_s <= 0 or self.jump_rate_per_h < 0:
            raise ValueError("sigma_m >= 0, correlation_s > 0 and jump_rate_per_h >= 0 required")
        if self.jump_m < 0 or self.jump_duration_s < 0 or self.acc_scale <= 0:
            raise ValueError("jump_m >= 0, jump_duration_s >= 0 and acc_scale > 0 required")

    @property
    def acc_m(self) -> float:
        """The accuracy radius the device reports."""
        return self.sigma_m * ACC_PER_SIGMA * self.acc_scale


@dataclass(frozen=True, slots=True)
class NoiseSample:
    east_m: float
    north_m: float
    acc_m: float
    jumping: bool

    @property
    def error_m(self) -> float:
        return math.hypot(self.east_m, self.north_m)


def derive_seed(seed: int, name: str) -> int:
    """A stable per-device seed (Python's `hash` is salted per process, so not that)."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class GnssNoise:
    """The error of one receiver over time; sample it at non-decreasing times."""

    def __init__(self, params: NoiseParams, seed: int) -> None:
        self.params = params
        self._rng = random.Random(seed)
        # Start in the stationary distribution: the receiver has been on for a while.
        self._east = self._rng.gauss(0.0, params.sigma_m)
        self._north = self._rng.gauss(0.0, params.sigma_m)
        self._t: float | None = None
        self._jump_until = -math.inf
        self._jump_east = 0.0
        self._jump_north = 0.0

    def sample(self, t_s: float) -> NoiseSample:
        p = self.params
        if self._t is not None:
            dt = t_s - self._t
            if dt < 0:
                raise ValueError(f"noise sampled backwards in time: {t_s} < {self._t}")
            phi = math.exp(-dt / p.correlation_s)
            innovation = p.sigma_m * math.sqrt(1.0 - phi * phi)
            self._east = phi * self._east + self._rng.gauss(0.0, innovation)
            self._north = phi * self._north + self._rng.gauss(0.0, innovation)
            self._maybe_jump(t_s, dt)
        self._t = t_s
        jumping = t_s < self._jump_until
        east, north = self._east, self._north
        if jumping:
            east += self._jump_east
            north += self._jump_north
        return NoiseSample(east, north, p.acc_m, jumping)

    def _maybe_jump(self, t_s: float, dt: float) -> None:
        p = self.params
        if p.jump_rate_per_h <= 0 or t_s < self._jump_until:
            return
        # Poisson arrivals: probability of at least one jump start within dt.
        if self._rng.random() < 1.0 - math.exp(-p.jump_rate_per_h * dt / 3600.0):
            direction = self._rng.uniform(0.0, 2.0 * math.pi)
            size = p.jump_m * self._rng.uniform(0.5, 1.5)
            self._jump_east = size * math.sin(direction)
            self._jump_north = size * math.cos(direction)
            self._jump_until = t_s + p.jump_duration_s

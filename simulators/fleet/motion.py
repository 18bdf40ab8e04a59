"""Vectorised movement and GNSS error of a whole fleet (numpy), updated a slice at a time.

The same model as a scenario device (`simulators.noise`): a Gauss-Markov error per axis with
deviation `sigma_m` and correlation time `correlation_s`, an honest `acc` (1.51 sigma), and
multipath jumps arriving as a Poisson process that the `acc` does not show. Movement: each
device travels at its own speed (walking, cycling, driving) to a random point of the city, stops
there a while, and picks the next; most victims stay home. An approaching pair's victim stays
home and her offender shuttles: from a few alarm distances away to her door, a while there, away
again to another point a few alarm distances off, and back (the alarm path, over and over).
Reported speed and heading come from the true velocity plus a Doppler error per axis, so a
device at rest reports a small speed in a random direction, as a receiver does. Positions are
local metres on a plane through the centre of the box (a few centimetres off over a city, far
below the GNSS error).
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

from simulators.fleet.plan import FleetPlan
from simulators.noise import ACC_PER_SIGMA, NoiseParams

METRES_PER_DEG_LAT: Final = 111_320.0
SPEEDS_MPS: Final = (1.4, 4.5, 11.0)  # walking, cycling, driving in town
# The scenario devices' error model, with the fleet's settings: one set of parameters for both.
NOISE: Final = NoiseParams(sigma_m=4.0, jump_rate_per_h=1.0)
MOVING_VICTIMS: Final = 0.3
MAX_DWELL_S: Final = 1800.0
# Doppler velocity error per axis (m/s): typical of a consumer GNSS receiver.
VELOCITY_SIGMA_MPS: Final = 0.2
# An approaching offender turns back between these multiples of the alarm distance.
APPROACH_FROM: Final = (2.0, 5.0)

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


class FleetMotion:
    """Every device's true position, motion and current GNSS error, as arrays by device index."""

    def __init__(self, plan: FleetPlan, seed: int) -> None:
        south, west, north, east = plan.bbox
        self.lat0 = (south + north) / 2
        self.lon0 = (west + east) / 2
        self.m_per_deg_lon = METRES_PER_DEG_LAT * math.cos(math.radians(self.lat0))
        self.half_w = (east - west) / 2 * self.m_per_deg_lon
        self.half_h = (north - south) / 2 * METRES_PER_DEG_LAT
        self.interval_s = plan.interval_s
        n = plan.devices
        self.rng = np.random.default_rng(seed)
        self.x = self.rng.uniform(-self.half_w, self.half_w, n)
        self.y = self.rng.uniform(-self.half_h, self.half_h, n)
        self.tx, self.ty = self._random_points(n)
        self.speed = self.rng.choice(np.array(SPEEDS_MPS), n)
        victims = np.arange(n) >= plan.pairs
        # A victim who stays home never leaves: her target is where she is.
        home = victims & (self.rng.random(n) >= MOVING_VICTIMS)
        self.tx[home], self.ty[home] = self.x[home], self.y[home]
        self.home = home
        self.alarm_m = plan.alarm_m
        self.pairs = plan.pairs
        # Offenders of the first pairs approach; their victims stay home.
        chasers = np.arange(plan.approaching_pairs)
        chased = chasers + plan.pairs
        self.chaser = np.zeros(n, dtype=bool)
        self.chaser[chasers] = True
        self.home[chased] = True
        self.tx[chased], self.ty[chased] = self.x[chased], self.y[chased]
        self.x[chasers], self.y[chasers] = self._near_victim(chasers)
        self.tx[chasers], self.ty[chasers] = self.x[chased], self.y[chased]
        self.bound_for_victim = self.chaser.copy()
        self.dwell_left = np.zeros(n)
        self.heading = np.zeros(n)
        self.moving = np.zeros(n, dtype=bool)
        self.ex = self.rng.normal(0.0, NOISE.sigma_m, n)
        self.ey = self.rng.normal(0.0, NOISE.sigma_m, n)
        self.jump_left = np.zeros(n)
        self.jx = np.zeros(n)
        self.jy = np.zeros(n)
        self.acc_m = NOISE.sigma_m * ACC_PER_SIGMA
        self.phi = math.exp(-self.interval_s / NOISE.correlation_s)
        self.innovation = NOISE.sigma_m * math.sqrt(1.0 - self.phi * self.phi)
        self.jump_p = 1.0 - math.exp(-NOISE.jump_rate_per_h * self.interval_s / 3600.0)

    def _random_points(self, k: int) -> tuple[Floats, Floats]:
        return (
            self.rng.uniform(-self.half_w, self.half_w, k),
            self.rng.uniform(-self.half_h, self.half_h, k),
        )

    def _near_victim(self, offenders: Ints) -> tuple[Floats, Floats]:
        """Points a few alarm distances from the victims of `offenders`, in random directions."""
        k = offenders.size
        reach = self.alarm_m * self.rng.uniform(*APPROACH_FROM, k)
        angle = self.rng.uniform(0.0, 2 * math.pi, k)
        victims = offenders + self.pairs
        return (
            self.x[victims] + reach * np.sin(angle),
            self.y[victims] + reach * np.cos(angle),
        )

    def step(self, idx: Ints) -> tuple[Floats, Floats, Floats, Floats]:
        """Advance devices `idx` by one interval; (lat, lon, speed, heading) as measured."""
        dt = self.interval_s
        self._move(idx, dt)
        self._noise(idx, dt)
        ex = self.ex[idx] + np.where(self.jump_left[idx] > 0, self.jx[idx], 0.0)
        ey = self.ey[idx] + np.where(self.jump_left[idx] > 0, self.jy[idx], 0.0)
        lat = self.lat0 + (self.y[idx] + ey) / METRES_PER_DEG_LAT
        lon = self.lon0 + (self.x[idx] + ex) / self.m_per_deg_lon
        true_speed = np.where(self.moving[idx], self.speed[idx], 0.0)
        course = np.radians(self.heading[idx])
        k = idx.size
        vx = true_speed * np.sin(course) + self.rng.normal(0.0, VELOCITY_SIGMA_MPS, k)
        vy = true_speed * np.cos(course) + self.rng.normal(0.0, VELOCITY_SIGMA_MPS, k)
        return lat, lon, np.hypot(vx, vy), np.degrees(np.arctan2(vx, vy)) % 360.0

    def _move(self, idx: Ints, dt: float) -> None:
        dwelling = self.dwell_left[idx] > 0
        self.dwell_left[idx] = np.maximum(0.0, self.dwell_left[idx] - dt)
        dx = self.tx[idx] - self.x[idx]
        dy = self.ty[idx] - self.y[idx]
        dist = np.hypot(dx, dy)
        reach = self.speed[idx] * dt
        go = ~dwelling & (dist > 0)
        arrive = go & (reach >= dist)
        frac = np.where(go & ~arrive, reach / np.maximum(dist, 1e-9), 1.0)
        self.x[idx] = np.where(go, self.x[idx] + dx * frac, self.x[idx])
        self.y[idx] = np.where(go, self.y[idx] + dy * frac, self.y[idx])
        self.moving[idx] = go & ~arrive
        self.heading[idx] = np.where(go, np.degrees(np.arctan2(dx, dy)) % 360.0, self.heading[idx])
        done = idx[arrive & ~self.home[idx]]
        if done.size:
            # Arrived: stay a while, then head for a new random point of the city; an approaching
            # offender turns back to a point near her, or from there heads for her door again.
            self.dwell_left[done] = self.rng.uniform(0.0, MAX_DWELL_S, done.size)
            roam = done[~self.chaser[done]]
            self.tx[roam], self.ty[roam] = self._random_points(roam.size)
            retreat = done[self.chaser[done] & self.bound_for_victim[done]]
            self.tx[retreat], self.ty[retreat] = self._near_victim(retreat)
            again = done[self.chaser[done] & ~self.bound_for_victim[done]]
            self.tx[again], self.ty[again] = self.x[again + self.pairs], self.y[again + self.pairs]
            self.bound_for_victim[done] = self.chaser[done] & ~self.bound_for_victim[done]

    def _noise(self, idx: Ints, dt: float) -> None:
        k = idx.size
        self.ex[idx] = self.phi * self.ex[idx] + self.rng.normal(0.0, self.innovation, k)
        self.ey[idx] = self.phi * self.ey[idx] + self.rng.normal(0.0, self.innovation, k)
        self.jump_left[idx] = np.maximum(0.0, self.jump_left[idx] - dt)
        start = (self.jump_left[idx] <= 0) & (self.rng.random(k) < self.jump_p)
        jumpers = idx[start]
        if jumpers.size:
            angle = self.rng.uniform(0.0, 2 * math.pi, jumpers.size)
            size = NOISE.jump_m * self.rng.uniform(0.5, 1.5, jumpers.size)
            self.jx[jumpers] = size * np.sin(angle)
            self.jy[jumpers] = size * np.cos(angle)
            self.jump_left[jumpers] = NOISE.jump_duration_s

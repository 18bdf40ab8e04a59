"""Scenario keys of one simulated device: route or GPX track, noise, battery, clock, network.

Validated by pydantic (unknown keys are errors); `simulators.scenario` reports every problem
with its key path. `plan()` turns the movement keys into a `Route`.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from nabij.contract import DEVICE_ID_PATTERN, PositionSource
from simulators import geo
from simulators.battery import Battery, Charging
from simulators.device_clock import ClockGlitch, ClockSkew
from simulators.gpx import GpxError, route_from_gpx
from simulators.movement import Route, RouteError, Waypoint
from simulators.noise import NoiseParams

Role = Literal["offender", "victim"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WaypointSpec(Strict):
    """Either an absolute point (`lat`, `lon`) or a move from the previous waypoint
    (`bearing_deg`, `distance_m`)."""

    lat: Annotated[float, Field(ge=-90, le=90)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180)] | None = None
    bearing_deg: Annotated[float, Field(ge=-360, le=360)] | None = None
    distance_m: Annotated[float, Field(ge=0, le=20_000_000)] | None = None
    speed_mps: Annotated[float, Field(gt=0, le=350)] | None = None
    dwell_s: float = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _one_kind(self) -> WaypointSpec:
        absolute = self.lat is not None or self.lon is not None
        relative = self.bearing_deg is not None or self.distance_m is not None
        if absolute and relative:
            raise ValueError("give lat/lon or bearing_deg/distance_m, not both")
        if absolute and (self.lat is None or self.lon is None):
            raise ValueError("lat and lon go together")
        if relative and (self.bearing_deg is None or self.distance_m is None):
            raise ValueError("bearing_deg and distance_m go together")
        if not absolute and not relative:
            raise ValueError("needs lat/lon or bearing_deg/distance_m")
        return self

    @property
    def absolute(self) -> bool:
        return self.lat is not None


class NoiseSpec(Strict):
    """GNSS error model of one device; see `simulators.noise`."""

    sigma_m: float = Field(default=3.0, ge=0, le=10_000)
    correlation_s: float = Field(default=30.0, gt=0)
    jump_rate_per_h: float = Field(default=0.0, ge=0)
    jump_m: float = Field(default=150.0, ge=0)
    jump_duration_s: float = Field(default=20.0, ge=0)
    acc_scale: float = Field(default=1.0, gt=0)
    src: PositionSource = "gnss"

    def params(self) -> NoiseParams:
        return NoiseParams(**self.model_dump())


class WindowSpec(Strict):
    """A stretch of scenario time, [from_s, to_s)."""

    from_s: float = Field(ge=0)
    to_s: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> WindowSpec:
        if self.to_s <= self.from_s:
            raise ValueError("to_s must be later than from_s")
        return self

    def holds(self, t_s: float) -> bool:
        return self.from_s <= t_s < self.to_s


class IndoorSpec(WindowSpec):
    """No GNSS sky: positions come from `fallback` (wifi, cell), or there are none."""

    fallback: Literal["wifi", "cell", "none"] = "wifi"


class ChargingSpec(WindowSpec):
    pct_per_h: float = Field(default=60.0, gt=0)


class GlitchSpec(Strict):
    """One fix stamped far off (a GNSS time glitch): the first measured at or after `at_s`."""

    at_s: float = Field(ge=0)
    offset_s: float = Field(ge=-86_400, le=86_400)


class ClockSpec(Strict):
    offset_s: float = Field(default=0.0, ge=-86_400, le=86_400)
    drift_ppm: float = Field(default=0.0, ge=-1000, le=1000)
    glitches: list[GlitchSpec] = []

    def skew(self) -> ClockSkew:
        return ClockSkew(self.offset_s, self.drift_ppm)

    def glitch_list(self) -> list[ClockGlitch]:
        return [ClockGlitch(g.at_s, g.offset_s) for g in self.glitches]


class DeviceSpec(Strict):
    id: str = Field(pattern=DEVICE_ID_PATTERN)
    role: Role
    interval_s: int = Field(default=60, ge=1, le=3600)
    route: list[WaypointSpec] = []
    gpx: str | None = None
    """A GPX track file (relative to the scenario file) instead of `route`."""
    gpx_start_s: float = Field(default=0.0, ge=0)
    noise: NoiseSpec = NoiseSpec()
    battery_pct: int = Field(default=100, ge=0, le=100)
    battery_drain_pct_per_h: float = Field(default=0.0, ge=0)
    battery_low_pct: int = Field(default=15, ge=0, le=100)
    charging: list[ChargingSpec] = []
    coverage_gaps: list[WindowSpec] = []
    indoors: list[IndoorSpec] = []
    clock: ClockSpec = ClockSpec()
    duplicate_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of messages sent twice, as QoS 1 does when a PUBACK is lost."""
    boot_id: bool = True
    """False: old firmware that sends no boot id (its seq still restarts at 0 on every boot)."""

    @field_validator("gpx")
    @classmethod
    def _resolve_gpx(cls, value: str | None, info: ValidationInfo) -> str | None:
        base = (info.context or {}).get("base_dir")
        if value is None or base is None or Path(value).is_absolute():
            return value
        return str(Path(base) / value)

    @model_validator(mode="after")
    def _route_travels(self) -> DeviceSpec:
        if (self.gpx is None) == (not self.route):
            raise ValueError("give either route or gpx")
        if self.route and not self.route[0].absolute:
            raise ValueError("route[0] must be an absolute point (lat, lon)")
        try:
            self.plan()
        except RouteError as err:
            raise ValueError(f"route[{err.index}]: {err.reason}") from None
        except GpxError as err:
            raise ValueError(f"gpx: {err}") from None
        for name in ("coverage_gaps", "indoors", "charging"):
            windows = sorted(getattr(self, name), key=lambda w: w.from_s)
            for before, after in itertools.pairwise(windows):
                if after.from_s < before.to_s:
                    raise ValueError(f"{name}: windows overlap")
        return self

    def waypoints(self) -> list[Waypoint]:
        """The route with every relative move resolved to an absolute point."""
        out: list[Waypoint] = []
        lat = lon = 0.0
        for spec in self.route:
            if spec.lat is not None and spec.lon is not None:
                lat, lon = spec.lat, spec.lon
            else:
                assert spec.bearing_deg is not None and spec.distance_m is not None
                lat, lon = geo.destination(lat, lon, spec.bearing_deg, spec.distance_m)
            out.append(Waypoint(lat, lon, spec.speed_mps, spec.dwell_s))
        return out

    def plan(self) -> Route:
        if self.gpx is not None:
            return route_from_gpx(Path(self.gpx), self.gpx_start_s)
        return Route(self.waypoints())

    def battery(self) -> Battery:
        return Battery(
            self.battery_pct,
            self.battery_drain_pct_per_h,
            [Charging(c.from_s, c.to_s, c.pct_per_h) for c in self.charging],
        )

"""One case with known truth: what nabij receives, and what really happened.

The devices are the simulators' own models (`DeviceModel`: route, GNSS noise with multipath
jumps, wifi/cell fallback indoors, clock skew) measuring at a fixed interval. They run open loop:
they do not obey nabij's `set_interval` (15 s while near), so every time to alarm here is what
the case's own interval allows, never better than the service gives a real device.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec
import numpy as np

from nabij.config import Config, validate_orders
from nabij.contract import Fix, Topics, encode
from nabij.orders import Order
from nabij.settings import Settings
from services.replay.records import Recorded
from simulators.device_clock import ClockSkew
from simulators.geo import GEOD
from simulators.model import DeviceModel
from simulators.movement import Route
from simulators.noise import NoiseParams
from simulators.positioning import Sky
from simulators.quality.exemption import ZoneExemption

START_MS: Final = round(dt.datetime(2026, 1, 5, 10, tzinfo=dt.UTC).timestamp() * 1000)
"""Every case starts at this true time (a Monday morning)."""
LATENCY_MS: Final = 300
"""From measurement to nabij's receipt of a live fix."""
TRUTH_STEP_S: Final = 1
NEAR_M: Final = 50.0
"""The smallest exit margin: a false alarm while the truth was this close to the ring is an
edge case of the accuracy rule's benefit of the doubt, not an unfounded alarm."""
BACKLOG_MAX: Final = 1000
"""Fixes per uploaded array (the contract's backlog form)."""
TOPICS: Final = Topics("nabij/v1")
THROWN_M: Final = 50.0
"""A fix this much beyond its own `acc` from the truth was thrown (a multipath jump; 3.4 sigma
of the 40 m ring-edge noise, far beyond the open-sky 2-6 m)."""


@dataclass(frozen=True, slots=True)
class Window:
    """[from_s, to_s) of the case's time."""

    from_s: float
    to_s: float

    def holds(self, t_s: float) -> bool:
        return self.from_s <= t_s < self.to_s


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    device_id: str
    route: Route
    noise: NoiseParams
    interval_s: float
    phase_s: float = 0.0
    """First fix at this time: devices are not in step."""
    skew: ClockSkew = field(default_factory=ClockSkew)
    indoors: tuple[tuple[Window, Sky], ...] = ()
    """Windows without sky: positions from `wifi` or `cell`, or none."""
    gaps: tuple[Window, ...] = ()
    """Coverage gaps: fixes measured then are uploaded as one backlog when the gap ends."""

    def sky(self, t_s: float) -> Sky:
        for window, sky in self.indoors:
            if window.holds(t_s):
                return sky
        return "open"

    def gap_at(self, t_s: float) -> Window | None:
        return next((gap for gap in self.gaps if gap.holds(t_s)), None)


@dataclass(frozen=True, slots=True)
class CircleZone:
    name: str
    lat: float
    lon: float
    radius_m: float


@dataclass(frozen=True, slots=True)
class CaseSpec:
    case_id: str
    family: str
    seed: int
    duration_s: float
    offender: DeviceSpec
    victim: DeviceSpec
    alarm_m: float
    pre_alert_m: float
    zones: tuple[CircleZone, ...] = ()
    source: str = "gnss"
    """How positions were obtained, for the false-alarm breakdown (gnss, multipath, wifi, cell)."""
    exemption: ZoneExemption | None = None

    @property
    def order_id(self) -> str:
        return f"ORD-{self.case_id}"


@dataclass(frozen=True, slots=True)
class Ring:
    """Ground truth of one ring (or zone): when the true situation was inside it."""

    kind: str
    """`proximity_pre_alert`, `proximity_alarm` or `zone_alarm:NAME`."""
    breaches: tuple[Window, ...]
    near: tuple[Window, ...] = ()
    """When the truth was within `NEAR_M` beyond the ring: an alarm then is on the edge."""


@dataclass(frozen=True, slots=True)
class Case:
    spec: CaseSpec
    config: Config
    records: list[Recorded]
    truth: tuple[Ring, ...]
    min_distance_m: float
    thrown: dict[str, tuple[float, ...]] = field(default_factory=dict)
    """Device -> case times of its fixes that are `THROWN_M` or more beyond their own `acc` from
    the truth (a multipath jump): positions the receiver claims GNSS-grade and are not."""


def build(spec: CaseSpec, settings: Settings | None = None) -> Case:
    """The messages nabij receives (in received order) and the truth of `spec`."""
    settings = settings or Settings()
    config = Config(directory=Path(__file__).parent, settings=settings, orders=_orders(spec))
    records: list[Recorded] = []
    thrown: dict[str, tuple[float, ...]] = {}
    for device in (spec.offender, spec.victim):
        sent, thrown[device.device_id] = _device_records(spec, device)
        records.extend(sent)
    records.sort(key=lambda r: r.received_ms)
    truth, closest = _truth(spec)
    return Case(spec, config, records, truth, closest, thrown)


def _orders(spec: CaseSpec) -> tuple[Order, ...]:
    order = {
        "id": spec.order_id,
        "offender_device": spec.offender.device_id,
        "victim_devices": [spec.victim.device_id],
        "alarm_m": spec.alarm_m,
        "pre_alert_m": spec.pre_alert_m,
        "zone": [
            {"name": z.name, "lat": z.lat, "lon": z.lon, "radius_m": z.radius_m} for z in spec.zones
        ],
        "exemption": [] if spec.exemption is None else [spec.exemption.order_entry(START_MS)],
    }
    return validate_orders([order], f"quality case {spec.case_id}")


def _device_records(spec: CaseSpec, device: DeviceSpec) -> tuple[list[Recorded], tuple[float, ...]]:
    """The device's messages, and when it measured a fix thrown off the truth (`Case.thrown`)."""
    model = DeviceModel(device.device_id, device.route, device.noise, seed=_seed(spec, device))
    model.boot_as(f"q{spec.seed}")
    model.skew = device.skew
    topic = TOPICS.device(device.device_id, "fix")
    records: list[Recorded] = []
    held: list[Fix] = []
    thrown: list[float] = []
    t = device.phase_s
    while t < spec.duration_s:
        true_ms = START_MS + round(t * 1000)
        fix = model.fix(t, true_ms, device.sky(t))
        if fix is not None and _off_by(device.route, t, fix) > fix.acc + THROWN_M:
            thrown.append(t)
        gap = device.gap_at(t)
        if fix is not None and gap is not None:
            held.append(fix)
        elif fix is not None:
            records.append(Recorded(topic, encode(fix), true_ms + LATENCY_MS))
        next_t = t + device.interval_s
        if held and (gap is None or not gap.holds(next_t)):
            upload_ms = START_MS + round((gap.to_s if gap else t) * 1000) + LATENCY_MS
            records.extend(_backlog(topic, held, upload_ms))
            held = []
        t = next_t
    return records, tuple(thrown)


def _off_by(route: Route, t_s: float, fix: Fix) -> float:
    lat, lon = _latlon(route, t_s)
    return float(GEOD.inv(fix.lon, fix.lat, lon, lat)[2])


def _backlog(topic: str, fixes: Sequence[Fix], received_ms: int) -> list[Recorded]:
    return [
        Recorded(topic, msgspec.json.encode(list(fixes[i : i + BACKLOG_MAX])), received_ms)
        for i in range(0, len(fixes), BACKLOG_MAX)
    ]


def _seed(spec: CaseSpec, device: DeviceSpec) -> int:
    return (spec.seed * 1_000_003 + sum(map(ord, device.device_id))) % 2**63


def _truth(spec: CaseSpec) -> tuple[tuple[Ring, ...], float]:
    times = np.arange(0.0, spec.duration_s, TRUTH_STEP_S)
    offender = np.array([_latlon(spec.offender.route, t) for t in times])
    victim = np.array([_latlon(spec.victim.route, t) for t in times])
    _, _, distance = GEOD.inv(offender[:, 1], offender[:, 0], victim[:, 1], victim[:, 0])
    distance = np.asarray(distance)
    rings = [
        Ring(kind, _runs(times, distance <= ring_m), _runs(times, distance <= ring_m + NEAR_M))
        for kind, ring_m in (
            ("proximity_pre_alert", spec.pre_alert_m),
            ("proximity_alarm", spec.alarm_m),
        )
    ]
    exempt = np.zeros(len(times), dtype=bool)
    if spec.exemption is not None:
        exempt = spec.exemption.exempt(times, offender[:, 0], offender[:, 1])
    for zone in spec.zones:
        lats = np.full(len(times), zone.lat)
        lons = np.full(len(times), zone.lon)
        _, _, to_centre = GEOD.inv(offender[:, 1], offender[:, 0], lons, lats)
        to_centre = np.asarray(to_centre)
        rings.append(
            Ring(
                f"zone_alarm:{zone.name}",
                _runs(times, (to_centre <= zone.radius_m) & ~exempt),
                _runs(times, (to_centre <= zone.radius_m + NEAR_M) & ~exempt),
            )
        )
    return tuple(rings), float(distance.min())


def _latlon(route: Route, t_s: float) -> tuple[float, float]:
    state = route.at(float(t_s))
    return state.lat, state.lon


def _runs(times: np.ndarray, inside: np.ndarray) -> tuple[Window, ...]:
    """Maximal runs of `inside` as windows of the case's time."""
    runs: list[Window] = []
    start: float | None = None
    for t, flag in zip(times.tolist(), inside.tolist(), strict=True):
        if flag and start is None:
            start = t
        elif not flag and start is not None:
            runs.append(Window(start, t))
            start = None
    if start is not None:
        runs.append(Window(start, float(times[-1]) + TRUTH_STEP_S))
    return tuple(runs)

"""Scenario files: orders and synthetic device tracks in, a recorded log for `replay` out.

A scenario (TOML) places everything in metres east and north of an `origin`, so tracks read like
a sketch: `path = [[t_s, east_m, north_m], ...]` moves a device linearly between waypoints (and
holds it after the last); `gaps = [[from_s, to_s]]` silences it (a tunnel); `[[device.fix]]`
adds one-off fixes (a cell fix, a GPS jump; `batt` optional); `[[device.event]]` adds events
(`t_s`, `type`, optional `batt`), numbered with the fixes; `status = [[t_s, online], ...]` adds
presence messages (no seq). Zones and
corridors may use `at = [east, north]` + `radius_m`, or `polygon = [[east, north], ...]`.
`[[expect]]` lists the alarm timeline the scenario must produce (see tests/scenarios).
Faulty devices: `clock_s = -150` stamps every message 150 s off (received on true time);
`glitches = [[t_s, ahead_s]]` stamps one fix that far ahead; `reboots = [t_s]` restarts the
counter at 0 (with a new `boot` id when `boot_ids = true`, none otherwise, as old firmware);
`backlog_gaps = [[from_s, to_s]]` keeps the fixes measured then and sends them as one array at
`to_s` (a coverage gap with store-and-forward).
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from pyproj import Geod

from nabij.config import Config, ProximitySettings, Settings, validate_orders
from nabij.contract import DeviceEvent, DeviceStatus, Fix, TopicKind, Topics, encode
from services.replay.records import Recorded

_GEOD = Geod(ellps="WGS84")
DEFAULT_START = "2026-01-05T10:00:00+00:00"  # a Monday
LATENCY_MS = 300
"""Device time to received time."""


@dataclass(frozen=True, slots=True)
class Expected:
    at_s: tuple[float, float]
    action: str
    kind: str
    victim: str | None = None
    zone: str | None = None
    order: str | None = None


@dataclass(slots=True)
class Scenario:
    name: str
    description: str
    config: Config
    records: list[Recorded]
    start_ms: int
    expected: list[Expected] = field(default_factory=list)
    origin: tuple[float, float] = (0.0, 0.0)


def offset(origin: tuple[float, float], east_m: float, north_m: float) -> tuple[float, float]:
    """(lat, lon) of the point `east_m`, `north_m` from `origin` (lat, lon)."""
    distance = math.hypot(east_m, north_m)
    if distance == 0:
        return origin
    azimuth = math.degrees(math.atan2(east_m, north_m))
    lon, lat, _ = _GEOD.fwd(origin[1], origin[0], azimuth, distance)
    return float(lat), float(lon)


def load_scenario(path: Path) -> Scenario:
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    origin = (float(raw["origin"][0]), float(raw["origin"][1]))
    start = dt.datetime.fromisoformat(raw.get("start", DEFAULT_START))
    start_ms = round(start.timestamp() * 1000)
    proximity = ProximitySettings.model_validate(raw.get("settings", {}))
    settings = Settings(proximity=proximity)
    orders = validate_orders([_order(o, origin) for o in raw.get("order", [])], str(path))
    config = Config(directory=path.parent, settings=settings, orders=orders)
    topics = Topics(settings.mqtt.topic_prefix)
    uplinks: list[_Uplink] = []
    for device in raw.get("device", []):
        uplinks.extend(_uplinks(device, origin, start_ms, float(raw["duration_s"])))
    uplinks.sort(key=lambda u: (u.sent_ms, u.device))
    records = [
        Recorded(topics.device(u.device, u.kind), u.payload, u.sent_ms + LATENCY_MS)
        for u in uplinks
    ]
    records.sort(key=lambda r: r.received_ms)
    expected = [
        Expected(
            at_s=(float(e["at_s"][0]), float(e["at_s"][1]))
            if isinstance(e["at_s"], list)
            else (float(e["at_s"]), float(e["at_s"])),
            action=e["action"],
            kind=e["kind"],
            victim=e.get("victim"),
            zone=e.get("zone"),
            order=e.get("order"),
        )
        for e in raw.get("expect", [])
    ]
    return Scenario(
        raw.get("name", path.stem),
        raw.get("description", ""),
        config,
        records,
        start_ms,
        expected,
        origin,
    )


def _polygon(points: list[list[float]], origin: tuple[float, float]) -> dict[str, Any]:
    ring = [list(reversed(offset(origin, e, n))) for e, n in points]
    if ring[0] != ring[-1]:
        ring.append(ring[0])
    return {"type": "Polygon", "coordinates": [ring]}


def _order(raw: dict[str, Any], origin: tuple[float, float]) -> dict[str, Any]:
    order = dict(raw)
    zones = []
    for zone in order.get("zone", []):
        zone = dict(zone)  # noqa: PLW2901  (a copy to rewrite)
        if "at" in zone:
            zone["lat"], zone["lon"] = offset(origin, *zone.pop("at"))
        if "polygon" in zone:
            zone["geometry"] = _polygon(zone.pop("polygon"), origin)
        zones.append(zone)
    exemptions = []
    for item in order.get("exemption", []):
        item = dict(item)  # noqa: PLW2901  (a copy to rewrite)
        if "corridor_polygon" in item:
            item["corridor_geometry"] = _polygon(item.pop("corridor_polygon"), origin)
        exemptions.append(item)
    if zones:
        order["zone"] = zones
    if exemptions:
        order["exemption"] = exemptions
    return order


@dataclass(frozen=True, slots=True)
class _Uplink:
    ts: int
    device: str
    kind: TopicKind
    payload: bytes
    sent_ms: int
    """True time at which the device sends it (a backlog goes when coverage returns)."""


def _uplinks(
    raw: dict[str, Any], origin: tuple[float, float], start_ms: int, duration_s: float
) -> list[_Uplink]:
    """A device's fixes and events (one seq counter, in time order) and its status messages."""
    device = raw["id"]
    every_s = float(raw.get("every_s", 15))
    rng = random.Random(raw.get("seed", 1))
    noise = float(raw.get("noise_m", 0))
    path = [(float(t), float(e), float(n)) for t, e, n in raw["path"]]
    times: list[tuple[float, dict[str, Any]]] = []
    gaps = [(float(a), float(b)) for a, b in raw.get("gaps", [])]
    t = float(raw.get("offset_s", 0))
    while t <= duration_s:
        if not any(a <= t < b for a, b in gaps):
            times.append((t, {}))
        t += every_s
    times.extend((float(extra["t_s"]), extra) for extra in raw.get("fix", []))
    times.extend((float(item["t_s"]), {"event": item}) for item in raw.get("event", []))
    times.sort(key=lambda item: item[0])
    out: list[_Uplink] = []
    clock_ms = round(float(raw.get("clock_s", 0)) * 1000)
    glitches = {float(t): round(float(ahead) * 1000) for t, ahead in raw.get("glitches", [])}
    reboots = sorted(float(t) for t in raw.get("reboots", []))
    backlog_gaps = [(float(a), float(b)) for a, b in raw.get("backlog_gaps", [])]
    boot_ids = bool(raw.get("boot_ids", False))
    seq, boots_done = -1, 0
    stored: dict[float, list[Fix]] = {}
    for t_s, extra in times:
        while boots_done < len(reboots) and reboots[boots_done] <= t_s:
            boots_done, seq = boots_done + 1, -1
        seq += 1
        boot = f"boot-{boots_done}" if boot_ids else None
        true_ms = start_ms + round(t_s * 1000)
        ts = true_ms + clock_ms + glitches.get(t_s, 0)
        if "event" in extra:
            kind, batt = extra["event"]["type"], extra["event"].get("batt")
            message = DeviceEvent(device_id=device, seq=seq, ts=ts, type=kind, batt=batt, boot=boot)
            out.append(_Uplink(ts, device, "event", encode(message), true_ms))
            continue
        lat, lon = offset(origin, *_position(extra, path, t_s, noise, rng))
        fix = Fix(
            device_id=device,
            seq=seq,
            ts=ts,
            lat=round(lat, 7),
            lon=round(lon, 7),
            acc=float(extra.get("acc", raw.get("acc", 5.0))),
            src=extra.get("src", raw.get("src")),
            batt=extra.get("batt"),
            boot=boot,
        )
        gap_end = next((b for a, b in backlog_gaps if a <= t_s < b), None)
        if gap_end is None:
            out.append(_Uplink(ts, device, "fix", encode(fix), true_ms))
        else:
            stored.setdefault(gap_end, []).append(fix)
    for gap_end, fixes in stored.items():
        sent_ms = start_ms + round(gap_end * 1000) - 1  # the backlog goes before any newer fix
        out.append(_Uplink(sent_ms, device, "fix", msgspec.json.encode(fixes), sent_ms))
    for t_s, online in raw.get("status", []):
        ts = start_ms + round(float(t_s) * 1000)
        out.append(_Uplink(ts, device, "status", encode(DeviceStatus(online=online, ts=ts)), ts))
    return out


def _position(
    extra: dict[str, Any],
    path: list[tuple[float, float, float]],
    t_s: float,
    noise: float,
    rng: random.Random,
) -> tuple[float, float]:
    """(east, north) of a fix: a one-off's own `at`, else the path's, with uniform noise."""
    if "at" in extra:
        east, north = extra["at"]
        return float(east), float(north)
    east, north = _where(path, t_s)
    if noise > 0:
        radius = noise * math.sqrt(rng.random())
        angle = rng.uniform(0, 2 * math.pi)
        east += radius * math.sin(angle)
        north += radius * math.cos(angle)
    return east, north


def _where(path: list[tuple[float, float, float]], t_s: float) -> tuple[float, float]:
    if t_s <= path[0][0]:
        return path[0][1], path[0][2]
    for (t0, e0, n0), (t1, e1, n1) in itertools.pairwise(path):
        if t0 <= t_s <= t1:
            f = 0.0 if t1 == t0 else (t_s - t0) / (t1 - t0)
            return e0 + f * (e1 - e0), n0 + f * (n1 - n0)
    return path[-1][1], path[-1][2]

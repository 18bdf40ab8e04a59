"""Configuration: `nabij.toml` (service settings, escalation policy) and `orders.toml`.

Loaded once at start-up and passed down; nothing reads the environment or files anywhere else.
Every problem is reported at once, by key path and line, and unknown keys are errors (a typo in
an escalation policy must never silently fall back to a default).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from nabij.contract import ALARM_KINDS, DEVICE_ID_PATTERN, AlarmKind, QueueName

SETTINGS_FILE: Final = "nabij.toml"
ORDERS_FILE: Final = "orders.toml"
CONFIG_ENV: Final = "NABIJ_CONFIG"
MQTT_URL_ENV: Final = "NABIJ_MQTT_URL"
REDIS_URL_ENV: Final = "NABIJ_REDIS_URL"

_M = TypeVar("_M", bound="BaseModel")
DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
PositiveSeconds = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttSettings(_Strict):
    url: str = "mqtt://127.0.0.1:1883"
    topic_prefix: str = Field(default="nabij/v1", pattern=r"^[^#+]+$")
    client_id: str = "nabij-proximity"
    keepalive_s: int = Field(default=30, ge=5)


class RedisSettings(_Strict):
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field(default="nabij", min_length=1)
    deadletter_maxlen: int = Field(default=100_000, ge=100)


class ProximitySettings(_Strict):
    enter_dwell_s: float = Field(default=10, ge=0)
    exit_dwell_s: float = Field(default=60, ge=0)
    critical_m: float = Field(default=100, ge=0)
    max_fix_age_s: PositiveSeconds = 120
    location_unknown_s: PositiveSeconds = 180
    # None: max(50 m, 10% of the ring), per ring.
    exit_margin_m: float | None = Field(default=None, ge=0)
    # Fix interval asked of both devices while a pair is inside (or entering) a ring.
    alarm_interval_s: int = Field(default=15, ge=1, le=3600)
    normal_interval_s: int = Field(default=60, ge=1, le=3600)
    battery_low_pct: int = Field(default=15, ge=0, le=100)
    # A fix whose clock is this far ahead of the server is rejected as bad input.
    max_clock_ahead_s: PositiveSeconds = 300
    batch_max: int = Field(default=2000, ge=1)
    # A fix implying more than this speed from the device's track is an outlier (GPS jump) ...
    max_speed_mps: float = Field(default=70, gt=0)
    # ... until this many consecutive outliers agree with each other: then the device moved.
    jump_confirm_fixes: int = Field(default=3, ge=2, le=10)
    # A pre-alert opens early when the predicted closest approach within this horizon falls
    # inside the alarm ring (0: no prediction).
    predict_horizon_s: float = Field(default=60, ge=0, le=600)
    # Exclusion zones: leaving needs the offender this far outside for the exit dwell; this deep
    # inside opens at once.
    zone_exit_margin_m: float = Field(default=50, ge=0)
    zone_deep_m: float = Field(default=50, ge=0)


class GatewaySettings(_Strict):
    # An `updated` notice for the same alarm at most this often (aware presses are never held).
    update_min_interval_s: float = Field(default=30, ge=0)
    batch_max: int = Field(default=500, ge=1)


class LogSettings(_Strict):
    level: str = Field(default="info", pattern=r"^(debug|info|warning|error)$")


class EscalationPolicy(_Strict):
    priority: int = Field(ge=1, le=3)
    queues: list[QueueName] = Field(min_length=1)
    ack_timeout_s: PositiveSeconds = 60
    escalate_to: list[QueueName] = []


DEFAULT_ESCALATION: Final[Mapping[AlarmKind, EscalationPolicy]] = {
    "aware_button": EscalationPolicy(priority=1, queues=["police", "probation"], ack_timeout_s=60),
    "proximity_alarm": EscalationPolicy(
        priority=1, queues=["probation"], ack_timeout_s=60, escalate_to=["police"]
    ),
    "zone_alarm": EscalationPolicy(
        priority=1, queues=["probation"], ack_timeout_s=60, escalate_to=["police"]
    ),
    "strap_tamper": EscalationPolicy(
        priority=1, queues=["probation"], ack_timeout_s=60, escalate_to=["police"]
    ),
    "proximity_pre_alert": EscalationPolicy(priority=2, queues=["probation"], ack_timeout_s=300),
    "location_unknown": EscalationPolicy(priority=2, queues=["probation"], ack_timeout_s=300),
    "device_offline": EscalationPolicy(priority=2, queues=["probation"], ack_timeout_s=300),
    "battery_low": EscalationPolicy(priority=3, queues=["probation"], ack_timeout_s=3600),
}


class Settings(_Strict):
    mqtt: MqttSettings = MqttSettings()
    redis: RedisSettings = RedisSettings()
    proximity: ProximitySettings = ProximitySettings()
    gateway: GatewaySettings = GatewaySettings()
    log: LogSettings = LogSettings()
    escalation: dict[AlarmKind, EscalationPolicy] = {}

    def policy(self, kind: AlarmKind) -> EscalationPolicy:
        return self.escalation.get(kind) or DEFAULT_ESCALATION[kind]


# --- area bans and exemptions -----------------------------------------------------------------

Longitude = Annotated[float, Field(ge=-180.0, le=180.0)]
Latitude = Annotated[float, Field(ge=-90.0, le=90.0)]
# A GeoJSON position: [lon, lat] (an altitude, if any, is ignored).
GeoPosition = Annotated[list[float], Field(min_length=2, max_length=3)]
LinearRing = Annotated[list[GeoPosition], Field(min_length=4)]
PolygonRings = Annotated[list[LinearRing], Field(min_length=1)]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: Final[tuple[Weekday, ...]] = Weekday.__args__  # type: ignore[attr-defined]  # Literal exposes its values here
ClockTime = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
ZONE_NAME_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,64}$"
DEFAULT_TIMEZONE: Final = "Europe/Amsterdam"
_RULE: Final = re.compile(r"proximity|zone|zone:[A-Za-z0-9_.-]{1,64}")
_POLYGON: Final = TypeAdapter(PolygonRings)


class PolygonGeometry(_Strict):
    """A GeoJSON Polygon or MultiPolygon in WGS84 (positions are [lon, lat])."""

    type: Literal["Polygon", "MultiPolygon"]
    coordinates: list[Any] = Field(min_length=1)

    @model_validator(mode="after")
    def _shape(self) -> PolygonGeometry:
        polygons = [self.coordinates] if self.type == "Polygon" else self.coordinates
        for polygon in polygons:
            _POLYGON.validate_python(polygon)
            for ring in polygon:
                if ring[0][:2] != ring[-1][:2]:
                    raise ValueError("a polygon ring must end where it starts")
                for position in ring:
                    if not (-180.0 <= position[0] <= 180.0 and -90.0 <= position[1] <= 90.0):
                        raise ValueError("positions are [lon, lat] in WGS84 degrees")
        return self

    def polygons(self) -> list[list[list[tuple[float, float]]]]:
        """Every polygon as rings of (lon, lat): the exterior first, then holes."""
        polygons = [self.coordinates] if self.type == "Polygon" else self.coordinates
        return [[[(p[0], p[1]) for p in ring] for ring in polygon] for polygon in polygons]


class Zone(_Strict):
    """A fixed exclusion zone: a circle (`lat`, `lon`, `radius_m`) or a polygon (`geojson`)."""

    name: str = Field(pattern=ZONE_NAME_PATTERN)
    lat: Latitude | None = None
    lon: Longitude | None = None
    radius_m: float | None = Field(default=None, gt=0, le=100_000)
    geojson: str | None = Field(default=None, min_length=1)
    """Path of a GeoJSON file, relative to the config directory; the loader fills `geometry`."""
    geometry: PolygonGeometry | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> Zone:
        circle = (self.lat, self.lon, self.radius_m)
        has_circle = any(v is not None for v in circle)
        has_polygon = self.geojson is not None or self.geometry is not None
        if has_circle and has_polygon:
            raise ValueError("a zone is either a circle (lat, lon, radius_m) or geojson, not both")
        if not has_circle and not has_polygon:
            raise ValueError("a zone needs lat, lon and radius_m, or geojson")
        if has_circle and any(v is None for v in circle):
            raise ValueError("a circular zone needs all of lat, lon and radius_m")
        return self


class Exemption(_Strict):
    """A weekly window in which some rules of an order are suspended (in the order's timezone).

    `end` before `start` runs past midnight into the next day. `rules`: "proximity" (both rings
    of every pair), "zone" (every zone) or "zone:NAME". With a `corridor` (GeoJSON path), the
    exemption holds only while the offender is inside it.
    """

    days: list[Weekday] = Field(min_length=1)
    start: ClockTime
    end: ClockTime
    rules: list[str] = Field(min_length=1)
    corridor: str | None = Field(default=None, min_length=1)
    corridor_geometry: PolygonGeometry | None = None

    @field_validator("rules")
    @classmethod
    def _rule_names(cls, rules: list[str]) -> list[str]:
        for rule in rules:
            if not _RULE.fullmatch(rule):
                raise ValueError(f"unknown rule {rule!r}: use proximity, zone or zone:NAME")
        return rules

    @model_validator(mode="after")
    def _window(self) -> Exemption:
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self

    def minutes(self) -> tuple[int, int]:
        """Start and end as minutes after local midnight."""
        sh, sm = self.start.split(":")
        eh, em = self.end.split(":")
        return int(sh) * 60 + int(sm), int(eh) * 60 + int(em)


class Order(_Strict):
    id: str = Field(min_length=1, max_length=128)
    offender_device: DeviceId
    victim_devices: list[DeviceId] = []
    alarm_m: float = Field(gt=0, le=100_000)
    pre_alert_m: float | None = Field(default=None, gt=0, le=200_000)
    timezone: str = DEFAULT_TIMEZONE
    zone: list[Zone] = []
    exemption: list[Exemption] = []

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {name!r}") from err
        return name

    @model_validator(mode="after")
    def _rings_nest(self) -> Order:
        if self.pre_alert_m is not None and self.pre_alert_m <= self.alarm_m:
            raise ValueError("pre_alert_m must be larger than alarm_m")
        if self.offender_device in self.victim_devices:
            raise ValueError("offender_device cannot also be a victim device")
        names = [zone.name for zone in self.zone]
        if len(set(names)) != len(names):
            raise ValueError("zone names must be unique within an order")
        for exemption in self.exemption:
            for rule in exemption.rules:
                if rule.startswith("zone:") and rule[5:] not in names:
                    raise ValueError(f"exemption rule {rule!r} names no zone of this order")
        return self

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def pre_alert_ring_m(self) -> float:
        return self.pre_alert_m if self.pre_alert_m is not None else 2 * self.alarm_m


class OrdersFile(_Strict):
    order: list[Order] = []

    @model_validator(mode="after")
    def _ids_unique(self) -> OrdersFile:
        seen: set[str] = set()
        for order in self.order:
            if order.id in seen:
                raise ValueError(f"order id {order.id!r} appears twice")
            seen.add(order.id)
        return self


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a service needs, validated."""

    directory: Path
    settings: Settings
    orders: tuple[Order, ...]


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    file: str
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path or '(top)'}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists every one found."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def resolve_directory(cli_value: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path:
    """The config directory: `--config`, else `NABIJ_CONFIG`, else `./config`."""
    return Path(cli_value or env.get(CONFIG_ENV) or "config")


def load_config(directory: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate both files; environment URL overrides apply on top."""
    problems: list[ConfigProblem] = []
    settings = _load_settings(directory / SETTINGS_FILE, problems)
    orders_path = directory / ORDERS_FILE
    orders = _load_file(OrdersFile, orders_path, problems, required=True)
    loaded = () if orders is None else _load_shapes(orders.order, orders_path, problems)
    if problems or settings is None or orders is None:
        raise ConfigError(problems)
    return Config(
        directory=directory,
        settings=apply_env(settings, os.environ if env is None else env),
        orders=loaded,
    )


def load_settings(path: Path, env: Mapping[str, str] | None = None) -> Settings:
    """Only `nabij.toml` (the demo and simulators bring their own orders)."""
    problems: list[ConfigProblem] = []
    settings = _load_settings(path, problems)
    if problems or settings is None:
        raise ConfigError(problems)
    return apply_env(settings, os.environ if env is None else env)


def validate_orders(raw_orders: Sequence[Mapping[str, Any]], source: str) -> tuple[Order, ...]:
    """Orders from another file (a scenario), validated exactly as `orders.toml` is."""
    problems: list[ConfigProblem] = []
    orders = _validate(OrdersFile, {"order": list(raw_orders)}, Path(source), problems)
    loaded = () if orders is None else _load_shapes(orders.order, Path(source), problems)
    if problems or orders is None:
        raise ConfigError(problems)
    return loaded


def apply_env(settings: Settings, env: Mapping[str, str]) -> Settings:
    """`NABIJ_MQTT_URL` and `NABIJ_REDIS_URL` override the files' URLs."""
    overrides: dict[str, Any] = {}
    if url := env.get(MQTT_URL_ENV):
        overrides["mqtt"] = settings.mqtt.model_copy(update={"url": url})
    if url := env.get(REDIS_URL_ENV):
        overrides["redis"] = settings.redis.model_copy(update={"url": url})
    return settings.model_copy(update=overrides) if overrides else settings


def _load_settings(path: Path, problems: list[ConfigProblem]) -> Settings | None:
    return _load_file(Settings, path, problems, required=False)


def _load_file(
    model: type[_M], path: Path, problems: list[ConfigProblem], *, required: bool
) -> _M | None:
    raw = _read_toml(path, problems, required=required)
    return _validate(model, raw, path, problems)


def _read_toml(path: Path, problems: list[ConfigProblem], *, required: bool) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            problems.append(ConfigProblem(path.name, "", None, f"missing file {path}"))
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        match = re.search(r"line (\d+)", str(err))
        line = int(match.group(1)) if match else None
        problems.append(ConfigProblem(path.name, "", line, f"not valid TOML: {err}"))
        return {}


def _validate(
    model: type[_M], raw: dict[str, Any], path: Path, problems: list[ConfigProblem]
) -> _M | None:
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        lines = _key_lines(path)
        for item in err.errors():
            loc = tuple(part for part in item["loc"] if not _is_union_tag(part))
            message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
            problems.append(ConfigProblem(path.name, _dotted(loc), _line_of(loc, lines), message))
        return None


def _load_shapes(
    orders: Sequence[Order], path: Path, problems: list[ConfigProblem]
) -> tuple[Order, ...]:
    """Read every `geojson` zone and `corridor` file (relative to `path`'s directory) into the
    order, so the proximity core receives coordinates, never paths."""
    lines: dict[tuple[str | int, ...], int] = {}

    def read(file: str, where: tuple[str | int, ...]) -> PolygonGeometry | None:
        geometry, error = _read_polygon(path.parent / file)
        if error is not None:
            if not lines:
                lines.update(_key_lines(path))
            problems.append(ConfigProblem(path.name, _dotted(where), _line_of(where, lines), error))
        return geometry

    out: list[Order] = []
    for oi, order in enumerate(orders):
        zones = [
            zone
            if zone.geojson is None
            else zone.model_copy(
                update={"geometry": read(zone.geojson, ("order", oi, "zone", zi, "geojson"))}
            )
            for zi, zone in enumerate(order.zone)
        ]
        exemptions = [
            item
            if item.corridor is None
            else item.model_copy(
                update={
                    "corridor_geometry": read(
                        item.corridor, ("order", oi, "exemption", ei, "corridor")
                    )
                }
            )
            for ei, item in enumerate(order.exemption)
        ]
        out.append(order.model_copy(update={"zone": zones, "exemption": exemptions}))
    return tuple(out)


def _read_polygon(path: Path) -> tuple[PolygonGeometry | None, str | None]:
    """A GeoJSON file holding one Polygon or MultiPolygon (bare, as a Feature, or as a
    FeatureCollection of polygonal features, which are merged); else an error sentence."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"missing file {path}"
    except (OSError, UnicodeDecodeError) as err:
        return None, f"cannot read {path}: {err}"
    except json.JSONDecodeError as err:
        return None, f"{path.name} is not valid JSON: {err}"
    geometries = _geometries_of(raw)
    if not geometries:
        return None, f"{path.name} holds no Polygon or MultiPolygon"
    polygons: list[Any] = []
    for item in geometries:
        if not isinstance(item, dict) or item.get("type") not in ("Polygon", "MultiPolygon"):
            kind = item.get("type") if isinstance(item, dict) else type(item).__name__
            return None, f"{path.name}: a {kind} is not a Polygon or MultiPolygon"
        coordinates = item.get("coordinates")
        if not isinstance(coordinates, list):
            return None, f"{path.name}: geometry without coordinates"
        polygons.extend([coordinates] if item["type"] == "Polygon" else coordinates)
    raw_geometry: dict[str, Any] = (
        {"type": "Polygon", "coordinates": polygons[0]}
        if len(polygons) == 1
        else {"type": "MultiPolygon", "coordinates": polygons}
    )
    try:
        geometry = PolygonGeometry.model_validate(raw_geometry)
    except ValidationError as err:
        first = err.errors()[0]
        return None, f"{path.name}: not a valid polygon: {first['msg']}"
    if (problem := _polygon_problem(geometry)) is not None:
        return None, f"{path.name}: not a valid polygon: {problem}"
    return geometry, None


def _geometries_of(raw: object) -> list[object]:
    if not isinstance(raw, dict):
        return []
    kind = raw.get("type")
    if kind == "FeatureCollection":
        features = raw.get("features")
        if not isinstance(features, list):
            return []
        return [g for feature in features for g in _geometries_of(feature)]
    if kind == "Feature":
        geometry = raw.get("geometry")
        return [geometry] if geometry is not None else []
    return [raw]


def _polygon_problem(geometry: PolygonGeometry) -> str | None:
    """Why shapely finds the polygon invalid (self-intersecting, ...), or None."""
    import shapely
    from shapely.validation import explain_validity

    shape = shapely.geometry.shape({"type": geometry.type, "coordinates": geometry.coordinates})
    if not shape.is_valid:
        return str(explain_validity(shape))
    if shape.is_empty or shape.area <= 0:
        return "it has no area"
    return None


def _is_union_tag(part: object) -> bool:
    # pydantic puts the union member's name ("float", "function-after[...]") in the location.
    return isinstance(part, str) and ("[" in part or part in {"float", "int", "str", "none"})


def _dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+)\s*=")


def _key_lines(path: Path) -> dict[tuple[str | int, ...], int]:
    """Map each key path in a TOML file to the line that defines it (for error messages)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    lines: dict[tuple[str | int, ...], int] = {}
    array_counts: dict[tuple[str | int, ...], int] = {}
    table: tuple[str | int, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if header := _HEADER.match(line):
            names = tuple(_unquote(n) for n in header.group(2).split("."))
            if header.group(1) == "[[":
                index = array_counts.get(names, -1) + 1
                array_counts[names] = index
                table = (*_indexed(names[:-1], array_counts), names[-1], index)
            else:
                table = _indexed(names, array_counts)
            lines.setdefault(table, number)
        elif key := _KEY.match(line):
            lines.setdefault((*table, *(_unquote(k) for k in key.group(1).split("."))), number)
    return lines


def _indexed(
    names: tuple[str, ...], array_counts: dict[tuple[str | int, ...], int]
) -> tuple[str | int, ...]:
    """Insert the current index after every array-of-tables prefix: order.zone -> order,2,zone."""
    out: list[str | int] = []
    for i, name in enumerate(names):
        out.append(name)
        prefix = names[: i + 1]
        if prefix in array_counts:
            out.append(array_counts[prefix])
    return tuple(out)


def _unquote(name: str) -> str:
    return name.strip().strip("\"'")


def _line_of(loc: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int | None:
    for end in range(len(loc), 0, -1):
        if (line := lines.get(loc[:end])) is not None:
            return line
    return None


__all__ = [
    "ALARM_KINDS",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "EscalationPolicy",
    "Exemption",
    "Order",
    "PolygonGeometry",
    "Settings",
    "Zone",
    "apply_env",
    "load_config",
    "load_settings",
    "resolve_directory",
    "validate_orders",
]

"""Configuration: `nabij.toml` (service settings, escalation policy) and `orders.toml`.

Loaded once at start-up and passed down; nothing reads the environment or files anywhere else.
Every problem is reported at once, by key path and line, and unknown keys are errors (a typo in
an escalation policy must never silently fall back to a default). The models live in
`nabij.settings` and `nabij.orders`; this module reads the files (GeoJSON zones included) and
re-exports the models, so callers import configuration from one place.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from pydantic import (
    BaseModel,
    ValidationError,
)

from nabij.contract import ALARM_KINDS
from nabij.failures import NabijError
from nabij.keys import Shard
from nabij.orders import WEEKDAYS, Exemption, Order, OrdersFile, PolygonGeometry, Zone
from nabij.settings import (
    DEFAULT_ESCALATION,
    ClockSettings,
    EscalationPolicy,
    GatewaySettings,
    MqttSettings,
    ProximitySettings,
    RedisSettings,
    Settings,
)
from nabij.toml_lines import key_lines, line_of
from nabij.validation import dotted, key_problems

SETTINGS_FILE: Final = "nabij.toml"
ORDERS_FILE: Final = "orders.toml"
CONFIG_ENV: Final = "NABIJ_CONFIG"
MQTT_URL_ENV: Final = "NABIJ_MQTT_URL"
REDIS_URL_ENV: Final = "NABIJ_REDIS_URL"

_M = TypeVar("_M", bound="BaseModel")


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


class ConfigError(NabijError):
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


def load_orders(path: Path) -> tuple[Order, ...]:
    """Only an orders file (`nabij orders apply`), validated exactly as at start-up."""
    problems: list[ConfigProblem] = []
    orders = _load_file(OrdersFile, path, problems, required=True)
    loaded = () if orders is None else _load_shapes(orders.order, path, problems)
    if problems or orders is None:
        raise ConfigError(problems)
    return loaded


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
        lines = key_lines(path)
        for problem in key_problems(err):
            line = line_of(problem.location, lines)
            problems.append(ConfigProblem(path.name, problem.path, line, problem.message))
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
                lines.update(key_lines(path))
            problems.append(ConfigProblem(path.name, dotted(where), line_of(where, lines), error))
        return geometry

    out: list[Order] = []
    for oi, order in enumerate(orders):
        if all(z.geojson is None for z in order.zone) and all(
            e.corridor is None for e in order.exemption
        ):
            out.append(order)  # nothing to read: a copy would only cost memory
            continue
        zones = tuple(
            zone
            if zone.geojson is None
            else zone.model_copy(
                update={"geometry": read(zone.geojson, ("order", oi, "zone", zi, "geojson"))}
            )
            for zi, zone in enumerate(order.zone)
        )
        exemptions = tuple(
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
        )
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


def with_shard(config: Config, shard: Shard) -> Config:
    """`config` with `proximity.shard` set to `shard` (the command line wins over the file)."""
    settings = config.settings
    proximity = settings.proximity.model_copy(update={"shard": str(shard)})
    return dataclasses.replace(
        config, settings=settings.model_copy(update={"proximity": proximity})
    )


__all__ = [
    "ALARM_KINDS",
    "DEFAULT_ESCALATION",
    "WEEKDAYS",
    "ClockSettings",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "EscalationPolicy",
    "Exemption",
    "GatewaySettings",
    "MqttSettings",
    "Order",
    "OrdersFile",
    "PolygonGeometry",
    "ProximitySettings",
    "RedisSettings",
    "Settings",
    "Zone",
    "apply_env",
    "load_config",
    "load_orders",
    "load_settings",
    "resolve_directory",
    "validate_orders",
    "with_shard",
]

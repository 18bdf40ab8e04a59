"""Orders (`orders.toml`): who must stay away from whom, how far, where, and when not.

The models validate what a file says; `nabij.config` reads the files, GeoJSON zones included.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import sys
import zoneinfo
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Final,
    Generic,
    Literal,
    TypeAlias,
    TypeVar,
    cast,
    overload,
)

import msgspec
from pydantic import AwareDatetime, Field, TypeAdapter, field_validator, model_validator

from nabij.contract import DEVICE_ID_PATTERN
from nabij.settings import StrictModel

DeviceId = Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]

Longitude = Annotated[float, Field(ge=-180.0, le=180.0)]
Latitude = Annotated[float, Field(ge=-90.0, le=90.0)]
# A GeoJSON position: [lon, lat] (an altitude, if any, is ignored).
GeoPosition = Annotated[list[float], Field(min_length=2, max_length=3)]
LinearRing = Annotated[list[GeoPosition], Field(min_length=4)]
PolygonRings = Annotated[list[LinearRing], Field(min_length=1)]
Validity = Literal["in_force", "not_started", "ended"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: Final[tuple[Weekday, ...]] = Weekday.__args__  # type: ignore[attr-defined]  # Literal exposes its values here
ClockTime = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
ZONE_NAME_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,64}$"
DEFAULT_TIMEZONE: Final = "Europe/Amsterdam"
_RULE: Final = re.compile(r"proximity|zone|zone:[A-Za-z0-9_.-]{1,64}")
_POLYGON: Final = TypeAdapter(PolygonRings)
T = TypeVar("T")


# One set object per distinct set of field names given, shared by every model that gave those;
# one float object per ring size.
_FIELDS_SETS: Final[dict[frozenset[str], set[str]]] = {}
_RINGS: Final[dict[float, float]] = {}
_RINGS_KEPT: Final = 4096
_SPLIT_DICTS: Final[dict[type, dict[str, Any]]] = {}
"""Model class -> a dict of its fields sharing the class's table of keys (`_key_sharing`)."""


class _Kept(StrictModel):
    # Every shard keeps all the orders (75,000 and more) and their parts, so each shares its
    # `model_fields_set` with those that set the same fields (216 bytes each otherwise): a
    # frozen model never adds to it, and `model_copy` copies it before adding the updated names.
    def model_post_init(self, context: Any, /) -> None:
        given = self.__pydantic_fields_set__
        shared = _FIELDS_SETS.setdefault(frozenset(given), given)
        object.__setattr__(self, "__pydantic_fields_set__", shared)
        object.__setattr__(self, "__dict__", _key_sharing(self))


def _key_sharing(model: _Kept) -> dict[str, Any]:
    """The model's fields in a dict that shares its table of keys with the other models of its
    class (CPython's split table, as an ordinary object's attributes get): pydantic gives each
    its own table, a hundred bytes an order more. A copy of the class's first such dict (made
    by setting the fields on a blank instance) keeps sharing while only its values change."""
    template = _SPLIT_DICTS.get(type(model))
    if template is None:
        blank = object.__new__(type(model))
        for name, value in model.__dict__.items():
            object.__setattr__(blank, name, value)
        template = _SPLIT_DICTS[type(model)] = blank.__dict__
    fields = template.copy()
    fields.update(model.__dict__)
    return fields


class PolygonGeometry(_Kept):
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


class Zone(_Kept):
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


class Exemption(_Kept):
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


class _OrderTerms:
    """What an order answers from its fields, validated (`Order`) or held (`HeldOrder`)."""

    __slots__ = ()
    if TYPE_CHECKING:  # the fields read here (each class declares its own)
        alarm_m: float
        pre_alert_m: float | None
        timezone: str
        starts_at: dt.datetime | None
        ends_at: dt.datetime | None

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    def validity(self, t_ms: int) -> Validity:
        """Whether the order holds at `t_ms` (epoch ms): from `starts_at`, until `ends_at`."""
        if self.starts_at is not None and t_ms < self.starts_at.timestamp() * 1000:
            return "not_started"
        if self.ends_at is not None and t_ms >= self.ends_at.timestamp() * 1000:
            return "ended"
        return "in_force"

    def next_validity_change(self, t_ms: int) -> float | None:
        """The first time after `t_ms` (epoch ms) at which `validity` changes; None: never."""
        edges = (edge.timestamp() * 1000 for edge in (self.starts_at, self.ends_at) if edge)
        return min((edge for edge in edges if edge > t_ms), default=None)

    @property
    def pre_alert_ring_m(self) -> float:
        return self.pre_alert_m if self.pre_alert_m is not None else 2 * self.alarm_m


# Its arrays are tuples, not lists (an empty one is Python's one empty tuple). A comment, not a
# docstring: that would go into the JSON Schema.
class Order(_Kept, _OrderTerms):
    id: str = Field(min_length=1, max_length=128)
    offender_device: DeviceId
    victim_devices: tuple[DeviceId, ...] = Field(default_factory=tuple)
    alarm_m: float = Field(gt=0, le=100_000)
    pre_alert_m: float | None = Field(default=None, gt=0, le=200_000)
    timezone: str = DEFAULT_TIMEZONE
    zone: tuple[Zone, ...] = Field(default_factory=tuple)
    exemption: tuple[Exemption, ...] = Field(default_factory=tuple)
    starts_at: AwareDatetime | None = None
    """ISO 8601 with offset; before it the order raises no alarm (absent: in force already)."""
    ends_at: AwareDatetime | None = None
    """ISO 8601 with offset; from it on the order raises no alarm and its open ones clear."""

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {name!r}") from err
        return sys.intern(name)  # a file or the store gives each order its own copy

    @field_validator("alarm_m", "pre_alert_m")
    @classmethod
    def _shared_ring(cls, metres: float | None) -> float | None:
        # Most orders use a few ring sizes: one float object each, not one an order (24 bytes).
        # Bounded: a process that validates orders for years (the console) keeps no more.
        if metres is None or len(_RINGS) >= _RINGS_KEPT:
            return metres
        return _RINGS.setdefault(metres, metres)

    @model_validator(mode="after")
    def _rings_nest(self) -> Order:
        if self.pre_alert_m is not None and self.pre_alert_m <= self.alarm_m:
            raise ValueError("pre_alert_m must be larger than alarm_m")
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
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


class OrderTerms(msgspec.Struct, frozen=True, gc=False):
    """What an order asks beside whom it binds: `HeldOrder.terms`, one object for every held
    order of the same plain terms (no zone, no exemption, no start or end: `_shared`)."""

    alarm_m: float
    pre_alert_m: float | None
    timezone: str
    zone: tuple[Zone, ...]
    exemption: tuple[Exemption, ...]
    starts_at: dt.datetime | None
    ends_at: dt.datetime | None


_SHARED_TERMS: Final[dict[OrderTerms, OrderTerms]] = {}
_SHARED_TERMS_KEPT: Final = 4096


def _shared(terms: OrderTerms) -> OrderTerms:
    """The one object of these plain terms (bounded, as `_RINGS`); others are their own."""
    if terms.zone or terms.exemption or terms.starts_at or terms.ends_at:
        return terms
    if len(_SHARED_TERMS) >= _SHARED_TERMS_KEPT:
        return _SHARED_TERMS.get(terms, terms)
    return _SHARED_TERMS.setdefault(terms, terms)


class _Term(Generic[T]):
    """A field of `OrderTerms` read as an attribute of `HeldOrder`."""

    __slots__ = ("name",)

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, order: None, owner: type) -> _Term[T]: ...
    @overload
    def __get__(self, order: HeldOrder, owner: type) -> T: ...
    def __get__(self, order: HeldOrder | None, owner: type) -> T | _Term[T]:
        return self if order is None else cast(T, getattr(order.terms, self.name))


class HeldOrder(msgspec.Struct, _OrderTerms, frozen=True, gc=False):
    """An order as a long-running process holds it (`held_orders`): `Order`'s fields and what it
    answers from them in 48 bytes, where the validated model, its dict and its one victim's tuple
    take ~265 (a proximity process holds every order: docs/benchmarks.md). Made from a
    validated `Order` only; equal only to another `HeldOrder`. Untracked by the collector: its
    zones and exemptions never refer back to it."""

    id: str
    offender_device: str
    victims: str | tuple[str, ...]
    """`victim_devices`, a single one as its id alone (most orders protect one person)."""
    terms: OrderTerms
    """The rest of `Order`'s fields, shared with the orders of the same plain terms."""

    alarm_m = _Term[float]()
    pre_alert_m = _Term[float | None]()
    timezone = _Term[str]()
    zone = _Term[tuple[Zone, ...]]()
    exemption = _Term[tuple[Exemption, ...]]()
    starts_at = _Term[dt.datetime | None]()
    ends_at = _Term[dt.datetime | None]()

    @classmethod
    def of(cls, order: Order) -> HeldOrder:
        victims = order.victim_devices
        terms = OrderTerms(*[getattr(order, name) for name in OrderTerms.__struct_fields__])
        return cls(
            order.id,
            order.offender_device,
            victims[0] if len(victims) == 1 else victims,
            _shared(terms),
        )

    @property
    def victim_devices(self) -> tuple[str, ...]:
        victims = self.victims
        return (victims,) if isinstance(victims, str) else victims


AnyOrder: TypeAlias = Order | HeldOrder


def held_orders(orders: Iterable[AnyOrder]) -> tuple[HeldOrder, ...]:
    """`orders` as a process holds them: the very tuple when it holds `HeldOrder`s only (the
    service's, handed to the engine, is kept once), else a new one."""
    if isinstance(orders, tuple) and all(isinstance(order, HeldOrder) for order in orders):
        return orders
    return tuple(order if isinstance(order, HeldOrder) else HeldOrder.of(order) for order in orders)


@dataclass(frozen=True, slots=True)
class InForce:
    """Which of `orders` hold, worked out at `since`: the same answer until one of them starts or
    ends (`until`; None: none will). Worked out over every order, it is kept rather than done
    again twice a second (18 ms at 5,000 orders held up the batch behind it)."""

    orders: tuple[HeldOrder, ...]
    in_force: tuple[HeldOrder, ...]
    validity: Counter[Validity]
    since: int
    until: float | None

    @classmethod
    def of(cls, orders: tuple[HeldOrder, ...], now_ms: int) -> InForce:
        validity = Counter(o.validity(now_ms) for o in orders)
        in_force = tuple(o for o in orders if o.validity(now_ms) == "in_force")
        changes = (o.next_validity_change(now_ms) for o in orders)
        until = min((t for t in changes if t is not None), default=None)
        return cls(orders, in_force, validity, now_ms, until)

    def holds(self, orders: tuple[HeldOrder, ...], now_ms: int) -> bool:
        """Still the answer for `orders` (the very tuple) at `now_ms`; a clock stepped back
        before `since` asks again."""
        return orders is self.orders and self.since <= now_ms < (self.until or math.inf)


class OrdersFile(StrictModel):
    order: list[Order] = Field(default_factory=list)

    @model_validator(mode="after")
    def _ids_unique(self) -> OrdersFile:
        seen: set[str] = set()
        for order in self.order:
            if order.id in seen:
                raise ValueError(f"order id {order.id!r} appears twice")
            seen.add(order.id)
        return self

"""Who is paired with whom, and which zones bind whom: lookups built once from the orders."""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import msgspec

from nabij.orders import Order, Zone
from nabij.settings import ProximitySettings
from services.proximity.core.cells import SnapGrid, offender_ring
from services.proximity.core.exemptions import Exemptions
from services.proximity.core.hysteresis import RingParams
from services.proximity.core.state import OUTSIDE, PairKey, PairState, RingState
from services.proximity.core.zones import ZoneSet

Role = Literal["offender", "victim"]
_NO_ZONES: Final[Mapping[str, ZoneSet]] = {}


@functools.cache
def victim_role(index: int) -> str:
    """The role of the order's `index`-th victim (0-based) in its alarm keys: "victim1", ...
    (one string per place, not one per pair)."""
    return f"victim{index + 1}"


@dataclass(frozen=True, slots=True)
class Membership:
    """One order a device belongs to, and its role there."""

    order_id: str
    offender_device: str
    role: Role


@dataclass(frozen=True, slots=True)
class Rings:
    """The two rings' parameters, and the offender's (judged on her grid cell: `cells`): one
    object for every pair of the same ring sizes, not four fields a pair."""

    pre_alert: RingParams
    alarm: RingParams
    offender_pre_alert: RingParams
    offender_alarm: RingParams


class PairSpec(msgspec.Struct, gc=False):
    """A pair and its state in one record: who, the two rings' parameters (and the offender's,
    judged on her grid cell: `cells`), the order's exemptions, then where the pair stands. One
    object with no key tuple (~200 bytes a pair less than a spec holding a `PairState` under a
    key: docs/benchmarks.md). Untracked by the collector (`gc=False`): nothing it holds refers
    back to it. Changed in place: the nodes share it (`Node.pairs`); the state fields are those
    of `PairState` and change, the rest never does."""

    order_id: str
    offender: str
    victim: str
    victim_role: str
    """Her role in the order's alarm keys (`victim_role`): her place in the order."""
    rings: Rings
    exemptions: Exemptions | None
    pre_alert: RingState = OUTSIDE
    alarm: RingState = OUTSIDE
    observed: bytes | None = None
    """The last comparison: its time, distance and uncertainty, packed (`_OBSERVED`; None
    before any): one object where an int and two floats took ~100 bytes. Read them as
    `last_obs_ts`, `last_distance_m` and `last_uncertainty_m`; set them with `observe`."""
    exempt: bool = False
    """The last comparison fell in an exemption window (the tick re-checks when it ends)."""
    offender_pre_alert: RingState = OUTSIDE
    offender_alarm: RingState = OUTSIDE
    """The offender's rings, judged on her grid cell (`cells`): his warnings and interval."""

    @property
    def key(self) -> PairKey:
        """(order id, offender, victim): made when asked, not kept (64 bytes a pair)."""
        return (self.order_id, self.offender, self.victim)

    @property
    def last_obs_ts(self) -> int:
        """Device time of the newest comparison; never goes backwards."""
        observed = self.observed
        return 0 if observed is None else int(_OBSERVED.unpack_from(observed)[0])

    @property
    def last_distance_m(self) -> float | None:
        return self.last_comparison()[1]

    @property
    def last_uncertainty_m(self) -> float | None:
        return self.last_comparison()[2]

    def last_comparison(self) -> tuple[int, float | None, float | None]:
        """`last_obs_ts`, `last_distance_m` and `last_uncertainty_m`, unpacked at once."""
        if self.observed is None:
            return 0, None, None
        ts, distance_m, uncertainty_m = _OBSERVED.unpack(self.observed)
        return ts, _figure(distance_m), _figure(uncertainty_m)

    def observe(self, ts: int, distance_m: float, uncertainty_m: float) -> int:
        """Note a comparison of device time `ts`; returns the pair's time (`last_obs_ts`)."""
        observed = self.observed
        if observed is not None:
            ts = max(ts, _OBSERVED.unpack_from(observed)[0])  # it never goes backwards
        self.observed = _OBSERVED.pack(ts, distance_m, uncertainty_m)
        return ts

    def state(self) -> PairState:
        """Where the pair stands, as the shell stores it."""
        return PairState(
            self.order_id, self.offender, self.victim, self.pre_alert, self.alarm,
            *self.last_comparison(), self.exempt, self.offender_pre_alert, self.offender_alarm,
        )  # fmt: skip

    def restore(self, state: PairState | PairSpec) -> None:
        """Take the state of `state` (loaded, handed over, or a pair's start): its ids are
        not read, this record keeps its own."""
        self.pre_alert, self.alarm = state.pre_alert, state.alarm
        if isinstance(state, PairSpec):
            self.observed = state.observed
        else:
            self.observed = _packed(
                state.last_obs_ts, state.last_distance_m, state.last_uncertainty_m
            )
        self.exempt = state.exempt
        self.offender_pre_alert = state.offender_pre_alert
        self.offender_alarm = state.offender_alarm


_OBSERVED: Final = struct.Struct("<qdd")
"""A pair's last comparison (`PairSpec.observed`): time, distance, uncertainty; a figure it
lacks as NaN (no comparison gives one; only a stored state may lack one)."""


def _packed(ts: int, distance_m: float | None, uncertainty_m: float | None) -> bytes | None:
    if ts == 0 and distance_m is None and uncertainty_m is None:
        return None  # never compared
    return _OBSERVED.pack(
        ts,
        math.nan if distance_m is None else distance_m,
        math.nan if uncertainty_m is None else uncertainty_m,
    )


def _figure(packed: float) -> float | None:
    return None if math.isnan(packed) else packed


class Node(msgspec.Struct, gc=False):
    """What the orders say of one device, and its state: one record, not one dict entry per
    fact (a million pairs' worth of dicts was most of the topology's memory:
    docs/benchmarks.md). Built once; only `blob` ever changes (not frozen for it). A struct
    untracked by the garbage collector (16 bytes less than a slotted dataclass, faster to
    build): nothing it refers to (its pairs, its blob) refers back to a node, so it is in no
    cycle."""

    rank: int
    """Its place among the devices, in the order of the orders: the tick looks at the devices
    due in this order, so it signals in the order a pass over every device did."""
    offender_rank: int | None
    """Its place among the offenders, in the order of the orders (None: offender in none)."""
    victim: bool
    """A victim in some order."""
    pairs: tuple[PairSpec, ...]
    """Every pair it is in, as offender or victim."""
    other_orders: tuple[str, ...] | None
    """The ids of every order it is in, when its pairs do not say so (an order with no pair of
    it, its own, as its offender), else None: a tuple an order less (`orders`)."""
    blob: bytes | None = None
    """Its device's state as of the last freeze, encoded (None: never heard): kept here for the
    `DeviceTable` rather than in a dict of its own by the same keys (~50 bytes a pair)."""

    @property
    def orders(self) -> tuple[str, ...]:
        """The ids of every order it is in (its role and the offender there: `pairs`, or, an
        order with no pair of it, its own, as its offender: `Topology.memberships`)."""
        if self.other_orders is not None:
            return self.other_orders
        return _orders_of(self.pairs)

    @property
    def role(self) -> Role:
        """For reasons: a device that is offender in any order is called the offender device."""
        return "victim" if self.offender_rank is None else "offender"


@dataclass(frozen=True, slots=True)
class Topology:
    pairs: tuple[PairSpec, ...]
    """Every pair, in the order of the orders (found by key through its offender: `pair`)."""
    nodes: dict[str, Node]
    """Device -> what the orders say of it, in the order of the orders (`Node.rank`)."""
    device_ids: list[str]
    """The keys of `nodes` by rank, the very strings: for what keeps devices by their place
    (`Agenda`) and hands them back by id."""
    zones: dict[str, ZoneSet]
    """Offender device -> its exclusion zones (only offenders with zones)."""
    exemptions: dict[str, Exemptions]
    """Order id -> its exemption windows (only orders that have some)."""

    def pair(self, key: PairKey) -> PairSpec | None:
        """The pair of `key`, among its offender's few: no dict by key (~110 bytes a pair with
        its key tuple)."""
        order_id, offender, victim = key
        node = self.nodes.get(offender)
        if node is not None:
            for spec in node.pairs:
                if (
                    spec.order_id == order_id
                    and spec.victim == victim
                    and spec.offender == offender
                ):
                    return spec
        return None

    def memberships(self, device_id: str) -> tuple[Membership, ...]:
        """Every order the device is in, and its role there (a device kind alarm is signalled
        per order). Made on demand: only a signal needs them."""
        node = self.nodes[device_id]
        # The offender of each of its orders, from its pairs there; none: an order with no
        # victim, whose offender it is.
        offenders = {spec.order_id: spec.offender for spec in node.pairs}
        made = []
        for order_id in node.orders:
            offender = offenders.get(order_id, device_id)
            role: Role = "offender" if offender == device_id else "victim"
            made.append(Membership(order_id, offender, role))
        return tuple(made)

    @classmethod
    def build(
        cls,
        orders: Sequence[Order],
        settings: ProximitySettings,
        grid: SnapGrid,
        known_zones: Mapping[str, ZoneSet] = _NO_ZONES,
    ) -> Topology:
        """`known_zones`: the zone sets of the engine before a new version of the orders (same
        settings); an offender whose zones did not change keeps his, as projecting every zone
        again is most of the cost of a new version (docs/benchmarks.md)."""
        pairs: list[PairSpec] = []
        # Device -> each order it is in: (the order's id, its pairs there).
        joined: dict[str, list[tuple[str, tuple[PairSpec, ...]]]] = {}
        offenders: dict[str, None] = {}
        zones_of: dict[str, list[tuple[str, Zone]]] = {}
        exemptions: dict[str, Exemptions] = {}
        # Orders share a few ring sizes: one (frozen) set of parameters per size, not per pair.
        sizes: dict[tuple[float, float], Rings] = {}

        def rings_of(order: Order) -> Rings:
            size = (order.pre_alert_ring_m, order.alarm_m)
            if size not in sizes:
                pre_alert = RingParams.build("proximity_pre_alert", size[0], settings)
                alarm = RingParams.build("proximity_alarm", size[1], settings)
                sizes[size] = Rings(
                    pre_alert,
                    alarm,
                    *(offender_ring(p, grid.worst_error_m) for p in (pre_alert, alarm)),
                )
            return sizes[size]

        for order in orders:
            offender = order.offender_device
            rings = rings_of(order)
            exempt = Exemptions(order) if order.exemption else None
            if exempt is not None:
                exemptions[order.id] = exempt
            zones_of.setdefault(offender, []).extend((order.id, zone) for zone in order.zone)
            made = []
            for index, victim in enumerate(dict.fromkeys(order.victim_devices)):
                made.append(PairSpec(order.id, offender, victim, victim_role(index), rings, exempt))
            specs = tuple(made)
            pairs.extend(specs)
            # A tuple shared by the order's devices: a device in one order keeps it as it is.
            offenders[offender] = None
            joined.setdefault(offender, []).append((order.id, specs))
            for spec in specs:
                # A one-victim order's pairs are hers as well: the same tuple, not a copy.
                mine = specs if len(specs) == 1 else (spec,)
                joined.setdefault(spec.victim, []).append((order.id, mine))
        # One int per place, shared by the ranks and the offenders' ranks.
        places = list(range(len(joined)))
        offender_ranks = {device: places[rank] for rank, device in enumerate(offenders)}
        return cls(
            pairs=tuple(pairs),
            nodes={
                device: _node(device, places[rank], offender_ranks.get(device), joins)
                for rank, (device, joins) in enumerate(joined.items())
            },
            device_ids=list(joined),
            zones={
                device: _zone_set(device, zones, settings, known_zones)
                for device, zones in zones_of.items()
                if zones
            },
            exemptions=exemptions,
        )


def _node(
    device: str,
    rank: int,
    offender_rank: int | None,
    joins: list[tuple[str, tuple[PairSpec, ...]]],
) -> Node:
    if len(joins) == 1:  # the common case: a device in one order
        ((_, specs),) = joins
        said = bool(specs)
    else:
        specs = tuple(spec for _, pair_specs in joins for spec in pair_specs)
        said = all(pair_specs for _, pair_specs in joins)
    victim = any(spec.victim == device for spec in specs)
    other_orders = None if said else tuple(order_id for order_id, _ in joins)
    return Node(rank, offender_rank, victim, specs, other_orders)


def _orders_of(specs: tuple[PairSpec, ...]) -> tuple[str, ...]:
    if len(specs) == 1:  # the common case (asked for every uplink's evidence record)
        return (specs[0].order_id,)
    return tuple(dict.fromkeys(spec.order_id for spec in specs))


def _zone_set(
    device: str,
    zones: list[tuple[str, Zone]],
    settings: ProximitySettings,
    known: Mapping[str, ZoneSet],
) -> ZoneSet:
    reused = known.get(device)
    if reused is not None and reused.source == tuple(zones):
        return reused
    return ZoneSet(device, zones, settings)

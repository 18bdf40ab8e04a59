"""Who is paired with whom, and which zones bind whom: lookups built once from the orders."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import msgspec

from nabij.orders import Order, Zone
from nabij.settings import ProximitySettings
from services.proximity.core.cells import SnapGrid, offender_ring
from services.proximity.core.exemptions import Exemptions
from services.proximity.core.hysteresis import RingParams
from services.proximity.core.state import PairKey, PairState
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


@dataclass(slots=True, eq=False)
class PairSpec:
    """A pair: who, the two rings' parameters (and the offender's, judged on her grid cell:
    `cells`), the order's exemptions, and its state. The state lives here rather than in a
    second dict by the same keys (~50 bytes a pair): only `state` ever changes (not frozen
    for it), the rest is fixed."""

    key: PairKey
    """(order id, offender, victim): the parts are read from it, not kept again (`offender`)."""
    victim_role: str
    """Her role in the order's alarm keys (`victim_role`): her place in the order."""
    rings: Rings
    exemptions: Exemptions | None
    state: PairState
    """Replaced as a whole by the engine (loaded, handed over); changed in place by `pairs`."""

    @property
    def order_id(self) -> str:
        return self.key[0]

    @property
    def offender(self) -> str:
        return self.key[1]

    @property
    def victim(self) -> str:
        return self.key[2]


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
    pairs: dict[PairKey, PairSpec]
    nodes: dict[str, Node]
    """Device -> what the orders say of it, in the order of the orders (`Node.rank`)."""
    device_ids: list[str]
    """The keys of `nodes` by rank, the very strings: for what keeps devices by their place
    (`Agenda`) and hands them back by id."""
    zones: dict[str, ZoneSet]
    """Offender device -> its exclusion zones (only offenders with zones)."""
    exemptions: dict[str, Exemptions]
    """Order id -> its exemption windows (only orders that have some)."""

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
        pairs: dict[PairKey, PairSpec] = {}
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
                key = (order.id, offender, victim)
                pairs[key] = spec = PairSpec(
                    key, victim_role(index), rings, exempt, PairState(*key),
                )  # fmt: skip
                made.append(spec)
            specs = tuple(made)
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
            pairs=pairs,
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
        return (specs[0].key[0],)
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

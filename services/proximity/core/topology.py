"""Who is paired with whom, and which zones bind whom: lookups built once from the orders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from nabij.contract import AlarmKind
from nabij.orders import Order, Zone
from nabij.settings import ProximitySettings
from services.proximity.core.cells import SnapGrid, offender_ring
from services.proximity.core.exemptions import Exemptions
from services.proximity.core.hysteresis import RingParams
from services.proximity.core.state import PairKey
from services.proximity.core.zones import ZoneSet

Role = Literal["offender", "victim"]
_NO_ZONES: Final[Mapping[str, ZoneSet]] = {}


def victim_role(index: int) -> str:
    """The role of the order's `index`-th victim (0-based) in its alarm keys: "victim1", ..."""
    return f"victim{index + 1}"


@dataclass(frozen=True, slots=True)
class Membership:
    """One order a device belongs to, and its role there."""

    order_id: str
    offender_device: str
    role: Role


@dataclass(frozen=True, slots=True)
class PairSpec:
    """The fixed part of a pair: who, the two rings' parameters (and the offender's, judged on
    her grid cell: `cells`), and the order's exemptions."""

    key: PairKey
    order_id: str
    offender: str
    victim: str
    victim_role: str
    """Her role in the order's alarm keys (`victim_role`): her place in the order."""
    pre_alert: RingParams
    alarm: RingParams
    offender_pre_alert: RingParams
    offender_alarm: RingParams
    exemptions: Exemptions | None = None


@dataclass(frozen=True, slots=True)
class Topology:
    pairs: dict[PairKey, PairSpec]
    pairs_of: dict[str, tuple[PairSpec, ...]]
    """Device -> every pair it is in, as offender or victim."""
    memberships: dict[str, tuple[Membership, ...]]
    """Device -> every order it is in (a device kind alarm is signalled per order)."""
    offenders: dict[str, int]
    """Offender device -> its place among the offenders, in the order of the orders."""
    ranks: dict[str, int]
    """Device -> its place in `memberships`. The tick looks at the devices due in these orders,
    so it signals in the order a pass over every device did."""
    role_names: dict[str, Role]
    """For reasons: a device that is offender in any order is called the offender device."""
    zones: dict[str, ZoneSet]
    """Offender device -> its exclusion zones (only offenders with zones)."""
    exemptions: dict[str, Exemptions]
    """Order id -> its exemption windows (only orders that have some)."""

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
        pairs_of: dict[str, list[PairSpec]] = {}
        memberships: dict[str, dict[Membership, None]] = {}
        zones_of: dict[str, list[tuple[str, Zone]]] = {}
        exemptions: dict[str, Exemptions] = {}
        # Orders share a few ring sizes: one (frozen) set of parameters per size, not per pair.
        rings: dict[tuple[AlarmKind, float], tuple[RingParams, RingParams]] = {}

        def ring(kind: AlarmKind, ring_m: float) -> tuple[RingParams, RingParams]:
            """The ring's parameters, and the offender's (judged on her cell: `cells`)."""
            if (kind, ring_m) not in rings:
                params = RingParams.build(kind, ring_m, settings)
                rings[kind, ring_m] = params, offender_ring(params, grid.worst_error_m)
            return rings[kind, ring_m]

        for order in orders:
            offender = order.offender_device
            pre_alert, offender_pre_alert = ring("proximity_pre_alert", order.pre_alert_ring_m)
            alarm, offender_alarm = ring("proximity_alarm", order.alarm_m)
            exempt = Exemptions(order) if order.exemption else None
            if exempt is not None:
                exemptions[order.id] = exempt
            memberships.setdefault(offender, {})[Membership(order.id, offender, "offender")] = None
            zones_of.setdefault(offender, []).extend((order.id, zone) for zone in order.zone)
            for index, victim in enumerate(dict.fromkeys(order.victim_devices)):
                key = (order.id, offender, victim)
                spec = PairSpec(
                    key, order.id, offender, victim, victim_role(index), pre_alert, alarm,
                    offender_pre_alert, offender_alarm, exempt,
                )  # fmt: skip
                pairs[key] = spec
                pairs_of.setdefault(offender, []).append(spec)
                pairs_of.setdefault(victim, []).append(spec)
                memberships.setdefault(victim, {})[Membership(order.id, offender, "victim")] = None
        offenders = {
            device: rank
            for rank, device in enumerate(dict.fromkeys(order.offender_device for order in orders))
        }
        return cls(
            pairs=pairs,
            pairs_of={device: tuple(specs) for device, specs in pairs_of.items()},
            memberships={device: tuple(ms) for device, ms in memberships.items()},
            offenders=offenders,
            ranks={device: rank for rank, device in enumerate(memberships)},
            # A dict to test against: over a tuple this was quadratic (minutes at 75,000 orders).
            role_names={
                device: "offender" if device in offenders else "victim" for device in memberships
            },
            zones={
                device: _zone_set(device, zones, settings, known_zones)
                for device, zones in zones_of.items()
                if zones
            },
            exemptions=exemptions,
        )


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

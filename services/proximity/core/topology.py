"""Who is paired with whom: lookups built once from the orders, read on every fix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from nabij.config import Order, ProximitySettings
from services.proximity.core.hysteresis import RingParams
from services.proximity.core.state import PairKey

Role = Literal["offender", "victim"]


@dataclass(frozen=True, slots=True)
class Membership:
    """One order a device belongs to, and its role there."""

    order_id: str
    offender_device: str
    role: Role


@dataclass(frozen=True, slots=True)
class PairSpec:
    """The fixed part of a pair: who, and the two rings' parameters."""

    key: PairKey
    order_id: str
    offender: str
    victim: str
    pre_alert: RingParams
    alarm: RingParams


@dataclass(frozen=True, slots=True)
class Topology:
    pairs: dict[PairKey, PairSpec]
    pairs_of: dict[str, tuple[PairSpec, ...]]
    """Device -> every pair it is in, as offender or victim."""
    memberships: dict[str, tuple[Membership, ...]]
    """Device -> every order it is in (a device kind alarm is signalled per order)."""
    offenders: tuple[str, ...]
    role_names: dict[str, Role]
    """For reasons: a device that is offender in any order is called the offender device."""

    @classmethod
    def build(cls, orders: Sequence[Order], settings: ProximitySettings) -> Topology:
        pairs: dict[PairKey, PairSpec] = {}
        pairs_of: dict[str, list[PairSpec]] = {}
        memberships: dict[str, dict[Membership, None]] = {}
        for order in orders:
            offender = order.offender_device
            pre_alert = RingParams.build("proximity_pre_alert", order.pre_alert_ring_m, settings)
            alarm = RingParams.build("proximity_alarm", order.alarm_m, settings)
            memberships.setdefault(offender, {})[Membership(order.id, offender, "offender")] = None
            for victim in dict.fromkeys(order.victim_devices):
                key = (order.id, offender, victim)
                spec = PairSpec(key, order.id, offender, victim, pre_alert, alarm)
                pairs[key] = spec
                pairs_of.setdefault(offender, []).append(spec)
                pairs_of.setdefault(victim, []).append(spec)
                memberships.setdefault(victim, {})[Membership(order.id, offender, "victim")] = None
        offenders = tuple(dict.fromkeys(order.offender_device for order in orders))
        return cls(
            pairs=pairs,
            pairs_of={device: tuple(specs) for device, specs in pairs_of.items()},
            memberships={device: tuple(ms) for device, ms in memberships.items()},
            offenders=offenders,
            role_names={
                device: "offender" if device in offenders else "victim" for device in memberships
            },
        )

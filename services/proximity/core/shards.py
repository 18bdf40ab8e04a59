"""Which proximity shard judges which orders: pairs kept together, by the order graph.

Devices are the nodes, orders the edges (an offender device to each of its victims' devices). A
connected component (an offender with several victims, a victim protected by several orders) is
judged by one shard, because each decision about it reads both devices' state: the component
goes to shard `1 + sha256(smallest device id) mod N`. The hash does not depend on the process,
the order of the orders, or Python's hash seed, so every shard (and the console) agrees. A
device in no order is a component of its own: the shard it hashes to reports it unknown, the
others leave it alone.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from nabij.keys import Shard
from nabij.orders import AnyOrder, HeldOrder, held_orders
from nabij.settings import PlatformSettings


def components(orders: Iterable[AnyOrder]) -> dict[str, str]:
    """Each device of `orders` -> its component's name (the component's smallest device id)."""
    parent: dict[str, str] = {}

    def root(device: str) -> str:
        parent.setdefault(device, device)
        while parent[device] != device:
            parent[device] = parent[parent[device]]
            device = parent[device]
        return device

    for order in orders:
        for victim in order.victim_devices:
            a, b = root(order.offender_device), root(victim)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {device: root(device) for device in list(parent)}


def shard_index(component: str, count: int) -> int:
    """The shard (1-based) of a component, by its name."""
    digest = hashlib.sha256(component.encode()).digest()
    return 1 + int.from_bytes(digest[:8], "big") % count


class Ownership:
    """What one shard owns under a set of orders. Every shard holds one for every shard's
    orders, so it keeps a single map by device, and none by order. A single process (count 1)
    keeps no map at all: every device is its own, in an order or not."""

    def __init__(self, orders: Iterable[AnyOrder], shard: Shard) -> None:
        self._orders = held_orders(orders)  # every shard's: the compact form
        self._shard = shard
        self._owned_orders = (
            self._orders
            if shard.count == 1
            else tuple(o for o in self._orders if self.owns_device(o.offender_device))
        )

    @cached_property
    def _shard_by_device(self) -> dict[str, int]:
        # Worked out once: a hash per device and call cost a shard's main loop ~2 us an order.
        # A single process builds it only if `in_some_order` is asked.
        return {
            device: shard_index(component, self._shard.count)
            for device, component in components(self._orders).items()
        }

    def shard_of(self, device_id: str) -> int:
        if self._shard.count == 1:
            return 1
        shard = self._shard_by_device.get(device_id)
        return shard_index(device_id, self._shard.count) if shard is None else shard

    def shard_of_in(self, device_id: str, count: int) -> int:
        """The shard of a device's component had there been `count` shards (a re-shard)."""
        return shard_index(self._component.get(device_id, device_id), count)

    @cached_property
    def _component(self) -> dict[str, str]:
        # Only a re-shard's plan asks (`nabij layout`), never a running shard.
        return components(self._orders)

    def owns_device(self, device_id: str) -> bool:
        return self.shard_of(device_id) == self._shard.index

    def elsewhere(self, device_id: str) -> bool:
        """A device another shard judges (or reports unknown)."""
        return not self.owns_device(device_id)

    def orders(self) -> tuple[HeldOrder, ...]:
        """The orders this shard judges (both ends of each are in one component)."""
        return self._owned_orders

    @property
    def shard(self) -> Shard:
        return self._shard

    def all_orders(self) -> tuple[HeldOrder, ...]:
        """Every shard's orders."""
        return self._orders

    def in_some_order(self, device_id: str) -> bool:
        return device_id in self._shard_by_device

    def judges(self) -> dict[str, int]:
        """Order id -> the shard that judges it; worked out on each call (a hand-over's), as
        keeping it would cost every shard an entry per order of every shard."""
        return {o.id: self.shard_of(o.offender_device) for o in self._orders}

    def devices(self) -> set[str]:
        """The devices of the orders this shard judges, in force or not."""
        return {d for o in self._owned_orders for d in (o.offender_device, *o.victim_devices)}


@dataclass(frozen=True, slots=True)
class Handover:
    """One shard's part in a step from one orders version to the next while every shard runs
    (`handover_plan`; docs/architecture.md, "Live hand-over"). Devices of an order judged by
    another shard before the step are `incoming` from it, devices this shard judged that another
    one judges after it are `outgoing` to it. Until the sources have handed over, the shard
    judges the `interim` orders (every one whose devices it holds); from the adoption on,
    `final`."""

    incoming: Mapping[int, frozenset[str]]
    """Source shard -> its devices that this shard judges after the step."""
    outgoing: Mapping[int, frozenset[str]]
    """Destination shard -> this shard's devices that it judges after the step."""
    adopted: Mapping[int, tuple[HeldOrder, ...]]
    """Source shard -> the orders it judged before the step that this shard judges after it (as
    they were before: their pair state comes from the source, and the step's change of them is
    judged here once adopted)."""
    moved: frozenset[str]
    """This shard's orders that another shard judges after the step: dropped here without a
    clear (their alarms go on there)."""
    replaced: frozenset[str]
    """This shard's orders, judged here after the step too, that it cannot judge in between
    (the order now has a device of another shard and lost one of its own): cleared as
    `order_changed` at the release, judged afresh at the adoption."""
    interim: tuple[HeldOrder, ...]
    final: tuple[HeldOrder, ...]

    @property
    def moves(self) -> bool:
        """Whether the step hands anything over, in either direction."""
        return bool(self.incoming or self.outgoing or self.adopted or self.moved)

    @property
    def sources(self) -> frozenset[int]:
        return frozenset(self.incoming) | frozenset(self.adopted)

    @property
    def arriving(self) -> frozenset[str]:
        return frozenset().union(*self.incoming.values())

    @property
    def leaving(self) -> frozenset[str]:
        return frozenset().union(*self.outgoing.values())


def handover_plan(before: Ownership, after: Ownership) -> Handover:
    """What one shard hands over and takes over when the orders go from `before` to `after`
    (both of the same shard and layout). Pure; every shard works out its side of the same
    step, and each side matches the other's."""
    shard = after.shard.index
    if after.shard.count == 1:
        # Nothing to hand over alone; and no set of every device, before and after, at the peak.
        return Handover({}, {}, {}, frozenset(), frozenset(), after.orders(), after.orders())
    mine_before, mine_after = before.devices(), after.devices()
    incoming: dict[int, set[str]] = {}
    for device in mine_after - mine_before:
        if before.in_some_order(device):
            incoming.setdefault(before.shard_of(device), set()).add(device)
    outgoing: dict[int, set[str]] = {}
    for device in mine_before - mine_after:
        if after.in_some_order(device):
            outgoing.setdefault(after.shard_of(device), set()).add(device)
    arriving = frozenset().union(*incoming.values())
    leaving = frozenset().union(*outgoing.values())
    judge_after = after.judges()
    adopted: dict[int, list[HeldOrder]] = {}
    for order in before.all_orders():
        source = before.shard_of(order.offender_device)
        if source != shard and judge_after.get(order.id) == shard:
            adopted.setdefault(source, []).append(order)
    adopted_ids = {o.id for orders in adopted.values() for o in orders}
    pending = {
        o.id for o in after.orders() if o.id in adopted_ids or arriving & set(_devices_of(o))
    }
    kept_before = [o for o in before.orders() if o.id in pending]
    held = [o for o in kept_before if not leaving & set(_devices_of(o))]
    return Handover(
        incoming={k: frozenset(v) for k, v in incoming.items()},
        outgoing={k: frozenset(v) for k, v in outgoing.items()},
        adopted={k: tuple(v) for k, v in adopted.items()},
        moved=frozenset(
            o.id for o in before.orders() if judge_after.get(o.id) not in (None, shard)
        ),
        replaced=frozenset(o.id for o in kept_before) - {o.id for o in held},
        interim=tuple(o for o in after.orders() if o.id not in pending) + tuple(held),
        final=after.orders(),
    )


def _devices_of(order: AnyOrder) -> tuple[str, ...]:
    return (order.offender_device, *order.victim_devices)


def platform_judge(shard: Shard) -> bool:
    """Whether this shard judges if nabij is blind (`platform_degraded`/`restored`) for the whole
    system: shard 1 of any layout, so an outage is told once, not once per shard. Components go
    to shards by a hash, not by place, so shard 1's devices are a random 1/N of the fleet: an
    outage that blinds a share of the fleet blinds that share of them, and the broker link is
    the same for every shard."""
    return shard.index == 1


def platform_settings(settings: PlatformSettings, shard: Shard) -> PlatformSettings | None:
    """The platform watch's settings for this shard: None where another shard judges; for the
    judge, the group trigger scaled to its 1/N share of the devices (at least 2)."""
    if not platform_judge(shard):
        return None
    scaled = max(2, math.ceil(settings.group_min_devices / shard.count))
    return settings.model_copy(update={"group_min_devices": scaled})

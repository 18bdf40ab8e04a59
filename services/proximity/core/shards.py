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
from collections.abc import Iterable

from nabij.keys import Shard
from nabij.orders import Order
from nabij.settings import PlatformSettings


def components(orders: Iterable[Order]) -> dict[str, str]:
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
    """What one shard owns under a set of orders."""

    def __init__(self, orders: Iterable[Order], shard: Shard) -> None:
        self._orders = tuple(orders)
        self._shard = shard
        self._component = components(self._orders)
        # Worked out once: a hash per device and call cost the main loop ~2 us an order.
        self._shard_by_device = {device: self.shard_of(device) for device in self._component}
        self._owned_orders = tuple(o for o in self._orders if self.owns_device(o.offender_device))

    def shard_of(self, device_id: str) -> int:
        return self.shard_of_in(device_id, self._shard.count)

    def shard_of_in(self, device_id: str, count: int) -> int:
        """The shard of a device's component had there been `count` shards (a re-shard)."""
        return shard_index(self._component.get(device_id, device_id), count)

    def owns_device(self, device_id: str) -> bool:
        shard = self._shard_by_device.get(device_id)
        return (shard or self.shard_of(device_id)) == self._shard.index

    def elsewhere(self, device_id: str) -> bool:
        """A device another shard judges (or reports unknown)."""
        return not self.owns_device(device_id)

    def orders(self) -> tuple[Order, ...]:
        """The orders this shard judges (both ends of each are in one component)."""
        return self._owned_orders

    def devices(self) -> set[str]:
        """The devices of the orders this shard judges, in force or not."""
        return {d for o in self._owned_orders for d in (o.offender_device, *o.victim_devices)}


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

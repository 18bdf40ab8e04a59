"""What the proximity service appends to its evidence chain for one batch (pure).

Every message with an accepted uplink, raw as received (the device's own time, boot and seq are
in it) with the topic and nabij's receipt time; every signal (a decision that opens, updates or
clears a ring or zone alarm); every device command. Each record names the orders it is about.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import msgspec

from nabij.contract import DeviceCommand, Topics, encode
from nabij.evidence.chain import Entry
from nabij.orders import Order
from services.proximity.core.effects import Effects
from services.proximity.intake import Received

_NO_ORDERS: Final[tuple[str, ...]] = ()


class UplinkData(msgspec.Struct, frozen=True):
    topic: str
    received_ms: int
    payload: msgspec.Raw


class CommandData(msgspec.Struct, frozen=True):
    device: str
    command: DeviceCommand


_encoder: Final = msgspec.json.Encoder()


def orders_by_device(orders: Sequence[Order]) -> dict[str, tuple[str, ...]]:
    """Device id -> the ids of the orders it belongs to."""
    found: dict[str, list[str]] = {}
    for order in orders:
        for device in (order.offender_device, *order.victim_devices):
            found.setdefault(device, []).append(order.id)
    return {device: tuple(ids) for device, ids in found.items()}


def batch_entries(
    accepted: Sequence[Received],
    effects: Effects,
    topics: Topics,
    orders_of: Mapping[str, tuple[str, ...]],
    now_ms: int,
) -> list[Entry]:
    entries = []
    for item in accepted:
        parsed = topics.parse(item.topic)
        orders = orders_of.get(parsed[0], _NO_ORDERS) if parsed else _NO_ORDERS
        data = UplinkData(item.topic, item.received_ms, msgspec.Raw(item.payload))
        entries.append(Entry("uplink", item.received_ms, orders, _encoder.encode(data)))
    for signal in effects.signals:
        entries.append(Entry("decision", now_ms, (signal.order_id,), encode(signal)))
    for device_id, command in effects.commands:
        data_c = CommandData(device_id, command)
        orders = orders_of.get(device_id, _NO_ORDERS)
        entries.append(Entry("command", now_ms, orders, _encoder.encode(data_c)))
    return entries

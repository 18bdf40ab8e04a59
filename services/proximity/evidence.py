"""What the proximity service appends to its evidence chain for one batch (pure).

Every message with an accepted uplink, raw as received (the device's own time, boot and seq are
in it) with the topic and nabij's receipt time; every signal (a decision that opens, updates or
clears a ring or zone alarm); every device command. Each record names the orders it is about.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgspec

from nabij.contract import DeviceCommand, Topics, concerned_orders, encode
from nabij.evidence.chain import Entry
from nabij.orders import Order
from services.proximity.core.effects import Effects
from services.proximity.intake import Received

_NO_ORDERS: Final[tuple[str, ...]] = ()


class UplinkData(msgspec.Struct, frozen=True):
    """The data of an uplink record (`BatchRecorder` assembles it from bytes, in this order)."""

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


class BatchRecorder:
    """The records of a batch, for one set of orders (the shell makes a new one when they
    change). Nothing is kept per topic: a million pairs' topics would hold ~0.5 KB a pair."""

    def __init__(self, topics: Topics, orders: Sequence[Order]) -> None:
        self._topics = topics
        self._orders_of = orders_by_device(orders)

    def entries(self, accepted: Sequence[Received], effects: Effects, now_ms: int) -> list[Entry]:
        entries = []
        for item in accepted:
            parsed = self._topics.parse(item.topic)  # its own cache is bounded
            orders = self._orders_of.get(parsed[0], _NO_ORDERS) if parsed else _NO_ORDERS
            data = b"".join(
                (
                    b'{"topic":',
                    _encoder.encode(item.topic),
                    b',"received_ms":',
                    str(item.received_ms).encode(),
                    b',"payload":',
                    item.payload,
                    b"}",
                )
            )
            entries.append(Entry("uplink", item.received_ms, orders, data))
        for signal in effects.signals:
            orders = concerned_orders(signal.order_id, signal.orders)
            entries.append(Entry("decision", now_ms, orders, encode(signal)))
        for device_id, command in effects.commands:
            data_c = _encoder.encode(CommandData(device_id, command))
            orders = self._orders_of.get(device_id, _NO_ORDERS)
            entries.append(Entry("command", now_ms, orders, data_c))
        return entries

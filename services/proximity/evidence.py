"""What the proximity service appends to its evidence chain for one batch (pure).

Every message with an accepted uplink, raw as received (the device's own time, boot and seq are
in it) with the topic and nabij's receipt time; every signal (a decision that opens, updates or
clears a ring or zone alarm); every device command. Each record names the orders it is about.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import msgspec

from nabij.contract import DeviceCommand, Topics, concerned_orders, encode
from nabij.evidence.chain import Entry
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


class BatchRecorder:
    """The records of a batch. Nothing is kept per topic or per device: a million pairs'
    topics would hold ~0.5 KB a pair, a dict of each device's orders ~0.2 KB; the engine of the
    orders in force says which orders a device is in (`orders_of`)."""

    def __init__(self, topics: Topics, orders_of: Callable[[str], tuple[str, ...]]) -> None:
        self._topics = topics
        self._orders_of = orders_of

    def entries(self, accepted: Sequence[Received], effects: Effects, now_ms: int) -> list[Entry]:
        entries = []
        for item in accepted:
            parsed = self._topics.parse(item.topic)  # its own cache is bounded
            orders = self._orders_of(parsed[0]) if parsed else _NO_ORDERS
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
            orders = self._orders_of(device_id)
            entries.append(Entry("command", now_ms, orders, data_c))
        return entries

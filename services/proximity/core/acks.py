"""What nabij tells a device it may forget: how far its messages are committed.

A device keeps every fix and event until nabij confirms it (`Committed`), because an MQTT
broker acknowledges a QoS 1 message on receipt but may lose it in a crash before nabij has it.
The confirmation is cumulative, one per device heard in a batch (never one per message): "every
message up to `seq` of `boot` is committed". A redelivery or a re-send counts as heard, so a
device whose confirmation was lost is told again and stops re-sending.
"""

from __future__ import annotations

from collections.abc import Iterable

from nabij.contract import Committed
from services.proximity.core.state import DeviceState


def committed_acks(
    devices: Iterable[DeviceState],
) -> list[tuple[str, Committed]]:
    """(device_id, confirmation) for each device state as it stands after the batch's commit:
    up to the highest seq below which nothing is missing (a gap, e.g. messages a broker lost
    while later ones came through, holds it back until the device's re-send fills it)."""
    acks = []
    for device in devices:
        upto = device.committed_upto()
        if upto >= 0:
            acks.append((device.device_id, Committed(seq=upto, boot=device.boot)))
    return acks

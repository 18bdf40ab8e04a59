"""The engine's device states, held encoded ("cold") while no batch works on them.

A live `DeviceState` with its parts costs ~850 bytes; the same state encoded as the shell stores
it in Redis (`encoded_device`, format 8) ~165 at a fix a minute, in one `bytes`. A device sends
a fix a minute or so, and is idle in between: so `DeviceTable` keeps each device as its blob,
after its rank in its record (`Topology.records`), decodes it when the engine looks at it
("thawed": the live object, kept while the batch goes on) and encodes every thawed one back at
the batch's end (`freeze`, called by the shell). A device never heard is kept as its rank
alone (its default state), no blob.

Nothing a freeze does is seen by the decisions: a state decodes to an equal state, so the same
inputs give the same effects whether or not a freeze came between them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

from services.proximity.core.state import DeviceState, decoded_device, encoded_device
from services.proximity.core.topology import RANK_BYTES


class DeviceTable:
    """Device id -> its state, for the devices in force: `table[id]` and `get` return the live
    state (thawing it); `freeze` encodes every thawed state back. Reading every state (`states`)
    decodes them on the fly and keeps none."""

    __slots__ = ("_buffer", "_records", "_thawed")

    def __init__(self, records: dict[str, bytes]) -> None:
        """`records`: every device in force -> its rank, then its state as of the last freeze
        (nothing: never heard): the topology's own dict (`Topology.records`), whose states this
        table writes, not a second one by the same keys."""
        self._records = records
        self._thawed: dict[str, DeviceState] = {}
        """The states taken out since: the live ones, newer than their record's."""
        self._buffer = bytearray()
        """Where `freeze` encodes (`encoded_device`): `encode` may return its working buffer,
        up to ~50% larger than what it holds; a copy of this is the size of the state."""

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __getitem__(self, device_id: str) -> DeviceState:
        try:
            return self._thawed[device_id]
        except KeyError:
            return self._thaw(device_id)

    def get(self, device_id: str) -> DeviceState | None:
        device = self._thawed.get(device_id)
        if device is None and device_id in self._records:
            return self._thaw(device_id)
        return device

    def __setitem__(self, device_id: str, device: DeviceState) -> None:
        """Put a state in place of a device's (loaded or handed over): live until the freeze."""
        if device_id not in self._records:
            raise KeyError(device_id)
        self._thawed[device_id] = device

    def _thaw(self, device_id: str) -> DeviceState:
        device = self._read(device_id, self._records[device_id])
        self._thawed[device_id] = device
        return device

    @staticmethod
    def _read(device_id: str, record: bytes) -> DeviceState:
        if len(record) == RANK_BYTES:
            return DeviceState(device_id)  # never heard
        return decoded_device(device_id, record[RANK_BYTES:])

    def peek(self, device_id: str) -> DeviceState:
        """The state to read, not to change: the live one if thawed, else decoded and not kept
        (a change to it is lost)."""
        device = self._thawed.get(device_id)
        if device is None:
            return self._read(device_id, self._records[device_id])
        return device

    def freeze(self) -> None:
        """Encode every thawed state back into its record, after its rank, and let the objects
        go. All of them, not only those an `Effects` names as changed: whatever was changed is
        never lost."""
        records, buffer = self._records, self._buffer
        for device_id, device in self._thawed.items():
            buffer[:RANK_BYTES] = records[device_id][:RANK_BYTES]
            records[device_id] = encoded_device(device, buffer, RANK_BYTES)
        self._thawed.clear()

    def encoded(self, device_id: str) -> bytes:
        """The state as the shell stores it: after a `freeze`, the one it encoded (no encoding
        again for the commit: a copy of its record's)."""
        device = self._thawed.get(device_id)
        record = self._records[device_id]
        if device is None and len(record) > RANK_BYTES:
            return record[RANK_BYTES:]
        return encoded_device(
            self._read(device_id, record) if device is None else device, self._buffer
        )

    def take_over(self, other: DeviceTable) -> list[str]:
        """Take `other`'s state of every device both hold, as it is held there (a record is
        shared while the device keeps its rank, else its state is copied under the new rank,
        never decoded; a live state stays live); returns those devices, in `other`'s order."""
        records, thawed, taken = self._records, self._thawed, []
        for device_id, theirs in other._records.items():
            if (mine := records.get(device_id)) is not None:
                rank = mine[:RANK_BYTES]
                records[device_id] = (
                    theirs if theirs.startswith(rank) else rank + theirs[RANK_BYTES:]
                )
                taken.append(device_id)
        for device_id, device in other._thawed.items():
            if device_id in records:
                thawed[device_id] = device
        return taken

    def states(self) -> Sequence[DeviceState]:
        """Every state, in the table's order, to read (`peek`): none is thawed into the table,
        so a count over all of them (the census) holds one at a time."""
        return _States(self, list(self._records))


class _States(Sequence[DeviceState]):
    """The table's states by position, each decoded as it is asked for (`DeviceTable.peek`)."""

    __slots__ = ("_ids", "_table")

    def __init__(self, table: DeviceTable, device_ids: list[str]) -> None:
        self._table, self._ids = table, device_ids

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, index: int) -> DeviceState: ...
    @overload
    def __getitem__(self, index: slice) -> list[DeviceState]: ...
    def __getitem__(self, index: int | slice) -> DeviceState | list[DeviceState]:
        if isinstance(index, slice):
            return [self._table.peek(device_id) for device_id in self._ids[index]]
        return self._table.peek(self._ids[index])

    def __iter__(self) -> Iterator[DeviceState]:
        return map(self._table.peek, self._ids)

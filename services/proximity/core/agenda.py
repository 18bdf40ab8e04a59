"""When each device next needs a look from the tick, so the tick takes the devices due and no
others (a shard of 75,000 pairs otherwise spends a tenth of every second walking them all).

A timer wheel of one-second slots: each slot a list of devices, the slots ordered by a heap of
their numbers. A device is booked in one slot at most (a slot it left keeps it listed, skipped
when taken: cheaper than a set, in time and memory). Booking is lazy: only an earlier due time (or
none) moves a device, so the input of a device that keeps reporting, which only moves its due
time later, costs a look-up and no move; the tick then takes it early, once a limit, and its
owners, finding it not due yet from its state, book it again. Owners that book the same device
share an agenda: it keeps the sooner of their times. Nothing here is persisted: after a restart
the owners book every device again from their states.

The due times are one array of 64-bit ints by the devices' places (`Topology.rank`), not a
dict of int objects: ~130 bytes a pair less, every device in force being booked while it
reports. A device is booked by its place, which its owner has at hand (`Topology.rank` unpacks
it), and the slots list places too (4 bytes, not a pointer); a take names the devices by the
topology's own id strings, never by a string an input came with (a fix's), which a slot listing
it would keep alive for as long as it is booked (~110 bytes a pair). An agenda that books few
of its devices at a time (`sparse`: the faults') keeps their due times in a dict instead, holding
nothing for the others (16 bytes a pair less).
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Sequence
from typing import Final

SLOT_MS: Final = 1000

ALWAYS: Final = -(1 << 62)
"""A due time before any tick: the device needs a look whatever the clock says."""
_UNBOOKED: Final = (1 << 63) - 1
"""In `_due`: the device is not booked (no due time is this late)."""
_PLACE: Final = "I"
"""The slots' type code: a place in 32 bits unsigned (4 billion devices)."""


class _SparseDue(dict[int, int]):
    """Place -> due time of the booked devices only; `_UNBOOKED` for any other, and setting
    it drops the place."""

    def __missing__(self, place: int) -> int:
        return _UNBOOKED

    def __setitem__(self, place: int, due_ms: int) -> None:
        if due_ms == _UNBOOKED:
            self.pop(place, None)
        else:
            super().__setitem__(place, due_ms)


class Agenda:
    __slots__ = ("_booked", "_due", "_ids", "_order", "_slots")

    def __init__(self, device_ids: Sequence[str], *, sparse: bool = False) -> None:
        """`device_ids`: every device that may be booked, by its place (from 0 up): the strings
        `take` hands back (shared, not copied). `sparse`: few are booked at a time."""
        self._ids = device_ids
        self._due: array[int] | _SparseDue = (
            _SparseDue() if sparse else array("q", [_UNBOOKED]) * len(device_ids)
        )
        """Place -> when the device is due (`_UNBOOKED`: it is not booked)."""
        self._booked = 0
        self._slots: dict[int, array[int]] = {}
        """Slot number -> the places of the devices booked in it. An array, not a set (a set's
        table is four times its devices, kept at its largest size): a device moved out of its
        slot, or no longer booked, stays listed there until the slot's time, and the take skips
        it (its `_due` says where it is booked now)."""
        self._order: list[int] = []
        """The numbers of the slots in `_slots`, a heap."""

    def __len__(self) -> int:
        return self._booked

    def book(self, place: int, due_ms: int | None) -> None:
        """The device at `place` needs a look once server time reaches `due_ms` (None: no look),
        or earlier: a booking already due sooner stays (the owner's look must bear an early
        take)."""
        due = self._due
        booked = due[place]
        if booked != _UNBOOKED:
            if due_ms is not None and due_ms >= booked:
                return  # the common case: a device that keeps reporting
            if due_ms is None:
                due[place] = _UNBOOKED
                self._booked -= 1
                return
        elif due_ms is None:
            return
        else:
            self._booked += 1
        due[place] = due_ms
        number = due_ms // SLOT_MS
        if booked != _UNBOOKED and booked // SLOT_MS == number:
            return  # moved within its slot: listed there already
        members = self._slots.get(number)
        if members is None:
            self._slots[number] = members = array(_PLACE)
            heapq.heappush(self._order, number)
        members.append(place)

    def take(self, now_ms: int) -> list[str]:
        """The devices due at `now_ms`, no longer booked: the owner books each again after its
        look. One due later stays booked, whichever way the clock moved since the last call."""
        current = now_ms // SLOT_MS
        due, ids, slots, order = self._due, self._ids, self._slots, self._order
        taken: list[str] = []
        later = array(_PLACE)
        while order and order[0] <= current:
            number = heapq.heappop(order)
            for place in slots.pop(number):
                at = due[place]
                if at == _UNBOOKED or at // SLOT_MS != number:
                    continue  # moved to another slot, no longer booked, or listed twice
                if at > now_ms:  # in the slot of this second, due later in it
                    later.append(place)
                else:
                    taken.append(ids[place])
                    due[place] = _UNBOOKED  # a second listing of it is skipped
        self._booked -= len(taken)
        if later:
            slots[current] = later
            heapq.heappush(order, current)
        return taken

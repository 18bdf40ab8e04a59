"""`device_fault`: a device that misbehaves in a way that would otherwise show only in a metric.

Two causes, each raised once it has persisted for `fault_dwell_s` of server time:
- **clock**: live fixes stamped more than `clock_fault_s` off nabij's clock. Protection goes on
  (positions are placed by receive time), but its reports of when things happened are suspect.
- **refused**: messages refused (invalid, out of order, an implausible counter) with nothing
  accepted in between: the device's position is no longer being updated.
The alarm clears when no cause holds any more (a live fix with a sane clock, an accepted message).
"""

from __future__ import annotations

from typing import Final

from nabij.contract import SignalAction
from nabij.settings import ProximitySettings
from services.proximity.core.agenda import ALWAYS, Agenda
from services.proximity.core.devices import DeviceTable
from services.proximity.core.effects import Effects
from services.proximity.core.signals import device_signal
from services.proximity.core.state import RARE_DEFAULTS, DeviceState
from services.proximity.core.topology import Topology

REFUSED_MIN: Final = 3
"""A single refused message is an incident for the dead letters; this many in a row a fault."""


class DeviceFaults:
    def __init__(
        self, topology: Topology, devices: DeviceTable, settings: ProximitySettings
    ) -> None:
        self._topology = topology
        self._devices = devices  # shared with the engine
        self._clock_limit_ms = round(settings.clock_fault_s * 1000)
        self._dwell_ms = round(settings.fault_dwell_s * 1000)
        # Only a device with a fault's cause is booked: a few at a time.
        self._agenda = Agenda(topology.device_ids, sparse=True)

    def on_accepted(
        self, device: DeviceState, *, live: bool, now_ms: int, effects: Effects
    ) -> None:
        """A message was accepted; `live` fixes also tell whether the device clock is off."""
        # Its causes are rare fields: read without a call (`RARE_DEFAULTS`), written only to
        # change them, so a device that never misbehaved gets no `rare`.
        rare = device.rare or RARE_DEFAULTS
        if rare.refused_since_ms is not None:
            device.refused = 0
            device.refused_since_ms = None
            device.refused_reason = None
        if live and device.clock_offset_ms is not None:
            if abs(device.clock_offset_ms) <= self._clock_limit_ms:
                if rare.clock_off_since_ms is not None:
                    device.clock_off_since_ms = None
            elif rare.clock_off_since_ms is None:
                device.clock_off_since_ms = now_ms
        rare = device.rare or RARE_DEFAULTS
        if rare.faults or rare.clock_off_since_ms is not None:
            self._settle(device, now_ms, effects)

    def on_refused(self, device: DeviceState, reason: str, now_ms: int, effects: Effects) -> None:
        """A message of the device was refused or ignored as out of order."""
        device.refused += 1
        device.refused_reason = reason
        if device.refused_since_ms is None:
            device.refused_since_ms = now_ms
        # Soft state: written with the device's next change, never a commit of its own, so junk
        # costs no state write (and cannot block on a full Redis); a restart only restarts the
        # count. Raising the fault changes the device (`_settle`).
        self._settle(device, now_ms, effects)

    def tick(self, now_ms: int, effects: Effects) -> None:
        """Raise the causes whose dwell has passed since the last message: only the devices
        due (`book`), in the order a pass over all of them took."""
        rank = self._topology.rank
        for place, device_id in sorted((rank(d), d) for d in self._agenda.take(now_ms)):
            device = self._devices[device_id]
            if device.clock_off_since_ms is not None or device.refused_since_ms is not None:
                self._settle(device, now_ms, effects)
            self.book(device, place)

    def book(self, device: DeviceState, rank: int) -> None:
        """Index the device (at `rank`) again after a change: when its causes next differ from
        its open alarm's (None: never, until an input), so the tick settles it then (`Agenda`)."""
        self._agenda.book(rank, self._due(device))

    def _due(self, device: DeviceState) -> int | None:
        rare = device.rare or RARE_DEFAULTS
        sinces = (rare.clock_off_since_ms, rare.refused_since_ms)
        if sinces == (None, None):
            return None  # the common case: the tick leaves the device alone
        # Between these times the causes stay as they are (each dwell passes at one of them).
        passed = sorted(since + self._dwell_ms for since in sinces if since is not None)
        for at in (ALWAYS, *passed):
            if self._causes(device, at) != device.faults:
                return at
        return None

    def _causes(self, device: DeviceState, now_ms: int) -> tuple[str, ...]:
        """Causes that hold now: a raised one until its condition is gone, a new one once its
        dwell has passed."""
        causes = []
        off_since = device.clock_off_since_ms
        if off_since is not None and (
            "clock" in device.faults or now_ms - off_since >= self._dwell_ms
        ):
            causes.append("clock")
        refused_since = device.refused_since_ms
        if refused_since is not None and (
            "refused" in device.faults
            or (device.refused >= REFUSED_MIN and now_ms - refused_since >= self._dwell_ms)
        ):
            causes.append("refused")
        return tuple(causes)

    def _settle(self, device: DeviceState, now_ms: int, effects: Effects) -> None:
        causes = self._causes(device, now_ms)
        if causes == device.faults:
            return
        opening = not device.faults
        device.faults = causes
        effects.changed_devices.add(device.device_id)
        if causes and not opening:
            return  # still faulty, for another cause: the open alarm stands
        action: SignalAction = "open" if causes else "clear"
        reason = self._reason(device, causes, now_ms) if causes else self._cleared(device)
        tag = f"{device.tag(device.last_seq)}|fault@{now_ms}"
        for membership in self._topology.memberships(device.device_id):
            effects.signals.append(
                device_signal(
                    "device_fault",
                    action,
                    device.device_id,
                    membership,
                    tag=tag,
                    now_ms=now_ms,
                    reason=reason,
                    offender=self._devices.peek(membership.offender_device).fix,
                )
            )

    def _reason(self, device: DeviceState, causes: tuple[str, ...], now_ms: int) -> str:
        who = f"{self._topology.role(device.device_id).capitalize()} device {device.device_id}"
        parts = []
        if "clock" in causes and device.clock_offset_ms is not None:
            off_s = abs(device.clock_offset_ms) // 1000
            way = "behind" if device.clock_offset_ms > 0 else "ahead of"
            parts.append(
                f"its clock is {off_s} s {way} nabij's (positions are placed by time of receipt)"
            )
        if "refused" in causes and device.refused_since_ms is not None:
            for_s = (now_ms - device.refused_since_ms) // 1000
            parts.append(
                f"{device.refused} messages refused in {for_s} s with none accepted "
                f"(last: {device.refused_reason}); its position is not being updated"
            )
        return f"{who} misbehaves: {'; '.join(parts)}."

    def _cleared(self, device: DeviceState) -> str:
        who = f"{self._topology.role(device.device_id).capitalize()} device {device.device_id}"
        return f"{who} behaves again: clock and messages in order."

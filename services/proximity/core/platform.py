"""Whether nabij can see the devices it protects: `platform_degraded` and `platform_restored`.

Pure, on nabij's clock; the engine shares the devices in force with it, books each one that
changed (`book`), and its tick says whether the broker link is up. nabij is blind (one
`platform_degraded`, priority 1, to both queues) when:

- (a) the broker has been unreachable for `blind_after_s`, or, with at least
  `group_min_devices` devices in force, no message came from any device for as long;
- (b) at least `group_min_devices` devices (and `group_min_share` of those in force) went
  quiet (not heard for `quiet_after_s`, or reported offline) within `group_window_s` of each
  other. The notice lists their orders: one grouped notice instead of one per device; a device
  quiet on its own keeps its own alarms.

The devices the outage covers are `grouped`: their own silence and offline alarms wait (the
grouped notice speaks for them), and while degraded every device that goes quiet joins; one
quiet since before the outage began (say, long broken) keeps its own alarms. It is restored when
the broker is reachable, devices are heard, and fewer than half the trigger count of the devices
that went quiet since it began are still quiet: `platform_degraded` clears, `platform_restored`
opens, and the devices still quiet are released to their own alarms. Both alarm keys carry the
outage number, persisted with the state, so a restart never tells one outage twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from nabij.contract import AlarmKind, AlarmSignal, SignalAction
from nabij.settings import PlatformSettings
from services.proximity.core.agenda import Agenda
from services.proximity.core.devices import DeviceTable
from services.proximity.core.effects import Effects
from services.proximity.core.signals import signal_id
from services.proximity.core.state import RARE_DEFAULTS, DeviceState
from services.proximity.core.topology import Topology

REPORTER: Final = "platform"
"""Stands in signal ids where a device would: no single device is behind these."""


class PlatformState(msgspec.Struct, omit_defaults=True):
    """What the shell persists (`Keys.platform_state`) whenever it changes."""

    outage: int = 0
    """Outages so far; the current (or last) one numbers both alarm keys."""
    degraded: bool = False
    since_ms: int | None = None
    """When the current outage was found."""
    began_ms: int | None = None
    """When it began: devices that went quiet before are not part of it (their own alarms)."""
    orders: list[str] = []
    """The orders named in the last signal, sorted (an update goes out when more join)."""


platform_state_decoder: Final = msgspec.msgpack.Decoder(PlatformState)


@dataclass(frozen=True, slots=True)
class Outage:
    """Why nabij is blind, in words for both queues (no device, no position)."""

    cause: str
    devices: list[str]
    """The quiet devices it covers (grouped)."""
    everywhere: bool
    """Blind to every order (cause a), not only to those of the quiet devices."""
    began_ms: int


class PlatformWatch:
    def __init__(
        self,
        topology: Topology,
        settings: PlatformSettings,
        devices: DeviceTable,
        silences: Agenda,
    ) -> None:
        self._topology = topology
        self._devices = devices  # shared with the engine, which `load`s into it
        self._all_orders = sorted(
            {order for device_id in topology.records for order in topology.orders(device_id)}
        )
        self._blind_ms = round(settings.blind_after_s * 1000)
        self._quiet_ms = round(settings.quiet_after_s * 1000)
        self._window_ms = round(settings.group_window_s * 1000)
        in_force = len(topology.records)
        self._trigger = max(
            settings.group_min_devices, math.ceil(settings.group_min_share * in_force)
        )
        # Silence of every device is a platform fact only when there are enough of them.
        self._watch_traffic = in_force >= settings.group_min_devices
        self.state = PlatformState()
        self._last_message_ms: int | None = None
        self._link_down_since_ms: int | None = None
        # The quiet devices, kept as devices change (`book`) and time passes, not found by a
        # pass over every device: everyone reporting costs the tick nothing here.
        self._quiet: dict[str, int] = {}
        """Quiet device -> when it went quiet (see `_quiet_now`)."""
        self._silences = silences
        """Devices heard and not quiet go quiet `quiet_after_s` after they were heard; shared
        with the devices' own silence checks, which book the same devices (`book`)."""
        self._grouped: set[str] = set()
        self._heard_again: set[str] = set()
        """Grouped devices that may no longer be quiet: released by the tick if so."""
        self._regrouped: set[str] = set()
        """Devices grouped or released by the current tick."""
        self._last_tick_ms: int | None = None

    def carry_over(self, previous: PlatformWatch) -> None:
        """Keep the outage and the traffic seen when the orders change (a new engine)."""
        self.state = previous.state
        self._last_message_ms = previous._last_message_ms
        self._link_down_since_ms = previous._link_down_since_ms

    def heard(self, now_ms: int) -> None:
        """A message of a device in force was received (any kind)."""
        self._last_message_ms = now_ms

    def book(self, device: DeviceState, rank: int) -> None:
        """Index the device (at `rank`) again after a change: quiet (offline since its drop) or
        when it goes quiet unless heard again (never heard: never quiet), and whether it is
        grouped."""
        device_id = device.device_id
        grouped = (device.rare or RARE_DEFAULTS).grouped
        if grouped:
            self._grouped.add(device_id)
        else:
            self._grouped.discard(device_id)
        if not device.online and device.drops_ms:
            # Its booking stays, if any (the silence checks may need it): the tick skips it.
            self._quiet[device_id] = device.drops_ms[-1]
            return
        self._quiet.pop(device_id, None)
        if grouped:
            self._heard_again.add(device_id)
        heard = device.last_heard_ms
        if heard is not None:
            self._silences.book(rank, heard + self._quiet_ms)

    def tick(
        self, now_ms: int, silent: list[str], effects: Effects, *, broker_up: bool
    ) -> set[str]:
        """Before the devices' own silence checks, so a grouped device never raises its own.
        `silent`: the devices whose silence was booked for now or earlier, taken for this tick.
        Returns the devices it grouped or released (the caller books them again)."""
        if not self._topology.records:
            return set()  # no order in force: nothing is expected, nothing is missed
        if self._last_message_ms is None:
            self._last_message_ms = now_ms  # a (re)start: traffic is judged from here
        if broker_up:
            self._link_down_since_ms = None
        elif self._link_down_since_ms is None:
            self._link_down_since_ms = now_ms
        self._regrouped = set()
        quiet = self._quiet_now(now_ms, silent, effects)
        state, blind = self.state, self._blind(now_ms)
        if not state.degraded:
            outage = self._found(quiet, blind, now_ms)
            if outage is not None:
                self._open(outage, now_ms, effects)
            return self._regrouped
        began = state.began_ms if state.began_ms is not None else now_ms
        # Quiet since the outage began; a device quiet before it (say long broken) keeps its
        # own alarms and never holds the outage open.
        in_outage = [d for d, since in quiet.items() if since >= began]
        joined = [d for d in in_outage if d not in self._grouped]
        self._group(joined, effects)
        if blind is None and 2 * len(in_outage) < self._trigger:
            self._restore(now_ms, effects)
        elif joined:
            self._update(now_ms, effects)
        return self._regrouped

    # --- detection -------------------------------------------------------------------------

    def _quiet_now(self, now_ms: int, silent: list[str], effects: Effects) -> dict[str, int]:
        """Quiet devices and when they went quiet (offline: since the drop; else not heard for
        `quiet_after_s`; never heard: not quiet); a grouped device heard again is released (its
        own alarms apply). Costs the devices that went quiet or were released, and a clock
        stepped back costs the quiet ones."""
        quiet, devices = self._quiet, self._devices
        if self._last_tick_ms is not None and now_ms < self._last_tick_ms:
            # Stepped back: a device silent since the time now given is not quiet yet.
            for device_id, since in list(quiet.items()):
                device = devices[device_id]
                if since > now_ms and (device.online or not device.drops_ms):
                    del quiet[device_id]
                    self._silences.book(self._topology.rank(device_id), since)
                    if device.grouped:
                        self._heard_again.add(device_id)
        self._last_tick_ms = now_ms
        for device_id in silent:
            heard = devices[device_id].last_heard_ms
            if heard is None or device_id in quiet:
                continue  # booked for the silence checks: quiet already, or never heard
            since = heard + self._quiet_ms
            if since > now_ms:  # booked for the silence checks, or heard again since
                self._silences.book(self._topology.rank(device_id), since)
            else:
                quiet[device_id] = since
        released = [d for d in self._heard_again if d in self._grouped and d not in quiet]
        self._heard_again.clear()
        for device_id in released:
            devices[device_id].grouped = False
            self._grouped.discard(device_id)
            self._regrouped.add(device_id)
            effects.changed_devices.add(device_id)
        return quiet

    def _blind(self, now_ms: int) -> str | None:
        """Cause (a) in words, or None."""
        down, last = self._link_down_since_ms, self._last_message_ms
        silent = self._watch_traffic and last is not None and now_ms - last >= self._blind_ms
        if down is not None and (silent or now_ms - down >= self._blind_ms):
            return f"MQTT broker unreachable for {(now_ms - down) // 1000} s"
        if silent and last is not None:
            return f"no message from any device for {(now_ms - last) // 1000} s"
        return None

    def _found(
        self,
        quiet: Mapping[str, int],
        blind: str | None,
        now_ms: int,
    ) -> Outage | None:
        if blind is not None:
            # The last message heard is the latest it can have begun (the link's loss is seen late).
            known = [t for t in (self._link_down_since_ms, self._last_message_ms) if t is not None]
            began = min(known, default=now_ms)
            in_outage = [d for d, since in quiet.items() if since >= began]
            return Outage(blind, in_outage, everywhere=True, began_ms=began)
        burst = burst_of(
            [(since, d) for d, since in quiet.items() if d not in self._grouped],
            now_ms,
            window_ms=self._window_ms,
            trigger=self._trigger,
        )
        if burst is None:
            return None
        window_s = self._window_ms // 1000
        in_force = len(self._devices)
        cause = f"{len(burst)} of {in_force} devices went silent or offline within {window_s} s"
        return Outage(cause, burst, everywhere=False, began_ms=min(quiet[d] for d in burst))

    # --- signals ---------------------------------------------------------------------------

    def _open(self, outage: Outage, now_ms: int, effects: Effects) -> None:
        state = self.state
        state.outage += 1
        state.degraded, state.since_ms, state.began_ms = True, now_ms, outage.began_ms
        self._group(outage.devices, effects)
        state.orders = list(self._all_orders) if outage.everywhere else self._orders_of()
        reason = (
            f"nabij cannot see {len(state.orders)} of {len(self._all_orders)} orders in force: "
            f"{outage.cause}. No alarm from them can be raised until this is restored."
        )
        effects.signals.append(self._signal("platform_degraded", "open", reason, now_ms, "open"))
        effects.platform_changed = True

    def _update(self, now_ms: int, effects: Effects) -> None:
        orders = sorted(set(self.state.orders) | set(self._orders_of()))
        if orders == self.state.orders:
            return
        self.state.orders = orders
        reason = f"nabij cannot see {len(orders)} of {len(self._all_orders)} orders in force."
        tag = f"update{len(orders)}"
        effects.signals.append(self._signal("platform_degraded", "update", reason, now_ms, tag))
        effects.platform_changed = True

    def _restore(self, now_ms: int, effects: Effects) -> None:
        state = self.state
        lasted_s = (now_ms - (state.since_ms or now_ms)) // 1000
        reason = (
            f"nabij sees the devices of {len(state.orders)} orders again after {lasted_s} s; "
            "devices still silent raise their own alarms."
        )
        effects.signals.append(self._signal("platform_degraded", "clear", reason, now_ms, "clear"))
        effects.signals.append(self._signal("platform_restored", "open", reason, now_ms, "open"))
        state.degraded, state.since_ms, state.began_ms = False, None, None
        for device_id in self._grouped:
            self._devices[device_id].grouped = False
            effects.changed_devices.add(device_id)
        self._regrouped |= self._grouped
        self._grouped.clear()
        effects.platform_changed = True

    def _signal(
        self, kind: AlarmKind, action: SignalAction, reason: str, now_ms: int, tag: str
    ) -> AlarmSignal:
        key = f"{kind}|{self.state.outage}"
        return AlarmSignal(
            signal_id=signal_id(key, action, REPORTER, tag),
            action=action,
            kind=kind,
            alarm_key=key,
            order_id=None,
            offender_device=None,
            at=now_ms,
            reason=reason,
            orders=tuple(self.state.orders),
        )

    def _group(self, device_ids: Sequence[str], effects: Effects) -> None:
        for device_id in device_ids:
            self._devices[device_id].grouped = True
            self._grouped.add(device_id)
            self._regrouped.add(device_id)
            effects.changed_devices.add(device_id)

    def _orders_of(self) -> list[str]:
        return sorted(
            {order for device_id in self._grouped for order in self._topology.orders(device_id)}
        )


def burst_of(
    quiet: Sequence[tuple[int, str]], now_ms: int, *, window_ms: int, trigger: int
) -> list[str] | None:
    """The devices of the first closed window (`window_ms` after a device went quiet) in which
    at least `trigger` went quiet, with every one that went quiet since; None if there is none.

    `quiet` is (when it went quiet, device). Only the last two windows count: devices quiet for
    longer are isolated silences with alarms of their own.
    """
    recent = sorted(item for item in quiet if item[0] > now_ms - 2 * window_ms)
    end = 0
    for start, (first, _device) in enumerate(recent):
        if first + window_ms > now_ms:
            return None  # this window (and every later one) is still open
        end = max(end, start)
        while end < len(recent) and recent[end][0] <= first + window_ms:
            end += 1
        if end - start >= trigger:
            return [device for _since, device in recent[start:]]
    return None

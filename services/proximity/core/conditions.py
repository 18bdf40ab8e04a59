"""Alarms about one device rather than a pair: button, tamper, battery, presence, silence, and
whether a victim device can protect its victim.

Each is signalled once per order the device belongs to (victim_unprotected: per order it is a
victim in), under a device alarm key. Sequence checks are done by the engine before anything here
runs. Presence is debounced (`presence.py`): inputs record what the device says, and the tick
decides on server time when device_offline opens or clears.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from nabij.contract import AlarmKind, DeviceEvent, Position, SignalAction
from nabij.settings import ProximitySettings
from services.proximity.core.agenda import Agenda
from services.proximity.core.devices import DeviceTable
from services.proximity.core.effects import Effects
from services.proximity.core.history import quantised
from services.proximity.core.presence import (
    Presence,
    Verdict,
    describe_causes,
    protection_causes,
)
from services.proximity.core.signals import device_signal
from services.proximity.core.state import RARE_DEFAULTS, DeviceState
from services.proximity.core.topology import NOT_OFFENDER, Role, Topology

# A battery_low alarm clears only this far above the threshold, so a wavering gauge cannot flap.
BATTERY_CLEAR_MARGIN_PCT: Final = 10


@dataclass(frozen=True, slots=True)
class _Cause:
    """The input behind a signal: `tag` makes its signal id (seq, plus a suffix if seq-less)."""

    tag: str
    now_ms: int
    effects: Effects


class DeviceConditions:
    def __init__(
        self,
        topology: Topology,
        devices: DeviceTable,
        settings: ProximitySettings,
        silences: Agenda,
    ) -> None:
        self._topology = topology
        self._devices = devices  # shared with the engine, which `load`s into it
        self._battery_low_pct = settings.battery_low_pct
        self._battery_clear_pct = settings.battery_low_pct + BATTERY_CLEAR_MARGIN_PCT
        self._location_unknown_ms = round(settings.location_unknown_s * 1000)
        self._presence = Presence.build(settings)
        self._victim_silence_ms = round(settings.victim_silence_s * 1000)
        self._silences = silences
        """Shared with the platform watch, which books the same devices (`book`)."""
        self._unsettled: set[str] = set()
        """Devices whose presence is unsettled (`book`): looked at on every tick."""

    def on_fix(
        self,
        device: DeviceState,
        batt: int | None,
        heard_before: int | None,
        now_ms: int,
        effects: Effects,
    ) -> None:
        """An accepted fix: the device is located, online, and may report its battery."""
        rare = device.rare or RARE_DEFAULTS
        if not (
            rare.location_unknown
            or not device.online
            or rare.unprotected
            or (batt is not None and (batt != device.batt or rare.battery_low))
        ):
            return  # the common case, kept cheap
        cause = _Cause(device.tag(device.last_seq), now_ms, effects)
        if device.location_unknown:
            device.location_unknown = False
            silent_s = (cause.now_ms - (heard_before or cause.now_ms)) // 1000
            reason = f"Offender device {device.device_id} reported a fix again after {silent_s} s."
            self._signal(device, "location_unknown", "clear", reason, cause, role="offender")
        if self._presence.came_online(device, now_ms):
            self._judge_presence(device, cause)
        if batt is not None:
            self._battery(device, batt, cause, reported_low=False)
        self._protection(device, cause)

    def on_event(
        self,
        device: DeviceState,
        event: DeviceEvent,
        now_ms: int,
        effects: Effects,
        *,
        tag: str | None = None,
    ) -> None:
        """An accepted event. Its position moves nothing: only a press carries it, in the signal.
        `tag` names it in signal ids when its seq cannot (a safety event)."""
        cause = _Cause(tag or device.tag(event.seq), now_ms, effects)
        role = self._topology.role(device.device_id)
        if event.type == "aware_button":
            self._aware_press(device, event, cause)
        elif event.type == "strap_tamper":
            reason = f"Strap tamper reported by {role} device {device.device_id}."
            self._signal(device, "strap_tamper", "open", reason, cause)
        elif event.type == "power_off":
            if self._presence.went_offline(device, now_ms, powered_off=True):
                self._judge_presence(device, cause)
        elif event.type in ("gnss_lost", "gnss_restored"):
            # No alarm of its own: location_unknown covers the silence that follows.
            device.gnss_lost = event.type == "gnss_lost"
        if event.batt is not None or event.type == "battery_low":
            reported_low = event.type == "battery_low"
            self._battery(device, event.batt, cause, reported_low=reported_low)
        self._protection(device, cause)

    def on_status(self, device: DeviceState, online: bool, now_ms: int, effects: Effects) -> None:
        if online == device.online:
            return
        # Status messages carry no seq: a per-device counter keeps their signal ids unique.
        device.status_changes += 1
        cause = _Cause(
            f"{device.tag(device.last_seq)}|status{device.status_changes}", now_ms, effects
        )
        if online:
            self._presence.came_online(device, now_ms)
        else:
            self._presence.went_offline(device, now_ms, powered_off=False)
        self._judge_presence(device, cause)
        self._protection(device, cause)

    def book(self, device: DeviceState, rank: int) -> None:
        """Index the device (at `rank`) again after a change: whether the tick must look at it
        on every tick (its presence unsettled), and when its silence next needs a look. The
        platform books the same devices, so none is cancelled here: a booking it no longer
        needs only costs a look that finds nothing (`tick`)."""
        device_id = device.device_id
        rare = device.rare or RARE_DEFAULTS
        if rare.grouped:  # its own silence and offline alarms wait (`platform.py`)
            self._unsettled.discard(device_id)
            return
        if device.online == rare.offline_open:  # offline within its dwell, or back within it
            self._unsettled.add(device_id)
        else:
            self._unsettled.discard(device_id)
        due = self._silence_due(device, rank)
        if due is not None:
            self._silences.book(rank, due)

    def _silence_due(self, device: DeviceState, rank: int) -> int | None:
        """When the device's silence first passes a limit the tick acts on (None: no limit left
        to pass): location_unknown for an offender, silent for a victim."""
        heard = device.last_heard_ms
        if heard is None:
            return None  # never heard: no silence yet (its first fix books it)
        # Read from the columns at its rank, not by the topology's lookups: it runs for every fix.
        topology = self._topology
        due = None
        rare = device.rare or RARE_DEFAULTS
        if not rare.location_unknown and topology.offender_ranks[rank] != NOT_OFFENDER:
            due = heard + self._location_unknown_ms + 1
        if "silent" not in rare.unprotected and topology.victims[rank]:
            silent_at = heard + self._victim_silence_ms + 1
            due = silent_at if due is None else min(due, silent_at)
        return due

    def tick(self, now_ms: int, taken: list[str], effects: Effects) -> None:
        """On server time: location_unknown for offender devices silent beyond the limit; the
        debounced device_offline; victim devices that cannot protect their victim. Only the
        devices due (`book`) are looked at, in the order of the orders, each as a full pass
        would: it finds exactly what the pass over every device found. `taken`: the devices
        whose silence was booked for now or earlier; those whose silence is not due by their
        state (booked early, or for the platform) are booked again without a look."""
        devices, topology, due = self._devices, self._topology, []
        for device_id in taken:
            device, rank = devices[device_id], topology.rank(device_id)
            grouped = (device.rare or RARE_DEFAULTS).grouped
            at = None if grouped else self._silence_due(device, rank)
            if at is not None and at <= now_ms:
                due.append(device_id)
            else:
                self.book(device, rank)
        silent = sorted(
            (offender_rank, device_id)
            for device_id in due
            if (offender_rank := topology.offender_rank(device_id)) is not None
        )
        for _, device_id in silent:
            self._location_unknown(self._devices[device_id], now_ms, effects)
        looked = sorted((topology.rank(d), d) for d in {*due, *self._unsettled})
        for _, device_id in looked:
            self._presence_and_protection(self._devices[device_id], now_ms, effects)
        for rank, device_id in looked:
            self.book(self._devices[device_id], rank)

    def _location_unknown(self, device: DeviceState, now_ms: int, effects: Effects) -> None:
        limit = self._location_unknown_ms
        heard, rare = device.last_heard_ms, device.rare or RARE_DEFAULTS
        if heard is None or rare.location_unknown or now_ms - heard <= limit:
            return
        if rare.grouped:
            return  # a platform outage's grouped notice speaks for it (`platform.py`)
        device.location_unknown = True
        reason = (
            f"No fix from offender device {device.device_id} for {(now_ms - heard) // 1000} s "
            f"(limit {limit // 1000} s)."
        )
        cause = _Cause(f"{device.tag(device.last_seq)}|tick", now_ms, effects)
        self._signal(device, "location_unknown", "open", reason, cause, role="offender")

    def _presence_and_protection(self, device: DeviceState, now_ms: int, effects: Effects) -> None:
        # In a tick a victim's causes change only when her silence begins or device_offline
        # opens or clears (the others change with inputs); anything else is skipped cheaply.
        rare = device.rare or RARE_DEFAULTS
        if rare.grouped:
            return  # as above: its own offline and silence alarms wait
        if device.online != rare.offline_open:  # presence settled: word and alarm agree
            heard = device.last_heard_ms
            if (
                heard is None
                or heard >= now_ms - self._victim_silence_ms  # heard since: not silent
                or not self._topology.is_victim(device.device_id)
                or "silent" in rare.unprotected
            ):
                return
        self._tick_device(device, now_ms, effects)

    def _tick_device(self, device: DeviceState, now_ms: int, effects: Effects) -> None:
        if self._presence.adopt_legacy(device, now_ms):
            effects.changed_devices.add(device.device_id)
        verdict = self._presence.judge(device, now_ms)
        if verdict is None and not self._protection_changed(device, now_ms):
            return  # a device offline within its dwell, or a victim whose causes hold as they were
        # No input is behind a tick: a per-device counter names its signals.
        cause = _Cause(f"{device.tag(device.last_seq)}|tick{device.tick_signals}", now_ms, effects)
        device.tick_signals += 1
        if verdict is not None:
            self._open_or_clear(device, verdict, cause)
        self._protection(device, cause)

    def _aware_press(self, device: DeviceState, event: DeviceEvent, cause: _Cause) -> None:
        device_id = device.device_id
        pressed_at: Position | None = device.fix
        if event.lat is not None and event.lon is not None and event.acc is not None:
            pressed_at = quantised(event.lat, event.lon, event.acc, event.ts)[0]
        for membership in self._topology.memberships(device_id):
            if membership.role == "victim":
                offender = self._devices.peek(membership.offender_device).fix
                victim = pressed_at
            else:
                offender, victim = pressed_at, None
            reason = f"Aware button pressed on {membership.role} device {device_id}."
            signal = device_signal(
                "aware_button",
                "open",
                device_id,
                membership,
                tag=cause.tag,
                now_ms=cause.now_ms,
                reason=reason,
                offender=offender,
                victim=victim,
            )
            cause.effects.signals.append(signal)
        cause.effects.changed_devices.add(device_id)

    def _judge_presence(self, device: DeviceState, cause: _Cause) -> None:
        """After an input moved the device's raw presence (state to persist): open or clear
        device_offline if the debounced presence says so already (flapping, or a dwell of 0)."""
        cause.effects.changed_devices.add(device.device_id)
        verdict = self._presence.judge(device, cause.now_ms)
        if verdict is not None:
            self._open_or_clear(device, verdict, cause)

    def _open_or_clear(self, device: DeviceState, verdict: Verdict, cause: _Cause) -> None:
        device.offline_open = verdict.action == "open"
        role = self._topology.role(device.device_id)
        reason = f"{role.capitalize()} device {device.device_id}: {verdict.why}."
        self._signal(device, "device_offline", verdict.action, reason, cause)

    def _protection_changed(self, device: DeviceState, now_ms: int) -> bool:
        if not self._topology.is_victim(device.device_id):
            return False
        causes = protection_causes(device, now_ms, self._victim_silence_ms)
        return tuple(causes) != device.unprotected

    def _protection(self, device: DeviceState, cause: _Cause) -> None:
        """Open, update (the causes changed) or clear victim_unprotected for a victim device."""
        if not self._topology.is_victim(device.device_id):
            return
        causes = protection_causes(device, cause.now_ms, self._victim_silence_ms)
        if tuple(causes) == device.unprotected:
            return
        action: SignalAction = "clear" if not causes else "update" if device.unprotected else "open"
        device.unprotected = tuple(causes)
        if causes:
            why = describe_causes(device, causes, cause.now_ms, self._victim_silence_ms)
            reason = f"Victim device {device.device_id} cannot protect its victim: {why}."
        else:
            reason = (
                f"Victim device {device.device_id} protects its victim again: reporting, online, "
                "battery not low."
            )
        self._signal(device, "victim_unprotected", action, reason, cause, role="victim")

    def _battery(
        self, device: DeviceState, batt: int | None, cause: _Cause, *, reported_low: bool
    ) -> None:
        if batt is not None and batt != device.batt:
            device.batt = batt
            cause.effects.changed_devices.add(device.device_id)
        role = self._topology.role(device.device_id)
        level = "" if batt is None else f" ({batt}%)"
        low = reported_low or (batt is not None and batt <= self._battery_low_pct)
        if low and not device.battery_low:
            device.battery_low = True
            reason = f"Battery low on {role} device {device.device_id}{level}."
            self._signal(device, "battery_low", "open", reason, cause)
        elif device.battery_low and batt is not None and batt > self._battery_clear_pct:
            device.battery_low = False
            reason = f"Battery of {role} device {device.device_id} recharged{level}."
            self._signal(device, "battery_low", "clear", reason, cause)

    def _signal(
        self,
        device: DeviceState,
        kind: AlarmKind,
        action: SignalAction,
        reason: str,
        cause: _Cause,
        *,
        role: Role | None = None,
    ) -> None:
        """One signal per order of the device (only those it has `role` in, if given)."""
        for membership in self._topology.memberships(device.device_id):
            if role is not None and membership.role != role:
                continue
            signal = device_signal(
                kind,
                action,
                device.device_id,
                membership,
                tag=cause.tag,
                now_ms=cause.now_ms,
                reason=reason,
                offender=self._devices.peek(membership.offender_device).fix,
            )
            cause.effects.signals.append(signal)
        cause.effects.changed_devices.add(device.device_id)

"""Simulated device firmware: an ankle monitor and a victim device speaking the wire contract.

`Firmware` runs a `DeviceModel` (the pure part: truth, receiver, battery, clock) the way device
firmware does: a fix every interval, events when something happens (battery low, GNSS lost
indoors and back, power off), store-and-forward while out of coverage (the backlog goes up as
fix arrays when the network returns), occasional QoS 1 duplicates, and nabij's commands obeyed
(`set_interval`, `warn`: the victim device shows the warning, the ankle monitor instructs its
wearer). Transport is a `Link` (`simulators.link.MqttLink` in real runs).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final

import msgspec

from nabij.contract import (
    MAX_BACKLOG_FIXES,
    SAFETY_EVENTS,
    Committed,
    DeviceCommand,
    DeviceEvent,
    DeviceStatus,
    EventType,
    Fix,
    SetInterval,
    Topics,
    Warn,
    WarnLevel,
    downlink_decoder,
    encode,
)
from simulators.keeping import Kept, Unconfirmed
from simulators.link import DeviceConnectError, Link, MqttLink
from simulators.model import DeviceModel
from simulators.positioning import Sky

__all__ = [
    "FIRMWARE_BY_ROLE",
    "AnkleMonitor",
    "Behaviour",
    "DeviceConnectError",
    "DeviceModel",
    "Firmware",
    "IndoorWindow",
    "Link",
    "MqttLink",
    "ReceivedCommand",
    "VictimDevice",
]

log = logging.getLogger(__name__)

Post = Callable[[Callable[[], None]], None]
"""Hands work to the thread that owns the device (the scheduler); default: run it at once."""

# The device re-arms its battery_low event once charged this far above the threshold.
BATTERY_REARM_PCT: Final = 5


def _run_now(work: Callable[[], None]) -> None:
    work()


@dataclass(frozen=True, slots=True)
class ReceivedCommand:
    ts: int
    """Device time at which the device applied the command."""
    command: DeviceCommand


@dataclass(frozen=True, slots=True)
class IndoorWindow:
    from_s: float
    to_s: float
    sky: Sky


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How the device's world and firmware behave beyond its route and noise."""

    indoors: Sequence[IndoorWindow] = ()
    battery_low_pct: int = 15
    duplicate_rate: float = 0.0
    seed: int = 0
    boot_ids: bool = True
    """False: old firmware, no boot id on its messages (seq still restarts at every boot)."""
    keep_until_committed: bool = True
    """Keep each fix and event until nabij confirms it committed it, and send it again after a
    reconnect or `resend_after_s` without confirmation (`simulators.keeping`). False: firmware
    that trusts the broker's PUBACK (what a broker crash can lose, `bench.broker_kill`)."""
    resend_after_s: float = 60.0

    def sky_at(self, t_s: float) -> Sky:
        for window in self.indoors:
            if window.from_s <= t_s < window.to_s:
                return window.sky
        return "open"


class Firmware:
    """A device: publishes fixes and events through its link and obeys nabij's commands."""

    role: ClassVar[str] = "device"
    VERB: ClassVar[str] = "shows"
    MESSAGES: ClassVar[dict[str, str]] = {
        "pre_alert": "pre-alert",
        "alarm": "alarm",
        "clear": "clear",
    }

    def __init__(
        self,
        model: DeviceModel,
        topics: Topics,
        interval_s: int,
        *,
        now_ms: Callable[[], int],
        post: Post = _run_now,
        behaviour: Behaviour | None = None,
        boot_token: str = "0",
    ) -> None:
        self.model = model
        self.device_id = model.device_id
        self.topics = topics
        self.interval_s = interval_s
        self.now_ms = now_ms
        self._post = post
        self.behaviour = behaviour if behaviour is not None else Behaviour()
        self._rng = random.Random(self.behaviour.seed)
        self.link: Link | None = None
        self.commands: list[ReceivedCommand] = []
        self.rejected_commands: list[bytes] = []
        self.fixes_sent = 0
        """Fixes measured and handed to the network (at once, or later from the backlog)."""
        self.events_sent = 0
        self.duplicates_sent = 0
        self.resent = 0
        """Messages sent again because nabij had not confirmed them."""
        self.unconfirmed = Unconfirmed()
        # One sender at a time (the device's thread, paho's on a reconnect or a confirmation):
        # what is decided in order goes out in that order.
        self._sending = threading.RLock()
        self.backlog_uploads = 0
        """Fix arrays published after coverage returned."""
        self.seqs_sent: list[int] = []
        """Every seq the device published, in order, each once (duplicates not repeated); a
        reboot starts again at 0."""
        self.last_fix: Fix | None = None
        self.warnings: list[WarnLevel] = []
        """Warn levels received, in order."""
        self.shown: list[str] = []
        """What the device showed or told its wearer for each warning."""
        self.powered = True
        self.covered = True
        self.silent = False
        """Connected but sending no fixes (see `silence`)."""
        self._boot_token = boot_token
        self.boots = 0
        self._boot()
        self._backlog: list[Fix | DeviceEvent] = []
        self._battery_low_sent = False
        self._gnss_lost = False
        self.on_interval_change: Callable[[Firmware], None] | None = None
        self.on_command: Callable[[Firmware, DeviceCommand], None] | None = None

    # --- the periodic step ---------------------------------------------------------------------

    def tick(self, t_s: float, true_ms: int) -> bool:
        """One measurement cycle at `t_s`; False once the device has gone silent for good."""
        if not self.powered:
            return False
        self.resend_if_overdue()
        if self.silent:
            return True  # muted, not dead: it measures again once `speak` is called
        level = self.model.battery.level_at(t_s)
        if level <= 0.0:
            self.send_event("power_off", t_s, true_ms)
            return False
        self._watch_battery(level, t_s, true_ms)
        sky = self.behaviour.sky_at(t_s)
        self._watch_sky(sky, t_s, true_ms)
        self.send_fix(t_s, true_ms, sky)
        return True

    def _watch_battery(self, level: float, t_s: float, true_ms: int) -> None:
        threshold = self.behaviour.battery_low_pct
        if not self._battery_low_sent and round(level) <= threshold:
            self._battery_low_sent = True
            self.send_event("battery_low", t_s, true_ms)
        elif self._battery_low_sent and level > threshold + BATTERY_REARM_PCT:
            self._battery_low_sent = False

    def _watch_sky(self, sky: Sky, t_s: float, true_ms: int) -> None:
        lost = sky != "open"
        if lost != self._gnss_lost:
            self._gnss_lost = lost
            self.send_event("gnss_lost" if lost else "gnss_restored", t_s, true_ms)

    # --- uplink -------------------------------------------------------------------------------

    def _link(self) -> Link:
        if self.link is None:
            raise RuntimeError(f"{self.device_id}: no link attached")
        return self.link

    def send_fix(self, t_s: float, true_ms: int, sky: Sky = "open") -> Fix | None:
        fix = self.model.fix(t_s, true_ms, sky)
        if fix is None:
            return None  # no sky and no fallback: nothing to report
        self.fixes_sent += 1
        self.last_fix = fix
        self._uplink(fix)
        return fix

    def send_event(self, event_type: EventType, t_s: float, true_ms: int) -> DeviceEvent | None:
        if not self.powered:
            return None
        event = self.model.event(event_type, t_s, true_ms, self.behaviour.sky_at(t_s))
        self.events_sent += 1
        log.info("%s %s: sends %s", self.role, self.device_id, event_type)
        self._uplink(event)
        if event_type == "power_off":
            self._power_down()
        return event

    def _uplink(self, message: Fix | DeviceEvent) -> None:
        self.seqs_sent.append(message.seq)
        if not self.covered:
            self._backlog.append(message)  # store and forward
            return
        kind = "fix" if isinstance(message, Fix) else "event"
        self._publish(kind, encode(message), message)

    def _publish(self, kind: str, payload: bytes, last: Fix | DeviceEvent) -> None:
        """Publish a fix, event or backlog array (`last`: its newest message)."""
        counted = not (isinstance(last, DeviceEvent) and last.type in SAFETY_EVENTS)
        kept = Kept(last.boot, last.seq, kind, payload, counted)
        link = self._link()
        with self._sending:
            if self.behaviour.keep_until_committed and not self.unconfirmed.keep(
                kept, self.now_ms(), connected=link.connected
            ):
                return  # held back: offline, or behind messages sent again (simulators.keeping)
            topic = self.topics.device(self.device_id, kind)  # type: ignore[arg-type]  # fix or event
            link.publish(topic, payload)
        if self.behaviour.duplicate_rate and self._rng.random() < self.behaviour.duplicate_rate:
            # A lost PUBACK: the same message (same seq) goes out again.
            link.publish(topic, payload)
            self.duplicates_sent += 1

    # --- network and power ---------------------------------------------------------------------

    def lose_coverage(self) -> None:
        """No network: keep measuring, keep everything for later."""
        if not self.covered or not self.powered:
            return
        self.covered = False
        log.info("%s %s: out of coverage", self.role, self.device_id)
        self._link().drop()

    def regain_coverage(self) -> None:
        """Network back: reconnect, then upload the backlog in seq order, fixes as arrays."""
        if self.covered:
            return
        self.covered = True
        if not self.powered:
            return
        self._link().resume()
        backlog, self._backlog = self._backlog, []
        log.info("%s %s: back in coverage, %d queued", self.role, self.device_id, len(backlog))
        run: list[Fix] = []
        for message in backlog:
            if isinstance(message, Fix):
                run.append(message)
                if len(run) == MAX_BACKLOG_FIXES:
                    self._upload(run)
                    run = []
                continue
            # Events keep their place in seq order: nabij drops what is older than it saw.
            self._upload(run)
            run = []
            self._publish("event", encode(message), message)
        self._upload(run)

    def _upload(self, fixes: list[Fix]) -> None:
        if fixes:
            self._publish("fix", msgspec.json.encode(fixes), fixes[-1])
            self.backlog_uploads += 1

    def vanish(self) -> None:
        """Dead without a goodbye (crushed, drowned, jammed): the broker publishes the will."""
        if not self.powered:
            return
        self.powered = False
        lost = {m.seq for m in self._backlog}
        self.seqs_sent = [seq for seq in self.seqs_sent if seq not in lost]
        self._backlog.clear()
        log.info("%s %s: vanishes", self.role, self.device_id)
        if self.covered:
            self._link().drop()

    def revive(self) -> None:
        """Back after `vanish`: boots and reconnects; what it measured before is gone."""
        if self.powered:
            return
        self.powered = True
        self._boot()
        if self.covered:
            self._link().resume()

    def reboot(self) -> None:
        """The firmware restarts while the modem keeps its connection: a new boot, seq from 0.
        The store-and-forward backlog lives in flash and survives."""
        if self.powered:
            self._boot()

    def _boot(self) -> None:
        """Every start of the firmware picks a new boot id (old firmware has none)."""
        self.boots += 1
        boot = f"{self._boot_token}.{self.boots}" if self.behaviour.boot_ids else None
        self.model.boot_as(boot)
        log.info("%s %s: boots (%s)", self.role, self.device_id, boot or "no boot id")

    def silence(self) -> None:
        """Stop sending fixes but stay connected (an app killed by the phone's battery saver)."""
        self.silent = True
        log.info("%s %s: falls silent", self.role, self.device_id)

    def speak(self) -> None:
        """Send fixes again after `silence`."""
        self.silent = False

    def announce(self, online: bool, true_ms: int) -> None:
        """A retained presence message as a flapping connection produces: offline as the broker
        publishes the last will, online as the device announces its reconnect (at `true_ms`)."""
        status = DeviceStatus(online=True, ts=true_ms) if online else DeviceStatus(online=False)
        topic = self.topics.device(self.device_id, "status")
        self._link().publish(topic, encode(status), retain=True)

    def _power_down(self) -> None:
        self.powered = False
        log.info("%s %s: powers off", self.role, self.device_id)
        if self.covered:
            self._link().close(timeout_s=5.0)

    def resend_if_overdue(self) -> None:
        """Send again what has waited `resend_after_s` for nabij's confirmation."""
        if self.covered and self.unconfirmed.overdue(
            self.now_ms(), round(self.behaviour.resend_after_s * 1000)
        ):
            self.resend_unconfirmed()

    def resend_unconfirmed(self) -> None:
        """Send again, oldest first, what nabij has not confirmed (on a reconnect: from paho's
        `on_connect`, so it goes out ahead of anything paho itself re-sends)."""
        if not (self.powered and self.covered) or self.link is None:
            return
        with self._sending:
            kept = self.unconfirmed.take_for_resend(self.now_ms())
            self._send_kept(kept)
        self.resent += len(kept)

    def _send_kept(self, kept: list[Kept]) -> None:
        if self.link is None:
            return
        for message in kept:
            topic = self.topics.device(self.device_id, message.kind)  # type: ignore[arg-type]  # fix or event
            self.link.publish(topic, message.payload)

    # --- downlink -----------------------------------------------------------------------------

    def receive(self, payload: bytes) -> None:
        """A `cmd` payload arrived (on any thread): decode here, apply a command on the owner's
        thread; a confirmation only lets go of kept messages, so it is taken at once."""
        try:
            downlink = downlink_decoder.decode(payload)
        except msgspec.DecodeError as err:
            # Real firmware drops what it cannot parse; keep it visible for tests.
            log.warning("%s: ignoring bad command %r: %s", self.device_id, payload[:200], err)
            self.rejected_commands.append(payload)
            return
        if isinstance(downlink, Committed):
            with self._sending:
                released = self.unconfirmed.confirm(downlink, self.model.boot, self.now_ms())
                self._send_kept(released)
            return
        command: DeviceCommand = downlink
        self._post(lambda: self.apply(command))

    def apply(self, command: DeviceCommand) -> None:
        self.commands.append(ReceivedCommand(self.now_ms(), command))
        if isinstance(command, SetInterval):
            if command.seconds != self.interval_s:
                log.info(
                    "%s %s: fix interval %d s -> %d s",
                    self.role,
                    self.device_id,
                    self.interval_s,
                    command.seconds,
                )
                self.interval_s = command.seconds
                if self.on_interval_change is not None:
                    self.on_interval_change(self)
        elif isinstance(command, Warn):
            self.on_warn(command.level)
        if self.on_command is not None:
            self.on_command(self, command)

    def on_warn(self, level: WarnLevel) -> None:
        text = self.MESSAGES[level]
        self.warnings.append(level)
        self.shown.append(text)
        log.warning("%s %s %s: %s", self.role, self.device_id, self.VERB, text)


class AnkleMonitor(Firmware):
    """The offender's device: a warning is an instruction to the wearer (vibrate, beep)."""

    role: ClassVar[str] = "offender"
    VERB: ClassVar[str] = "instructs the wearer"
    MESSAGES: ClassVar[dict[str, str]] = {
        "pre_alert": "you are approaching a protected person: turn back",
        "alarm": "you are too close to a protected person: leave now, the police are informed",
        "clear": "you are outside the restricted distance again",
    }


class VictimDevice(Firmware):
    """The victim's device: shows the warning. It never learns where the offender is."""

    role: ClassVar[str] = "victim"
    VERB: ClassVar[str] = "shows"
    MESSAGES: ClassVar[dict[str, str]] = {
        "pre_alert": "the offender may be nearby: stay alert, keep your phone at hand",
        "alarm": "the offender is close: go to a safe place, help is on its way",
        "clear": "the warning has ended",
    }


FIRMWARE_BY_ROLE: dict[str, type[Firmware]] = {"offender": AnkleMonitor, "victim": VictimDevice}

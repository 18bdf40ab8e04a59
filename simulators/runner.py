"""Run a scenario: every device of it as an MQTT client, on one simulated clock.

`nabij simulate --scenario NAME [--speed N]`, `--check` (`simulators.check`) and `make demo`
call `load_scenario` and `ScenarioRun`. Device time is `start_ms` + simulated elapsed time, so at
`speed` > 1 devices report times ahead of the wall clock by (speed - 1) * elapsed; nabij is
configured to accept it. Coverage gaps and `[[action]]`s are scheduled here; what a device does
about them is `simulators.firmware`'s business.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nabij.contract import DeviceCommand, SetInterval, Topics, Warn
from nabij.mqtt import MqttEndpoint
from simulators import geo
from simulators.firmware import (
    FIRMWARE_BY_ROLE,
    Behaviour,
    Firmware,
    IndoorWindow,
    ReceivedCommand,
)
from simulators.link import DeviceConnectError, Link, MqttLink
from simulators.model import DeviceModel
from simulators.noise import derive_seed
from simulators.scenario import (
    ActionSpec,
    DeviceSpec,
    EventSpec,
    Scenario,
    ScenarioError,
    list_scenarios,
    load_scenario,
    parse_scenario,
)
from simulators.scheduler import Scheduler, SimClock, wall_clock_ms

__all__ = [
    "DeviceConnectError",
    "DeviceReport",
    "RunReport",
    "Scenario",
    "ScenarioError",
    "ScenarioRun",
    "build_firmware",
    "list_scenarios",
    "load_scenario",
    "parse_scenario",
]

LinkFactory = Callable[[Firmware], Link]


@dataclass(slots=True)
class DeviceReport:
    device_id: str
    role: str
    fixes_sent: int
    events_sent: int
    duplicates_sent: int
    backlog_uploads: int
    seqs_sent: list[int]
    commands: list[ReceivedCommand]
    interval_s: int
    """Fix interval at the end of the run."""


@dataclass(slots=True)
class RunReport:
    scenario: str
    speed: float
    start_ms: int
    wall_start_ms: int
    """Wall-clock epoch ms at which scenario time 0 happened (maps server times to scenario)."""
    sim_s: float
    """Simulated seconds covered (the scenario duration unless stopped early)."""
    wall_s: float
    max_lag_s: float
    """Largest delay, in simulated seconds, between an action's due time and its run."""
    stopped_early: bool
    devices: dict[str, DeviceReport] = field(default_factory=dict)

    @property
    def fixes_sent(self) -> dict[str, int]:
        return {k: d.fixes_sent for k, d in self.devices.items()}

    @property
    def events_sent(self) -> dict[str, int]:
        return {k: d.events_sent for k, d in self.devices.items()}

    @property
    def commands_received(self) -> dict[str, list[DeviceCommand]]:
        return {k: [c.command for c in d.commands] for k, d in self.devices.items()}

    def __str__(self) -> str:
        how = "stopped early" if self.stopped_early else "done"
        lines = [
            f"scenario {self.scenario} {how}: {self.sim_s:.0f} s simulated in {self.wall_s:.1f} s "
            f"(x{self.speed:g}, max lag {self.max_lag_s:.1f} s)"
        ]
        for d in self.devices.values():
            commands = ", ".join(_describe_command(c.command) for c in d.commands) or "none"
            lines.append(
                f"  {d.device_id} ({d.role}): {d.fixes_sent} fixes, {d.events_sent} events, "
                f"interval {d.interval_s} s, commands: {commands}"
            )
        return "\n".join(lines)


def _describe_command(command: DeviceCommand) -> str:
    if isinstance(command, SetInterval):
        return f"set_interval {command.seconds}"
    assert isinstance(command, Warn)
    return f"warn {command.level}"


def build_firmware(
    spec: DeviceSpec,
    scenario_seed: int,
    topics: Topics,
    *,
    now_ms: Callable[[], int],
    post: Callable[[Callable[[], None]], None],
    seq_base: int,
) -> Firmware:
    """The firmware object for one scenario device (an AnkleMonitor or a VictimDevice)."""
    seed = derive_seed(scenario_seed, spec.id)
    model = DeviceModel(
        spec.id,
        spec.plan(),
        spec.noise.params(),
        seed=seed,
        seq_base=seq_base,
        battery=spec.battery(),
        skew=spec.clock.skew(),
    )
    behaviour = Behaviour(
        indoors=tuple(IndoorWindow(w.from_s, w.to_s, w.fallback) for w in spec.indoors),
        battery_low_pct=spec.battery_low_pct,
        duplicate_rate=spec.duplicate_rate,
        seed=derive_seed(seed, "firmware"),
    )
    firmware_class = FIRMWARE_BY_ROLE[spec.role]
    return firmware_class(
        model, topics, spec.interval_s, now_ms=now_ms, post=post, behaviour=behaviour
    )


class ScenarioRun:
    """Drives all devices of a scenario over MQTT on one scheduler thread (the caller's)."""

    def __init__(
        self,
        scenario: Scenario,
        mqtt_url: str,
        topic_prefix: str,
        *,
        speed: float = 1.0,
        start_ms: int | None = None,
        on_progress: Callable[[str], None] | None = None,
        connect_timeout_s: float = 10.0,
        progress_every_s: float = 60.0,
        seq_base: int | None = None,
        link_factory: LinkFactory | None = None,
        announce_offline: bool = True,
    ) -> None:
        self.scenario = scenario
        # False keeps devices "online" after the run (no retained offline status), as if they
        # went on working: what a demo of several scenarios side by side wants.
        self.announce_offline = announce_offline
        self.mqtt_url = mqtt_url
        self.clock = SimClock(speed, start_ms)
        self.scheduler = Scheduler(self.clock)
        self.topics = Topics(topic_prefix)
        self.on_progress = on_progress
        self.connect_timeout_s = connect_timeout_s
        self.progress_every_s = progress_every_s
        # Fail on a bad URL now, not after building everything.
        self._endpoint = MqttEndpoint.from_url(mqtt_url) if link_factory is None else None
        self._link_factory = link_factory
        # nabij drops a seq it has seen: a later run must continue above an earlier one, as
        # real firmware keeps its counter across reboots. Wall-clock ms grows faster than any
        # run can send messages.
        base = wall_clock_ms() if seq_base is None else seq_base
        self.devices: dict[str, Firmware] = {}
        for spec in scenario.device:
            firmware = build_firmware(
                spec,
                scenario.seed,
                self.topics,
                now_ms=self.clock.now_ms,
                post=self.scheduler.post,
                seq_base=base,
            )
            firmware.on_interval_change = self._interval_changed
            firmware.on_command = self._command_applied
            self.devices[spec.id] = firmware
        self._last_fix_s: dict[str, float] = {}
        self._ran = False

    # --- the run ------------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> RunReport:
        """Connect every device, play the scenario, disconnect; blocks for duration / speed."""
        if self._ran:
            raise RuntimeError("a ScenarioRun runs once; make a new one")
        self._ran = True
        links = self._connect()
        wall_start = time.monotonic()
        try:
            self._schedule_all()
            self._progress(
                f"scenario {self.scenario.name}: {len(self.devices)} devices, "
                f"{self.scenario.duration_s:g} s at x{self.clock.speed:g}"
            )
            self.clock.start()
            self.scheduler.run(self.scenario.duration_s, stop)
        finally:
            for link in links:
                link.close(timeout_s=5.0)
        stopped = stop is not None and stop.is_set()
        return RunReport(
            scenario=self.scenario.name,
            speed=self.clock.speed,
            start_ms=self.clock.start_ms,
            wall_start_ms=self.clock.wall_start_ms,
            sim_s=min(self.scheduler.logical_s, self.scenario.duration_s)
            if stopped
            else self.scenario.duration_s,
            wall_s=time.monotonic() - wall_start,
            max_lag_s=self.scheduler.max_lag_s,
            stopped_early=stopped,
            devices={
                device_id: DeviceReport(
                    device_id=device_id,
                    role=fw.role,
                    fixes_sent=fw.fixes_sent,
                    events_sent=fw.events_sent,
                    duplicates_sent=fw.duplicates_sent,
                    backlog_uploads=fw.backlog_uploads,
                    seqs_sent=list(fw.seqs_sent),
                    commands=list(fw.commands),
                    interval_s=fw.interval_s,
                )
                for device_id, fw in self.devices.items()
            },
        )

    def _connect(self) -> list[Link]:
        if self._link_factory is not None:
            links = []
            for firmware in self.devices.values():
                firmware.link = self._link_factory(firmware)
                links.append(firmware.link)
            return links
        assert self._endpoint is not None
        mqtt_links: list[MqttLink] = []
        for firmware in self.devices.values():
            link = MqttLink(self._endpoint, firmware, announce_offline=self.announce_offline)
            firmware.link = link
            mqtt_links.append(link)
            link.start()
        deadline = time.monotonic() + self.connect_timeout_s
        waiting = [
            link for link in mqtt_links if not link.wait_connected(deadline - time.monotonic())
        ]
        if waiting:
            for link in mqtt_links:
                link.client.disconnect()
                link.client.loop_stop()
            details = "; ".join(
                f"{link.firmware.device_id}: {link.last_error or 'no answer'}" for link in waiting
            )
            raise DeviceConnectError(
                f"devices could not connect to {self.mqtt_url} within "
                f"{self.connect_timeout_s:g} s ({details})"
            )
        return list(mqtt_links)

    def _schedule_all(self) -> None:
        for device_id, firmware in self.devices.items():
            self.scheduler.at(0.0, ("fix", device_id), self._fix_action(firmware))
        for index, event in enumerate(self.scenario.event):
            self.scheduler.at(event.at_s, ("event", index), self._event_action(event))
        for spec in self.scenario.device:
            firmware = self.devices[spec.id]
            for index, gap in enumerate(spec.coverage_gaps):
                self.scheduler.at(gap.from_s, ("gap", spec.id, index), self._gap_action(firmware))
                self.scheduler.at(gap.to_s, ("regain", spec.id, index), self._regain(firmware))
        for index, action in enumerate(self.scenario.action):
            self.scheduler.at(action.at_s, ("action", index), self._vanish_action(action))
            if action.until_s is not None:
                self.scheduler.at(action.until_s, ("revive", index), self._revive_action(action))
        if self.on_progress is not None and self.progress_every_s > 0:
            self.scheduler.at(self.progress_every_s, "progress", self._progress_action)

    def _fix_action(self, firmware: Firmware) -> Callable[[float], float | None]:
        def send(t_s: float) -> float | None:
            if not firmware.tick(t_s, self.clock.ms_at(t_s)):
                self._progress(f"[{t_s:7.0f} s] {firmware.device_id} is silent")
                return None
            self._last_fix_s[firmware.device_id] = t_s
            return t_s + firmware.interval_s

        return send

    def _gap_action(self, firmware: Firmware) -> Callable[[float], None]:
        def lose(t_s: float) -> None:
            firmware.lose_coverage()
            self._progress(f"[{t_s:7.0f} s] {firmware.device_id} loses coverage")

        return lose

    def _regain(self, firmware: Firmware) -> Callable[[float], None]:
        def regain(t_s: float) -> None:
            firmware.regain_coverage()
            self._progress(f"[{t_s:7.0f} s] {firmware.device_id} is back in coverage")

        return regain

    def _vanish_action(self, action: ActionSpec) -> Callable[[float], None]:
        def vanish(t_s: float) -> None:
            self.devices[action.device].vanish()
            self._progress(f"[{t_s:7.0f} s] {action.device} vanishes (no goodbye)")

        return vanish

    def _revive_action(self, action: ActionSpec) -> Callable[[float], None]:
        def revive(t_s: float) -> None:
            firmware = self.devices[action.device]
            firmware.revive()
            self._progress(f"[{t_s:7.0f} s] {action.device} reboots")
            self.scheduler.at(t_s, ("fix", action.device), self._fix_action(firmware))

        return revive

    def _event_action(self, event: EventSpec) -> Callable[[float], None]:
        def send(t_s: float) -> None:
            self.devices[event.device].send_event(event.type, t_s, self.clock.ms_at(t_s))
            self._progress(f"[{t_s:7.0f} s] {event.device} sends {event.type}")

        return send

    def _progress_action(self, t_s: float) -> float:
        for order in self.scenario.order:
            offender = self.devices.get(order.offender_device)
            for victim_id in order.victim_devices:
                victim = self.devices.get(victim_id)
                if offender is None or victim is None:
                    continue
                a, b = offender.model.route.at(t_s), victim.model.route.at(t_s)
                metres = geo.distance_m(a.lat, a.lon, b.lat, b.lon)
                self._progress(
                    f"[{t_s:7.0f} s] {order.offender_device} is {metres:6.0f} m from {victim_id} "
                    f"(true; alarm ring {order.alarm_m:g} m)"
                )
        return t_s + self.progress_every_s

    # --- commands (scheduler thread, via post) ------------------------------------------------

    def _interval_changed(self, firmware: Firmware) -> None:
        device_id = firmware.device_id
        last = self._last_fix_s.get(device_id)
        due = self.scheduler.earliest_due_s()
        if last is not None:
            due = max(due, last + firmware.interval_s)
        self.scheduler.at(due, ("fix", device_id), self._fix_action(firmware))

    def _command_applied(self, firmware: Firmware, command: DeviceCommand) -> None:
        self._progress(
            f"[{self.clock.elapsed_s():7.0f} s] {firmware.device_id} received "
            f"{_describe_command(command)}"
        )

    def _progress(self, line: str) -> None:
        if self.on_progress is not None:
            self.on_progress(line)

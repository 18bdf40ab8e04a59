"""Run a scenario: every device of it as an MQTT client, on one simulated clock.

`nabij simulate --scenario NAME [--speed N]`, `--check` (`simulators.check`) and `make demo`
call `load_scenario` and `ScenarioRun`. Device time is `start_ms` + simulated elapsed time, and
`start_ms` is nabij's clock at scenario time 0 when the run shares nabij's anchor (`anchor_ms`,
see `simulators.scheduler.SimClock`): devices and nabij then agree on the time at any speed.
Coverage gaps and `[[action]]`s are scheduled here; what a device does about them is
`simulators.firmware`'s business.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from nabij.contract import DeviceCommand, Topics
from services.shell.mqtt import MqttEndpoint
from simulators import geo
from simulators.actions import ActionStep, action_steps
from simulators.firmware import FIRMWARE_BY_ROLE, Behaviour, Firmware, IndoorWindow
from simulators.link import DeviceConnectError, Link, MqttLink
from simulators.model import DeviceModel
from simulators.noise import derive_seed
from simulators.report import DeviceReport, RunReport, describe_command
from simulators.scenario import (
    DeviceSpec,
    EventSpec,
    Scenario,
    ScenarioError,
    list_scenarios,
    load_scenario,
    parse_scenario,
)
from simulators.scheduler import Scheduler, SimClock

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


def build_firmware(
    spec: DeviceSpec,
    scenario_seed: int,
    topics: Topics,
    *,
    now_ms: Callable[[], int],
    post: Callable[[Callable[[], None]], None],
    boot_token: str,
) -> Firmware:
    """The firmware object for one scenario device (an AnkleMonitor or a VictimDevice)."""
    seed = derive_seed(scenario_seed, spec.id)
    model = DeviceModel(
        spec.id,
        spec.plan(),
        spec.noise.params(),
        seed=seed,
        battery=spec.battery(),
        skew=spec.clock.skew(),
        glitches=spec.clock.glitch_list(),
    )
    behaviour = Behaviour(
        indoors=tuple(IndoorWindow(w.from_s, w.to_s, w.fallback) for w in spec.indoors),
        battery_low_pct=spec.battery_low_pct,
        duplicate_rate=spec.duplicate_rate,
        seed=derive_seed(seed, "firmware"),
        boot_ids=spec.boot_id,
    )
    firmware_class = FIRMWARE_BY_ROLE[spec.role]
    return firmware_class(
        model,
        topics,
        spec.interval_s,
        now_ms=now_ms,
        post=post,
        behaviour=behaviour,
        boot_token=boot_token,
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
        anchor_ms: int | None = None,
        start_ms: int | None = None,
        on_progress: Callable[[str], None] | None = None,
        connect_timeout_s: float = 10.0,
        progress_every_s: float = 60.0,
        boot_token: str | None = None,
        link_factory: LinkFactory | None = None,
        announce_offline: bool = True,
        credentials: Path | None = None,
        ca_file: Path | None = None,
    ) -> None:
        """`credentials`: each device connects under its own identity from this directory
        (`MqttEndpoint.for_device`), else with the URL's; `ca_file` verifies a TLS broker."""
        self.scenario = scenario
        # False keeps devices "online" after the run (no retained offline status), as if they
        # went on working: what a demo of several scenarios side by side wants.
        self.announce_offline = announce_offline
        self.mqtt_url = mqtt_url
        self.clock = SimClock(speed, start_ms, anchor_ms=anchor_ms)
        self.scheduler = Scheduler(self.clock)
        self.topics = Topics(topic_prefix)
        self.on_progress = on_progress
        self.connect_timeout_s = connect_timeout_s
        self.progress_every_s = progress_every_s
        # Fail on a bad URL now, not after building everything.
        self._endpoint = (
            replace(MqttEndpoint.from_url(mqtt_url), ca_file=ca_file)
            if link_factory is None
            else None
        )
        self._credentials = credentials
        self._link_factory = link_factory
        # Every run is a new start of every device's firmware: boot ids fresh for this run (a
        # later run against the same nabij is not a replay), seq from 0. Fixed in tests.
        token = secrets.token_hex(4) if boot_token is None else boot_token
        self.devices: dict[str, Firmware] = {}
        for spec in scenario.device:
            firmware = build_firmware(
                spec,
                scenario.seed,
                self.topics,
                now_ms=self.clock.now_ms,
                post=self.scheduler.post,
                boot_token=token,
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
            endpoint = self._endpoint
            if self._credentials is not None:
                endpoint = endpoint.for_device(firmware.device_id, self._credentials)
            link = MqttLink(endpoint, firmware, announce_offline=self.announce_offline)
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
            firmware = self.devices[action.device]
            for k, step in enumerate(action_steps(action)):
                self.scheduler.at(step.at_s, ("action", index, k), self._step(firmware, step))
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

    def _step(self, firmware: Firmware, step: ActionStep) -> Callable[[float], None]:
        def run(t_s: float) -> None:
            was_powered = firmware.powered
            step.apply_to(firmware, self.clock.ms_at(t_s))
            self._progress(f"[{t_s:7.0f} s] {firmware.device_id} {step.says}")
            if firmware.powered and not was_powered:
                # Back from the dead: its fix rhythm starts again now.
                self.scheduler.at(t_s, ("fix", firmware.device_id), self._fix_action(firmware))

        return run

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
            f"{describe_command(command)}"
        )

    def _progress(self, line: str) -> None:
        if self.on_progress is not None:
            self.on_progress(line)

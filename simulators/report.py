"""What a scenario run reports: per device what it sent and received, and the run's timing."""

from __future__ import annotations

from dataclasses import dataclass, field

from nabij.contract import DeviceCommand, SetInterval, Warn
from simulators.firmware import ReceivedCommand


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
    """Device (and, anchored, nabij) epoch ms at scenario time 0."""
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
            commands = ", ".join(describe_command(c.command) for c in d.commands) or "none"
            lines.append(
                f"  {d.device_id} ({d.role}): {d.fixes_sent} fixes, {d.events_sent} events, "
                f"interval {d.interval_s} s, commands: {commands}"
            )
        return "\n".join(lines)


def describe_command(command: DeviceCommand) -> str:
    if isinstance(command, SetInterval):
        return f"set_interval {command.seconds}"
    assert isinstance(command, Warn)
    return f"warn {command.level}"

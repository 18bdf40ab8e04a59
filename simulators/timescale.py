"""Running nabij on a scenario's clock, for a sped-up simulation that nabij judges correctly.

Devices stamp scenario time, `speed` times faster than the wall. nabij judges freshness, dwells,
silence, velocities and escalation on its own clock, so a checked run puts nabij on the same
accelerated clock: settings `[clock]` with the speed and an anchor (`nabij.clock.Timescale`), and
the simulator reads the same two numbers from the config. Then every timer runs in scenario
seconds as it is configured, and expectations are written against nabij's *default* timers.

`scaled_settings` makes such settings, `timescale_problems` says how a config falls short, and
`write_config` writes a config directory for a scenario (`nabij simulate --write-config DIR`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from nabij.clock import wall_clock_ms
from nabij.config import DEFAULT_ESCALATION, ORDERS_FILE, SETTINGS_FILE, ClockSettings, Settings
from nabij.contract import ALARM_KINDS
from simulators.scenario import Scenario

_DEFAULTS: Final = Settings()
# Proximity timers whose defaults the scenario expectations are written against.
TIMERS_ASSUMED: Final = (
    "location_unknown_s",
    "offline_dwell_s",
    "online_dwell_s",
    "flap_window_s",
    "victim_silence_s",
)
# Relative tolerance when comparing a configured timer with the default the expectations assume.
TOLERANCE: Final = 0.01


def scaled_settings(base: Settings, speed: float, anchor_ms: int | None = None) -> Settings:
    """`base` on the scenario's clock (`speed`, anchored at `anchor_ms`, default now), with the
    default timers the expectations assume (connections untouched)."""
    clock = ClockSettings(
        speed=speed, anchor_ms=wall_clock_ms() if anchor_ms is None else anchor_ms
    )
    proximity = base.proximity.model_copy(
        update={key: getattr(_DEFAULTS.proximity, key) for key in TIMERS_ASSUMED}
    )
    gateway = base.gateway.model_copy(
        update={"update_min_interval_s": _DEFAULTS.gateway.update_min_interval_s}
    )
    return base.model_copy(
        update={
            "clock": clock,
            "proximity": proximity,
            "gateway": gateway,
            "escalation": {},  # every kind on its default policy
        }
    )


def timescale_problems(settings: Settings, scenario: Scenario, speed: float | None) -> list[str]:
    """Why `settings` cannot reproduce `scenario`'s expectations (empty: they can). `speed`, if
    asked for, must be the clock speed the settings run nabij at."""
    problems: list[str] = []
    clock = settings.clock
    if speed is not None and speed != clock.speed:
        problems.append(f"clock.speed = {clock.speed:g}, but --speed {speed:g} was asked for")

    def compare(key: str, have: float, want: float) -> None:
        if abs(have - want) > TOLERANCE * want:
            problems.append(f"{key} = {have:g}, the expectations assume the default {want:g}")

    for key in TIMERS_ASSUMED:
        compare(
            f"proximity.{key}", getattr(settings.proximity, key), getattr(_DEFAULTS.proximity, key)
        )
    compare(
        "gateway.update_min_interval_s",
        settings.gateway.update_min_interval_s,
        _DEFAULTS.gateway.update_min_interval_s,
    )
    for kind in sorted({e.kind for e in scenario.expect}):
        compare(
            f"escalation.{kind}.ack_timeout_s",
            settings.policy(kind).ack_timeout_s,
            DEFAULT_ESCALATION[kind].ack_timeout_s,
        )
    return problems


def settings_toml(settings: Settings) -> str:
    """`settings` as a complete `nabij.toml`."""
    data = settings.model_dump(mode="json")
    escalation: Mapping[str, Any] = data.pop("escalation")
    lines = ["# Written by `nabij simulate --write-config`: nabij on a scenario's clock.", ""]
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines.extend(
            f"{key} = {_toml_value(value)}" for key, value in values.items() if value is not None
        )
        lines.append("")
    for kind in ALARM_KINDS:
        if kind not in escalation:
            continue
        lines.append(f"[escalation.{kind}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in escalation[kind].items())
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: object) -> str:
    if isinstance(value, dict):  # an inline table (e.g. `[audit] retention_s`)
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    # JSON scalars, strings and string arrays are valid TOML values.
    return json.dumps(value)


def write_config(directory: Path, settings: Settings, scenario: Scenario) -> Path:
    """A config directory for nabij that runs `scenario` checked: settings and its orders."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SETTINGS_FILE).write_text(settings_toml(settings), encoding="utf-8")
    (directory / ORDERS_FILE).write_text(scenario.orders_toml(), encoding="utf-8")
    return directory

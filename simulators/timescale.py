"""Running nabij on a scenario's clock: its wall-clock timers divided by the speed.

Devices stamp scenario time (`speed` times faster than the wall), but nabij measures some things
on its own clock: acknowledgement timeouts (escalation), silence and presence
(`SERVER_TIME_PROXIMITY`) and the `updated` rate limit. Scenario expectations are written
against nabij's *default* timers in scenario seconds, so a checked run needs nabij configured
with each default divided by the speed, and `max_clock_ahead_s` large enough for device time
to run ahead of the wall clock.
`scaled_settings` makes such settings, `timescale_problems` says how a config falls short, and
`write_config` writes a config directory for a scenario (`nabij simulate --write-config DIR`).
Device-time settings (ring dwells, `max_fix_age_s`) need no change: they run on device time already.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from nabij.config import DEFAULT_ESCALATION, ORDERS_FILE, SETTINGS_FILE, Settings
from nabij.contract import ALARM_KINDS
from simulators.scenario import Scenario

_DEFAULTS: Final = Settings()
# Proximity settings on nabij's clock (checked by its tick), not on device time.
SERVER_TIME_PROXIMITY: Final = (
    "location_unknown_s",
    "offline_dwell_s",
    "online_dwell_s",
    "flap_window_s",
    "victim_silence_s",
)
# Relative tolerance when comparing a configured timer with the one a speed needs.
TOLERANCE: Final = 0.01
# Headroom on top of how far device time runs ahead, for a slow start or a settle wait.
AHEAD_MARGIN_S: Final = 600.0


def required_clock_ahead_s(speed: float, duration_s: float) -> float:
    """How far ahead of the wall clock device time gets by the end of a run."""
    return max(0.0, (speed - 1.0) * duration_s)


def scaled_settings(base: Settings, speed: float, duration_s: float) -> Settings:
    """`base` with nabij's server-time defaults divided by `speed` (connections untouched)."""
    proximity = base.proximity.model_copy(
        update={
            **{key: getattr(_DEFAULTS.proximity, key) / speed for key in SERVER_TIME_PROXIMITY},
            "max_clock_ahead_s": max(
                base.proximity.max_clock_ahead_s,
                required_clock_ahead_s(speed, duration_s) + AHEAD_MARGIN_S,
            ),
        }
    )
    gateway = base.gateway.model_copy(
        update={"update_min_interval_s": _DEFAULTS.gateway.update_min_interval_s / speed}
    )
    escalation = {
        kind: policy.model_copy(update={"ack_timeout_s": policy.ack_timeout_s / speed})
        for kind, policy in DEFAULT_ESCALATION.items()
    }
    return base.model_copy(
        update={"proximity": proximity, "gateway": gateway, "escalation": escalation}
    )


def timescale_problems(settings: Settings, speed: float, scenario: Scenario) -> list[str]:
    """Why `settings` cannot reproduce `scenario`'s expectations at `speed` (empty: they can)."""
    want = scaled_settings(settings, speed, scenario.duration_s)
    problems: list[str] = []

    def compare(key: str, have: float, need: float) -> None:
        if abs(have - need) > TOLERANCE * need:
            problems.append(f"{key} = {have:g}, needs {need:g} at --speed {speed:g}")

    for key in SERVER_TIME_PROXIMITY:
        compare(
            f"proximity.{key}",
            getattr(settings.proximity, key),
            getattr(want.proximity, key),
        )
    compare(
        "gateway.update_min_interval_s",
        settings.gateway.update_min_interval_s,
        want.gateway.update_min_interval_s,
    )
    for kind in sorted({e.kind for e in scenario.expect}):
        compare(
            f"escalation.{kind}.ack_timeout_s",
            settings.policy(kind).ack_timeout_s,
            want.policy(kind).ack_timeout_s,
        )
    ahead = required_clock_ahead_s(speed, scenario.duration_s)
    if settings.proximity.max_clock_ahead_s < ahead:
        problems.append(
            f"proximity.max_clock_ahead_s = {settings.proximity.max_clock_ahead_s:g}, needs at "
            f"least {ahead:g}: device time runs that far ahead of the wall clock"
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
    # JSON scalars, strings and string arrays are valid TOML values.
    return json.dumps(value)


def write_config(directory: Path, settings: Settings, scenario: Scenario) -> Path:
    """A config directory for nabij that runs `scenario` checked: settings and its orders."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SETTINGS_FILE).write_text(settings_toml(settings), encoding="utf-8")
    (directory / ORDERS_FILE).write_text(scenario.orders_toml(), encoding="utf-8")
    return directory

"""Scenario files: TOML describing orders, simulated devices, scripted events and expected alarms.

The format is documented in `simulators/README.md`. Loading validates everything and reports
every problem at once, each with its key path (`device[0].route[2].speed_mps: ...`).
"""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from nabij.config import Order
from nabij.contract import AlarmKind, EventType, NoticeEvent, QueueName
from nabij.failures import NabijError
from nabij.validation import key_problems
from simulators.device_spec import (
    ChargingSpec,
    ClockSpec,
    DeviceSpec,
    IndoorSpec,
    NoiseSpec,
    Role,
    WaypointSpec,
    WindowSpec,
)

SCENARIO_PACKAGE: Final = "simulators"
SCENARIO_DIR: Final = "scenarios"
MAX_DURATION_S: Final = 7 * 24 * 3600
# Which role's hardware can raise which event: a victim device has the aware button, only an
# ankle monitor has a strap. A scenario that mixes them up is a typo, not a test.
ROLE_EVENTS: Final[dict[str, frozenset[str]]] = {
    "offender": frozenset(
        {"strap_tamper", "battery_low", "gnss_lost", "gnss_restored", "power_off"}
    ),
    "victim": frozenset({"aware_button", "battery_low", "gnss_lost", "gnss_restored", "power_off"}),
}


_ROLE_NAMES: Final = {"offender": "an ankle monitor", "victim": "a victim device"}


class ScenarioError(NabijError, ValueError):
    """A scenario cannot be loaded; `problems` lists every one found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {problem}" for problem in problems))


__all__ = [
    "ChargingSpec",
    "ClockSpec",
    "DeviceSpec",
    "IndoorSpec",
    "NoiseSpec",
    "Role",
    "Scenario",
    "ScenarioError",
    "WaypointSpec",
    "WindowSpec",
    "list_scenarios",
    "load_scenario",
    "parse_scenario",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventSpec(_Strict):
    """A scripted device event: at `at_s` the device publishes a DeviceEvent of `type`."""

    at_s: float = Field(ge=0)
    device: str
    type: EventType


ActionType = Literal["vanish", "reboot", "flap", "silence"]


class ActionSpec(_Strict):
    """Something that happens to a device rather than a message it sends:
    - `vanish`: its connection dies without a goodbye (crash, destroyed, jammed), so the broker
      publishes its last will; dead until `until_s` (then it boots again), or for good;
    - `reboot`: its firmware restarts (watchdog, update) while the modem keeps the connection:
      a new boot id and seq from 0;
    - `flap`: presence flaps `times` times between `at_s` and `until_s` (offline as the broker's
      last will, online as the device's reconnect announcement, both retained);
    - `silence`: it stays connected but sends no fixes until `until_s`, or for good (an app
      killed by the phone's battery saver)."""

    at_s: float = Field(ge=0)
    device: str
    type: ActionType
    until_s: float | None = Field(default=None, gt=0)
    times: int = Field(default=1, ge=1, le=1000)

    @model_validator(mode="after")
    def _fits_its_type(self) -> ActionSpec:
        if self.type == "reboot" and self.until_s is not None:
            raise ValueError("a reboot takes no until_s (vanish with until_s: down for a while)")
        if self.type == "flap" and self.until_s is None:
            raise ValueError("flap needs until_s: the flaps are spread over [at_s, until_s)")
        if self.type != "flap" and "times" in self.model_fields_set:
            raise ValueError("times is for flap only")
        return self


class ExpectSpec(_Strict):
    """Notices nabij should put on a dispatch queue, in scenario time (seconds from start).

    Matches notices of `kind` and `event` (on `queue`, or any queue if omitted) for the
    scenario's orders whose `at`, mapped to scenario time (see `simulators.check`), lies in
    [after_s, before_s] (`before_s` omitted: the end of the scenario); their count must be
    within [at_least, at_most]. Assumes nobody acknowledges anything during the run.
    `happened_after_s` / `happened_before_s` (either or both) match only notices of something
    found late (in a backlog) whose `happened_at` lies in that window.
    """

    kind: AlarmKind
    event: NoticeEvent
    queue: QueueName | None = None
    after_s: float = Field(default=0.0, ge=0)
    before_s: float | None = Field(default=None, ge=0)
    at_least: int = Field(default=1, ge=0)
    at_most: int | None = Field(default=None, ge=0)
    happened_after_s: float | None = Field(default=None, ge=0)
    happened_before_s: float | None = Field(default=None, ge=0)
    note: str = ""


class Scenario(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str = ""
    duration_s: float = Field(gt=0, le=MAX_DURATION_S)
    seed: int = 0
    order: list[Order] = []
    device: list[DeviceSpec] = Field(min_length=1)
    event: list[EventSpec] = []
    action: list[ActionSpec] = []
    expect: list[ExpectSpec] = []

    def device_by_id(self, device_id: str) -> DeviceSpec:
        for device in self.device:
            if device.id == device_id:
                return device
        raise KeyError(device_id)

    def orders_toml(self) -> str:
        """The scenario's orders as an `orders.toml` text, to configure nabij for a run."""
        blocks: list[str] = []
        for order in self.order:
            lines = ["[[order]]"]
            for key, value in order.model_dump(exclude_none=True).items():
                # JSON scalars and string arrays are valid TOML values.
                lines.append(f"{key} = {json.dumps(value)}")
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks) + ("\n" if blocks else "")


def _cross_check(scenario: Scenario) -> list[str]:
    """What a single field cannot tell: references between devices, orders and events."""
    problems: list[str] = []
    roles: dict[str, str] = {}
    for i, device in enumerate(scenario.device):
        if device.id in roles:
            problems.append(f"device[{i}].id: {device.id!r} appears twice")
        roles[device.id] = device.role

    def check_role(path: str, device_id: str, role: str) -> None:
        if device_id not in roles:
            problems.append(f"{path}: {device_id!r} is not a device of this scenario")
        elif roles[device_id] != role:
            problems.append(f"{path}: {device_id!r} has role {roles[device_id]!r}, not {role!r}")

    order_ids: set[str] = set()
    for i, order in enumerate(scenario.order):
        if order.id in order_ids:
            problems.append(f"order[{i}].id: {order.id!r} appears twice")
        order_ids.add(order.id)
        check_role(f"order[{i}].offender_device", order.offender_device, "offender")
        for j, victim in enumerate(order.victim_devices):
            check_role(f"order[{i}].victim_devices[{j}]", victim, "victim")
    for i, event in enumerate(scenario.event):
        if event.at_s > scenario.duration_s:
            problems.append(f"event[{i}].at_s: {event.at_s} is after duration_s")
        if event.device not in roles:
            problems.append(f"event[{i}].device: {event.device!r} is not a device of this scenario")
        elif event.type not in ROLE_EVENTS[roles[event.device]]:
            problems.append(
                f"event[{i}].type: {event.device!r} is {_ROLE_NAMES[roles[event.device]]}, "
                f"it cannot raise {event.type!r}"
            )
    for i, action in enumerate(scenario.action):
        if action.at_s > scenario.duration_s:
            problems.append(f"action[{i}].at_s: {action.at_s} is after duration_s")
        if action.until_s is not None and action.until_s <= action.at_s:
            problems.append(f"action[{i}].until_s: not later than at_s")
        if action.device not in roles:
            problems.append(
                f"action[{i}].device: {action.device!r} is not a device of this scenario"
            )
    for i, expect in enumerate(scenario.expect):
        if expect.before_s is not None and expect.before_s < expect.after_s:
            problems.append(f"expect[{i}].before_s: earlier than after_s")
        if expect.at_most is not None and expect.at_most < expect.at_least:
            problems.append(f"expect[{i}].at_most: smaller than at_least")
        low, high = expect.happened_after_s, expect.happened_before_s
        if low is not None and high is not None and high < low:
            problems.append(f"expect[{i}].happened_before_s: earlier than happened_after_s")
    return problems


def parse_scenario(text: str, source: str = "<scenario>", base_dir: Path | None = None) -> Scenario:
    """Parse and validate scenario TOML text; raises ScenarioError listing every problem.

    Relative file names in it (`gpx`) are taken from `base_dir` (default: the current one)."""
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(source, [f"not valid TOML: {err}"]) from None
    try:
        scenario = Scenario.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as err:
        described = [f"{p.path or '(top)'}: {p.message}" for p in key_problems(err)]
        raise ScenarioError(source, described) from None
    if problems := _cross_check(scenario):
        raise ScenarioError(source, problems)
    return scenario


def _packaged() -> dict[str, Path]:
    directory = resources.files(SCENARIO_PACKAGE) / SCENARIO_DIR
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in directory.iterdir()
        if entry.name.endswith(".toml")
    }


def list_scenarios() -> list[str]:
    """Names of the scenarios packaged with the simulators."""
    return sorted(_packaged())


def load_scenario(name_or_path: str) -> Scenario:
    """A packaged scenario by name (`approach`), or a scenario file by path (`x/y.toml`)."""
    looks_like_path = name_or_path.endswith(".toml") or "/" in name_or_path or "\\" in name_or_path
    if looks_like_path:
        path = Path(name_or_path)
    else:
        packaged = _packaged()
        if name_or_path not in packaged:
            available = ", ".join(sorted(packaged)) or "none"
            raise ScenarioError(
                name_or_path, [f"no packaged scenario of that name (available: {available})"]
            )
        path = packaged[name_or_path]
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ScenarioError(str(path), [f"cannot read: {err.strerror or err}"]) from None
    return parse_scenario(text, str(path), path.parent)

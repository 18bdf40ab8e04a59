"""What a scenario's `[[action]]`s do to a device, and when: each becomes timed steps.

`action_steps` is pure (the timing of a flap, say, is data to test); `ScenarioRun` schedules the
steps and applies them to the device's firmware at their time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from simulators.firmware import Firmware
from simulators.scenario import ActionSpec

__all__ = ["ActionStep", "action_steps"]


@dataclass(frozen=True, slots=True)
class ActionStep:
    """At scenario time `at_s`, do `apply_to` to the device; `says` is the progress line."""

    at_s: float
    apply_to: Callable[[Firmware, int], None]
    """Gets the firmware and the true epoch ms of `at_s`."""
    says: str


def action_steps(action: ActionSpec) -> list[ActionStep]:
    """The steps of one action, in time order."""
    if action.type == "flap":
        assert action.until_s is not None  # the spec requires it for a flap
        # Offline at the start of each period, online again halfway through it.
        period = (action.until_s - action.at_s) / action.times
        return [
            step
            for k in range(action.times)
            for step in (
                _announce(False, action.at_s + k * period),
                _announce(True, action.at_s + (k + 0.5) * period),
            )
        ]
    begin, end = _BEGIN_END[action.type]
    steps = [ActionStep(action.at_s, *begin)]
    if end is not None and action.until_s is not None:
        steps.append(ActionStep(action.until_s, *end))
    return steps


def _announce(online: bool, at_s: float) -> ActionStep:
    says = "is online again (flap)" if online else "drops offline (flap)"
    return ActionStep(at_s, lambda fw, ms: fw.announce(online, ms), says)


_Do = tuple[Callable[[Firmware, int], None], str]

# Action type -> what happens at at_s, and what at until_s if the type has an end.
_BEGIN_END: Final[dict[str, tuple[_Do, _Do | None]]] = {
    "vanish": (
        (lambda fw, _ms: fw.vanish(), "vanishes (no goodbye)"),
        (lambda fw, _ms: fw.revive(), "boots again"),
    ),
    "reboot": ((lambda fw, _ms: fw.reboot(), "reboots (new boot id, seq from 0)"), None),
    "silence": (
        (lambda fw, _ms: fw.silence(), "falls silent (connected, no fixes)"),
        (lambda fw, _ms: fw.speak(), "sends fixes again"),
    ),
}

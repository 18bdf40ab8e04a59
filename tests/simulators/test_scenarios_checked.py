"""Every packaged scenario, played against real Mosquitto and Redis and a nabij in this
process, produces the notices its `[[expect]]` timeline says (`nabij simulate --check`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nabij.config import load_config
from simulators.check import run_checked
from simulators.runner import list_scenarios, load_scenario
from tests.simulators.checked import SPEED, checked_stack


@pytest.mark.integration
@pytest.mark.parametrize("name", list_scenarios())
def test_packaged_scenario_meets_its_expected_timeline(
    name: str, tmp_path: Path, mosquitto: object, redis_server: object, unique_prefix: str
) -> None:
    """The scenario's expectations hold when checked against the real stack at high speed."""
    mqtt_url: str = mosquitto.url  # type: ignore[attr-defined]  # fixture from tests/servers.py
    redis_url: str = redis_server.url  # type: ignore[attr-defined]  # as above
    scenario = load_scenario(name)
    stack = checked_stack(tmp_path, scenario, mqtt_url, redis_url, unique_prefix)
    try:
        config = load_config(stack.config_dir, env={})
        _report, result = run_checked(scenario, config, speed=SPEED)
    finally:
        stack.stop()
    assert result.ok, f"{result}\n--- nabij log tail:\n{stack.logs()[-3000:]}"

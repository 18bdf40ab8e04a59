"""nabij on a scenario's clock for simulator integration tests (real Mosquitto and Redis)."""

from __future__ import annotations

from pathlib import Path

from nabij.config import Settings
from simulators.scenario import Scenario
from simulators.timescale import scaled_settings, write_config
from tests.integration.stack import Stack

# Fast enough that all scenarios take about two minutes, slow enough that nabij's latency
# (tens of ms, x speed in scenario seconds) stays inside the expectation windows.
SPEED = 100.0


def checked_stack(
    tmp_path: Path,
    scenario: Scenario,
    mqtt_url: str,
    redis_url: str,
    prefix: str,
    *,
    shards: int = 1,
) -> Stack:
    """nabij on the scenario's clock at SPEED (settings `[clock]`), running in this process
    (with `shards` proximity shards)."""
    base = Settings.model_validate(
        {
            "mqtt": {"url": mqtt_url, "topic_prefix": f"{prefix}/v1", "client_id": f"{prefix}-p"},
            "redis": {"url": redis_url, "key_prefix": prefix},
        }
    )
    settings = scaled_settings(base, SPEED)
    config_dir = write_config(tmp_path / "config", settings, scenario)
    stack = Stack(config_dir, mqtt_url, redis_url)
    stack.start_in_process(shards=shards)
    return stack

"""Why the service may freeze its heap (`services/shell/heap.py`): the proximity engine holds no
reference cycle, so an engine dropped after a freeze is still freed; and the state that grows
with the shard is not tracked by the garbage collector at all."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from services.proximity.core.engine import ProximityEngine
from services.replay.timeline import replay
from tests.scenarios.tracks import load_scenario

SCENARIOS = sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.toml"))


def played(path: Path) -> ProximityEngine:
    """The engine at the end of a shipped scenario (every record, alarms opened and closed)."""
    scenario = load_scenario(path)
    engines: list[ProximityEngine] = []
    replay(scenario.config, scenario.records, tail_s=5, on_batch=lambda _i, e: engines.append(e))
    return engines[-1]


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_a_dropped_engine_leaves_no_cyclic_garbage(path: Path) -> None:
    engine = played(path)
    gc.collect()  # the replay's own garbage
    del engine
    assert gc.collect() == 0


def test_the_state_that_grows_with_the_shard_is_untracked() -> None:
    engine = played(SCENARIOS[0])
    devices, pairs = list(engine.devices()), list(engine.pairs())
    assert devices and pairs
    for device in devices:
        assert not gc.is_tracked(device)
        assert device.fix is None or not gc.is_tracked(device.fix)
        assert not any(gc.is_tracked(p) for p in device.track)
    for pair in pairs:
        assert not gc.is_tracked(pair)
        assert not gc.is_tracked(pair.alarm)

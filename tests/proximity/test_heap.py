"""Why the service may freeze its heap (`services/shell/heap.py`): the proximity engine holds no
reference cycle, so an engine dropped after a freeze is still freed; and the state that grows
with the shard is not tracked by the garbage collector at all."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from services.proximity.core.engine import ProximityEngine
from services.proximity.core.lanes import FairLane, LaneLimits
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
    devices, pairs = list(engine.devices()), list(engine.pair_rings())
    assert devices and pairs
    for device in devices:
        assert not gc.is_tracked(device)
        assert device.fix is None or not gc.is_tracked(device.fix)
        assert device.led_to is None or not gc.is_tracked(device.led_to)
    for pair in pairs:
        assert not gc.is_tracked(pair)
        assert not gc.is_tracked(pair.alarm)


def test_the_lanes_keep_nothing_tracked_per_device() -> None:
    """A lane's bookkeeping lives as long as its devices: none of it is walked by a collection
    (a list per device was: ten thousand objects in every full collection at 5,000 pairs)."""
    lane: FairLane[str] = FairLane(
        LaneLimits(device_max=10, lane_max=10_000, lane_max_bytes=10**7, device_rate=1.0)
    )
    gc.collect()
    tracked_before = len(gc.get_objects())
    for k in range(1000):
        verdict = lane.verdict(f"dev-{k}", b"{}", 1_000, live=True, plausible=bool)
        assert verdict == "admit"
    gc.collect()
    assert len(gc.get_objects()) - tracked_before < 100

"""Every scenario file through the exact core (`replay`), against its expected alarm timeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from nabij.contract import AlarmSignal
from services.replay.timeline import replay
from tests.scenarios.tracks import Expected, Scenario, load_scenario

HERE = Path(__file__).parent
FILES = sorted(HERE.glob("*.toml"))


def timeline(scenario: Scenario) -> list[tuple[float, AlarmSignal]]:
    """Opens and clears (updates left out), with their time in seconds from the start."""
    lines = replay(scenario.config, scenario.records, tail_s=5).lines
    return [
        ((line.at - scenario.start_ms) / 1000, line.signal)
        for line in lines
        if line.signal is not None and line.signal.action != "update"
    ]


def matches(expected: Expected, at_s: float, signal: AlarmSignal) -> bool:
    lo, hi = expected.at_s
    return (
        lo <= at_s <= hi
        and expected.action == signal.action
        and expected.kind == signal.kind
        and (expected.victim is None or expected.victim == signal.victim_device)
        and (expected.zone is None or expected.zone == signal.zone)
        and (expected.order is None or expected.order == signal.order_id)
    )


def describe(items: list[tuple[float, AlarmSignal]]) -> str:
    return "\n".join(
        f"  {at:8.1f}s {s.action:<6}{s.kind:<20}{s.order_id} {s.victim_device or s.zone}"
        for at, s in items
    )


def test_there_are_scenarios() -> None:
    """The suite is not silently empty."""
    assert len(FILES) >= 11


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario_gives_its_expected_timeline(path: Path) -> None:
    """The scenario's opens and clears are exactly its `[[expect]]` list, in order, each within
    its time window (so an extra alarm, a missing one or a flap fails)."""
    scenario = load_scenario(path)
    got = timeline(scenario)
    report = f"{scenario.name}: got\n{describe(got)}"
    assert len(got) == len(scenario.expected), report
    for expected, (at_s, signal) in zip(scenario.expected, got, strict=True):
        assert matches(expected, at_s, signal), f"{expected} vs {at_s}\n{report}"


def test_the_breach_in_a_coverage_gap_is_marked_as_found_late() -> None:
    """breach_in_coverage_gap: the alarm that opens when the backlog arrives says when the
    breach really happened (inside the gap, at 40 m) and how late it was found."""
    scenario = load_scenario(HERE / "breach_in_coverage_gap.toml")
    (alarm,) = [
        s for _, s in timeline(scenario) if s.kind == "proximity_alarm" and s.action == "open"
    ]
    assert alarm.happened_at is not None and alarm.late_s is not None
    assert 60 <= (alarm.happened_at - scenario.start_ms) / 1000 <= 200
    assert alarm.late_s == (alarm.at - alarm.happened_at) // 1000
    assert "DETECTED LATE" in alarm.reason

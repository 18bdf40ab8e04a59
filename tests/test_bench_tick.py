"""`bench.tick` (docs/benchmarks.md, "The tick looks only at the devices due") runs at a toy
size, so it cannot rot: its asserts check that the outage it measures happened."""

from __future__ import annotations

import re

import pytest

from bench import tick


def test_the_tick_bench_times_both_cases(capsys: pytest.CaptureFixture[str]) -> None:
    """Everyone reporting, then every device quiet and grouped in an outage (never a figure)."""
    tick.main(["--pairs", "20"])
    out = capsys.readouterr().out
    assert re.search(
        r"^tick, 20 pairs: [\d.]+ ms CPU everyone reporting, [\d.]+ ms in a", out, re.M
    )

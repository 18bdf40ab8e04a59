"""`bench.lean` (docs/benchmarks.md, "One process, lean") runs once, so it cannot rot."""

from __future__ import annotations

import re

import pytest

from bench import lean


def test_the_lean_bench_times_the_core_and_the_intake(capsys: pytest.CaptureFixture[str]) -> None:
    """Both halves run over the whole load (the intake asserts it admits every message) and
    report a CPU time per fix (never compared with a figure)."""
    lean.main(["--runs", "1"])
    out = capsys.readouterr().out
    assert re.search(r"^core: \d+\.\d us/fix CPU$", out, re.M)
    assert re.search(r"^intake: \d+\.\d us/message CPU$", out, re.M)

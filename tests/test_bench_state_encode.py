"""`bench.state_encode` (docs/benchmarks.md) runs at a toy size, so it cannot rot."""

from __future__ import annotations

from bench import state_encode
from services.proximity.core.history import POINT_BYTES


def test_the_state_encode_bench_times_and_sizes_a_full_device_state() -> None:
    """It encodes device states whose history is full (17 minutes of fixes): more bytes than
    the history's 30 points take coded (8 bytes a step past the newest, whole), and some CPU
    time (never compared with a figure)."""
    result = state_encode.main(["--pairs", "2", "--repeat", "1"])
    assert result["bytes"] > 29 * 8 + POINT_BYTES
    assert result["encode_ns"] >= 0

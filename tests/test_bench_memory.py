"""`bench.memory --resident` (a million pairs' measure) runs once, so it cannot rot."""

from __future__ import annotations

from bench import memory


def test_the_resident_measure_counts_the_engine_and_leaves_redis_out() -> None:
    result = memory.main(["--pairs", "1000", "--minutes", "2", "--interval", "60", "--resident"])
    assert result["pairs"] == 1000
    assert result["resident_bytes_per_pair"] > 0  # a thousand pairs take megabytes
    assert "redis_bytes_per_pair" not in result

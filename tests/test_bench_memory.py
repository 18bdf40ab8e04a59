"""`bench.memory --resident` (a million pairs' measure) runs once, so it cannot rot."""

from __future__ import annotations

from bench import memory


def test_the_resident_measure_reads_the_process_and_leaves_redis_out() -> None:
    """Growth itself is not asserted: a process that freed memory before (another test in the
    same worker) can build a small engine inside what its allocator already holds."""
    result = memory.main(["--pairs", "200", "--minutes", "2", "--interval", "60", "--resident"])
    assert result["pairs"] == 200
    assert result["resident_bytes_per_pair"] >= 0
    assert "redis_bytes_per_pair" not in result
    assert memory.resident_bytes() > 1 << 20  # an interpreter with nabij loaded: megabytes

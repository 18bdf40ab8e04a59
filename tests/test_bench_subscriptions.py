"""`bench.subscriptions` (what a process holds per pair beside its core) runs once, so it cannot
rot. Its figures belong in docs/benchmarks.md; only a generous bound on a single process's is
asserted, which a set or map by device (~90 bytes a pair each) would break."""

from __future__ import annotations

import pytest

from bench import subscriptions
from nabij.keys import Shard


def test_the_measure_builds_the_ownership_and_both_readers_and_reports_bytes_a_pair(
    capsys: pytest.CaptureFixture[str],
) -> None:
    subscriptions.main(["--pairs", "50", "--shards", "3"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("held by a single process's ownership and two readers: ")
    assert out[1].startswith("held by shard 1/3's ownership and two readers: ")


def test_a_single_process_holds_nothing_per_device_beside_its_orders() -> None:
    assert subscriptions.held_bytes(3000, Shard(1, 1)) < 16

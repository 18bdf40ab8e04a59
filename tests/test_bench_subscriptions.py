"""`bench.subscriptions` (what a shard's readers hold per pair) runs once, so it cannot rot. The
figure itself is not asserted (memory figures belong in docs/benchmarks.md)."""

from __future__ import annotations

import pytest

from bench import subscriptions


def test_the_measure_builds_both_readers_and_reports_bytes_a_pair(
    capsys: pytest.CaptureFixture[str],
) -> None:
    subscriptions.main(["--pairs", "50"])
    assert capsys.readouterr().out.startswith("held by a shard's two readers: ")

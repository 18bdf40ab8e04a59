"""`bench.evidence --held` (what the evidence recorder keeps per device) runs once, so it cannot
rot. The figure itself is not asserted (memory figures belong in docs/benchmarks.md)."""

from __future__ import annotations

import pytest

from bench import evidence


def test_the_held_measure_feeds_every_device_and_reports_bytes_a_pair(
    capsys: pytest.CaptureFixture[str],
) -> None:
    evidence.main(["--held", "50"])
    assert capsys.readouterr().out.startswith("held after a fix a device: ")

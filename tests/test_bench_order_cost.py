"""`bench.order_cost` runs once, so it cannot rot (its figures are not asserted)."""

from __future__ import annotations

import pytest

from bench import order_cost


def test_the_order_cost_measures_both_and_prints_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = order_cost.main(["--orders", "200", "--parse", "100"])
    assert set(result) == {"resident_bytes_per_order", "parse_ms"}
    assert "resident_bytes_per_order" in capsys.readouterr().out

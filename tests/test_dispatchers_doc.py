"""docs/dispatchers.md tells a dispatcher what every kind of notice means and what to do."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from nabij.contract import AlarmKind

DISPATCHERS = Path(__file__).resolve().parents[1] / "docs" / "dispatchers.md"


def test_every_alarm_kind_has_a_row_saying_what_to_do() -> None:
    """A kind added to the contract fails here until the dispatchers' page has its row, with a
    priority and something in each column."""
    rows = {
        match[1]: match[2]
        for match in re.finditer(r"^\| `(\w+)` \|(.*)\|$", DISPATCHERS.read_text(), re.MULTILINE)
    }
    assert set(rows) == set(get_args(AlarmKind))
    for kind, rest in rows.items():
        cells = [cell.strip() for cell in rest.split("|")]
        assert len(cells) == 3 and all(cells), kind
        assert re.match(r"[123], ", cells[0]), kind

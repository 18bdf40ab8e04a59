"""The committed Grafana dashboard is the one `services.shell.dashboard` generates, laid out on
the grid."""

from __future__ import annotations

import json
from pathlib import Path

from services.shell import dashboard

COMMITTED = Path(__file__).parent.parent / "config/grafana/dashboards/nabij.json"


def test_committed_dashboard_is_generated() -> None:
    assert COMMITTED.read_text() == dashboard.render(), "run `make dashboard`"


def test_every_panel_reads_the_datasource_variable_and_has_a_query() -> None:
    model = json.loads(dashboard.render())
    panels = [panel for panel in model["panels"] if panel["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
    assert [v["name"] for v in model["templating"]["list"]] == ["datasource"]


def test_overview_stats_come_first() -> None:
    model = json.loads(dashboard.render())
    first_row = [p["title"] for p in model["panels"][1:5]]
    assert first_row == [
        "Services up",
        "Fixes/s",
        "Unacknowledged P1 alarms",
        "Oldest unacknowledged",
    ]
    assert all(p["type"] == "stat" for p in model["panels"][1:5])

"""The Grafana dashboard for nabij, generated from this table of panels.

`python -m services.shell.dashboard config/grafana/dashboards/nabij.json` writes it (`make
dashboard`); a unit test fails when the committed file and this module disagree, and an integration
test runs every panel's query against a real Prometheus scraping the real services. Plain
dictionaries, no generator library: the dashboard JSON model is stable and this keeps nothing to
pin.

Layout, as ops engineers read a dashboard: overview numbers on top, then ingest, decision latency,
alarms, dependencies. Every panel reads the `datasource` variable.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

# Counters with no series yet (nothing refused so far) draw as 0 through `or vector(0)`, not as
# "No data", which an on-call engineer would read as a broken scrape.
# Grafana's rate window: at least four scrape intervals, whatever the zoom.
RATE: Final = "$__rate_interval"
GRID_WIDTH: Final = 24


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: tuple[tuple[str, str], ...]  # (PromQL, legend)
    kind: Literal["stat", "timeseries"] = "timeseries"
    unit: str = "short"


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]
    height: int = 8


def _latency(
    quantile: str, histogram: str = "nabij_decision_latency_seconds", by: str = "service"
) -> tuple[str, str]:
    return (
        f"histogram_quantile({quantile}, sum by ({by}, le) (rate({histogram}_bucket[{RATE}])))",
        f"p{quantile[2:]} {{{{{by}}}}}",
    )


ROWS: Final = (
    Row(
        "Overview",
        (
            Panel(
                "Services up",
                "nabij processes answering scrapes.",
                (('sum(up{job="nabij"})', "up"),),
                kind="stat",
            ),
            Panel(
                "Fixes/s",
                "GPS fixes received by proximity per second.",
                ((f'sum(rate(nabij_messages_received_total{{kind="Fix"}}[{RATE}]))', "fixes/s"),),
                kind="stat",
                unit="reqps",
            ),
            Panel(
                "Unacknowledged P1 alarms",
                "Priority-1 alarms no dispatcher has acknowledged yet.",
                (('sum(nabij_unacknowledged_alarms{priority="1"}) or vector(0)', "P1"),),
                kind="stat",
            ),
            Panel(
                "Oldest unacknowledged",
                "Age of the oldest unacknowledged alarm, any priority.",
                (
                    (
                        "time() - min(nabij_oldest_unacknowledged_alarm_opened_timestamp_seconds)"
                        " or vector(0)",
                        "age",
                    ),
                ),
                kind="stat",
                unit="s",
            ),
        ),
        height=4,
    ),
    Row(
        "Ingest and rejections",
        (
            Panel(
                "Messages received",
                "Input per second, by service and kind.",
                (
                    (
                        f"sum by (service, kind) (rate(nabij_messages_received_total[{RATE}]))",
                        "{{service}} {{kind}}",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "Rejected, refused and ignored",
                "Invalid input (dead-lettered), input refused at intake, valid input without"
                " effect; by reason.",
                (
                    (
                        f"sum by (service, reason) (rate(nabij_messages_rejected_total[{RATE}]))"
                        " or vector(0)",
                        "rejected {{service}} {{reason}}",
                    ),
                    (
                        f"sum by (service, reason) (rate(nabij_messages_refused_total[{RATE}]))"
                        " or vector(0)",
                        "refused {{service}} {{reason}}",
                    ),
                    (
                        f"sum by (service, reason) (rate(nabij_messages_ignored_total[{RATE}]))",
                        "ignored {{service}} {{reason}}",
                    ),
                ),
                unit="reqps",
            ),
            Panel(
                "Waiting for the service",
                "Messages received and not yet taken, by lane.",
                (("sum by (service, lane) (nabij_ingest_queued)", "{{service}} {{lane}}"),),
            ),
        ),
    ),
    Row(
        "Decision latency",
        (
            Panel(
                "Decision latency percentiles",
                "From taking a batch to having committed its effects.",
                (_latency("0.50"), _latency("0.90"), _latency("0.99")),
                unit="s",
            ),
            Panel(
                "Latency from device time",
                "From when a device measured a live fix (its clock) to the committed decision:"
                " the network and the broker are in it.",
                tuple(
                    _latency(q, "nabij_decision_latency_from_device_seconds")
                    for q in ("0.50", "0.99")
                ),
                unit="s",
            ),
            Panel(
                "Batch size",
                "Median input messages per batch.",
                (
                    (
                        "histogram_quantile(0.5, sum by (service, le) "
                        f"(rate(nabij_batch_size_bucket[{RATE}])))",
                        "{{service}}",
                    ),
                ),
            ),
        ),
    ),
    Row(
        "Pairs and devices",
        (
            Panel(
                "Pairs by ring state",
                "Offender-victim pairs by ring and hysteresis phase (outside hidden).",
                (('sum by (ring, phase) (nabij_pairs{phase!="outside"})', "{{ring}} {{phase}}"),),
            ),
            Panel(
                "Devices by last contact",
                "Devices in force by time since their last fix, and whether they say they are"
                " online.",
                (
                    (
                        "sum by (contact_age, online) (nabij_devices) > 0",
                        "{{contact_age}} online={{online}}",
                    ),
                ),
            ),
            Panel(
                "Device events",
                "Events devices reported, by type (presses, tampers, battery, power).",
                (
                    (
                        f"sum by (type) (increase(nabij_device_events_total[{RATE}])) or vector(0)",
                        "{{type}}",
                    ),
                ),
            ),
            Panel(
                "Platform sight",
                "1 while nabij has told the dispatchers it is blind (platform_degraded); the quiet"
                " devices that notice covers; orders in force.",
                (
                    ("max(nabij_platform_degraded)", "degraded"),
                    ("sum(nabij_devices_grouped)", "devices grouped"),
                    ("sum(nabij_orders_active)", "orders in force"),
                ),
            ),
        ),
    ),
    Row(
        "Alarms and escalations",
        (
            Panel(
                "Open alarms by kind",
                "Alarms not yet resolved.",
                (("sum by (kind) (nabij_open_alarms) > 0", "{{kind}}"),),
            ),
            Panel(
                "Unacknowledged by priority",
                "Open alarms nobody has acknowledged.",
                (("sum by (priority) (nabij_unacknowledged_alarms)", "P{{priority}}"),),
            ),
            Panel(
                "Notices by queue and event",
                "Notices appended to the dispatch queues (opened, escalated, reminder, ...).",
                (
                    (
                        f"sum by (queue, event) (increase(nabij_notices_total[{RATE}]))",
                        "{{queue}} {{event}}",
                    ),
                ),
            ),
            Panel(
                "Time to acknowledge",
                "From an alarm opening to a person acknowledging it, by priority.",
                (_latency("0.50", "nabij_time_to_acknowledge_seconds", "priority"),),
                unit="s",
            ),
            Panel(
                "Signals to the gateway",
                "Alarm signals proximity raised, updated and cleared.",
                (
                    (
                        f"sum by (kind, action) (increase(nabij_signals_emitted_total[{RATE}]))",
                        "{{kind}} {{action}}",
                    ),
                ),
            ),
        ),
    ),
    Row(
        "Dependencies",
        (
            Panel(
                "Ready",
                "1 while the service is connected to MQTT and Redis with its state loaded.",
                (("nabij_ready", "{{service}}"),),
            ),
            Panel(
                "MQTT readers connected",
                "1 while a reader is connected to the broker; reconnects per window.",
                (
                    ("nabij_mqtt_connected", "{{client}}"),
                    (
                        f"sum by (client) (increase(nabij_mqtt_connections_total[{RATE}]))",
                        "connections {{client}}",
                    ),
                ),
            ),
            Panel(
                "Streams",
                "Entries in the gateway's streams; its consumer group's pending entries and lag;"
                " notices the dispatch queues' reader groups hold unacknowledged.",
                (
                    ("nabij_stream_length", "length {{stream}}"),
                    ("nabij_consumer_group_pending", "pending {{stream}}"),
                    ("nabij_consumer_group_lag", "lag {{stream}}"),
                    (
                        "sum by (queue, group) (nabij_dispatch_readers_pending) or vector(0)",
                        "unacknowledged {{queue}} {{group}}",
                    ),
                ),
            ),
            Panel(
                "Redis",
                "1 while Redis answers the service's commits, and while it refuses them for lack"
                " of memory; reconnects; p99 commit round trip.",
                (
                    ("nabij_redis_connected", "connected {{service}}"),
                    ("nabij_redis_out_of_memory", "out of memory {{service}}"),
                    (
                        f"sum by (service) (increase(nabij_redis_reconnects_total[{RATE}]))",
                        "reconnects {{service}}",
                    ),
                    _latency("0.99", "nabij_redis_commit_latency_seconds"),
                ),
            ),
            Panel(
                "Dead letters dropped and broker refusals",
                "Dead letters Redis would not store; what the broker refused nabij's clients.",
                (
                    (
                        f"sum by (reason) (increase(nabij_deadletters_dropped_total[{RATE}]))"
                        " or vector(0)",
                        "dropped {{reason}}",
                    ),
                    (
                        f"sum by (client, reason) (increase(nabij_mqtt_refused_total[{RATE}]))"
                        " or vector(0)",
                        "refused {{client}} {{reason}}",
                    ),
                ),
            ),
        ),
    ),
)


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, in layout order."""
    return [
        (panel.title, expr) for row in ROWS for panel in row.panels for expr, _ in panel.queries
    ]


def dashboard() -> dict[str, Any]:
    """The dashboard's JSON model."""
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    panels: list[dict[str, Any]] = []
    y = 0
    for row in ROWS:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        width = GRID_WIDTH // len(row.panels)
        for column, panel in enumerate(row.panels):
            panels.append(
                {
                    "id": len(panels) + 1,
                    "type": panel.kind,
                    "title": panel.title,
                    "description": panel.description,
                    "datasource": datasource,
                    "gridPos": {"h": row.height, "w": width, "x": column * width, "y": y},
                    "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                    "targets": [
                        {
                            "refId": chr(ord("A") + index),
                            "datasource": datasource,
                            "expr": expr,
                            "legendFormat": legend,
                        }
                        for index, (expr, legend) in enumerate(panel.queries)
                    ],
                }
            )
        y += row.height
    return {
        "uid": "nabij",
        "title": "nabij",
        "tags": ["nabij"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    (target,) = argv
    Path(target).write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

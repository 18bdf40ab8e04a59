"""A real Prometheus scraping `nabij run`: the key series after an approach and an alarm-button
press, every dashboard panel's query answered, and nabij's alert rules evaluated."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.cli import main as cli
from services.shell import dashboard
from tests.integration.conftest import StackFactory
from tests.integration.stack import VICTIM_HOME, Stack, wait_until
from tests.integration.test_alarm_path import kinds, walk
from tests.servers import HOST, PrometheusServer, free_port

pytestmark = pytest.mark.integration
# A window of many one-second scrapes, for the dashboard's `$__rate_interval`.
RATE_WINDOW = "1m"
NABIJ_RUN = (sys.executable, "-m", "services.cli", "run")


@dataclass
class Scraped:
    stack: Stack
    nabij: subprocess.Popen[bytes]
    prometheus: PrometheusServer

    def value(self, promql: str) -> float | None:
        """The single sample `promql` has now, or None while it has none."""
        result = self.prometheus.query(promql)
        if len(result) != 1:
            return None
        sample = result[0]["value"]
        assert isinstance(sample, list)
        return float(sample[1])

    def alert_states(self, name: str) -> set[str]:
        data = self.prometheus.api("alerts")
        assert isinstance(data, dict)
        return {alert["state"] for alert in data["alerts"] if alert["labels"]["alertname"] == name}


@pytest.fixture
def scraped(make_stack: StackFactory, tmp_path: Path) -> Iterator[Scraped]:
    """`nabij run` with its metrics on a free port, scraped every second by a real Prometheus."""
    stack = make_stack()
    port = free_port()
    nabij = subprocess.Popen(
        [*NABIJ_RUN, "--config", str(stack.config_dir), "--metrics-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=(stack.config_dir / "run.log").open("ab"),
    )
    prometheus = PrometheusServer(tmp_path / "prometheus", [f"{HOST}:{port}"])
    try:
        prometheus.start()
        setup = Scraped(stack, nabij, prometheus)
        wait_until(
            lambda: setup.value('min(nabij_ready{job="nabij"})') == 1.0,
            what="both services ready, as Prometheus sees them",
            detail=stack.logs,
        )
        yield setup
    finally:
        prometheus.stop()
        nabij.kill()
        nabij.wait(timeout=15)


def test_key_series_and_every_dashboard_panel_after_an_approach_and_a_button_press(
    scraped: Scraped,
) -> None:
    stack = scraped.stack
    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    walk(offender, victim, stack.clock(), [50])
    victim.publish_raw("fix", b"{broken")
    victim.event(stack.clock(), "aware_button", lat=VICTIM_HOME[0], lon=VICTIM_HOME[1], acc=10.0)
    stack.wait_notices(
        "probation",
        lambda ns: {"proximity_alarm", "aware_button"} <= set(kinds(ns, "opened")),
        "the proximity alarm and the button press opened",
    )

    def series_show_the_scenario() -> bool:
        return (
            scraped.value('nabij_unacknowledged_alarms{kind="aware_button",priority="1"}') == 1.0
            and scraped.value('nabij_open_alarms{kind="proximity_alarm"}') == 1.0
            and scraped.value('nabij_messages_rejected_total{reason="invalid_json"}') == 1.0
            # The button press's and the proximity alarm's notices, measured at a heartbeat.
            and (scraped.value('nabij_stream_length{stream="dispatch_probation"}') or 0) >= 2
        )

    wait_until(series_show_the_scenario, what="the open alarms scraped")
    # One fix each received; the broken one rejected before it had a kind.
    assert scraped.value('sum(nabij_messages_received_total{kind="Fix"})') == 2.0
    assert (
        scraped.value('nabij_notices_total{queue="police",kind="aware_button",event="opened"}')
        == 1.0
    )
    assert scraped.value('sum(up{job="nabij"})') == 1.0
    assert scraped.value('nabij_consumer_group_lag{stream="gateway_inbox"}') is not None
    # Proximity's two readers (bulk and fast lanes), both connected.
    assert scraped.value("count(nabij_mqtt_connected == 1)") == 2.0
    opened = scraped.prometheus.query("nabij_oldest_unacknowledged_alarm_opened_timestamp_seconds")
    assert "1" in {sample["metric"]["priority"] for sample in opened}  # type: ignore[index]
    assert scraped.value('count(nabij_decision_latency_seconds_bucket{service="proximity"})')

    # The pair inside its alarm ring, both devices heard and online, the
    # press counted once (it came on both lanes), one order in force and nabij not blind.
    def census_shows_the_scenario() -> bool:
        return (
            scraped.value('nabij_pairs{ring="alarm",phase="inside"}') == 1.0
            and scraped.value('sum(nabij_devices{online="true",contact_age!="never"})') == 2.0
        )

    wait_until(census_shows_the_scenario, what="pairs and devices at a heartbeat")
    assert scraped.value('nabij_pairs{ring="alarm",phase="outside"}') == 0.0
    assert scraped.value('nabij_device_events_total{type="aware_button"}') == 1.0
    assert scraped.value("nabij_orders_active") == 1.0
    assert scraped.value("nabij_platform_degraded") == 0.0
    assert scraped.value('nabij_redis_connected{service="proximity"}') == 1.0
    assert scraped.value('nabij_redis_reconnects_total{service="gateway"}') == 0.0
    assert (scraped.value('nabij_redis_commit_latency_seconds_count{service="gateway"}') or 0) >= 1
    # Two live fixes (the walk's last and the victim's), decided within a minute of measuring.
    from_device = "nabij_decision_latency_from_device_seconds"
    assert (scraped.value(f"{from_device}_count") or 0) >= 2
    assert scraped.value(f'{from_device}_bucket{{le="60.0"}}') == scraped.value(
        f"{from_device}_count"
    )
    # A dispatch desk reading the police queue as a group, with one notice not yet acknowledged.
    police = stack.keys.dispatch("police")
    stack.redis.xgroup_create(police, "desk", id="0")
    stack.redis.xreadgroup("desk", "desk-1", {police: ">"}, count=1)
    wait_until(
        lambda: scraped.value('nabij_dispatch_readers_pending{queue="police",group="desk"}') == 1,
        what="the desk's unacknowledged notice measured",
    )
    press = next(n.alarm_id for n in stack.notices("police") if n.kind == "aware_button")
    assert cli(["ack", press, "--by", "officer 17", "--config", str(stack.config_dir)]) == 0
    wait_until(
        lambda: scraped.value('nabij_time_to_acknowledge_seconds_count{priority="1"}') == 1.0,
        what="the acknowledgement timed",
    )

    def panels_without_data() -> list[str]:
        # Each query parses (an error answer raises) and, once scraped a few times, has data.
        queries = dashboard.panel_queries()
        swapped = [(title, expr.replace(dashboard.RATE, RATE_WINDOW)) for title, expr in queries]
        return [f"{title}: {expr}" for title, expr in swapped if not scraped.prometheus.query(expr)]

    wait_until(lambda: not panels_without_data(), what="every panel", detail=panels_without_data)


def test_killed_services_set_off_the_service_down_rule(scraped: Scraped) -> None:
    # A scrape before the process listened may leave it pending until the next evaluation.
    wait_until(
        lambda: scraped.alert_states("NabijServiceDown") == set(),
        what="NabijServiceDown quiet while the services answer",
    )
    scraped.nabij.kill()
    scraped.nabij.wait(timeout=15)
    wait_until(
        lambda: scraped.alert_states("NabijServiceDown") & {"pending", "firing"} != set(),
        what="NabijServiceDown pending or firing in /api/v1/alerts",
    )

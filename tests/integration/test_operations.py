"""What an ops engineer and a dispatcher touch: health and metrics endpoints, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from services.alarm_gateway import operators
from services.cli import main
from tests.integration.conftest import StackFactory
from tests.integration.stack import VICTIM_HOME, wait_until
from tests.integration.test_alarm_path import kinds, walk
from tests.servers import free_port

pytestmark = pytest.mark.integration
NABIJ = (sys.executable, "-m", "services.cli")


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


def test_run_serves_readiness_health_and_metrics(make_stack: StackFactory) -> None:
    """`nabij run --metrics-port` answers /readyz 200 once connected, /healthz 200, and /metrics
    counts what it received and what it rejected."""
    stack = make_stack()
    port = free_port()
    process = subprocess.Popen(
        [*NABIJ, "run", "--config", str(stack.config_dir), "--metrics-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=(stack.config_dir / "run.log").open("ab"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_get(f"{base}/readyz")[0] == 200, what="ready", detail=stack.logs)
        assert http_get(f"{base}/healthz")[0] == 200
        victim = stack.device("vic-1")
        victim.fix(stack.clock(), VICTIM_HOME)
        victim.publish_raw("fix", b"{broken")
        wait_until(
            lambda: 'reason="invalid_json"' in http_get(f"{base}/metrics")[1],
            what="rejection counted",
        )
        metrics = http_get(f"{base}/metrics")[1]
        assert 'nabij_messages_received_total{kind="Fix",service="proximity"} 1.0' in metrics
        assert "nabij_decision_latency_seconds_bucket" in metrics
        assert 'nabij_ready{service="gateway"} 1.0' in metrics
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0
    # Under `run`, each service's lines (theirs and their MQTT readers') carry its own name.
    lines = [json.loads(line) for line in (stack.config_dir / "run.log").read_text().splitlines()]
    by_event = {(line["event"], line["service"]) for line in lines}
    assert ("mqtt_connected", "proximity") in by_event
    assert ("mqtt_connected", "run") not in by_event


def test_alarms_ack_and_resolve_from_the_command_line(
    make_stack: StackFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dispatcher lists an open alarm, acknowledges it, resolves it, and it is gone."""
    stack = make_stack()
    stack.start_in_process()
    walk(stack.device("ank-1"), stack.device("vic-1"), stack.clock(), [50])
    probation = stack.wait_notices(
        "probation", lambda ns: "proximity_alarm" in kinds(ns, "opened"), "alarm opened"
    )
    alarm_id = next(n.alarm_id for n in probation if n.kind == "proximity_alarm")
    config = ["--config", str(stack.config_dir)]

    assert main(["alarms", *config]) == 0
    assert alarm_id in capsys.readouterr().out
    assert main(["ack", alarm_id, "--by", "officer 17", *config]) == 0
    assert f"{alarm_id} acknowledged by officer 17" in capsys.readouterr().out
    assert main(["resolve", alarm_id, "--by", "officer 17", "--note", "turned back", *config]) == 0
    assert f"{alarm_id} resolved by officer 17" in capsys.readouterr().out
    assert main(["ack", alarm_id, "--by", "officer 17", *config]) == 1
    assert "no open alarm" in capsys.readouterr().err

    events = [(n.event, n.by) for n in stack.notices("probation") if n.alarm_id == alarm_id]
    assert events[-2:] == [("acknowledged", "officer 17"), ("resolved", "officer 17")]
    resolved = next(n for n in stack.notices("probation") if n.event == "resolved")
    assert resolved.note == "turned back"


def test_a_consumer_group_sees_each_notice_once(make_stack: StackFactory) -> None:
    """Two dispatch consoles in one consumer group share the queue: every notice exactly once;
    a console that restarts gets back the notice it was showing when it stopped."""
    stack = make_stack()
    stack.start_in_process()
    victim = stack.device("vic-1")
    for i in range(6):
        victim.event(stack.clock() - i, "aware_button")
    everything = [
        n.notice_id for n in stack.wait_notices("police", lambda ns: len(ns) >= 6, "six notices")
    ]

    def console(name: str) -> Iterator[str]:
        for notice in operators.follow(
            stack.redis,
            stack.keys,
            "police",
            from_start=True,
            group="console",
            consumer=name,
            block_ms=100,
        ):
            yield notice.notice_id

    desk_1, desk_2 = console("desk-1"), console("desk-2")
    seen = [next(desk_1), next(desk_2), next(desk_1), next(desk_2), next(desk_1), next(desk_2)]
    assert sorted(seen) == sorted(everything[:6])
    restarted = console("desk-1")  # desk-1 stopped while showing its third notice
    assert next(restarted) == seen[4]

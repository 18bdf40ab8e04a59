"""HealthServer over real HTTP on a free port, and the metric definitions it serves."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from services import cli
from services.shell import metrics
from services.shell.health import HealthServer


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> _Clock:
    """A monotonic clock the test moves by hand."""
    return _Clock()


@pytest.fixture
def registry() -> CollectorRegistry:
    """A private registry with one counter, so /metrics output is predictable."""
    reg = CollectorRegistry()
    Counter("nabij_test_events", "Test events.", ["kind"], registry=reg).labels("x").inc(3)
    return reg


@pytest.fixture
def server(clock: _Clock, registry: CollectorRegistry) -> Iterator[HealthServer]:
    """A started HealthServer on 127.0.0.1, port 0, stale after 30 s of the test clock."""
    health = HealthServer(0, host="127.0.0.1", registry=registry, stale_after_s=30, clock=clock)
    health.start()
    try:
        yield health
    finally:
        health.stop()


def _get(server: HealthServer, path: str) -> tuple[int, str, bytes]:
    url = f"http://127.0.0.1:{server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def test_the_healthcheck_command_follows_healthz(server: HealthServer, clock: _Clock) -> None:
    """`nabij healthcheck` (the image's HEALTHCHECK) exits 0 while /healthz is 200, 1 when it is
    stale, and 1 when nothing listens."""
    probe = ["healthcheck", "--port", str(server.port)]
    assert cli.main(probe) == 0
    clock.now += 31
    assert cli.main(probe) == 1
    port = server.port
    server.stop()
    assert cli.main(["healthcheck", "--port", str(port), "--timeout", "1"]) == 1


def test_port_zero_binds_a_real_port(server: HealthServer) -> None:
    """`.port` reports the port actually bound when 0 was asked for."""
    assert server.port > 0


def test_healthz_follows_the_heartbeat(server: HealthServer, clock: _Clock) -> None:
    """200 'ok' within stale_after_s of the last heartbeat (start counts), 503 after, 200 again
    after a new heartbeat."""
    assert _get(server, "/healthz")[::2] == (200, b"ok\n")
    clock.now += 29
    assert _get(server, "/healthz")[0] == 200
    clock.now += 2
    assert _get(server, "/healthz")[0] == 503
    server.heartbeat()
    assert _get(server, "/healthz")[::2] == (200, b"ok\n")


def test_readyz_is_ready_only_when_every_check_passes(server: HealthServer) -> None:
    """503 with a JSON list of failing checks (a raising check fails) until all return True."""
    state = {"mqtt": False}
    server.add_check("mqtt", lambda: state["mqtt"])
    server.add_check("redis", lambda: True)

    def broken() -> bool:
        raise RuntimeError("boom")

    server.add_check("state_loaded", broken)

    status, content_type, body = _get(server, "/readyz")
    assert (status, content_type) == (503, "application/json")
    assert json.loads(body) == {"ready": False, "failing": ["mqtt", "state_loaded"]}

    state["mqtt"] = True
    server.add_check("state_loaded", lambda: True)
    status, _, body = _get(server, "/readyz")
    assert (status, json.loads(body)) == (200, {"ready": True, "failing": []})


def test_readyz_without_checks_is_ready(server: HealthServer) -> None:
    """No registered check means nothing to wait for."""
    assert _get(server, "/readyz")[0] == 200


def test_metrics_serves_the_registry_in_prometheus_text(server: HealthServer) -> None:
    """/metrics is the text exposition of the registry it was given."""
    status, content_type, body = _get(server, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert b'nabij_test_events_total{kind="x"} 3.0' in body


def test_unknown_path_is_404(server: HealthServer) -> None:
    """Only the three endpoints exist."""
    assert _get(server, "/")[0] == 404


def test_stop_releases_the_port(clock: _Clock, registry: CollectorRegistry) -> None:
    """After stop() the port no longer answers; stop() twice is harmless."""
    health = HealthServer(0, host="127.0.0.1", registry=registry, clock=clock)
    health.start()
    port = health.port
    health.stop()
    health.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_project_metrics_are_registered_with_their_labels() -> None:
    """services.shell.metrics defines every metric once in the default registry, with the agreed
    names, labels and latency buckets."""
    metrics.MESSAGES_RECEIVED.labels(service="t", kind="fix")
    metrics.DECISION_LATENCY.labels(service="t").observe(0.003)
    names = {m.name: m for m in REGISTRY.collect()}
    expected = {
        "nabij_messages_received": "counter",
        "nabij_messages_rejected": "counter",
        "nabij_messages_ignored": "counter",
        "nabij_signals_emitted": "counter",
        "nabij_notices": "counter",
        "nabij_commands_sent": "counter",
        "nabij_decision_latency_seconds": "histogram",
        "nabij_batch_size": "histogram",
        "nabij_open_alarms": "gauge",
        "nabij_ready": "gauge",
    }
    assert {name: names[name].type for name in expected} == expected
    buckets = [
        s.labels["le"]
        for s in names["nabij_decision_latency_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["service"] == "t"
    ]
    assert buckets[:3] == ["0.001", "0.0025", "0.005"]
    assert buckets[-2:] == ["1.0", "+Inf"]


def _answers(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5):
            return True
    except urllib.error.URLError:
        return False


@pytest.mark.parametrize(
    ("host", "answering", "silent"),
    [(None, "127.0.0.1", "127.0.0.2"), ("127.0.0.2", "127.0.0.2", "127.0.0.1")],
)
def test_answers_only_on_the_address_it_binds(
    registry: CollectorRegistry, host: str | None, answering: str, silent: str
) -> None:
    """By default the endpoints answer on 127.0.0.1 and on no other address (127.0.0.2 is
    another loopback address that a 0.0.0.0 bind would answer on too); given `host` (from
    `[health] bind`), there and only there."""
    health = (
        HealthServer(0, registry=registry)
        if host is None
        else HealthServer(0, host=host, registry=registry)
    )
    health.start()
    try:
        assert _answers(answering, health.port)
        assert not _answers(silent, health.port)
    finally:
        health.stop()

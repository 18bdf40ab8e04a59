"""compose.yaml, checked without a container engine: it matches the Compose Specification, every
file it mounts exists, each nabij command parses, and its ports, volumes, health checks,
dependencies and scrape targets agree with one another; deploy/provision.sh is run for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis
import yaml

from nabij.config import load_config
from services.cli import build_parser
from simulators.scenario import load_scenario
from tests.deploy.dockerfile import healthcheck_command, parse
from tests.servers import RedisServer

REPO = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
NABIJ_IMAGE = SERVICES["gateway"]["image"]
IMAGE_HEALTHCHECK = healthcheck_command(
    parse((REPO / "Dockerfile").read_text())[-1].last("HEALTHCHECK").argument
)
STACK_CONFIG = REPO / "deploy" / "nabij"
SECRETS_IN_CONTAINERS = "/var/lib/nabij/secrets"
SIMULATED = "approach"


def nabij_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in SERVICES.items() if s.get("image") == NABIJ_IMAGE}


def healthcheck(service: dict[str, Any]) -> list[str] | None:
    """What the engine runs to call the service healthy: its own, or the image's."""
    check = service.get("healthcheck")
    if check is not None:
        return None if check.get("disable") else list(check["test"][1:])
    return IMAGE_HEALTHCHECK if service.get("image") == NABIJ_IMAGE else None


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_matches_the_compose_specification() -> None:
    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text())
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(COMPOSE)]
    assert errors == []


def test_every_mounted_file_and_the_build_context_exist() -> None:
    missing = []
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(".") and not (REPO / source).exists():
                missing.append(f"{name}: {source}")
        if "build" in service and not (REPO / service["build"] / "Dockerfile").exists():
            missing.append(f"{name}: build context {service['build']}")
    assert missing == []


def test_named_volumes_are_declared_and_used() -> None:
    used = {
        volume.split(":")[0]
        for service in SERVICES.values()
        for volume in service.get("volumes", [])
        if not volume.startswith(".")
    }
    assert used == set(COMPOSE["volumes"])


def test_each_nabij_command_is_a_valid_nabij_command() -> None:
    parser = build_parser()
    for name, service in nabij_services().items():
        if "entrypoint" in service:  # provision: a script, run in test_provision_*
            continue
        parser.parse_args(service["command"])  # exits (fails the test) on a bad command
        check = healthcheck(service)
        if check is not None:
            assert check[0] == "nabij", name
            parser.parse_args(check[1:])


def test_dependencies_exist_and_their_conditions_can_be_met() -> None:
    for name, service in SERVICES.items():
        depends = service.get("depends_on", {})
        conditions = (
            dict.fromkeys(depends, "service_started")
            if isinstance(depends, list)
            else {target: spec["condition"] for target, spec in depends.items()}
        )
        for target, condition in conditions.items():
            assert target in SERVICES, f"{name} depends on unknown {target}"
            if condition == "service_healthy":
                assert healthcheck(SERVICES[target]) is not None, f"{name} waits on {target}"
            if condition == "service_completed_successfully":
                assert SERVICES[target].get("restart") == "no", f"{target} must run once"


def test_health_checks_probe_the_port_each_service_serves() -> None:
    config = load_config(STACK_CONFIG, env={})
    for name, service in nabij_services().items():
        check = healthcheck(service)
        if check is None or "entrypoint" in service:
            continue
        served = (
            str(config.settings.console.port)
            if service["command"][0] == "console"
            else option(service["command"], "--metrics-port")
        )
        assert option(check, "--port") == served, name


def test_prometheus_scrapes_every_service_that_serves_metrics() -> None:
    prometheus = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t
        for job in prometheus["scrape_configs"]
        for c in job["static_configs"]
        for t in c["targets"]
    }
    serving = {
        f"{name}:{port}"
        for name, service in nabij_services().items()
        if (port := option(service.get("command", []), "--metrics-port")) is not None
    }
    assert targets == serving
    alerting = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert [target.split(":")[0] for target in alerting] == ["alertmanager"]


def test_published_ports_are_unique_and_the_console_publishes_its_own() -> None:
    published = [p.split(":")[0] for s in SERVICES.values() for p in s.get("ports", [])]
    assert len(published) == len(set(published))
    console_port = load_config(STACK_CONFIG, env={}).settings.console.port
    assert SERVICES["console"]["ports"] == [f"{console_port}:{console_port}"]


def test_the_simulated_devices_are_the_orders_devices() -> None:
    simulator = SERVICES["simulator"]["command"]
    assert option(simulator, "--scenario") == SIMULATED
    orders = load_config(STACK_CONFIG, env={}).orders
    scenario = load_scenario(SIMULATED)
    assert {d.id for d in scenario.device} == {
        device for order in orders for device in (order.offender_device, *order.victim_devices)
    }


def _provision(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Path]]:
    """deploy/provision.sh with its directories (and the config's secret paths) under tmp_path."""
    dirs = {name: tmp_path / name for name in ("broker", "secrets", "ca", "config")}
    dirs["config"].mkdir(exist_ok=True)
    for source in STACK_CONFIG.iterdir():
        text = source.read_text().replace(SECRETS_IN_CONTAINERS, str(dirs["secrets"]))
        (dirs["config"] / source.name).write_text(text)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "NABIJ_CONFIG": str(dirs["config"]),
        "NABIJ_SHIPPED_BROKER_CONF": str(REPO / "config" / "mosquitto" / "nabij.conf"),
        "NABIJ_BROKER_DIR": str(dirs["broker"]),
        "NABIJ_SECRETS_DIR": str(dirs["secrets"]),
        "NABIJ_CA_DIR": str(dirs["ca"]),
    }
    run = subprocess.run(
        ["sh", str(REPO / "deploy" / "provision.sh")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return run, dirs


@pytest.mark.integration
def test_provision_writes_every_secret_the_stack_reads_and_runs_once(tmp_path: Path) -> None:
    run, dirs = _provision(tmp_path)
    assert run.returncode == 0, run.stderr
    config = load_config(dirs["config"], env={})
    secrets = [config.settings.mqtt.password_file, config.settings.audit.key_file]
    secrets += [user.password_file for user in config.settings.redis.users.values()]
    assert all(path is not None and Path(path).is_file() for path in secrets), secrets
    for device in load_scenario(SIMULATED).device:
        assert (dirs["secrets"] / "devices" / f"{device.id}.password").is_file()
    acl = (dirs["secrets"] / "redis-users.acl").read_text()
    server = RedisServer(tmp_path / "redis", acl_rules=acl)
    server.start()
    try:  # every component logs in to a real Redis with the password provision wrote
        for user in config.settings.redis.users.values():
            assert user.password_file is not None
            password = Path(user.password_file).read_text().strip()
            client = redis.Redis(port=server.port, username=user.username, password=password)
            assert client.ping()
            client.close()
    finally:
        server.stop()

    broker_conf = (dirs["broker"] / "mosquitto.conf").read_text().splitlines()
    assert "listener 1883" in broker_conf  # the compose network, not the container's loopback
    assert "persistence_location /mosquitto/data/" in broker_conf
    file_options = ("password_file", "acl_file", "cafile", "certfile", "keyfile", "crlfile")
    referenced = {Path(words[1]).name for words in map(str.split, broker_conf)
                  if words and words[0] in file_options}  # fmt: skip
    assert referenced <= {path.name for path in dirs["broker"].iterdir()}

    written = [dirs[name] for name in ("broker", "secrets", "ca")]
    before = {p: p.stat().st_mtime_ns for d in written for p in d.rglob("*")}
    again, _ = _provision(tmp_path)
    assert again.returncode == 0 and "already provisioned" in again.stdout
    assert {p: p.stat().st_mtime_ns for d in written for p in d.rglob("*")} == before


@pytest.mark.parametrize("path", ["Dockerfile"])
def test_hadolint_finds_nothing(path: str) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    run = subprocess.run(
        [str(hadolint), str(REPO / path)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr

"""Run one or both services in this process until a stop is asked or one of them fails."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from nabij.clock import scaled_clock
from nabij.config import Config
from services.shell.health import HealthServer

log = structlog.get_logger("runner")


class Service(Protocol):
    def run(self, stop: threading.Event) -> None: ...


def build_services(
    config: Config,
    wanted: Sequence[str],
    health: HealthServer | None,
    clock: Callable[[], int] | None = None,
) -> dict[str, Service]:
    """The services named in `wanted`, on the config's clock (the wall clock unless a simulation
    set `[clock]`); `clock` (epoch ms) is injectable so tests can replay."""
    from services.alarm_gateway.service import GatewayService
    from services.proximity.service import ProximityService

    settings = config.settings.clock
    if clock is None:
        clock = scaled_clock(settings.timescale())
    if settings.speed != 1.0:
        log.warning("scenario_clock", speed=settings.speed, anchor_ms=settings.anchor_ms)
    services: dict[str, Service] = {}
    if "proximity" in wanted:
        services["proximity"] = ProximityService(config, health=health, clock=clock)
    if "gateway" in wanted:
        services["gateway"] = GatewayService(config, health=health, clock=clock)
    return services


def run_services(
    config: Config, wanted: Sequence[str], stop: threading.Event, health: HealthServer | None
) -> int:
    """Block until `stop` is set; a service that dies stops the others and fails the process."""
    failed: list[str] = []

    def guard(name: str, service: Service) -> None:
        # Every line this thread logs (and the threads it starts, which copy its context) names
        # its service, not the process's "run".
        structlog.contextvars.bind_contextvars(service=name)
        try:
            service.run(stop)
        except Exception:
            log.exception("service_failed", service=name)
            failed.append(name)
            stop.set()

    threads = [
        threading.Thread(target=guard, args=(name, service), name=name, daemon=True)
        for name, service in build_services(config, wanted, health).items()
    ]
    if health is not None:
        # Only now: the services have registered their readiness checks.
        health.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=0.5)
    return 1 if failed else 0

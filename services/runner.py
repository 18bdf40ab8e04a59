"""Run one or both services in this process until a stop is asked or one of them fails."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from nabij.config import Config
from nabij.health import HealthServer

log = structlog.get_logger("runner")


class Service(Protocol):
    def run(self, stop: threading.Event) -> None: ...


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def build_services(
    config: Config,
    wanted: Sequence[str],
    health: HealthServer | None,
    clock: Callable[[], int] = wall_clock_ms,
) -> dict[str, Service]:
    """The services named in `wanted`; `clock` (epoch ms) is injectable so tests can replay."""
    from services.alarm_gateway.service import GatewayService
    from services.proximity.service import ProximityService

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

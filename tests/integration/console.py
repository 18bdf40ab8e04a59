"""The console for integration tests: served on a free port over a test stack, with operators,
and the approach that gives it alarms of both queues (with the victim's data at police)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from nabij.keys import Keys
from nabij.settings import ConsoleSettings
from services.console.app import create_app
from services.console.identity import Operators
from services.console.server import console_server, start_on_thread
from tests.integration.stack import VICTIM_HOME, Stack
from tests.integration.test_alarm_path import kinds, walk
from tests.servers import free_port

PROBATION: Final = ("Officer Jansen", "probation password 1")
POLICE: Final = ("Agent de Vries", "police password 2")
VICTIM_DIGITS: Final = ("52.3788", "4.90005")  # VICTIM_HOME as any encoder prints it


def add_operators(stack: Stack) -> None:
    people = Operators(stack.redis, stack.keys)
    people.add(PROBATION[0], "probation", PROBATION[1])
    people.add(POLICE[0], "police", POLICE[1])


@dataclass
class RunningConsole:
    url: str
    server: uvicorn.Server

    def stop(self) -> None:
        self.server.should_exit = True


def serve_console(stack: Stack) -> RunningConsole:
    """The console over `stack`'s Redis, on the stack's clock, on a thread."""
    port = free_port()
    server = console_server(stack.config, stack.clock, host="127.0.0.1", port=port)
    start_on_thread(server)
    return RunningConsole(f"http://127.0.0.1:{port}", server)


def console_app(
    stack: Stack, clock: Callable[[], int] | None = None, settings: ConsoleSettings | None = None
) -> FastAPI:
    return create_app(
        stack.redis,
        Keys(stack.config.settings.redis.key_prefix),
        settings or stack.config.settings.console,
        clock or stack.clock,
    )


def logged_in(app: FastAPI, who: tuple[str, str]) -> tuple[TestClient, str]:
    """A client with the session cookie of `who`, and the session's CSRF token."""
    client = TestClient(app, base_url="https://testserver")
    answer = client.post("/api/login", json={"name": who[0], "password": who[1]})
    assert answer.status_code == 200, answer.text
    return client, answer.json()["csrf_token"]


def approach_with_press(stack: Stack) -> None:
    """He walks in to 200 m of her (pre-alert, alarm, escalated to police) and she presses her
    button: alarms on both queues, the victim's position in the police facts and notices."""
    offender, victim = stack.device("ank-1"), stack.device("vic-1")
    ts = walk(offender, victim, stack.clock(), [1500, 1100, 900, 700, 400, 300, 200, 200])
    victim.event(ts, "aware_button", lat=VICTIM_HOME[0], lon=VICTIM_HOME[1], acc=8)
    stack.wait_notices(
        "police",
        lambda ns: (
            "aware_button" in kinds(ns, "opened") and "proximity_alarm" in kinds(ns, "escalated")
        ),
        "her press and the escalated alarm at police",
    )

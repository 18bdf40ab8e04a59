"""Serving the console: `nabij console` in the foreground, or on a thread (demo, tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis
import uvicorn

from nabij.config import Config
from nabij.keys import Keys
from services.console.app import create_app
from services.shell.redis_io import connect_as


def console_server(
    config: Config,
    clock: Callable[[], int],
    *,
    host: str | None = None,
    port: int | None = None,
    client: redis.Redis | None = None,
) -> uvicorn.Server:
    """A uvicorn server for the console, connected to Redis as the console's user (or `client`)."""
    settings = config.settings
    app = create_app(
        client or connect_as(settings.redis, "console"),
        Keys(settings.redis.key_prefix),
        settings.console,
        clock,
    )
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=host or settings.console.host,
            port=settings.console.port if port is None else port,
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
    )


def start_on_thread(server: uvicorn.Server) -> threading.Thread:
    """Run `server` on a daemon thread, returning once it accepts connections."""
    thread = threading.Thread(target=server.run, name="console", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the console did not start (is its port free?)")
        time.sleep(0.02)
    return thread

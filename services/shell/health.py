"""Liveness, readiness and metrics over HTTP, for container probes and Prometheus.

`HealthServer` runs `http.server.ThreadingHTTPServer` on a daemon thread:

- `GET /metrics`: the Prometheus text exposition of `registry`.
- `GET /healthz`: 200 `ok` while the service loop calls `heartbeat()`; 503 once no heartbeat came
  for `stale_after_s`. Construction counts as a heartbeat, so start-up gets the same grace.
- `GET /readyz`: 200 once every check added with `add_check` returns True; otherwise 503 with a
  JSON body naming the failing checks. A check that raises counts as failing.

Checks run on the HTTP thread, so they must be cheap and thread-safe (read a flag, or ping with a
short timeout); they never touch the service loop's state.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Final

import prometheus_client
import structlog
from prometheus_client import CollectorRegistry

DEFAULT_STALE_AFTER_S: Final = 30.0

log = structlog.get_logger(__name__)


class HealthServer:
    """Serves /metrics, /healthz and /readyz on `host:port` (port 0: any free port); loopback
    unless told otherwise (`[health] bind`): metrics name alarm kinds and rates, not for the
    network at large."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        registry: CollectorRegistry = prometheus_client.REGISTRY,
        *,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._requested = (host, port)
        self._registry = registry
        self._stale_after_s = stale_after_s
        self._clock = clock
        self._last_beat = clock()
        self._checks: dict[str, Callable[[], bool]] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- called by the service -------------------------------------------------------------

    def heartbeat(self) -> None:
        """Record that the service loop is alive; call once per loop turn."""
        self._last_beat = self._clock()

    def add_check(self, name: str, fn: Callable[[], bool]) -> None:
        """Register (or replace) a readiness check; /readyz is 200 only when all return True."""
        with self._lock:
            self._checks[name] = fn

    def start(self) -> None:
        """Bind and serve on a daemon thread; returns once the socket is listening."""
        if self._httpd is not None:
            raise RuntimeError("HealthServer already started")
        httpd = ThreadingHTTPServer(self._requested, _handler_for(self))
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="health", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        if self._httpd is None:
            raise RuntimeError("HealthServer not started")
        return int(self._httpd.server_address[1])

    # --- probe logic (also usable without HTTP) --------------------------------------------

    def alive(self) -> bool:
        """True while the last heartbeat is younger than `stale_after_s`."""
        return self._clock() - self._last_beat < self._stale_after_s

    def failing_checks(self) -> list[str]:
        """Names of readiness checks that returned False or raised, sorted."""
        with self._lock:
            checks = list(self._checks.items())
        failing: list[str] = []
        for name, fn in checks:
            try:
                ok = fn() is True
            except Exception as err:  # a broken check means not ready, never a 500
                log.warning("readiness check raised", check=name, error=repr(err))
                ok = False
            if not ok:
                failing.append(name)
        return sorted(failing)

    def metrics_text(self) -> bytes:
        return prometheus_client.generate_latest(self._registry)


def _handler_for(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(
                    HTTPStatus.OK, server.metrics_text(), prometheus_client.CONTENT_TYPE_LATEST
                )
            elif path == "/healthz":
                if server.alive():
                    self._reply(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
                else:
                    self._reply(
                        HTTPStatus.SERVICE_UNAVAILABLE, b"stale\n", "text/plain; charset=utf-8"
                    )
            elif path == "/readyz":
                failing = server.failing_checks()
                status = HTTPStatus.SERVICE_UNAVAILABLE if failing else HTTPStatus.OK
                body = json.dumps({"ready": not failing, "failing": failing}).encode()
                self._reply(status, body + b"\n", "application/json")
            else:
                self._reply(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

        def _reply(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Probes hit every few seconds: no access log."""

    return Handler


__all__ = ["DEFAULT_STALE_AFTER_S", "HealthServer"]

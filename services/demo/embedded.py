"""In-process stand-ins for Mosquitto and Redis, for `make demo` on a machine with neither.

`EmbeddedBroker` runs an amqtt broker on its own asyncio loop in a daemon thread; `EmbeddedStore`
runs fakeredis's TCP server in a daemon thread. Both listen on 127.0.0.1 on a free port and hand
out a URL the services take as they would a real server's. Neither persists anything: stopping
them loses every session, queued message and key. For tests and production, use the real servers.

What nabij relies on, and how these behave (pinned by tests/test_embedded.py):

- amqtt: QoS 1, persistent sessions (clean_session=False) with messages queued while the client is
  away, retained messages, last will, paho `manual_ack` all work. Differences from Mosquitto:
  * a QoS 1 message still un-PUBACKed when the client's connection closes is dropped, not
    redelivered on reconnect (amqtt cancels the in-flight flow); nor is one left un-PUBACKed for
    5 s (amqtt's fixed PUBACK timeout). A demo service must ack promptly, and a crash of it can
    lose the batch in flight: the demo is not at-least-once. Pinned as xfail in the tests.
  * messages queued for an offline session arrive with the retain flag set, and a reconnecting
    persistent session is sent the retained messages of its subscriptions again.
  * amqtt marks every session of its anonymous auth plugin "anonymous" and then drops its
    persistent session; the broker here authenticates everyone through `_AcceptAllAuth`, which
    does not. `_Broker` stops amqtt replaying other clients' retained messages on CONNECT.
- fakeredis: MULTI/EXEC pipelines, XADD MAXLEN ~, XGROUP CREATE MKSTREAM, XREADGROUP BLOCK (wakes
  when another client XADDs, like Redis), XACK, XPENDING, XAUTOCLAIM, hashes. Its TCP handler
  polls each connection every 10 ms, which adds up to 10 ms per round trip.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import structlog
from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin
from fakeredis import TcpFakeServer

from nabij.failures import NabijError
from services.shell.mqtt import MQTT311_QUERY

HOST: Final = "127.0.0.1"
START_TIMEOUT_S: Final = 10.0
_CHATTY_LOGGERS: Final = ("amqtt", "transitions", "fakeredis")

log = structlog.get_logger(__name__)


class EmbeddedError(NabijError, RuntimeError):
    """An embedded server failed to start or stop."""


class _AcceptAllAuth(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type hints
    """Accept every client without marking its session anonymous (see the module docstring)."""

    @dataclass
    class Config:
        """No options; its presence tells amqtt not to look for an `auth` config section."""

    async def authenticate(self, *, session: Any) -> bool:  # Any: amqtt's untyped Session
        return True


class _Broker(Broker):  # type: ignore[misc]  # amqtt ships no type hints
    """amqtt's broker, minus a retained-message leak.

    On every CONNECT amqtt replays the retained messages matching *any* client's subscription to
    the connecting client (amqtt 0.12, `Broker._client_connected`). Here a client only gets
    retained messages for filters it subscribed to itself, at the QoS it was granted.
    """

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Any
    ) -> None:  # Any: amqtt's untyped Session
        topic_filter, _qos = subscription
        granted = [
            qos
            for subscriber, qos in self._subscriptions.get(topic_filter, [])
            if subscriber.client_id == session.client_id
        ]
        if granted:
            await super()._publish_retained_messages_for_subscription(
                (topic_filter, granted[0]), session
            )


def _silence_chatty_loggers() -> None:
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


class _Server:
    """Start on entering a `with` block, stop on leaving it."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedBroker(_Server):
    """An amqtt MQTT 3.1.1 broker on `127.0.0.1:port` (0: a free port), on its own thread."""

    def __init__(self, port: int = 0) -> None:
        self._requested_port = port
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None  # Any: amqtt's untyped Broker

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedError("EmbeddedBroker not started")
        return self._port

    @property
    def url(self) -> str:
        """amqtt speaks MQTT 3.1.1 only, and admits anyone (a demo broker, never production)."""
        return f"mqtt://{HOST}:{self.port}?{MQTT311_QUERY}"

    def start(self) -> None:
        """Start the loop thread and the broker; returns once it accepts connections."""
        if self._loop is not None:
            raise EmbeddedError("EmbeddedBroker already started")
        _silence_chatty_loggers()
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_log_loop_exception)
        thread = threading.Thread(target=loop.run_forever, name="embedded-mqtt", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._broker = self._run(self._start_broker())
        except BaseException:
            self._stop_loop()
            raise
        self._port = _bound_port(self._broker)
        log.info("embedded MQTT broker started", url=self.url)

    def stop(self) -> None:
        """Shut the broker down and end its thread; safe to call twice."""
        if self._loop is None:
            return
        try:
            if self._broker is not None:
                self._run(self._broker.shutdown())
        finally:
            self._broker = None
            self._stop_loop()

    async def _start_broker(self) -> Any:  # Any: amqtt's untyped Broker
        broker = _Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{self._requested_port}"}},
                # Only our auth plugin: no $SYS publisher, no event and packet loggers.
                "plugins": {f"{__name__}._AcceptAllAuth": {}},
            }
        )
        await broker.start()
        return broker

    def _run(self, coro: Any) -> Any:  # Any: coroutines of the untyped amqtt API
        assert self._loop is not None
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=START_TIMEOUT_S)
        except TimeoutError as err:
            future.cancel()
            raise EmbeddedError(f"amqtt did not answer within {START_TIMEOUT_S} s") from err

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=START_TIMEOUT_S)
        if not loop.is_running():
            loop.close()


def _bound_port(broker: Any) -> int:  # Any: amqtt's untyped Broker
    # amqtt keeps the asyncio.Server of each listener; its socket knows the port it really got.
    server: asyncio.Server = broker._servers["default"].instance
    return int(server.sockets[0].getsockname()[1])


def _log_loop_exception(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # amqtt leaves failed tasks unretrieved, e.g. "Timeout waiting for PUBACK": one line, no trace.
    error = context.get("exception")
    log.warning("embedded MQTT broker error", error=repr(error) if error else context["message"])


class EmbeddedStore(_Server):
    """fakeredis's Redis-protocol TCP server on `127.0.0.1:port` (0: a free port)."""

    def __init__(self, port: int = 0) -> None:
        self._requested_port = port
        self._server: TcpFakeServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise EmbeddedError("EmbeddedStore not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        """Bind and serve on a daemon thread; returns once the socket is listening."""
        if self._server is not None:
            raise EmbeddedError("EmbeddedStore already started")
        _silence_chatty_loggers()
        server = TcpFakeServer((HOST, self._requested_port), server_type="redis")
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="embedded-redis",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        log.info("embedded Redis store started", url=self.url)

    def stop(self) -> None:
        """Stop serving, close client connections and the socket; safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()  # also tells every connection handler to end
        server.server_close()  # joins the handler threads
        if thread is not None:
            thread.join(timeout=START_TIMEOUT_S)


__all__ = ["EmbeddedBroker", "EmbeddedError", "EmbeddedStore"]

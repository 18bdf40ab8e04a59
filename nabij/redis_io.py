"""Redis plumbing shared by services: client construction, start-up wait, dead letters.

Clients return bytes (`decode_responses=False`): stream fields and msgpack state are bytes, and
decoding is the caller's choice at the boundary.

Retries: a command that fails with a connection error or timeout is sent again, with exponential
backoff, up to `retries` times. For a `MULTI`/`EXEC` whose reply was lost on the way back, the
retry applies the transaction a second time. A shell that relies on "not acked, therefore not
committed" passes `retries=0` for its commit client and lets the error reach its recovery path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

import redis
from redis.backoff import ExponentialBackoff
from redis.client import Pipeline
from redis.retry import Retry
from redis.typing import EncodableT, FieldT

from nabij.keys import Keys

DEFAULT_SOCKET_TIMEOUT_S: Final = 10.0
DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0
DEFAULT_HEALTH_CHECK_INTERVAL_S: Final = 15
DEFAULT_RETRIES: Final = 5
# XREADGROUP/XREAD BLOCK must stay below the socket timeout, or the read times out first.
MAX_BLOCK_MS: Final = int(DEFAULT_SOCKET_TIMEOUT_S * 1000 / 2)


def connect(
    url: str,
    *,
    socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    health_check_interval_s: int = DEFAULT_HEALTH_CHECK_INTERVAL_S,
    retries: int = DEFAULT_RETRIES,
    client_name: str | None = None,
) -> redis.Redis:
    """A sync client for `url` (`redis://[:pass@]host:port/db` or `rediss://`); lazy, no I/O yet.

    Connection errors and timeouts are retried `retries` times with exponential backoff
    (8 ms doubling, capped at 1 s); a connection idle for `health_check_interval_s` is pinged
    before use, so a restarted server is noticed at the next command instead of failing it.
    """
    return redis.Redis.from_url(
        url,
        decode_responses=False,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        socket_keepalive=True,
        health_check_interval=health_check_interval_s,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.008), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        client_name=client_name,
    )


def wait_until_ready(client: redis.Redis, timeout_s: float, *, interval_s: float = 0.05) -> None:
    """Return once `client` answers PING (server up and done loading); else raise TimeoutError.

    A server still loading its AOF answers `LOADING`, which counts as not ready yet.
    """
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            if client.ping():
                return
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as err:
            last_error = err
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"Redis not ready after {timeout_s:.1f} s: {last_error!r}"
            ) from last_error
        time.sleep(interval_s)


# --- dead letters ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected input, kept raw with the reason, as an entry of the `keys.deadletter` stream.

    `source` is the service that rejected it, `reason` a short machine word (the same word as the
    `nabij_messages_rejected_total{reason}` label), `detail` a human sentence, `topic` where it
    came from (MQTT topic or stream key), `payload` the bytes as received.
    """

    source: str
    reason: str
    detail: str
    topic: str
    payload: bytes
    received_ms: int

    def to_fields(self) -> dict[FieldT, EncodableT]:
        return {
            "source": self.source,
            "reason": self.reason,
            "detail": self.detail,
            "topic": self.topic,
            "payload": self.payload,
            "received_ms": str(self.received_ms),
        }

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> DeadLetter:
        """Read back a stream entry's fields (as a bytes client returns them)."""
        return cls(
            source=fields[b"source"].decode(),
            reason=fields[b"reason"].decode(),
            detail=fields[b"detail"].decode(),
            topic=fields[b"topic"].decode(),
            payload=fields[b"payload"],
            received_ms=int(fields[b"received_ms"]),
        )


def add_deadletter(pipe: Pipeline, keys: Keys, maxlen: int, letter: DeadLetter) -> None:
    """Queue an XADD of one dead letter on `pipe`, capping the stream at ~`maxlen` entries.

    The trim is approximate (`MAXLEN ~`): Redis trims whole radix-tree nodes, which is cheap; the
    stream may hold somewhat more than `maxlen` entries, never fewer once that many arrived.
    """
    pipe.xadd(keys.deadletter, letter.to_fields(), maxlen=maxlen, approximate=True)


def answers(client: redis.Redis) -> bool:
    """Whether Redis answers a PING now (a readiness check)."""
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


__all__ = [
    "MAX_BLOCK_MS",
    "DeadLetter",
    "add_deadletter",
    "answers",
    "connect",
    "wait_until_ready",
]

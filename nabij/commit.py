"""Exactly-once commits to Redis, and the heartbeat each service keeps there.

A service's effects for one batch go into one `MULTI`/`EXEC` together with a commit counter. When
the connection breaks mid-commit the reply may be lost although Redis applied the transaction;
blindly re-sending would then duplicate notices. Instead the committer reads the counter back:
if it already shows this commit, it is done; otherwise nothing was applied and it sends again.
Use it with a client made with `retries=0`, so redis-py does not re-send a transaction itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final

import redis
import structlog
from redis.client import Pipeline

from nabij.keys import Keys

HEARTBEAT_TTL_S: Final = 10
# Wall seconds between heartbeats: liveness is a wall-clock matter, whatever nabij's clock does.
HEARTBEAT_INTERVAL_S: Final = 1.0
MAX_BACKOFF_S: Final = 2.0
TRANSIENT_REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


class CommitAbortedError(Exception):
    """The service is stopping while Redis is unreachable; nothing of this batch was applied."""


class Committer:
    def __init__(
        self,
        client: redis.Redis,
        counter_key: str,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._client = client
        self._key = counter_key
        self._log = log
        self._count: int | None = None

    def commit(self, build: Callable[[Pipeline], None], stop: threading.Event) -> None:
        """Apply what `build` queues on a transaction exactly once, retrying through outages.

        Raises `CommitAbortedError` if `stop` is set while Redis is unreachable.
        """
        delay = 0.05
        while True:
            target: int | None = None
            try:
                target = self._current() + 1
                pipe = self._client.pipeline(transaction=True)
                build(pipe)
                pipe.set(self._key, target)
                pipe.execute()
                self._count = target
                return
            except TRANSIENT_REDIS_ERRORS as err:
                self._log.warning("redis_commit_retry", error=str(err), retry_in_s=delay)
                if target is None:  # not even the counter could be read: nothing was sent
                    if stop.wait(delay):
                        raise CommitAbortedError("stopping while Redis is unreachable") from err
                elif self._landed(target, stop, delay):
                    self._count = target
                    return
                delay = min(delay * 2, MAX_BACKOFF_S)

    def _current(self) -> int:
        if self._count is None:
            self._count = int(self._client.get(self._key) or 0)
        return self._count

    def _landed(self, target: int, stop: threading.Event, delay: float) -> bool:
        """Whether the transaction whose reply was lost did reach Redis.

        Asks until Redis answers: sending again while that is unknown could apply it twice.
        """
        while True:
            if stop.wait(delay):
                raise CommitAbortedError("stopping while Redis is unreachable")
            try:
                return int(self._client.get(self._key) or 0) >= target
            except TRANSIENT_REDIS_ERRORS as err:
                self._log.warning("redis_commit_probe_failed", error=str(err))
                delay = min(delay * 2, MAX_BACKOFF_S)


def beat(
    client: redis.Redis,
    keys: Keys,
    service: str,
    now_ms: int,
    log: structlog.typing.FilteringBoundLogger,
) -> None:
    """Refresh the service's heartbeat key (expires after `HEARTBEAT_TTL_S` without a beat)."""
    try:
        client.set(keys.health(service), now_ms, ex=HEARTBEAT_TTL_S)
    except TRANSIENT_REDIS_ERRORS as err:
        log.warning("heartbeat_failed", error=str(err))

"""Exactly-once commits to Redis, and the heartbeat each service keeps there.

A service's effects for one batch go into one `MULTI`/`EXEC` together with a commit counter. When
the connection breaks mid-commit the reply may be lost although Redis applied the transaction;
blindly re-sending would then duplicate notices. Instead the committer reads the counter back:
if it already shows this commit, it is done; otherwise nothing was applied and it sends again.
Use it with a client made with `retries=0`, so redis-py does not re-send a transaction itself.

When Redis is out of memory (`maxmemory` reached under `noeviction`) it refuses the transaction
whole (`EXECABORT`): nothing was applied, so the committer sends it again with backoff until
memory frees, and reports each refusal to the service's `MemoryWatch` (readiness, metrics, log).
The caller's input stays unacknowledged meanwhile: nothing is lost, nothing is applied twice.

With a `Lease` (`services.shell.lease`) every commit is fenced: it runs only while this process
holds the lease, checked under `WATCH` in the same transaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import redis
import structlog
from redis.client import Pipeline

from nabij.failures import NabijError
from nabij.keys import Keys
from nabij.settings import RedisSettings
from services.shell import metrics
from services.shell.health import HealthServer
from services.shell.lease import Lease
from services.shell.redis_io import (
    AWAY_OR_FULL_ERRORS,
    TRANSIENT_REDIS_ERRORS,
    DeadLetterWriter,
    MemoryWatch,
    answers,
    is_out_of_memory,
)

HEARTBEAT_TTL_S: Final = 10
# Wall seconds between heartbeats: liveness is a wall-clock matter, whatever nabij's clock does.
HEARTBEAT_INTERVAL_S: Final = 1.0
MAX_BACKOFF_S: Final = 2.0


class CommitAbortedError(NabijError):
    """The service is stopping while Redis is unreachable or full; nothing of this batch was
    applied."""


class RedisLink:
    """Whether Redis answers this service's commits (`nabij_redis_connected`), how often it came
    back (`nabij_redis_reconnects_total`) and how long a commit takes; label children bound once."""

    def __init__(self, service: str) -> None:
        self._connected = metrics.REDIS_CONNECTED.labels(service=service)
        self._reconnects = metrics.REDIS_RECONNECTS.labels(service=service)
        self._latency = metrics.REDIS_COMMIT_LATENCY.labels(service=service)
        self._up = True
        self._connected.set(1)

    def answered(self, round_trip_s: float | None = None) -> None:
        if round_trip_s is not None:
            self._latency.observe(round_trip_s)
        if not self._up:
            self._up = True
            self._reconnects.inc()
            self._connected.set(1)

    def lost(self) -> None:
        if self._up:
            self._up = False
            self._connected.set(0)


class Committer:
    def __init__(
        self,
        client: redis.Redis,
        counter_key: str,
        log: structlog.typing.FilteringBoundLogger,
        *,
        memory: MemoryWatch,
        on_wait: Callable[[], None] = lambda: None,
        lease: Lease | None = None,
        service: str = "unnamed",
    ) -> None:
        """`on_wait` runs before every backoff wait (a liveness heartbeat: waiting for Redis is
        the service working as meant, and a restart would not make Redis come back sooner).
        With `lease`, a commit raises `LeaseLostError` once another process holds it."""
        self._client = client
        self._lease = lease
        self._key = counter_key
        self._log = log
        self._memory = memory
        self._on_wait = on_wait
        self._count: int | None = None
        self._link = RedisLink(service)

    def commit(self, build: Callable[[Pipeline], None], stop: threading.Event) -> None:
        """Apply what `build` queues on a transaction exactly once, retrying through outages.

        Raises `CommitAbortedError` if `stop` is set while Redis is unreachable or refuses writes.
        """
        delay = 0.05
        while True:
            target: int | None = None
            try:
                target = self._current() + 1
                pipe = self._client.pipeline(transaction=True)
                if self._lease is not None:
                    self._lease.fence(pipe)
                build(pipe)
                pipe.set(self._key, target)
                started = time.perf_counter()
                pipe.execute()
                self._link.answered(time.perf_counter() - started)
                self._count = target
                self._memory.accepted()
                return
            except redis.WatchError:
                # The lease changed between the check and EXEC: nothing applied; the next
                # check tells whether it is still ours.
                continue
            except TRANSIENT_REDIS_ERRORS as err:
                self._link.lost()
                self._log.warning("redis_commit_retry", error=str(err), retry_in_s=delay)
                if target is None:  # not even the counter could be read: nothing was sent
                    self._wait(stop, delay, err)
                elif self._landed(target, stop, delay):
                    self._count = target
                    return
            except redis.ResponseError as err:
                if not is_out_of_memory(err):
                    raise
                # Discarded whole (EXECABORT): nothing applied, the same commit goes again.
                self._memory.refused("commit", err)
                self._wait(stop, delay, err)
            delay = min(delay * 2, MAX_BACKOFF_S)

    def recheck_memory(self) -> None:
        """After a refusal, learn whether Redis takes writes again (else do nothing).

        For a loop turn that wrote nothing else: one write that changes nothing, `SET counter 0
        NX`, refused like any write while Redis is out of memory and a no-op otherwise (the
        counter exists once anything was committed; before that, 0 is what an absent counter
        means). Never retries, never raises for a Redis error.
        """
        if self._memory.ok():
            return
        try:
            self._client.set(self._key, 0, nx=True)
        except redis.RedisError as err:
            if is_out_of_memory(err):
                self._memory.refused("probe", err)
            return
        self._memory.accepted()

    def _wait(self, stop: threading.Event, delay: float, err: Exception) -> None:
        self._on_wait()
        if stop.wait(delay):
            raise CommitAbortedError("stopping while Redis is unreachable or full") from err

    def _current(self) -> int:
        if self._count is None:
            self._count = int(self._client.get(self._key) or 0)
        return self._count

    def _landed(self, target: int, stop: threading.Event, delay: float) -> bool:
        """Whether the transaction whose reply was lost did reach Redis.

        Asks until Redis answers: sending again while that is unknown could apply it twice.
        """
        while True:
            self._on_wait()
            if stop.wait(delay):
                raise CommitAbortedError("stopping while Redis is unreachable")
            try:
                landed = int(self._client.get(self._key) or 0) >= target
            except TRANSIENT_REDIS_ERRORS as err:
                self._log.warning("redis_commit_probe_failed", error=str(err))
                delay = min(delay * 2, MAX_BACKOFF_S)
            else:
                self._link.answered()
                return landed


@dataclass(frozen=True, slots=True)
class ServiceWrites:
    """How a service shell writes to Redis: exactly-once commits, best-effort dead letters, and
    one `MemoryWatch` that both report to (readiness check `redis_memory:<service>`)."""

    memory: MemoryWatch
    committer: Committer
    deadletters: DeadLetterWriter
    lease: Lease | None

    @classmethod
    def build(
        cls,
        client: redis.Redis,
        keys: Keys,
        settings: RedisSettings,
        *,
        service: str,
        log: structlog.typing.FilteringBoundLogger,
        health: HealthServer | None,
        counter: str | None = None,
        lease: str | None = None,
    ) -> ServiceWrites:
        """Wire them for `service` (its `client` made with `retries=0`; see `Committer`), and
        register the Redis readiness checks on `health`.

        The commit counter (`counter`, a key; default the service's) belongs to one writer: two
        processes sharing a counter would take each other's commits for their own lost replies.
        With `lease` (a key) every commit is fenced by a `Lease` there (`settings.lease_ttl_s`).
        """
        memory = MemoryWatch(service, log)
        fence = (
            None if lease is None else Lease(client, lease, round(settings.lease_ttl_s * 1000), log)
        )
        committer = Committer(
            client,
            counter or keys.commit_counter(service),
            log,
            memory=memory,
            on_wait=health.heartbeat if health is not None else lambda: None,
            lease=fence,
            service=service,
        )
        deadletters = DeadLetterWriter(
            client, keys, settings, service=service, memory=memory, log=log
        )
        if health is not None:
            health.add_check("redis", lambda: answers(client))
            health.add_check(f"redis_memory:{service}", memory.ok)
        return cls(memory, committer, deadletters, fence)


def beat(
    client: redis.Redis,
    keys: Keys,
    service: str,
    now_ms: int,
    log: structlog.typing.FilteringBoundLogger,
) -> None:
    """Refresh the service's heartbeat key (expires after `HEARTBEAT_TTL_S` without a beat).

    A Redis that is out of memory refuses the beat too: that is logged, never raised (the commit
    path reports the refusal to readiness and metrics).
    """
    try:
        client.set(keys.health(service), now_ms, ex=HEARTBEAT_TTL_S)
    except AWAY_OR_FULL_ERRORS as err:
        log.warning("heartbeat_failed", error=str(err))

"""A lease in Redis with a fencing check in every commit: one writer at a time per key space.

One gateway, and one process per proximity shard, may commit at a time. The writer takes a lease
key (`SET key token NX PX ttl`), renews it in every commit and while idle, and gives it up on a
clean stop. Every commit first `WATCH`es the lease and checks it still holds its token, then runs
its `MULTI`: if another process took the lease in between, Redis refuses the `EXEC`. So a process
that stalled past its TTL (a long GC, a frozen VM) cannot write after its successor started,
whatever its own clock says. A second process waits as a standby until the lease is free: after a
clean stop at once, after a crash once the TTL has run out. No scripts: the demo's embedded
store runs all of this as well.

The lease key shares the hash tag of the keys it guards, so the check stays inside the commit's
single Redis Cluster slot.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable

import redis
import structlog
from redis.client import Pipeline

from nabij.failures import NabijError
from services.shell.redis_io import AWAY_OR_FULL_ERRORS


class LeaseLostError(NabijError):
    """Another process holds the lease now: this one must stop writing (and exit)."""


class LeaseWaitAbortedError(NabijError):
    """Stopping while waiting for the lease."""


class Lease:
    def __init__(
        self,
        client: redis.Redis,
        key: str,
        ttl_ms: int,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._client = client
        self.key = key
        self._ttl_ms = ttl_ms
        self._log = log
        self.token = secrets.token_hex(16)
        # Renewed three times per TTL (at most every second): one late renewal loses nothing.
        self.renew_every_s = min(1.0, ttl_ms / 3000)
        self._next_renewal = 0.0

    def acquire(self, stop: threading.Event, on_wait: Callable[[], None] = lambda: None) -> None:
        """Take the lease, waiting (as a standby) while another process holds it."""
        told = False
        while not self._try_take():
            if not told:
                self._log.warning("lease_held_elsewhere", lease=self.key, ttl_ms=self._ttl_ms)
                told = True
            on_wait()
            if stop.wait(min(1.0, self._ttl_ms / 4000)):
                raise LeaseWaitAbortedError(f"stopping while waiting for {self.key}")
        self._log.info("lease_taken", lease=self.key)

    def fence(self, pipe: Pipeline) -> None:
        """Start the commit on `pipe` (a transaction pipeline): `WATCH` the lease, check it is
        ours (taking it again if it merely expired), then `MULTI` with its renewal queued.

        Raises `LeaseLostError` if another process holds it; an `EXEC` after someone took it
        meanwhile raises `redis.WatchError`.
        """
        pipe.watch(self.key)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        holder = pipe.get(self.key)
        if holder is None:
            # Expired while we were slow, and nobody took it: ours again, checked by the WATCH.
            pipe.unwatch()
            if not self._take():
                raise LeaseLostError(f"{self.key} taken by another process")
            pipe.watch(self.key)  # type: ignore[no-untyped-call]  # as above
            holder = pipe.get(self.key)
        if holder != self.token.encode():
            pipe.unwatch()
            raise LeaseLostError(f"{self.key} held by another process")
        pipe.multi()
        pipe.pexpire(self.key, self._ttl_ms)

    def keep(self) -> None:
        """`renew` when `renew_every_s` has passed since the last renewal (call it often)."""
        if time.monotonic() >= self._next_renewal:
            self.renew()

    def renew(self) -> None:
        """Extend the lease while idle; raises `LeaseLostError` if another process holds it.

        The check is our token, the extension a plain `PEXPIRE`, not a `MULTI`: Redis refuses
        every `MULTI` once it is full, but never a `PEXPIRE`, so a full Redis cannot make the
        holder lose its lease to a standby (it cannot commit meanwhile; its commits wait it out).
        Should the lease change hands between the check and the `PEXPIRE`, that only extends the
        new holder's TTL: the fence in every commit stays exact. A Redis that is away, or full
        when the lease has to be taken again, is logged and tried at the next call, never raised:
        the commit path waits those out.
        """
        self._next_renewal = time.monotonic() + self.renew_every_s
        try:
            holder = self._client.get(self.key)
            if holder == self.token.encode():
                self._client.pexpire(self.key, self._ttl_ms)
                return
            if holder is None and self._take():
                return  # expired while Redis was away or full, and nobody took it: ours again
        except AWAY_OR_FULL_ERRORS as err:
            self._log.warning("lease_renewal_deferred", lease=self.key, error=str(err))
            return
        raise LeaseLostError(f"{self.key} held by another process")

    def release(self) -> None:
        """Give it up (a clean stop): a standby takes over at once. Best-effort."""
        try:
            with self._client.pipeline(transaction=True) as pipe:
                pipe.watch(self.key)  # type: ignore[no-untyped-call]  # as above
                if pipe.get(self.key) == self.token.encode():
                    pipe.multi()
                    pipe.delete(self.key)
                    pipe.execute()
        except redis.RedisError as err:
            self._log.warning("lease_release_failed", lease=self.key, error=str(err))

    def _try_take(self) -> bool:
        """`_take`, a Redis that is away or full counting as not taken (a standby waits on)."""
        try:
            return self._take()
        except AWAY_OR_FULL_ERRORS as err:
            self._log.warning("lease_take_deferred", lease=self.key, error=str(err))
            return False

    def _take(self) -> bool:
        return bool(self._client.set(self.key, self.token, nx=True, px=self._ttl_ms))

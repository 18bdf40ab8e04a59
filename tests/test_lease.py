"""The lease that fences commits (real Redis): one holder at a time, a standby waits, and a
holder that lost its lease cannot commit, even with a transaction already queued."""

from __future__ import annotations

import threading

import pytest
import structlog

from services.shell.commit import Committer
from services.shell.lease import Lease, LeaseLostError, LeaseWaitAbortedError
from services.shell.redis_io import MemoryWatch, connect
from tests.servers import FILLER_KEY, RedisServer, fill_to_the_cap

pytestmark = pytest.mark.integration
log = structlog.get_logger()
TTL_MS = 60_000


def committer(client: object, lease: Lease) -> Committer:
    return Committer(client, "counter", log, memory=MemoryWatch("t", log), lease=lease)  # type: ignore[arg-type]  # a redis.Redis


def test_a_standby_waits_and_the_old_holder_cannot_commit_after_takeover(
    redis_server: RedisServer,
) -> None:
    """B cannot take A's lease; once it is free (A stalled past its TTL) B takes it, and A's
    next commit raises LeaseLostError with nothing written, while B's lands."""
    client = connect(redis_server.url, retries=0)
    first, second = Lease(client, "lease", TTL_MS, log), Lease(client, "lease", TTL_MS, log)
    first.acquire(threading.Event())
    stopped = threading.Event()
    stopped.set()
    with pytest.raises(LeaseWaitAbortedError):
        second.acquire(stopped)
    committer(client, first).commit(lambda pipe: pipe.set("a", 1), threading.Event())
    client.delete("lease")  # A's TTL ran out while it stalled
    second.acquire(threading.Event())
    with pytest.raises(LeaseLostError):
        committer(client, first).commit(lambda pipe: pipe.set("b", 1), threading.Event())
    committer(client, second).commit(lambda pipe: pipe.set("c", 1), threading.Event())
    assert (client.get("a"), client.get("b"), client.get("c")) == (b"1", None, b"1")
    client.close()


def test_a_takeover_between_check_and_exec_discards_the_transaction(
    redis_server: RedisServer,
) -> None:
    """Another process takes the lease after A checked it but before A's EXEC: the WATCH makes
    Redis refuse the EXEC, and A then learns it lost the lease."""
    client = connect(redis_server.url, retries=0)
    other = connect(redis_server.url, retries=0)
    lease = Lease(client, "lease", TTL_MS, log)
    lease.acquire(threading.Event())

    def build(pipe: object) -> None:
        other.set("lease", "someone-else")
        pipe.set("x", 1)  # type: ignore[attr-defined]  # a redis Pipeline

    with pytest.raises(LeaseLostError):
        committer(client, lease).commit(build, threading.Event())
    assert client.get("x") is None
    client.close()
    other.close()


def test_release_lets_a_standby_in_and_renew_keeps_the_lease(redis_server: RedisServer) -> None:
    client = connect(redis_server.url, retries=0)
    first, second = Lease(client, "lease", TTL_MS, log), Lease(client, "lease", TTL_MS, log)
    first.acquire(threading.Event())
    first.renew()
    first.release()
    second.acquire(threading.Event())
    with pytest.raises(LeaseLostError):
        first.renew()
    assert client.get("lease") == second.token.encode()
    client.close()


def test_a_full_redis_neither_stops_the_renewal_nor_hands_the_lease_over(
    capped_redis_server: RedisServer,
) -> None:
    """While Redis refuses writes the holder's renewal still extends its lease (a standby cannot
    take it); a lease that ran out meanwhile is taken again once memory frees, never raised."""
    client = connect(capped_redis_server.url, retries=0)
    first, second = Lease(client, "lease", TTL_MS, log), Lease(client, "lease", TTL_MS, log)
    first.acquire(threading.Event())
    # Short of the TTL, yet long enough that filling Redis on a loaded machine cannot outlast it.
    client.pexpire("lease", TTL_MS // 4)
    fill_to_the_cap(client)
    first.renew()
    assert client.pttl("lease") > TTL_MS // 4  # extended to the full TTL again
    stopped = threading.Event()
    stopped.set()
    with pytest.raises(LeaseWaitAbortedError):
        second.acquire(stopped)
    client.delete("lease")  # its TTL ran out while Redis was full
    first.renew()  # taking it again is refused: deferred, not raised
    assert client.get("lease") is None
    client.delete(FILLER_KEY)
    first.renew()
    assert client.get("lease") == first.token.encode()
    client.close()

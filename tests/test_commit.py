"""Exactly-once commits: a lost reply never makes a transaction apply twice, a full Redis is
waited out, and a stop while waiting applies nothing."""

from __future__ import annotations

import threading

import prometheus_client
import pytest
import redis
import structlog

from nabij.keys import Keys
from nabij.settings import RedisSettings
from services.shell.commit import CommitAbortedError, Committer, ServiceWrites
from services.shell.redis_io import MemoryWatch, connect
from tests.integration.stack import wait_until
from tests.servers import FILLER_KEY, RedisServer, fill_to_the_cap


class FlakyRedis:
    """Applies transactions or not, loses replies, fails probes of the counter, as told."""

    def __init__(self, failing_probes: int, *, first_lands: bool = True) -> None:
        self.data: dict[str, object] = {}
        self.stream: list[object] = []
        self.executes = 0
        self.failing_probes = failing_probes
        self.first_lands = first_lands
        self.gets = 0

    def pipeline(self, transaction: bool = True) -> FlakyRedis:
        self.ops: list[tuple[str, str, object]] = []
        return self

    def xadd(self, key: str, fields: object) -> None:
        self.ops.append(("xadd", key, fields))

    def set(self, key: str, value: object) -> None:
        self.ops.append(("set", key, value))

    def execute(self) -> None:
        self.executes += 1
        if self.executes == 1 and not self.first_lands:
            raise redis.ConnectionError("connection lost before EXEC reached Redis")
        for op, key, value in self.ops:
            if op == "xadd":
                self.stream.append(value)
            else:
                self.data[key] = value
        if self.executes == 1:
            raise redis.TimeoutError("reply lost")

    def get(self, key: str) -> object:
        self.gets += 1
        if self.gets > 1 and self.failing_probes > 0:  # the first get reads the counter
            self.failing_probes -= 1
            raise redis.ConnectionError("still down")
        return self.data.get(key)


class DownRedis:
    """Redis unreachable for good."""

    def get(self, key: str) -> object:
        raise redis.ConnectionError("down")


def _committer(client: object, service: str = "test") -> Committer:
    log = structlog.get_logger()
    return Committer(client, "c", log, memory=MemoryWatch(service, log))  # type: ignore[arg-type]  # a stand-in for redis.Redis


def _refusals(service: str, write: str) -> float:
    value = prometheus_client.REGISTRY.get_sample_value(
        "nabij_redis_oom_refusals_total", {"service": service, "write": write}
    )
    return value or 0.0


def test_lost_reply_with_failing_probes_applies_once() -> None:
    """EXEC applied but its reply lost, then Redis unreachable for a while: the committer asks
    until it knows, sees the transaction landed, and does not send it again."""
    fake = FlakyRedis(failing_probes=3)
    committer = _committer(fake)
    committer.commit(lambda pipe: pipe.xadd("police", {"notice": "N-1"}), threading.Event())
    assert fake.stream == [{"notice": "N-1"}]
    assert fake.executes == 1
    committer.commit(lambda pipe: pipe.xadd("police", {"notice": "N-2"}), threading.Event())
    assert fake.stream == [{"notice": "N-1"}, {"notice": "N-2"}]
    assert fake.data["c"] == 2


def test_a_transaction_that_never_landed_is_sent_again_once() -> None:
    """The connection broke before EXEC reached Redis: the probe finds the counter unchanged,
    so the committer sends the transaction again, and it applies exactly once."""
    fake = FlakyRedis(failing_probes=1, first_lands=False)
    _committer(fake).commit(lambda pipe: pipe.xadd("police", {"notice": "N-1"}), threading.Event())
    assert fake.stream == [{"notice": "N-1"}]
    assert fake.executes == 2
    assert fake.data["c"] == 1


def test_redis_link_metrics_follow_a_lost_and_regained_connection() -> None:
    """A commit whose connection broke sets `nabij_redis_connected` to 0; the answer after it
    sets it to 1 and counts one reconnect; each landed transaction's round trip is timed."""
    service = "link-test"
    labels = {"service": service}

    def sample(name: str) -> float | None:
        return prometheus_client.REGISTRY.get_sample_value(name, labels)

    fake = FlakyRedis(failing_probes=0, first_lands=False)
    committer = Committer(
        fake,  # type: ignore[arg-type]  # a stand-in for redis.Redis
        "c",
        structlog.get_logger(),
        memory=MemoryWatch(service, structlog.get_logger()),
        service=service,
    )
    assert (sample("nabij_redis_connected"), sample("nabij_redis_reconnects_total")) == (1, 0)
    committer.commit(lambda pipe: pipe.xadd("police", {"notice": "N-1"}), threading.Event())
    assert sample("nabij_redis_connected") == 1
    assert sample("nabij_redis_reconnects_total") == 1
    assert sample("nabij_redis_commit_latency_seconds_count") == 1


def test_stopping_while_redis_is_unreachable_aborts_with_nothing_applied() -> None:
    """With Redis down and the service stopping, commit raises CommitAbortedError instead of
    waiting forever; nothing was built or sent."""
    stop = threading.Event()
    stop.set()
    built: list[object] = []
    with pytest.raises(CommitAbortedError):
        _committer(DownRedis()).commit(built.append, stop)
    assert built == []


@pytest.mark.integration
def test_a_full_redis_is_waited_out_and_the_commit_applies_once(
    capped_redis_server: RedisServer,
) -> None:
    """Redis at maxmemory (noeviction) refuses the transaction whole: the committer keeps
    sending it with backoff, the memory watch says not ok and each refusal is counted; once
    memory frees, the transaction applies exactly once and the watch is ok again."""
    client = connect(capped_redis_server.url, retries=0)
    log = structlog.get_logger()
    memory = MemoryWatch("full-commit", log)
    committer = Committer(client, "commits", log, memory=memory)
    fill_to_the_cap(client)
    done = threading.Event()

    def commit() -> None:
        committer.commit(lambda pipe: pipe.xadd("police", {"notice": "N-1"}), threading.Event())
        done.set()

    thread = threading.Thread(target=commit, daemon=True)
    thread.start()
    wait_until(lambda: _refusals("full-commit", "commit") >= 3, what="three refusals")
    assert not memory.ok() and not done.is_set()
    assert client.xlen("police") == 0
    client.delete(FILLER_KEY)
    assert done.wait(timeout=30)
    assert memory.ok()
    assert client.xlen("police") == 1
    assert client.get("commits") == b"1"
    client.close()


@pytest.mark.integration
def test_recheck_memory_writes_only_after_a_refusal(capped_redis_server: RedisServer) -> None:
    """recheck_memory does nothing while writes are accepted; after a refusal it learns with a
    no-op write whether Redis takes writes again, without touching the counter's value."""
    client = connect(capped_redis_server.url, retries=0)
    log = structlog.get_logger()
    memory = MemoryWatch("recheck", log)
    committer = Committer(client, "commits", log, memory=memory)
    committer.recheck_memory()
    assert client.exists("commits") == 0  # nothing refused yet: nothing written
    committer.commit(lambda pipe: pipe.set("state", 1), threading.Event())
    fill_to_the_cap(client)
    memory.refused("commit", redis.exceptions.OutOfMemoryError("OOM"))
    committer.recheck_memory()
    assert not memory.ok()
    assert _refusals("recheck", "probe") == 1
    client.delete(FILLER_KEY)
    committer.recheck_memory()
    assert memory.ok()
    assert client.get("commits") == b"1"
    client.close()


@pytest.mark.integration
def test_each_writer_counts_its_own_commits(redis_server: RedisServer) -> None:
    """Two gateways (consumers gateway-1 and gateway-2) commit under counters of their own: one
    never takes the other's commit for its own lost reply."""
    client = connect(redis_server.url, retries=0)
    keys = Keys("t")
    first, second = (
        ServiceWrites.build(
            client,
            keys,
            RedisSettings(),
            service="gateway",
            log=structlog.get_logger(),
            health=None,
            counter=keys.commit_counter(f"gateway:{consumer}"),
        )
        for consumer in ("gateway-1", "gateway-2")
    )
    first.committer.commit(lambda pipe: pipe.set("a", 1), threading.Event())
    second.committer.commit(lambda pipe: pipe.set("b", 1), threading.Event())
    second.committer.commit(lambda pipe: pipe.set("c", 1), threading.Event())
    assert client.get(keys.commit_counter("gateway:gateway-1")) == b"1"
    assert client.get(keys.commit_counter("gateway:gateway-2")) == b"2"
    assert client.exists(keys.commit_counter("gateway")) == 0
    client.close()

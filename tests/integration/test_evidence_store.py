"""The evidence chains in a real Redis: a writer carries on after a restart, shared writers
never fork a chain, and pruned bodies leave bundles verifiable."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis

from nabij.evidence.bundle import Scope
from nabij.evidence.chain import Entry
from nabij.evidence.export import export, verify_directory
from nabij.evidence.store import SharedLog, WriterLog, prune
from nabij.keys import Keys
from nabij.settings import AuditSettings
from tests.evidence.factories import SIGNER, T0, history
from tests.servers import RedisServer

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


def committed(client: redis.Redis, log: WriterLog, entries: list[Entry], now_ms: int) -> None:
    """One batch's transaction, as the services commit it."""
    with client.pipeline(transaction=True) as pipe:
        log.write(pipe, entries, now_ms)
        pipe.execute()
    log.committed(now_ms)


def test_a_restarted_writer_continues_its_chain_and_pruned_bodies_still_verify(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys("t")
    entries = history("proximity", 20)
    first = WriterLog(client, keys, "proximity", SIGNER, anchor_every_ms=60_000)
    first.restore()
    committed(client, first, entries[:10], T0 + 10_000)
    again = WriterLog(client, keys, "proximity", SIGNER, anchor_every_ms=60_000)
    again.restore()  # a restart: the head comes from Redis
    committed(client, again, entries[10:], T0 + 20_000)

    now = T0 + 3 * DAY_MS
    settings = AuditSettings(retention_s={"uplink": 86_400})
    assert prune(client, keys, settings, now) == 4  # every 5th record is an uplink; 2 of O1's
    out = tmp_path / "bundle"
    done = export(client, keys, SIGNER, settings, Scope("O1", "police"), "clerk", now, out)
    assert done.writers == 2  # proximity and the export's own chain
    report = verify_directory(out)
    assert report.ok, report.problems
    assert "2 past their retention" in report.notes[0]


def test_shared_writers_appending_at_once_never_fork_the_chain(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Four processes' worth of `nabij orders`/`audit export` appending under WATCH."""
    keys = Keys("t")
    log = SharedLog(keys, "orders", SIGNER)

    def append(worker: int) -> None:
        client = redis.Redis.from_url(redis_server.url)
        for n in range(10):
            entry = Entry("order", T0 + n, ("O1",), b'{"worker":%d,"n":%d}' % (worker, n))
            log.append(client, [entry], T0 + n)

    threads = [threading.Thread(target=append, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client = redis.Redis.from_url(redis_server.url)
    out = tmp_path / "bundle"
    export(client, keys, SIGNER, AuditSettings(), Scope("O1", "police"), "clerk", T0, out)
    report = verify_directory(out)
    assert report.ok, report.problems
    assert "order O1: 41 records in full" in report.notes[0]  # 40 appends and the export

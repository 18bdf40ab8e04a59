"""No silent blindness: junk cannot fill Redis, and a full Redis delays alarms but loses none.

Both tests run on a Redis configured as production should be (`maxmemory 256mb`,
`maxmemory-policy noeviction`, AOF on) and a Mosquitto without `message_size_limit`, so that
nabij's own bounds are what is tested.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request

import prometheus_client
import pytest

from services.shell.health import HealthServer
from services.shell.redis_io import DeadLetter
from tests.integration.conftest import StackFactory
from tests.integration.stack import wait_until
from tests.integration.test_alarm_path import kinds
from tests.servers import FILLER_KEY, RedisServer, fill_to_the_cap

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
JUNK_MESSAGES = 300
# What 300 dead letters of 4 KiB may take in Redis, with room for the alarm's own keys: on main
# the same junk took 315 MB.
JUNK_MEMORY_LIMIT = 4 * MIB


@pytest.fixture
def redis_server(capped_redis_server: RedisServer) -> RedisServer:
    """This module's stacks run on a Redis that refuses writes once full (256 MB, noeviction)."""
    return capped_redis_server


def junk(n: int) -> bytes:
    """1 MiB of junk of three kinds (not JSON, a JSON object failing the schema, a backlog of
    far too many items), each one unique so its dead letter can be matched by hash."""
    tag = b"%08d" % n
    if n % 3 == 0:
        head = b"\xff" + tag
        return head + b"\x00" * (MIB - len(head))
    if n % 3 == 1:
        head, tail = b'{"device_id": "ank-1", "seq": "' + tag, b'"}'
        return head + b"9" * (MIB - len(head) - len(tail)) + tail
    head, tail = b"[" + tag, b"]"
    return head + b",1" * ((MIB - len(head) - len(tail)) // 2) + b" " * (MIB % 2) + tail


def _sample(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


def _readyz(health: HealthServer) -> tuple[int, list[str]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{health.port}/readyz", timeout=5) as r:
            return r.status, json.loads(r.read())["failing"]
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())["failing"]


def test_a_flood_of_1_mb_junk_leaves_redis_small_and_a_press_still_reaches_police(
    make_stack: StackFactory,
) -> None:
    """300 junk payloads of 1 MB on the offender's fix topic: both services stay up (the same
    objects, their threads alive), Redis grows by a few MB at most, each payload is one dead
    letter cut to 4 KiB that keeps the size and sha256 of the whole, and an aware press sent
    after the junk is delivered to the police queue."""
    stack = make_stack()
    stack.start_in_process()
    services = dict(stack.services)
    used_before = int(stack.redis.info("memory")["used_memory"])
    payloads = [junk(n) for n in range(JUNK_MESSAGES)]
    offender = stack.device("ank-1")
    for payload in payloads:
        offender.publish_raw("fix", payload)
    stack.device("vic-1").event(stack.clock(), "aware_button")

    stack.wait_notices("police", lambda ns: "aware_button" in kinds(ns, "opened"), "the press")
    wait_until(
        lambda: stack.redis.xlen(stack.keys.deadletter) >= JUNK_MESSAGES,
        what="a dead letter per junk message",
        detail=lambda: stack.redis.xlen(stack.keys.deadletter),
    )
    used_after = int(stack.redis.info("memory")["used_memory"])
    assert used_after - used_before <= JUNK_MEMORY_LIMIT

    letters = [DeadLetter.from_fields(fields) for fields in stack.deadletters()]
    by_hash = {hashlib.sha256(payload).hexdigest(): payload for payload in payloads}
    assert sorted(letter.sha256 for letter in letters) == sorted(by_hash)
    for letter in letters:
        assert (letter.size, len(letter.payload)) == (MIB, 4096)
        assert letter.payload == by_hash[letter.sha256][:4096]
    assert {letter.reason for letter in letters} <= {"invalid_json", "schema", "batch_too_large"}

    assert stack.threads_alive() == {"proximity": True, "gateway": True}
    assert all(stack.services[name] is service for name, service in services.items())


def test_a_full_redis_holds_the_press_until_memory_frees_and_nothing_is_lost(
    make_stack: StackFactory,
) -> None:
    """Redis at its memory cap refuses every write: junk arriving then is dropped and counted,
    an aware press waits unacknowledged while the commit is retried, the services stay up and
    /readyz names `redis_memory:proximity`; once memory frees (the filler key deleted) the press
    is delivered to police and the services are ready again."""
    stack = make_stack()
    health = HealthServer(0, host="127.0.0.1")
    stack.start_in_process(health=health)
    health.start()
    try:
        dropped = _sample(
            "nabij_deadletters_dropped_total", service="proximity", reason="redis_oom"
        )
        refused = _sample("nabij_redis_oom_refusals_total", service="proximity", write="commit")
        assert _readyz(health) == (200, [])
        fill_to_the_cap(stack.redis)

        stack.device("ank-1").publish_raw("fix", b"{not json")
        wait_until(
            lambda: (
                _sample("nabij_deadletters_dropped_total", service="proximity", reason="redis_oom")
                == dropped + 1
            ),
            what="the junk dropped and counted",
        )
        stack.device("vic-1").event(stack.clock(), "aware_button")
        wait_until(
            lambda: (
                _sample("nabij_redis_oom_refusals_total", service="proximity", write="commit")
                >= refused + 2
            ),
            what="the press's commit refused and retried",
        )
        status, failing = _readyz(health)
        assert status == 503 and "redis_memory:proximity" in failing
        assert _sample("nabij_redis_out_of_memory", service="proximity") == 1
        assert stack.notices("police") == []
        assert stack.threads_alive() == {"proximity": True, "gateway": True}

        stack.redis.delete(FILLER_KEY)
        police = stack.wait_notices(
            "police", lambda ns: "aware_button" in kinds(ns, "opened"), "the press after all"
        )
        assert kinds(police, "opened") == ["aware_button"]
        wait_until(
            lambda: _readyz(health) == (200, []), what="ready again", detail=health.failing_checks
        )
        assert _sample("nabij_redis_out_of_memory", service="proximity") == 0
        assert stack.redis.xlen(stack.keys.deadletter) == 0  # the junk was dropped, not held
        assert stack.threads_alive() == {"proximity": True, "gateway": True}
    finally:
        health.stop()

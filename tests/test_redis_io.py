"""nabij.redis_io against a real redis-server: client set-up, readiness wait, dead letters."""

from __future__ import annotations

import pytest
import redis

from nabij.keys import Keys
from nabij.redis_io import DeadLetter, add_deadletter, connect, wait_until_ready
from tests.servers import RedisServer, free_port

LETTER = DeadLetter(
    source="proximity",
    reason="invalid_json",
    detail="expected a JSON object",
    topic="nabij/v1/devices/ank-1/fix",
    payload=b"\xff not json",
    received_ms=1_700_000_000_123,
)


def test_deadletter_fields_round_trip() -> None:
    """The XADD fields carry every attribute; the raw payload stays bytes."""
    fields = LETTER.to_fields()
    assert fields["payload"] == b"\xff not json"
    assert fields["received_ms"] == "1700000000123"
    as_read = {k.encode() if isinstance(k, str) else k: v for k, v in fields.items()}
    encoded = {k: v.encode() if isinstance(v, str) else v for k, v in as_read.items()}
    assert DeadLetter.from_fields(encoded) == LETTER


@pytest.mark.integration
def test_add_deadletter_appends_in_the_pipeline_and_caps_the_stream(
    redis_server: RedisServer, unique_prefix: str
) -> None:
    """add_deadletter queues an XADD on the caller's MULTI pipeline into keys.deadletter, with an
    approximate MAXLEN: the stream stays near the cap, never below it."""
    keys = Keys(unique_prefix)
    client = connect(redis_server.url)
    wait_until_ready(client, timeout_s=5)
    for batch in range(10):
        pipe = client.pipeline(transaction=True)
        for _ in range(100):
            add_deadletter(pipe, keys, 100, LETTER)
        pipe.set(f"{unique_prefix}:batch", batch)
        pipe.execute()
    length = client.xlen(keys.deadletter)
    assert 100 <= length < 1000
    ((_, fields),) = client.xrevrange(keys.deadletter, count=1)
    assert DeadLetter.from_fields(fields) == LETTER
    client.close()


@pytest.mark.integration
def test_client_survives_a_server_restart(redis_server: RedisServer) -> None:
    """connect()'s retry with backoff carries a command over a server restart on the same port."""
    client = connect(redis_server.url)
    client.set("k", b"v")
    redis_server.kill()
    redis_server.restart()
    assert client.get("k") == b"v"
    client.close()


def test_wait_until_ready_times_out_with_the_last_error() -> None:
    """With nothing listening, wait_until_ready raises TimeoutError naming the cause."""
    client = connect(f"redis://127.0.0.1:{free_port()}/0", retries=0, connect_timeout_s=0.5)
    with pytest.raises(TimeoutError, match="not ready"):
        wait_until_ready(client, timeout_s=0.3)
    client.close()


@pytest.mark.integration
def test_connect_returns_bytes(redis_client: redis.Redis, redis_server: RedisServer) -> None:
    """Replies are bytes (decode_responses=False)."""
    client = connect(redis_server.url)
    client.hset("h", mapping={"f": "v"})
    assert client.hgetall("h") == {b"f": b"v"}
    client.close()

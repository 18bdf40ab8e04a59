"""services.shell.redis_io against a real redis-server: client set-up, readiness wait, dead
letters."""

from __future__ import annotations

import hashlib

import prometheus_client
import pytest
import redis
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.connection import Connection

from nabij.keys import Keys
from nabij.settings import (
    DEADLETTER_DETAIL_MAX_BYTES,
    DEADLETTER_ENTRY_OVERHEAD_BYTES,
    DEADLETTER_TOPIC_MAX_BYTES,
    RedisSettings,
)
from services.shell.redis_io import (
    PACK_SLICE,
    DeadLetter,
    DeadLetterWriter,
    LeanPacker,
    MemoryWatch,
    add_deadletter,
    connect,
    wait_until_ready,
)
from tests.servers import FILLER_KEY, RedisServer, fill_to_the_cap, free_port

LETTER = DeadLetter.bounded(
    source="proximity",
    reason="invalid_json",
    detail="expected a JSON object",
    topic="nabij/v1/devices/ank-1/fix",
    payload=b"\xff not json",
    received_ms=1_700_000_000_123,
    payload_bytes=4096,
)
MIB = 1024 * 1024


def _dropped(service: str, reason: str) -> float:
    value = prometheus_client.REGISTRY.get_sample_value(
        "nabij_deadletters_dropped_total", {"service": service, "reason": reason}
    )
    return value or 0.0


def _worst_letter(n: int, payload_bytes: int) -> DeadLetter:
    """A letter with every field as long as its bound allows."""
    return DeadLetter.bounded(
        source="proximity",
        reason="invalid_json",
        detail="d" * 10_000,
        topic="nabij/v1/devices/" + "t" * 10_000,
        payload=n.to_bytes(8, "big") * (MIB // 8),
        received_ms=1_700_000_000_123 + n,
        payload_bytes=payload_bytes,
    )


def test_a_long_payload_is_cut_and_its_size_and_hash_are_kept() -> None:
    """A 1 MiB payload keeps its first `payload_bytes`, its full size and the sha256 of all of
    it; detail and topic are cut to their byte bounds without splitting a UTF-8 character."""
    payload = bytes(range(256)) * 4096
    letter = DeadLetter.bounded(
        source="proximity",
        reason="invalid_json",
        detail="é" * 5000,
        topic="nabij/v1/devices/" + "ß" * 5000 + "/fix",
        payload=payload,
        received_ms=1,
        payload_bytes=4096,
    )
    assert letter.payload == payload[:4096] and letter.truncated
    assert letter.size == MIB
    assert letter.sha256 == hashlib.sha256(payload).hexdigest()
    # Cut on a character boundary: "é" is 2 bytes, so 1023 of the 1024 allowed are used.
    assert len(letter.detail.encode()) in (
        DEADLETTER_DETAIL_MAX_BYTES - 1,
        DEADLETTER_DETAIL_MAX_BYTES,
    )
    assert set(letter.detail) == {"é"}
    assert len(letter.topic.encode()) <= DEADLETTER_TOPIC_MAX_BYTES
    assert not LETTER.truncated and LETTER.size == len(LETTER.payload)


def test_letters_written_before_size_and_hash_existed_still_read() -> None:
    """An entry without `size` and `sha256` (an older nabij held the whole payload) reads back
    with both derived from its payload."""
    old = {k: v for k, v in LETTER.to_fields().items() if k not in ("size", "sha256")}
    fields = {
        str(k).encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in old.items()
    }
    assert DeadLetter.from_fields(fields) == LETTER


def test_the_byte_budget_lowers_the_count_cap() -> None:
    """The stream's effective MAXLEN is the budget over the per-entry bound when that is below
    the count cap, the count cap otherwise; a budget too small for 100 letters is an error."""
    default = RedisSettings()
    entry_bytes = (4096 + DEADLETTER_ENTRY_OVERHEAD_BYTES) * 5 // 4
    assert default.deadletter_entries == 64 * MIB // entry_bytes == 8065
    roomy = RedisSettings(deadletter_maxlen=1000, deadletter_payload_bytes=0)
    assert roomy.deadletter_entries == 1000
    with pytest.raises(ValueError, match="at least 100 dead letters"):
        RedisSettings(deadletter_payload_bytes=64 * 1024, deadletter_budget_bytes=MIB)


def test_deadletter_fields_round_trip() -> None:
    """The XADD fields carry every attribute; the raw payload stays bytes."""
    fields = LETTER.to_fields()
    assert fields["payload"] == b"\xff not json"
    assert fields["received_ms"] == "1700000000123"
    assert fields["sha256"] == hashlib.sha256(b"\xff not json").hexdigest()
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
@pytest.mark.parametrize("payload_bytes", [0, 4096, 65536])
def test_the_stream_stays_within_its_byte_budget(
    redis_server: RedisServer, unique_prefix: str, payload_bytes: int
) -> None:
    """A flood of letters, each as large as its bounds allow, keeps the stream within the
    configured byte budget (Redis's own MEMORY USAGE of the key), and no entry costs more than
    the per-entry bound the MAXLEN arithmetic assumes, whatever the payload bound."""
    entry_bytes = RedisSettings(deadletter_payload_bytes=payload_bytes).deadletter_entry_bytes
    settings = RedisSettings(
        deadletter_payload_bytes=payload_bytes,
        deadletter_budget_bytes=max(MIB, 150 * entry_bytes),
    )
    keys = Keys(unique_prefix)
    client = connect(redis_server.url, retries=0)
    log = structlog.get_logger()
    writer = DeadLetterWriter(
        client, keys, settings, service="proximity", memory=MemoryWatch("proximity", log), log=log
    )
    flood = 3 * settings.deadletter_entries
    for start in range(0, flood, 100):
        writer.write([_worst_letter(n, payload_bytes) for n in range(start, start + 100)])
    length = client.xlen(keys.deadletter)
    usage = int(client.memory_usage(keys.deadletter, samples=0) or 0)
    assert settings.deadletter_entries <= length <= settings.deadletter_entries + 2
    assert usage <= settings.deadletter_budget_bytes
    assert usage / length <= settings.deadletter_entry_bytes
    ((_, fields),) = client.xrevrange(keys.deadletter, count=1)
    last = (flood + 99) // 100 * 100 - 1
    assert DeadLetter.from_fields(fields) == _worst_letter(last, payload_bytes)
    client.close()


@pytest.mark.integration
def test_letters_a_full_redis_refuses_are_dropped_and_counted(
    capped_redis_server: RedisServer, unique_prefix: str
) -> None:
    """While Redis refuses writes (maxmemory, noeviction) the writer drops the letters without
    raising, counts them by reason and marks the memory watch not ok; once memory frees, the
    next letters are stored and the watch is ok again."""
    keys = Keys(unique_prefix)
    client = connect(capped_redis_server.url, retries=0)
    log = structlog.get_logger()
    memory = MemoryWatch("gateway", log)
    writer = DeadLetterWriter(
        client, keys, RedisSettings(), service="gateway", memory=memory, log=log
    )
    before = _dropped("gateway", "redis_oom")
    fill_to_the_cap(client)
    writer.write([LETTER, LETTER, LETTER])
    assert _dropped("gateway", "redis_oom") == before + 3
    assert not memory.ok()
    assert client.xlen(keys.deadletter) == 0
    client.delete(FILLER_KEY)
    writer.write([LETTER])
    assert memory.ok()
    assert client.xlen(keys.deadletter) == 1
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


_ARGUMENT = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=20),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.binary(max_size=8).map(memoryview),
)


@given(
    command=st.sampled_from(["MSET", "SADD", "XADD", "SET", "CLIENT SETNAME", b"GET"]),
    arguments=st.lists(_ARGUMENT, max_size=8),
)
def test_the_lean_packer_packs_every_command_as_redis_py_does(
    command: str | bytes, arguments: list[object]
) -> None:
    """Same bytes as redis-py's own packer for any arguments (its fast path takes only the
    plain ones), and the same error for what redis-py refuses (a bool)."""
    args = (command, *arguments)
    theirs = Connection()._command_packer  # what a client without `LeanPacker` uses
    try:
        expected = b"".join(theirs.pack(*args))
    except redis.DataError:
        with pytest.raises(redis.DataError):
            LeanPacker().pack(*args)
        return
    assert b"".join(LeanPacker().pack(*args)) == expected


# Hundreds of arguments an example by design: drawing them is slow on a loaded machine, which
# says nothing of the packer (a health check on time is a timing assertion).
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    arguments=st.lists(
        st.one_of(st.binary(max_size=600), st.text(max_size=40), st.integers()),
        min_size=PACK_SLICE - 2,
        max_size=3 * PACK_SLICE + 1,
    )
)
def test_the_lean_packer_packs_a_long_command_a_slice_at_a_time_into_the_same_bytes(
    arguments: list[object],
) -> None:
    """A command longer than a slice (a commit's `MSET`) is still one command, byte for byte
    what redis-py packs, in one buffer (one write)."""
    args = ("MSET", *arguments)
    packed = LeanPacker().pack(*args)
    assert packed == [b"".join(Connection()._command_packer.pack(*args))]


@pytest.mark.integration
def test_connect_commits_through_the_lean_packer(redis_server: RedisServer) -> None:
    """A transaction with thousands of plain arguments lands whole (the path a state commit
    takes) on a client of `connect`."""
    redis_client = connect(redis_server.admin_url)
    states = {f"lean:{i}": f"state-{i}".encode() for i in range(2000)}
    pipe = redis_client.pipeline(transaction=True)
    pipe.execute_command("MSET", *[part for item in states.items() for part in item])
    pipe.sadd("lean:members", *range(2000))
    pipe.execute()
    assert redis_client.mget(list(states)) == list(states.values())
    assert redis_client.scard("lean:members") == 2000
    redis_client.close()

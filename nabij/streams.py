"""Typed reads of Redis Streams and plain values.

redis-py's return types are unions over every protocol and decode mode; these helpers state what a
`decode_responses=False` client on RESP2 returns, once, so callers work with plain tuples.
"""

from __future__ import annotations

from typing import cast

import redis
from redis.typing import KeyT, StreamIdT

StreamEntry = tuple[bytes, dict[bytes, bytes]]


def read_group(
    client: redis.Redis,
    group: str,
    consumer: str,
    stream: str,
    *,
    start_id: bytes | str,
    count: int,
    block_ms: int | None,
) -> list[StreamEntry]:
    """XREADGROUP of one stream: `start_id` `>` for new entries, `0` for this consumer's pending."""
    reply = client.xreadgroup(group, consumer, {stream: start_id}, count=count, block=block_ms)
    return _entries_of(reply)


def read_groups(
    client: redis.Redis,
    group: str,
    consumer: str,
    start_ids: dict[str, bytes],
    *,
    count: int,
    block_ms: int | None,
) -> list[tuple[str, StreamEntry]]:
    """XREADGROUP of several streams at once (up to `count` entries from each), every entry
    with the stream it came from, in the order of `start_ids`."""
    wanted: dict[KeyT, StreamIdT] = {stream: start for stream, start in start_ids.items()}
    reply = client.xreadgroup(group, consumer, wanted, count=count, block=block_ms)
    if not reply:
        return []
    by_stream = dict(cast(list[tuple[bytes, list[StreamEntry]]], reply))
    return [(stream, entry) for stream in start_ids for entry in by_stream.get(stream.encode(), [])]


def read_groups_each(
    client: redis.Redis,
    group: str,
    consumer: str,
    start_ids: dict[str, bytes],
    *,
    count: int,
) -> list[tuple[str, StreamEntry]]:
    """As `read_groups` without blocking, one XREADGROUP per stream in one pipeline: Redis
    Cluster refuses one command over streams of several slots."""
    pipe = client.pipeline(transaction=False)
    for stream, start in start_ids.items():
        pipe.xreadgroup(group, consumer, {stream: start}, count=count)
    replies = pipe.execute()
    return [
        (stream, entry)
        for stream, reply in zip(start_ids, replies, strict=True)
        for entry in _entries_of(reply)
    ]


def read(
    client: redis.Redis, stream: str, *, after_id: bytes | str, count: int, block_ms: int | None
) -> list[StreamEntry]:
    """XREAD of one stream, entries after `after_id` (`$`: only new ones)."""
    return _entries_of(client.xread({stream: after_id}, count=count, block=block_ms))


def read_streams(
    client: redis.Redis, after_ids: dict[str, bytes], *, block_ms: int | None
) -> list[tuple[str, StreamEntry]]:
    """XREAD of several streams, entries after each one's id (`$`: only new ones), every entry
    with the stream it came from."""
    wanted: dict[KeyT, StreamIdT] = {stream: after for stream, after in after_ids.items()}
    reply = cast(list[tuple[bytes, list[StreamEntry]]], client.xread(wanted, block=block_ms))
    return [(stream.decode(), entry) for stream, entries in reply or [] for entry in entries]


def latest(client: redis.Redis, stream: str, count: int) -> list[StreamEntry]:
    """The newest `count` entries, oldest first."""
    entries = cast(list[StreamEntry], client.xrevrange(stream, count=count))
    return entries[::-1]


def entry_order(entry_id: bytes) -> tuple[int, int]:
    """A stream entry id `ms-seq` as a pair that orders like the stream."""
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def entries(client: redis.Redis, stream: str, *, min_id: str = "-") -> list[StreamEntry]:
    """Every entry of a (short) stream from `min_id` on, oldest first."""
    return cast(list[StreamEntry], client.xrange(stream, min=min_id))


def _entries_of(reply: object) -> list[StreamEntry]:
    if not reply:
        return []
    # RESP2: [[stream, [(id, fields), ...]]]; one stream asked, so one element.
    streams = cast(list[tuple[bytes, list[StreamEntry]]], reply)
    return streams[0][1]


def members(client: redis.Redis, key: str) -> list[bytes]:
    return sorted(cast(set[bytes], client.smembers(key)))


def values(client: redis.Redis, keys: list[str]) -> list[bytes | None]:
    return cast(list[bytes | None], client.mget(keys)) if keys else []


def hash_values(client: redis.Redis, key: str) -> list[bytes]:
    return list(hash_items(client, key).values())


def hash_items(client: redis.Redis, key: str) -> dict[str, bytes]:
    """A hash as field name -> value."""
    raw = cast(dict[bytes, bytes], client.hgetall(key))
    return {field.decode(): value for field, value in raw.items()}


def ensure_group(client: redis.Redis, stream: str, group: str, *, start_id: str) -> None:
    """Create consumer group `group` on `stream` (and the stream) unless it exists already."""
    try:
        client.xgroup_create(stream, group, id=start_id, mkstream=True)
    except redis.ResponseError as err:
        if "BUSYGROUP" not in str(err):
            raise

"""Redis adapter of the evidence trail: appends in the caller's transaction, export reads, prune.

Each writer has its own chain (`Keys.audit_*(writer)`, hash-tagged with the writer's name).
- `WriterLog`: one process is the only writer (the proximity service, a gateway consumer). It
  keeps its head in memory and queues a batch's records into the batch's own `MULTI`: no extra
  round trip. `Committer` may build a transaction more than once (a retry after a failed
  attempt); `write` then seals the same records again from the same committed head, and
  `committed` moves the head only once the transaction landed.
- `SharedLog`: several processes append (the orders and export commands); each append reads the
  head under `WATCH`, so two at once never fork the chain.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final, cast

import msgspec
import redis
import structlog
from redis.client import Pipeline

from nabij import streams
from nabij.evidence import keyfile
from nabij.evidence.bundle import Line, Scope, Segment, lines_of, past_retention
from nabij.evidence.chain import (
    ChainHead,
    Checkpoint,
    Entry,
    Signer,
    checkpoint_decoder,
    envelope_decoder,
    extend,
    split_stored,
)
from nabij.keys import Keys
from nabij.settings import AuditSettings

READ_CHUNK: Final = 1000
log = structlog.get_logger()


def signer_from(settings: AuditSettings) -> Signer | None:
    """The signing key of `settings` (made on first use), or None when no key file is set."""
    if settings.key_file is None:
        log.warning("audit_disabled", why="audit.key_file is not set: no evidence trail")
        return None
    key, made = keyfile.make(settings.key_file)
    signer = Signer.of(key)
    if made:
        log.warning("audit_key_made", key_file=str(settings.key_file), key=signer.fingerprint)
    return signer


def _nonces(count: int) -> list[bytes]:
    pool = os.urandom(16 * count)
    return [pool[i : i + 16] for i in range(0, len(pool), 16)]


def _queue(  # noqa: PLR0917  # one call site per kind of log, every argument named there
    pipe: Pipeline,
    keys: Keys,
    writer: str,
    signer: Signer,
    start: ChainHead,
    entries: Sequence[Entry],
    now_ms: int,
    *,
    anchor: bool,
) -> ChainHead:
    """Queue the records, the new head and its signed checkpoint on `pipe`; the new head."""
    sealed, head = extend(writer, start, entries, _nonces(len(entries)))
    pipe.hset(keys.audit_log(writer), mapping={r.seq: r.stored() for r in sealed})
    pipe.set(keys.audit_head(writer), head.encode())
    checkpoint = _encode(signer.checkpoint(writer, head, now_ms))
    pipe.set(keys.audit_checkpoint(writer), checkpoint)
    if anchor:
        pipe.hset(keys.audit_anchors(writer), str(head.size), checkpoint)
    return head


def _get(client: redis.Redis, key: str) -> bytes | None:
    return cast(bytes | None, client.get(key))


def _encode(checkpoint: Checkpoint) -> bytes:
    return msgspec.json.encode(checkpoint)


class WriterLog:
    """The chain of a writer that is the only process appending to it."""

    def __init__(
        self, client: redis.Redis, keys: Keys, writer: str, signer: Signer, anchor_every_ms: int
    ) -> None:
        self._client, self._keys, self._writer, self._signer = client, keys, writer, signer
        self._anchor_every_ms = anchor_every_ms
        self._head = ChainHead()
        self._next_anchor_ms = 0
        self._pending: tuple[ChainHead, bool] | None = None

    def restore(self) -> None:
        """Read where the chain stands and register the writer (at start, before any commit)."""
        self._head = ChainHead.decode(_get(self._client, self._keys.audit_head(self._writer)))
        self._client.sadd(self._keys.audit_writers, self._writer)

    def write(self, pipe: Pipeline, entries: Sequence[Entry], now_ms: int) -> None:
        """Queue `entries` on the caller's transaction (nothing when there are none)."""
        self._pending = None
        if not entries:
            return
        anchor = now_ms >= self._next_anchor_ms
        head = _queue(
            pipe, self._keys, self._writer, self._signer, self._head, entries, now_ms, anchor=anchor
        )
        self._pending = (head, anchor)

    def committed(self, now_ms: int) -> None:
        """The transaction `write` queued on has landed."""
        if self._pending is None:
            return
        self._head, anchored = self._pending
        if anchored:
            self._next_anchor_ms = now_ms + self._anchor_every_ms
        self._pending = None


@dataclass(frozen=True, slots=True)
class SharedLog:
    """A chain several processes append to, one at a time (WATCH on its head)."""

    keys: Keys
    writer: str
    signer: Signer

    @property
    def watched(self) -> str:
        return self.keys.audit_head(self.writer)

    def head(self, pipe: Pipeline) -> ChainHead:
        """Read under WATCH (before `MULTI`)."""
        return ChainHead.decode(_get(pipe, self.watched))

    def write(
        self, pipe: Pipeline, start: ChainHead, entries: Sequence[Entry], now_ms: int
    ) -> None:
        """After `MULTI`: every shared append keeps its checkpoint (they are rare)."""
        if not entries:
            return
        pipe.sadd(self.keys.audit_writers, self.writer)
        _queue(pipe, self.keys, self.writer, self.signer, start, entries, now_ms, anchor=True)

    def append(self, client: redis.Redis, entries: Sequence[Entry], now_ms: int) -> None:
        while True:
            with client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(self.watched)  # type: ignore[no-untyped-call]  # redis-py stubs
                    start = self.head(pipe)
                    pipe.multi()
                    self.write(pipe, start, entries, now_ms)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue


# --- export -----------------------------------------------------------------------------------


def _checkpoints(client: redis.Redis, keys: Keys, writer: str) -> list[Checkpoint]:
    """The writer's anchors and its latest checkpoint, by size."""
    raw = streams.hash_values(client, keys.audit_anchors(writer))
    latest = _get(client, keys.audit_checkpoint(writer))
    if latest is not None:
        raw.append(latest)
    found = {c.fields().size: c for c in (checkpoint_decoder.decode(r) for r in raw)}
    return [found[size] for size in sorted(found)]


def segment_bounds(
    checkpoints: Sequence[Checkpoint], since: int | None, until: int | None
) -> tuple[Checkpoint | None, Checkpoint] | None:
    """The checkpoints around [since, until]: the last one at or before `since` (None: from the
    first record) and the first one at or after `until` (the latest when there is none)."""
    if not checkpoints:
        return None
    start = None
    if since is not None:
        before = [c for c in checkpoints if c.fields().at <= since]
        start = before[-1] if before else None
    end = checkpoints[-1]
    if until is not None:
        after = [c for c in checkpoints if c.fields().at >= until]
        end = after[0] if after else end
    if start is not None and start.fields().size > end.fields().size:
        start = None  # a window that ends before it starts: the whole chain up to `end`
    return start, end


def _stored(client: redis.Redis, key: str, first: int, last: int) -> Iterator[tuple[int, bytes]]:
    for low in range(first, last + 1, READ_CHUNK):
        seqs = list(range(low, min(last, low + READ_CHUNK - 1) + 1))
        found = cast(list[bytes | None], client.hmget(key, [str(s) for s in seqs]))
        for seq, raw in zip(seqs, found, strict=True):
            if raw is not None:
                yield seq, raw


def export_writer(
    client: redis.Redis, keys: Keys, writer: str, scope: Scope
) -> tuple[Segment, list[Line]] | None:
    bounds = segment_bounds(_checkpoints(client, keys, writer), scope.since, scope.until)
    if bounds is None:
        return None
    start, end = bounds
    first = (
        ChainHead()
        if start is None
        else ChainHead(start.fields().size, bytes.fromhex(start.fields().head))
    )
    fields = end.fields()
    stored = _stored(client, keys.audit_log(writer), first.size + 1, fields.size)
    return Segment(start, end), lines_of(stored, first, fields, scope)


def writers(client: redis.Redis, keys: Keys) -> list[str]:
    return [w.decode() for w in streams.members(client, keys.audit_writers)]


# --- retention --------------------------------------------------------------------------------


def prune(client: redis.Redis, keys: Keys, settings: AuditSettings, now_ms: int) -> int:
    """Drop the bodies of records past their class's retention (their envelopes stay in the
    chain); returns how many. One pipelined write per chunk read."""
    dropped = 0
    for writer in writers(client, keys):
        key = keys.audit_log(writer)
        for chunk in _scan(client, key):
            pipe = client.pipeline(transaction=False)
            for field, raw in chunk:
                envelope, body = split_stored(raw)
                if body is not None and past_retention(
                    envelope_decoder.decode(envelope), settings.retention_s, now_ms
                ):
                    pipe.hset(key, field, envelope)
                    dropped += 1
            pipe.execute()
    return dropped


def _scan(client: redis.Redis, key: str) -> Iterator[list[tuple[bytes, bytes]]]:
    cursor = 0
    while True:
        cursor, found = cast(
            tuple[int, dict[bytes, bytes]], client.hscan(key, cursor, count=READ_CHUNK)
        )
        yield list(found.items())
        if cursor == 0:
            return


__all__ = ["SharedLog", "WriterLog", "export_writer", "prune", "signer_from", "writers"]

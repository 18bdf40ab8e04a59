"""The alarm gateway shell: inbox streams in, pure `AlarmBook`, one Redis transaction out.

The gateway is the single writer of alarm records: one process at a time holds its lease
(`services.shell.lease`; a second one waits as a standby and takes over when the lease is free). It
reads signals (each proximity shard's inbox, registered in `Keys.signal_inboxes`) and human requests
(their own stream, which only the CLI's and the console's Redis users may append to) with one
consumer group; each batch's alarm records, dispatch notices, request outcomes, the `XACK` of its
requests and the id of the newest signal applied from each inbox commit in one `MULTI` in the
gateway's slot. The signals' `XACK` (in their shard's slot, which Redis Cluster keeps out of that
transaction) follows it; a signal at or below the applied id is acknowledged and never applied
again. So after a crash an entry is either fully applied or still pending (re-read first on start).
Each stream takes only its own kind of input: a human request on a signal inbox, or a signal on the
request stream, is refused. Escalation due times travel inside the records: whatever fell due while
the gateway was down fires on its first turn back.

Entries that cannot be applied are acknowledged in that same transaction and dead-lettered in a
best-effort write after it: a dead letter never stands between a signal and its notices. A full
Redis (out of memory) is waited out: the transaction is retried until memory frees, the entries
stay pending meanwhile.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Final

import msgspec
import redis
import structlog
from redis.client import Pipeline
from redis.typing import EncodableT, FieldT

from nabij import streams
from nabij.config import Config
from nabij.contract import (
    ALARM_KINDS,
    QUEUE_NAMES,
    AlarmSignal,
    GatewayInput,
    HumanRequest,
    RequestId,
    RequestOutcome,
    encode,
    explain_request_error,
    gateway_input_decoder,
)
from nabij.evidence.chain import Entry
from nabij.evidence.store import WriterLog, signer_from
from nabij.failures import describe
from nabij.keys import Keys
from services.alarm_gateway.core.alarms import (
    RESOLVED_KEPT,
    AlarmBook,
    Decision,
    PoliceFacts,
    encode_police_facts,
    encode_record,
    police_facts_decoder,
    record_decoder,
)
from services.alarm_gateway.core.retention import plan_trim
from services.alarm_gateway.evidence import decision_entries
from services.shell import heap, metrics
from services.shell.commit import HEARTBEAT_INTERVAL_S, ServiceWrites, beat
from services.shell.health import HealthServer
from services.shell.lease import LeaseWaitAbortedError
from services.shell.logs import LogAggregator
from services.shell.redis_io import (
    AWAY_OR_FULL_ERRORS,
    TRANSIENT_REDIS_ERRORS,
    DeadLetter,
    connect_as,
    wait_until_ready,
)

SERVICE: Final = "gateway"
MAX_BLOCK_MS = 1000
# Redis Cluster cannot block on streams of several slots: the gateway polls them this often when
# idle (an added latency of half this on average).
CLUSTER_POLL_S = 0.005
INPUT_FIELD = b"input"
REDIS_START_TIMEOUT_S = 60.0
# Long enough for the tool that asked to read it, even after a gateway restart; short enough that
# outcomes never pile up.
OUTCOME_TTL_S = 3600
# How often (wall seconds) retention limits are applied: limits are days, a minute is plenty.
RETENTION_CHECK_S = 60.0
# Bound, not a logger name: the name is dropped by the renderer, and `nabij run` would say "run".
log = structlog.get_logger(service=SERVICE)
# An entry that could not be applied: raw input, reason, detail, the stream it came from.
Rejected = tuple[bytes, str, str, str]


class _Addressed(msgspec.Struct):
    """The one field of a refused request needed to tell its sender why."""

    request_id: RequestId


_addressed_decoder = msgspec.json.Decoder(_Addressed)


class GatewayService:
    def __init__(
        self,
        config: Config,
        *,
        consumer: str = "gateway-1",
        health: HealthServer | None = None,
        clock: Callable[[], int],
    ) -> None:
        self._settings = config.settings
        self._keys = Keys(self._settings.redis.key_prefix)
        self._consumer = consumer
        self._clock = clock
        # Waits on the wall for what falls due on nabij's clock (faster in a simulation).
        self._timescale = self._settings.clock.timescale()
        self._book = AlarmBook(self._settings)
        self._redis = connect_as(self._settings.redis, SERVICE, retries=0)
        # Which kind of input each stream takes: the shards' inboxes join as they register.
        self._inputs: dict[str, type[AlarmSignal] | type[HumanRequest]] = {
            self._keys.human_requests: HumanRequest,
        }
        # Per signal inbox, the newest entry id applied (committed with its effects).
        self._applied: dict[str, tuple[int, int]] = {}
        writes = ServiceWrites.build(
            self._redis,
            self._keys,
            self._settings.redis,
            service=SERVICE,
            log=log,
            health=health,
            # One counter per consumer of the inbox group.
            counter=self._keys.commit_counter(f"{SERVICE}:{consumer}"),
            lease=self._keys.gateway_lease,
        )
        assert writes.lease is not None  # asked for above
        self._lease = writes.lease
        self._committer, self._deadletters = writes.committer, writes.deadletters
        signer = signer_from(self._settings.audit)
        self._evidence = (
            None
            if signer is None
            else WriterLog(
                self._redis,
                self._keys,
                f"{SERVICE}:{consumer}",  # one chain per consumer: each its only writer
                signer,
                round(self._settings.audit.anchor_interval_s * 1000),
            )
        )
        self._rejections = LogAggregator(log, "rejected")
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._health = health
        if health is not None:
            health.add_check("inbox_group", self._ready.is_set)
        for priority in (1, 2, 3):  # every priority's series from the start, 0 until an ack
            metrics.TIME_TO_ACKNOWLEDGE.labels(priority=str(priority))

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set."""
        self._stop = stop
        wait_until_ready(self._redis, timeout_s=REDIS_START_TIMEOUT_S)
        try:
            self._lease.acquire(stop, self._health.heartbeat if self._health else lambda: None)
        except LeaseWaitAbortedError:
            return
        self._prepare()
        self._ready.set()
        metrics.READY.labels(service=SERVICE).set(1)
        log.info("gateway_started", open_alarms=len(self._book.open_alarms()))
        # Entries this consumer read but never acknowledged (a crash mid-batch) come first.
        start_id = b"0"
        next_beat = next_trim = 0.0
        backoff = 0.05
        try:
            while not stop.is_set():
                try:
                    self._lease.keep()
                    if time.monotonic() >= next_beat:
                        beat(self._redis, self._keys, SERVICE, self._clock(), log)
                        if self._follow_inboxes():
                            start_id = b"0"
                        self._observe_streams()
                        next_beat = time.monotonic() + HEARTBEAT_INTERVAL_S
                    if time.monotonic() >= next_trim:
                        self._trim()
                        next_trim = time.monotonic() + RETENTION_CHECK_S
                    self._fire_due()
                    self._consume(stop, start_id=start_id)
                    start_id, backoff = b">", 0.05
                except AWAY_OR_FULL_ERRORS as err:
                    # Redis restarting, or full when a new inbox needs its group: wait for it,
                    # then re-read what was pending.
                    log.warning("redis_unavailable", error=str(err), retry_in_s=backoff)
                    stop.wait(backoff)
                    start_id, backoff = b"0", min(backoff * 2, 2.0)
                except redis.ResponseError as err:
                    if "NOGROUP" not in str(err):
                        raise
                    # Redis came back without our consumer group (no persistence): recreate it.
                    self._ensure_groups()
                    start_id = b"0"
                if self._health is not None:
                    self._health.heartbeat()
        finally:
            metrics.READY.labels(service=SERVICE).set(0)
            self._lease.release()
            log.info("gateway_stopped")

    def _observe_streams(self) -> None:
        """Stream lengths, the consumer group's pending entries and lag (the shards' inboxes
        summed under `gateway_inbox`), and those of the groups that read the dispatch queues
        (consoles, `nabij tail --group`), for ops."""
        names = {
            stream: "human_requests" if kind is HumanRequest else "gateway_inbox"
            for stream, kind in self._inputs.items()
        }
        names |= {self._keys.dispatch(queue): f"dispatch_{queue}" for queue in QUEUE_NAMES}
        pipe = self._redis.pipeline(transaction=False)
        for key in names:
            pipe.xlen(key)
        for key in self._inputs:
            pipe.xinfo_groups(key)
        for queue in QUEUE_NAMES:
            pipe.xinfo_groups(self._keys.dispatch(queue))
        # An input stream Redis lost (restarted empty) answers an error until the group is
        # recreated (a queue nobody wrote to yet, until then): not measured this time, and
        # never a reason to stop the gateway.
        replies = pipe.execute(raise_on_error=False)
        lengths: Counter[str] = Counter()
        pending: Counter[str] = Counter()
        lag: Counter[str] = Counter()
        for key, length in zip(names, replies[: len(names)], strict=True):
            lengths[names[key]] += 0 if isinstance(length, redis.ResponseError) else length
        group_replies = replies[len(names) :]
        self._observe_readers(group_replies[len(self._inputs) :])
        for key, groups in zip(self._inputs, group_replies[: len(self._inputs)], strict=True):
            if isinstance(groups, redis.ResponseError):
                continue
            for group in groups:
                if group["name"] == self._keys.gateway_group.encode():
                    pending[names[key]] += group["pending"]
                    # Redis reports no lag when it cannot tell (entries deleted mid-range).
                    lag[names[key]] += group.get("lag") or 0
        for name in set(names.values()):
            metrics.STREAM_LENGTH.labels(stream=name).set(lengths[name])
        for name in ("gateway_inbox", "human_requests"):
            metrics.CONSUMER_GROUP_PENDING.labels(stream=name).set(pending[name])
            metrics.CONSUMER_GROUP_LAG.labels(stream=name).set(lag[name])

    def _observe_readers(self, replies: list[object]) -> None:
        """Each dispatch queue's reader groups: delivered and not acknowledged, and not yet
        delivered. A group name is a console's or desk's, never a person's."""
        for queue, groups in zip(QUEUE_NAMES, replies, strict=True):
            if not isinstance(groups, list):
                continue
            for group in groups:
                labels = {"queue": queue, "group": group["name"].decode()}
                metrics.DISPATCH_READERS_PENDING.labels(**labels).set(group["pending"])
                if group.get("lag") is not None:
                    metrics.DISPATCH_READERS_LAG.labels(**labels).set(group["lag"])

    def _follow_inboxes(self) -> bool:
        """Read the shards' inboxes registered since the last look; whether there are new ones
        (their group made from id 0: nothing written before the gateway saw them is lost)."""
        registered = {m.decode() for m in streams.members(self._redis, self._keys.signal_inboxes)}
        # The inbox of the single proximity process of versions before shards: read on (and
        # drained) after an upgrade.
        if self._redis.exists(self._keys.unsharded.gateway_inbox):
            registered.add(self._keys.unsharded.gateway_inbox)
        new = sorted(registered - self._inputs.keys())
        if not new:
            return False
        applied = streams.hash_items(self._redis, self._keys.applied_signals)
        for stream in new:
            # Its group first: an inbox whose group could not be made yet is looked at again.
            self._ensure_group(stream)
            self._inputs[stream] = AlarmSignal
            self._applied[stream] = streams.entry_order(applied.get(stream, b"0-0"))
        log.info("signal_inboxes", inboxes=sorted(self._inputs))
        return True

    def _ensure_groups(self) -> None:
        for stream in self._inputs:
            self._ensure_group(stream)

    def _ensure_group(self, stream: str) -> None:
        # From id 0: input written before the gateway ever ran is not lost.
        streams.ensure_group(self._redis, stream, self._keys.gateway_group, start_id="0")

    def _prepare(self) -> None:
        self._ensure_groups()
        self._follow_inboxes()
        if self._evidence is not None:
            self._evidence.restore()
        open_records = [
            record_decoder.decode(blob)
            for blob in streams.hash_values(self._redis, self._keys.alarms)
        ]
        police = self._police_facts()
        for record in open_records:
            record.police = police.get(record.alarm_id)
        # The recently resolved let the book recognise their inputs if they are redelivered.
        resolved = streams.latest(self._redis, self._keys.resolved_alarms, RESOLVED_KEPT)
        self._book.load(
            [record_decoder.decode(fields[b"alarm"]) for _id, fields in resolved] + open_records
        )
        self._update_gauges()
        # What lives from here on (modules, orders, the book) is left out of every full
        # collection: 30-50 ms each at 5,000 orders otherwise (tests/gateway/test_heap.py).
        heap.settle()

    def _police_facts(self) -> dict[str, PoliceFacts]:
        raw = streams.hash_items(self._redis, self._keys.police_facts)
        return {alarm_id: police_facts_decoder.decode(blob) for alarm_id, blob in raw.items()}

    def _trim(self) -> None:
        """Delete what is past its retention (docs/privacy.md), in one transaction."""
        keys = self._keys
        wall_ms = round(time.time() * 1000)  # stream ids are Redis's wall time
        trim = plan_trim(self._settings.privacy, self._clock(), wall_ms, self._police_facts())
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.xtrim(keys.dispatch("police"), minid=trim.police_queue_min_id, approximate=False)
            pipe.xtrim(keys.resolved_alarms, minid=trim.resolved_min_id, approximate=False)
            if trim.expired_police_facts:
                pipe.hdel(keys.police_facts, *trim.expired_police_facts)
            pipe.execute()
        if trim.expired_police_facts:
            log.info("police_facts_expired", alarms=len(trim.expired_police_facts))

    def _block_ms(self) -> int:
        """Wall ms to wait for inbox entries before the next escalation falls due."""
        renewal_ms = math.ceil(self._lease.renew_every_s * 1000)  # back in time to keep it
        due = self._book.next_due_ms()
        if due is None:
            return min(MAX_BLOCK_MS, renewal_ms)
        wall_ms = math.ceil(self._timescale.wall_s(due - self._clock()))
        return max(1, min(MAX_BLOCK_MS, renewal_ms, wall_ms))

    def _consume(self, stop: threading.Event, *, start_id: bytes) -> None:
        while not stop.is_set():
            entries = self._read(start_id)
            if not entries:
                return
            self._apply_batch(entries)
            if start_id == b">":
                return

    def _read(self, start_id: bytes) -> list[tuple[str, streams.StreamEntry]]:
        """The next entries of every input stream: `0` this consumer's pending ones, `>` new ones
        (waiting for them up to the next escalation due time)."""
        block_ms = None if start_id == b"0" else self._block_ms()
        wanted = dict.fromkeys(self._inputs, start_id)
        group, count = self._keys.gateway_group, self._settings.gateway.batch_max
        if not self._settings.redis.cluster:
            return streams.read_groups(
                self._redis, group, self._consumer, wanted, count=count, block_ms=block_ms
            )
        # One XREADGROUP per stream (each may live in another slot), pipelined; then a short
        # wait instead of blocking.
        entries = streams.read_groups_each(self._redis, group, self._consumer, wanted, count=count)
        if not entries and block_ms is not None:
            self._stop.wait(min(block_ms / 1000, CLUSTER_POLL_S))
        return entries

    def _apply_batch(self, entries: list[tuple[str, streams.StreamEntry]]) -> None:
        now = self._clock()
        decisions: list[Decision] = []
        evidence: list[Entry] = []
        rejected: list[Rejected] = []
        acked: dict[str, list[bytes]] = {}
        for stream, (entry_id, fields) in entries:
            acked.setdefault(stream, []).append(entry_id)
            if streams.entry_order(entry_id) <= self._applied.get(stream, (-1, -1)):
                continue  # applied before a crash kept its XACK from Redis
            raw = fields.get(INPUT_FIELD, b"")
            decoded = self._decode(stream, raw)
            if isinstance(decoded, tuple):
                reason, detail = decoded
                rejected.append((raw, reason, detail, stream))
                if stream == self._keys.human_requests:
                    decisions.append(_refused(raw, detail, now))
                continue
            try:
                decision = self._book.apply(decoded, now)
            except Exception as err:  # a bug must not make this entry a poison pill
                rejected.append((raw, "internal_error", describe(err), stream))
                continue
            if decision.rejection is not None:
                rejected.append((raw, "not_applicable", decision.rejection, stream))
            decisions.append(decision)
            evidence += decision_entries(decision, now, decoded)
        # Every entry, applied or rejected, is acknowledged with the decisions (a signal by its
        # inbox's applied id, its XACK right after); the dead letters follow in their own
        # best-effort write.
        requests = {s: ids for s, ids in acked.items() if self._inputs[s] is HumanRequest}
        signals = {
            s: max(ids, key=streams.entry_order) for s, ids in acked.items() if s not in requests
        }
        self._commit(decisions, requests, evidence, now, applied=signals)
        self._applied |= {s: streams.entry_order(entry) for s, entry in signals.items()}
        self._acknowledge_signals({s: ids for s, ids in acked.items() if s in signals})
        self._deadletters.write(
            [
                DeadLetter.bounded(
                    source=SERVICE,
                    reason=reason,
                    detail=detail,
                    topic=stream,
                    payload=raw,
                    received_ms=now,
                    payload_bytes=self._settings.redis.deadletter_payload_bytes,
                )
                for raw, reason, detail, stream in rejected
            ]
        )
        self._observe(decisions, rejected)

    def _decode(self, stream: str, raw: bytes) -> GatewayInput | tuple[str, str]:
        """The input of one entry, or why it is refused: (reason, detail)."""
        try:
            item: GatewayInput = gateway_input_decoder.decode(raw)
        except msgspec.ValidationError as err:
            return "invalid_input", explain_request_error(err)
        except msgspec.MsgspecError as err:
            return "invalid_input", str(err)
        except RecursionError:
            return "invalid_input", "Nested too deeply."
        if not isinstance(item, self._inputs[stream]):
            home = next(key for key, kind in self._inputs.items() if isinstance(item, kind))
            return "wrong_stream", f"{type(item).__name__} is taken only from {home}"
        return item

    def _fire_due(self) -> None:
        """Escalate what fell due; runs on every turn of the loop."""
        now = self._clock()
        decisions = [self._book.fire_due(alarm_id, now) for alarm_id in self._book.due(now)]
        if decisions:
            evidence = [e for d in decisions for e in decision_entries(d, now)]
            self._commit(decisions, {}, evidence, now)
            self._observe(decisions, [])
        else:
            self._committer.recheck_memory()
        self._rejections.flush()
        self._deadletters.flush_logs()

    def _commit(
        self,
        decisions: list[Decision],
        acked: dict[str, list[bytes]],
        evidence: list[Entry],
        now: int,
        *,
        applied: dict[str, bytes] | None = None,
    ) -> None:
        """One transaction: the decisions, the requests' XACK (`acked`), the evidence, and the
        newest signal id applied from each inbox (`applied`)."""
        self._committer.commit(
            lambda pipe: self._write(pipe, decisions, acked, evidence, now, applied=applied or {}),
            self._stop,
        )
        if self._evidence is not None:
            self._evidence.committed(now)

    def _write(
        self,
        pipe: Pipeline,
        decisions: list[Decision],
        acked: dict[str, list[bytes]],
        evidence: list[Entry],
        now: int,
        *,
        applied: dict[str, bytes],
    ) -> None:
        keys = self._keys
        if self._evidence is not None:
            self._evidence.write(pipe, evidence, now)
        for decision in decisions:
            for record in decision.upserts + decision.resolved:
                # PRIVACY: the record where probation reads, the exact facts police-only.
                if record.police is not None:
                    police = encode_police_facts(record.police)
                    pipe.hset(keys.police_facts, record.alarm_id, police)
            for record in decision.upserts:
                pipe.hset(keys.alarms, record.alarm_id, encode_record(record))
            for record in decision.resolved:
                pipe.hdel(keys.alarms, record.alarm_id)
                pipe.xadd(keys.resolved_alarms, {"alarm": encode_record(record)})
            for queue_name, notice in decision.notices:
                pipe.xadd(keys.dispatch(queue_name), {"notice": encode(notice)})
            if decision.outcome is not None:
                outcome = decision.outcome
                pipe.set(
                    keys.request_outcome(outcome.request_id), encode(outcome), ex=OUTCOME_TTL_S
                )
        for stream, ids in acked.items():
            pipe.xack(stream, keys.gateway_group, *ids)
            pipe.xdel(stream, *ids)
        if applied:
            newest: dict[FieldT, EncodableT] = {stream: id_ for stream, id_ in applied.items()}
            pipe.hset(keys.applied_signals, mapping=newest)

    def _acknowledge_signals(self, acked: dict[str, list[bytes]]) -> None:
        """XACK and delete applied signals, per inbox (each in its shard's slot), pipelined.

        Applied entries are gone from the inbox: it would otherwise grow without end and keep
        victim positions that the alarm records and police notices already hold. If this write
        is lost the entries stay pending, and the applied ids make their re-read a no-op.
        """
        if not acked:
            return
        pipe = self._redis.pipeline(transaction=False)
        for stream, ids in acked.items():
            pipe.xack(stream, self._keys.gateway_group, *ids)
            pipe.xdel(stream, *ids)
        try:
            pipe.execute()
        except TRANSIENT_REDIS_ERRORS as err:
            log.warning("signal_ack_deferred", error=str(err))

    def _observe(self, decisions: list[Decision], rejected: list[Rejected]) -> None:
        for decision in decisions:
            _observe_acknowledgement(decision)
            for queue_name, notice in decision.notices:
                metrics.NOTICES.labels(queue=queue_name, kind=notice.kind, event=notice.event).inc()
                log.info(
                    "notice",
                    queue=queue_name,
                    alarm_id=notice.alarm_id,
                    notice_event=notice.event,
                    kind=notice.kind,
                    level=notice.level,
                    order_id=notice.order_id,
                )
        for reason, count in Counter(reason for _raw, reason, _detail, _s in rejected).items():
            metrics.MESSAGES_REJECTED.labels(service=SERVICE, reason=reason).inc(count)
        for _raw, reason, detail, stream in rejected:
            self._rejections.record(reason, detail=detail, topic=stream)
        self._update_gauges()

    def _update_gauges(self) -> None:
        counts: dict[str, int] = {}
        unacknowledged: Counter[tuple[str, int]] = Counter()
        oldest_opened_ms: dict[int, int] = {}
        for record in self._book.open_alarms():
            counts[record.kind] = counts.get(record.kind, 0) + 1
            if record.acknowledged_at is None:
                unacknowledged[record.kind, record.priority] += 1
                oldest = oldest_opened_ms.get(record.priority, record.opened_at)
                oldest_opened_ms[record.priority] = min(oldest, record.opened_at)
        for kind in ALARM_KINDS:
            metrics.OPEN_ALARMS.labels(kind=kind).set(counts.get(kind, 0))
        # Cleared first: a kind or priority with nothing unacknowledged left has no series (the
        # age of "the oldest of none" is not a number an alert should compare).
        metrics.UNACKNOWLEDGED_ALARMS.clear()
        for (alarm_kind, priority), count in unacknowledged.items():
            metrics.UNACKNOWLEDGED_ALARMS.labels(kind=alarm_kind, priority=str(priority)).set(count)
        metrics.OLDEST_UNACKNOWLEDGED_OPENED.clear()
        for priority, opened_ms in oldest_opened_ms.items():
            metrics.OLDEST_UNACKNOWLEDGED_OPENED.labels(priority=str(priority)).set(
                opened_ms / 1000
            )


def _observe_acknowledgement(decision: Decision) -> None:
    """Time to acknowledge, once per alarm: when a request acknowledged it just now (an ack, or
    a resolve of an alarm nobody had acknowledged)."""
    outcome = decision.outcome
    records = decision.upserts or decision.resolved
    if outcome is None or outcome.status != "applied" or not records:
        return
    if outcome.acknowledged_at != outcome.at:
        return  # acknowledged earlier: counted then
    record = records[0]
    waited_s = max(0, outcome.at - record.opened_at) / 1000
    metrics.TIME_TO_ACKNOWLEDGE.labels(priority=str(record.priority)).observe(waited_s)


def _refused(raw: bytes, detail: str, now_ms: int) -> Decision:
    """Tell the sender of a refused request why, if it can be told (its id is readable)."""
    try:
        request_id = _addressed_decoder.decode(raw).request_id
    except (msgspec.MsgspecError, RecursionError):
        return Decision()
    return Decision(
        outcome=RequestOutcome(request_id=request_id, status="refused", at=now_ms, detail=detail)
    )

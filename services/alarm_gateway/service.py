"""The alarm gateway shell: inbox streams in, pure `AlarmBook`, one Redis transaction out.

The gateway is the single writer of alarm records. It reads signals (the proximity service's
inbox) and human requests (their own stream, which only the CLI's and the console's Redis users
may append to) with one consumer group over both streams; each batch's alarm records, dispatch
notices, request outcomes and the `XACK` of the batch commit in one `MULTI`, so after a crash an
entry is either fully applied or still pending (re-read first on start). Each stream takes only its
own kind of input: a human request on the signal inbox, or a signal on the request stream, is
refused. Escalation due times travel inside the records: whatever fell due while
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
from services.shell import metrics
from services.shell.commit import HEARTBEAT_INTERVAL_S, TRANSIENT_REDIS_ERRORS, ServiceWrites, beat
from services.shell.health import HealthServer
from services.shell.logs import LogAggregator
from services.shell.redis_io import DeadLetter, connect_as, wait_until_ready

SERVICE: Final = "gateway"
MAX_BLOCK_MS = 1000
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
        # Which kind of input each stream takes, in the order a batch applies them.
        self._inputs: dict[str, type[AlarmSignal] | type[HumanRequest]] = {
            self._keys.gateway_inbox: AlarmSignal,
            self._keys.human_requests: HumanRequest,
        }
        writes = ServiceWrites.build(
            self._redis,
            self._keys,
            self._settings.redis,
            service=SERVICE,
            log=log,
            health=health,
            writer=f"{SERVICE}:{consumer}",  # one counter per consumer of the inbox group
        )
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
                    if time.monotonic() >= next_beat:
                        beat(self._redis, self._keys, SERVICE, self._clock(), log)
                        self._observe_streams()
                        next_beat = time.monotonic() + HEARTBEAT_INTERVAL_S
                    if time.monotonic() >= next_trim:
                        self._trim()
                        next_trim = time.monotonic() + RETENTION_CHECK_S
                    self._fire_due()
                    self._consume(stop, start_id=start_id)
                    start_id, backoff = b">", 0.05
                except TRANSIENT_REDIS_ERRORS as err:
                    # Redis restarting: wait for it, then re-read what was pending.
                    log.warning("redis_unavailable", error=str(err), retry_in_s=backoff)
                    stop.wait(backoff)
                    start_id, backoff = b"0", min(backoff * 2, 2.0)
                except redis.ResponseError as err:
                    if "NOGROUP" not in str(err):
                        raise
                    # Redis came back without our consumer group (no persistence): recreate it.
                    self._ensure_group()
                    start_id = b"0"
                if self._health is not None:
                    self._health.heartbeat()
        finally:
            metrics.READY.labels(service=SERVICE).set(0)
            log.info("gateway_stopped")

    def _observe_streams(self) -> None:
        """Stream lengths, the consumer group's pending entries and lag, and those of the groups
        that read the dispatch queues (consoles, `nabij tail --group`), for ops."""
        inputs = {
            "gateway_inbox": self._keys.gateway_inbox,
            "human_requests": self._keys.human_requests,
        }
        streams = {
            **inputs,
            **{f"dispatch_{queue}": self._keys.dispatch(queue) for queue in QUEUE_NAMES},
        }
        pipe = self._redis.pipeline(transaction=False)
        for key in streams.values():
            pipe.xlen(key)
        for key in inputs.values():
            pipe.xinfo_groups(key)
        for queue in QUEUE_NAMES:
            pipe.xinfo_groups(self._keys.dispatch(queue))
        # An input stream Redis lost (restarted empty) answers an error until the group is
        # recreated (a queue nobody wrote to yet, until then): not measured this time, and
        # never a reason to stop the gateway.
        replies = pipe.execute(raise_on_error=False)
        for name, length in zip(streams, replies[: len(streams)], strict=True):
            metrics.STREAM_LENGTH.labels(stream=name).set(length)
        group_replies = replies[len(streams) :]
        self._observe_readers(group_replies[len(inputs) :])
        for name, groups in zip(inputs, group_replies[: len(inputs)], strict=True):
            if isinstance(groups, redis.ResponseError):
                continue
            for group in groups:
                if group["name"] == self._keys.gateway_group.encode():
                    metrics.CONSUMER_GROUP_PENDING.labels(stream=name).set(group["pending"])
                    # Redis reports no lag when it cannot tell (entries deleted mid-range).
                    if group.get("lag") is not None:
                        metrics.CONSUMER_GROUP_LAG.labels(stream=name).set(group["lag"])

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

    def _ensure_group(self) -> None:
        for stream in self._inputs:
            # From id 0: input written before the gateway ever ran is not lost.
            streams.ensure_group(self._redis, stream, self._keys.gateway_group, start_id="0")

    def _prepare(self) -> None:
        self._ensure_group()
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
        due = self._book.next_due_ms()
        if due is None:
            return MAX_BLOCK_MS
        wall_ms = math.ceil(self._timescale.wall_s(due - self._clock()))
        return max(1, min(MAX_BLOCK_MS, wall_ms))

    def _consume(self, stop: threading.Event, *, start_id: bytes) -> None:
        while not stop.is_set():
            entries = streams.read_groups(
                self._redis,
                self._keys.gateway_group,
                self._consumer,
                dict.fromkeys(self._inputs, start_id),
                count=self._settings.gateway.batch_max,
                block_ms=None if start_id == b"0" else self._block_ms(),
            )
            if not entries:
                return
            self._apply_batch(entries)
            if start_id == b">":
                return

    def _apply_batch(self, entries: list[tuple[str, streams.StreamEntry]]) -> None:
        now = self._clock()
        decisions: list[Decision] = []
        evidence: list[Entry] = []
        rejected: list[Rejected] = []
        acked: dict[str, list[bytes]] = {}
        for stream, (entry_id, fields) in entries:
            acked.setdefault(stream, []).append(entry_id)
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
        # Every entry, applied or rejected, is acknowledged with the decisions; the dead letters
        # follow in their own best-effort write.
        self._commit(decisions, acked, evidence, now)
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
    ) -> None:
        self._committer.commit(
            lambda pipe: self._write(pipe, decisions, acked, evidence, now), self._stop
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
            # Applied entries are gone from the inbox: it would otherwise grow without end and
            # keep victim positions that the alarm records and police notices already hold.
            pipe.xdel(stream, *ids)

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

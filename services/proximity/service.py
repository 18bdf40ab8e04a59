"""The proximity service shell: MQTT in, pure core, Redis out, then the MQTT acknowledgement.

Two MQTT readers (`services.shell.mqtt_ingest`: the bulk connection with every uplink, the
fast one with the event topics for presses and tampers) put messages into bounded, per-device lanes
(`intake.py`). This thread drains them in batches, fast lane first, runs each batch through the
pure `ProximityEngine`, commits every changed state, signal and device command in one Redis
`MULTI`, stores the batch's dead letters in a best-effort write after it, publishes device
commands (on a third, publish-only connection), and only then acknowledges the batch to the
broker. A crash anywhere before the commit makes the broker redeliver; after it, the committed
`seq` makes the redelivery a duplicate. Effects happen once.

A full Redis (out of memory) never stops the service: the commit is retried until memory frees
while the batch stays unacknowledged, and dead letters Redis refuses are dropped and counted (see
`services.shell.commit` and `services.shell.redis_io.DeadLetterWriter`).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, cast

import paho.mqtt.client as paho
import redis
import structlog
from redis.client import Pipeline

from nabij import order_store, streams
from nabij.config import Config
from nabij.contract import ClearCause, Committed, Topics, encode
from nabij.evidence.chain import Entry
from nabij.evidence.store import SharedLog, WriterLog, signer_from
from nabij.keys import Keys, Shard
from nabij.orders import HeldOrder, InForce
from services.proximity import handover
from services.proximity.core.acks import committed_acks
from services.proximity.core.batch import BatchResult, run_isolating
from services.proximity.core.census import (
    CONTACT_AGE_LABELS,
    PHASES,
    RINGS,
    CensusRound,
)
from services.proximity.core.engine import Effects, ProximityEngine
from services.proximity.core.ingest import Rejection
from services.proximity.core.lanes import LaneLimits
from services.proximity.core.platform import platform_state_decoder
from services.proximity.core.shards import Ownership, handover_plan, platform_settings
from services.proximity.core.state import (
    DeviceState,
    device_state_decoder,
    encode_pair,
    pair_state_decoder,
    state_encoder,
)
from services.proximity.evidence import BatchRecorder
from services.proximity.intake import Intake, Received
from services.proximity.layout import adopt_from_previous_layout, register
from services.proximity.outbox import CommandOutbox
from services.shell import heap, metrics, mqtt_packets
from services.shell.commit import HEARTBEAT_INTERVAL_S, CommitAbortedError, ServiceWrites, beat
from services.shell.health import HealthServer
from services.shell.lease import LeaseWaitAbortedError
from services.shell.logs import LogAggregator
from services.shell.mqtt import ConnectionWatch, MqttEndpoint, make_client
from services.shell.mqtt_ingest import Subscriber
from services.shell.redis_io import DeadLetter, connect_as, wait_until_ready

SERVICE: Final = "proximity"
# Seconds of nabij's clock between silence checks; on the wall that is divided by the clock's
# speed (a simulation), but never more often than MIN_TICK_WALL_S.
TICK_INTERVAL_S = 1.0
MIN_TICK_WALL_S = 0.01
# How often the current orders version is read: a change applies within this (plus a batch).
ORDERS_CHECK_S = 0.5
# ... and while a step hands devices over (`handover.py`): each of its stages waits for a check.
HANDOVER_CHECK_S = 0.05
# Longest wall wait for MQTT messages before the loop looks at its timers again.
DRAIN_WAIT_S = 0.2
REDIS_START_TIMEOUT_S = 60.0
SUBSCRIBE_POLL_S = 0.05
# States counted per loop for the gauges (`CensusRound`): a device is decoded for its count
# (`DeviceTable.states`), so 250 keep a loop's share under ~0.5 ms; 1,000 doubled the p99 of
# publish -> decision at 5,000 fixes/s (docs/benchmarks.md, the sixth pass).
CENSUS_SLICE = 250
# Device (and pair) states decoded and loaded at a time on a restore (`_restore`), then
# encoded again (kept in the pairs' records).
RESTORE_SLICE = 10_000
# Bound, not a logger name: the name is dropped by the renderer, and `nabij run` would say "run".
log = structlog.get_logger(service=SERVICE)


MAX_DETAILS_PER_LETTER = 5
TICK_TOPIC: Final = "(tick)"
"""Stands for the topic in the dead letter of a bug in the tick."""


def deadletters(rejected: list[tuple[Received, Rejection]], payload_bytes: int) -> list[DeadLetter]:
    """One dead letter per message, however many of its backlog items were rejected.

    A 1,000-fix backlog with one bad field in every fix must not become 1,000 copies of a
    100 KB payload in Redis; the letter says how many items failed and why, and keeps the
    payload only up to the configured bound.
    """
    by_message: dict[int, tuple[Received, list[Rejection]]] = {}
    for item, rejection in rejected:
        by_message.setdefault(id(item), (item, []))[1].append(rejection)
    letters = []
    for item, rejections in by_message.values():
        details = [r.detail for r in rejections[:MAX_DETAILS_PER_LETTER]]
        if len(rejections) > MAX_DETAILS_PER_LETTER:
            details.append(f"... {len(rejections) - MAX_DETAILS_PER_LETTER} more rejected items")
        letters.append(
            DeadLetter.bounded(
                source=SERVICE,
                reason=rejections[0].reason,
                detail=" ".join(details),
                topic=item.topic,
                payload=item.payload,
                received_ms=item.received_ms,
                payload_bytes=payload_bytes,
            )
        )
    return letters


def shard_name(shard: Shard) -> str:
    """The service's name for its heartbeat: `proximity`, or `proximity-KofN` for a shard."""
    return SERVICE if shard.count == 1 else f"{SERVICE}-{shard.index}of{shard.count}"


def shard_client_id(client_id: str, shard: Shard) -> str:
    """A single process keeps the configured id (and the session earlier versions left at the
    broker); shard K of N has its own, so the shards of a new layout can subscribe while the
    old layout still runs (docs/architecture.md, re-shard)."""
    return client_id if shard.count == 1 else f"{client_id}-{shard.index}of{shard.count}"


class ProximityService:
    _step: handover.Step | None = None
    """The orders step under way (`handover.py`), if any."""
    _in_force_held: InForce | None = None

    def __init__(
        self,
        config: Config,
        *,
        health: HealthServer | None = None,
        clock: Callable[[], int],
    ) -> None:
        self._config = config
        self._settings = config.settings
        self._clock = clock
        self._keys = Keys(self._settings.redis.key_prefix)
        self._shard = self._settings.proximity.shard_part
        self._shard_keys = self._keys.proximity(self._shard)
        self.name = shard_name(self._shard)
        self._topics = Topics(self._settings.mqtt.topic_prefix)
        # Until `run` reads the store: orders.toml, which is version 1 of an empty store.
        self._orders_version = 0
        self._ownership = Ownership(config.orders, self._shard)
        self._orders = self._ownership.all_orders()
        # The orders this shard judges: its own, or a step's interim ones (`handover.py`).
        self._judged = self._ownership.orders()
        self._engine_orders = self._in_force(clock())
        self._engine = self._new_engine()
        ingest = self._settings.proximity
        self._intake = Intake(
            self._topics,
            self._is_known,
            self._is_elsewhere,
            LaneLimits(
                ingest.device_queue_max,
                ingest.lane_max,
                ingest.lane_max_bytes,
                ingest.device_rate_max,
            ),
            clock,
            report_every_ms=int(ingest.refusal_report_s * 1000),
        )
        self._watch = ConnectionWatch()
        self._redis = connect_as(self._settings.redis, SERVICE, retries=0)
        writes = ServiceWrites.build(
            self._redis,
            self._keys,
            self._settings.redis,
            service=SERVICE,
            log=log,
            health=health,
            counter=self._shard_keys.commit_counter,
            lease=self._shard_keys.lease,
        )
        assert writes.lease is not None  # asked for above
        self._lease = writes.lease
        self._committer, self._deadletters = writes.committer, writes.deadletters
        self._signer = signer_from(self._settings.audit)
        self._evidence = self._evidence_log()
        self._recorder = (self._engine, BatchRecorder(self._topics, self._engine.orders_of))
        self._rejections = LogAggregator(log, "rejected")
        self._stop = threading.Event()
        mqtt = self._settings.mqtt
        endpoint = self._endpoint = MqttEndpoint.from_settings(mqtt)
        connection_ids = itertools.count(1)
        # A single process's bulk reader keeps the configured client id: its persistent session
        # is the one earlier versions used, with whatever the broker queued for it.
        client_id = self._client_id = shard_client_id(mqtt.client_id, self._shard)
        # One process hears every device (and reports the unknown ones); a shard only its own,
        # which its readers keep (`Subscriber.names`): this process keeps no other copy of them.
        heard = None if self._shard.count == 1 else self._ownership.devices()
        self._bulk = Subscriber(
            endpoint,
            client_id,
            self._topics.subscriptions(heard),
            self._intake.bulk,
            keepalive_s=mqtt.keepalive_s,
            connection_ids=connection_ids,
            marker_topic=self._marker_topic(client_id),
        )
        fast_id = f"{client_id}-fast"
        self._fast = Subscriber(
            endpoint,
            fast_id,
            self._topics.events(heard),
            self._intake.fast,
            keepalive_s=mqtt.keepalive_s,
            connection_ids=connection_ids,
            marker_topic=self._marker_topic(fast_id),
        )
        self._readers, self._hold = (
            (self._bulk, self._fast),
            handover.Hold(self._topics, ingest.lane_max),
        )
        # Commands go out on a publish-only connection: paho keeps QoS 1 publishes and sends
        # them again after a reconnect.
        self._mqtt = make_client(endpoint, f"{client_id}-cmd", persistent_session=True)
        self._mqtt.on_connect = self._on_connect
        self._mqtt.on_disconnect = self._on_disconnect
        self._outbox = CommandOutbox(self._mqtt, self._topics, self._shard_keys.command_outbox)
        self._health = health
        if health is not None:
            health.add_check("mqtt_subscribed", self.subscribed)
        # Label children bound once: a label lookup costs more than the observation.
        self._from_device = metrics.DECISION_LATENCY_FROM_DEVICE.labels(service=SERVICE)
        self._late_ms = round(self._settings.proximity.late_after_s * 1000)
        self._next_census = 0.0
        self._census_round: CensusRound | None = None

    def _evidence_log(self) -> WriterLog | None:
        if self._signer is None:
            return None
        anchor_ms = round(self._settings.audit.anchor_interval_s * 1000)
        # One chain per shard: each chain has exactly one writer.
        return WriterLog(self._redis, self._keys, self.name, self._signer, anchor_ms)

    def _orders_evidence(self) -> SharedLog | None:
        if self._signer is None:
            return None
        return SharedLog(self._keys, order_store.EVIDENCE_WRITER, self._signer)

    def _marker_topic(self, client_id: str) -> str:
        return f"{self._topics.prefix}/service/{client_id}/caught-up"

    # --- paho thread (command connection) --------------------------------------------------

    def _on_connect(
        self, _client: paho.Client, _u: object, _f: object, rc: object, _p: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            client_id = f"{self._client_id}-cmd"
            metrics.MQTT_REFUSED.labels(client=client_id, reason="connect_refused").inc()
            log.error("mqtt_refused", client_id=client_id, reason="connect_refused", detail=str(rc))
            return
        self._watch.mark(True)
        log.info("mqtt_command_connection_up")

    def _on_disconnect(self, *_args: object) -> None:
        self._watch.mark(False)
        log.warning("mqtt_command_connection_down")

    # --- readiness -----------------------------------------------------------------------

    def subscribed(self) -> bool:
        return self._watch.connected and all(reader.subscribed for reader in self._readers)

    # --- main loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set; state is restored from Redis first."""
        self._stop = stop
        # Subscribed first: the broker queues this shard's messages from now on, also while it
        # waits for its lease or for the previous layout to stop (the intake holds them back).
        for reader in self._readers:
            reader.start()
        tick_wall_s = max(self._settings.clock.timescale().wall_s(TICK_INTERVAL_S), MIN_TICK_WALL_S)
        next_tick = next_beat = next_orders_check = 0.0
        caught_up = False
        try:
            if not self._take_over(stop):
                return
            self._intake.open()
            endpoint = self._endpoint
            self._mqtt.connect_async(endpoint.host, endpoint.port, self._settings.mqtt.keepalive_s)
            self._mqtt.loop_start()
            self._resend_outbox()  # QoS 1: paho sends them once connected
            log.info(
                "proximity_started",
                shard=str(self._shard),
                orders=len(self._engine_orders),
                orders_version=self._orders_version,
            )
            while not stop.is_set():
                batch = self._drain(timeout_s=min(DRAIN_WAIT_S, tick_wall_s))
                refused = self._intake.letters(self._clock())
                # Silence is judged only once the broker has handed over what it queued for us
                # while we were away; otherwise every restart would report every device silent.
                caught_up = caught_up or (
                    self.subscribed() and len(batch) < self._settings.proximity.batch_max
                )
                due = caught_up and time.monotonic() >= next_tick
                if batch or due or refused:
                    self._process(batch, tick=due, refused=refused)
                if time.monotonic() >= next_orders_check:
                    self._follow_orders()
                    every = ORDERS_CHECK_S if self._step is None else HANDOVER_CHECK_S
                    next_orders_check = time.monotonic() + every
                if due:
                    next_tick = time.monotonic() + tick_wall_s
                    if self.subscribed() and time.monotonic() >= next_beat:
                        beat(self._redis, self._keys, self.name, self._clock(), log)
                        next_beat = time.monotonic() + HEARTBEAT_INTERVAL_S
                self._census()  # a slice a loop, also while the broker is away
                self._lease.keep()
                metrics.READY.labels(service=SERVICE).set(1 if self.subscribed() else 0)
                if self._health is not None:
                    self._health.heartbeat()
        finally:
            for reader in self._readers:
                reader.stop()
            if refused := self._intake.letters(self._clock(), final=True):
                try:
                    self._process([], tick=False, refused=refused)
                except CommitAbortedError:
                    log.warning("refusal_letters_lost", letters=len(refused))
            metrics.READY.labels(service=SERVICE).set(0)
            self._mqtt.disconnect()
            self._mqtt.loop_stop()
            self._lease.release()
            log.info("proximity_stopped", shard=str(self._shard))

    def _take_over(self, stop: threading.Event) -> bool:
        """Read the orders, take this shard's lease once its readers are subscribed (waiting
        while another process holds it), adopt state after a re-shard and restore it; False if
        stopped while waiting. The lease is thus also the sign, for a re-shard, that the broker
        keeps this shard's messages."""
        wait_until_ready(self._redis, timeout_s=REDIS_START_TIMEOUT_S)
        on_wait = self._health.heartbeat if self._health is not None else lambda: None
        current = order_store.bootstrap(
            self._redis, self._keys, self._config.orders, self._clock(), self._orders_evidence()
        )
        mark = handover.marks(self._redis, self._keys, [self._shard])[self._shard.index]
        moved_on = self._resume(mark, current)
        metrics.ORDERS_VERSION.labels(service=SERVICE).set(self._orders_version)
        # The broker keeps our messages once a reader is subscribed, or at once when it kept the
        # session (a restart: its backlog then comes before the SUBACK, behind a closed intake).
        while not all(r.subscribed or r.session_present for r in self._readers):
            on_wait()
            if stop.wait(SUBSCRIBE_POLL_S):
                return False
        try:
            self._lease.acquire(stop, on_wait)
            register(self._redis, self._keys, self._shard)

            def waiting() -> None:
                on_wait()
                self._lease.renew()

            adopt_from_previous_layout(
                self._redis,
                self._keys,
                self._shard,
                self._orders,
                committer=self._committer,
                stop=stop,
                log=log,
                on_wait=waiting,
            )
            if moved_on:  # a first start, or versions that moved nothing for it: passed
                marker = self._marker(self._orders_version, *handover.STAGES)
                self._committer.commit(marker, stop)
        except (LeaseWaitAbortedError, CommitAbortedError):
            return False
        self._engine = self._new_engine()
        self._restore()
        return True

    def _resume(self, mark: dict[str, int], current: order_store.OrdersVersion) -> bool:
        """Where this shard's orders stand at start: mid-step after its release if it stopped
        there, else at the newest version it reaches from the one it last adopted without
        skipping a step that moves devices to or from it (the other shards may wait for it to
        hand them over: it steps on live from there, as a running shard would); on a first
        start (no mark) at the current version. True if its marker must be written (it moved
        on from what the marker says)."""
        adopted, released = mark.get("adopted", current.version), mark.get("released", 0)
        start = self._reachable(adopted, current) if released <= adopted else None
        if start is None:  # mid-step: the version it adopted last, and the step after it
            start = order_store.read_version(self._redis, self._keys, adopted) or current
        self._ownership = Ownership(start.orders, self._shard)
        self._orders_version, self._orders = start.version, self._ownership.all_orders()
        self._judged = self._ownership.orders()
        step_to = order_store.read_version(self._redis, self._keys, released)
        if released > adopted and step_to is not None:
            after = Ownership(step_to.orders, self._shard)
            plan = handover_plan(self._ownership, after)
            step = handover.Step(step_to.version, plan, after)
            step.stage = "released"
            self._step = step
            self._orders_version, self._orders = step.version, after.all_orders()
            self._ownership, self._judged = after, step.plan.interim
            self._hold.arriving, self._hold.left = plan.arriving, plan.leaving
            self._hold.may_stall = True
            self._let_go(plan.leaving)
            log.info("handover_resumed", orders_version=step.version, **handover.summary(plan))
        self._hear(self._ownership)
        self._engine_orders = self._in_force(self._clock())
        return start.version != mark.get("adopted") and self._step is None

    def _reachable(
        self, adopted: int, current: order_store.OrdersVersion
    ) -> order_store.OrdersVersion:
        """The newest version from `adopted` on up to `current` whose steps move nothing to or
        from this shard (one process: always `current`)."""
        version = order_store.read_version(self._redis, self._keys, adopted)
        if version is None or adopted >= current.version:
            return current
        ownership = Ownership(version.orders, self._shard)
        for number in range(adopted + 1, current.version + 1):
            after = order_store.read_version(self._redis, self._keys, number)
            if after is None:
                return version
            if handover_plan(ownership, Ownership(after.orders, self._shard)).moves:
                return version
            version, ownership = after, Ownership(after.orders, self._shard)
        return version

    def _drain(self, timeout_s: float) -> list[Received]:
        hold = self._hold
        if hold.idle:
            return self._intake.drain(timeout_s, self._settings.proximity.batch_max)
        if hold.full:
            # Bounded once this shard has released what it hands over (so no shard waits for
            # it): the intake stalls, the broker keeps what comes, until the adoption.
            if not hold.told_full:
                log.warning("handover_hold_full", held=len(hold.held))
                hold.told_full = True
            self._stop.wait(timeout_s)
            return hold.sort([], self._acknowledge)
        batch = self._intake.drain(timeout_s, self._settings.proximity.batch_max)
        return hold.sort(batch, self._acknowledge)

    def _process(
        self,
        batch: list[Received],
        *,
        tick: bool,
        refused: list[tuple[Received, Rejection]] | None = None,
    ) -> None:
        self._engine, result = run_isolating(
            self._engine,
            self._rollback,
            self._topics,
            batch,
            self._clock(),
            tick=tick,
            broker_up=self._bulk.subscribed,
        )
        # One counter update per kind and batch, not per fix: label lookup is the costly part.
        for kind, count in Counter(result.uplink_kinds).items():
            metrics.MESSAGES_RECEIVED.labels(service=SERVICE, kind=kind).inc(count)
        effects, rejected = result.effects, result.rejected + (refused or [])
        if result.tick_failure is not None:
            # No message behind it: the letter names the tick; the batch went on without it.
            the_tick = Received(TICK_TOPIC, b"", 0, 0, self._clock(), 0)
            rejected.append((the_tick, result.tick_failure))
        # Read before the freeze, while the states are live; sent once the batch is committed.
        acks = self._committed_acks(result.counted)
        self._engine.freeze()  # encodes the states the commit then writes
        self._commit(effects, rejected, self._evidence_of(result.accepted, effects))
        self._publish_commands(effects)
        self._confirm_to_devices(acks)
        self._acknowledge(batch)
        self._observe(batch, effects, rejected)
        self._observe_uplinks(result)

    def _evidence_of(self, accepted: list[Received], effects: Effects) -> list[Entry]:
        if self._evidence is None:
            return []
        if self._recorder[0] is not self._engine:  # a new one for new orders
            self._recorder = (self._engine, BatchRecorder(self._topics, self._engine.orders_of))
        return self._recorder[1].entries(accepted, effects, self._clock())

    def _commit(
        self,
        effects: Effects,
        rejected: list[tuple[Received, Rejection]],
        evidence: list[Entry] | None = None,
        marker: Callable[[Pipeline], None] | None = None,
    ) -> None:
        """State, signals, commands and their evidence first, in one transaction that is retried
        until it lands (through a full Redis too); dead letters after it, best-effort, so junk
        can never keep a signal out of Redis. `marker`: written in the same transaction (an
        orders step's, `handover.py`)."""
        committed = bool(
            marker
            or effects.changed_devices
            or effects.changed_pairs
            or effects.signals
            or effects.commands
            or evidence
            or effects.platform_changed
        )
        if committed:
            now = self._clock()
            self._committer.commit(
                lambda pipe: self._write(pipe, effects, evidence or [], now, marker), self._stop
            )
            self._outbox.committed()
            if self._evidence is not None:
                self._evidence.committed(now)
        letters = deadletters(rejected, self._settings.redis.deadletter_payload_bytes)
        self._deadletters.write(letters)
        if not (committed or letters):
            self._committer.recheck_memory()

    def _write(
        self,
        pipe: Pipeline,
        effects: Effects,
        evidence: list[Entry],
        now: int,
        marker: Callable[[Pipeline], None] | None = None,
    ) -> None:
        keys = self._shard_keys
        if self._evidence is not None:
            self._evidence.write(pipe, evidence, now)
        # Every changed state in one MSET: a SET each cost more Python in redis-py than the
        # core's decisions (docs/benchmarks.md, the profile). Sent as a raw command because
        # redis-py's cluster pipeline refuses its `mset` method (keys may span slots), while
        # all of a shard's keys share one slot, which the transaction checks.
        engine = self._engine
        # As `freeze` encoded them at the batch's end: no second encoding for the commit.
        states = {keys.device_state(d): engine.encoded_device(d) for d in effects.changed_devices}
        for order_id, offender, victim in effects.changed_pairs:
            pair = engine.pair((order_id, offender, victim))
            states[keys.pair_state(offender, order_id, victim)] = encode_pair(pair)
        if states:
            flat = itertools.chain.from_iterable(states.items())
            pipe.execute_command("MSET", *flat)  # type: ignore[no-untyped-call]  # untyped in redis-py
        if effects.changed_devices:
            pipe.sadd(keys.proximity_devices, *effects.changed_devices)
        if effects.platform_changed:
            pipe.set(keys.platform_state, state_encoder.encode(self._engine.platform))
        for signal in effects.signals:
            pipe.xadd(keys.gateway_inbox, {"input": encode(signal)})
        self._outbox.queue(pipe, effects.commands)
        if marker is not None:
            marker(pipe)

    def _publish_commands(self, effects: Effects) -> None:
        self._outbox.publish(effects.commands)

    def _committed_acks(self, counted: set[str]) -> list[tuple[str, Committed]]:
        """What each device heard in the batch may forget, from its state after the batch (the
        state the commit writes)."""
        if not (counted and self._settings.proximity.commit_acks):
            return []
        return committed_acks(self._engine.device(d) for d in counted)

    def _confirm_to_devices(self, acks: list[tuple[str, Committed]]) -> None:
        """After the commit: each device heard may forget its messages up to what is committed
        (QoS 0: a lost confirmation is replaced by the next, or the device re-sends). A batch's
        confirmations go out in one write on the bulk reader's connection, with the PUBACKs
        pending then: a paho publish each cost ~19 us of this process's CPU (its thread's
        included), half a fix's (`bench.commit_acks`, docs/benchmarks.md)."""
        if not acks:
            return
        device, topic = self._topics.device, mqtt_packets.utf8
        self._bulk.publish(
            b"".join(
                mqtt_packets.publish(topic(device(device_id, "cmd")), encode(ack), qos=0)
                for device_id, ack in acks
            )
        )
        metrics.COMMANDS_SENT.labels(type="Committed").inc(len(acks))

    def _acknowledge(self, batch: list[Received]) -> None:
        """One write per connection; a reader drops acks of a connection that is gone."""
        received: dict[int, list[tuple[int, int]]] = {}
        for item in batch:
            if item.qos > 0:
                received.setdefault(item.connection, []).append((item.mid, item.qos))
        for reader in self._readers:
            if mids := received.get(reader.connection):
                reader.ack(reader.connection, mids)

    def _observe(
        self, batch: list[Received], effects: Effects, rejected: list[tuple[Received, Rejection]]
    ) -> None:
        done = self._clock()
        if batch:
            metrics.BATCH_SIZE.labels(service=SERVICE).observe(len(batch))
        metrics.DECISION_LATENCY.labels(service=SERVICE).observe_all(
            max(0, done - item.received_ms) / 1000 for item in batch
        )
        for signal in effects.signals:
            metrics.SIGNALS_EMITTED.labels(kind=signal.kind, action=signal.action).inc()
            log.info(
                "signal",
                kind=signal.kind,
                action=signal.action,
                order_id=signal.order_id,
                alarm_key=signal.alarm_key,
            )
        for device_id, reason in effects.ignored:
            metrics.MESSAGES_IGNORED.labels(service=SERVICE, reason=reason).inc()
            log.debug("ignored", device_id=device_id, reason=reason)
        # Counters once per reason and batch; log lines once per reason and interval.
        for reason, count in Counter(rejection.reason for _item, rejection in rejected).items():
            metrics.MESSAGES_REJECTED.labels(service=SERVICE, reason=reason).inc(count)
        for item, rejection in rejected:
            self._rejections.record(
                rejection.reason,
                detail=rejection.detail,
                device_id=rejection.device_id,
                topic=item.topic,
            )
        self._rejections.flush()
        self._deadletters.flush_logs()

    def _observe_uplinks(self, result: BatchResult[Received]) -> None:
        """Latency from device time for live fixes (a backlog's is its coverage gap, not ours),
        and events taken by type."""
        done, late_ms = self._clock(), self._late_ms
        self._from_device.observe_all(
            (done - measured) / 1000
            for measured in result.fix_times
            if 0 <= done - measured < late_ms
        )
        for event_type, count in Counter(result.effects.events).items():
            metrics.DEVICE_EVENTS.labels(type=event_type).inc(count)

    def _census(self) -> None:
        """Gauges of pairs by ring phase and devices by contact age: a round starts once a
        heartbeat interval and counts `CENSUS_SLICE` states a call, between batches; its gauges
        are set when it ends (every combination, 0 included, so a series never vanishes while
        its count is 0)."""
        if self._census_round is None:
            if time.monotonic() < self._next_census:
                return
            self._next_census = time.monotonic() + HEARTBEAT_INTERVAL_S
            engine = self._engine
            degraded = engine.platform.degraded
            metrics.PLATFORM_DEGRADED.labels(service=SERVICE).set(1 if degraded else 0)
            # The devices decoded a slice at a time, none kept: not a million objects at once.
            self._census_round = CensusRound(engine.pair_rings(), engine.devices())
        census = self._census_round
        if not census.step(self._clock(), CENSUS_SLICE):
            return
        self._census_round = None
        for ring in RINGS:
            for phase in PHASES:
                metrics.PAIRS.labels(ring=ring, phase=phase).set(census.phases[ring, phase])
        for age in CONTACT_AGE_LABELS:
            for online in (True, False):
                count = census.contact[age, online]
                metrics.DEVICES.labels(contact_age=age, online=str(online).lower()).set(count)
        metrics.DEVICES_GROUPED.labels(service=SERVICE).set(census.grouped)

    def _resend_outbox(self) -> None:
        """Publish the commands a crash kept from reaching the broker (a repeat is harmless:
        commands set an interval or a warning level, they do not count)."""
        self._outbox.resend(self._redis)

    def _is_known(self, device_id: str) -> bool:
        """Asked of the engine of the current orders (a swapped-out device becomes unknown);
        a device this shard is taking over is known: its messages are held for it."""
        return self._engine.is_known(device_id) or device_id in self._hold.arriving

    def _is_elsewhere(self, device_id: str) -> bool:
        """Another shard judges it (or reports it unknown): acknowledged and left alone here."""
        return self._ownership.elsewhere(device_id)

    def _new_engine(self) -> ProximityEngine:
        settings = self._settings
        return ProximityEngine(
            self._engine_orders,
            settings.proximity,
            settings.privacy,
            platform_settings(settings.platform, self._shard),
        )

    def _follow_orders(self) -> None:
        """Between batches: step to the next orders version if there is one (one GET when there
        is not; a step that moves devices between shards takes several checks, see
        `handover.py`), and move the engine to the orders in force now."""
        now = self._clock()
        try:
            while self._step_orders():
                now = self._clock()
        except redis.RedisError as err:
            # Redis away: the orders in hand still hold (and still expire); retried next check.
            log.warning("orders_check_failed", error=str(err))
        self._judge_orders(now)

    def _judge_orders(
        self,
        now: int,
        why: Mapping[str, ClearCause | None] | None = None,
        marker: Callable[[Pipeline], None] | None = None,
        effects: Effects | None = None,
        arriving: Sequence[DeviceState] = (),
    ) -> None:
        """Move the engine to the judged orders in force now (`ProximityEngine.successor`:
        unchanged pairs keep their state, new and changed ones are judged at once), and commit
        it with the step's `marker` (then always). `arriving`: adopted states of devices the
        engine before did not know, loaded into the new one (judged from their next message)."""
        in_force = self._in_force(now)
        if in_force == self._engine_orders and marker is None:
            return
        effects = effects or Effects()
        outside: dict[str, ClearCause | None] = {
            o.id: "order_not_started" if o.validity(now) == "not_started" else "order_ended"
            for o in self._judged
            if o not in in_force
        }
        self._engine = self._engine.successor(in_force, now, effects, outside | dict(why or {}))
        self._engine.load(arriving, ())
        self._engine.freeze()  # encodes the states the commit then writes
        self._engine_orders = in_force
        heap.settle()
        self._commit(effects, [], self._evidence_of([], effects), marker)
        self._publish_commands(effects)
        log.info(
            "orders_in_force",
            orders_version=self._orders_version,
            in_force=[o.id for o in in_force],
            not_in_force=outside,
            signals=len(effects.signals),
        )

    def _step_orders(self) -> bool:
        """Take the next orders version, or the current step as far as it goes now (see
        `handover.py`); True when a step ended (look for the next one)."""
        hold = self._hold
        if hold.left and not self._intake.queued(hold.left):
            hold.left = frozenset()  # what was read of them is acknowledged: no more come
        step = self._step or self._next_step()
        if step is None:
            return False
        plan = step.plan
        if step.stage is None:
            asked = zip(self._readers, step.subscriptions, strict=True)
            if not all(reader.confirmed(n) for reader, n in asked):
                return False
            if plan.arriving:
                self._committer.commit(self._marker(step.version, "subscribed"), self._stop)
            step.stage = "subscribed"
        if step.stage == "subscribed":
            if plan.outgoing:
                if late := self._behind(plan.outgoing, "subscribed", step.version):
                    step.tell_waiting(log, "subscribed", late)
                    return False
                if not self._drained_of_leaving(step):
                    return False
            self._release(step)
        if plan.sources:
            if late := self._behind(plan.sources, "released", step.version):
                step.tell_waiting(log, "released", late)
                return False
            sources = [Shard(k, self._shard.count) for k in plan.sources]
            if late := handover.unapplied(self._redis, self._keys, sources):
                step.tell_waiting(log, "gateway", late)  # then adopts: bounded
                if step.patient():
                    return False
            self._adopt(step)
        self._step = None
        metrics.ORDERS_VERSION.labels(service=SERVICE).set(step.version)
        return True

    def _drained_of_leaving(self, step: handover.Step) -> bool:
        """Whether this shard has judged every message of its leaving devices that only it got:
        a first barrier back means what the broker queued for it before the destinations
        subscribed is in its intake; then it unsubscribes them, and a second barrier back
        means no more of them come; once its lanes hold none of them, it may release."""
        leaving = step.plan.leaving
        if step.barrier is not None and not self._bulk.passed(step.barrier):
            return False
        if step.barrier is None or not step.unsubscribed:
            if step.barrier is not None:
                self._let_go(leaving)
                step.unsubscribed = True
            step.barrier = self._bulk.barrier()
            return False
        return not self._intake.queued(leaving)

    def _behind(self, shards: Iterable[int], stage: handover.Stage, version: int) -> list[str]:
        layout = [Shard(k, self._shard.count) for k in shards]
        return handover.behind(self._redis, self._keys, layout, stage=stage, version=version)

    def _next_step(self) -> handover.Step | None:
        """The step to the version after this shard's, if there is one: its side of it worked
        out, and the devices it takes over subscribed to (and held from now on)."""
        raw = self._redis.get(self._keys.orders_version)
        if raw is None or int(raw) <= self._orders_version:
            return None
        latest = order_store.read_version(self._redis, self._keys, self._orders_version + 1)
        if latest is None:
            return None
        after = Ownership(latest.orders, self._shard)
        log.info(
            "orders_version_read",
            orders_version=latest.version,
            by=latest.by,
            reason=latest.reason,
            changes=[
                f"{c.kind} {c.order_id}"
                for c in order_store.changes(self._orders, after.all_orders())
            ],
        )
        plan = handover_plan(self._ownership, after)
        step = self._step = handover.Step(latest.version, plan, after)
        step.subscriptions = self._hear(after)
        self._hold.arriving = step.plan.arriving
        if step.plan.moves:
            log.info("handover_started", orders_version=step.version, **handover.summary(step.plan))
        return step

    def _release(self, step: handover.Step) -> None:
        """Judge the step's interim orders from now on and commit that with the marker: the
        leaving devices' last state is in this shard's keys, and another shard's from now."""
        plan = step.plan
        self._orders_version, self._orders = step.version, step.ownership.all_orders()
        self._ownership, self._judged = step.ownership, plan.interim
        why: dict[str, ClearCause | None] = {order_id: None for order_id in plan.moved}
        why |= {order_id: "order_changed" for order_id in plan.replaced}
        # Nothing to take over: the step is done with its release.
        done = handover.STAGES if not plan.sources else ("subscribed", "released")
        self._judge_orders(self._clock(), why, self._marker(step.version, *done))
        step.stage = "released"
        self._hold.left, self._hold.may_stall = plan.leaving, True
        if self._shard.count > 1:  # devices in no order any more reach no shard
            self._let_go(frozenset(self._bulk.names).difference(step.ownership.devices()))
        if plan.outgoing:
            log.info("handover_released", orders_version=step.version, **handover.summary(plan))

    def _adopt(self, step: handover.Step) -> None:
        """Take the arriving devices' and the moved orders' state over from the sources, judge
        the new orders with it, and commit it all with the marker; then judge what was held."""
        plan, now = step.plan, self._clock()
        taken = handover.adoption(self._redis, self._keys, self._shard.count, plan)
        # The orders taken over as their sources judged them, with their state: the step's
        # change of them (and the new orders between them) is judged from there.
        before = tuple(
            o for orders in plan.adopted.values() for o in orders if o.validity(now) == "in_force"
        )
        mid = self._engine = self._engine.successor(self._engine_orders + before, now, Effects())
        mid.load(taken.devices, taken.pairs)
        self._judged = plan.final
        effects = Effects(commands=taken.commands)
        effects.changed_devices.update(d.device_id for d in taken.devices)
        effects.changed_pairs.update(p.key for p in taken.pairs)
        # Arriving devices in none of the moved orders (theirs ended): into the new engine.
        late = [d for d in taken.devices if not mid.is_known(d.device_id)]
        marker = self._marker(step.version, "adopted")
        self._judge_orders(now, marker=marker, effects=effects, arriving=late)
        self._hold.release()
        log.info(
            "handover_adopted",
            orders_version=step.version,
            devices=len(taken.devices),
            pairs=len(taken.pairs),
            commands=len(taken.commands),
            **handover.summary(plan),
        )

    def _let_go(self, leaving: frozenset[str]) -> None:
        """Unsubscribe from devices another shard takes over (the broker stops sending them
        here; that shard's session has them), or that left every order."""
        if leaving:
            self._bulk.unsubscribe(leaving)
            self._fast.unsubscribe(leaving)

    def _marker(self, version: int, *stages: handover.Stage) -> Callable[[Pipeline], None]:
        def write(pipe: Pipeline) -> None:
            pipe.hset(self._shard_keys.handover, mapping=dict.fromkeys(stages, version))

        return write

    def _hear(self, ownership: Ownership) -> tuple[int, ...]:
        """Subscribe to the devices of `ownership` this shard did not hear yet (the broker keeps
        their messages from the SUBACK on); the readers' `subscribe` numbers (`confirmed`). A
        single process hears every device already."""
        new = []
        if self._shard.count > 1:
            new = sorted(ownership.devices().difference(self._bulk.names))
        if new:
            log.info("devices_subscribed", devices=len(new))
        # The readers' filters are made of device ids (`Topics.subscriptions`, `events`).
        return self._bulk.subscribe(new), self._fast.subscribe(new)

    def _in_force(self, now_ms: int) -> tuple[HeldOrder, ...]:
        """This shard's orders that hold now (`starts_at`/`ends_at`); the others raise no alarm,
        their devices are unknown to the engine (refused, dead-lettered) and the gauge counts
        them. Worked out again only for other orders, when one starts or ends, or when the
        clock stepped back (`InForce`)."""
        owned = self._judged
        held = self._in_force_held
        if held is not None and held.holds(owned, now_ms):
            return held.in_force
        held = self._in_force_held = InForce.of(owned, now_ms)
        for why in ("not_started", "ended"):
            metrics.ORDERS_NOT_IN_FORCE.labels(service=SERVICE, why=why).set(held.validity[why])
        metrics.ORDERS_ACTIVE.labels(service=SERVICE).set(held.validity["in_force"])
        return held.in_force

    def _rollback(self) -> ProximityEngine:
        """An engine as last committed (a bug left the current one half-changed): rebuilt from
        what Redis holds. Rare, so it may cost a full reload."""
        self._engine = self._new_engine()
        self._restore()
        return self._engine

    def _restore(self) -> None:
        """Load every device and pair state this shard committed before it stopped."""
        keys = self._shard_keys
        device_ids = [d.decode() for d in streams.members(self._redis, keys.proximity_devices)]
        device_blobs = streams.values(self._redis, [keys.device_state(d) for d in device_ids])
        pair_keys = [
            (order.id, order.offender_device, victim)
            for order in self._judged
            for victim in order.victim_devices
        ]
        pair_blobs = streams.values(
            self._redis, [keys.pair_state(offender, o, victim) for o, offender, victim in pair_keys]
        )
        # A slice of devices at a time, each frozen before the next: a million live states at
        # once would take ~0.85 KB each on top of their blobs (`DeviceTable`).
        devices = 0
        for start in range(0, len(device_blobs), RESTORE_SLICE):
            blobs = device_blobs[start : start + RESTORE_SLICE]
            ids = device_ids[start : start + RESTORE_SLICE]
            states = [
                device_state_decoder.decode(device_id, blob)
                for device_id, blob in zip(ids, blobs, strict=True)
                if blob is not None
            ]
            self._engine.load([d for d in states if self._engine.is_known(d.device_id)], ())
            self._engine.freeze()
            devices += len(states)
        # Pairs too: the engine keeps their state in its records, not the states loaded.
        pairs = 0
        for start in range(0, len(pair_blobs), RESTORE_SLICE):
            end = start + RESTORE_SLICE
            stored = zip(pair_keys[start:end], pair_blobs[start:end], strict=True)
            loaded = [pair_state_decoder.decode(b, key) for key, b in stored if b is not None]
            self._engine.load((), loaded)
            pairs += len(loaded)
        if self._evidence is not None:
            self._evidence.restore()
        # GET, not MGET: the proximity ACL user may GET and SET this key only.
        if (platform := cast(bytes | None, self._redis.get(keys.platform_state))) is not None:
            self._engine.load_platform(platform_state_decoder.decode(platform))
        heap.settle()
        log.info("state_restored", devices=devices, pairs=pairs)

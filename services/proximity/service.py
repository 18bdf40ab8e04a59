"""The proximity service shell: MQTT in, pure core, Redis out, then the MQTT acknowledgement.

Two MQTT readers (`nabij.mqtt_ingest`: the bulk connection with every uplink, the fast one with
the event topics for presses and tampers) put messages into bounded, per-device lanes
(`intake.py`). This thread drains them in batches, fast lane first, runs each batch through the
pure `ProximityEngine`, commits every changed state, signal and dead letter in one Redis `MULTI`,
publishes device commands (on a third, publish-only connection), and only then acknowledges the
batch to the broker. A crash anywhere before the commit makes the broker redeliver; after it, the
committed `seq` makes the redelivery a duplicate. Effects happen once.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable

import msgspec
import paho.mqtt.client as paho
import structlog
from redis.client import Pipeline

from nabij import metrics, streams
from nabij.commit import CommitAbortedError, Committer, beat
from nabij.config import Config
from nabij.contract import Topics, encode
from nabij.health import HealthServer
from nabij.keys import Keys
from nabij.mqtt import ConnectionWatch, MqttEndpoint, make_client
from nabij.mqtt_ingest import Subscriber
from nabij.redis_io import DeadLetter, add_deadletter, answers, connect, wait_until_ready
from services.proximity.core.batch import run_batch
from services.proximity.core.engine import Effects, ProximityEngine
from services.proximity.core.ingest import Rejection
from services.proximity.core.lanes import LaneLimits
from services.proximity.core.state import DeviceState, PairState
from services.proximity.intake import Intake, Received

SERVICE = "proximity"
TICK_INTERVAL_S = 1.0
_state_encoder = msgspec.msgpack.Encoder()
_device_decoder = msgspec.msgpack.Decoder(DeviceState)
_pair_decoder = msgspec.msgpack.Decoder(PairState)
REDIS_START_TIMEOUT_S = 60.0
log = structlog.get_logger(SERVICE)


MAX_DETAILS_PER_LETTER = 5


def deadletters(rejected: list[tuple[Received, Rejection]]) -> list[DeadLetter]:
    """One dead letter per message, however many of its backlog items were rejected.

    A 1,000-fix backlog with one bad field in every fix must not become 1,000 copies of a
    100 KB payload in Redis; the letter says how many items failed and why.
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
            DeadLetter(
                source=SERVICE,
                reason=rejections[0].reason,
                detail=" ".join(details),
                topic=item.topic,
                payload=item.payload,
                received_ms=item.received_ms,
            )
        )
    return letters


class ProximityService:
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
        self._topics = Topics(self._settings.mqtt.topic_prefix)
        self._engine = ProximityEngine(config.orders, self._settings.proximity)
        ingest = self._settings.proximity
        self._intake = Intake(
            self._topics,
            self._engine.is_known,
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
        self._redis = connect(self._settings.redis.url, retries=0)
        self._committer = Committer(self._redis, self._keys.commit_counter(SERVICE), log)
        self._stop = threading.Event()
        mqtt = self._settings.mqtt
        endpoint = MqttEndpoint.from_url(mqtt.url)
        connection_ids = itertools.count(1)
        # The bulk reader keeps the configured client id: its persistent session is the one
        # earlier versions used, with whatever the broker queued for it.
        self._bulk = Subscriber(
            endpoint,
            mqtt.client_id,
            self._topics.subscriptions(),
            self._intake.bulk,
            keepalive_s=mqtt.keepalive_s,
            connection_ids=connection_ids,
            marker_topic=self._marker_topic(mqtt.client_id),
        )
        fast_id = f"{mqtt.client_id}-fast"
        self._fast = Subscriber(
            endpoint,
            fast_id,
            [self._topics.device("+", "event")],
            self._intake.fast,
            keepalive_s=mqtt.keepalive_s,
            connection_ids=connection_ids,
            marker_topic=self._marker_topic(fast_id),
        )
        self._readers = (self._bulk, self._fast)
        # Commands go out on a publish-only connection: paho keeps QoS 1 publishes and sends
        # them again after a reconnect.
        self._mqtt = make_client(endpoint, f"{mqtt.client_id}-cmd", persistent_session=True)
        self._mqtt.on_connect = self._on_connect
        self._mqtt.on_disconnect = self._on_disconnect
        self._health = health
        if health is not None:
            health.add_check("mqtt_subscribed", self.subscribed)
            health.add_check("redis", lambda: answers(self._redis))

    def _marker_topic(self, client_id: str) -> str:
        return f"{self._topics.prefix}/service/{client_id}/caught-up"

    # --- paho thread (command connection) --------------------------------------------------

    def _on_connect(
        self, _client: paho.Client, _u: object, _f: object, rc: object, _p: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("mqtt_connect_failed", reason=str(rc))
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
        wait_until_ready(self._redis, timeout_s=REDIS_START_TIMEOUT_S)
        self._restore()
        endpoint = MqttEndpoint.from_url(self._settings.mqtt.url)
        self._mqtt.connect_async(endpoint.host, endpoint.port, self._settings.mqtt.keepalive_s)
        self._mqtt.loop_start()
        for reader in self._readers:
            reader.start()
        self._resend_outbox()  # QoS 1: paho sends them once connected
        log.info("proximity_started", orders=len(self._config.orders))
        next_tick = 0.0
        caught_up = False
        try:
            while not stop.is_set():
                batch = self._drain(timeout_s=0.2)
                refused = self._intake.letters(self._clock())
                # Silence is judged only once the broker has handed over what it queued for us
                # while we were away; otherwise every restart would report every device silent.
                caught_up = caught_up or (
                    self.subscribed() and len(batch) < self._settings.proximity.batch_max
                )
                due = caught_up and time.monotonic() >= next_tick
                if batch or due or refused:
                    self._process(batch, tick=due, refused=refused)
                if due:
                    next_tick = time.monotonic() + TICK_INTERVAL_S
                    if self.subscribed():
                        beat(self._redis, self._keys, SERVICE, self._clock(), log)
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
            log.info("proximity_stopped")

    def _drain(self, timeout_s: float) -> list[Received]:
        return self._intake.drain(timeout_s, self._settings.proximity.batch_max)

    def _process(
        self,
        batch: list[Received],
        *,
        tick: bool,
        refused: list[tuple[Received, Rejection]] | None = None,
    ) -> None:
        max_ahead_ms = int(self._settings.proximity.max_clock_ahead_s * 1000)
        result = run_batch(
            self._engine,
            self._topics,
            batch,
            self._clock(),
            tick=tick,
            max_clock_ahead_ms=max_ahead_ms,
        )
        # One counter update per kind and batch, not per fix: label lookup is the costly part.
        for kind, count in Counter(result.uplink_kinds).items():
            metrics.MESSAGES_RECEIVED.labels(service=SERVICE, kind=kind).inc(count)
        effects, rejected = result.effects, result.rejected + (refused or [])
        self._commit(effects, rejected)
        self._publish_commands(effects)
        self._acknowledge(batch)
        self._observe(batch, effects, rejected)

    def _commit(self, effects: Effects, rejected: list[tuple[Received, Rejection]]) -> None:
        if not (
            effects.changed_devices
            or effects.changed_pairs
            or effects.signals
            or rejected
            or effects.commands
        ):
            return
        self._committer.commit(lambda pipe: self._write(pipe, effects, rejected), self._stop)

    def _write(
        self, pipe: Pipeline, effects: Effects, rejected: list[tuple[Received, Rejection]]
    ) -> None:
        keys = self._keys
        for device_id in effects.changed_devices:
            pipe.set(
                keys.device_state(device_id), _state_encoder.encode(self._engine.device(device_id))
            )
        if effects.changed_devices:
            pipe.sadd(keys.proximity_devices, *effects.changed_devices)
        for pair_key in effects.changed_pairs:
            order_id, offender, victim = pair_key
            state = self._engine.pair(pair_key)
            pipe.set(keys.pair_state(offender, order_id, victim), _state_encoder.encode(state))
        for signal in effects.signals:
            pipe.xadd(keys.gateway_inbox, {"input": encode(signal)})
        for letter in deadletters(rejected):
            add_deadletter(pipe, keys, self._settings.redis.deadletter_maxlen, letter)
        # The outbox holds exactly the commands of this batch: the previous batch's were
        # published before this commit. A crash before they go out leaves them for the restart.
        pipe.xtrim(keys.command_outbox, maxlen=0)
        for device_id, command in effects.commands:
            pipe.xadd(keys.command_outbox, {"device": device_id, "command": encode(command)})

    def _publish_commands(self, effects: Effects) -> None:
        for device_id, command in effects.commands:
            self._mqtt.publish(self._topics.device(device_id, "cmd"), encode(command), qos=1)
            metrics.COMMANDS_SENT.labels(type=type(command).__name__).inc()

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
        latency = metrics.DECISION_LATENCY.labels(service=SERVICE)
        for item in batch:
            latency.observe(max(0, done - item.received_ms) / 1000)
        for signal in effects.signals:
            metrics.SIGNALS_EMITTED.labels(kind=signal.kind, action=signal.action).inc()
            log.info(
                "signal",
                kind=signal.kind,
                action=signal.action,
                order_id=signal.order_id,
                alarm_key=signal.alarm_key,
                distance_m=signal.distance_m,
            )
        for device_id, reason in effects.ignored:
            metrics.MESSAGES_IGNORED.labels(service=SERVICE, reason=reason).inc()
            log.debug("ignored", device_id=device_id, reason=reason)
        for item, rejection in rejected:
            metrics.MESSAGES_REJECTED.labels(service=SERVICE, reason=rejection.reason).inc()
            log.warning(
                "rejected",
                reason=rejection.reason,
                detail=rejection.detail,
                device_id=rejection.device_id,
                topic=item.topic,
            )

    def _resend_outbox(self) -> None:
        """Publish the commands a crash kept from going out (a repeat is harmless: commands
        set an interval or a warning level, they do not count)."""
        for _id, fields in streams.entries(self._redis, self._keys.command_outbox):
            device_id = fields[b"device"].decode()
            self._mqtt.publish(self._topics.device(device_id, "cmd"), fields[b"command"], qos=1)

    def _restore(self) -> None:
        """Load every device and pair state this service committed before it stopped."""
        keys = self._keys
        device_ids = [d.decode() for d in streams.members(self._redis, keys.proximity_devices)]
        device_blobs = streams.values(self._redis, [keys.device_state(d) for d in device_ids])
        pair_keys = [
            keys.pair_state(order.offender_device, order.id, victim)
            for order in self._config.orders
            for victim in order.victim_devices
        ]
        pair_blobs = streams.values(self._redis, pair_keys)
        devices = [_device_decoder.decode(b) for b in device_blobs if b is not None]
        pairs = [_pair_decoder.decode(b) for b in pair_blobs if b is not None]
        self._engine.load(
            [d for d in devices if self._engine.is_known(d.device_id)],
            pairs,
        )
        log.info("state_restored", devices=len(devices), pairs=len(pairs))

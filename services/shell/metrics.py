"""Every Prometheus metric nabij exports, defined once (prefix `nabij_`).

Services import the objects from here and label them; nothing else creates metrics, so names,
labels and buckets stay consistent across services and dashboards. They register in the default
registry, which `services.shell.health.HealthServer` serves on /metrics.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

# Decisions are in-memory work plus one pipelined Redis round trip: resolve the low end.
LATENCY_BUCKETS_S: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
BATCH_SIZE_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class BatchHistogram:
    """A Prometheus histogram observed a batch of values at a time, exported like
    `prometheus_client.Histogram` (`_bucket`, `_count`, `_sum`; no `_created`).

    prometheus_client's takes one value a call, a lock and a walk of the buckets each (~3 us);
    per message on the proximity service's thread that was ~6% of a saturated process (issue 14).
    A batch's values repeat (its messages share their receipt time), so each distinct value is
    placed once, under one lock.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Iterable[str],
        buckets: Iterable[float],
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self._name, self._documentation = name, documentation
        self._labelnames = tuple(labelnames)
        self._bounds = (*buckets, float("inf"))
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], BatchHistogramChild] = {}
        registry.register(self)

    def labels(self, **labels: str) -> BatchHistogramChild:
        values = tuple(labels[name] for name in self._labelnames)
        with self._lock:
            child = self._children.get(values)
            if child is None:
                child = self._children[values] = BatchHistogramChild(self._bounds, self._lock)
            return child

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        with self._lock:
            for values, child in self._children.items():
                cumulative, running = [], 0
                for bound, count in zip(self._bounds, child.counts, strict=True):
                    running += count
                    le = floatToGoString(bound)  # type: ignore[no-untyped-call]  # untyped upstream
                    cumulative.append((le, running))
                family.add_metric(values, cumulative, child.sum)
        yield family


class BatchHistogramChild:
    """One label set's buckets (counts per bucket, not cumulative) and sum."""

    def __init__(self, bounds: tuple[float, ...], lock: threading.Lock) -> None:
        self._bounds = bounds
        self._lock = lock
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.observe_all((value,))

    def observe_all(self, values: Iterable[float]) -> None:
        """Each value counted in the first bucket whose bound it does not exceed, as
        `prometheus_client.Histogram.observe` counts it."""
        bounds, counts = self._bounds, self.counts
        with self._lock:
            for value, times in Tally(values).items():
                counts[bisect_left(bounds, value)] += times
                self.sum += value * times


MESSAGES_RECEIVED: Final = Counter(
    "nabij_messages_received",
    "Input messages received, by kind (fix, event, status, signal, request).",
    ["service", "kind"],
)
MESSAGES_REJECTED: Final = Counter(
    "nabij_messages_rejected",
    "Input messages rejected as invalid and dead-lettered, by reason.",
    ["service", "reason"],
)
MESSAGES_REFUSED: Final = Counter(
    "nabij_messages_refused",
    "Input messages refused at intake, before any parsing (unknown_topic, unknown_device, "
    "flood), by lane; each burst of them is also one dead letter.",
    ["service", "lane", "reason"],
)
INGEST_QUEUED: Final = Gauge(
    "nabij_ingest_queued",
    "Messages received and waiting for the service's thread, by lane (fast, bulk).",
    ["service", "lane"],
)
MESSAGES_IGNORED: Final = Counter(
    "nabij_messages_ignored",
    "Valid input messages with no effect (duplicate, stale, out of order), by reason.",
    ["service", "reason"],
)
SIGNALS_EMITTED: Final = Counter(
    "nabij_signals_emitted",
    "Alarm signals sent to the gateway, by alarm kind and action (raise, update, clear).",
    ["kind", "action"],
)
NOTICES: Final = Counter(
    "nabij_notices",
    "Notices appended to dispatch queues, by queue, alarm kind and notice event.",
    ["queue", "kind", "event"],
)
COMMANDS_SENT: Final = Counter(
    "nabij_commands_sent",
    "Commands published to devices, by command type.",
    ["type"],
)
COMMANDS_REFUSED: Final = Counter(
    "nabij_commands_refused_total",
    "Device commands the broker refused (MQTT 5 PUBACK >= 0x80), by reason: dropped, not retried.",
    ["reason"],
)
DECISION_LATENCY: Final = BatchHistogram(
    "nabij_decision_latency_seconds",
    "Time from the service receiving a message to having committed its batch, per message.",
    ["service"],
    buckets=LATENCY_BUCKETS_S,
)
BATCH_SIZE: Final = Histogram(
    "nabij_batch_size",
    "Input messages per processed batch.",
    ["service"],
    buckets=BATCH_SIZE_BUCKETS,
)
OPEN_ALARMS: Final = Gauge(
    "nabij_open_alarms",
    "Alarms not yet resolved, by kind.",
    ["kind"],
)
DEADLETTERS_DROPPED: Final = Counter(
    "nabij_deadletters_dropped",
    "Dead letters not stored because Redis refused or failed the write, by reason (redis_oom, "
    "redis_unavailable, redis_error); their input was still acknowledged and counted as rejected.",
    ["service", "reason"],
)
REDIS_OOM_REFUSALS: Final = Counter(
    "nabij_redis_oom_refusals",
    "Writes Redis refused for lack of memory (maxmemory reached under noeviction), by service and "
    "write (commit: retried until it lands; deadletter: dropped; probe).",
    ["service", "write"],
)
REDIS_OUT_OF_MEMORY: Final = Gauge(
    "nabij_redis_out_of_memory",
    "1 while Redis refuses this service's writes for lack of memory, else 0.",
    ["service"],
)
MQTT_REFUSED: Final = Counter(
    "nabij_mqtt_refused_total",
    "What the broker refused a nabij client, by client id and reason (connect_refused: bad or"
    " revoked credentials; subscription_refused: SUBACK failure; marker_missing: the catch-up"
    " marker never came back, so the ACL lets nothing through).",
    ["client", "reason"],
)
UNACKNOWLEDGED_ALARMS: Final = Gauge(
    "nabij_unacknowledged_alarms",
    "Open alarms nobody has acknowledged yet, by kind and priority (1 most urgent).",
    ["kind", "priority"],
)
OLDEST_UNACKNOWLEDGED_OPENED: Final = Gauge(
    "nabij_oldest_unacknowledged_alarm_opened_timestamp_seconds",
    "When the oldest unacknowledged alarm of each priority opened (Unix time on nabij's clock);"
    " its age is `time() - this`. No series for a priority with none.",
    ["priority"],
)
MQTT_CONNECTED: Final = Gauge(
    "nabij_mqtt_connected",
    "1 while this MQTT reader of nabij is connected to the broker, else 0, by client id.",
    ["client"],
)
MQTT_CONNECTIONS: Final = Counter(
    "nabij_mqtt_connections",
    "Connections an MQTT reader of nabij established, by client id: more than one is a reconnect.",
    ["client"],
)
STREAM_LENGTH: Final = Gauge(
    "nabij_stream_length",
    "Entries in a Redis stream the gateway reads or writes (gateway_inbox, human_requests,"
    " dispatch_probation, dispatch_police).",
    ["stream"],
)
CONSUMER_GROUP_PENDING: Final = Gauge(
    "nabij_consumer_group_pending",
    "Entries of an input stream delivered to the gateway's consumer group and not yet applied.",
    ["stream"],
)
CONSUMER_GROUP_LAG: Final = Gauge(
    "nabij_consumer_group_lag",
    "Entries of an input stream not yet delivered to the gateway's consumer group.",
    ["stream"],
)
READY: Final = Gauge(
    "nabij_ready",
    "1 while the service is ready (connected to MQTT and Redis, state loaded), else 0.",
    ["service"],
)

__all__ = [
    "BATCH_SIZE",
    "BATCH_SIZE_BUCKETS",
    "COMMANDS_REFUSED",
    "COMMANDS_SENT",
    "CONSUMER_GROUP_LAG",
    "CONSUMER_GROUP_PENDING",
    "DEADLETTERS_DROPPED",
    "DECISION_LATENCY",
    "INGEST_QUEUED",
    "LATENCY_BUCKETS_S",
    "MESSAGES_IGNORED",
    "MESSAGES_RECEIVED",
    "MESSAGES_REFUSED",
    "MESSAGES_REJECTED",
    "MQTT_CONNECTED",
    "MQTT_CONNECTIONS",
    "MQTT_REFUSED",
    "NOTICES",
    "OLDEST_UNACKNOWLEDGED_OPENED",
    "OPEN_ALARMS",
    "READY",
    "REDIS_OOM_REFUSALS",
    "REDIS_OUT_OF_MEMORY",
    "SIGNALS_EMITTED",
    "STREAM_LENGTH",
    "UNACKNOWLEDGED_ALARMS",
]
ORDERS_VERSION: Final = Gauge(
    "nabij_orders_version",
    "The version of the orders a service applies (see `nabij orders history`).",
    ["service"],
)
ORDERS_NOT_IN_FORCE: Final = Gauge(
    "nabij_orders_not_in_force",
    "Orders of the current version outside their validity (why: not_started, ended): they "
    "raise no alarm and their devices' messages are refused as unknown.",
    ["service", "why"],
)
ORDERS_ACTIVE: Final = Gauge(
    "nabij_orders_active",
    "Orders in force now (the proximity service watches their devices).",
    ["service"],
)
# Device time to committed decision: the device's own clock and the network are in it, so the
# buckets go on to a minute beyond the 1-50 ms that nabij's own work takes.
DEVICE_LATENCY_BUCKETS_S: Final = (*LATENCY_BUCKETS_S, 2.5, 5.0, 10.0, 30.0, 60.0)
DECISION_LATENCY_FROM_DEVICE: Final = BatchHistogram(
    "nabij_decision_latency_from_device_seconds",
    "Time from when a device measured a live fix (its own clock) to the decision on it being"
    " committed, per fix.",
    ["service"],
    buckets=DEVICE_LATENCY_BUCKETS_S,
)
DEVICE_EVENTS: Final = Counter(
    "nabij_device_events",
    "Device events accepted, by type (aware_button, strap_tamper, battery_low, ...).",
    ["type"],
)
PAIRS: Final = Gauge(
    "nabij_pairs",
    "Offender-victim pairs by ring (pre_alert, alarm) and hysteresis phase, per census round.",
    ["ring", "phase"],
)
DEVICES: Final = Gauge(
    "nabij_devices",
    "Devices in force by time since last contact (contact_age: under_1m, 1m_5m, 5m_15m, 15m_1h,"
    " over_1h, never) and presence (online: true, false), per census round.",
    ["contact_age", "online"],
)
PLATFORM_DEGRADED: Final = Gauge(
    "nabij_platform_degraded",
    "1 while nabij has told the dispatchers it cannot see devices (platform_degraded), else 0.",
    ["service"],
)
DEVICES_GROUPED: Final = Gauge(
    "nabij_devices_grouped",
    "Quiet devices covered by the open platform_degraded notice instead of alarms of their own.",
    ["service"],
)
# A person takes seconds to minutes; escalation timeouts are one to five minutes by default.
ACK_BUCKETS_S: Final = (5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0)
TIME_TO_ACKNOWLEDGE: Final = Histogram(
    "nabij_time_to_acknowledge_seconds",
    "Time from an alarm opening to its acknowledgement (or resolution without one), by priority.",
    ["priority"],
    buckets=ACK_BUCKETS_S,
)
REDIS_CONNECTED: Final = Gauge(
    "nabij_redis_connected",
    "1 while Redis answers this service's commits, 0 from a failed one until one lands.",
    ["service"],
)
REDIS_RECONNECTS: Final = Counter(
    "nabij_redis_reconnects",
    "Times this service got answers from Redis again after it had been unreachable.",
    ["service"],
)
REDIS_COMMIT_LATENCY: Final = Histogram(
    "nabij_redis_commit_latency_seconds",
    "Round trip of one committing Redis transaction (MULTI ... EXEC), per commit.",
    ["service"],
    buckets=LATENCY_BUCKETS_S,
)
DISPATCH_READERS_PENDING: Final = Gauge(
    "nabij_dispatch_readers_pending",
    "Notices of a dispatch queue delivered to a reader group (a console, `nabij tail --group`)"
    " and not yet acknowledged by it, by queue and group.",
    ["queue", "group"],
)
DISPATCH_READERS_LAG: Final = Gauge(
    "nabij_dispatch_readers_lag",
    "Notices of a dispatch queue not yet delivered to a reader group, by queue and group.",
    ["queue", "group"],
)
__all__ += [
    "ACK_BUCKETS_S",
    "DECISION_LATENCY_FROM_DEVICE",
    "DEVICES",
    "DEVICES_GROUPED",
    "DEVICE_EVENTS",
    "DEVICE_LATENCY_BUCKETS_S",
    "DISPATCH_READERS_LAG",
    "DISPATCH_READERS_PENDING",
    "ORDERS_ACTIVE",
    "ORDERS_NOT_IN_FORCE",
    "ORDERS_VERSION",
    "PAIRS",
    "PLATFORM_DEGRADED",
    "REDIS_COMMIT_LATENCY",
    "REDIS_CONNECTED",
    "REDIS_RECONNECTS",
    "TIME_TO_ACKNOWLEDGE",
]

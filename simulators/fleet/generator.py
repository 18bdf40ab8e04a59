"""The fleet's open-loop publishing loop, in one process or a few.

Device i of m (in this process) publishes its k-th fix at `t0 + (k + i/m) * interval`: the m
devices are spread evenly over the interval, so the rate is flat (m / interval per second)
whatever the fleet size. The loop wakes every few milliseconds, takes every fix that has come
due (catching up if it fell behind: open loop, the schedule never waits for the broker), steps
those devices' motion and noise as one numpy slice, formats the payloads and writes each
connection's share in one `sendall`. Fixes are stamped with their scheduled time, so `ts` stays
exact when the loop is late; how late it was is reported as lag.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from nabij.contract import Topics
from services.shell.mqtt import MqttEndpoint
from simulators.fleet.motion import FleetMotion
from simulators.fleet.plan import FleetPlan
from simulators.fleet.wire import PublishConnection, topic_field

TICK_S: Final = 0.01
# Behind schedule by more than this: the generator, not the system under test, is the limit.
BEHIND_S: Final = 1.0
PROGRESS_EVERY_S: Final = 5.0
# QoS 1 messages not yet acknowledged per connection before the loop waits for the broker.
MAX_UNACKED: Final = 50_000


@dataclass(slots=True)
class FleetStats:
    sent: int = 0
    acked: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    max_lag_s: float = 0.0
    behind_ticks: int = 0


@dataclass(slots=True)
class FleetReport:
    plan: FleetPlan
    duration_s: float
    qos: int
    processes: int
    connections: int
    stats: FleetStats
    warnings: list[str] = field(default_factory=list)

    @property
    def achieved_rate(self) -> float:
        return self.stats.sent / self.stats.wall_s if self.stats.wall_s else 0.0

    @property
    def cpu_share(self) -> float:
        """CPU seconds per wall second used by the generator: 1.0 is one core."""
        return self.stats.cpu_s / self.stats.wall_s if self.stats.wall_s else 0.0

    def __str__(self) -> str:
        s = self.stats
        lines = [
            f"fleet: {self.plan.pairs} pairs ({self.plan.devices} devices), a fix every "
            f"{self.plan.interval_s:g} s: target {self.plan.rate:,.0f} fixes/s, QoS {self.qos}, "
            f"{self.processes} process(es) x {self.connections} connection(s)",
            f"  sent {s.sent:,} fixes in {s.wall_s:.1f} s: {self.achieved_rate:,.0f} fixes/s "
            f"({self.achieved_rate / self.plan.rate:.1%} of target), acked {s.acked:,}",
            f"  generator CPU {s.cpu_s:.1f} s = {self.cpu_share:.2f} cores; "
            f"max lag {s.max_lag_s:.2f} s",
        ]
        lines.extend(f"  WARNING: {w}" for w in self.warnings)
        return "\n".join(lines)


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


class ShardGenerator:
    """The devices `i % shards == shard` of a plan, on their own connections."""

    def __init__(
        self,
        plan: FleetPlan,
        endpoint: MqttEndpoint,
        topic_prefix: str,
        *,
        shard: int = 0,
        shards: int = 1,
        qos: int = 1,
        connections: int = 1,
        boot: str = "0",
        client_prefix: str = "nabij-fleet",
    ) -> None:
        self.plan = plan
        self.indices = np.arange(shard, plan.devices, shards, dtype=np.int64)
        self.m = int(self.indices.size)
        self.motion = FleetMotion(plan, seed=plan.seed * 1000 + shard)
        self.topics = Topics(topic_prefix)
        ids = [plan.device_id(int(i)) for i in self.indices]
        self.ids = ids
        self.topic_fields = [topic_field(self.topics.device(d, "fix")) for d in ids]
        self.batt = self.motion.rng.integers(20, 101, self.m).tolist()
        self.acc = f"{self.motion.acc_m:.1f}"
        # Every device of the run shares one boot id; seq counts from 0 within it.
        self.boot = boot
        self.conns = [
            PublishConnection(endpoint, f"{client_prefix}-{shard}-{c}-{os.getpid()}", qos=qos)
            for c in range(connections)
        ]

    def run(
        self,
        duration_s: float,
        stop: threading.Event | None = None,
        on_progress: Callable[[str], None] | None = None,
    ) -> FleetStats:
        stats = FleetStats()
        step = self.plan.interval_s / self.m  # seconds between consecutive fixes of this shard
        total = math.floor(duration_s / step)
        cpu0 = _cpu_s()
        t0 = time.monotonic()
        t0_ms = time.time_ns() // 1_000_000
        next_n = 0
        next_progress = PROGRESS_EVERY_S
        while next_n < total and not (stop is not None and stop.is_set()):
            now = time.monotonic() - t0
            upto = min(total, math.floor(now / step) + 1, next_n + self.m)
            if upto <= next_n:
                # Sleep a whole tick even if a fix is due sooner: batches, not single messages.
                time.sleep(max(TICK_S, next_n * step - now))
                continue
            lag = now - next_n * step
            stats.max_lag_s = max(stats.max_lag_s, lag)
            if lag > BEHIND_S:
                stats.behind_ticks += 1
            self._publish(next_n, upto, step, t0_ms)
            next_n = upto
            self._backpressure()
            time.sleep(TICK_S)
            if on_progress is not None and now >= next_progress:
                next_progress += PROGRESS_EVERY_S
                sent = sum(c.sent for c in self.conns)
                on_progress(f"[{now:6.1f} s] {sent / now:,.0f} fixes/s, lag {lag:.2f} s")
        stats.wall_s = time.monotonic() - t0
        for conn in self.conns:
            conn.drain(timeout_s=5.0)
            stats.sent += conn.sent
            stats.acked += conn.acked
            conn.close()
        stats.cpu_s = _cpu_s() - cpu0
        return stats

    def _publish(self, first: int, upto: int, step: float, t0_ms: int) -> None:
        ns = np.arange(first, upto, dtype=np.int64)
        local = ns % self.m
        lat, lon, speed, heading = self.motion.step(self.indices[local])
        heading = np.round(heading, 1) % 360.0  # printed to 0.1 degree: 359.96 is not 360.0
        seqs = (ns // self.m).tolist()
        stamps = (t0_ms + np.round(ns * step * 1000.0)).astype(np.int64).tolist()
        n_conns = len(self.conns)
        batches: list[list[bytes]] = [[] for _ in range(n_conns)]
        ids, fields, batt, acc, boot = self.ids, self.topic_fields, self.batt, self.acc, self.boot
        for i, seq, ts, la, lo, sp, hd in zip(
            local.tolist(),
            seqs,
            stamps,
            lat.tolist(),
            lon.tolist(),
            speed.tolist(),
            heading.tolist(),
            strict=True,
        ):
            course = f',"heading":{hd:.1f}' if sp > 0 else ""
            payload = (
                f'{{"device_id":"{ids[i]}","seq":{seq},"ts":{ts},"lat":{la:.7f},'
                f'"lon":{lo:.7f},"acc":{acc},"src":"gnss","speed":{sp:.2f}{course},'
                f'"batt":{batt[i]},"boot":"{boot}"}}'
            ).encode()
            # A device always uses the same connection: its fixes stay in order.
            conn = i % n_conns
            batches[conn].append(self.conns[conn].packet(fields[i], payload))
        for conn, packets in zip(self.conns, batches, strict=True):
            if packets:
                conn.send(packets, len(packets))

    def _backpressure(self) -> None:
        for conn in self.conns:
            conn.poll()
            while conn.unacked > MAX_UNACKED:
                time.sleep(0.001)
                conn.poll()


@dataclass(frozen=True, slots=True)
class FleetJob:
    """Everything a process needs to run its share of the fleet."""

    plan: FleetPlan
    mqtt_url: str
    topic_prefix: str
    duration_s: float
    qos: int
    connections: int
    boot: str

    def generator(self, shard: int = 0, shards: int = 1) -> ShardGenerator:
        return ShardGenerator(
            self.plan,
            MqttEndpoint.from_url(self.mqtt_url),
            self.topic_prefix,
            shard=shard,
            shards=shards,
            qos=self.qos,
            connections=self.connections,
            boot=self.boot,
        )


def _worker(
    job: FleetJob,
    shard: int,
    shards: int,
    stop: threading.Event,
    results: multiprocessing.Queue[FleetStats],
) -> None:
    results.put(job.generator(shard, shards).run(job.duration_s, stop))


def run_fleet(
    plan: FleetPlan,
    mqtt_url: str,
    topic_prefix: str,
    *,
    duration_s: float,
    qos: int = 1,
    connections: int = 1,
    processes: int = 1,
    stop: threading.Event | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> FleetReport:
    """Publish the fleet's fixes for `duration_s`; several processes share the devices."""
    # A new boot id per run, as in scenarios: a later run is not a replay of this one.
    job = FleetJob(plan, mqtt_url, topic_prefix, duration_s, qos, connections, secrets.token_hex(4))
    report = FleetReport(plan, duration_s, qos, processes, connections, FleetStats())
    if processes == 1:
        report.stats = job.generator().run(duration_s, stop, on_progress)
    else:
        report.stats = _run_processes(job, processes, stop)
    _judge(report)
    return report


def _run_processes(job: FleetJob, processes: int, stop: threading.Event | None) -> FleetStats:
    context = multiprocessing.get_context("fork")
    results: multiprocessing.Queue[FleetStats] = context.Queue()
    child_stop = context.Event()
    workers = [
        context.Process(
            target=_worker, args=(job, shard, processes, child_stop, results), daemon=True
        )
        for shard in range(processes)
    ]
    for worker in workers:
        worker.start()
    total = FleetStats()
    pending = len(workers)
    while pending:
        if stop is not None and stop.is_set():
            child_stop.set()
        try:
            part = results.get(timeout=0.2)
        except queue.Empty:
            if not any(w.is_alive() for w in workers):
                break  # a worker died without reporting
            continue
        pending -= 1
        total.sent += part.sent
        total.acked += part.acked
        total.wall_s = max(total.wall_s, part.wall_s)
        total.cpu_s += part.cpu_s
        total.max_lag_s = max(total.max_lag_s, part.max_lag_s)
        total.behind_ticks += part.behind_ticks
    for worker in workers:
        worker.join(timeout=5)
    return total


def _judge(report: FleetReport) -> None:
    if report.stats.wall_s and report.achieved_rate < 0.97 * report.plan.rate:
        report.warnings.append(
            f"achieved {report.achieved_rate:,.0f} fixes/s, below the target "
            f"{report.plan.rate:,.0f}: the generator could not keep up"
        )
    if report.stats.max_lag_s > BEHIND_S:
        report.warnings.append(
            f"fell up to {report.stats.max_lag_s:.1f} s behind schedule: the generator could "
            "not keep up (try --processes, --connections or --qos 0)"
        )

"""Latency from the publish, at stepped rates: to the committed decision and to the notice.

Starts its own Mosquitto and Redis (AOF on, fsync always; `--fsync everysec` as compose.yaml
ships it) and `nabij run` (proximity and gateway; `--shards N`: N proximity shards and a
gateway, each a process, as deployed) with the orders of a fleet (`--approaching` of its pairs
shuttle to their victims: the alarm path is busy too) and of probe pairs far outside the fleet's
city. Per step the fleet generator publishes at the step's rate (open loop, QoS 1, another
process) while this process, every `step / probes` seconds, publishes one probe: a probe
offender's fix 40 m from his victim (inside the critical distance, so a priority-1
`proximity_alarm` opens at once), after a fix 1.2 km away at least `PLACED_S` before (a
plausible approach, not a GPS jump). The probe victims report from home every `HEARTBEAT_S` (a
silent victim's position is too old to judge). Measured per probe, from the wall time of its
publish:
- to the committed decision: the id (Redis server time) of the `open` signal that the proximity
  service committed to the gateway inbox, in the same transaction as the pair's state (read
  here by a blocking XREAD, served at the commit: the gateway deletes entries it applied);
- to the notice: the id of the `opened` notice in the probation queue.
Quantiles are nearest-rank over the step's probes (p99.9 of a few hundred probes is about the
maximum). The gateway deletes what it applied from its inbox: a decision it applied and deleted
between two reads here is not seen (1 in 800 in one run with a gateway of its own), so a step's
decision count may fall short of its probes; its notice count does not. The fleet's size is
fixed; a step changes its interval (rate = 2 x pairs / interval).

    .venv/bin/python -m bench.latency --rates 1000 2500 5000 7500 --duration 20
    .venv/bin/python -m bench.latency --shards 2 --fsync everysec
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import redis

from bench.pipeline import KEY_PREFIX, PREFIX, proximity
from bench.shards import shard_processes
from nabij import streams
from nabij.contract import AlarmSignal, Fix, Topics, encode, gateway_input_decoder, notice_decoder
from nabij.keys import Keys, Shard
from services.shell.mqtt import MqttEndpoint
from simulators.fleet.generator import run_fleet
from simulators.fleet.plan import FleetPlan
from simulators.fleet.wire import PublishConnection, topic_field

METRES_PER_DEG_LAT: Final = 111_200.0
# Probe pairs live north of the fleet's city, 2 km apart: no fleet device comes near.
PROBE_ORIGIN: Final = (53.20, 6.00)
WARMUP_S: Final = 1.0
# 1.16 km at the GPS-jump filter's 70 m/s takes 17 s: the probes' first fixes come before that.
FAR_M: Final = 1200.0
PLACED_S: Final = 20.0
HEARTBEAT_S: Final = 5.0


def probe_orders(count: int) -> str:
    return "".join(
        f'[[order]]\nid = "PROBE-{k}"\noffender_device = "pank-{k}"\n'
        f'victim_devices = ["pvic-{k}"]\nalarm_m = 500\n\n'
        for k in range(count)
    )


def probe_home(k: int) -> tuple[float, float]:
    return PROBE_ORIGIN[0] + k * 2000 / METRES_PER_DEG_LAT, PROBE_ORIGIN[1]


def north(home: tuple[float, float], metres: float) -> tuple[float, float]:
    return home[0] + metres / METRES_PER_DEG_LAT, home[1]


def quantiles(samples: list[float]) -> dict[str, float]:
    """p50, p99, p99.9 by nearest rank (ms); the count of samples."""
    ordered = sorted(samples)
    if not ordered:
        return {"n": 0.0}

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {"n": float(len(ordered)), "p50": rank(0.5), "p99": rank(0.99), "p99.9": rank(0.999)}


def _fleet(plan: FleetPlan, url: str, duration_s: float) -> None:
    report = run_fleet(plan, url, PREFIX, duration_s=duration_s, qos=1)
    print(f"    {report}".replace("\n", "\n    "), flush=True)


def entry_ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-")[0])


class Probes:
    """Probe pairs and the publish time of each one's close fix."""

    def __init__(self, url: str, topics: Topics, count: int) -> None:
        self.connection = PublishConnection(MqttEndpoint.from_url(url), "bench-probes", qos=1)
        self.topics = topics
        self.count = count
        self.published_ms: dict[str, int] = {}
        self._victim_seq = [0] * count
        self._beat_at = [0.0] * count

    def _send(self, device: str, fix: Fix) -> None:
        field = topic_field(self.topics.device(device, "fix"))
        self.connection.send([self.connection.packet(field, encode(fix))], 1)

    def heartbeat(self) -> None:
        """Every victim reports from home every `HEARTBEAT_S` (call often; keeps the link up).
        After the first report (all at once, `place`) each keeps her own phase, as real devices
        do, also after a pause of the harness: all of them at once every 5 s was the harness's
        own burst (420-600 fixes in one write), and the probes behind it measured that burst,
        not the fleet's rate."""
        self.connection.poll()
        now_s = time.monotonic()
        due = [k for k in range(self.count) if now_s >= self._beat_at[k]]
        if not due:
            return
        first = not any(self._victim_seq)
        now = time.time_ns() // 1_000_000
        packets = []
        for k in due:
            self._victim_seq[k] += 1
            if first:
                self._beat_at[k] = now_s + HEARTBEAT_S * (1 + k / self.count)
            while self._beat_at[k] <= now_s:  # her own phase again after a pause of the harness
                self._beat_at[k] += HEARTBEAT_S
            fix = Fix(f"pvic-{k}", self._victim_seq[k], now, *probe_home(k), 5.0)
            packets.append(
                self.connection.packet(
                    topic_field(self.topics.device(f"pvic-{k}", "fix")), encode(fix)
                )
            )
        self.connection.send(packets, len(packets))

    def place(self) -> None:
        """Every victim at home, every offender `FAR_M` north of her."""
        self.heartbeat()
        now = time.time_ns() // 1_000_000
        for k in range(self.count):
            self._send(f"pank-{k}", Fix(f"pank-{k}", 1, now, *north(probe_home(k), FAR_M), 5.0))
        deadline = time.monotonic() + PLACED_S
        while time.monotonic() < deadline:
            self.heartbeat()
            time.sleep(0.1)

    def close_in(self, k: int) -> None:
        now = time.time_ns() // 1_000_000
        self._send(f"pank-{k}", Fix(f"pank-{k}", 2, now, *north(probe_home(k), 40), 5.0))
        self.published_ms[f"PROBE-{k}"] = now


class Decisions(threading.Thread):
    """Commit times (Redis ms) of the probes' `open` signals, read as the inboxes (one a
    shard) get them."""

    def __init__(self, redis_url: str, keys: Keys, shards: int) -> None:
        super().__init__(daemon=True)
        self._store = redis.Redis.from_url(redis_url)
        self._inboxes = [
            keys.proximity(Shard(k, shards)).gateway_inbox for k in range(1, shards + 1)
        ]
        self.committed_ms: dict[str, int] = {}
        self._done = threading.Event()

    def run(self) -> None:
        last: dict[str, bytes] = dict.fromkeys(self._inboxes, b"$")
        while not self._done.is_set():
            for stream, (entry_id, fields) in streams.read_streams(self._store, last, block_ms=500):
                last[stream] = entry_id
                signal = gateway_input_decoder.decode(fields[b"input"])
                if (
                    isinstance(signal, AlarmSignal)
                    and (order_id := signal.order_id) is not None
                    and order_id.startswith("PROBE-")
                    and signal.kind == "proximity_alarm"
                    and signal.action == "open"
                ):
                    self.committed_ms.setdefault(order_id, entry_ms(entry_id))

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=5)


def collect(
    store: redis.Redis,
    keys: Keys,
    *,
    probes: Probes,
    decisions: Decisions,
    sent: dict[str, int],
    since_ms: int,
) -> dict[str, dict[str, float]]:
    """Wait for the probes' decisions and notices; latency quantiles per path (ms)."""
    noticed: dict[str, int] = {}
    deadline = time.monotonic() + 120
    while len(noticed) < len(sent) and time.monotonic() < deadline:
        probation = keys.dispatch("probation")
        for entry_id, fields in streams.entries(store, probation, min_id=f"{since_ms}-0"):
            notice = notice_decoder.decode(fields[b"notice"])
            opened = notice.kind == "proximity_alarm" and notice.event == "opened"
            if notice.order_id in sent and opened:
                noticed.setdefault(notice.order_id, entry_ms(entry_id))
        probes.heartbeat()
        time.sleep(0.5)
    decided = {o: ms for o, ms in decisions.committed_ms.items() if o in sent}
    return {
        "decision": quantiles([decided[o] - sent[o] for o in decided]),
        "notice": quantiles([noticed[o] - sent[o] for o in noticed]),
    }


@contextmanager
def nabij(orders: str, workdir: Path, shards: int, fsync: str) -> Iterator[tuple[str, str]]:
    """(MQTT URL, Redis URL) of a ready nabij: `nabij run` (`shards` 0: both services in one
    process), or `shards` proximity shards and a gateway, each its own process (the deployed
    shape: compose.yaml); Redis's AOF written with `appendfsync` `fsync`."""
    redis_config = [f"appendfsync {fsync}"]
    if shards == 0:
        with proximity(orders, workdir, command="run", redis_config=redis_config) as running:
            yield running.mqtt_url, running.redis_url
    else:
        servers = shard_processes(shards, orders, workdir, gateway=True, redis_config=redis_config)
        with servers as (url, redis_url, _, _):
            yield url, redis_url


def run(
    rates: list[float],
    duration_s: float,
    pairs: int,
    approaching: float,
    probes_per_step: int,
    *,
    shards: int = 0,
    fsync: str = "always",
) -> list[dict[str, object]]:
    """One nabij, one fleet, one step per rate; a row per step."""
    plan = FleetPlan(pairs, interval_s=1.0, approaching=approaching)
    topics, keys = Topics(PREFIX), Keys(KEY_PREFIX)
    count = probes_per_step * len(rates)
    rows: list[dict[str, object]] = []
    orders = plan.orders_toml() + "\n" + probe_orders(count)
    with (
        tempfile.TemporaryDirectory() as tmp,
        nabij(orders, Path(tmp), shards, fsync) as (mqtt_url, redis_url),
    ):
        store = redis.Redis.from_url(redis_url)
        probes = Probes(mqtt_url, topics, count)
        decisions = Decisions(redis_url, keys, max(1, shards))
        decisions.start()
        probes.place()
        context = multiprocessing.get_context("spawn")
        for step, rate in enumerate(rates):
            step_plan = FleetPlan(pairs, 2 * pairs / rate, approaching=approaching)
            since_ms = time.time_ns() // 1_000_000
            fleet = context.Process(target=_fleet, args=(step_plan, mqtt_url, duration_s))
            fleet.start()
            time.sleep(WARMUP_S)
            gap_s = (duration_s - 2 * WARMUP_S) / probes_per_step
            sent: dict[str, int] = {}
            for i in range(probes_per_step):
                k = step * probes_per_step + i
                probes.close_in(k)
                sent[f"PROBE-{k}"] = probes.published_ms[f"PROBE-{k}"]
                probes.heartbeat()
                time.sleep(gap_s)
            deadline = time.monotonic() + duration_s + 120
            while fleet.is_alive() and time.monotonic() < deadline:
                probes.heartbeat()  # the victims go on reporting, each at her own phase
                fleet.join(timeout=0.1)
            result = collect(
                store, keys, probes=probes, decisions=decisions, sent=sent, since_ms=since_ms
            )
            rows.append({"rate": rate, **result})
            print(f"  {rate:,.0f} fixes/s: {result}", flush=True)
        decisions.stop()
        probes.connection.close()
    return rows


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| fixes/s | probes | publish → decision p50 / p99 / p99.9 ms "
        "| publish → notice p50 / p99 / p99.9 ms |",
        "|---|---|---|---|",
    ]
    for row in rows:
        cells = []
        for path in ("decision", "notice"):
            q = row[path]
            assert isinstance(q, dict)
            cells.append(
                " / ".join(f"{q.get(k, float('nan')):,.0f}" for k in ("p50", "p99", "p99.9"))
            )
        n = row["decision"]["n"]  # type: ignore[index]  # a quantiles dict
        lines.append(f"| {row['rate']:,.0f} | {n:,.0f} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[1000, 2500, 5000, 7500])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per step")
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--approaching", type=float, default=0.01)
    parser.add_argument("--probes", type=int, default=200, help="probes per step")
    parser.add_argument(
        "--shards",
        type=int,
        default=0,
        help="0: `nabij run` (one process); N: N proximity shards and a gateway, each a process",
    )
    parser.add_argument(
        "--fsync",
        choices=["always", "everysec"],
        default="always",
        help="Redis's appendfsync: always (the tests' and the other benchmarks'), everysec "
        "(compose.yaml's, Redis's default)",
    )
    args = parser.parse_args(argv)
    rows = run(
        args.rates,
        args.duration,
        args.pairs,
        args.approaching,
        args.probes,
        shards=args.shards,
        fsync=args.fsync,
    )
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()

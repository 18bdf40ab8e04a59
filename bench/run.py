"""`make bench`: the issue-14 harness in one run, then the fleet generator's own benchmark.

In one run, on this machine: (1) the broker's own ceiling for the same fix payloads at QoS 1
with C clients (`bench.broker`), (2) nabij's sustained end-to-end rate with zero loss checked by
`seq` (`bench.pipeline` saturation) and its ratio to (1), the same with two shards
(`bench.shards`: whichever number of processes does best counts), latency from the publish to
the committed decision and to the notice at stepped rates (`bench.latency`: `nabij run`, then as
deployed, 1, 2 and 4 shards with a gateway, each a process), a backlog storm with presses
(`bench.storm`), memory per pair (`bench.memory`) and the tick's CPU at scale (`bench.tick`).
`--tiny` runs every part at a toy size (the integration test does, so the harness cannot rot;
its figures mean nothing).

    .venv/bin/python -m bench.run            # = make bench
    .venv/bin/python -m bench.run --tiny --only-harness
    .venv/bin/python -m bench.run --rates-only   # (1), (2) and their ratio alone
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import broker, fleet, latency, memory, pipeline, shards, storm, tick
from tests.servers import MosquittoServer

TARGET_RATIO = 0.6
"""Issue 14's target: nabij's sustained rate over the broker's C-client ceiling."""


@dataclass(frozen=True)
class Sizes:
    pairs: int
    fixes: int
    publishers: int
    rates: list[float]
    step_s: float
    fleet_pairs: int
    probes: int
    latency_shards: tuple[int, ...]
    """The stepped latency again as deployed: N proximity shards and a gateway, each a process,
    Redis fsyncing its AOF every second (compose.yaml)."""
    storm_devices: int
    backlog: int
    presses: int
    memory_pairs: int
    memory_minutes: float
    tick_pairs: tuple[int, ...]


FULL = Sizes(
    pairs=2000, fixes=100_000, publishers=2, rates=[1000, 2500, 5000, 7500], step_s=20,
    fleet_pairs=5000, probes=200, latency_shards=(1, 2, 4), storm_devices=1000, backlog=1000,
    presses=20, memory_pairs=1000, memory_minutes=17, tick_pairs=(10_000, 100_000),
)  # fmt: skip
TINY = Sizes(
    pairs=20, fixes=400, publishers=1, rates=[100], step_s=4, fleet_pairs=50, probes=3,
    latency_shards=(2,), storm_devices=4, backlog=20, presses=2, memory_pairs=5, memory_minutes=2,
    tick_pairs=(20,),
)  # fmt: skip


def ceiling(sizes: Sizes) -> float:
    messages = [p for _, p in pipeline.payloads(sizes.pairs, sizes.fixes)]
    with tempfile.TemporaryDirectory() as tmp:
        server = MosquittoServer(Path(tmp) / "mosquitto")
        server.start()
        try:
            return broker.ceiling(server.url, pipeline.PREFIX, messages, sizes.publishers)
        finally:
            server.stop()


def rates(sizes: Sizes) -> dict[str, object]:
    """(1) the broker's ceiling, (2) nabij's sustained rate, and their ratio."""
    print("== broker ceiling (C clients, QoS 1)", flush=True)
    broker_rate = ceiling(sizes)
    print(f"  {broker_rate:,.0f} msgs/s", flush=True)
    print("== nabij sustained, zero loss by seq", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        sustained = pipeline.saturate(sizes.pairs, sizes.fixes, Path(tmp))
    ratio = sustained["fixes_per_s"] / broker_rate
    print(f"  {sustained}; ratio to the broker's ceiling {ratio:.2f}", flush=True)
    # Whether the target fits this machine at all: every process's CPU a fix, times its rate.
    all_us = sum(us for name, us in sustained.items() if name.endswith("cpu_us_per_fix"))
    cores = TARGET_RATIO * broker_rate * all_us / 1e6
    print(
        f"  CPU a fix, nabij + broker + Redis + load generator: {all_us:.0f} us; at "
        f"{TARGET_RATIO} of the ceiling that needs {cores:.2f} cores of {os.cpu_count()}",
        flush=True,
    )
    print("== nabij sustained, two shards, zero loss by seq", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        sharded = shards.saturate(2, sizes.pairs, sizes.fixes, Path(tmp))
    sharded_ratio = sharded["fixes_per_s"] / broker_rate
    print(f"  {sharded}; ratio to the broker's ceiling {sharded_ratio:.2f}", flush=True)
    return {
        "broker_per_s": broker_rate,
        "sustained": sustained,
        "ratio": ratio,
        "cores_at_target": cores,
        "two_shards": sharded,
        "two_shards_ratio": sharded_ratio,
    }


def harness(sizes: Sizes) -> dict[str, object]:
    """Every part once; the figures by name."""
    figures = rates(sizes)
    print("== latency from the publish at stepped rates", flush=True)
    steps = latency.run(sizes.rates, sizes.step_s, sizes.fleet_pairs, 0.01, sizes.probes)
    print(latency.table(steps), flush=True)
    sharded_steps = {}
    for count in sizes.latency_shards:
        print(
            f"== the same as deployed (compose.yaml): {count} shard(s) and a gateway, each a"
            " process; Redis's AOF fsync every second",
            flush=True,
        )
        sharded_steps[count] = latency.run(
            *(sizes.rates, sizes.step_s, sizes.fleet_pairs, 0.01, sizes.probes),
            shards=count,
            fsync="everysec",
        )
        print(latency.table(sharded_steps[count]), flush=True)
    print("== backlog storm with presses", flush=True)
    stormed = storm.run(sizes.storm_devices, sizes.backlog, sizes.presses, 1.0)
    print(f"  {stormed}", flush=True)
    print("== memory per pair", flush=True)
    engine, core = memory.core_bytes(sizes.memory_pairs, sizes.memory_minutes)
    stored = memory.redis_bytes(engine, sizes.memory_pairs)
    print(f"  core {core:,.0f} B/pair, {stored}", flush=True)
    print("== the tick: CPU per tick, everyone reporting and in a platform outage", flush=True)
    ticks = tick.main(["--pairs", *map(str, sizes.tick_pairs)])
    return {
        **figures,
        "steps": steps,
        "sharded_steps": sharded_steps,
        "storm": stormed,
        "core_bytes_per_pair": core,
        "redis": stored,
        "tick": ticks,
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes: proves it runs")
    parser.add_argument("--only-harness", action="store_true", help="skip bench.fleet")
    parser.add_argument("--rates-only", action="store_true", help="(1) and (2) only")
    args = parser.parse_args(argv)
    sizes = TINY if args.tiny else FULL
    if args.rates_only:
        return rates(sizes)
    figures = harness(sizes)
    if not args.only_harness:
        fleet.main([])
    return figures


if __name__ == "__main__":
    main()

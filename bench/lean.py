"""CPU a fix in one proximity process's two halves, without a broker or Redis.

- core: `run_batch` (parse + engine) and the freeze after it (the device states it looked at
  encoded back, as the shell does) over `bench.pipeline`'s saturation load, batches of 500;
  `--near` puts the pairs 5.6 km apart, the load's old distance (inside the prediction's reach:
  both rings and the prediction run on every fix).
- intake: the reader's half: MQTT packets cut from 256 KB reads, delivered to the bulk lane,
  drained in batches of 2,000.

CPU time (`time.process_time`), median of `--runs`; run a build against another from its own
tree (`cd <tree> && PYTHONPATH=. python -m bench.lean`) in one sitting and compare.

    .venv/bin/python -m bench.lean
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from bench import pipeline
from nabij.config import Order, ProximitySettings
from nabij.contract import Topics
from services.proximity.core.batch import run_batch
from services.proximity.core.engine import ProximityEngine
from services.proximity.core.lanes import LaneLimits
from services.proximity.intake import Intake, Received
from services.shell.mqtt_ingest import READ_SIZE
from services.shell.mqtt_packets import PacketReader, Publish, publish, utf8

PAIRS = 2000
FIXES = 100_000
NEAR_DEG = 0.05


def core(messages: list[Received]) -> Callable[[], None]:
    orders = [
        Order.model_validate(
            {"id": f"O{i}", "offender_device": f"ank-{i}", "victim_devices": [f"vic-{i}"]}
            | {"alarm_m": 500}
        )
        for i in range(PAIRS)
    ]
    topics = Topics(pipeline.PREFIX)

    def run() -> None:
        engine = ProximityEngine(orders, ProximitySettings())
        for start in range(0, len(messages), 500):
            now = pipeline.START_TS + start // PAIRS * 1000 + 500
            run_batch(engine, topics, messages[start : start + 500], now, tick=False)
            engine.freeze()  # as the shell does after each batch (its commit writes the blobs)

    return run


def intake(stream: bytes, known: set[str]) -> Callable[[], None]:
    def run() -> None:
        clock = iter(range(pipeline.START_TS, pipeline.START_TS + 10**9))
        limits = LaneLimits(256, 20_000, 64 * 2**20, 20.0)
        lanes = Intake(
            Topics(pipeline.PREFIX), known.__contains__, lambda _device: False, limits,
            clock.__next__, report_every_ms=10_000,
        )  # fmt: skip
        lanes.open()
        reader = PacketReader()
        for start in range(0, len(stream), READ_SIZE):
            read = reader.feed(stream[start : start + READ_SIZE])
            publishes = [packet for packet in read if isinstance(packet, Publish)]
            delivery = lanes.bulk.deliver(1, publishes, True, 0)
            assert not (delivery.rest or delivery.ack_now), "the load must be admitted whole"
            while lanes.drain(0, 2000):
                pass

    return run


def us_per_fix(run: Callable[[], None], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.process_time()
        run()
        times.append(time.process_time() - started)
    return statistics.median(times) / FIXES * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--near", action="store_true", help="pairs 5.6 km apart (the old load)")
    args = parser.parse_args(argv)
    apart = NEAR_DEG if args.near else pipeline.APART_DEG
    load = pipeline.payloads(PAIRS, FIXES, apart_deg=apart)
    messages = [Received(topic, payload, 0, 1, 0, 1) for topic, payload in load]
    stream = b"".join(
        publish(utf8(topic), payload, qos=1, packet_id=n % 65_535 + 1)
        for n, (topic, payload) in enumerate(load)
    )
    known = {f"{role}-{i}" for i in range(PAIRS) for role in ("ank", "vic")}
    print(f"core: {us_per_fix(core(messages), args.runs):.1f} us/fix CPU")
    print(f"intake: {us_per_fix(intake(stream, known), args.runs):.1f} us/message CPU")


if __name__ == "__main__":
    main()

"""Junk floods through the proximity service: what they cost in Redis memory and in log volume.

Starts `nabij proximity` with its own Mosquitto (no `message_size_limit`, so nabij's own bounds
are what is measured) and Redis (AOF on), as `bench.pipeline` does. One publisher process sends
`--count` QoS 1 messages of `--size` bytes that are not JSON to a known device's fix topic, as
fast as the broker takes them. Reports the rate the service rejected them at, how much Redis's
`used_memory` grew, and what the service wrote to its log meanwhile (bytes and lines).

    .venv/bin/python -m bench.junk --count 300 --size 1048576
    .venv/bin/python -m bench.junk --count 1000000 --size 100
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import tempfile
import time
from pathlib import Path

import redis

from bench.pipeline import PREFIX, orders_toml, proximity, scrape
from nabij.contract import Topics
from services.shell.mqtt import MqttEndpoint, make_client


def junk(n: int, size: int) -> bytes:
    """`size` bytes that are not JSON, unique per `n`."""
    head = b"\xff%d " % n
    return (head + b"\x00" * size)[:size]


def publish_junk(url: str, count: int, size: int) -> None:
    endpoint = MqttEndpoint.from_url(url)
    client = make_client(endpoint, "bench-junk", persistent_session=False)
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    topic = Topics(PREFIX).device("ank-0", "fix")
    info = None
    for n in range(count):
        info = client.publish(topic, junk(n, size), qos=1)
        if n % 1000 == 999:  # keep paho's queue (and this process's memory) short
            info.wait_for_publish(timeout=120)
    if info is not None:
        info.wait_for_publish(timeout=120)
    client.loop_stop()
    client.disconnect()


def rejected(metrics: str) -> float:
    pattern = r"nabij_messages_rejected_total\{[^}]*\} ([0-9.e+]+)"
    return sum(float(m) for m in re.findall(pattern, metrics))


def flood(count: int, size: int, workdir: Path) -> dict[str, float]:
    with proximity(orders_toml(1), workdir) as running:
        store = redis.Redis.from_url(running.redis_url)
        memory_before = int(store.info("memory")["used_memory"])
        log_before = running.log.read_bytes()
        publisher = multiprocessing.Process(
            target=publish_junk, args=(running.mqtt_url, count, size)
        )
        started = time.monotonic()
        publisher.start()
        while rejected(scrape(running.metrics_port)) < count and time.monotonic() - started < 900:
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        publisher.join(timeout=60)
        time.sleep(11)  # the aggregated log writes its last summary within 10 s
        metrics = scrape(running.metrics_port)
        memory_after = int(store.info("memory")["used_memory"])
        written = running.log.read_bytes()[len(log_before) :]
        store.close()
    return {
        "rejected": rejected(metrics),
        "rejected_per_s": rejected(metrics) / elapsed,
        "redis_growth_mb": (memory_after - memory_before) / 1e6,
        "log_kb": len(written) / 1e3,
        "log_lines": written.count(b"\n"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--size", type=int, default=1024 * 1024)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        result = flood(args.count, args.size, Path(workdir))
    print(", ".join(f"{k} {v:,.1f}" for k, v in result.items()))


if __name__ == "__main__":
    main()

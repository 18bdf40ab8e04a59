"""End-to-end throughput of the proximity path: MQTT publish -> proximity -> Redis commit.

Starts its own mosquitto and redis-server (appendonly, fsync every second) on free ports, runs
`nabij proximity` as a subprocess, and has one publisher process send pre-encoded QoS 1 fixes of
N pairs as fast as the broker takes them. Reports the rate at which the service applied them
(from its own `nabij_messages_received_total`) and its decision latency quantiles (from the
histogram: receipt by the service to committed in Redis).

    .venv/bin/python -m bench.pipeline --pairs 1000 --fixes 100000
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import msgspec

from nabij.contract import Fix, Topics
from nabij.mqtt import MqttEndpoint, make_client
from tests.servers import MosquittoServer, RedisServer, free_port

NABIJ = (sys.executable, "-m", "services.cli")
PREFIX = "bench"
START_TS = 1_790_000_000_000


def orders_toml(pairs: int) -> str:
    return "".join(
        f'[[order]]\nid = "O{i}"\noffender_device = "ank-{i}"\n'
        f'victim_devices = ["vic-{i}"]\nalarm_m = 500\n\n'
        for i in range(pairs)
    )


def payloads(pairs: int, fixes: int) -> list[tuple[str, bytes]]:
    """Fixes of both devices of every pair, far apart (the common case: nothing to alarm)."""
    topics = Topics(f"{PREFIX}/v1")
    out = []
    for n in range(fixes):
        pair, round_ = n % pairs, n // pairs
        role = "ank" if (n // pairs) % 2 == 0 else "vic"
        device = f"{role}-{pair}"
        lat = 52.30 + (pair % 100) * 0.001 + (0.05 if role == "vic" else 0.0)
        fix = Fix(device, round_ + 1, START_TS + round_ * 1000, lat, 4.85, 8.0)
        out.append((topics.device(device, "fix"), msgspec.json.encode(fix)))
    return out


def publish(url: str, messages: list[tuple[str, bytes]]) -> None:
    client = make_client(MqttEndpoint.from_url(url), "bench-publisher", persistent_session=False)
    endpoint = MqttEndpoint.from_url(url)
    client.connect(endpoint.host, endpoint.port)
    client.loop_start()
    info = None
    for topic, payload in messages:
        info = client.publish(topic, payload, qos=1)
    if info is not None:
        info.wait_for_publish(timeout=120)
    client.loop_stop()
    client.disconnect()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def received(metrics: str) -> float:
    return sum(
        float(m) for m in re.findall(r"nabij_messages_received_total\{[^}]*\} ([0-9.e+]+)", metrics)
    )


def latency_quantile(metrics: str, q: float) -> float:
    """Upper bound of the histogram bucket holding quantile q (coarse, like Prometheus)."""
    buckets = [
        (float(le), float(count))
        for le, count in re.findall(
            r'nabij_decision_latency_seconds_bucket\{le="([0-9.e+-]+)",service="proximity"\} '
            r"([0-9.e+]+)",
            metrics,
        )
    ]
    total = buckets[-1][1] if buckets else 0.0
    for le, count in buckets:
        if total and count >= q * total:
            return le
    return float("inf")


def run_once(pairs: int, fixes: int, workdir: Path) -> dict[str, float]:
    mosquitto = MosquittoServer(workdir / "mosquitto")
    redis_server = RedisServer(workdir / "redis")
    mosquitto.start()
    redis_server.start()
    config = workdir / "config"
    config.mkdir()
    (config / "nabij.toml").write_text(
        f'[mqtt]\nurl = "{mosquitto.url}"\ntopic_prefix = "{PREFIX}/v1"\n'
        f'[redis]\nurl = "{redis_server.url}"\nkey_prefix = "{PREFIX}"\n'
        '[proximity]\nmax_clock_ahead_s = 86400000\n[log]\nlevel = "warning"\n'
    )
    (config / "orders.toml").write_text(orders_toml(pairs))
    port = free_port()
    service = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "proximity",
            "--config",
            str(config),
            "--metrics-port",
            str(port),
        ],
        stderr=(workdir / "proximity.log").open("wb"),
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if "nabij_ready" in scrape(port):
                    break
            except OSError:
                time.sleep(0.1)
        time.sleep(1)
        messages = payloads(pairs, fixes)
        publisher = multiprocessing.Process(target=publish, args=(mosquitto.url, messages))
        started = time.monotonic()
        publisher.start()
        while received(scrape(port)) < fixes and time.monotonic() - started < 300:
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        publisher.join(timeout=60)
        metrics = scrape(port)
        return {
            "fixes_per_s": received(metrics) / elapsed,
            "p50_ms": latency_quantile(metrics, 0.5) * 1000,
            "p99_ms": latency_quantile(metrics, 0.99) * 1000,
        }
    finally:
        service.terminate()
        service.wait(timeout=30)
        mosquitto.stop()
        redis_server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--fixes", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as workdir:
            result = run_once(args.pairs, args.fixes, Path(workdir))
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:,.1f}" for k, v in result.items()))
        results.append(result)
    print(
        "median: "
        + ", ".join(
            f"{key} {statistics.median(r[key] for r in results):,.1f}" for key in results[0]
        )
    )


if __name__ == "__main__":
    main()

"""Saturation with 1 and with N proximity shards, each its own process (`nabij proximity
--shard K/N`), on one broker and one Redis: the same pre-encoded QoS 1 fixes as
`bench.pipeline` (both devices of every pair, far apart), reported as the rate the shards
applied them at together.

Each shard subscribes to its own devices' uplinks only (docs/architecture.md), so the broker
delivers each message once; reported with the CPU a fix of the shards together and of the
broker, which shows what a shared read would cost (N deliveries and N parses of each message).

    .venv/bin/python -m bench.shards --shards 1 2 --pairs 1000 --fixes 60000 --runs 3
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

from bench.pipeline import (
    KEY_PREFIX,
    NABIJ,
    PREFIX,
    cpu_s,
    last_seqs,
    lost,
    orders_toml,
    payloads,
    publish,
    received,
    report_runs,
)
from bench.pipeline import scrape as scrape_metrics
from tests.servers import MosquittoServer, RedisServer, free_port

READY_TIMEOUT_S = 120


@contextmanager
def shard_processes(
    count: int,
    orders: str,
    workdir: Path,
    *,
    gateway: bool = False,
    redis_config: Sequence[str] = (),
) -> Iterator[tuple[str, str, list[int], list[int]]]:
    """`count` ready shard processes (and, with `gateway`, a `nabij gateway` of its own) on a
    fresh broker and Redis: (MQTT URL, Redis URL, metrics ports, process ids: the shards', the
    gateway's, then the broker's). `redis_config`: lines added to Redis's (`RedisServer`: AOF,
    fsync always)."""
    with ExitStack() as servers:
        broker = MosquittoServer(workdir / "mosquitto")
        store = RedisServer(workdir / "redis", extra_config=redis_config)
        for server in (broker, store):
            server.start()
            servers.callback(server.stop)
        config = workdir / "config"
        config.mkdir()
        (config / "nabij.toml").write_text(
            f'[mqtt]\nurl = "{broker.url}"\ntopic_prefix = "{PREFIX}"\n[redis]\n'
            f'url = "{store.url}"\nkey_prefix = "{KEY_PREFIX}"\n[log]\nlevel = "warning"\n'
        )
        (config / "orders.toml").write_text(orders)
        # (log name, command line after `nabij`): the shards, then the gateway.
        services = [
            (f"shard-{k}", ["proximity", "--shard", f"{k}/{count}"]) for k in range(1, count + 1)
        ]
        services += [("gateway", ["gateway"])] if gateway else []
        ports = [free_port() for _ in services]
        pids = []
        for (log_name, command), port in zip(services, ports, strict=True):
            process = subprocess.Popen(
                [*NABIJ, *command, "--config", str(config), "--metrics-port", str(port)],
                stderr=(workdir / f"{log_name}.log").open("wb"),
            )
            servers.callback(process.wait, timeout=30)
            servers.callback(process.terminate)
            pids.append(process.pid)
        ready = [(port, command[0]) for (_, command), port in zip(services, ports, strict=True)]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(_ready(*each) for each in ready) and time.monotonic() < deadline:
            time.sleep(0.1)
        yield broker.url, store.url, ports, [*pids, broker.pid or 0]


def _ready(port: int, service: str) -> bool:
    try:
        return f'nabij_ready{{service="{service}"}} 1.0' in scrape_metrics(port)
    except OSError:
        return False


def saturate(count: int, pairs: int, fixes: int, workdir: Path) -> dict[str, float]:
    messages = payloads(pairs, fixes)
    with shard_processes(count, orders_toml(pairs), workdir) as (url, redis_url, ports, pids):
        publisher = multiprocessing.Process(target=publish, args=(url, messages))
        cpu_before = [cpu_s(pid) for pid in pids]
        started = time.monotonic()
        publisher.start()
        applied = 0.0
        while applied < fixes and time.monotonic() - started < 300:
            time.sleep(0.05)
            applied = sum(received(scrape_metrics(port)) for port in ports)
        elapsed = time.monotonic() - started
        used = [cpu_s(pid) - before for pid, before in zip(pids, cpu_before, strict=True)]
        publisher.join(timeout=60)
        missing = lost(redis_url, last_seqs(messages), shards=count)
    # Per fix: what the shards took together, and what the broker took to deliver to them.
    return {
        "shards": count,
        "fixes_per_s": applied / elapsed,
        "shards_cpu_us_per_fix": sum(used[:-1]) / max(1.0, applied) * 1e6,
        "broker_cpu_us_per_fix": used[-1] / max(1.0, applied) * 1e6,
        "devices_short": float(missing),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--fixes", type=int, default=60_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    for count in args.shards:
        report_runs(args.runs, partial(saturate, count, args.pairs, args.fixes))


if __name__ == "__main__":
    main()

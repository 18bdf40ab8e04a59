"""What a broker crash (kill -9) loses under a steady load, and how long nabij takes to recover.

Starts its own mosquitto (the shipped secure config, persistence on, default autosave) and
redis-server, both nabij services in this process, and `--pairs` pairs of simulated firmware
(`tests.integration.steady_load`: a fix per device every 0.1 s of wall time, nabij's clock 20x).
Mid-stream Mosquitto is killed with SIGKILL, a victim presses her button while it is down, and it
is started again `--down` seconds later. Reported per run: the messages sent, the seqs nabij's
committed state never accounts for (device: seqs), and the wall time from the broker's restart
until every seq is accounted for (recovery; "never" within `--settle` seconds).

    .venv/bin/python -m bench.broker_kill --runs 3 --no-keep   # firmware trusts the PUBACK
    .venv/bin/python -m bench.broker_kill --runs 3             # firmware keeps until Committed
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import TypedDict

from bench.pipeline import orders_toml
from simulators.firmware import Behaviour
from tests.integration.stack import Stack, write_config
from tests.integration.steady_load import SteadyLoad
from tests.servers import MosquittoServer, RedisServer

STEPS = 45
KILL_AT_STEP = 15
PREFIX = "bench-kill"


class Run(TypedDict):
    sent: int
    missing: int
    which: dict[str, str]
    """Device -> the range of its seqs never accounted for."""
    recovery_s: float | None
    resent: int


def one_run(directory: Path, pairs: int, keep: bool, down_s: float, settle_s: float) -> Run:
    mosquitto = MosquittoServer(directory / "mosquitto")
    redis_server = RedisServer(directory / "redis")
    mosquitto.start()
    redis_server.start()
    config_dir = write_config(
        directory / "config",
        mqtt_url=mosquitto.open_url,
        redis_url=redis_server.url,
        prefix=PREFIX,
        orders_toml=orders_toml(pairs),
        mqtt_toml=mosquitto.service_identity_toml("proximity"),
    )
    stack = Stack(config_dir, mosquitto.url, redis_server.url, device_url=mosquitto.url_for)
    load = SteadyLoad(stack, pairs, Behaviour(keep_until_committed=keep))
    try:
        stack.start_in_process()
        load.connect()
        load.start(STEPS)
        load.wait_steps(KILL_AT_STEP)
        mosquitto.kill()
        load.press("vic-1")
        time.sleep(down_s)
        mosquitto.start()
        restarted = time.monotonic()
        recovery_s: float | None = None
        while time.monotonic() - restarted < settle_s:
            if load.wait_done() and not load.missing():
                recovery_s = time.monotonic() - restarted
                break
            time.sleep(0.05)
        missing = load.missing()
        return {
            "sent": load.sent(),
            "missing": sum(len(seqs) for seqs in missing.values()),
            "which": {d: f"{seqs[0]}-{seqs[-1]}" for d, seqs in missing.items()},
            "recovery_s": recovery_s,
            "resent": sum(f.resent for f in load.devices),
        }
    finally:
        load.close()
        stack.stop()
        mosquitto.stop()
        redis_server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--down", type=float, default=1.0, help="seconds the broker stays down")
    parser.add_argument("--settle", type=float, default=30.0)
    parser.add_argument(
        "--no-keep", dest="keep", action="store_false", help="firmware trusts the broker's PUBACK"
    )
    args = parser.parse_args()
    results = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="nabij-broker-kill-") as tmp:
            result = one_run(Path(tmp), args.pairs, args.keep, args.down, args.settle)
        results.append(result)
        print(f"run {run + 1}: {result}", flush=True)
    recovered = [r["recovery_s"] for r in results if r["recovery_s"] is not None]
    print(
        f"keep_until_committed={args.keep} pairs={args.pairs}: "
        f"median missing {statistics.median(r['missing'] for r in results)} of "
        f"{statistics.median(r['sent'] for r in results)} sent; "
        f"recovered in {len(recovered)}/{len(results)} runs"
        + (f", median {statistics.median(recovered):.2f} s after restart" if recovered else "")
    )


if __name__ == "__main__":
    main()

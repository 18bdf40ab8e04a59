"""How fast the fleet generator publishes, and what it costs: `python -m bench.fleet`.

Starts a throwaway Mosquitto on a free port (no subscriber: the broker just acknowledges), runs
`nabij simulate fleet` in this process for `--duration` seconds, a few times, and prints the
achieved rate, the PUBACKs counted (QoS 1: every fix reached the broker), the generator's CPU
seconds (`os.times()` of this process: user + system; Mosquitto is another process) and the
worst lag behind schedule, with the medians. Record results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from simulators.fleet.generator import FleetReport, run_fleet
from simulators.fleet.plan import FleetPlan
from tests.servers import MosquittoServer


def _row(label: str, reports: list[FleetReport]) -> str:
    rate = statistics.median(r.achieved_rate for r in reports)
    cpu = statistics.median(r.cpu_share for r in reports)
    lag = statistics.median(r.stats.max_lag_s for r in reports)
    acked = min(r.stats.acked / r.stats.sent if r.stats.sent else 0.0 for r in reports)
    return f"| {label} | {rate:,.0f} | {cpu:.3f} | {lag:.3f} | {acked:.1%} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    parser.add_argument("--pairs", type=int, default=300_000)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--qos", type=int, nargs="+", default=[1, 0])
    args = parser.parse_args(argv)
    plan = FleetPlan(args.pairs, args.interval)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoServer(Path(tmp) / "mosquitto")
        broker.start()
        try:
            for qos in args.qos:
                reports = []
                for run in range(args.runs):
                    report = run_fleet(
                        plan, broker.url, f"bench{run}/v1", duration_s=args.duration, qos=qos
                    )
                    print(report, flush=True)
                    reports.append(report)
                rows.append(_row(f"QoS {qos}", reports))
        finally:
            broker.stop()
    print(
        f"\n{args.pairs} pairs, a fix every {args.interval:g} s (target {plan.rate:,.0f} "
        f"fixes/s), {args.duration:g} s per run, medians of {args.runs} runs:\n"
    )
    print("| mode | fixes/s | generator cores | max lag s | acked (min) |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU per `ProximityEngine.tick` (every second in the shell, holding the event loop) at scale.

Run: `.venv/bin/python -m bench.tick` (10,000 and 100,000 pairs; `--pairs N ...` for others).
Each order is one pair (ankle monitor and victim device, 20 km apart: no alarm). Two cases:
- reporting: every device sends a fix every 60 s (spread over the minute), a tick every second
  between them; a first minute makes every device heard, the second is measured;
- outage: then no device is heard any more (the broker stays up): nabij is blind after
  `blind_after_s` (60 s) and every device is quiet and grouped after `quiet_after_s` (90 s);
  measured over the ticks after the outage opened (every device quiet: O(quiet) by design).
Figures are medians of the per-tick CPU time (`time.process_time`: the cores are shared), the
freeze after it included (the shell's: the device states the tick looked at encoded back); the
second's fixes are a batch of their own, frozen before the tick.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.orders import one_victim_orders
from nabij.config import ProximitySettings
from nabij.contract import Fix
from services.proximity.core.engine import Effects, ProximityEngine

T0 = 1_767_225_600_000
BASE = (52.0, 5.0)
MINUTE_S = 60
OUTAGE_S = 150
"""Silent seconds after the last fix: blind at 60, every device grouped from 90."""


def build(pairs: int) -> tuple[ProximityEngine, list[tuple[str, float, float]]]:
    orders = one_victim_orders(pairs)
    devices = []
    for i in range(pairs):
        lat = BASE[0] + i * 100.0 / 111_200.0
        devices += [(f"ank-{i}", lat, BASE[1]), (f"vic-{i}", lat, BASE[1] + 0.3)]
    return ProximityEngine(orders, ProximitySettings()), devices


def run(pairs: int) -> dict[str, float]:
    """Median CPU ms per tick, everyone reporting and in a platform outage."""
    engine, devices = build(pairs)
    effects = Effects()
    # Device k reports in second k % 60 of every minute.
    by_second: list[list[tuple[str, float, float]]] = [[] for _ in range(MINUTE_S)]
    for k, device in enumerate(devices):
        by_second[k % MINUTE_S].append(device)
    reporting: list[float] = []
    for second in range(2 * MINUTE_S):
        now = T0 + second * 1000
        for device_id, lat, lon in by_second[second % MINUTE_S]:
            fix = Fix(device_id, second // MINUTE_S, now - 200, lat, lon, 5.0)
            engine.apply(fix, now - 100, effects)
        engine.freeze()
        effects = Effects()  # the shell commits every batch: nothing piles up
        start = time.process_time()
        engine.tick(now, effects)
        engine.freeze()
        if second >= MINUTE_S:
            reporting.append(time.process_time() - start)
    outage: list[float] = []
    for second in range(2 * MINUTE_S, 2 * MINUTE_S + OUTAGE_S):
        effects = Effects()
        start = time.process_time()
        engine.tick(T0 + second * 1000, effects)
        engine.freeze()
        elapsed = time.process_time() - start
        if engine.platform.degraded:
            outage.append(elapsed)
    assert engine.platform.degraded and all(d.grouped for d in engine.devices()), "no outage"
    return {
        "reporting_ms": statistics.median(reporting) * 1000,
        "outage_ms": statistics.median(outage) * 1000,
    }


def main(argv: list[str] | None = None) -> dict[int, dict[str, float]]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args(argv)
    figures = {}
    for pairs in args.pairs:
        figures[pairs] = result = run(pairs)
        print(
            f"tick, {pairs:,} pairs: {result['reporting_ms']:.3f} ms CPU everyone reporting, "
            f"{result['outage_ms']:.3f} ms in a platform outage (medians)",
            flush=True,
        )
    return figures


if __name__ == "__main__":
    main()

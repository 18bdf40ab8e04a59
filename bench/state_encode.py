"""What the service pays to store a device state: CPU time to encode one, and its size.

The proximity service encodes every changed device state once per batch for its Redis commit.
Devices as in `bench.memory` (fixes 15 s apart for 17 minutes, so the history is full); the
encoding of all of them timed `--repeat` times, in CPU time (the machine is shared), min of 5.
Uses only what every version of the state has, so the same file measures an older checkout.

    .venv/bin/python -m bench.state_encode
"""

from __future__ import annotations

import argparse
import time

from bench.memory import feed
from bench.orders import one_victim_orders
from nabij.config import ProximitySettings
from services.proximity.core.engine import ProximityEngine
from services.proximity.core.state import state_encoder


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args(argv)
    orders = one_victim_orders(args.pairs)
    engine = ProximityEngine(orders, ProximitySettings())
    feed(engine, args.pairs, 17.0)
    states = [engine.device(f"{kind}-{i}") for kind in ("ank", "vic") for i in range(args.pairs)]
    runs = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(args.repeat):
            for state in states:
                state_encoder.encode(state)
        runs.append((time.process_time() - start) / (args.repeat * len(states)))
    result = {
        "encode_ns": min(runs) * 1e9,
        "bytes": sum(len(state_encoder.encode(s)) for s in states) / len(states),
    }
    print(", ".join(f"{k} {v:,.0f}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()

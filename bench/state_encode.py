"""What the service pays to store a device state: CPU time to encode and decode one, its size.

The engine encodes every device state a batch looked at once, at the batch's end, into the blob
it holds and the shell writes to Redis (`encoded_device`), and decodes a blob each time a fix
needs its device or its partner (`decoded_device`). Devices as in `bench.memory` (a fix each
`--interval` seconds for 17 minutes, so the history is full); all of them encoded, then all
their blobs decoded, `--repeat` times, in CPU time (the machine is shared), min of 5.
`encoded_device` and `decoded_device` exist since state format 6: the same file measures a
checkout from then on.

    .venv/bin/python -m bench.state_encode
    .venv/bin/python -m bench.state_encode --interval 60
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from bench.memory import INTERVAL_S, feed
from bench.orders import one_victim_orders
from nabij.config import ProximitySettings
from services.proximity.core.engine import ProximityEngine
from services.proximity.core.state import decoded_device, encoded_device


def _ns_each(work: Callable[[], object], count: int, repeat: int) -> float:
    """CPU ns of one of the `count` items `work` handles, min of 5 runs of `repeat` calls."""
    runs = []
    for _ in range(5):
        start = time.process_time()
        for _ in range(repeat):
            work()
        runs.append((time.process_time() - start) / (repeat * count))
    return min(runs) * 1e9


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--interval", type=float, default=INTERVAL_S, help="seconds between fixes")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args(argv)
    engine = ProximityEngine(one_victim_orders(args.pairs), ProximitySettings())
    feed(engine, args.pairs, 17.0, args.interval)
    ids = [f"{kind}-{i}" for kind in ("ank", "vic") for i in range(args.pairs)]
    states, buffer = [engine.device(device_id) for device_id in ids], bytearray()
    blobs = [encoded_device(state, buffer) for state in states]
    result = {
        "encode_ns": _ns_each(
            lambda: [encoded_device(state, buffer) for state in states], len(ids), args.repeat
        ),
        "decode_ns": _ns_each(lambda: list(map(decoded_device, ids, blobs)), len(ids), args.repeat),
        "bytes": sum(map(len, blobs)) / len(blobs),
    }
    print(", ".join(f"{k} {v:,.0f}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()

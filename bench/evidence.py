"""CPU cost of the evidence trail on the proximity decision path, against the path itself.

Both measured in CPU time (`time.process_time`; the two cores are shared, wall time is noisy) on
the same 60,000 pre-encoded fixes of 1,000 pairs (far apart), in batches of 500 as the shell
takes them:
- core: `run_batch` (parse, sequence, timing, pairs) per batch;
- evidence: what the shell adds per batch with the trail on: the records (`BatchRecorder`), their
  sealing into the chain (`extend`, two SHA-256 and two encodes a record, plus the chain hash),
  the stored form, and one signed checkpoint.
Redis's side (the bytes the batch's one transaction carries) is in `bench.pipeline --compare`.
`--held PAIRS`: instead, the memory the recorder holds after one fix from each of the pairs'
devices (tracemalloc; the topics parsed first, as the service's reader does): what it keeps
per device or topic, for ever.

    .venv/bin/python -m bench.evidence
    .venv/bin/python -m bench.evidence --held 50000
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
import tracemalloc

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.orders import one_victim_orders
from bench.pipeline import PREFIX, START_TS, orders_toml, payloads
from nabij.config import validate_orders
from nabij.contract import Topics
from nabij.evidence.chain import ChainHead, Signer, extend
from nabij.settings import ProximitySettings
from services.proximity.core.batch import run_batch
from services.proximity.core.effects import Effects
from services.proximity.core.engine import ProximityEngine
from services.proximity.evidence import BatchRecorder
from services.proximity.intake import Received

PAIRS = 1000
FIXES = 60_000
BATCH = 500
RUNS = 5


def batches() -> list[list[Received]]:
    items = [
        Received(topic, payload, mid, 1, START_TS + mid, 1)
        for mid, (topic, payload) in enumerate(payloads(PAIRS, FIXES))
    ]
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


def one_run() -> tuple[float, float]:
    """CPU us per fix: (core, evidence)."""
    import tomllib

    orders = validate_orders(tomllib.loads(orders_toml(PAIRS))["order"], "bench")
    engine = ProximityEngine(orders, ProximitySettings())
    recorder = BatchRecorder(Topics(PREFIX), engine.orders_of)
    topics = Topics(PREFIX)
    signer = Signer.of(Ed25519PrivateKey.generate())
    head = ChainHead()
    core_s = evidence_s = 0.0
    for batch in batches():
        now = batch[-1].received_ms
        start = time.process_time()
        result = run_batch(engine, topics, batch, now, tick=False)
        middle = time.process_time()
        entries = recorder.entries(result.accepted, result.effects, now)
        nonces = os.urandom(16 * len(entries))
        sealed, head = extend(
            "proximity", head, entries, [nonces[i : i + 16] for i in range(0, len(nonces), 16)]
        )
        _stored = {r.seq: r.stored() for r in sealed}
        signer.checkpoint("proximity", head, now)
        end = time.process_time()
        core_s += middle - start
        evidence_s += end - middle
    return core_s * 1e6 / FIXES, evidence_s * 1e6 / FIXES


def held_bytes(pairs: int) -> float:
    """Bytes a pair the recorder holds after a fix from each device (the engine it asks which
    orders a device is in built before)."""
    engine = ProximityEngine(one_victim_orders(pairs), ProximitySettings())
    topics = Topics(PREFIX)
    recorder = BatchRecorder(topics, engine.orders_of)
    items = [
        Received(topics.device(device, "fix"), b"{}", 0, 1, START_TS, 1)
        for i in range(pairs)
        for device in (f"ank-{i}", f"vic-{i}")
    ]
    for item in items:
        topics.parse(item.topic)  # the reader has parsed every message's topic before
    gc.collect()
    tracemalloc.start()
    for start in range(0, len(items), BATCH):
        recorder.entries(items[start : start + BATCH], Effects(), START_TS)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return held / pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--held", type=int, metavar="PAIRS", help="memory held, not CPU")
    args = parser.parse_args(argv)
    if args.held:
        print(f"held after a fix a device: {held_bytes(args.held):,.0f} bytes a pair")
        return
    runs = [one_run() for _ in range(RUNS)]
    for i, (core, evidence) in enumerate(runs, start=1):
        print(f"run {i}: core {core:.2f} us/fix, evidence {evidence:.2f} us/fix")
    core = statistics.median(r[0] for r in runs)
    evidence = statistics.median(r[1] for r in runs)
    print(f"median: core {core:.2f} us/fix, evidence {evidence:.2f} us/fix")
    print(f"evidence / core: {evidence / core:.2f}")


if __name__ == "__main__":
    main()

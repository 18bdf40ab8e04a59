"""CPU cost of the evidence trail on the proximity decision path, against the path itself.

Both measured in CPU time (`time.process_time`; the two cores are shared, wall time is noisy) on
the same 60,000 pre-encoded fixes of 1,000 pairs (far apart), in batches of 500 as the shell
takes them:
- core: `run_batch` (parse, sequence, timing, pairs) per batch;
- evidence: what the shell adds per batch with the trail on: the records (`BatchRecorder`), their
  sealing into the chain (`extend`, two SHA-256 and two encodes a record, plus the chain hash),
  the stored form, and one signed checkpoint.
Redis's side (the bytes the batch's one transaction carries) is in `bench.pipeline --compare`.

    .venv/bin/python -m bench.evidence
"""

from __future__ import annotations

import os
import statistics
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.pipeline import PREFIX, START_TS, orders_toml, payloads
from nabij.config import validate_orders
from nabij.contract import Topics
from nabij.evidence.chain import ChainHead, Signer, extend
from nabij.settings import ProximitySettings
from services.proximity.core.batch import run_batch
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
    recorder = BatchRecorder(Topics(PREFIX), orders)
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


def main() -> None:
    runs = [one_run() for _ in range(RUNS)]
    for i, (core, evidence) in enumerate(runs, start=1):
        print(f"run {i}: core {core:.2f} us/fix, evidence {evidence:.2f} us/fix")
    core = statistics.median(r[0] for r in runs)
    evidence = statistics.median(r[1] for r in runs)
    print(f"median: core {core:.2f} us/fix, evidence {evidence:.2f} us/fix")
    print(f"evidence / core: {evidence / core:.2f}")


if __name__ == "__main__":
    main()

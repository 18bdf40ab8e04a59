"""The garbage collector in a service that keeps a large state for a long time.

CPython's full collection walks every tracked object. Measured at 5,000 pairs (10,000 devices)
it took ~100 ms, a few times a minute under load, and every fix and press waiting behind it
waited that long: it was most of the p99 from publish to decision (docs/benchmarks.md,
"Latency"). Two things keep it short:
- the state that grows with the shard holds no reference cycles, so its structs are not tracked
  at all (`gc=False` on `Position`, `DeviceState`, `PairState`, the lanes' `Allowance`, ...);
- what is built once and then lives long (modules, orders, the engine's index of pairs, the
  state restored at start; in the gateway its book of alarms) is moved to the permanent
  generation, which collections skip (`settle`, at start and when the orders change).
Freezing is safe because the engine and the gateway's book are acyclic
(`tests/proximity/test_heap.py`, `tests/gateway/test_heap.py`): frozen objects that are dropped
later are still freed by their reference counts."""

from __future__ import annotations

import gc


def settle() -> None:
    """After building what lives long: collect what is garbage now, then freeze the rest."""
    gc.collect()
    gc.freeze()

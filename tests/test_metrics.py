"""services.shell.metrics.BatchHistogram: what prometheus_client's Histogram would export."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from services.shell.metrics import LATENCY_BUCKETS_S, BatchHistogram

_VALUE = st.sampled_from([0.0, 0.001, 0.0015, 0.25, 0.3, 1.0, 7.0]) | st.floats(0, 100)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample but `_created` (BatchHistogram has none), by name and labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


@given(batches=st.lists(st.lists(_VALUE, max_size=30), max_size=5))
def test_a_batch_histogram_exports_what_a_histogram_observed_one_by_one_would(
    batches: list[list[float]],
) -> None:
    """Same buckets (a value on a bound counts in that bound's bucket) and count, and the same
    sum but for rounding (a repeated value is added once, multiplied), for values observed a
    batch at a time as for the same values observed one at a time."""
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    one_by_one = Histogram("lat", "help", ["service"], buckets=LATENCY_BUCKETS_S, registry=theirs)
    batched = BatchHistogram("lat", "help", ["service"], LATENCY_BUCKETS_S, registry=ours)
    theirs_p, ours_p = one_by_one.labels(service="p"), batched.labels(service="p")
    for batch in batches:
        for value in batch:
            theirs_p.observe(value)
        ours_p.observe_all(iter(batch))
    expected, exported = _samples(theirs), _samples(ours)
    total = ("lat_sum", (("service", "p"),))
    assert math.isclose(exported.pop(total), expected.pop(total))
    assert exported == expected

"""Indoor network fallback (wifi, cell): honest accuracy, correlation, ranges, reproducibility."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest

from simulators.noise import NoiseParams
from simulators.positioning import (
    FALLBACK_ACC_M,
    FALLBACK_CORRELATION_S,
    NetworkFallback,
    Reading,
    Receiver,
)


def _stays(src: str, seed: int, stays: int, per_stay: int, dt: float) -> list[list[Reading]]:
    fallback = NetworkFallback(src, seed)  # type: ignore[arg-type]  # a FallbackSource
    out = []
    t = 0.0
    for _ in range(stays):
        fallback.begin(t)
        stay = []
        for _ in range(per_stay):
            stay.append(fallback.sample(t))
            t += dt
        out.append(stay)
    return out


@pytest.mark.parametrize("src", ["wifi", "cell"])
def test_reported_acc_holds_the_real_error_68_percent_of_the_time(src: str) -> None:
    """Over many stays indoors ~68% of real errors are within the reported `acc`, and `acc`
    stays within the source's documented range (wifi 20-50 m, cell 300-1500 m)."""
    readings = [r for stay in _stays(src, 1, 2_000, 20, 30.0) for r in stay]
    within = sum(r.error_m <= r.acc_m for r in readings) / len(readings)
    assert within == pytest.approx(0.68, abs=0.03)
    low, high = FALLBACK_ACC_M[src]  # type: ignore[index]  # a FallbackSource
    accs = [r.acc_m for r in readings]
    assert low <= min(accs) and max(accs) <= high
    assert statistics.fmean(accs) == pytest.approx((low + high) / 2, rel=0.05)
    assert {r.src for r in readings} == {src}


@pytest.mark.parametrize("src", ["wifi", "cell"])
def test_network_error_is_correlated_within_a_stay(src: str) -> None:
    """Within a stay the normalised error has lag-1 correlation exp(-dt / correlation_s)."""
    dt = 30.0
    stays = _stays(src, 2, 400, 60, dt)
    pairs = [
        (a.east_m / a.acc_m, b.east_m / b.acc_m)
        for stay in stays
        for a, b in itertools.pairwise(stay)
    ]
    xs, ys = zip(*pairs, strict=True)
    assert statistics.correlation(xs, ys) == pytest.approx(
        math.exp(-dt / FALLBACK_CORRELATION_S[src]),
        abs=0.03,  # type: ignore[index]  # as above
    )


def test_receiver_uses_gnss_outdoors_fallback_indoors_and_nothing_without_either() -> None:
    """The sky decides the source; `none` yields no reading; same seed, same readings."""

    def readings(seed: int) -> list[Reading | None]:
        receiver = Receiver(NoiseParams(sigma_m=3.0), seed)
        skies = ["open", "wifi", "wifi", "cell", "none", "open"]
        return [receiver.sample(t * 30.0, sky) for t, sky in enumerate(skies)]  # type: ignore[arg-type]  # Sky literals

    first = readings(7)
    assert [r.src if r else None for r in first] == ["gnss", "wifi", "wifi", "cell", None, "gnss"]
    assert first[1] is not None and first[2] is not None and first[1].acc_m == first[2].acc_m
    assert first == readings(7) != readings(8)

"""The GNSS error model: honest accuracy, configured correlation, jumps, reproducibility."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest

from simulators.noise import ACC_PER_SIGMA, GnssNoise, NoiseParams, NoiseSample, derive_seed


def _run(params: NoiseParams, seed: int, n: int, dt: float) -> list[NoiseSample]:
    noise = GnssNoise(params, seed)
    return [noise.sample(i * dt) for i in range(n)]


def _lag1(xs: list[float]) -> float:
    mean = statistics.fmean(xs)
    num = sum((a - mean) * (b - mean) for a, b in itertools.pairwise(xs))
    den = sum((a - mean) ** 2 for a in xs)
    return num / den


def test_reported_accuracy_holds_the_true_error_68_percent_of_the_time() -> None:
    """Over a long seeded run ~68% of the real errors fall within the reported `acc`."""
    samples = _run(NoiseParams(sigma_m=4.0, correlation_s=30.0), seed=1, n=40_000, dt=5.0)
    within = sum(s.error_m <= s.acc_m for s in samples) / len(samples)
    assert within == pytest.approx(0.68, abs=0.03)
    assert samples[0].acc_m == pytest.approx(4.0 * ACC_PER_SIGMA)


def test_each_axis_has_the_configured_sigma_and_lag1_autocorrelation() -> None:
    """Per axis the error is Gauss-Markov: deviation sigma, lag-1 correlation exp(-dt/tau)."""
    dt, tau = 10.0, 60.0
    samples = _run(NoiseParams(sigma_m=5.0, correlation_s=tau), seed=2, n=40_000, dt=dt)
    for axis in ([s.east_m for s in samples], [s.north_m for s in samples]):
        assert statistics.pstdev(axis) == pytest.approx(5.0, rel=0.06)
        assert _lag1(axis) == pytest.approx(math.exp(-dt / tau), abs=0.02)


def test_same_seed_same_errors_other_seed_other_errors() -> None:
    """A seeded run is reproducible; a different seed gives a different sequence."""
    params = NoiseParams(sigma_m=3.0, jump_rate_per_h=30.0)
    assert _run(params, 5, 500, 7.0) == _run(params, 5, 500, 7.0)
    assert _run(params, 5, 500, 7.0) != _run(params, 6, 500, 7.0)
    assert derive_seed(7, "ank-1") == derive_seed(7, "ank-1") != derive_seed(7, "ank-2")


def test_sampling_twice_at_one_instant_gives_the_same_error() -> None:
    """An event and a fix at the same moment carry the same measured position."""
    noise = GnssNoise(NoiseParams(sigma_m=4.0), seed=3)
    noise.sample(0.0)
    first = noise.sample(12.0)
    assert noise.sample(12.0) == first


def test_noise_refuses_to_go_back_in_time() -> None:
    """Sampling backwards is a scheduling bug, reported loudly rather than hidden."""
    noise = GnssNoise(NoiseParams(), seed=4)
    noise.sample(10.0)
    with pytest.raises(ValueError, match="backwards"):
        noise.sample(9.0)


def test_multipath_jumps_arrive_at_the_configured_rate_without_raising_acc() -> None:
    """Jumps are gross errors the receiver does not see: far outside acc, acc unchanged."""
    params = NoiseParams(sigma_m=3.0, jump_rate_per_h=12.0, jump_m=150.0, jump_duration_s=1.0)
    samples = _run(params, seed=8, n=36_000, dt=10.0)  # 100 hours
    jumps = [s for s in samples if s.jumping]
    assert 900 <= len(jumps) <= 1500  # 1200 expected
    assert all(s.error_m > 50.0 and s.acc_m == samples[0].acc_m for s in jumps)
    quiet = _run(NoiseParams(sigma_m=3.0), seed=8, n=5_000, dt=10.0)
    assert not any(s.jumping for s in quiet)


def test_invalid_parameters_are_rejected() -> None:
    """A non-positive correlation time or negative sigma cannot describe a receiver."""
    with pytest.raises(ValueError):
        NoiseParams(correlation_s=0)
    with pytest.raises(ValueError):
        NoiseParams(sigma_m=-1)

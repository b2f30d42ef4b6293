"""Confidence intervals: Wilson score closed form and the seeded percentile bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproof.errors import OptionError
from edgeproof.methods.stats import bootstrap_interval, wilson_bounds, wilson_interval

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def test_wilson_interval_matches_hand_computed_8_of_10() -> None:
    # p = 0.8, z² = 3.8415: centre = (0.8 + z²/20) / (1 + z²/10) = 0.71674,
    # half = z·sqrt(0.016 + z²/400) / (1 + z²/10) = 0.22658.
    iv = wilson_interval(8, 10)
    assert iv.low == pytest.approx(0.49016, abs=1e-5)
    assert iv.high == pytest.approx(0.94332, abs=1e-5)
    assert (iv.level, iv.method) == (0.95, "wilson")


def test_wilson_interval_at_zero_and_all_successes_has_closed_ends() -> None:
    z2 = Z95**2
    none = wilson_interval(0, 10)
    assert none.low == 0.0
    assert none.high == pytest.approx(z2 / (10 + z2), abs=1e-12)  # 0.27753
    every = wilson_interval(10, 10)
    assert every.high == 1.0
    assert every.low == pytest.approx(10 / (10 + z2), abs=1e-12)  # 0.72247


def test_wilson_interval_with_no_trials_is_the_whole_unit_interval() -> None:
    iv = wilson_interval(0, 0)
    assert (iv.low, iv.high) == (0.0, 1.0)


def test_wilson_interval_widens_with_level() -> None:
    i90 = wilson_interval(30, 50, 0.90)
    i99 = wilson_interval(30, 50, 0.99)
    assert i99.low < i90.low and i99.high > i90.high


def test_wilson_bounds_vectorised_equals_scalar() -> None:
    k = np.array([0, 3, 7, 20])
    n = np.array([5, 9, 7, 40])
    low, high = wilson_bounds(k, n)
    for i in range(k.size):
        iv = wilson_interval(int(k[i]), int(n[i]))
        assert (low[i], high[i]) == pytest.approx((iv.low, iv.high), abs=1e-15)


def test_wilson_rejects_bad_level_naming_the_option() -> None:
    with pytest.raises(OptionError, match=r"level: confidence level 1.5 is not in \(0, 1\)"):
        wilson_interval(1, 2, 1.5)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5000), frac=st.floats(0, 1))
def test_wilson_interval_contains_estimate_and_stays_in_unit_interval(n: int, frac: float) -> None:
    k = round(frac * n)
    iv = wilson_interval(k, n)
    assert 0.0 <= iv.low <= k / n <= iv.high <= 1.0


def test_bootstrap_interval_of_mean_matches_normal_theory_width() -> None:
    x = np.random.default_rng(1).normal(size=2000)
    iv = bootstrap_interval(lambda idx: x[idx].mean(axis=1), x.size, resamples=400, seed=3)
    expected_half = Z95 * x.std(ddof=1) / math.sqrt(x.size)  # ≈ 0.0438
    assert iv.low < x.mean() < iv.high
    assert (iv.high - iv.low) / 2 == pytest.approx(expected_half, rel=0.2)
    assert iv.method == "bootstrap-percentile-400"


def test_bootstrap_interval_is_reproducible_for_a_seed_and_varies_across_seeds() -> None:
    x = np.random.default_rng(2).exponential(size=300)

    def stat(idx: np.ndarray) -> np.ndarray:
        return np.asarray(x[idx].mean(axis=1))

    a = bootstrap_interval(stat, x.size, resamples=100, seed=7)
    b = bootstrap_interval(stat, x.size, resamples=100, seed=7)
    c = bootstrap_interval(stat, x.size, resamples=100, seed=8)
    assert a == b
    assert a != c


def test_bootstrap_interval_rejects_too_few_resamples() -> None:
    with pytest.raises(OptionError, match="resamples: 1 bootstrap resamples are too few"):
        bootstrap_interval(lambda idx: idx.mean(axis=1), 10, resamples=1)

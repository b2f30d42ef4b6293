"""The exact paired interval of an accuracy drop (McNemar) and the records it needs, against
statsmodels' Clopper-Pearson interval and exact McNemar test."""

from __future__ import annotations

import pytest

from edgeproof.methods.stats import (
    clopper_pearson_interval,
    paired_drop_interval,
    records_to_resolve,
)

sm_proportion = pytest.importorskip(
    "statsmodels.stats.proportion", reason="statsmodels (a test extra) is not installed"
)
sm_tables = pytest.importorskip("statsmodels.stats.contingency_tables")

CASES = [(0, 0), (0, 5), (5, 0), (1, 1), (3, 2), (6, 2), (12, 3), (40, 25), (7, 19), (100, 80)]


@pytest.mark.parametrize(("k", "n"), [(0, 1), (0, 12), (3, 12), (12, 12), (57, 284), (1, 1000)])
@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
def test_clopper_pearson_matches_statsmodels_beta(k: int, n: int, level: float) -> None:
    low, high = sm_proportion.proportion_confint(k, n, alpha=1 - level, method="beta")
    iv = clopper_pearson_interval(k, n, level)
    assert iv.low == pytest.approx(low, abs=1e-12)
    assert iv.high == pytest.approx(high, abs=1e-12)


@pytest.mark.parametrize(("n10", "n01"), CASES)
def test_paired_drop_interval_is_clopper_pearson_on_the_discordant_pairs(
    n10: int, n01: int
) -> None:
    n = 300
    iv = paired_drop_interval(n10, n01, n)
    m = n10 + n01
    assert iv.low <= (n10 - n01) / n <= iv.high
    if m == 0:
        assert (iv.low, iv.high) == (0.0, 0.0)
        return
    lo, hi = sm_proportion.proportion_confint(n10, m, alpha=0.05, method="beta")
    assert iv.low == pytest.approx(m / n * (2 * lo - 1), abs=1e-12)
    assert iv.high == pytest.approx(m / n * (2 * hi - 1), abs=1e-12)
    assert (iv.level, iv.method) == (0.95, "exact-mcnemar")


@pytest.mark.parametrize(("n10", "n01"), [c for c in CASES if sum(c) > 0])
def test_the_interval_excludes_no_drop_exactly_when_exact_mcnemar_rejects(
    n10: int, n01: int
) -> None:
    table = [[50, n10], [n01, 50]]  # concordant cells do not enter the exact test
    p = sm_tables.mcnemar(table, exact=True).pvalue
    iv = paired_drop_interval(n10, n01, 100 + n10 + n01)
    excludes_zero = iv.low > 0 or iv.high < 0
    assert excludes_zero == (p < 0.05)


def test_records_to_resolve_is_the_smallest_count_that_meets_the_bound() -> None:
    n10, n01, n = 3, 2, 284  # the case: 0.35 points observed, a 1 % budget
    assert paired_drop_interval(n10, n01, n).high > 0.01
    need = records_to_resolve(n10, n01, n, 0.01)
    assert need is not None and need > n

    def upper(big_n: int) -> float:
        a, b = round(n10 * big_n / n), round(n01 * big_n / n)
        return paired_drop_interval(a, b, big_n).high

    assert upper(need) <= 0.01 < upper(need - 1)


def test_records_to_resolve_says_none_when_the_observed_drop_is_over_the_bound() -> None:
    assert records_to_resolve(6, 2, 300, 0.01) is None  # 1.33 points observed
    assert records_to_resolve(0, 0, 300, 0.01) == 300  # no disagreement: met already

"""Confidence intervals for the estimates checks report.

* :func:`wilson_interval` — the Wilson score interval for a binomial proportion (Wilson 1927;
  the closed form in Agresti & Coull 1998, eq. 2). Unlike the normal ("Wald") interval it stays
  inside ``[0, 1]`` and keeps its coverage for proportions near 0 or 1 and for small ``n``.
* :func:`wilson_bounds` — the same, vectorised over arrays of counts.
* :func:`bootstrap_interval` — the percentile bootstrap (Efron & Tibshirani 1993, ch. 13) of a
  statistic of ``n`` resampled records, seeded, with the resamples drawn all at once.
* :func:`clopper_pearson_interval` — the exact (Clopper & Pearson 1934) two-sided interval of a
  binomial proportion: statsmodels' ``proportion_confint(k, n, method="beta")``.
* :func:`paired_drop_interval` — the paired interval of an accuracy drop between two models
  scored on the same records, exact conditional on the discordant pairs (McNemar 1947), and
  :func:`records_to_resolve`, how many records that interval needs to fall within a bound.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import betaincinv
from scipy.stats import norm

from edgeproof.errors import OptionError
from edgeproof.results import Interval

__all__ = [
    "bootstrap_indices",
    "bootstrap_interval",
    "clopper_pearson_interval",
    "paired_drop_interval",
    "records_to_resolve",
    "wilson_bounds",
    "wilson_interval",
]


def _z(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise OptionError("level", f"confidence level {level} is not in (0, 1)", "use e.g. 0.95")
    return float(norm.ppf(0.5 + level / 2.0))


def wilson_bounds(
    k: np.ndarray, n: np.ndarray, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score bounds for arrays of successes ``k`` out of ``n`` trials (elementwise).

    ``low, high = (p̂ + z²/2n ∓ z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)`` with ``p̂ = k/n`` and
    ``z`` the two-sided normal quantile of ``level``. Where ``n == 0`` nothing is known and the
    interval is ``[0, 1]``.
    """
    z = _z(level)
    k_arr = np.asarray(k, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    if np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise ValueError("wilson_bounds: need 0 <= k <= n")
    safe_n = np.where(n_arr > 0, n_arr, 1.0)
    p = k_arr / safe_n
    z2 = z * z
    denom = 1.0 + z2 / safe_n
    centre = (p + z2 / (2.0 * safe_n)) / denom
    half = z * np.sqrt(p * (1.0 - p) / safe_n + z2 / (4.0 * safe_n * safe_n)) / denom
    low = np.where(n_arr > 0, np.clip(centre - half, 0.0, 1.0), 0.0)
    high = np.where(n_arr > 0, np.clip(centre + half, 0.0, 1.0), 1.0)
    # Exact at the ends: k == 0 gives low 0, k == n gives high 1 (remove rounding residue).
    low = np.where(k_arr == 0, 0.0, low)
    high = np.where(k_arr == n_arr, 1.0, high)
    return low, high


def wilson_interval(k: int, n: int, level: float = 0.95) -> Interval:
    """Wilson score interval for ``k`` successes in ``n`` trials at confidence ``level``.

    >>> iv = wilson_interval(8, 10)
    >>> round(iv.low, 4), round(iv.high, 4)
    (0.4902, 0.9433)
    """
    low, high = wilson_bounds(np.asarray([k]), np.asarray([n]), level)
    return Interval(float(low[0]), float(high[0]), level=level, method="wilson")


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """``(resamples, n)`` indices drawn with replacement from ``range(n)``, seeded."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(resamples, n))


def bootstrap_interval(
    statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of a statistic of ``n`` records.

    ``statistic`` receives an index array of shape ``(resamples, n)`` (each row one resample of
    record indices) and returns the statistic of each resample, shape ``(resamples,)`` — so it can
    be vectorised over resamples. The interval is the ``(1−level)/2`` and ``(1+level)/2``
    percentiles of those values (linear interpolation).
    """
    _z(level)
    if n <= 0:
        raise ValueError("bootstrap_interval: need at least one record")
    if resamples < 2:
        raise OptionError(
            "resamples", f"{resamples} bootstrap resamples are too few", "use at least 100"
        )
    idx = bootstrap_indices(n, resamples, seed)
    values = np.asarray(statistic(idx), dtype=np.float64).reshape(-1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return Interval(
        float(low), float(high), level=level, method=f"bootstrap-percentile-{resamples}"
    )


def clopper_pearson_interval(k: int, n: int, level: float = 0.95) -> Interval:
    """Exact two-sided Clopper–Pearson interval of ``k`` successes in ``n`` trials.

    ``[Beta⁻¹(α/2; k, n−k+1), Beta⁻¹(1−α/2; k+1, n−k)]`` with ``α = 1 − level``, the low end 0
    where ``k = 0`` and the high end 1 where ``k = n`` (Clopper & Pearson 1934); statsmodels'
    ``proportion_confint(k, n, alpha=1-level, method="beta")`` (tested). ``n = 0``: ``[0, 1]``.
    """
    _z(level)
    if not 0 <= k <= n:
        raise ValueError("clopper_pearson_interval: need 0 <= k <= n")
    if n == 0:
        return Interval(0.0, 1.0, level=level, method="clopper-pearson")
    a = (1.0 - level) / 2.0
    low = 0.0 if k == 0 else float(betaincinv(k, n - k + 1, a))
    high = 1.0 if k == n else float(betaincinv(k + 1, n - k, 1.0 - a))
    return Interval(low, high, level=level, method="clopper-pearson")


def paired_drop_interval(n10: int, n01: int, n: int, level: float = 0.95) -> Interval:
    """Interval of the accuracy drop ``Δ = acc_A − acc_B`` of two classifiers scored on the
    same ``n`` records, exact conditional on the discordant pairs.

    ``n10``: records A gets right and B wrong; ``n01``: the reverse; ``m = n10 + n01``. Records
    both get right or both wrong say nothing about the difference (McNemar 1947). Given ``m``,
    ``n10 ~ Binomial(m, π)`` with ``π = p10 / (p10 + p01)``, and ``Δ = p10 − p01 = (m/n)(2π − 1)``
    when the discordance rate is taken as observed. The interval is the exact two-sided
    Clopper–Pearson interval ``[π_L, π_U]`` of ``n10`` out of ``m`` at ``level`` mapped through
    ``(m/n)(2π − 1)``: the interval dual to the exact (conditional, binomial) McNemar test —
    it excludes 0 exactly when statsmodels' ``mcnemar(table, exact=True)`` p-value is below
    ``1 − level`` (tested). The variant is the exact conditional one (Fagerland, Lydersen &
    Laake 2013, BMC Med. Res. Methodol. 13:91, discuss it and the alternatives): it is
    conditional on ``m``, so two models that disagree on no record get ``[0, 0]``.

    >>> iv = paired_drop_interval(6, 2, 300)
    >>> round(iv.low, 4), round(iv.high, 4)
    (-0.008, 0.025)
    """
    if min(n10, n01) < 0 or n10 + n01 > n:
        raise ValueError("paired_drop_interval: need n10, n01 >= 0 and n10 + n01 <= n")
    m = n10 + n01
    if m == 0:
        return Interval(0.0, 0.0, level=level, method="exact-mcnemar")
    pi = clopper_pearson_interval(n10, m, level)
    scale = m / n
    return Interval(
        scale * (2.0 * pi.low - 1.0),
        scale * (2.0 * pi.high - 1.0),
        level=level,
        method="exact-mcnemar",
    )


def records_to_resolve(
    n10: int, n01: int, n: int, bound: float, level: float = 0.95, limit: int = 10_000_000
) -> int | None:
    """The fewest records for which :func:`paired_drop_interval` would lie below ``bound``,
    if the two disagreement rates stay as observed (``n10/n`` and ``n01/n``).

    A stated, simple power calculation: for ``N`` records the counts are taken as
    ``round(n10·N/n)`` and ``round(n01·N/n)`` and the smallest ``N`` whose interval's upper end
    is ``≤ bound`` is found by doubling then bisection. ``None`` when no number of records (up
    to ``limit``) would do: the observed drop itself is not below ``bound``. ``n`` itself when
    the interval on ``n`` records already lies below ``bound``.
    """
    if n <= 0 or (n10 - n01) / n >= bound:
        return None

    def ok(big_n: int) -> bool:
        a, b = round(n10 * big_n / n), round(n01 * big_n / n)
        return paired_drop_interval(a, b, max(big_n, a + b), level).high <= bound

    if ok(n):
        return n
    lo, hi = n, 2 * n
    while not ok(hi):
        lo, hi = hi, 2 * hi
        if hi > limit:
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi

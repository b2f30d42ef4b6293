"""Confidence intervals for the estimates checks report.

* :func:`wilson_interval` — the Wilson score interval for a binomial proportion (Wilson 1927;
  the closed form in Agresti & Coull 1998, eq. 2). Unlike the normal ("Wald") interval it stays
  inside ``[0, 1]`` and keeps its coverage for proportions near 0 or 1 and for small ``n``.
* :func:`wilson_bounds` — the same, vectorised over arrays of counts.
* :func:`bootstrap_interval` — the percentile bootstrap (Efron & Tibshirani 1993, ch. 13) of a
  statistic of ``n`` resampled records, seeded, with the resamples drawn all at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import norm

from edgeproof.errors import OptionError
from edgeproof.results import Interval

__all__ = ["bootstrap_indices", "bootstrap_interval", "wilson_bounds", "wilson_interval"]


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

"""Latency: wall time of a call, adapted to a time budget, as p50/p95 over timed calls.

Every latency edgeproof reports (the ``footprint`` check, each compression candidate, the
early-exit cascade) is measured by :func:`measure_latency`: a few warm-up calls, then as many
timed calls (``time.perf_counter``) as fit the budget, bounded below and above; p50 and p95 by
linear interpolation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["LatencyStats", "measure_latency"]


@dataclass(frozen=True)
class LatencyStats:
    """Timings of one forward call at one batch size, in milliseconds."""

    batch: int
    runs: int
    warmup: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    min_ms: float


def measure_latency(
    fn: Callable[[], object],
    *,
    batch: int,
    budget_s: float = 1.0,
    warmup: int = 3,
    min_runs: int = 10,
    max_runs: int = 1000,
) -> LatencyStats:
    """Time ``fn`` with ``time.perf_counter``, adapting the number of calls to a time budget.

    ``warmup`` untimed calls come first (stopping early once they alone used the budget); the
    last one estimates the cost ``t`` of a call. Then ``budget_s / t`` timed calls, clamped to
    ``[min_runs, max_runs]`` — except that a model so slow that ``min_runs`` calls would take
    more than three budgets gets ``max(3, budget_s / t)`` calls (its p95 is then close to its
    maximum). p50/p95 by linear interpolation."""
    est = 0.0
    done = 0
    spent = 0.0
    for _ in range(max(1, warmup)):
        t0 = time.perf_counter()
        fn()
        est = time.perf_counter() - t0
        spent += est
        done += 1
        if spent > budget_s:
            break
    fit = budget_s / max(est, 1e-7)
    floor = min_runs if est * min_runs <= 3 * budget_s else 3
    runs = int(min(max_runs, max(floor, fit)))
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    ms = times * 1e3
    p50, p95 = np.percentile(ms, [50, 95])
    return LatencyStats(
        batch, runs, done, float(p50), float(p95), float(ms.mean()), float(ms.min())
    )

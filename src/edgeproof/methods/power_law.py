"""The power-law fit of an eigenvalue tail (Clauset, Shalizi & Newman 2009, continuous case) as
WeightWatcher 0.7.7's ``WWFit`` does it; the method and its sources are stated in
:mod:`edgeproof.methods.spectral`.

Eigenvalues ``≤ 1e-5`` are dropped; for every candidate ``xmin`` among the sorted remaining
eigenvalues except the largest, the MLE ``α = 1 + n / Σ ln(λ/xmin)`` over the ``n`` eigenvalues
``≥ xmin`` and the KS distance ``D = max |1 − (λ/xmin)^(1−α) − k/n|`` (``k = 0..n−1``); the
``xmin`` with the smallest ``D`` wins (first one on ties); ``σ_α = (α − 1)/√n``. With fewer than
20 eigenvalues WeightWatcher's small-n rule applies. The search is vectorised: suffix sums give
every candidate's α at once, and D by branch and bound (:func:`_ks_distances`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "EVALS_THRESH",
    "SMALL_N_CUTOFF",
    "SMALL_N_KMIN",
    "SMALL_N_PENALTY",
    "PowerLawFit",
    "fit_power_law",
]

#: WeightWatcher 0.7.7 constants (constants.py / WW_powerlaw.py).
EVALS_THRESH = 1e-5
SMALL_N_CUTOFF = 20
SMALL_N_KMIN = 8
SMALL_N_PENALTY = 0.868


@dataclass(frozen=True)
class PowerLawFit:
    """Result of the power-law tail fit; ``status`` is ``ok`` or ``failed`` (values NaN)."""

    alpha: float
    xmin: float
    D: float
    sigma: float
    n_tail: int
    num_pl_spikes: int
    method: Literal["standard", "small-n"]
    status: Literal["ok", "failed"] = "ok"


def _failed(method: Literal["standard", "small-n"]) -> PowerLawFit:
    nan = float("nan")
    return PowerLawFit(nan, nan, nan, nan, 0, 0, method, "failed")


def fit_power_law(evals: np.ndarray, *, thresh: float = EVALS_THRESH) -> PowerLawFit:
    """Clauset–Shalizi–Newman power-law fit of the ESD tail, as WeightWatcher 0.7.7's ``WWFit``.

    ``evals`` are all eigenvalues (any order); those ``≤ thresh`` are dropped before the fit, and
    ``num_pl_spikes`` counts all eigenvalues ``≥ xmin``.
    """
    all_evals = np.asarray(evals, dtype=np.float64)
    data = np.sort(all_evals[all_evals > thresh])
    n_data = data.size
    if n_data < 2:
        return _failed("small-n" if n_data < SMALL_N_CUTOFF else "standard")
    fit: tuple[int, float, float, float, Literal["standard", "small-n"]] | None
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        fit = _fit_small_n(data) if n_data < SMALL_N_CUTOFF else _fit_standard(data)
    if fit is None:
        return _failed("small-n" if n_data < SMALL_N_CUTOFF else "standard")
    i, alpha, d, sigma, method = fit
    xmin = float(data[i])
    return PowerLawFit(
        alpha=float(alpha),
        xmin=xmin,
        D=float(d),
        sigma=float(sigma),
        n_tail=int(n_data - i),
        num_pl_spikes=int(np.count_nonzero(all_evals >= xmin)),
        method=method,
    )


def _fit_standard(data: np.ndarray) -> tuple[int, float, float, float, Literal["standard"]] | None:
    n_data = data.size
    logs = np.log(data)
    suffix = np.cumsum(logs[::-1])[::-1]  # suffix[i] = Σ_{j≥i} ln x_j
    idx = np.arange(n_data - 1)
    n = (n_data - idx).astype(np.float64)
    alphas = 1.0 + n / (suffix[:-1] - n * logs[:-1])
    ds = np.ones(n_data - 1)
    valid = alphas > 1
    if valid.any():
        ds[valid] = _ks_distances(data, alphas, np.flatnonzero(valid))
    if np.isnan(alphas).all():
        return None
    sigmas = (alphas - 1.0) / np.sqrt(n_data - idx)
    i = int(np.argmin(ds))
    if not math.isfinite(alphas[i]):
        return None
    return i, float(alphas[i]), float(ds[i]), float(sigmas[i]), "standard"


#: Tail points per candidate for the KS lower bounds; row-block size of the exact pass (any
#: values give the same argmin; these were the fastest on ResNet-18's layers).
_KS_GRID = 8
_KS_BLOCK = 16


def _ks_rows(
    logs: np.ndarray, alphas: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """``|F − E|`` of candidate xmins ``rows`` at tail points ``cols`` (one row per candidate).

    ``cols`` has the same number of rows as ``rows`` (per-candidate points) or is 1-D (shared
    points; those left of a candidate's xmin count as 0, the value at the xmin itself). Fitted
    CDF ``F = 1 − (x/xmin)^(1−α)``, computed as ``1 − exp((1−α)(ln x − ln xmin))`` (WeightWatcher
    uses ``**``; the two agree to a few ulps), empirical CDF ``E = k/n`` with ``k`` the position
    in the candidate's tail of ``n`` points.
    """
    n_data = logs.size
    r = rows[:, None]
    c = cols if cols.ndim == 2 else np.broadcast_to(cols[None, :], (rows.size, cols.size))
    f = -np.expm1((1.0 - alphas[rows])[:, None] * (logs[c] - logs[r]))
    e = (c - r) / (n_data - r).astype(np.float64)
    out: np.ndarray = np.abs(f - e)
    out[c < r] = 0.0
    return out


def _ks_distances(data: np.ndarray, alphas: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """KS distance ``D`` of the candidate xmins ``data[rows]`` (α > 1), by branch and bound.

    Exact for the argmin (ties included), with far fewer evaluations than the full
    candidate × tail matrix: a lower bound of every candidate's D is its maximum ``|F − E|`` over
    :data:`_KS_GRID` points spread over its own tail; then candidates get their exact D (every
    tail point) in increasing order of lower bound, in blocks, until the next lower bound exceeds
    the smallest exact D found. Candidates never evaluated keep their lower bound, which exceeds
    that minimum, so ``argmin`` (first on ties) is the same as over the exact D of all candidates.
    """
    n_data = data.size
    logs = np.log(data)
    tails = n_data - rows
    grid = np.arange(_KS_GRID + 1)
    points = rows[:, None] + (grid[None, :] * (tails[:, None] - 1)) // _KS_GRID
    out: np.ndarray = _ks_rows(logs, alphas, rows, points).max(axis=1)
    order = np.argsort(out, kind="stable")
    best = math.inf
    for s0 in range(0, order.size, _KS_BLOCK):
        block = order[s0 : s0 + _KS_BLOCK]
        block = block[out[block] <= best + 1e-12]
        if block.size == 0:
            break
        cols = np.arange(int(rows[block].min()), n_data)
        exact = _ks_rows(logs, alphas, rows[block], cols).max(axis=1)
        out[block] = exact
        best = min(best, float(exact.min()))
    return out


def _fit_small_n(data: np.ndarray) -> tuple[int, float, float, float, Literal["small-n"]] | None:
    """WeightWatcher 0.7.7 ``fit_powerlaw_smallN`` (k_min = 8, no prior), ported loop for loop."""
    n_data = data.size
    log_data = np.log(data)
    alphas = np.zeros(n_data - 1)
    ds = np.ones(n_data - 1)
    js = np.full(n_data - 1, np.inf)
    for i in range(n_data - 1):
        n_int = n_data - i
        if n_int < SMALL_N_KMIN:
            continue
        n = float(n_int)
        s = np.sum(log_data[i:]) - n * log_data[i]
        if s <= 1e-12:
            continue
        a = 1.0 + (n - 1.0) / s
        alphas[i] = a
        if a <= 1.0:
            continue
        tail = data[i:]
        f_fit = 1.0 - (tail / data[i]) ** (1.0 - a)
        f_emp = np.arange(n_int, dtype=np.float64) / n
        d = float(np.max(np.abs(f_emp - f_fit)))
        ds[i] = d
        js[i] = d - SMALL_N_PENALTY / np.sqrt(n)
    if not np.isfinite(js).any():
        n = float(n_data)
        s = np.sum(log_data) - n * log_data[0]
        if s <= 1e-12:
            return 0, 1.0, 1.0, 0.0, "small-n"
        a = 1.0 + (n - 1.0) / s
        alphas[0] = a
        f_fit = 1.0 - (data / data[0]) ** (1.0 - a)
        ds[0] = float(np.max(np.abs(np.arange(n_data) / n - f_fit)))
    sigmas = (alphas - 1.0) / np.sqrt(n_data - np.arange(n_data - 1))
    # WWFit.__init__ re-selects by argmin D after fit_powerlaw_smallN returns, so in 0.7.7 the
    # D − 0.868/√n objective only matters through which candidates got a D (tail ≥ 8, α > 1).
    j = int(np.argmin(ds))
    return j, float(alphas[j]), float(ds[j]), float(sigmas[j]), "small-n"

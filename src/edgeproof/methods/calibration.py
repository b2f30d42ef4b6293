"""Calibration metrics (the math behind :mod:`edgeproof.checks.calibration`): equal-width and
adaptive binning, expected calibration error, negative log-likelihood, Brier score, temperature
scaling, and the test for logits that leave the temperature undetermined."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

T_BOUNDS = (0.05, 20.0)


def equal_width_bin(confidence: np.ndarray, n_bins: int = 15) -> np.ndarray:
    """Bin index of each confidence: right-closed equal-width bins ``(edges[b], edges[b+1]]``.

    ``edges = numpy.linspace(0, 1, n_bins + 1)``; 0 goes to bin 0, 1.0 to bin ``n_bins − 1``.
    """
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges, np.asarray(confidence, dtype=np.float64), side="left") - 1
    return np.clip(idx, 0, n_bins - 1)


@dataclass(frozen=True)
class BinStats:
    """Per-bin counts, accuracy and mean confidence (NaN for empty bins)."""

    lower: np.ndarray
    upper: np.ndarray
    count: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray

    @property
    def gap(self) -> np.ndarray:
        result: np.ndarray = np.abs(self.accuracy - self.confidence)
        return result


def bin_stats(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> BinStats:
    """Equal-width reliability statistics (bin semantics of :func:`equal_width_bin`)."""
    b = equal_width_bin(confidence, n_bins)
    count = np.bincount(b, minlength=n_bins)
    s_conf = np.bincount(b, weights=confidence, minlength=n_bins)
    s_corr = np.bincount(b, weights=correct.astype(np.float64), minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(count > 0, s_corr / count, np.nan)
        conf = np.where(count > 0, s_conf / count, np.nan)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return BinStats(edges[:-1], edges[1:], count, acc, conf)


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15
) -> float:
    """Equal-width ECE, ``Σ_b |Σ_{i∈b} (correct_i − conf_i)| / N`` (= Σ (n_b/N)|acc_b − conf_b|)."""
    b = equal_width_bin(confidence, n_bins)
    diff = np.bincount(b, weights=correct.astype(np.float64) - confidence, minlength=n_bins)
    return float(np.abs(diff).sum() / confidence.shape[0])


def _ece_resampled(
    bins: np.ndarray, residual: np.ndarray, idx: np.ndarray, n_bins: int
) -> np.ndarray:
    """ECE of each bootstrap resample (rows of ``idx``), vectorised with one bincount."""
    r, n = idx.shape
    flat = (bins[idx] + n_bins * np.arange(r)[:, None]).ravel()
    sums = np.bincount(flat, weights=residual[idx].ravel(), minlength=r * n_bins)
    out: np.ndarray = np.abs(sums.reshape(r, n_bins)).sum(axis=1) / n
    return out


def adaptive_ece(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """Equal-mass ECE: stable sort by confidence, ``numpy.array_split`` into ``n_bins`` groups."""
    order = np.argsort(confidence, kind="stable")
    resid = (correct.astype(np.float64) - confidence)[order]
    total = sum(abs(float(g.sum())) for g in np.array_split(resid, n_bins) if g.size)
    result: float = total / confidence.shape[0]
    return result


def negative_log_likelihood(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean ``−log softmax(z / T)_y`` in nats."""
    lp = log_softmax(logits.astype(np.float64) / temperature, axis=1)
    return float(-lp[np.arange(y.shape[0]), y].mean())


def brier_score(probs: np.ndarray, y: np.ndarray) -> float:
    """Multi-class Brier score, ``mean_i Σ_k (p_ik − onehot_ik)²``."""
    return float(_brier_per_record(probs, y).mean())


def _brier_per_record(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    p_true = probs[np.arange(y.shape[0]), y]
    out: np.ndarray = (probs**2).sum(axis=1) - 2.0 * p_true + 1.0
    return out


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature ``T`` minimising the NLL of ``softmax(z / T)`` (bounded Brent over ``log T``)."""
    z = logits.astype(np.float64)
    rows = np.arange(y.shape[0])

    def nll(log_t: float) -> float:
        lp = log_softmax(z / np.exp(log_t), axis=1)
        return float(-lp[rows, y].mean())

    if separated(z, y):
        # the NLL is strictly increasing in T (see separated): the lower bound is the minimiser,
        # even where the NLL has underflowed to 0 near it and Brent cannot tell points apart
        return float(T_BOUNDS[0])
    lo, hi = np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    # a minimum at either bound (Brent never evaluates the bounds themselves)
    best = min((float(res.x), lo, hi), key=nll)
    return float(np.exp(best))


def separated(logits: np.ndarray, y: np.ndarray) -> bool:
    """True when every record's true class has the strictly largest logit (every record is
    right, with no tie): then the NLL of ``softmax(z / T)`` is strictly increasing in ``T`` and
    has no finite minimiser, so :func:`fit_temperature` returns its lower bound whatever the
    logits; the temperature is undetermined by such data. False for no records."""
    z = np.asarray(logits, dtype=np.float64)
    if z.shape[0] == 0:
        return False
    rows = np.arange(z.shape[0])
    true = z[rows, y]
    others = z.copy()
    others[rows, y] = -np.inf
    return bool((true > others.max(axis=1)).all())

"""Activation range estimators for post-training quantization.

Every estimator sees the values one tensor takes on the calibration data and returns the real range
``(lo, hi)`` that the activation quantizer will cover (``lo <= 0 <= hi`` so zero is exact). Four
methods:

* ``minmax`` — the observed minimum and maximum.
* ``percentile`` — the ``(100 − p)``-th and ``p``-th percentiles of the values (default
  p = 99.99), as in NVIDIA's pytorch-quantization ``HistogramCalibrator(method="percentile")``.
* ``entropy`` — the KL-divergence threshold of Migacz, "8-bit Inference with TensorRT" (GTC 2017):
  a 2048-bin histogram of |x| with bin 0 (exact zeros) set to bin 1's count as in NVIDIA
  pytorch-quantization; for every candidate threshold i ≥ 128 bins (step 1), P = hist[:i] with
  the clipped tail added to its last bin, Q = hist[:i] merged into L levels (128 for signed
  tensors, 256 for non-negative ones: the levels the uint8 quantizer has on [0, t]) and expanded
  back over the non-empty bins, both smoothed (eps 1e-4, ONNX Runtime's
  ``smooth_distribution``); the threshold minimises KL(P‖Q) (see :func:`_entropy_threshold`).
* ``mse`` — the clipping threshold that minimises the expected squared quantization error (the
  objective of ACIQ, Banner et al. 2019, and OCTAV, Sakr et al. 2022), found by a grid search of
  100 thresholds in (0, max|x|] evaluated **for the actual asymmetric 8-bit quantizer** on the
  2048-bin histogram (instead of OCTAV's Newton iteration, which assumes a symmetric quantizer).

``entropy`` and ``mse`` produce a threshold t on |x|; the range is then
``(max(min x, −t), min(max x, t))``. Values are kept in full up to 2²⁰ per tensor; the batch that
would pass that bound is subsampled (seeded: each of its values kept with probability
room/size) and later batches are not kept (min/max stay exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgeproof.errors import OptionError

__all__ = [
    "CALIBRATION_METHODS",
    "ActivationRange",
    "ActivationStats",
    "CalibrationMethod",
    "RangeObserver",
    "activation_qparams",
    "estimate_range",
]

CalibrationMethod = Literal["minmax", "percentile", "entropy", "mse"]
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "percentile", "entropy", "mse")
_MAX_KEEP = 1 << 20
_BINS = 2048


@dataclass(frozen=True)
class ActivationRange:
    """The real range an activation quantizer covers, with the method that chose it."""

    lo: float
    hi: float
    method: str
    observed_min: float
    observed_max: float


def activation_qparams(lo: float, hi: float, bits: int = 8) -> tuple[float, int]:
    """Asymmetric unsigned quantization parameters ``(scale, zero_point)`` for ``[lo, hi]``.

    The range is widened to contain 0; ``scale = (hi − lo) / (2^bits − 1)``,
    ``zero_point = round(−lo / scale)`` clamped to ``[0, 2^bits − 1]`` — the same formula as ONNX
    Runtime's ``compute_scale_zp`` for uint8, so PyTorch simulation and the QDQ graph agree.
    """
    qmax = (1 << bits) - 1
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo <= 0.0:
        return 1.0, 0
    scale = float(np.float32((hi - lo) / qmax))
    zp = int(np.clip(np.round(-lo / scale), 0, qmax))
    return scale, zp


class ActivationStats:
    """The values one tensor took on the calibration data, kept once and read by every method.

    Every range method (:data:`CALIBRATION_METHODS`) estimates from the same kept values, and each
    range is computed once (:meth:`range` caches it), so choosing between the methods
    (``calibration="auto"``) or building several candidates on the same module calibrates once.
    Values are kept in full up to 2²⁰ (see the module docstring for the subsample beyond);
    ``keep_values=False`` keeps only min and max (enough for ``minmax``).
    """

    def __init__(self, *, keep_values: bool = True, seed: int = 0) -> None:
        self.keep_values = keep_values
        self._rng = np.random.default_rng(seed)
        self._chunks: list[np.ndarray] = []
        self._kept = 0
        self._min = np.inf
        self._max = -np.inf
        self._ranges: dict[tuple[str, float], ActivationRange] = {}
        self._values: np.ndarray | None = None

    @property
    def observed(self) -> bool:
        return bool(np.isfinite(self._min))

    @property
    def extremes(self) -> tuple[float, float]:
        """The observed ``(min, max)``."""
        return self._min, self._max

    def observe(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float32).ravel()
        if v.size == 0:
            return
        self._ranges.clear()
        self._values = None
        self._min = min(self._min, float(v.min()))
        self._max = max(self._max, float(v.max()))
        if not self.keep_values:
            return
        room = _MAX_KEEP - self._kept
        if room <= 0:
            return
        if v.size > room:
            # seeded Bernoulli subsample of the batch (each value kept with probability
            # room / size, distinct values, capped at room): ~8x faster than choice(replace=False)
            v = v[self._rng.random(v.size) < room / v.size][:room]
        self._chunks.append(v)
        self._kept += v.size

    def range(self, method: str, percentile: float = 99.99) -> ActivationRange:
        """The range ``method`` chooses for the observed values (computed once, then cached)."""
        _check_method(method)
        _check_percentile(percentile)
        if not self.observed:
            raise ValueError("ActivationStats.range(): no values were observed")
        key = (method, float(percentile))
        if key not in self._ranges:
            if method != "minmax" and not self.keep_values:
                raise ValueError(f"ActivationStats.range({method!r}): only min/max were kept")
            if self._values is None:
                self._values = (
                    np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
                )
            lo, hi = estimate_range(
                self._values if method != "minmax" else np.zeros(0, np.float32),
                method,
                percentile=percentile,
                observed=(self._min, self._max),
            )
            self._ranges[key] = ActivationRange(lo, hi, method, self._min, self._max)
        return self._ranges[key]


class RangeObserver:
    """Accumulates one tensor's calibration values and estimates its range with one method.

    ``RangeObserver("percentile", percentile=99.9).observe(batch)`` … ``.range()``; the values
    live in an :class:`ActivationStats` (``stats``), which any other method can read too.
    """

    def __init__(self, method: str = "minmax", *, percentile: float = 99.99, seed: int = 0) -> None:
        _check_method(method)
        _check_percentile(percentile)
        self.method = method
        self.percentile = percentile
        self.stats = ActivationStats(keep_values=method != "minmax", seed=seed)

    def observe(self, values: np.ndarray) -> None:
        self.stats.observe(values)

    def range(self) -> ActivationRange:
        if not self.stats.observed:
            raise ValueError("RangeObserver.range(): no values were observed")
        return self.stats.range(self.method, self.percentile)


def _check_method(method: str) -> None:
    if method not in CALIBRATION_METHODS:
        raise OptionError(
            "calibration",
            f"unknown method {method!r}",
            f"use one of {', '.join(CALIBRATION_METHODS)}",
        )


def _check_percentile(percentile: float) -> None:
    if not 50.0 < percentile <= 100.0:
        raise OptionError("percentile", f"{percentile} is not in (50, 100]", "use e.g. 99.99")


def estimate_range(
    values: np.ndarray,
    method: str,
    *,
    percentile: float = 99.99,
    observed: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """The range ``(lo, hi)`` chosen by ``method`` for ``values`` (always containing 0)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    mn, mx = observed if observed is not None else (float(v.min()), float(v.max()))
    if method == "minmax" or v.size == 0:
        lo, hi = mn, mx
    elif method == "percentile":
        lo = float(np.percentile(v, 100.0 - percentile)) if mn < 0 else mn
        hi = float(np.percentile(v, percentile)) if mx > 0 else mx
    elif method in ("entropy", "mse"):
        t = _entropy_threshold(v, mn) if method == "entropy" else _mse_threshold(v, mn, mx)
        lo, hi = max(mn, -t), min(mx, t)
    else:
        raise OptionError(
            "calibration",
            f"unknown method {method!r}",
            f"use one of {', '.join(CALIBRATION_METHODS)}",
        )
    return min(lo, 0.0), max(hi, 0.0)


def _abs_hist(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.abs(v)
    top = float(a.max()) if a.size else 0.0
    if top <= 0.0:
        top = 1.0
    hist, edges = np.histogram(a, bins=_BINS, range=(0.0, top))
    return hist.astype(np.float64), edges


_KL_START_BIN = 128
_KL_SMOOTHING = 1e-4


def _smooth(p: np.ndarray) -> np.ndarray | None:
    """ONNX Runtime's ``smooth_distribution``: move ``eps`` of mass onto every empty bin, taken
    evenly from the non-empty ones (``None`` if nothing is non-empty)."""
    zeros = p == 0
    n_zeros = int(zeros.sum())
    n_nonzeros = p.size - n_zeros
    if n_nonzeros == 0:
        return None
    eps1 = _KL_SMOOTHING * n_zeros / n_nonzeros
    result: np.ndarray = p + _KL_SMOOTHING * zeros - eps1 * ~zeros
    return result


def _entropy_threshold(v: np.ndarray, mn: float) -> float:
    """Migacz (TensorRT) KL-divergence threshold on the 2048-bin |x| histogram.

    The reference algorithm ("8-bit Inference with TensorRT", GTC 2017; the same loop as ONNX
    Runtime's ``HistogramCalibrater(method="entropy")`` and NVIDIA pytorch-quantization's
    ``_compute_amax_entropy``): for every candidate threshold of ``i >= 128`` bins (step 1),
    P = hist[:i] with the clipped tail added to its last bin; Q = hist[:i] merged into ``L``
    quantization levels and expanded back evenly over the bins where P is non-empty; both
    normalised and smoothed (ONNX Runtime's ``smooth_distribution``, eps = 1e-4); the threshold
    is the bin edge minimising KL(P‖Q) (the largest one on ties, as pytorch-quantization).

    ``L`` is what the executed quantizer really has on ``[0, t]``: 128 for a signed tensor (the
    uint8 range spans ``[-t, t]``) and 256 for a non-negative one (pytorch-quantization's
    ``unsigned``). Bin 0 is replaced by bin 1's count before the search, as pytorch-quantization
    does: after a ReLU about half the values are exact zeros, which the quantizer represents
    exactly, and left in the histogram that spike makes every threshold that merges bin 0 with
    its neighbours look costly — the search then picks the smallest threshold allowed (``i = L``
    bins, where no bins merge), clipping the bulk of the activation (the CNN-LSTM collapsed from
    0.962 to 0.374 accuracy that way).

    Speed: KL(P‖Q) is screened for blocks of thresholds at once (:func:`_kl_block`, the same sums
    regrouped on a 2-D array, logs of P in float32); the few thresholds within
    :data:`_KL_SCREEN` of the smallest screened KL are then re-evaluated one by one exactly as
    the loop above (:func:`_kl_at`), so the threshold is the reference loop's, ties included.
    """
    hist, edges = _abs_hist(v)
    if hist.size > 1:
        hist[0] = hist[1]
    levels = 256 if mn >= 0 else 128
    total = float(hist.sum())
    if total <= 0:
        return float(edges[-1])
    tails = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tails[i] = hist[i:].sum()
    start = min(_KL_START_BIN, _BINS)
    widths = np.arange(start, _BINS + 1)
    kl = np.concatenate(
        [
            _kl_block(hist, tails, widths[b : b + _KL_BLOCK], levels, total)
            for b in range(0, widths.size, _KL_BLOCK)
        ]
    )
    finite = np.isfinite(kl)
    if not finite.any():
        return float(edges[_BINS])
    best = float(kl[finite].min())
    near = widths[finite & (kl <= best + _KL_SCREEN * (1.0 + abs(best)))]
    best_kl, best_i = np.inf, _BINS
    for i in near.tolist():  # ascending: ``<=`` keeps the largest i on an exact tie
        k = _kl_at(hist, tails, i, levels, total)
        if k is not None and k <= best_kl:
            best_kl, best_i = k, i
    return float(edges[best_i])


_KL_BLOCK = 128
_KL_SCREEN = 5e-5
"""How close to the smallest screened KL a threshold must be to be re-evaluated exactly. The screen
takes ``log ps`` in float32 (≤ 4 ulp ≈ 8e-6 absolute for |log ps| ≤ 32, plus 6e-8 from rounding
ps), weighted by ps (Σ ps ≈ 1): its KL is within ~1e-5 of the exact one, well inside 5e-5."""


def _kl_at(hist: np.ndarray, tails: np.ndarray, i: int, levels: int, total: float) -> float | None:
    """KL(P‖Q) of the threshold at ``i`` bins: one iteration of the reference loop (``None``
    where the loop skips the threshold)."""
    sliced = hist[:i]
    p = sliced.copy()
    p[-1] += tails[i]
    nonzero = p > 0
    idx = (np.arange(i) * levels) // i
    q_sum = np.bincount(idx, weights=sliced, minlength=levels)
    q_cnt = np.bincount(idx, weights=nonzero.astype(np.float64), minlength=levels)
    q = np.where(nonzero, q_sum[idx] / np.maximum(q_cnt[idx], 1.0), 0.0)
    qs = q.sum()
    if qs <= 0:
        return None
    ps_, qs_ = _smooth(p / total), _smooth(q / qs)
    if ps_ is None or qs_ is None:
        return None
    mask = ps_ > 0
    return float(np.sum(ps_[mask] * np.log(ps_[mask] / np.maximum(qs_[mask], 1e-300))))


def _kl_block(
    hist: np.ndarray, tails: np.ndarray, widths: np.ndarray, levels: int, total: float
) -> np.ndarray:
    """:func:`_kl_at` for every threshold in ``widths`` at once (``inf`` where it skips).

    The same sums, regrouped: Q is constant over the non-empty bins of a level, so
    ``KL = Σ_j ps_j (log ps_j − log qs_level(j))`` needs per level only its sum and count of
    non-empty bins (prefix sums of the integer histogram: exact) and per bin one ``log ps_j``;
    an empty bin contributes ``ε log(ε/ε) = 0`` exactly. Row r is the threshold of
    ``widths[r]`` bins; the last bin (which holds the clipped tail) is added per row. Only the
    rounding of the float sums differs from the loop."""
    n = widths.size
    eps = _KL_SMOOTHING
    x = hist / total
    nonzero = hist > 0
    csum = np.concatenate([[0.0], np.cumsum(hist)])  # csum[k] = hist[:k].sum(), exact
    ccnt = np.concatenate([[0], np.cumsum(nonzero)])
    last = widths - 1
    x_last = (hist[last] + tails[widths]) / total
    # P's non-empty bins, smoothing constant of P
    nnz = ccnt[last] + (x_last > 0)
    a = eps * (widths - nnz) / np.maximum(nnz, 1)
    # levels: bins [start_l, start_{l+1}) of each row; their hist sums and non-empty counts
    lv = np.arange(levels + 1)
    bounds = np.minimum((lv[None, :] * widths[:, None] + levels - 1) // levels, widths[:, None])
    s_lv = csum[bounds[:, 1:]] - csum[bounds[:, :-1]]
    c_lv = (ccnt[bounds[:, 1:]] - ccnt[bounds[:, :-1]]).astype(np.float64)
    rows = np.arange(n)
    last_level = (last * levels) // widths
    add_last = (~nonzero[last]) & (x_last > 0)  # an empty last bin made non-empty by the tail
    c_lv[rows, last_level] += add_last
    mean = s_lv / np.maximum(c_lv, 1.0)
    qsum = np.sum(mean * c_lv, axis=1)
    q_pos = (mean > 0) & (c_lv > 0)
    n_qpos = np.sum(np.where(q_pos, c_lv, 0.0), axis=1)
    b = eps * (widths - n_qpos) / np.maximum(n_qpos, 1.0)
    safe_qsum = np.where(qsum > 0, qsum, 1.0)
    qs_lv = np.where(mean > 0, mean / safe_qsum[:, None] - b[:, None], eps)
    log_qs = np.log(np.maximum(qs_lv, 1e-300))
    first, seg = _p_terms(x, nonzero, ccnt, a, last, bounds)
    kl = first - np.sum(seg * log_qs, axis=1)
    # the last bin
    ps_last = np.where(x_last > 0, x_last - a, eps)
    lq_last = log_qs[rows, last_level]
    has_q = (mean[rows, last_level] > 0) & (x_last > 0)
    lq_last = np.where(has_q, lq_last, np.log(eps))
    kl += np.where(ps_last > 0, ps_last * (np.log(np.maximum(ps_last, 1e-300)) - lq_last), 0.0)
    return np.where(qsum > 0, kl, np.inf)


def _p_terms(
    x: np.ndarray,
    nonzero: np.ndarray,
    ccnt: np.ndarray,
    a: np.ndarray,
    last: np.ndarray,
    bounds: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, over the non-empty bins before its last one: ``Σ ps log ps`` and, per level,
    ``Σ ps`` (ps = x − a where positive). Rows whose P has no empty bin (``a = 0``) read prefix
    sums of ``x log x`` (float64); the others take one float32 ``log`` per bin on a 2-D array
    masked beyond each row's width (``ccnt`` maps a bin bound to its position among the
    non-empty bins)."""
    n, levels = last.size, bounds.shape[1] - 1
    first = np.zeros(n)
    seg = np.zeros((n, levels))
    flat = a == 0
    if flat.any():
        xlogx = np.where(nonzero, x * np.log(np.where(nonzero, x, 1.0)), 0.0)
        c1 = np.concatenate([[0.0], np.cumsum(xlogx)])
        cx = np.concatenate([[0.0], np.cumsum(x)])
        lz = last[flat]
        first[flat] = c1[lz]
        bz = np.minimum(bounds[flat], lz[:, None])
        seg[flat] = cx[bz[:, 1:]] - cx[bz[:, :-1]]
    rest = np.flatnonzero(~flat)
    if rest.size:
        lr = last[rest]
        nz_cols = np.flatnonzero(nonzero[: int(lr.max())])
        ps = x[nz_cols][None, :] - a[rest][:, None]
        mask = (ps > 0) & (nz_cols[None, :] < lr[:, None])
        ps = np.where(mask, ps, 0.0)
        logs = np.zeros(ps.shape, np.float32)  # float32 logs: see _KL_SCREEN
        np.log(ps.astype(np.float32), out=logs, where=mask)
        first[rest] = np.sum(ps * logs, axis=1)
        run = np.zeros((rest.size, nz_cols.size + 1))
        np.cumsum(ps, axis=1, out=run[:, 1:])
        sb = ccnt[np.minimum(bounds[rest], lr[:, None])]
        seg[rest] = np.take_along_axis(run, sb[:, 1:], 1) - np.take_along_axis(run, sb[:, :-1], 1)
    return first, seg


def _mse_threshold(v: np.ndarray, mn: float, mx: float) -> float:
    """Grid search of the clipping threshold minimising the 8-bit quantizer's expected MSE."""
    counts, edges = np.histogram(v, bins=_BINS, range=(mn, mx) if mx > mn else (mn, mn + 1.0))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w = counts.astype(np.float64)
    amax = max(abs(mn), abs(mx), 1e-12)
    best_t, best_err = amax, np.inf
    for t in np.linspace(amax / 100.0, amax, 100):
        lo, hi = min(max(mn, -t), 0.0), max(min(mx, t), 0.0)
        scale, zp = activation_qparams(lo, hi)
        q = np.clip(np.round(centres / scale) + zp, 0, 255)
        err = float(np.sum(w * ((q - zp) * scale - centres) ** 2))
        if err < best_err:
            best_err, best_t = err, float(t)
    return best_t

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
``(max(min x, −t), min(max x, t))``. Values are kept in full up to 2²⁰ per tensor, beyond that a
seeded uniform subsample is used for the histogram methods (min/max stay exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgeproof.errors import OptionError

__all__ = [
    "CALIBRATION_METHODS",
    "ActivationRange",
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


class RangeObserver:
    """Accumulates one tensor's calibration values and estimates its range.

    ``RangeObserver("percentile", percentile=99.9).observe(batch)`` … ``.range()``.
    """

    def __init__(self, method: str = "minmax", *, percentile: float = 99.99, seed: int = 0) -> None:
        if method not in CALIBRATION_METHODS:
            raise OptionError(
                "calibration",
                f"unknown method {method!r}",
                f"use one of {', '.join(CALIBRATION_METHODS)}",
            )
        if not 50.0 < percentile <= 100.0:
            raise OptionError("percentile", f"{percentile} is not in (50, 100]", "use e.g. 99.99")
        self.method = method
        self.percentile = percentile
        self._rng = np.random.default_rng(seed)
        self._chunks: list[np.ndarray] = []
        self._kept = 0
        self._min = np.inf
        self._max = -np.inf

    def observe(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float32).ravel()
        if v.size == 0:
            return
        self._min = min(self._min, float(v.min()))
        self._max = max(self._max, float(v.max()))
        if self.method == "minmax":
            return
        room = _MAX_KEEP - self._kept
        if room <= 0:
            return
        if v.size > room:
            v = self._rng.choice(v, size=room, replace=False)
        self._chunks.append(v)
        self._kept += v.size

    def range(self) -> ActivationRange:
        if not np.isfinite(self._min):
            raise ValueError("RangeObserver.range(): no values were observed")
        values = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        lo, hi = estimate_range(
            values, self.method, percentile=self.percentile, observed=(self._min, self._max)
        )
        return ActivationRange(lo, hi, self.method, self._min, self._max)


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
    return p + _KL_SMOOTHING * zeros - eps1 * ~zeros


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
    """
    hist, edges = _abs_hist(v)
    if hist.size > 1:
        hist[0] = hist[1]
    levels = 256 if mn >= 0 else 128
    total = hist.sum()
    if total <= 0:
        return float(edges[-1])
    tails = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tails[i] = hist[i:].sum()
    best_kl, best_i = np.inf, _BINS
    for i in range(min(_KL_START_BIN, _BINS), _BINS + 1):
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
            continue
        ps_, qs_ = _smooth(p / total), _smooth(q / qs)
        if ps_ is None or qs_ is None:
            continue
        mask = ps_ > 0
        kl = float(np.sum(ps_[mask] * np.log(ps_[mask] / np.maximum(qs_[mask], 1e-300))))
        if kl <= best_kl:
            best_kl, best_i = kl, i
    return float(edges[best_i])


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

"""Activation range estimators for post-training quantization.

Every estimator sees the values one tensor takes on the calibration data and returns the real range
``(lo, hi)`` that the activation quantizer will cover (``lo <= 0 <= hi`` so zero is exact). Four
methods:

* ``minmax`` — the observed minimum and maximum.
* ``percentile`` — the ``(100 − p)``-th and ``p``-th percentiles of the values (default
  p = 99.99), as in NVIDIA's pytorch-quantization ``HistogramCalibrator(method="percentile")``.
* ``entropy`` — the KL-divergence threshold of Migacz, "8-bit Inference with TensorRT" (GTC 2017):
  a 2048-bin histogram of |x|; for every candidate threshold i ≥ L bins (L = 128 quantization
  levels for signed tensors, 256 for non-negative ones), P = hist[:i] with the clipped tail added
  to its last bin, Q = P merged into L levels and expanded back over the non-empty bins; the
  threshold minimises KL(P‖Q).
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
                "--calibration",
                f"unknown method {method!r}",
                f"use one of {', '.join(CALIBRATION_METHODS)}",
            )
        if not 50.0 < percentile <= 100.0:
            raise OptionError("--percentile", f"{percentile} is not in (50, 100]", "use e.g. 99.99")
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
            "--calibration",
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


def _entropy_threshold(v: np.ndarray, mn: float) -> float:
    """Migacz (TensorRT) KL-divergence threshold on the |x| histogram."""
    hist, edges = _abs_hist(v)
    levels = 256 if mn >= 0 else 128
    best_kl, best_i = np.inf, _BINS
    for i in range(levels, _BINS + 1, 16):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        nonzero = p > 0
        # Merge the i bins into `levels` quantized bins, then expand over the non-empty bins.
        idx = (np.arange(i) * levels) // i
        q_sum = np.bincount(idx, weights=hist[:i], minlength=levels)
        q_cnt = np.bincount(idx, weights=nonzero.astype(np.float64), minlength=levels)
        q = np.where(nonzero, q_sum[idx] / np.maximum(q_cnt[idx], 1.0), 0.0)
        ps, qs = p.sum(), q.sum()
        if ps <= 0 or qs <= 0:
            continue
        pn, qn = p / ps, q / qs
        mask = pn > 0
        with np.errstate(divide="ignore"):
            kl = float(np.sum(pn[mask] * np.log(pn[mask] / np.maximum(qn[mask], 1e-12))))
        if kl < best_kl:
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

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
  ``smooth_distribution``); the threshold minimises KL(P‖Q) (see :mod:`edgeproof.compress.entropy`).
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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgeproof.compress.entropy import _BINS as _BINS
from edgeproof.compress.entropy import _abs_hist as _abs_hist
from edgeproof.compress.entropy import _entropy_threshold as _entropy_threshold
from edgeproof.compress.entropy import _kl_at as _kl_at
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
        self.count = 0
        """How many values were observed (kept or not)."""

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
        self.count += v.size
        self._min = min(self._min, float(v.min()))
        self._max = max(self._max, float(v.max()))
        if not self.keep_values:
            return
        room = _MAX_KEEP - self._kept
        if room <= 0:
            return
        if v.size > room:
            # seeded Bernoulli subsample of the batch (each value kept with probability
            # room / size, distinct values, capped at room): ~8x faster than choice(replace=False);
            # np.compress is the boolean index without its branches (~4x faster at p = 1/2)
            v = np.compress(self._rng.random(v.size) < room / v.size, v)[:room]
        self._chunks.append(v)
        self._kept += v.size

    def range(self, method: str, percentile: float = 99.99) -> ActivationRange:
        """The range ``method`` chooses for the observed values (computed once, then cached)."""
        return self.ranges((method,), percentile)[method]

    def ranges(
        self, methods: Sequence[str], percentile: float = 99.99
    ) -> dict[str, ActivationRange]:
        """The range of every method in ``methods`` (each computed once, then cached): the kept
        values are widened to float64 once for all the methods not computed yet."""
        for method in methods:
            _check_method(method)
        _check_percentile(percentile)
        if not self.observed:
            raise ValueError("ActivationStats.range(): no values were observed")
        key = float(percentile)
        todo = [m for m in dict.fromkeys(methods) if (m, key) not in self._ranges]
        clipping = [m for m in todo if m != "minmax"]
        if clipping and not self.keep_values:
            raise ValueError(f"ActivationStats.range({clipping[0]!r}): only min/max were kept")
        if clipping and self._values is None:
            self._values = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        wide = np.asarray(self._values, np.float64) if clipping else np.zeros(0)
        hists = _Histograms(wide, self._min, self._max)
        for method in sorted(todo, key=lambda m: m == "percentile"):  # it reads mse's histogram
            lo, hi = _estimate(wide, method, percentile, hists)
            self._ranges[(method, key)] = ActivationRange(lo, hi, method, self._min, self._max)
        return {m: self._ranges[(m, key)] for m in methods}


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
    return _estimate(v, method, percentile, _Histograms(v, mn, mx))


def _estimate(
    v: np.ndarray, method: str, percentile: float, hists: _Histograms
) -> tuple[float, float]:
    """:func:`estimate_range` of the float64 values ``v``, reading the histograms of ``hists``."""
    mn, mx = hists.mn, hists.mx
    if method == "minmax" or v.size == 0:
        lo, hi = mn, mx
    elif method == "percentile":
        lo, hi = _percentiles(v, percentile, hists)
    elif method == "entropy":
        t = _entropy_threshold(v, mn, hists.absolute())
        lo, hi = max(mn, -t), min(mx, t)
    elif method == "mse":
        t = _mse_threshold(v, mn, mx, hists.signed())
        lo, hi = max(mn, -t), min(mx, t)
    else:
        raise OptionError(
            "calibration",
            f"unknown method {method!r}",
            f"use one of {', '.join(CALIBRATION_METHODS)}",
        )
    return min(lo, 0.0), max(hi, 0.0)


class _Histograms:
    """The 2048-bin histograms of one tensor's values, each computed once for every method that
    reads it: the signed one on ``[min, max]`` (``mse``; ``percentile`` finds its order
    statistics in it when it is already there) and the |x| one of ``entropy``, which is the
    signed one when the values are non-negative, their minimum is 0 and their maximum is the
    observed one (``min``/``max`` are the observed extremes, the values maybe a subsample)."""

    def __init__(self, v: np.ndarray, mn: float, mx: float) -> None:
        self.v, self.mn, self.mx = v, mn, mx
        self._signed: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def has_signed(self) -> bool:
        return self._signed is not None

    def signed(self) -> tuple[np.ndarray, np.ndarray]:
        if self._signed is None:
            mn, mx = self.mn, self.mx
            self._signed = np.histogram(
                self.v, bins=_BINS, range=(mn, mx) if mx > mn else (mn, mn + 1.0)
            )
        return self._signed

    def absolute(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The |x| histogram where it is the signed one (``None``: it is not)."""
        v = self.v
        same = self.mn == 0.0 and v.size > 0 and self.mx > 0.0 and float(v.max()) == self.mx
        return self.signed() if same else None


def _percentiles(v: np.ndarray, percentile: float, hists: _Histograms) -> tuple[float, float]:
    """The ``(100 − p)``-th percentile where some values are negative (else the minimum) and the
    ``p``-th where some are positive (else the maximum): ``np.percentile``'s, from one partition
    of ``v`` — or, when the signed histogram is already there, from partitions of the one or two
    bins that hold the order statistics (:func:`_percentile_from_histogram`)."""
    mn, mx = hists.mn, hists.mx
    qs = [q for q, needed in ((100.0 - percentile, mn < 0), (percentile, mx > 0)) if needed]
    found = _percentile_from_histogram(v, qs, *hists.signed()) if hists.has_signed else None
    if found is None and qs:
        found = [float(x) for x in np.percentile(v, qs)]
    got = iter(found or [])
    return (next(got) if mn < 0 else mn), (next(got) if mx > 0 else mx)


def _percentile_from_histogram(
    v: np.ndarray, qs: Sequence[float], counts: np.ndarray, edges: np.ndarray
) -> list[float] | None:
    """``np.percentile(v, qs)`` (method ``linear``) from the histogram ``counts``/``edges`` of
    all of ``v``: numpy's virtual index ``(n − 1) q / 100``, its two neighbouring order
    statistics found in their bins (the values in ``[edges[b], edges[b + 1])``, the last bin
    closed, partitioned) and numpy's interpolation (``_lerp``); ``None`` where the histogram does
    not hold every value exactly as the bin edges say (the caller then partitions ``v``)."""
    n = v.size
    cum = np.cumsum(counts)
    if not qs or n == 0 or int(cum[-1]) != n:
        return None
    virtual = (n - 1) * np.true_divide(np.asarray(qs, np.float64), 100)
    prev = np.where(virtual >= n - 1, n - 1, np.floor(virtual)).astype(np.intp)
    nxt = np.where(virtual >= n - 1, n - 1, prev + 1)
    gamma = np.where(virtual >= n - 1, 0.0, virtual - prev)
    stats: dict[int, float] = {}
    wanted = [int(k) for k in np.r_[prev, nxt]]
    where = [int(b) for b in np.asarray(np.searchsorted(cum, wanted, side="right")).ravel()]
    for b in sorted(set(where)):
        ranks = sorted({k for k, kb in zip(wanted, where) if kb == b})
        upper = v <= edges[b + 1] if b == counts.size - 1 else v < edges[b + 1]
        inside = np.compress((v >= edges[b]) & upper, v)
        if inside.size != int(counts[b]):
            return None
        below = int(cum[b]) - inside.size
        part = np.partition(inside, [k - below for k in ranks])
        stats.update({k: float(part[k - below]) for k in ranks})
    out = []
    for k0, k1, t in zip(prev.tolist(), nxt.tolist(), gamma.tolist()):
        left, right = stats[k0], stats[k1]
        diff = right - left
        out.append(right - diff * (1 - t) if t >= 0.5 else left + diff * t)
    return out


def _mse_threshold(
    v: np.ndarray, mn: float, mx: float, hist: tuple[np.ndarray, np.ndarray] | None = None
) -> float:
    """Grid search of the clipping threshold minimising the 8-bit quantizer's expected MSE.

    The 100 thresholds are evaluated at once (a 100 × 2048 array): per threshold the range, the
    parameters of :func:`activation_qparams` (the same float operations) and the squared error of
    the histogram's bin centres; the first smallest error wins, as a loop keeping a strictly
    smaller error would choose."""
    counts, edges = hist if hist is not None else _Histograms(v, mn, mx).signed()
    centres = 0.5 * (edges[:-1] + edges[1:])
    w = counts.astype(np.float64)
    amax = max(abs(mn), abs(mx), 1e-12)
    ts = np.linspace(amax / 100.0, amax, 100)
    lo = np.minimum(np.maximum(mn, -ts), 0.0)
    hi = np.maximum(np.minimum(mx, ts), 0.0)
    scale, zp = _qparams(lo, hi)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        q = np.clip(np.round(centres[None, :] / scale[:, None]) + zp[:, None], 0, 255)
        err = np.sum(w * ((q - zp[:, None]) * scale[:, None] - centres) ** 2, axis=1)
    valid = err < np.inf  # a loop from best = inf never takes an inf or nan error
    if not valid.any():
        return amax
    return float(ts[int(np.argmin(np.where(valid, err, np.inf)))])


def _qparams(lo: np.ndarray, hi: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """:func:`activation_qparams` of every ``(lo[k], hi[k])`` (``lo <= 0 <= hi``), elementwise:
    the scale rounded to float32 as there, the zero point as a float."""
    qmax = (1 << bits) - 1
    width = hi - lo
    empty = width <= 0.0
    scale = np.where(empty, 1.0, (width / qmax).astype(np.float32).astype(np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        zp = np.where(empty, 0.0, np.clip(np.round(-lo / scale), 0, qmax))
    return scale, zp

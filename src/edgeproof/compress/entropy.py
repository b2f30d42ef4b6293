"""The entropy calibration threshold: Migacz's KL-divergence search, "8-bit Inference with
TensorRT" (GTC 2017).

On a 2048-bin histogram of |x| (bin 0 set to bin 1's count, as NVIDIA pytorch-quantization), for
every candidate threshold of ``i >= 128`` bins (step 1): P = hist[:i] with the clipped tail
added to its last bin, Q = hist[:i] merged into ``L`` quantization levels and expanded back
evenly over the bins where P is non-empty, both smoothed (ONNX Runtime's
``smooth_distribution``, eps = 1e-4); the threshold is the bin edge minimising KL(P‖Q), the
largest one on ties (:func:`_entropy_threshold`; the reference loop is :func:`_kl_at` over every
``i``).

Speed without changing the answer: KL(P‖Q) of every threshold is *screened* at once on 2-D
arrays (:func:`_kl_block`: per quantization level one sum and one count from prefix sums; the
``Σ ps log ps`` of P from prefix tables, :class:`_PTables`), then the thresholds the screen
cannot tell from the smallest are re-evaluated exactly by the reference loop's own code, so the
threshold is the loop's, ties included.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__: list[str] = []

_BINS = 2048
_KL_START_BIN = 128
_KL_SMOOTHING = 1e-4
_KL_BLOCK = 512
_KL_SCREEN = 5e-5
"""How close to the smallest screened KL a threshold must be to be re-evaluated exactly. The screen
takes ``log ps`` in float32 on the fallback path of :func:`_p_terms_dense` (≤ 4 ulp ≈ 8e-6
absolute for |log ps| ≤ 32, plus 6e-8 from rounding ps), weighted by ps (Σ ps ≈ 1): its KL is
within ~1e-5 of the exact one, well inside 5e-5; elsewhere it only regroups float64 sums. The
truncation of the series of :class:`_PTables` is bounded per threshold and added on top."""
_TAYLOR_TERMS = 48
_LARGE = 1.5
"""A bin is *large* (its ``x log x`` terms come from a series) when ``x >= 1.5 max(a)``: the
series in ``u = a / x <= 2/3`` then leaves at most ``a u^49 / (49·50·(1 − u)) ≈ 5e-12 a`` a bin."""
_MAX_SMALL_VALUES = 512


def _abs_hist(v: np.ndarray, nonnegative: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The 2048-bin histogram of |v| on ``[0, max |v|]`` (``nonnegative``: v is |v| already)."""
    a = v if nonnegative else np.abs(v)
    top = float(a.max()) if a.size else 0.0
    if top <= 0.0:
        top = 1.0
    hist, edges = np.histogram(a, bins=_BINS, range=(0.0, top))
    return hist.astype(np.float64), edges


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


def _entropy_threshold(
    v: np.ndarray, mn: float, given: tuple[np.ndarray, np.ndarray] | None = None
) -> float:
    """Migacz (TensorRT) KL-divergence threshold on the 2048-bin |x| histogram.

    The reference algorithm (the same loop as ONNX Runtime's
    ``HistogramCalibrater(method="entropy")`` and NVIDIA pytorch-quantization's
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
    regrouped on 2-D arrays, with an upper bound on what the screen can miss); the thresholds
    within :data:`_KL_SCREEN` of the smallest screened KL are then re-evaluated one by one
    exactly as the loop above (:func:`_kl_at`), so the threshold is the reference loop's, ties
    included. ``given``: the |x| histogram ``(counts, edges)`` of ``v`` if it is already there.
    """
    if given is None:
        hist, edges = _abs_hist(v, nonnegative=mn >= 0)
    else:
        hist, edges = given[0].astype(np.float64), given[1]
    if hist.size > 1:
        hist[0] = hist[1]
    levels = 256 if mn >= 0 else 128
    total = float(hist.sum())
    if total <= 0:
        return float(edges[-1])
    tails = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tails[i] = hist[i:].sum()
    start = min(_KL_START_BIN, _BINS)
    widths = np.arange(start, _BINS + 1)
    tables = _PTables.of(hist, tails, widths, total)
    geometry = _levels(start, levels)
    blocks = [
        _kl_block(hist, tails, geometry.rows(b, b + _KL_BLOCK), total, tables)
        for b in range(0, widths.size, _KL_BLOCK)
    ]
    kl = np.concatenate([k for k, _ in blocks])
    missed = np.concatenate([m for _, m in blocks])  # the screen is within [kl, kl + missed]
    finite = np.isfinite(kl)
    if not finite.any():
        return float(edges[_BINS])
    best = float(kl[finite].min())
    upper = float((kl + missed)[finite].min())
    near = widths[finite & (kl <= upper + _KL_SCREEN * (1.0 + abs(best)))]
    best_kl, best_i = np.inf, _BINS
    for i in near.tolist():  # ascending: ``<=`` keeps the largest i on an exact tie
        k = _kl_at(hist, tails, i, levels, total)
        if k is not None and k <= best_kl:
            best_kl, best_i = k, i
    return float(edges[best_i])


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


@dataclass(frozen=True)
class _Levels:
    """Where the ``levels`` quantization levels of every threshold start: row r is the threshold
    of ``widths[r]`` bins, ``bounds[r, l]`` the first bin of level ``l`` (``bounds[r, levels]``
    the width), ``cut`` the same cut at the row's last bin, ``last_level`` the level of its
    last bin. The same for every histogram (computed once per level count)."""

    widths: np.ndarray
    levels: int
    bounds: np.ndarray
    cut: np.ndarray
    last_level: np.ndarray

    def rows(self, start: int, stop: int) -> _Levels:
        s = slice(start, stop)
        return _Levels(self.widths[s], self.levels, self.bounds[s], self.cut[s], self.last_level[s])


@functools.lru_cache(maxsize=4)
def _levels(start: int, levels: int) -> _Levels:
    widths = np.arange(start, _BINS + 1)
    lv = np.arange(levels + 1)
    bounds = np.minimum((lv[None, :] * widths[:, None] + levels - 1) // levels, widths[:, None])
    last = widths - 1
    cut = np.minimum(bounds, last[:, None])
    return _Levels(widths, levels, bounds, cut, (last * levels) // widths)


def _kl_block(
    hist: np.ndarray,
    tails: np.ndarray,
    geometry: _Levels,
    total: float,
    tables: _PTables,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_kl_at` for every threshold of ``geometry`` at once (``inf`` where it skips), and
    a bound on how much larger than the screened value the exact one can be.

    The same sums, regrouped: Q is constant over the non-empty bins of a level, so
    ``KL = Σ_j ps_j (log ps_j − log qs_level(j))`` needs per level only its sum and count of
    non-empty bins (prefix sums of the integer histogram: exact) and per level the sum of ``ps``
    over its bins, with ``Σ ps log ps`` over all of them (:func:`_p_terms`); an empty bin
    contributes ``ε log(ε/ε) = 0`` exactly. Row r is the threshold of ``widths[r]`` bins; the
    last bin (which holds the clipped tail) is added per row. Only the rounding of the float sums
    differs from the loop (and the bounded truncation of :class:`_PTables`' series)."""
    widths, bounds, last_level = geometry.widths, geometry.bounds, geometry.last_level
    n = widths.size
    eps = _KL_SMOOTHING
    nonzero = tables.nonzero
    csum = np.concatenate([[0.0], np.cumsum(hist)])  # csum[k] = hist[:k].sum(), exact
    ccnt = tables.ccnt
    last = widths - 1
    x_last = (hist[last] + tails[widths]) / total
    # P's non-empty bins, smoothing constant of P
    nnz = ccnt[last] + (x_last > 0)
    a = eps * (widths - nnz) / np.maximum(nnz, 1)
    # levels: bins [start_l, start_{l+1}) of each row; their hist sums and non-empty counts
    s_lv = np.diff(np.take(csum, bounds), axis=1)
    c_lv = np.diff(np.take(ccnt, bounds), axis=1).astype(np.float64)
    rows = np.arange(n)
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
    first, seg, missed = _p_terms(tables, a, last, geometry)
    kl = first - np.sum(seg * log_qs, axis=1)
    # the last bin
    ps_last = np.where(x_last > 0, x_last - a, eps)
    lq_last = log_qs[rows, last_level]
    has_q = (mean[rows, last_level] > 0) & (x_last > 0)
    lq_last = np.where(has_q, lq_last, np.log(eps))
    kl += np.where(ps_last > 0, ps_last * (np.log(np.maximum(ps_last, 1e-300)) - lq_last), 0.0)
    return np.where(qsum > 0, kl, np.inf), missed


@dataclass(frozen=True)
class _PTables:
    """Prefix tables of one histogram for the P terms of every threshold (built once).

    Before its last bin, a threshold's smoothed P is ``ps_j = x_j − a`` on the non-empty bins
    (``x = hist / total``; ``a`` the row's smoothing constant, 0 where P has no empty bin), and
    only the bins with ``ps_j > 0`` count. For every row the screen needs ``Σ ps log ps`` and,
    per level, ``Σ ps``. Bins are split by ``x``:

    * *small* bins (``x < 1.5 max a``: every bin some row drops, few distinct values since the
      counts are small integers): grouped by value, ``cnt[d, k]`` = how many of the first ``k``
      bins hold ``values[d]``; ``drop_sum``/``drop_cnt[k_r, ·]`` = the prefix sum and count of
      the bins holding one of the ``k_r`` smallest values (the ones a row with
      ``values[k_r − 1] <= a < values[k_r]`` drops);
    * *large* bins: ``(x − a) log(x − a) = x log x − a log x − a + a Σ_k (a/x)^k / (k(k+1))``
      from prefix sums of ``x log x``, ``log x``, 1 and ``(max a / x)^k``, truncated after
      :data:`_TAYLOR_TERMS` terms with the remainder bounded (every term is positive).

    ``dense`` (too many distinct small values) sends rows with ``a > 0`` to
    :func:`_p_terms_dense` instead.
    """

    x: np.ndarray
    nonzero: np.ndarray
    ccnt: np.ndarray
    cx: np.ndarray
    c_xlogx: np.ndarray
    a_max: float
    values: np.ndarray
    cnt: np.ndarray
    drop_sum: np.ndarray
    drop_cnt: np.ndarray
    big_xlogx: np.ndarray
    big_logx: np.ndarray
    big_n: np.ndarray
    big_pow: np.ndarray
    big_min: float
    dense: bool

    @classmethod
    def of(cls, hist: np.ndarray, tails: np.ndarray, widths: np.ndarray, total: float) -> _PTables:
        x = hist / total
        nonzero = hist > 0
        ccnt = np.concatenate([[0], np.cumsum(nonzero)])
        last = widths - 1
        x_last = (hist[last] + tails[widths]) / total
        nnz = ccnt[last] + (x_last > 0)
        a_max = float(np.max(_KL_SMOOTHING * (widths - nnz) / np.maximum(nnz, 1)))
        xlogx = np.where(nonzero, x * np.log(np.where(nonzero, x, 1.0)), 0.0)

        def prefix(v: np.ndarray) -> np.ndarray:
            return np.concatenate([np.zeros((*v.shape[:-1], 1)), np.cumsum(v, axis=-1)], axis=-1)

        small = nonzero & (x < _LARGE * a_max)
        big = nonzero & ~small
        values, which = np.unique(x[small], return_inverse=True)
        dense = values.size > _MAX_SMALL_VALUES
        onehot = np.zeros((0 if dense else values.size, x.size))
        if not dense:
            onehot[which, np.flatnonzero(small)] = 1.0
        else:
            values = values[:0]
        cnt = prefix(onehot)
        zero = np.zeros((1, x.size + 1))
        drop_cnt = np.concatenate([zero, np.cumsum(cnt, axis=0)])
        drop_sum = np.concatenate([zero, np.cumsum(values[:, None] * cnt, axis=0)])
        safe = np.where(big, x, 1.0)
        ratio = np.where(big, a_max / safe, 0.0) if a_max > 0 else np.zeros_like(x)
        powers = np.empty((_TAYLOR_TERMS, x.size))
        powers[0] = ratio
        for k in range(1, _TAYLOR_TERMS):
            np.multiply(powers[k - 1], ratio, out=powers[k])
        return cls(
            x=x,
            nonzero=nonzero,
            ccnt=ccnt,
            cx=prefix(x),
            c_xlogx=prefix(xlogx),
            a_max=a_max,
            values=values,
            cnt=cnt,
            drop_sum=drop_sum,
            drop_cnt=drop_cnt,
            big_xlogx=prefix(np.where(big, xlogx, 0.0)),
            big_logx=prefix(np.where(big, np.log(safe), 0.0)),
            big_n=prefix(big.astype(np.float64)),
            big_pow=prefix(powers),
            big_min=float(x[big].min()) if big.any() else np.inf,
            dense=dense,
        )


def _p_terms(
    t: _PTables, a: np.ndarray, last: np.ndarray, geometry: _Levels
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, over the non-empty bins before its last one with ``ps = x − a > 0``:
    ``Σ ps log ps``, per level ``Σ ps``, and how much the first may fall short of the exact sum
    (the series' remainder; 0 where it is not used). Rows whose P has no empty bin (``a = 0``)
    read prefix sums of ``x log x``; the others :class:`_PTables`' small-value groups and series
    (or :func:`_p_terms_dense`)."""
    n, levels = last.size, geometry.levels
    first = np.zeros(n)
    seg = np.zeros((n, levels))
    missed = np.zeros(n)
    bz = geometry.cut
    flat = a == 0
    if flat.any():
        first[flat] = t.c_xlogx[last[flat]]
        seg[flat] = np.diff(np.take(t.cx, bz[flat]), axis=1)
    rest = np.flatnonzero(~flat)
    if rest.size and t.dense:
        first[rest], seg[rest] = _p_terms_dense(t, a[rest], last[rest], geometry.bounds[rest])
    elif rest.size:
        first[rest], seg[rest], missed[rest] = _p_terms_grouped(t, a[rest], last[rest], bz[rest])
    return first, seg, missed


def _p_terms_grouped(
    t: _PTables, a: np.ndarray, last: np.ndarray, bz: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_p_terms` of rows with ``a > 0`` from :class:`_PTables` (``bz``: level bounds cut
    at each row's last bin)."""
    # small bins: per distinct value, its count before the last bin times (v − a) log(v − a)
    ps = t.values[None, :] - a[:, None]
    keep = ps > 0
    f = np.where(keep, ps * np.log(np.where(keep, ps, 1.0)), 0.0)
    first = np.einsum("rd,dr->r", f, t.cnt[:, last])
    # large bins: the series
    first += t.big_xlogx[last] - a * (t.big_logx[last] + t.big_n[last])
    k = np.arange(1, _TAYLOR_TERMS + 1)
    coef = (a[:, None] / t.a_max) ** k[None, :] / (k * (k + 1))[None, :]
    first += a * np.einsum("rk,kr->r", coef, t.big_pow[:, last])
    u = a / t.big_min
    m = _TAYLOR_TERMS
    missed = np.where(
        t.big_n[last] > 0,
        a * u ** (m + 1) / ((m + 1) * (m + 2) * np.maximum(1.0 - u, 1e-300)) * t.big_n[last],
        0.0,
    )
    # per level: every non-empty bin's x − a, less the bins the row drops (x <= a)
    dropped = np.searchsorted(t.values, a, side="right")[:, None] * t.cx.size + bz
    run = np.take(t.cx, bz) - a[:, None] * np.take(t.ccnt, bz)
    run -= np.take(t.drop_sum, dropped) - a[:, None] * np.take(t.drop_cnt, dropped)
    return first, np.diff(run, axis=1), missed


def _p_terms_dense(
    t: _PTables, a: np.ndarray, last: np.ndarray, bounds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_p_terms` of rows with ``a > 0`` on a 2-D array of every non-empty bin (the
    fallback for histograms with many distinct small counts): one float32 ``log`` per bin,
    masked beyond each row's width (``ccnt`` maps a bin bound to its position among the
    non-empty bins)."""
    nz_cols = np.flatnonzero(t.nonzero[: int(last.max())])
    ps = t.x[nz_cols][None, :] - a[:, None]
    mask = (ps > 0) & (nz_cols[None, :] < last[:, None])
    ps = np.where(mask, ps, 0.0)
    logs = np.zeros(ps.shape, np.float32)  # float32 logs: see _KL_SCREEN
    np.log(ps.astype(np.float32), out=logs, where=mask)
    first = np.sum(ps * logs, axis=1)
    run = np.zeros((a.size, nz_cols.size + 1))
    np.cumsum(ps, axis=1, out=run[:, 1:])
    sb = t.ccnt[np.minimum(bounds, last[:, None])]
    seg = np.take_along_axis(run, sb[:, 1:], 1) - np.take_along_axis(run, sb[:, :-1], 1)
    return first, seg

"""Heavy-tailed spectral diagnostics of weight matrices (the WeightWatcher method).

Sources: Martin & Mahoney, "Implicit self-regularization in deep neural networks" (JMLR 2021) and
"Predicting trends in the quality of state-of-the-art neural networks without access to training
or testing data" (Nature Communications 2021); the reference implementation is WeightWatcher 0.7.7
(PyPI), whose code was read for :attr:`SpectralConfig.mode` ``"ww-compat"``.

Per layer:

* **ESD.** Eigenvalues λ = σ² of the singular values of each weight matrix; Conv1d/Conv2d give one
  ``C_out × C_in`` matrix per kernel position, and their eigenvalues are pooled.
* **Power law** (Clauset, Shalizi & Newman 2009, continuous case, as WeightWatcher 0.7.7's
  ``WWFit``): eigenvalues ``≤ 1e-5`` are dropped; for every candidate ``xmin`` among the sorted
  remaining eigenvalues except the largest, the MLE ``α = 1 + n / Σ ln(λ/xmin)`` over the ``n``
  eigenvalues ``≥ xmin`` and the KS distance ``D = max |1 − (λ/xmin)^(1−α) − k/n|``
  (``k = 0..n−1``);
  the ``xmin`` with the smallest ``D`` wins (first one on ties); ``σ_α = (α − 1)/√n``. With fewer
  than 20 eigenvalues WeightWatcher's small-n rule applies: ``α = 1 + (n−1)/Σ``, candidates need a
  tail of at least 8, and ``xmin`` minimises ``D − 0.868/√n``. The search is vectorised: suffix
  sums give every candidate's α at once, and D by branch and bound (a lower bound from 32 points
  of each candidate's tail, then exact D in increasing order of bound until no bound is below the
  best exact D), which finds the same argmin as evaluating every candidate × tail point.
* **Norms.** ``log_norm = log10 Σλ``, ``log_spectral_norm = log10 λmax``,
  ``alpha_weighted = α · log10 λmax``, ``log_alpha_norm = log10 Σ λ^α``,
  ``stable_rank = Σλ / λmax``, spectral entropy (WeightWatcher's ``matrix_entropy``:
  ``−Σ p ln p / ln(rank)`` with ``p = λ/Σλ + 1e-10``, rank by the NumPy tolerance).
* **Marchenko–Pastur bulk** (own method, not WeightWatcher's KDE brute-force fit): with
  ``x = λ/N`` for an ``N × M`` (``N ≥ M``) matrix, ``σ²`` is the mean of the bulk eigenvalues
  (the mean of the MP law is ``σ²``), the bulk edge ``λ+ = σ²(1 + √(M/N))²``; eigenvalues above
  ``λ+ + 4·s_TW`` are spikes, where ``s_TW = σ²(√N + √M)(1/√N + 1/√M)^{1/3}/N`` is the
  Tracy–Widom scale of the largest Wishart eigenvalue (Johnstone 2001); spikes are removed and σ²
  re-estimated until the count is stable. ``mp_softrank = λ+ / λmax`` (WeightWatcher's
  definition). Reported ``σ_mp``, ``λ+`` are in units of ``λ/N``.

Modes:

* ``default``: raw weights, no normalisation (``λ`` are the squared singular values of the
  weights as stored), Conv1d pooled per kernel position like Conv2d, LSTM/GRU gates and Q/K/V
  split, eigenvalues by ``eigvalsh`` of the float64 Gram matrix of the smaller side (a slice with
  an eigenvalue within the Gram's rounding error of the 1e-5 fit threshold is redone by SVD);
  the layers' matrices run in chunks on a thread pool (both modes).
* ``ww-compat``: reproduces WeightWatcher 0.7.7 ``analyze()`` defaults: Conv2d weights multiplied
  by ``√0.5`` (``conv2d_norm``, i.e. eigenvalues × 0.5); ``min_evals = 8`` on ``M · rf``;
  ``max_evals = 15000``; ``max_N = 50000``; its per-slice N/M bookkeeping; Conv1d as WeightWatcher
  does it (``scipy.linalg.svd`` batched over output channels of ``C_in × k`` matrices, largest
  ``min(shape)`` singular values kept); only Linear/Conv1d/Conv2d/Embedding modules analysed;
  float64 ``svdvals``. α, D, xmin, log_norm and stable_rank agree with it to 1e-6.
  α is scale-invariant, so the two modes give the same α wherever they analyse the same matrix.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from edgeproof.errors import OptionError
from edgeproof.methods.layers import LayerInventory, SkippedTensor, WeightLayer
from edgeproof.runtime.threads import torch_threads

__all__ = [
    "LayerSpectrum",
    "MPFit",
    "PowerLawFit",
    "SpectralAnalysis",
    "SpectralConfig",
    "SpectralMode",
    "analyze_inventory",
    "analyze_layer",
    "fit_marchenko_pastur",
    "fit_power_law",
    "layer_eigenvalues",
    "spectral_entropy",
]

SpectralMode = Literal["default", "ww-compat"]

#: WeightWatcher 0.7.7 constants (constants.py / WW_powerlaw.py).
EVALS_THRESH = 1e-5
SMALL_N_CUTOFF = 20
SMALL_N_KMIN = 8
SMALL_N_PENALTY = 0.868
WW_EPSILON = 1e-10
#: Safety factor on the ``side·ε·λmax`` error bound of Gram eigenvalues (see _gram_eigvals).
_GRAM_GUARD = 64.0
#: Gram matrices per eigen-solver call fill about this many bytes (see _gram_eigvals).
_GRAM_GROUP_BYTES = 8 << 20
#: The layer pool cuts the work into about this many chunks per thread (see _analyze_pooled).
_CHUNKS_PER_WORKER = 4
#: Kolmogorov–Smirnov 1% asymptotic critical value coefficient (c(0.01) = 1.628).
KS_CRIT_1PCT = 1.628


@dataclass(frozen=True)
class SpectralConfig:
    """Settings of the spectral analysis (see the module docstring for what each mode does).

    Attributes:
        mode: ``default`` or ``ww-compat``.
        min_evals: fewer eigenvalues than this → flagged "too few eigenvalues", no fit.
        max_evals: more eigenvalues than this → skipped (cost); ``None`` for no limit.
        max_n: larger matrix side above this → skipped (cost).
        over_trained_alpha: α below this flags the layer over-trained (WeightWatcher: 2).
        under_trained_alpha: α above this flags it under-trained (WeightWatcher: 6).
        poor_fit_ks: a fit is poor when ``D > poor_fit_ks / √n_tail`` (default: the asymptotic
            1% KS critical value; lenient, since α and xmin were fitted).
        spike_tw_sigmas: MP spikes lie more than this many Tracy–Widom scales above λ+.
    """

    mode: SpectralMode = "default"
    min_evals: int = 8
    max_evals: int | None = 15000
    max_n: int = 50000
    over_trained_alpha: float = 2.0
    under_trained_alpha: float = 6.0
    poor_fit_ks: float = KS_CRIT_1PCT
    spike_tw_sigmas: float = 4.0

    def __post_init__(self) -> None:
        if self.mode not in ("default", "ww-compat"):
            raise OptionError(
                "spectral.mode", f"unknown mode {self.mode!r}", "use 'default' or 'ww-compat'"
            )
        if self.min_evals < 2:
            raise OptionError(
                "spectral.min_evals", f"{self.min_evals} is too small", "use 2 or more"
            )

    @property
    def conv2d_scale(self) -> float:
        """Factor applied to Conv2d eigenvalues (WeightWatcher's conv2d_norm: 0.5)."""
        return 0.5 if self.mode == "ww-compat" else 1.0

    def normalisations(self) -> list[str]:
        """Every normalisation in force, in words (for the report)."""
        if self.mode == "ww-compat":
            return [
                "WeightWatcher 0.7.7 compatibility: Conv2d weights × √0.5 (eigenvalues × 0.5)",
                "eigenvalues ≤ 1e-5 excluded from the power-law fit",
                f"layers with M·rf < {self.min_evals} eigenvalues skipped",
                "MP fit on λ/N (N = larger side)",
            ]
        return [
            "eigenvalues are squared singular values of the raw stored weights (no scaling)",
            "Conv1d/Conv2d: one C_out×C_in matrix per kernel position, eigenvalues pooled",
            "LSTM/GRU weights split per gate; fused attention in_proj split into Q, K, V",
            "eigenvalues ≤ 1e-5 excluded from the power-law fit",
            "MP fit on λ/N (N = larger side of each matrix)",
        ]


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
    out = np.abs(f - e)
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
    out = _ks_rows(logs, alphas, rows, points).max(axis=1)
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


@dataclass(frozen=True)
class MPFit:
    """Marchenko–Pastur bulk fit (units of λ/N): σ², bulk edge, spikes above it, softrank."""

    sigma2: float
    lambda_plus: float
    num_spikes: int
    mp_softrank: float
    threshold: float


def fit_marchenko_pastur(
    evals: np.ndarray, n: int, m: int, *, tw_sigmas: float = 4.0, max_iter: int = 100
) -> MPFit:
    """Fit the MP bulk of eigenvalues ``evals`` of ``WᵀW`` for ``n × m`` matrices (``n ≥ m``).

    See the module docstring for the estimator. ``evals`` may pool several matrices of the same
    shape (conv kernel positions).
    """
    big, small = max(n, m), min(n, m)
    x = np.sort(np.asarray(evals, dtype=np.float64)) / big
    if x.size == 0 or x[-1] <= 0:
        return MPFit(0.0, 0.0, 0, float("nan"), 0.0)
    q = small / big
    tw_unit = (
        (math.sqrt(big) + math.sqrt(small))
        * (1 / math.sqrt(big) + 1 / math.sqrt(small)) ** (1 / 3)
        / big
    )
    n_bulk = x.size
    spikes = -1
    sigma2 = lam_plus = thr = 0.0
    for _ in range(max_iter):
        sigma2 = float(x[:n_bulk].mean())
        lam_plus = sigma2 * (1 + math.sqrt(q)) ** 2
        thr = lam_plus + tw_sigmas * sigma2 * tw_unit
        new_spikes = int(x.size - np.searchsorted(x, thr, side="right"))
        if new_spikes == spikes or new_spikes >= x.size:
            spikes = min(new_spikes, x.size)
            break
        spikes = new_spikes
        n_bulk = x.size - spikes
    return MPFit(sigma2, lam_plus, spikes, float(lam_plus / x[-1]), thr)


def spectral_entropy(evals: np.ndarray, n: int) -> float:
    """WeightWatcher's ``matrix_entropy``: ``−Σ p ln p / ln(rank)``, ``p = λ/Σλ + 1e-10``."""
    ev = np.asarray(evals, dtype=np.float64)
    sv = np.sqrt(np.clip(ev, 0, None))
    if sv.size == 0 or sv.max() <= 0:
        return float("nan")
    rank = np.count_nonzero(sv > sv.max() * n * np.finfo(sv.dtype).eps) + WW_EPSILON
    p = ev / ev.sum() + WW_EPSILON
    return float(-np.sum(p * np.log(p)) / np.log(rank))


# --------------------------------------------------------------------------- eigenvalues


@dataclass(frozen=True)
class _Matrices:
    evals: np.ndarray  # sorted ascending, float64
    n: int
    m: int
    rf: int


@dataclass(frozen=True)
class _Slices:
    """The matrices of one layer whose squared singular values are pooled into its spectrum.

    ``mats`` is a ``(k, rows, cols)`` view of the weight (e.g. one matrix per kernel position);
    each matrix's eigenvalues are independent of the others', so a layer can be split into
    chunks of matrices (``eigvals(lo, hi)``) and those run on different threads.
    """

    mats: torch.Tensor
    n: int
    m: int
    rf: int
    compat: bool  # WeightWatcher's route: float64 singular values (else the Gram eigenvalues)
    scale: float = 1.0  # ww-compat: eigenvalue factor, applied to the matrices (conv2d_norm 0.5)
    keep: int | None = None  # ww-compat: keep only the largest ``keep`` values (conv1d)

    @property
    def count(self) -> int:
        return int(self.mats.shape[0])

    def cost(self) -> float:
        """Rough eigen-solver cost of one matrix, ``big·small²`` (for scheduling only)."""
        rows, cols = int(self.mats.shape[1]), int(self.mats.shape[2])
        return float(max(rows, cols) * min(rows, cols) ** 2)

    def eigvals(self, lo: int, hi: int) -> np.ndarray:
        """Unsorted eigenvalues of matrices ``lo..hi-1`` (before ``keep``)."""
        part = self.mats[lo:hi]
        if not self.compat:
            return _gram_eigvals(part)
        part = part.detach().to(torch.float64)
        if self.scale != 1.0:  # WeightWatcher scales the matrix, not its eigenvalues
            part = part * math.sqrt(self.scale)
        s = torch.linalg.svdvals(part)
        return (s * s).reshape(-1).numpy()

    def pooled(self, parts: Sequence[np.ndarray]) -> _Matrices:
        """The layer's sorted spectrum from the eigenvalues of all its chunks."""
        ev = np.sort(np.concatenate(parts))
        if self.keep is not None:
            ev = ev[-self.keep :]
        return _Matrices(ev, self.n, self.m, self.rf)


def _ww_conv2d_dims(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """WeightWatcher 0.7.7 ``conv2D_Wmats`` N/M bookkeeping (PyTorch, channels last)."""
    n, m, kh, kw = shape
    if n + m >= kh + kw:
        nn_, mm_ = n, m
        for _ in range(kh * kw):
            if shape[0] < shape[1]:
                nn_, mm_ = mm_, nn_
        return nn_, mm_, kh * kw
    return n, m, kh * kw


def _gram_lower(x: np.ndarray) -> np.ndarray:
    """``xᵀx`` for a batch of tall matrices ``x`` (k, r, c), exact in the lower triangle only.

    With the columns split in halves ``[a b]``, three products ``aᵀa``, ``bᵀa``, ``bᵀb`` give
    the lower triangle for 3/4 of the full product's flops (measured 10% faster at 512×512; the
    eigenvalues came out bit-identical); the upper-right block, which ``eigvalsh(UPLO="L")``
    never reads, is zeroed. Small matrices take the plain product.
    """
    xt = x.swapaxes(-1, -2)
    c = x.shape[-1]
    if c < 256:
        return np.matmul(xt, x)
    h = c // 2
    g = np.empty((x.shape[0], c, c))
    np.matmul(xt[:, :h], x[..., :h], out=g[:, :h, :h])
    np.matmul(xt[:, h:], x[..., :h], out=g[:, h:, :h])
    np.matmul(xt[:, h:], x[..., h:], out=g[:, h:, h:])
    g[:, :h, h:] = 0.0
    return g


def _gram_eigvals(mats: torch.Tensor) -> np.ndarray:
    """Eigenvalues of the Gram matrix of the smaller side for a batch of matrices, float64, ≥ 0.

    Per matrix: ``WᵀW`` or ``WWᵀ`` (``_gram_lower``) and ``np.linalg.eigvalsh`` of it (LAPACK
    ``syevd``, eigenvalues only). Measured on the reference machine, one thread, 512×512: ~2×
    cheaper than the singular values of ``W`` (``gesdd``, WeightWatcher's route) and ~1.4×
    cheaper than torch's (MKL) Gram + ``eigvalsh``. Both release the GIL, so chunks of matrices
    can run in threads. The matrices go through both calls in groups whose Gram matrices fill
    about 8 MB: one call per group keeps the GIL hand-overs between pool threads few (~10%
    faster on two threads than one matrix per call), and a bounded group keeps its Gram
    matrices in cache (~7% faster on one thread than all nine of a 512×512×3×3 kernel at once).

    The Gram matrix squares the condition number: an eigenvalue ``λ`` is accurate to about
    ``c·ε·λmax`` (absolute) instead of ``ε·λ``. Only the ``λ > 1e-5`` candidate filter of the
    power-law fit is sensitive to that; a matrix with an eigenvalue within that error of the
    threshold is recomputed from its singular values, so the filter keeps the same eigenvalues
    as WeightWatcher's SVD.
    """
    # contiguous float64 copy in one pass: the kernel-position slices of a conv weight are a
    # strided view; NumPy's cast-and-copy of it is ~2× faster than torch's copy_ and ~7× faster
    # than .to(float64).contiguous() (measured on a 512×512×3×3 weight)
    src = mats.detach()
    if src.dtype not in (torch.float32, torch.float64):
        src = src.float()  # float16/bfloat16 weights (NumPy has no bfloat16)
    w = np.ascontiguousarray(src.numpy(), dtype=np.float64)
    tall = w.shape[-2] >= w.shape[-1]
    side = min(w.shape[-2:])
    group = max(1, _GRAM_GROUP_BYTES // (8 * side * side))
    parts = []
    for lo in range(0, w.shape[0], group):
        p = w[lo : lo + group]
        parts.append(np.linalg.eigvalsh(_gram_lower(p if tall else p.swapaxes(-1, -2))))
    ev = np.concatenate(parts)
    tol = _GRAM_GUARD * side * np.finfo(np.float64).eps * np.maximum(ev[:, -1:], 0.0)
    near = np.abs(ev - EVALS_THRESH) <= tol
    for k in np.flatnonzero(near.any(axis=1)):
        ev[k] = np.sort(np.linalg.svd(w[k], compute_uv=False) ** 2)
    return np.clip(ev, 0.0, None).reshape(-1)


def layer_eigenvalues(
    layer: WeightLayer, config: SpectralConfig
) -> tuple[np.ndarray, int, int, int]:
    """Pooled eigenvalues (sorted) of one layer and its ``(N, M, rf)`` under ``config``."""
    mats = _layer_matrices(layer, config)
    return mats.evals, mats.n, mats.m, mats.rf


def _layer_matrices(layer: WeightLayer, config: SpectralConfig) -> _Matrices:
    sl = _layer_slices(layer, config)
    return sl.pooled([sl.eigvals(0, sl.count)])


def _layer_slices(layer: WeightLayer, config: SpectralConfig) -> _Slices:
    w = layer.weight.detach().to("cpu")
    compat = config.mode == "ww-compat"
    if layer.kind == "conv2d":
        out_c, in_c, kh, kw = w.shape
        slices = w.permute(2, 3, 0, 1).reshape(kh * kw, out_c, in_c)
        if compat:
            n, m, rf = _ww_conv2d_dims(tuple(int(s) for s in w.shape))
            return _Slices(slices, n, m, rf, True, scale=config.conv2d_scale)
        return _Slices(slices, max(out_c, in_c), min(out_c, in_c), kh * kw, False)
    if layer.kind == "conv1d":
        out_c, in_c, k = w.shape
        if compat:
            # WeightWatcher passes the 3-D tensor to scipy.linalg.svd, which batches over the
            # first axis; the largest min(shape) singular values are kept.
            n, m = max(w.shape), min(w.shape)
            return _Slices(w, int(n), int(m), 1, True, keep=int(m))
        return _Slices(w.permute(2, 0, 1), max(out_c, in_c), min(out_c, in_c), k, False)
    n, m = max(w.shape), min(w.shape)
    return _Slices(w.unsqueeze(0), int(n), int(m), 1, compat)


# --------------------------------------------------------------------------- per layer


@dataclass(frozen=True)
class LayerSpectrum:
    """Spectral diagnostics of one layer (``fit`` is ``None`` with too few eigenvalues).

    ``flags`` holds any of ``over-trained``, ``under-trained``, ``poor fit``,
    ``too few eigenvalues``, ``fit failed``.
    """

    name: str
    tensor: str
    kind: str
    index: int
    n: int
    m: int
    rf: int
    num_evals: int
    evals: np.ndarray = field(repr=False)
    fit: PowerLawFit | None
    mp: MPFit | None
    log_norm: float
    log_spectral_norm: float
    alpha_weighted: float
    log_alpha_norm: float
    stable_rank: float
    entropy: float
    flags: tuple[str, ...]

    @property
    def alpha(self) -> float:
        return float("nan") if self.fit is None else self.fit.alpha


def analyze_layer(layer: WeightLayer, config: SpectralConfig) -> LayerSpectrum:
    """All spectral metrics and flags of one layer."""
    return _spectrum(layer, config, _layer_matrices(layer, config))


def _spectrum(layer: WeightLayer, config: SpectralConfig, mats: _Matrices) -> LayerSpectrum:
    ev = mats.evals
    flags: list[str] = []
    total = float(ev.sum())
    lmax = float(ev[-1]) if ev.size else 0.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_norm = math.log10(total) if total > 0 else float("-inf")
        log_spec = math.log10(lmax) if lmax > 0 else float("-inf")
        stable_rank = total / lmax if lmax > 0 else float("nan")
    fit: PowerLawFit | None = None
    mp: MPFit | None = None
    alpha = float("nan")
    if ev.size < config.min_evals:
        flags.append("too few eigenvalues")
    else:
        fit = fit_power_law(ev)
        if fit.status != "ok":
            flags.append("fit failed")
        else:
            alpha = fit.alpha
            if alpha < config.over_trained_alpha:
                flags.append("over-trained")
            elif alpha > config.under_trained_alpha:
                flags.append("under-trained")
            if config.poor_fit_ks / math.sqrt(max(fit.n_tail, 1)) < fit.D:
                flags.append("poor fit")
        mp = fit_marchenko_pastur(ev, mats.n, mats.m, tw_sigmas=config.spike_tw_sigmas)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        alpha_weighted = alpha * log_spec
        log_alpha_norm = (
            float(np.log10(np.sum(ev**alpha))) if math.isfinite(alpha) else float("nan")
        )
    return LayerSpectrum(
        name=layer.name,
        tensor=layer.tensor,
        kind=layer.kind,
        index=layer.index,
        n=mats.n,
        m=mats.m,
        rf=mats.rf,
        num_evals=int(ev.size),
        evals=ev,
        fit=fit,
        mp=mp,
        log_norm=log_norm,
        log_spectral_norm=log_spec,
        alpha_weighted=alpha_weighted,
        log_alpha_norm=log_alpha_norm,
        stable_rank=stable_rank,
        entropy=spectral_entropy(ev, mats.n),
        flags=tuple(flags),
    )


@dataclass
class SpectralAnalysis:
    """Per-layer spectra plus the tensors that were not analysed."""

    config: SpectralConfig
    layers: list[LayerSpectrum]
    skipped: list[SkippedTensor]

    def fitted(self) -> list[LayerSpectrum]:
        """Layers with a successful power-law fit."""
        return [s for s in self.layers if s.fit is not None and s.fit.status == "ok"]


def _ww_supported(layer: WeightLayer, config: SpectralConfig) -> str | None:
    """Why WeightWatcher 0.7.7 would not analyse ``layer`` (``None`` if it would)."""
    if layer.kind not in ("linear", "conv1d", "conv2d", "embedding"):
        return f"WeightWatcher 0.7.7 does not analyse {layer.kind} matrices (ww-compat mode)"
    shape = layer.shape
    if layer.kind == "conv2d":
        n, m, rf = _ww_conv2d_dims(shape)
    else:
        n, m, rf = max(shape), min(shape), 1
    if m * rf < config.min_evals:
        return f"too few eigenvalues: M·rf = {m * rf} < min_evals {config.min_evals}"
    if config.max_evals is not None and m * rf > config.max_evals:
        return f"too many eigenvalues: M·rf = {m * rf} > max_evals {config.max_evals}"
    if n > config.max_n:
        return f"matrix too large: N = {n} > max_N {config.max_n}"
    return None


def analyze_inventory(
    inventory: LayerInventory, config: SpectralConfig | None = None, *, workers: int | None = None
) -> SpectralAnalysis:
    """Analyse every layer of ``inventory`` (skipping what the config rules out, with reasons).

    The work runs on ``workers`` threads (default: ``torch.get_num_threads()``) in chunks of
    each layer's matrices, the largest first (see ``_analyze_pooled``); the eigen-solvers release
    the GIL, and BLAS/LAPACK are held to one thread each meanwhile so the pool does not
    oversubscribe the cores. Results keep inventory order and do not depend on ``workers``.
    """
    config = config or SpectralConfig()
    todo: list[WeightLayer] = []
    skipped = list(inventory.skipped)
    for layer in inventory.layers:
        reason: str | None
        if config.mode == "ww-compat":
            reason = _ww_supported(layer, config)
        else:
            reason = _default_limits(layer, config)
        if reason is not None:
            skipped.append(SkippedTensor(layer.name, layer.shape, reason))
            continue
        todo.append(layer)
    n_workers = max(1, min(workers or torch.get_num_threads(), len(todo)))
    with _blas_threads(1), torch_threads(1):
        if n_workers == 1:
            out = [analyze_layer(layer, config) for layer in todo]
        else:
            out = _analyze_pooled(todo, config, n_workers)
    return SpectralAnalysis(config, out, skipped)


class _LayerJob:
    """Collects the eigenvalues of one layer's chunks; the thread finishing the last chunk
    computes the layer's metrics (so fits overlap other layers' eigen-solves)."""

    def __init__(self, layer: WeightLayer, config: SpectralConfig, slices: _Slices, chunks: int):
        self.layer, self.config, self.slices = layer, config, slices
        self.parts: list[np.ndarray | None] = [None] * chunks
        self.left = chunks
        self.lock = threading.Lock()
        self.result: LayerSpectrum | None = None

    def run(self, chunk: int, lo: int, hi: int) -> None:
        ev = self.slices.eigvals(lo, hi)
        with self.lock:
            self.parts[chunk] = ev
            self.left -= 1
            last = self.left == 0
        if last:
            parts = [p for p in self.parts if p is not None]
            self.result = _spectrum(self.layer, self.config, self.slices.pooled(parts))


def _analyze_pooled(
    todo: Sequence[WeightLayer], config: SpectralConfig, n_workers: int
) -> list[LayerSpectrum]:
    """Every layer of ``todo`` on ``n_workers`` threads, split into chunks of matrices.

    A whole layer is too coarse a unit: ResNet-18's three 512×512×3×3 convolutions hold ~70% of
    the work, so two workers would idle while one finishes a layer. Each layer is cut into
    chunks of about ``total / (_CHUNKS_PER_WORKER · workers)`` cost (at least one matrix), and
    chunks run largest first; the eigen-solvers and matmuls release the GIL. Results keep
    inventory order and are identical to the one-thread path (each matrix goes through the same
    LAPACK calls; the chunks are pooled in matrix order).
    """
    plans = [_layer_slices(layer, config) for layer in todo]
    total = sum(p.cost() * p.count for p in plans)
    target = total / (_CHUNKS_PER_WORKER * n_workers)
    jobs: list[_LayerJob] = []
    tasks: list[tuple[float, _LayerJob, int, int, int]] = []
    for layer, plan in zip(todo, plans):
        per = max(1, min(plan.count, int(target // max(plan.cost(), 1.0))))
        bounds = [*range(0, plan.count, per), plan.count]
        job = _LayerJob(layer, config, plan, len(bounds) - 1)
        jobs.append(job)
        for c, (lo, hi) in enumerate(itertools.pairwise(bounds)):
            tasks.append(((hi - lo) * plan.cost(), job, c, lo, hi))
    tasks.sort(key=lambda t: -t[0])
    with ThreadPoolExecutor(n_workers) as pool:
        futures = [pool.submit(job.run, c, lo, hi) for _, job, c, lo, hi in tasks]
        for f in futures:
            f.result()
    out: list[LayerSpectrum] = []
    for job in jobs:
        assert job.result is not None  # every chunk ran
        out.append(job.result)
    return out


def _blas_threads(n: int) -> AbstractContextManager[object]:
    """Limit the BLAS/LAPACK thread pools (NumPy's and SciPy's OpenBLAS) to ``n`` threads.

    Uses ``threadpoolctl`` (a dependency of scikit-learn); without it, a no-op.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn always brings it
        return nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def _default_limits(layer: WeightLayer, config: SpectralConfig) -> str | None:
    shape = layer.shape
    n = max(shape[:2]) if len(shape) > 2 else max(shape)
    count = min(shape[:2]) * (math.prod(shape[2:]) if len(shape) > 2 else 1)
    if config.max_evals is not None and count > config.max_evals:
        return f"too many eigenvalues to analyse quickly: {count} > max_evals {config.max_evals}"
    if n > config.max_n:
        return f"matrix too large: larger side {n} > max_n {config.max_n}"
    return None


def most_extreme(layers: Sequence[LayerSpectrum]) -> LayerSpectrum | None:
    """The fitted layer whose α is farthest from the well-trained range [2, 6] (log distance)."""
    best: LayerSpectrum | None = None
    score = -1.0
    for s in layers:
        a = s.alpha
        if not math.isfinite(a) or a <= 0:
            continue
        d = abs(math.log(a / 2)) if a < 2 else abs(math.log(a / 6)) if a > 6 else 0.0
        d += 1e-9 * abs(a - 4)
        if d > score:
            best, score = s, d
    return best

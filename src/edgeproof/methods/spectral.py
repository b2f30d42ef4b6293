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
  ``min(shape)`` singular values kept); only Linear/Conv1d/Conv2d/Embedding modules analysed.
  The eigenvalues come from the same float64 Gram route as ``default`` (WeightWatcher takes the
  singular values, about twice the work); α, D, xmin, log_norm and stable_rank agree with it to
  1e-6 (tests).
  α is scale-invariant, so the two modes give the same α wherever they analyse the same matrix.

The settings are in :mod:`~edgeproof.methods.spectral_config`, the power-law fit in
:mod:`~edgeproof.methods.power_law`, the eigenvalues of a layer in :mod:`~edgeproof.methods.esd`;
this module re-exports their public names and computes the per-layer metrics.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from edgeproof.methods.esd import (
    _layer_matrices,
    _layer_slices,
    _Matrices,
    _Slices,
    _ww_conv2d_dims,
    layer_eigenvalues,
)
from edgeproof.methods.layers import LayerInventory, SkippedTensor, WeightLayer
from edgeproof.methods.power_law import EVALS_THRESH as EVALS_THRESH
from edgeproof.methods.power_law import SMALL_N_CUTOFF as SMALL_N_CUTOFF
from edgeproof.methods.power_law import SMALL_N_KMIN as SMALL_N_KMIN
from edgeproof.methods.power_law import SMALL_N_PENALTY as SMALL_N_PENALTY
from edgeproof.methods.power_law import PowerLawFit, fit_power_law
from edgeproof.methods.spectral_config import KS_CRIT_1PCT as KS_CRIT_1PCT
from edgeproof.methods.spectral_config import SpectralConfig, SpectralMode
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

#: WeightWatcher 0.7.7 constant (constants.py).
WW_EPSILON = 1e-10
#: The layer pool cuts the work into about this many chunks per thread (see _analyze_pooled).
_CHUNKS_PER_WORKER = 4


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
    result: AbstractContextManager[object] = threadpool_limits(limits=n, user_api="blas")
    return result


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

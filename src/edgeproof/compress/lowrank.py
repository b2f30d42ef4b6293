"""Marchenko–Pastur spectral low-rank factorisation of Conv/Linear weights.

Method (as summarised in methods.md for arXiv 2606.02608 and its predecessor 2503.01922; the
papers' full text could not be retrieved here, so the details below are the standard random-matrix
construction, chosen deliberately and stated):

1. Each weight is viewed as an ``M × N`` matrix W (Linear ``(out, in)``; Conv ``(out, in·k…)``),
   ``M ≤ N`` after transposing; singular values s, eigenvalues λ = s² of ``W Wᵀ``.
2. Noise model: i.i.d. entries of variance σ². σ² is fitted iteratively on the bulk: start with
   ``σ² = ‖W‖²_F / (M N)``; the bulk edge is ``λ₊ = σ² (√N + √M)²``; eigenvalues above the
   (Tracy–Widom corrected) edge are spikes; σ² is re-estimated as ``mean(bulk λ) / N`` until the
   spike set stops changing (≤ 20 iterations).
3. Tracy–Widom correction (Johnstone 2001, real Wishart): the largest noise eigenvalue fluctuates
   around ``μ = (√(N−1) + √M)²`` on the scale ``σ_TW = (√(N−1) + √M)(1/√(N−1) + 1/√M)^{1/3}``;
   the threshold is ``σ² (μ + q · σ_TW)`` with q = 0.9793, the 95 % quantile of TW₁.
4. Keep the r singular values above the threshold and factor ``W ≈ (U_r √S_r)(√S_r V_rᵀ)`` only
   if ``r (M + N) < M N`` (it saves parameters); a Linear becomes Linear(in→r, no bias) →
   Linear(r→out); a Conv becomes Conv(in→r, same kernel/stride/padding, no bias) → 1×1 Conv(r→out).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import fx, nn

__all__ = ["LowRankLayer", "factorize_lowrank", "mp_rank", "mp_threshold"]

TW1_Q95 = 0.9793


@dataclass(frozen=True)
class LowRankLayer:
    """What happened to one layer."""

    name: str
    shape: tuple[int, int]
    sigma2: float
    threshold: float
    rank_kept: int
    full_rank: int
    factored: bool
    params_before: int
    params_after: int


def mp_threshold(s: torch.Tensor, m: int, n: int) -> tuple[float, float]:
    """``(σ², eigenvalue threshold)`` for singular values ``s`` of an ``m × n`` matrix, m ≤ n."""
    lam = s.double() ** 2
    sigma2 = float(lam.sum()) / (m * n)
    mu = (math.sqrt(n - 1) + math.sqrt(m)) ** 2
    s_tw = (math.sqrt(n - 1) + math.sqrt(m)) * (1 / math.sqrt(n - 1) + 1 / math.sqrt(m)) ** (1 / 3)
    spikes = -1
    thr = sigma2 * (mu + TW1_Q95 * s_tw)
    for _ in range(20):
        thr = sigma2 * (mu + TW1_Q95 * s_tw)
        above = int((lam > thr).sum())
        if above == spikes or above >= len(lam):
            break
        spikes = above
        bulk = lam[lam <= thr]
        # mean eigenvalue of W Wᵀ under MP is N σ² (over all M eigenvalues, bulk only here)
        sigma2 = float(bulk.mean()) / n if len(bulk) else sigma2
    return sigma2, thr


def mp_rank(w: torch.Tensor) -> tuple[int, float, float]:
    """Number of singular values of ``w`` (2-D) above the TW-corrected MP edge, σ², threshold."""
    m, n = sorted(w.shape)
    if n < 2 or m < 1:
        return min(w.shape), 0.0, 0.0
    s = torch.linalg.svdvals(w.double())
    sigma2, thr = mp_threshold(s, m, n)
    return int((s.double() ** 2 > thr).sum()), sigma2, thr


def factorize_lowrank(
    module: nn.Module, *, min_rank: int = 1, min_dim: int = 16
) -> tuple[fx.GraphModule, list[LowRankLayer]]:
    """BatchNorm-folded copy of ``module`` with every Conv/Linear factored where it saves params.

    Layers whose smaller dimension is below ``min_dim`` are left alone (reported, not factored).
    """
    from edgeproof.compress.folding import fold_batchnorm

    gm = fold_batchnorm(module)
    report: list[LowRankLayer] = []
    for name, mod in list(gm.named_modules()):
        if not isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d)) or getattr(mod, "groups", 1) != 1:
            continue
        w = mod.weight.detach()
        mat = w.reshape(w.shape[0], -1)
        o, i = mat.shape
        if min(o, i) < min_dim:
            # MP asymptotics say nothing about a handful of singular values: leave it alone.
            report.append(
                LowRankLayer(name, (o, i), 0.0, 0.0, min(o, i), min(o, i), False, o * i, o * i)
            )
            continue
        r, sigma2, thr = mp_rank(mat)
        r = max(r, min_rank)
        before = o * i
        after = r * (o + i)
        factored = after < before
        report.append(
            LowRankLayer(
                name,
                (o, i),
                sigma2,
                thr,
                r,
                min(o, i),
                factored,
                before,
                after if factored else before,
            )
        )
        if not factored:
            continue
        u, s, vh = torch.linalg.svd(mat.double(), full_matrices=False)
        root = s[:r].sqrt()
        a = (u[:, :r] * root).float()  # (o, r)
        b = (root[:, None] * vh[:r]).float()  # (r, i)
        bias = getattr(mod, "bias", None)
        first = copy.deepcopy(mod)
        second = copy.deepcopy(mod)
        first.weight = nn.Parameter(b.reshape(r, *w.shape[1:]))
        first.bias = None
        second.weight = nn.Parameter(a.reshape(o, r, *([1] * (w.ndim - 2))))
        second.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        if isinstance(mod, nn.Linear):
            first.out_features, second.in_features = r, r
        else:
            first.out_channels, second.in_channels = r, r
            # the second factor is a 1x1 convolution: stride 1, no padding, no dilation
            second.kernel_size = (1,) * (w.ndim - 2)
            second.stride = (1,) * (w.ndim - 2)
            second.padding = (0,) * (w.ndim - 2)
            second.dilation = (1,) * (w.ndim - 2)
        parent_name, _, attr = name.rpartition(".")
        parent = gm.get_submodule(parent_name) if parent_name else gm
        setattr(parent, attr, nn.Sequential(first, second).eval())
    gm.recompile()
    return gm, report

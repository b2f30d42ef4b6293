"""Input-space Fisher information and its exact largest eigenvalue per sample.

Following Zhang et al. (arXiv 2606.04767; code franz-chang/SRP): for a classifier with logits
``z(x)`` and softmax ``p``, the Fisher information of the predictive distribution with respect to
the input is

    F(x) = J_zᵀ (diag p − p pᵀ) J_z,          J_z = ∂z/∂x  (K × d),

so that ``KL(p_x ‖ p_{x+δ}) ≈ ½ δᵀ F(x) δ``; ``λ_max(F)`` is the worst-case local sensitivity of the
prediction to an input perturbation (large λ_max → small perturbations move the prediction).

**Exact λ_max with K backward passes.** ``A = diag p − p pᵀ`` is symmetric positive semi-definite
(a K×K covariance), so ``F = (A^{1/2} J)ᵀ (A^{1/2} J)`` and its non-zero eigenvalues are those of
the K×K matrix ``A^{1/2} J Jᵀ A^{1/2}``. We get J row by row (one backward pass per class over the
whole batch), form ``J Jᵀ`` and ``A^{1/2}`` (by a symmetric eigendecomposition, negative rounding
eigenvalues clipped to 0) in float64, and take the top eigenvalue with ``eigvalsh`` — exact up to
floating point, unlike power iteration or random Rayleigh quotients, which underestimate it.

One backward pass of ``Σₙ z_k(xₙ)`` gives every sample's row k of J at once; this needs the model
to treat samples independently (eval mode: BatchNorm uses running statistics, no dropout).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats as sstats
from torch import nn

from edgeproof.results import Interval

__all__ = [
    "Correlation",
    "fisher_lambda_max",
    "fisher_matrix_lambda_max",
    "input_jacobian",
    "spearman_with_ci",
]


def input_jacobian(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(N, K)`` and the input Jacobian of the logits ``(N, K, d)`` (K backward passes)."""
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        z = model(xg)
        k = z.shape[1]
        rows = []
        for c in range(k):
            (g,) = torch.autograd.grad(z[:, c].sum(), xg, retain_graph=c < k - 1)
            rows.append(g.reshape(x.shape[0], -1))
    return z.detach(), torch.stack(rows, dim=1)


def fisher_matrix_lambda_max(logits: torch.Tensor, jac: torch.Tensor) -> torch.Tensor:
    """Exact ``λ_max(Jᵀ(diag p − ppᵀ)J)`` from logits ``(N, K)`` and Jacobians ``(N, K, d)``.

    Computed as the top eigenvalue of the K×K matrix ``A^{1/2} J Jᵀ A^{1/2}``, in float64.
    """
    p = torch.softmax(logits.double(), dim=1)
    a = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)
    w, u = torch.linalg.eigh(a)
    root = (u * w.clamp(min=0).sqrt().unsqueeze(1)) @ u.transpose(1, 2)
    j = jac.double()
    gram = j @ j.transpose(1, 2)
    c = root @ gram @ root
    c = 0.5 * (c + c.transpose(1, 2))
    result: torch.Tensor = torch.linalg.eigvalsh(c)[:, -1].clamp(min=0)
    return result


def fisher_lambda_max(model: nn.Module, x: torch.Tensor, *, batch_size: int = 64) -> np.ndarray:
    """``(N,)`` float64: exact largest eigenvalue of the input-space Fisher at each sample.

    ``model`` must be in eval mode (see the module docstring); inputs are in the raw domain.
    """
    out: list[np.ndarray] = []
    for i in range(0, x.shape[0], batch_size):
        logits, jac = input_jacobian(model, x[i : i + batch_size])
        out.append(fisher_matrix_lambda_max(logits, jac).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float64)


@dataclass(frozen=True)
class Correlation:
    """A rank correlation with its confidence interval.

    Attributes:
        rho: Spearman's ρ.
        ci: interval by the Fisher z-transform with Fieller, Hartley & Pearson's (1957) variance
            ``1.06/(n − 3)`` for Spearman's ρ.
        p_value: two-sided p-value of ρ = 0 (scipy's t approximation).
        n: number of pairs.
    """

    rho: float
    ci: Interval
    p_value: float
    n: int


def spearman_with_ci(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> Correlation:
    """Spearman's ρ of ``a`` and ``b`` with a Fisher-z interval (NaN when undefined)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n = int(a.size)
    nan = Correlation(
        float("nan"), Interval(float("nan"), float("nan"), level, "fisher-z"), float("nan"), n
    )
    if n < 4 or np.all(a == a[0]) or np.all(b == b[0]):
        return nan
    res = sstats.spearmanr(a, b)
    rho = float(res.statistic)
    if not np.isfinite(rho):
        return nan
    z = float(np.arctanh(np.clip(rho, -0.999999, 0.999999)))
    half = float(sstats.norm.ppf(0.5 + level / 2)) * float(np.sqrt(1.06 / (n - 3)))
    ci = Interval(
        float(np.tanh(z - half)),
        float(np.tanh(z + half)),
        level,
        "fisher-z (Fieller 1957, var 1.06/(n-3))",
    )
    return Correlation(rho, ci, float(res.pvalue), n)

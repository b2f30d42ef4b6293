"""Takeuchi's information criterion (TIC) and the gradient-conflict matrix.

**TIC** (Takeuchi 1976; in the form of Thomas, Pedregosa, van Merriënboer, Manzagol, Bengio & Le
Roux, "On the interplay between noise and curvature and its effect on optimization and
generalization", AISTATS 2020). For the mean loss ``L(θ) = (1/n) Σᵢ ℓᵢ(θ)`` over ``n`` samples
(here the mean cross-entropy, as in :mod:`edgeproof.methods.hessian`), the expected gap between
the loss on new data and on the ``n`` samples a model was fitted to is, to first order,
``tr(H⁻¹C)/n``, with

* ``H`` the Hessian of ``L``, damped: ``H_λ = H + λI`` with ``λ = damping`` (an absolute constant in
  the loss's units per unit² of parameter), which keeps the inverse bounded by ``1/λ`` in the flat
  directions where ``H`` is singular;
* ``C = (1/n) Σᵢ (gᵢ − ḡ)(gᵢ − ḡ)ᵀ`` the covariance of the per-sample loss gradients
  ``gᵢ = ∂ℓᵢ/∂θ`` (the plug-in estimate, divided by ``n``; ``ḡ`` their mean).

``tr(H_λ⁻¹C)`` is the model's *effective number of parameters* (``P`` for a well-specified model at
its optimum, where ``C = H``); ``tic = tr(H_λ⁻¹C)/n`` is in nats. Reported as estimated on the
samples given: a first-order estimate, which is meaningful when ``H_λ`` is positive definite (near a
minimum); where it is not, the value is ``NaN`` and ``positive_definite`` is False.

Two estimators:

* ``exact`` — dense ``H`` (:func:`~edgeproof.methods.hessian.exact_hessian`) and per-sample
  gradients (``torch.func.vmap`` of ``grad``), then ``tr(solve(H_λ, C))``; for small models.
* ``stochastic`` — Hutchinson in sample space: with ``G̃`` the ``n×P`` matrix of centred gradients,
  ``C = G̃ᵀG̃/n``, so for Rademacher ``r ∈ {±1}ⁿ`` and ``z = G̃ᵀr/√n`` we have ``E[zzᵀ] = C`` and
  ``tr(H_λ⁻¹C) = E[zᵀH_λ⁻¹z]``. ``z`` needs no per-sample gradients:
  ``G̃ᵀr = ∂(Σᵢ rᵢℓᵢ)/∂θ − (Σᵢ rᵢ) ḡ`` is one weighted backward pass. ``H_λ⁻¹z`` is solved by
  conjugate gradients on Hessian-vector products (stop at ``‖residual‖ ≤ cg_tol·‖z‖`` or
  ``cg_max_iter``; a non-positive curvature ``pᵀH_λp ≤ 0`` proves ``H_λ`` indefinite). Truncated CG
  under-estimates ``zᵀH_λ⁻¹z`` (CG minimises the ``H_λ``-norm error, and the deficit is that
  error²), so probes where CG stopped on ``cg_max_iter`` are counted and reported. Probes stop on
  the confidence interval as for the Hessian trace
  (:func:`~edgeproof.methods.hessian.sequential_mean`).

**Gradient conflict.** For each class ``c`` present, ``g_c = ∂/∂θ [(1/n_c) Σ_{i: yᵢ=c} ℓᵢ]`` (the
mean loss gradient over that class's samples); the matrix is ``cos(g_c, g_c')``. At a minimum of the
balanced training loss ``Σ_c g_c ≈ 0``, so the off-diagonal cosines average about ``−1/(K−1)``;
pairs far below that pull the shared weights in opposite directions (improving one class costs the
other).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeproof.errors import OptionError
from edgeproof.methods.hessian import (
    HessianOperator,
    MeanEstimate,
    exact_hessian,
    rademacher,
    sequential_mean,
    trainable,
)
from edgeproof.results import Interval

__all__ = [
    "ConjugateGradient",
    "GradientConflict",
    "TICEstimate",
    "conjugate_gradient",
    "gradient_conflict",
    "per_sample_gradients",
    "tic",
]

TICMethod = Literal["auto", "exact", "stochastic"]


def _check_damping(damping: float) -> None:
    if not damping >= 0 or not math.isfinite(damping):
        raise OptionError(
            "damping", f"{damping} is not a non-negative number", "use e.g. 1e-3 (0: undamped)"
        )


# ------------------------------------------------------------------------------------------------
# Conjugate gradients


@dataclass(frozen=True)
class ConjugateGradient:
    """Result of one CG solve of ``A u = b``.

    Attributes:
        solution: ``u``.
        iterations: products with ``A``.
        converged: ``‖b − Au‖ ≤ tol·‖b‖``.
        positive_definite: False if a direction with ``pᵀAp ≤ 0`` was met (``A`` is not PD).
    """

    solution: torch.Tensor
    iterations: int
    converged: bool
    positive_definite: bool


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    *,
    tol: float = 1e-4,
    max_iter: int = 100,
) -> ConjugateGradient:
    """Conjugate gradients (Hestenes & Stiefel 1952) for symmetric ``A``, from ``u₀ = 0``."""
    u = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = float(r @ r)
    target = tol * math.sqrt(float(b @ b))
    if math.sqrt(rr) <= target:
        return ConjugateGradient(u, 0, True, True)
    for it in range(1, max_iter + 1):
        ap = matvec(p)
        pap = float(p @ ap)
        if pap <= 0:
            return ConjugateGradient(u, it, False, False)
        a = rr / pap
        u = u + a * p
        r = r - a * ap
        rr_new = float(r @ r)
        if math.sqrt(rr_new) <= target:
            return ConjugateGradient(u, it, True, True)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return ConjugateGradient(u, max_iter, False, True)


# ------------------------------------------------------------------------------------------------
# Per-sample gradients


def per_sample_gradients(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256
) -> torch.Tensor:
    """``(n, P)`` float64 gradients of each sample's cross-entropy (eval mode).

    ``torch.func.vmap`` over ``torch.func.grad`` of a one-sample ``functional_call``; where the
    model has an operation vmap cannot batch, one backward pass per sample.
    """
    with trainable(module):
        names = [n for n, p in module.named_parameters() if p.is_floating_point()]
        params = {n: p.detach() for n, p in module.named_parameters() if p.is_floating_point()}
        buffers = {n: b.detach() for n, b in module.named_buffers()}
        dtype = next(iter(params.values())).dtype
        xd = x.to(dtype)

        def one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
            out = torch.func.functional_call(module, (p, buffers), (xi.unsqueeze(0),))
            return F.cross_entropy(out, yi.unsqueeze(0))

        rows: list[torch.Tensor] = []
        try:
            fn = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))
            for i in range(0, x.shape[0], batch_size):
                g = fn(params, xd[i : i + batch_size], y[i : i + batch_size])
                rows.append(torch.cat([g[n].reshape(g[n].shape[0], -1).double() for n in names], 1))
        except (RuntimeError, NotImplementedError):
            rows = []
            plist = [p for p in module.parameters() if p.is_floating_point()]
            for i in range(x.shape[0]):
                with torch.enable_grad():
                    loss = F.cross_entropy(module(xd[i : i + 1]), y[i : i + 1])
                    gs = torch.autograd.grad(loss, plist)
                rows.append(torch.cat([t.reshape(1, -1).double() for t in gs], 1))
    return torch.cat(rows, 0)


# ------------------------------------------------------------------------------------------------
# TIC


@dataclass(frozen=True)
class TICEstimate:
    """``tr(H_λ⁻¹C)`` and ``tic = tr(H_λ⁻¹C)/n`` (see the module docstring).

    Attributes:
        complexity: ``tr(H_λ⁻¹C)``, the effective number of parameters (NaN if ``H_λ`` is not PD).
        ci: its confidence interval (stochastic) or ``None`` (exact).
        tic: ``complexity / n``, in nats.
        tic_ci: its interval, or ``None``.
        samples: ``n``.
        damping: ``λ``.
        method: ``"exact"`` or ``"stochastic"``.
        positive_definite: ``H_λ`` was found positive definite (exact: its smallest eigenvalue is
            ``> 0``; stochastic: no CG step met non-positive curvature).
        min_eigenvalue: smallest eigenvalue of ``H_λ`` (exact only, else NaN).
        probes: Hutchinson probes (stochastic; 0 for exact).
        cg_iterations: total CG products (stochastic).
        cg_unconverged: probes whose CG solve stopped on ``cg_max_iter``.
        converged: the probe stopping rule was met (exact: True).
    """

    complexity: float
    ci: Interval | None
    tic: float
    tic_ci: Interval | None
    samples: int
    damping: float
    method: Literal["exact", "stochastic"]
    positive_definite: bool
    min_eigenvalue: float = float("nan")
    probes: int = 0
    cg_iterations: int = 0
    cg_unconverged: int = 0
    converged: bool = True


def _tic_exact(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, damping: float, batch_size: int
) -> TICEstimate:
    n = int(x.shape[0])
    h = exact_hessian(module, x, y, batch_size=batch_size)
    g = per_sample_gradients(module, x, y, batch_size=batch_size)
    gc = g - g.mean(dim=0, keepdim=True)
    c = gc.T @ gc / n
    hl = h + damping * torch.eye(h.shape[0], dtype=torch.float64)
    w, v = torch.linalg.eigh(hl)
    lmin = float(w[0])
    # tr(H_λ⁻¹ C) = Σ_j (v_jᵀ C v_j) / w_j
    value = float("nan") if lmin <= 0 else float(((v.T @ c @ v).diagonal() / w).sum())
    return TICEstimate(
        complexity=value,
        ci=None,
        tic=value / n,
        tic_ci=None,
        samples=n,
        damping=damping,
        method="exact",
        positive_definite=lmin > 0,
        min_eigenvalue=lmin,
    )


def _weighted_gradient(op: HessianOperator, r: torch.Tensor) -> torch.Tensor:
    """``∂(Σᵢ rᵢ ℓᵢ)/∂θ`` as a flat float64 vector (one backward per batch)."""
    total = torch.zeros(op.size, dtype=torch.float64)
    with torch.enable_grad():
        for i, (xb, yb) in enumerate(op.batches()):
            rb = r[i * op.batch_size : i * op.batch_size + xb.shape[0]].to(op.dtype)
            loss = (F.cross_entropy(op.module(xb), yb, reduction="none") * rb).sum()
            total += op.flatten(torch.autograd.grad(loss, op.params))
    return total


def _tic_stochastic(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    damping: float,
    batch_size: int,
    tol: float,
    min_probes: int,
    max_probes: int,
    cg_tol: float,
    cg_max_iter: int,
    level: float,
    seed: int,
) -> TICEstimate:
    n = int(x.shape[0])
    g = torch.Generator().manual_seed(seed)
    state = {"cg": 0, "unconverged": 0, "pd": True}
    with HessianOperator(module, x, y, batch_size=batch_size) as op:
        mean_grad = op.gradient()  # ∂L/∂θ = ḡ

        def damped(v: torch.Tensor) -> torch.Tensor:
            return op.matvec(v) + damping * v

        def draw() -> float:
            r = rademacher(n, g)
            z = (_weighted_gradient(op, r) - float(r.sum()) * mean_grad) / math.sqrt(n)
            sol = conjugate_gradient(damped, z, tol=cg_tol, max_iter=cg_max_iter)
            state["cg"] += sol.iterations
            if not sol.positive_definite:
                state["pd"] = False
                raise _Indefinite
            if not sol.converged:
                state["unconverged"] += 1
            return float(z @ sol.solution)

        try:
            est: MeanEstimate | None = sequential_mean(
                draw, tol=tol, min_probes=min_probes, max_probes=max_probes, level=level
            )
        except _Indefinite:
            est = None
    if est is None:
        nan = float("nan")
        return TICEstimate(
            nan, None, nan, None, n, damping, "stochastic", False, cg_iterations=state["cg"]
        )
    tic_est = est.scaled(1.0 / n)
    return TICEstimate(
        complexity=est.value,
        ci=est.ci,
        tic=tic_est.value,
        tic_ci=tic_est.ci,
        samples=n,
        damping=damping,
        method="stochastic",
        positive_definite=True,
        probes=est.probes,
        cg_iterations=int(state["cg"]),
        cg_unconverged=int(state["unconverged"]),
        converged=est.converged,
    )


class _Indefinite(Exception):
    """CG met non-positive curvature: the damped Hessian is not positive definite."""


def tic(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    damping: float = 1e-3,
    method: TICMethod = "auto",
    exact_max_parameters: int = 2000,
    batch_size: int = 256,
    tol: float = 0.1,
    min_probes: int = 10,
    max_probes: int = 50,
    cg_tol: float = 1e-3,
    cg_max_iter: int = 100,
    level: float = 0.95,
    seed: int = 0,
) -> TICEstimate:
    """Takeuchi's information criterion ``tr((H + λI)⁻¹C)/n`` (see the module docstring).

    Args:
        module, x, y: classifier and samples (mean cross-entropy over them).
        damping: ``λ ≥ 0`` added to the Hessian's diagonal.
        method: ``exact``, ``stochastic``, or ``auto`` (exact when the model has at most
            ``exact_max_parameters`` floating-point parameters).
        batch_size: samples per forward/backward pass.
        tol, min_probes, max_probes, level: the probe stopping rule (stochastic).
        cg_tol, cg_max_iter: each CG solve's relative residual and product budget (stochastic).
        seed: seeds the probes.
    """
    _check_damping(damping)
    if method not in ("auto", "exact", "stochastic"):
        raise OptionError(
            "method", f"unknown TIC method {method!r}", "use auto, exact or stochastic"
        )
    if x.shape[0] < 2:
        raise OptionError("x", f"{x.shape[0]} samples", "TIC needs at least 2 samples")
    size = sum(p.numel() for p in module.parameters() if p.is_floating_point())
    use_exact = method == "exact" or (method == "auto" and size <= exact_max_parameters)
    if use_exact:
        return _tic_exact(module, x, y, damping, batch_size)
    return _tic_stochastic(
        module,
        x,
        y,
        damping=damping,
        batch_size=batch_size,
        tol=tol,
        min_probes=min_probes,
        max_probes=max_probes,
        cg_tol=cg_tol,
        cg_max_iter=cg_max_iter,
        level=level,
        seed=seed,
    )


# ------------------------------------------------------------------------------------------------
# Gradient conflict


@dataclass(frozen=True)
class GradientConflict:
    """Cosine similarities of the per-class mean loss gradients.

    Attributes:
        cosine: ``(K, K)`` matrix over the classes present (symmetric, unit diagonal).
        classes: the labels of its rows.
        norms: ``(K,)`` norms of the per-class gradients.
        counts: samples per class.
    """

    cosine: np.ndarray
    classes: tuple[int, ...]
    norms: np.ndarray
    counts: tuple[int, ...]

    def off_diagonal(self) -> np.ndarray:
        """The cosines of every pair ``c < c'``."""
        iu = np.triu_indices(len(self.classes), k=1)
        out: np.ndarray = self.cosine[iu]
        return out

    def most_conflicting(self, count: int = 3) -> list[tuple[int, int, float]]:
        """The ``count`` pairs ``(c, c', cos)`` with the most negative cosine."""
        iu = np.triu_indices(len(self.classes), k=1)
        order = np.argsort(self.cosine[iu])[:count]
        return [
            (self.classes[iu[0][o]], self.classes[iu[1][o]], float(self.cosine[iu][o]))
            for o in order
        ]


def gradient_conflict(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 256
) -> GradientConflict:
    """``cos(g_c, g_c')`` of the per-class mean cross-entropy gradients (eval mode)."""
    if x.shape[0] == 0:
        raise OptionError("x", "no samples", "give at least one sample")
    classes = torch.unique(y)
    grads: list[torch.Tensor] = []
    counts: list[int] = []
    with trainable(module) as params:
        dtype = params[0].dtype
        for c in classes:
            idx = torch.nonzero(y == c).flatten()
            total = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)
            for i in range(0, idx.numel(), batch_size):
                sel = idx[i : i + batch_size]
                with torch.enable_grad():
                    out = module(x[sel].to(dtype))
                    loss = F.cross_entropy(out, y[sel], reduction="sum") / idx.numel()
                    gs = torch.autograd.grad(loss, params)
                total += torch.cat([t.reshape(-1).double() for t in gs])
            grads.append(total)
            counts.append(int(idx.numel()))
    g = torch.stack(grads)
    norms = g.norm(dim=1)
    unit = g / torch.where(norms > 0, norms, torch.ones_like(norms))[:, None]
    cos = (unit @ unit.T).clamp(-1.0, 1.0)
    cos.fill_diagonal_(1.0)
    cos_np = cos.numpy()
    zero = (norms == 0).numpy()
    cos_np[zero, :] = np.nan
    cos_np[:, zero] = np.nan
    return GradientConflict(
        cosine=0.5 * (cos_np + cos_np.T),
        classes=tuple(int(c) for c in classes),
        norms=norms.numpy(),
        counts=tuple(counts),
    )

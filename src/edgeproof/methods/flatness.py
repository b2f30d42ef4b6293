"""Flatness of a model's minimum in two numbers, for comparing compression candidates.

:func:`flatness` returns the top Hessian eigenvalue of the mean cross-entropy (the sharpness,
:func:`edgeproof.methods.hessian.top_eigenvalues`) and NC1 of the penultimate features
(:func:`edgeproof.methods.collapse.neural_collapse`) on a seeded subset of the samples, within a
:class:`FlatnessBudget`. Sharper minima (larger λ₁) lose more loss per unit of weight change, so a
compressed candidate whose λ₁ grew has moved to a more fragile point; NC1 growing means its
features separate the classes less well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgeproof.errors import OptionError, SpecError
from edgeproof.methods.collapse import neural_collapse, penultimate
from edgeproof.methods.hessian import HessianOperator, top_eigenvalues

__all__ = ["Flatness", "FlatnessBudget", "flatness", "subsample"]


@dataclass(frozen=True)
class FlatnessBudget:
    """How much work :func:`flatness` may do.

    Attributes:
        max_samples: at most this many samples (a seeded random subset), ``None`` for all.
        max_iterations: Lanczos steps (= Hessian-vector products) for λ₁.
        tol: Lanczos stops when the Ritz residual is ``≤ tol·|λ₁|``.
        batch_size: samples per forward/backward pass.
        seed: the subset and the Lanczos start vector.
    """

    max_samples: int | None = 256
    max_iterations: int = 50
    tol: float = 1e-3
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_samples is not None and self.max_samples < 1:
            raise OptionError(
                "max_samples", f"{self.max_samples} is too few", "use >= 1, or None for all"
            )
        if self.max_iterations < 1:
            raise OptionError("max_iterations", f"{self.max_iterations} is too few", "use >= 1")
        if not self.tol > 0:
            raise OptionError("tol", f"{self.tol} is not a positive tolerance", "use e.g. 1e-3")
        if self.batch_size < 1:
            raise OptionError("batch_size", f"{self.batch_size} is too few", "use >= 1")


@dataclass(frozen=True)
class Flatness:
    """Sharpness and collapse of one model on one sample set.

    Attributes:
        top_eigenvalue: λ₁ of the Hessian of the mean cross-entropy.
        residual: the Lanczos residual of λ₁ (an eigenvalue lies within it).
        converged: the Lanczos stopping rule was met within the budget.
        nc1: ``Tr(Σ_W Σ_B†)/K`` of the penultimate features (NaN without an ``nn.Linear`` head).
        loss: the mean cross-entropy on the samples.
        samples: how many samples were used.
        hessian_vector_products: the work done.
    """

    top_eigenvalue: float
    residual: float
    converged: bool
    nc1: float
    loss: float
    samples: int
    hessian_vector_products: int


def subsample(n: int, max_samples: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``range(n)`` of at most ``max_samples``."""
    if max_samples is not None and max_samples < 1:
        raise OptionError("max_samples", f"{max_samples} is too few", "use >= 1, or None for all")
    if max_samples is None or n <= max_samples:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_samples, replace=False))


def flatness(
    module: nn.Module,
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    budget: FlatnessBudget | None = None,
) -> Flatness:
    """λ₁ of the loss Hessian and NC1 of ``module`` on ``(x, y)`` within ``budget``."""
    b = budget or FlatnessBudget()
    xt = torch.as_tensor(x)
    yt = torch.as_tensor(y).long()
    index = torch.from_numpy(subsample(int(xt.shape[0]), b.max_samples, b.seed))
    xs, ys = xt[index], yt[index]
    with HessianOperator(module, xs, ys, batch_size=b.batch_size) as op:
        top = top_eigenvalues(op, 1, tol=b.tol, max_iter=b.max_iterations, seed=b.seed)
        products, loss = op.products, op.loss
    try:
        feats = penultimate(module, xs, batch_size=b.batch_size)
        nc1 = neural_collapse(feats.features, ys.numpy()).nc1
    except SpecError:
        nc1 = math.nan
    return Flatness(
        top_eigenvalue=float(top.values[0]),
        residual=float(top.residuals[0]),
        converged=top.converged,
        nc1=float(nc1),
        loss=float(loss),
        samples=int(xs.shape[0]),
        hessian_vector_products=int(products),
    )

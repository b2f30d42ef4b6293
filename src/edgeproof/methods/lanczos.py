"""The spectrum of a symmetric operator (see :mod:`~edgeproof.methods.hessian`): its top
eigenvalues by Lanczos with full reorthogonalisation, and its spectral density by stochastic
Lanczos quadrature."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from edgeproof.errors import OptionError
from edgeproof.methods.linear_operator import (
    LinearOperator,
    _check_positive,
    _check_tol,
    rademacher,
)


@dataclass(frozen=True)
class Eigenpairs:
    """Top eigenvalues of a symmetric operator, by Lanczos.

    Attributes:
        values: ``(k,)`` Ritz values, largest first.
        vectors: ``(k, P)`` orthonormal float64 Ritz vectors.
        residuals: ``(k,)`` ``‖H yᵢ − θᵢ yᵢ‖``: an eigenvalue lies within this of each value.
        iterations: Lanczos steps taken (= operator products).
        converged: every residual met ``≤ tol·|θᵢ|`` (or the Krylov space became invariant).
        tol: the relative residual tolerance.
    """

    values: np.ndarray
    vectors: torch.Tensor
    residuals: np.ndarray
    iterations: int
    converged: bool
    tol: float


def _orthogonalise(w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``w`` minus its projection on the rows of ``basis`` (classical Gram–Schmidt, twice)."""
    if basis.shape[0] == 0:
        return w
    for _ in range(2):
        w = w - basis.T @ (basis @ w)
    return w


@dataclass
class _Lanczos:
    """State of one Lanczos run with full reorthogonalisation."""

    op: LinearOperator
    q: torch.Tensor  # (m+1, P) basis rows
    alpha: list[float] = field(default_factory=list)
    beta: list[float] = field(default_factory=list)
    invariant: bool = False

    @classmethod
    def start(cls, op: LinearOperator, v0: torch.Tensor, max_steps: int) -> _Lanczos:
        q = torch.zeros(max_steps + 1, op.size, dtype=torch.float64)
        q[0] = v0 / v0.norm()
        return cls(op, q)

    @property
    def steps(self) -> int:
        return len(self.alpha)

    def step(self) -> None:
        j = self.steps
        w = self.op.matvec(self.q[j])
        a = float(self.q[j] @ w)
        w = w - a * self.q[j]
        if j > 0:
            w = w - self.beta[-1] * self.q[j - 1]
        w = _orthogonalise(w, self.q[: j + 1])
        b = float(w.norm())
        self.alpha.append(a)
        self.beta.append(b)
        scale = max(abs(x) for x in self.alpha) if self.alpha else 1.0
        if b <= 1e-10 * max(scale, 1e-300):
            self.invariant = True
        elif j + 1 < self.q.shape[0]:
            self.q[j + 1] = w / b

    def tridiagonal(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (ascending) and eigenvectors of ``T_j``."""
        m = self.steps
        t = np.diag(np.asarray(self.alpha))
        if m > 1:
            off = np.asarray(self.beta[: m - 1])
            t += np.diag(off, 1) + np.diag(off, -1)
        w, s = np.linalg.eigh(t)
        return w, s


def top_eigenvalues(
    op: LinearOperator,
    k: int = 1,
    *,
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
) -> Eigenpairs:
    """The ``k`` largest eigenvalues of ``op`` by Lanczos with full reorthogonalisation.

    Stops when each of the top ``k`` Ritz residuals is ``≤ tol·|θᵢ|`` (see the module docstring),
    when the Krylov space is invariant, or after ``max_iter`` steps (``converged=False``).
    """
    _check_positive("k", k)
    _check_positive("max_iter", max_iter)
    _check_tol("tol", tol)
    steps = min(max_iter, op.size)
    g = torch.Generator().manual_seed(seed)
    run = _Lanczos.start(op, torch.randn(op.size, generator=g, dtype=torch.float64), steps)
    converged = False
    while run.steps < steps:
        run.step()
        if run.steps < min(k, op.size) and not run.invariant:
            continue
        w, s = run.tridiagonal()
        top = np.arange(w.size - 1, max(w.size - 1 - k, -1), -1)
        res = run.beta[-1] * np.abs(s[-1, top])
        if run.invariant or np.all(res <= tol * np.abs(w[top])):
            converged = True
            break
    w, s = run.tridiagonal()
    m = run.steps
    kk = min(k, m)
    top = np.arange(w.size - 1, w.size - 1 - kk, -1)
    res = 0.0 * w[top] if run.invariant else run.beta[-1] * np.abs(s[-1, top])
    vectors = torch.from_numpy(np.ascontiguousarray(s[:, top].T)) @ run.q[:m]
    return Eigenpairs(
        values=w[top].copy(),
        vectors=vectors,
        residuals=np.asarray(res, dtype=np.float64),
        iterations=m,
        converged=converged,
        tol=float(tol),
    )


@dataclass(frozen=True)
class SpectralDensity:
    """SLQ quadrature of the eigenvalue density.

    Attributes:
        nodes: ``(runs, m)`` Gauss quadrature nodes (Ritz values of each run).
        weights: ``(runs, m)`` weights, each row summing to 1.
        num_parameters: ``P``, the operator's size.
        residuals: ``(runs, m)`` Ritz residuals ``β_m |s_{m,j}|`` of the nodes (0 where the run
            ended on an invariant subspace): an eigenvalue lies within it of each node.
    """

    nodes: np.ndarray
    weights: np.ndarray
    num_parameters: int
    residuals: np.ndarray

    @property
    def runs(self) -> int:
        return int(self.nodes.shape[0])

    def default_sigma(self) -> float:
        """PyHessian's ``density_plot`` width: ``σ² = 1e-5 · max(1, λ_max − λ_min)``."""
        lo = float(np.mean(self.nodes.min(axis=1)))
        hi = float(np.mean(self.nodes.max(axis=1)))
        return math.sqrt(1e-5 * max(1.0, hi - lo))

    def grid(self, points: int = 2000, sigma: float | None = None) -> np.ndarray:
        """Evenly spaced points covering every node ± 6σ."""
        s = self.default_sigma() if sigma is None else sigma
        return np.linspace(self.nodes.min() - 6 * s, self.nodes.max() + 6 * s, points)

    def density(self, t: np.ndarray, sigma: float | None = None) -> np.ndarray:
        """``φ(t) = (1/runs) Σ_runs Σⱼ τⱼ N(t; θⱼ, σ²)`` (integrates to 1 over the real line)."""
        s = self.default_sigma() if sigma is None else float(sigma)
        if not s > 0:
            raise OptionError("sigma", f"{sigma} is not a positive width", "use e.g. 1e-2")
        t = np.asarray(t, dtype=np.float64)
        flat = t.reshape(-1)
        keep = self.weights.reshape(-1) > 0
        nodes = self.nodes.reshape(-1)[keep]
        w = self.weights.reshape(-1)[keep] / (self.runs * s * math.sqrt(2 * math.pi))
        out = np.empty_like(flat)
        step = max(1, 2**20 // max(nodes.size, 1))  # bounded memory: ~8 MB per chunk
        for i in range(0, flat.size, step):
            d = (flat[i : i + step, None] - nodes) / s
            out[i : i + step] = np.exp(-0.5 * d * d) @ w
        return out.reshape(t.shape)

    def moment(self, k: int) -> float:
        """``(1/runs) Σ Σⱼ τⱼ θⱼᵏ``: the quadrature estimate of ``tr(Hᵏ)/P`` (no broadening)."""
        return float(np.mean(np.sum(self.weights * self.nodes**k, axis=1)))

    def mass_below(self, threshold: float) -> float:
        """Quadrature weight of nodes below ``threshold`` (fraction of the spectrum)."""
        return float(np.mean(np.sum(self.weights * (self.nodes < threshold), axis=1)))


def slq_density(
    op: LinearOperator, *, iterations: int = 80, runs: int = 1, seed: int = 0
) -> SpectralDensity:
    """Spectral density by stochastic Lanczos quadrature (see the module docstring).

    Each run: ``min(iterations, P)`` Lanczos steps with full reorthogonalisation from a
    normalised Rademacher vector (fewer if the Krylov space becomes invariant; the missing nodes
    get weight 0).
    """
    _check_positive("iterations", iterations)
    _check_positive("runs", runs)
    g = torch.Generator().manual_seed(seed)
    steps = min(iterations, op.size)
    nodes = np.zeros((runs, steps))
    weights = np.zeros((runs, steps))
    residuals = np.zeros((runs, steps))
    for r in range(runs):
        run = _Lanczos.start(op, rademacher(op.size, g), steps)
        while run.steps < steps and not run.invariant:
            run.step()
        w, s = run.tridiagonal()
        nodes[r, : w.size] = w
        weights[r, : w.size] = s[0] ** 2
        if not run.invariant:
            residuals[r, : w.size] = run.beta[-1] * np.abs(s[-1])
        if w.size < steps:  # invariant subspace: pad with zero-weight copies of the last node
            nodes[r, w.size :] = w[-1]
    return SpectralDensity(
        nodes=nodes, weights=weights, num_parameters=op.size, residuals=residuals
    )

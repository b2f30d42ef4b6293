"""The trace of a symmetric operator by Hutchinson's estimator (see
:mod:`~edgeproof.methods.hessian`), sampled until its Student-t confidence interval is narrow
enough (:func:`sequential_mean`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats as sstats

from edgeproof.errors import OptionError
from edgeproof.methods.linear_operator import (
    LinearOperator,
    _check_positive,
    _check_tol,
    rademacher,
)
from edgeproof.results import Interval


@dataclass(frozen=True)
class MeanEstimate:
    """A Monte-Carlo mean with its Student-t confidence interval.

    Attributes:
        value: the sample mean.
        ci: ``mean ± t_{n−1, (1+level)/2} · s/√n``.
        samples: every draw, in order.
        converged: the stopping rule (half-width ``≤ tol·|mean|``) was met before ``max_probes``.
        tol: the relative half-width asked for.
    """

    value: float
    ci: Interval
    samples: np.ndarray
    converged: bool
    tol: float

    @property
    def probes(self) -> int:
        return int(self.samples.size)

    @property
    def half_width(self) -> float:
        return 0.5 * (self.ci.high - self.ci.low)

    def scaled(self, factor: float, offset: float = 0.0) -> MeanEstimate:
        """``factor·X + offset`` (interval mapped alike; ``factor > 0``)."""
        return MeanEstimate(
            value=factor * self.value + offset,
            ci=Interval(
                factor * self.ci.low + offset,
                factor * self.ci.high + offset,
                self.ci.level,
                self.ci.method,
            ),
            samples=factor * self.samples + offset,
            converged=self.converged,
            tol=self.tol,
        )


def _t_interval(x: np.ndarray, level: float) -> tuple[float, float, float]:
    n = x.size
    mean = float(x.mean())
    if n < 2:
        return mean, float("-inf"), float("inf")
    half = float(sstats.t.ppf(0.5 + level / 2, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half


def sequential_mean(
    draw: Callable[[], float],
    *,
    tol: float,
    min_probes: int,
    max_probes: int,
    level: float = 0.95,
    offset: float = 0.0,
) -> MeanEstimate:
    """Draw until the t-interval half-width is ``≤ tol·|offset + mean|`` (after ``min_probes``).

    ``offset`` is a known constant added to the mean (the deflated part of a trace); the interval
    is for ``offset + E[draw]``.
    """
    _check_positive("min_probes", min_probes)
    _check_positive("max_probes", max_probes)
    _check_tol("tol", tol)
    if not 0.0 < level < 1.0:
        raise OptionError("level", f"confidence level {level} is not in (0, 1)", "use e.g. 0.95")
    if max_probes < min_probes:
        raise OptionError(
            "max_probes", f"{max_probes} is fewer than min_probes={min_probes}", "raise max_probes"
        )
    samples: list[float] = []
    converged = False
    while len(samples) < max_probes:
        samples.append(float(draw()))
        if len(samples) >= max(min_probes, 2):
            mean, low, _ = _t_interval(np.asarray(samples), level)
            if mean - low <= tol * abs(offset + mean):
                converged = True
                break
    arr = np.asarray(samples, dtype=np.float64)
    mean, low, high = _t_interval(arr, level)
    return MeanEstimate(
        value=offset + mean,
        ci=Interval(offset + low, offset + high, level, "student-t"),
        samples=arr,
        converged=converged,
        tol=float(tol),
    )


def hutchinson_trace(
    op: LinearOperator,
    *,
    tol: float = 0.05,
    min_probes: int = 10,
    max_probes: int = 200,
    level: float = 0.95,
    seed: int = 0,
    deflate: torch.Tensor | None = None,
) -> MeanEstimate:
    """``tr(H)`` by Hutchinson's estimator with Rademacher probes and a CI stopping rule.

    Args:
        op: the operator.
        tol: stop when the CI half-width is ``≤ tol·|estimate|`` (after ``min_probes``).
        min_probes, max_probes: bounds on the number of probes (one product each).
        level: confidence level of the t-interval.
        seed: seeds the probes.
        deflate: optional ``(k, P)`` orthonormal rows ``V`` (e.g. top eigenvectors): the estimate
            becomes ``tr(VᵀHV) + mean(zᵀ(I−VVᵀ)H(I−VVᵀ)z)``, still unbiased (``k`` extra
            products). ``samples`` then hold the deflated draws.
    """
    g = torch.Generator().manual_seed(seed)
    offset = 0.0
    v = None
    if deflate is not None and deflate.shape[0] > 0:
        v = deflate.double()
        offset = float(sum(float(vi @ op.matvec(vi)) for vi in v))

    def draw() -> float:
        z = rademacher(op.size, g)
        if v is not None:
            z = z - v.T @ (v @ z)
        return float(z @ op.matvec(z))

    return sequential_mean(
        draw, tol=tol, min_probes=min_probes, max_probes=max_probes, level=level, offset=offset
    )

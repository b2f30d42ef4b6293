"""Integrated Gradients (Sundararajan, Taly & Yan, ICML 2017, arXiv 1703.01365), with δ always.

For an input ``x``, a baseline ``x0`` and the target score ``f``::

    IG_j(x) = (x_j − x0_j) · ∫₀¹ ∂f(x0 + α(x − x0)) / ∂x_j dα
            ≈ (x_j − x0_j) · Σ_k w_k · ∂f(x0 + α_k(x − x0)) / ∂x_j

and completeness (the paper's Proposition 1) says ``Σ_j IG_j = f(x) − f(x0)``. The gap of the
quadrature, **δ = Σ_j IG_j − (f(x) − f(x0))**, is reported for every sample (Captum computes it
only on request). ``f(x)`` and ``f(x0)`` cost one extra forward pass per sample each.

Quadrature rules — nodes ``α_k`` and weights ``w_k`` on ``[0, 1]``, exactly Captum 0.9.0's
(``captum/attr/_utils/approximation_methods.py``), so attributions agree with Captum's to float
rounding at equal settings:

* ``gausslegendre`` (default, as in Captum): the n-point Gauss–Legendre rule of
  ``numpy.polynomial.legendre.leggauss`` mapped from ``[−1, 1]``: ``α = (1 + t)/2``, ``w = ω/2``;
* ``riemann_left`` ``α_k = k/n``; ``riemann_right`` ``α_k = (k+1)/n``; ``riemann_middle``
  ``α_k = (k + ½)/n``; all with ``w_k = 1/n``;
* ``riemann_trapezoid``: the composite trapezoid rule on ``n`` equally spaced nodes,
  ``α_k = k/(n−1)``, ``w = h = 1/(n−1)`` inside and ``h/2`` at both ends (weights sum to 1).
  **Deliberately not Captum's**: Captum uses the same nodes with ``w = 1/n`` (ends halved), whose
  weights sum to ``(n−1)/n``, so its trapezoid IG is ours × ``(n−1)/n`` exactly and
  under-integrates by ``1/n`` (its δ ≈ −(f(x) − f(x0))/n; tests/test_attribution.py checks the
  ratio).

**Adaptive mode** (``tolerance`` set): start at ``n_steps`` and double the steps, for the samples
that still miss ``|δ| ≤ tolerance · |f(x) − f(x0)| + abs_tolerance``, up to ``max_steps``; each
sample keeps the estimate of the last step count it was integrated with, its ``n_steps`` and
whether it ``converged``. Only the samples still missing the tolerance are integrated again, so
easy samples cost few steps. δ is not monotone in n for ReLU networks (the integrand is piecewise
constant along the path; captum #1334), which is why the stopping rule is on the measured δ and
not on a step count.

Memory: the path points of all samples × steps are evaluated ``internal_batch_size`` rows at a
time (any mix of samples and steps), so a single sample with 10 000 steps or 10 000 samples with
50 steps each fit in the same memory.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from edgeproof.errors import OptionError
from edgeproof.methods.attacks.base import as_layout, input_layout
from edgeproof.methods.attribution.base import (
    Attribution,
    AttributionMethod,
    BaselineLike,
    Output,
    TargetLike,
    as_batch,
    check_internal_batch_size,
    check_output,
    check_positive_int,
    eval_mode,
    expand_baseline,
    resolve_target,
    scores,
    target_scores,
)

__all__ = ["RULES", "IntegratedGradients", "Rule", "path_gradients", "quadrature"]

Rule = Literal[
    "gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"
]
RULES: tuple[str, ...] = (
    "gausslegendre",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
)


def quadrature(rule: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``α`` and weights ``w`` (float64, length ``n``) of ``rule`` on ``[0, 1]``."""
    if rule not in RULES:
        raise OptionError("rule", f"unknown rule {rule!r}", f"use one of {', '.join(RULES)}")
    minimum = 2 if rule == "riemann_trapezoid" else 1
    check_positive_int("n_steps", n, minimum, "use e.g. 50 (more steps integrate more accurately)")
    if rule == "gausslegendre":
        t, w = np.polynomial.legendre.leggauss(n)
        return 0.5 * (1.0 + t), 0.5 * w
    k = np.arange(n, dtype=np.float64)
    w = np.full(n, 1.0 / n)
    if rule == "riemann_left":
        a = k / n
    elif rule == "riemann_right":
        a = (k + 1.0) / n
    elif rule == "riemann_middle":
        a = (k + 0.5) / n
    else:
        a = k / (n - 1)
        w = np.full(n, 1.0 / (n - 1))
        w[0] /= 2.0
        w[-1] /= 2.0
    return a, w


def path_gradients(
    model: nn.Module,
    x: torch.Tensor,
    x0: torch.Tensor,
    target: torch.Tensor,
    alphas: np.ndarray,
    weights: np.ndarray,
    *,
    output: Output,
    internal_batch_size: int,
) -> torch.Tensor:
    """``Σ_k w_k ∇f(x0 + α_k (x − x0))`` per sample, float64, shape of ``x``.

    The ``N × n`` path points are enumerated sample-major and evaluated ``internal_batch_size``
    rows at a time; each row's gradient is weighted and added to its sample's sum in float64.
    """
    n, s = x.shape[0], len(alphas)
    view = (-1,) + (1,) * (x.dim() - 1)
    diff = x - x0
    a = torch.as_tensor(alphas, dtype=torch.float32)
    w = torch.as_tensor(weights, dtype=torch.float64)
    layout = input_layout(model, x)
    total = torch.zeros(x.shape, dtype=torch.float64)
    rows = n * s
    for r0 in range(0, rows, internal_batch_size):
        r = torch.arange(r0, min(rows, r0 + internal_batch_size))
        i, k = r // s, r % s
        pts = x0[i] + a[k].view(view) * diff[i]
        pts = as_layout(pts, layout).requires_grad_(True)
        with torch.enable_grad():
            sc = target_scores(model(pts), target[i], output)
            (g,) = torch.autograd.grad(sc.sum(), pts)
        total.index_add_(0, i, g.double() * w[k].view(view))
    return total


class IntegratedGradients(AttributionMethod):
    """Integrated Gradients with a per-sample completeness gap δ and an adaptive step count.

    Args:
        n_steps: integration steps (the starting count in adaptive mode); default 50.
        rule: quadrature rule, one of :data:`RULES` (default ``gausslegendre``).
        tolerance: adaptive mode when set: the relative completeness tolerance,
            ``|δ| ≤ tolerance · |f(x) − f(x0)| + abs_tolerance``; ``None`` (default) runs
            ``n_steps`` once.
        abs_tolerance: the absolute part of the tolerance (default 1e-6, about the float32
            rounding of a logit of size 10), for samples whose score hardly changes.
        max_steps: the adaptive cap on the step count (default 1024); doubling stops before it.
        internal_batch_size: rows per forward/backward pass (default 256).
        output: ``logit`` (default) or ``probability`` of the target class.
    """

    name: ClassVar[str] = "integrated_gradients"
    needs_gradients: ClassVar[bool] = True
    has_delta: ClassVar[bool] = True

    def __init__(
        self,
        *,
        n_steps: int = 50,
        rule: Rule = "gausslegendre",
        tolerance: float | None = None,
        abs_tolerance: float = 1e-6,
        max_steps: int = 1024,
        internal_batch_size: int = 256,
        output: Output = "logit",
    ) -> None:
        quadrature(rule, n_steps)  # validates rule and n_steps
        if tolerance is not None and not (np.isfinite(tolerance) and tolerance > 0):
            raise OptionError(
                "tolerance", f"{tolerance!r} must be a positive number", "use e.g. 0.01 (1 %)"
            )
        if not (np.isfinite(abs_tolerance) and abs_tolerance >= 0):
            raise OptionError("abs_tolerance", f"{abs_tolerance!r} must be >= 0", "use 1e-6")
        check_positive_int("max_steps", max_steps, 1, "use e.g. 1024")
        if tolerance is not None and max_steps < n_steps:
            raise OptionError(
                "max_steps",
                f"the cap {max_steps} is below the starting n_steps={n_steps}",
                f"use max_steps >= {n_steps}",
            )
        self.n_steps = int(n_steps)
        self.rule: Rule = rule
        self.tolerance = None if tolerance is None else float(tolerance)
        self.abs_tolerance = float(abs_tolerance)
        self.max_steps = int(max_steps)
        self.internal_batch_size = check_internal_batch_size(internal_batch_size)
        self.output: Output = check_output(output)

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "n_steps": self.n_steps,
            "rule": self.rule,
            "tolerance": self.tolerance,
            "abs_tolerance": self.abs_tolerance,
            "max_steps": self.max_steps,
            "internal_batch_size": self.internal_batch_size,
            "output": self.output,
        }

    def attribute(
        self,
        model: nn.Module,
        x: torch.Tensor | np.ndarray,
        *,
        target: TargetLike = None,
        baseline: BaselineLike = None,
        generator: torch.Generator | None = None,
    ) -> Attribution:
        """IG of ``model``'s target score for the batch ``x`` (``(N, *shape)``, raw domain).

        ``baseline``: ``None`` (zeros), a number, one baseline ``(*shape)`` or one per sample.
        ``generator`` is unused (IG is deterministic).
        """
        xb = as_batch(x)
        x0 = expand_baseline(baseline, xb)
        ibs = self.internal_batch_size
        with eval_mode(model):
            t, _ = resolve_target(model, xb, target, ibs)
            f_x = scores(model, xb, t, self.output, ibs)
            f_0 = scores(model, x0, t, self.output, ibs)
            change = f_x - f_0
            n = xb.shape[0]
            values = torch.zeros(xb.shape, dtype=torch.float64)
            delta = torch.zeros(n, dtype=torch.float64)
            steps = torch.zeros(n, dtype=torch.int64)
            converged = torch.zeros(n, dtype=torch.bool)
            evaluations = 2 * n
            todo = torch.arange(n)
            k = self.n_steps
            while True:
                a, w = quadrature(self.rule, k)
                xs, x0s = xb[todo], x0[todo]
                grads = path_gradients(
                    model, xs, x0s, t[todo], a, w, output=self.output, internal_batch_size=ibs
                )
                vals = grads * (xs - x0s).double()
                d = vals.flatten(1).sum(1) - change[todo]
                values[todo] = vals
                delta[todo] = d
                steps[todo] = k
                evaluations += todo.numel() * k
                if self.tolerance is None:
                    break
                ok = d.abs() <= self.tolerance * change[todo].abs() + self.abs_tolerance
                converged[todo] = ok
                todo = todo[~ok]
                if todo.numel() == 0 or 2 * k > self.max_steps:
                    break
                k *= 2
        return Attribution(
            method=self.name,
            values=values,
            target=t,
            output=self.output,
            score=f_x,
            reference_score=f_0,
            delta=delta,
            n_steps=steps,
            converged=converged if self.tolerance is not None else None,
            evaluations=evaluations,
            settings=self.settings,
        )

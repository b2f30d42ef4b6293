"""The generalization check's findings, one function per rule (the rules are stated in
:mod:`edgeproof.checks.generalization`): sharpness, negative curvature, neural collapse, TIC and
gradient conflict."""

from __future__ import annotations

import math

from edgeproof.methods.collapse import Collapse
from edgeproof.methods.hessian import Eigenpairs
from edgeproof.methods.tic import GradientConflict, TICEstimate
from edgeproof.results import Finding

__all__ = ["generalization_findings"]

#: relative weight change used to express λ₁ as a loss increase
_PERTURBATION = 0.01
#: ½·λ₁·(0.01‖θ‖)² at or above this many nats → "sharp minimum" warning
_SHARP_NATS = 0.1
_NEGATIVE_CURVATURE = 0.05
_CONFLICT_COSINE = -0.5


def generalization_findings(
    top: Eigenpairs,
    theta_min: float,
    theta_norm: float,
    collapse: Collapse | None,
    collapse_error: str,
    t: TICEstimate | None,
    g: GradientConflict | None,
    names: list[str],
) -> list[Finding]:
    """Every rule's finding, in the report's order (``names``: the classes of ``g``)."""
    lam1 = float(top.values[0])
    out = [_sharpness(lam1, theta_norm)]
    if lam1 > 0 and theta_min < -_NEGATIVE_CURVATURE * lam1:
        out.append(
            Finding(
                "info",
                f"negative curvature (smallest Ritz value {theta_min:.3g}): the model is not "
                "at a minimum of the loss on these samples, as is usual on held-out data",
                {"min_ritz_value": theta_min, "top_eigenvalue": lam1},
            )
        )
    out += _collapse(collapse, collapse_error)
    if t is not None:
        out.append(_tic(t, theta_min))
    if g is not None and len(g.classes) >= 3:
        out += _conflict(g, names)
    return out


def _sharpness(lam1: float, theta_norm: float) -> Finding:
    """The loss rise ``½·λ₁·(0.01‖θ‖)²``: a warning at or above 0.1 nats, else an info."""
    rise = 0.5 * lam1 * (_PERTURBATION * theta_norm) ** 2
    evidence = {"top_eigenvalue": lam1, "weight_norm": theta_norm, "loss_rise_nats": rise}
    if rise >= _SHARP_NATS:
        return Finding(
            "warning",
            f"sharp minimum: changing the weights by 1% of their norm along the sharpest "
            f"direction raises the loss by ≈{rise:.2g} nats (λ₁ = {lam1:.3g}); expect "
            "quantisation, pruning and bit flips to cost accuracy — compare λ₁ across "
            "compression candidates, or train with a flatness-seeking optimiser (SAM)",
            evidence,
        )
    return Finding(
        "info",
        f"flat minimum: a 1% weight change along the sharpest direction raises the "
        f"loss by only ≈{rise:.2g} nats (λ₁ = {lam1:.3g})",
        evidence,
    )


def _collapse(collapse: Collapse | None, collapse_error: str) -> list[Finding]:
    """Why collapse was not measured; no collapse (NC1 ≥ 1, a warning); or its strength."""
    if collapse is None:
        if collapse_error:
            return [Finding("info", f"neural collapse not measured: {collapse_error}")]
        return []
    if math.isfinite(collapse.nc1) and collapse.nc1 >= 1.0:
        return [
            Finding(
                "warning",
                f"no neural collapse (NC1 = {collapse.nc1:.3g} ≥ 1): the penultimate "
                "features of a class spread as widely as the classes lie apart, so the "
                "classes are not cleanly separated; the model may be under-trained or the "
                "data may not be what it was trained on",
                {"nc1": collapse.nc1},
            )
        ]
    if math.isfinite(collapse.nc1):
        strength = "strong" if collapse.nc1 < 0.1 else "partial"
        return [
            Finding(
                "info",
                f"{strength} neural collapse (NC1 = {collapse.nc1:.3g}); the nearest class "
                f"mean disagrees with the model on {100 * collapse.nc4_mismatch:.1f}% of "
                "samples",
                {"nc1": collapse.nc1, "nc4_ncc_mismatch": collapse.nc4_mismatch},
            )
        ]
    return []


def _tic(t: TICEstimate, theta_min: float) -> Finding:
    """TIC undefined (the damped Hessian is not positive definite, a warning), or its value."""
    if not t.positive_definite:
        return Finding(
            "warning",
            f"TIC undefined: the damped Hessian H + {t.damping:.3g}·I is not positive "
            "definite (the model is not at a minimum of the loss on these samples); "
            "pass a larger damping",
            {"damping": t.damping, "min_ritz_value": theta_min},
        )
    unconverged = (
        f"; {t.cg_unconverged} of {t.probes} CG solves hit the iteration budget, so this "
        "underestimates"
        if t.cg_unconverged
        else ""
    )
    return Finding(
        "info",
        f"TIC: had the model been fitted to these {t.samples} samples, its loss on "
        f"new data would exceed theirs by ≈{t.tic:.3g} nats "
        f"(≈{t.complexity:.3g} effective parameters, damping {t.damping:.3g})" + unconverged,
        {"tic": t.tic, "damping": t.damping, "method": t.method},
    )


def _conflict(g: GradientConflict, names: list[str]) -> list[Finding]:
    """A warning naming the (at most three) most conflicting pairs with cosine < −0.5."""
    worst = [p for p in g.most_conflicting(3) if p[2] < _CONFLICT_COSINE]
    if not worst:
        return []
    pos = {c: i for i, c in enumerate(g.classes)}
    pairs = ", ".join(f"{names[pos[a]]}/{names[pos[b]]} ({c:.2f})" for a, b, c in worst)
    return [
        Finding(
            "warning",
            f"conflicting classes: their mean loss gradients point in opposite "
            f"directions (cosine < {_CONFLICT_COSINE}): {pairs}; improving one costs "
            "the other — more capacity or data for these classes helps",
            {"pairs": [[a, b, c] for a, b, c in worst]},
        )
    ]

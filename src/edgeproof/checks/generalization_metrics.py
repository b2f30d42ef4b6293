"""The generalization check's metrics and tables: curvature (top eigenvalue, trace, smallest Ritz
value, loss), neural collapse NC1–NC4, TIC and gradient conflict."""

from __future__ import annotations

import math

import numpy as np

from edgeproof.methods.collapse import Collapse
from edgeproof.methods.hessian import Eigenpairs, MeanEstimate
from edgeproof.methods.tic import GradientConflict, TICEstimate
from edgeproof.results import Metric, Table

__all__ = [
    "collapse_metrics",
    "collapse_table",
    "conflict_metrics",
    "conflict_table",
    "curvature_metrics",
    "eigen_table",
    "tic_metrics",
]

_CURVATURE_UNIT = "nats per unit² of weight"


def curvature_metrics(
    top: Eigenpairs, trace: MeanEstimate | None, theta_min: float, loss: float
) -> list[Metric]:
    """λ₁, the Hessian trace (if estimated), the smallest Ritz value (if the SLQ run gave one)
    and the loss on the samples."""
    lanczos = {"tol": top.tol, "iterations": top.iterations, "converged": top.converged}
    out = [
        Metric(
            "top_eigenvalue",
            float(top.values[0]),
            _CURVATURE_UNIT,
            description="largest eigenvalue of the loss Hessian (sharpness): how fast the "
            "loss rises along the worst weight direction; larger means quantisation, pruning "
            "and bit flips cost more loss",
            higher_is_better=False,
            settings={**lanczos, "residual": float(top.residuals[0])},
        ),
        None
        if trace is None
        else Metric(
            "hessian_trace",
            trace.value,
            _CURVATURE_UNIT,
            ci=trace.ci,
            description="sum of all Hessian eigenvalues: the average curvature over every "
            "weight direction, i.e. how much random weight noise raises the loss",
            higher_is_better=False,
            settings={
                "probes": trace.probes,
                "tol": trace.tol,
                "converged": trace.converged,
            },
        ),
        None
        if math.isnan(theta_min)
        else Metric(
            "min_ritz_value",
            theta_min,
            _CURVATURE_UNIT,
            description="smallest eigenvalue found by the SLQ run (an upper bound on the "
            "smallest eigenvalue): negative means directions in which the loss still falls",
        ),
        Metric(
            "loss",
            loss,
            "nats",
            description="mean cross-entropy on the samples the curvature was measured on",
            higher_is_better=False,
        ),
    ]
    return [m for m in out if m is not None]


def collapse_metrics(c: Collapse | None) -> list[Metric]:
    """NC1–NC4 of the penultimate features (none when collapse was not measured)."""
    if c is None:
        return []
    return [
        Metric(
            "nc1",
            c.nc1,
            "",
            description="NC1 = tr(Σ_W Σ_B⁺)/K: within-class spread of the penultimate "
            "features relative to the spread between classes (→ 0 when each class collapses "
            "to its mean)",
            higher_is_better=False,
        ),
        Metric(
            "nc2_equinorm",
            c.nc2_equinorm_means,
            "",
            description="coefficient of variation of the centred class-mean norms (→ 0: "
            "every class equally far from the global mean)",
            higher_is_better=False,
        ),
        Metric(
            "nc2_equiangularity",
            c.nc2_equiangular_means,
            "",
            description="std of the cosines between centred class means (→ 0: every pair "
            "of classes equally separated)",
            higher_is_better=False,
        ),
        Metric(
            "nc2_max_angle",
            c.nc2_maxangle_means,
            "",
            description="mean |cos + 1/(K−1)| of the centred class means (→ 0: a simplex, "
            "the classes as far apart as possible)",
            higher_is_better=False,
        ),
        Metric(
            "nc3_self_duality",
            c.nc3,
            "",
            description="‖W/‖W‖ − M/‖M‖‖²: how far the classifier's rows are from the "
            "centred class means (→ 0: the classifier is a template matcher)",
            higher_is_better=False,
        ),
        Metric(
            "nc4_ncc_mismatch",
            c.nc4_mismatch,
            "fraction",
            description="share of samples where the nearest class mean disagrees with the "
            "model (→ 0: the model decides by distance to class means)",
            higher_is_better=False,
        ),
    ]


def tic_metrics(t: TICEstimate) -> list[Metric]:
    """TIC and its effective number of parameters, with their intervals."""
    settings = {
        "damping": t.damping,
        "method": t.method,
        "probes": t.probes,
        "cg_iterations": t.cg_iterations,
        "cg_unconverged": t.cg_unconverged,
        "positive_definite": t.positive_definite,
    }
    return [
        Metric(
            "tic",
            t.tic,
            "nats",
            ci=t.tic_ci,
            description="Takeuchi's information criterion tr((H+λI)⁻¹C)/n: the expected "
            "excess of the loss on new data over the loss on these samples, had the model "
            "been fitted to them",
            higher_is_better=False,
            settings=settings,
        ),
        Metric(
            "tic_effective_parameters",
            t.complexity,
            "parameters",
            ci=t.ci,
            description="tr((H+λI)⁻¹C): how many parameters the data effectively determine",
            settings=settings,
        ),
    ]


def conflict_metrics(g: GradientConflict) -> list[Metric]:
    """The smallest and the mean cosine between two classes' loss gradients (none when no pair
    of classes has a finite cosine)."""
    off = g.off_diagonal()
    off = off[np.isfinite(off)]
    if off.size == 0:
        return []
    return [
        Metric(
            "gradient_conflict_min_cosine",
            float(off.min()),
            "",
            description="most negative cosine between two classes' mean loss gradients: "
            "near −1, improving one class directly worsens the other",
            higher_is_better=True,
        ),
        Metric(
            "gradient_conflict_mean_cosine",
            float(off.mean()),
            "",
            description="mean cosine between classes' loss gradients (about −1/(K−1) at "
            f"a minimum of the training loss, here {-1.0 / max(len(g.classes) - 1, 1):.3f})",
        ),
    ]


def eigen_table(top: Eigenpairs) -> Table:
    """The top eigenvalues with their residuals."""
    return Table(
        "top_eigenvalues",
        "Top Hessian eigenvalues (Lanczos)",
        ["rank", "eigenvalue", "residual"],
        [[i + 1, float(v), float(r)] for i, (v, r) in enumerate(zip(top.values, top.residuals))],
        description="residual ‖Hy − θy‖: an eigenvalue of H lies within it of each value",
    )


def collapse_table(c: Collapse | None) -> Table:
    """NC1–NC4 for the class means and the classifier (no rows when not measured)."""
    rows: list[list[str | float | int | None]] = []
    if c is not None:
        rows = [
            ["NC1 tr(Σ_W Σ_B⁺)/K", c.nc1, None],
            ["NC2 equinorm (CV of norms)", c.nc2_equinorm_means, c.nc2_equinorm_classifier],
            ["NC2 equiangularity (std cos)", c.nc2_equiangular_means, c.nc2_equiangular_classifier],
            ["NC2 max angle (mean |cos+1/(K−1)|)", c.nc2_maxangle_means, c.nc2_maxangle_classifier],
            ["NC3 self-duality", c.nc3, None],
            ["NC4 NCC mismatch", c.nc4_mismatch, None],
        ]
    return Table(
        "neural_collapse",
        "Neural collapse (Papyan, Han & Donoho 2020)",
        ["quantity", "class means", "classifier"],
        rows,
        description="all → 0 under neural collapse",
    )


def conflict_table(g: GradientConflict, names: list[str]) -> Table:
    """The ``K×K`` cosine matrix of the per-class mean loss gradients."""
    return Table(
        "gradient_conflict",
        "Cosine of per-class mean loss gradients",
        ["class", *names],
        [[names[i], *[float(v) for v in g.cosine[i]]] for i in range(len(names))],
    )

"""The ``generalization`` check: curvature of the loss, neural collapse, TIC, gradient conflict.

A thin adapter over :mod:`edgeproof.methods.hessian`, :mod:`edgeproof.methods.collapse` and
:mod:`edgeproof.methods.tic` (definitions, sources and constants are stated there). On a seeded
subset of at most ``max_samples`` records it reports:

* the top ``top_k`` Hessian eigenvalues of the mean cross-entropy (Lanczos, residual bounds);
* the Hessian trace (Hutchinson, deflated by the top-``top_k`` Ritz vectors, with a Student-t
  interval and the CI stopping rule) and the spectral density (SLQ, one run);
* NC1–NC4 of the penultimate features (Papyan et al. 2020);
* TIC ``tr((H + λI)⁻¹C)/n``, with ``λ = damping``; by default (``damping=None``) the smallest shift
  that makes the damped Hessian positive definite according to the SLQ run's smallest Ritz value
  ``θ_min`` and its residual ``r`` (``max(0, r − θ_min)``), plus ``0.01·λ₁``;
* the ``K×K`` cosine matrix of the per-class mean loss gradients.

Findings, with the rules used:

* sharpness — the second-order loss increase ``½·λ₁·(0.01‖θ‖)²`` of a weight change of 1 % of the
  weight norm along the sharpest direction; ``warning`` when it is at least 0.1 nats;
* negative curvature — ``θ_min < −0.05·λ₁``: not at a minimum of the loss on these samples;
* collapse — NC1 ``≥ 1`` (within-class spread at least the between-class spread): ``warning`` "no
  collapse"; NC1 ``< 0.1``: strong collapse;
* conflict — any pair of classes whose gradients have cosine ``< −0.5`` (with at least 3 classes);
* TIC — its value, or why it is undefined.

Budget: every Lanczos run and every CG solve takes at most ``iterations`` Hessian-vector products,
the trace at most ``probes`` probes, TIC at most ``tic_probes`` probes (each a CG solve).
``parts`` chooses which diagnostics run at all (the top eigenvalues always do): the compression
ledger re-audits every candidate with ``parts=("collapse",)`` (λ₁ and NC1 only).

The metrics and tables are assembled in :mod:`~edgeproof.checks.generalization_metrics`, the
findings in :mod:`~edgeproof.checks.generalization_findings`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgeproof.checks.base import AuditContext, Check
from edgeproof.checks.budget import AUTO, SampleSetting, resolve_samples
from edgeproof.checks.generalization_findings import generalization_findings
from edgeproof.checks.generalization_metrics import (
    collapse_metrics,
    collapse_table,
    conflict_metrics,
    conflict_table,
    curvature_metrics,
    eigen_table,
    tic_metrics,
)
from edgeproof.errors import OptionError, SpecError
from edgeproof.methods.attacks.base import check_logits
from edgeproof.methods.collapse import Collapse, neural_collapse, penultimate
from edgeproof.methods.flatness import subsample
from edgeproof.methods.hessian import (
    Eigenpairs,
    HessianOperator,
    MeanEstimate,
    SpectralDensity,
    hutchinson_trace,
    slq_density,
    top_eigenvalues,
)
from edgeproof.methods.tic import GradientConflict, TICEstimate, gradient_conflict, tic
from edgeproof.results import CheckResult, Figure

__all__ = ["PARTS", "GeneralizationCheck"]

#: the diagnostics beside the top Hessian eigenvalues (which always run)
PARTS: tuple[str, ...] = ("trace", "density", "tic", "collapse", "conflict")


@dataclass(frozen=True)
class _Curvature:
    """What one Hessian operator gave: the top eigenpairs, the trace and the SLQ density (if
    asked for), the weight norm ‖θ‖, the loss, the parameter count and the products used."""

    top: Eigenpairs
    trace: MeanEstimate | None
    density: SpectralDensity | None
    theta_norm: float
    loss: float
    parameters: int
    products: int


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise OptionError(name, f"{value} is too few", "use a positive integer")


class GeneralizationCheck(Check):
    """Hessian spectrum, neural collapse, TIC and gradient conflict of the data loss.

    Settings:
        max_samples: at most this many records (a seeded random subset; default ``"auto"``: up
            to 256, fewer (at least 24) on a costly model by the work budget of
            :mod:`edgeproof.checks.budget`; ``None``: all).
        top_k: how many top Hessian eigenvalues (default 3).
        iterations: Lanczos steps per run (top-k and SLQ) and CG steps per solve (default 40).
        probes: most Hutchinson probes for the trace (default 30; at least min(10, probes)).
        tic_probes: most probes for TIC, each a CG solve (default 10; at least min(5, ...)).
        tol: stop the trace / TIC probes when the CI half-width is ≤ tol·|estimate| (0.1).
        eig_tol: Lanczos relative residual tolerance (1e-3).
        damping: TIC's λ ≥ 0, or ``None`` for the automatic shift (module docstring).
        level: confidence level of the intervals (0.95).
        batch_size: samples per forward/backward pass (default 256: one batch, graph kept).
        parts: the diagnostics to run beside the top eigenvalues, of :data:`PARTS` (default
            all): ``trace``, ``density`` (SLQ; also run for TIC's automatic damping), ``tic``,
            ``collapse``, ``conflict``.
    """

    name = "generalization"
    title = "Generalization diagnostics (curvature, collapse, TIC)"
    description = (
        "Hessian of the data loss (top eigenvalues, trace with CI, SLQ density), neural "
        "collapse NC1–NC4, Takeuchi's information criterion and per-class gradient conflict."
    )
    needs_data = True
    needs_gradients = True
    headline = ("top_eigenvalue", "hessian_trace", "nc1")

    def __init__(
        self,
        *,
        max_samples: SampleSetting = AUTO,
        top_k: int = 3,
        iterations: int = 40,
        probes: int = 30,
        tic_probes: int = 10,
        tol: float = 0.1,
        eig_tol: float = 1e-3,
        damping: float | None = None,
        level: float = 0.95,
        batch_size: int = 256,
        parts: tuple[str, ...] | list[str] = PARTS,
    ) -> None:
        super().__init__(
            max_samples=max_samples,
            top_k=top_k,
            iterations=iterations,
            probes=probes,
            tic_probes=tic_probes,
            tol=tol,
            eig_tol=eig_tol,
            damping=damping,
            level=level,
            batch_size=batch_size,
            parts=list(parts),
        )
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            raise OptionError(
                "parts", f"unknown diagnostics {unknown}", f"use some of {', '.join(PARTS)}"
            )
        self.parts = tuple(parts)
        if isinstance(max_samples, int) and max_samples < 1:
            raise OptionError(
                "max_samples", f"{max_samples} is too few", "use >= 2, or None for all records"
            )
        for name, value in (
            ("top_k", top_k),
            ("iterations", iterations),
            ("probes", probes),
            ("tic_probes", tic_probes),
            ("batch_size", batch_size),
        ):
            _positive(name, value)
        for name, tv in (("tol", tol), ("eig_tol", eig_tol)):
            if not tv > 0 or not math.isfinite(tv):
                raise OptionError(name, f"{tv} is not a positive tolerance", "use e.g. 0.1")
        if damping is not None and (not damping >= 0 or not math.isfinite(damping)):
            raise OptionError(
                "damping", f"{damping} is not a non-negative number", "use e.g. 1e-2, or None"
            )
        if not 0.0 < level < 1.0:
            raise OptionError("level", f"confidence level {level} is not in (0, 1)", "use 0.95")
        self.max_samples = max_samples
        self.top_k = int(top_k)
        self.iterations = int(iterations)
        self.probes = int(probes)
        self.tic_probes = int(tic_probes)
        self.tol = float(tol)
        self.eig_tol = float(eig_tol)
        self.damping = damping
        self.level = float(level)
        self.batch_size = int(batch_size)

    # --------------------------------------------------------------------------------------------

    def passes(self, num_classes: int) -> float:
        """Forward-pass equivalents per record at these settings (a Hessian-vector product
        counts four; a TIC solve a quarter of its ``iterations``, as CG usually stops early)."""
        hvps = float(self.iterations)
        if "trace" in self.parts:
            hvps += self.probes
        if "density" in self.parts:
            hvps += self.iterations
        if "tic" in self.parts:
            hvps += self.tic_probes * self.iterations / 4
        grads = num_classes if "conflict" in self.parts else 0
        return 4.0 * hvps + 2.0 * grads + 1.0

    def run(self, ctx: AuditContext) -> CheckResult:
        data = ctx.require_data()
        module = ctx.model.module
        if module is None:  # the runner skips this check for models without gradients
            raise SpecError(f"{ctx.model.name}: the generalization check needs a PyTorch model")
        k = ctx.threat.input.num_classes or data.num_classes
        check_logits(ctx.clean_logits(), k, ctx.model.name)
        count = resolve_samples(
            ctx, self.max_samples, len(data), passes=self.passes(k), cap=256, floor=24
        )
        index = subsample(len(data), count.n, ctx.seed)
        if index.size < 2:
            raise OptionError("max_samples", f"{index.size} record(s)", "use at least 2 records")
        x = torch.from_numpy(np.ascontiguousarray(data.x[index]))
        y = torch.from_numpy(np.ascontiguousarray(data.y[index]))
        res = self.new_result()
        res.settings["samples_rule"] = count.rule
        note = count.finding(self.name, "max_samples", "records")
        if note is not None:
            res.findings.append(note)

        curv = self._curvature(module, x, y, ctx.seed)
        lam1 = float(curv.top.values[0])
        density = curv.density
        theta_min, r_min = _bottom_ritz(density) if density is not None else (math.nan, math.nan)
        damping = (
            self.damping
            if self.damping is not None
            else max(0.0, r_min - theta_min) + 0.01 * max(lam1, 0.0)
            if density is not None
            else None
        )
        tic_est = self._tic(module, x, y, damping, ctx.seed)
        conflict = (
            gradient_conflict(module, x, y, batch_size=self.batch_size)
            if "conflict" in self.parts
            else None
        )
        collapse, collapse_error = self._collapse(module, x, y)

        self._record(res, int(index.size), curv, damping)
        classes = conflict.classes if conflict is not None else list(range(k))
        names = [data.classes[c] if c < len(data.classes) else str(c) for c in classes]
        res.metrics += curvature_metrics(curv.top, curv.trace, theta_min, curv.loss)
        res.metrics += collapse_metrics(collapse)
        if tic_est is not None:
            res.metrics += tic_metrics(tic_est)
        if conflict is not None:
            res.metrics += conflict_metrics(conflict)
        res.tables.append(eigen_table(curv.top))
        if "collapse" in self.parts:
            res.tables.append(collapse_table(collapse))
        if conflict is not None:
            res.tables.append(conflict_table(conflict, names))
        res.findings += generalization_findings(
            curv.top, theta_min, curv.theta_norm, collapse, collapse_error, tic_est, conflict, names
        )
        if density is not None:
            res.figures.append(density_figure(density, curv.top))
        if conflict is not None:
            res.figures.append(conflict_figure(conflict, names))
        res.summary = self._summary(lam1, curv.trace, collapse, tic_est, int(index.size))
        return res

    # --------------------------------------------------------------------------------------------

    def _curvature(
        self, module: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int
    ) -> _Curvature:
        """The top eigenpairs, and the trace and the SLQ density where the parts ask for them
        (the density also for TIC's automatic damping), with one Hessian operator."""
        with HessianOperator(module, x, y, batch_size=self.batch_size) as op:
            top = top_eigenvalues(
                op, self.top_k, tol=self.eig_tol, max_iter=self.iterations, seed=seed
            )
            trace = (
                hutchinson_trace(
                    op,
                    tol=self.tol,
                    min_probes=min(10, self.probes),
                    max_probes=self.probes,
                    level=self.level,
                    seed=seed + 1,
                    deflate=top.vectors,
                )
                if "trace" in self.parts
                else None
            )
            need_density = "density" in self.parts or ("tic" in self.parts and self.damping is None)
            density = (
                slq_density(op, iterations=self.iterations, runs=1, seed=seed + 2)
                if need_density
                else None
            )
            theta_norm = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in op.params))
            return _Curvature(top, trace, density, theta_norm, op.loss, op.size, op.products)

    def _tic(
        self, module: nn.Module, x: torch.Tensor, y: torch.Tensor, damping: float | None, seed: int
    ) -> TICEstimate | None:
        """TIC at ``damping``, when asked for and a damping is known."""
        if "tic" not in self.parts or damping is None:
            return None
        return tic(
            module,
            x,
            y,
            damping=damping,
            batch_size=self.batch_size,
            tol=self.tol,
            min_probes=min(5, self.tic_probes),
            max_probes=self.tic_probes,
            cg_max_iter=self.iterations,
            level=self.level,
            seed=seed + 3,
        )

    def _collapse(
        self, module: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[Collapse | None, str]:
        """Neural collapse of the penultimate features, or why it could not be measured."""
        if "collapse" not in self.parts:
            return None, ""
        try:
            feats = penultimate(module, x, batch_size=self.batch_size)
            return (
                neural_collapse(
                    feats.features,
                    y.numpy(),
                    weight=feats.weight,
                    predictions=feats.logits.argmax(1),
                ),
                "",
            )
        except SpecError as e:
            return None, str(e)

    def _record(
        self, res: CheckResult, samples: int, curv: _Curvature, damping: float | None
    ) -> None:
        """The settings of this run: samples, parameters, damping and estimators used."""
        res.settings.update(
            samples=samples,
            parameters=curv.parameters,
            loss="mean cross-entropy over the samples, eval mode",
            parts=["top_eigenvalues", *self.parts],
            damping_used=damping,
            damping_rule="given" if self.damping is not None else "max(0, r - θ_min) + 0.01·λ1",
            hessian_vector_products=curv.products,
            trace_estimator=None
            if curv.trace is None
            else f"Hutchinson (Rademacher), deflated by the top {curv.top.values.size} "
            "Ritz vectors, Student-t interval",
            density=None
            if curv.density is None
            else "SLQ, 1 run, σ² = 1e-5·max(1, λmax − λmin) (PyHessian density_plot)",
        )

    def _summary(
        self,
        lam1: float,
        trace: MeanEstimate | None,
        collapse: Collapse | None,
        tic_est: TICEstimate | None,
        samples: int,
    ) -> str:
        """λ₁, and the trace, NC1 and TIC where they were measured."""
        text = [f"λ₁ {lam1:.4g}"]
        if trace is not None:
            text.append(f"trace {trace.value:.4g} [{trace.ci.low:.4g}, {trace.ci.high:.4g}]")
        if "collapse" in self.parts:
            text.append(f"NC1 {collapse.nc1:.3g}" if collapse is not None else "NC1 n/a")
        if tic_est is not None:
            text.append(f"TIC {tic_est.tic:.3g} nats")
        return ", ".join(text) + f" ({samples} samples)"


def _bottom_ritz(d: SpectralDensity) -> tuple[float, float]:
    """Smallest node of the SLQ run and its Ritz residual."""
    j = int(np.argmin(d.nodes[0]))
    return float(d.nodes[0, j]), float(d.residuals[0, j])


def density_figure(d: SpectralDensity, top: Eigenpairs) -> Figure:
    """The SLQ eigenvalue density on a log scale, with the top eigenvalues marked."""

    def draw() -> str:
        from edgeproof.report.charts import Axis, Chart
        from edgeproof.report.charts.colors import BLUE, VERMILLION

        t = d.grid(4000)
        chart = Chart(600, 320, x=Axis("Hessian eigenvalue"), y=Axis("density + 1e-7", scale="log"))
        chart.line(t, d.density(t) + 1e-7, color=BLUE, width=1.0, label="SLQ density")
        for v in top.values:
            chart.vline(float(v), color=VERMILLION, width=1.0, dash="dashed",
                        label="top eigenvalues (Lanczos)")  # fmt: skip
        return chart.svg()

    return Figure(
        "hessian_density",
        "Hessian eigenvalue density (SLQ)",
        draw,
        description="stochastic Lanczos quadrature, Gaussian-broadened (σ² = 1e-5·max(1, "
        "range)), on a log scale (1e-7 added so empty stretches stay on it); dashed: the top "
        "eigenvalues from Lanczos",
    )


def conflict_figure(g: GradientConflict, names: list[str]) -> Figure:
    """Heat map of the per-class gradient cosine matrix."""

    def draw() -> str:
        from edgeproof.report.charts import Axis, Chart

        k = len(names)
        cell = 36.0 if k <= 12 else max(4.0, 480.0 / k)
        chart = Chart(min(1000.0, cell * k + 330), cell * k + 90, x=Axis("class"),
                      y=Axis("class"))  # fmt: skip
        cos = np.asarray(g.cosine, dtype=float)
        chart.heatmap(
            cos,
            rows=names,
            cols=names,
            vmin=-1.0,
            vmax=1.0,
            color_ramp="rdbu",
            annotations=[[f"{v:.2f}" for v in row] for row in cos] if k <= 12 else None,
            colorbar="cosine",
            tooltips=[
                [f"classes {names[i]} and {names[j]}: cosine {cos[i, j]:.3f}" for j in range(k)]
                for i in range(k)
            ]
            if k <= 30
            else None,
        )
        return chart.svg()

    return Figure(
        "gradient_conflict",
        "Gradient conflict between classes",
        draw,
        description="cosine of the per-class mean loss gradients; red: classes pulling the "
        "weights in opposite directions, blue: in the same direction",
    )

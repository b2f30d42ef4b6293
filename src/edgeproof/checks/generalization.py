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
"""

from __future__ import annotations

import math

import numpy as np
import torch

from edgeproof.checks.base import AuditContext, Check
from edgeproof.checks.budget import AUTO, SampleSetting, resolve_samples
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
from edgeproof.results import CheckResult, Figure, Finding, Metric, Table

__all__ = ["PARTS", "GeneralizationCheck"]

#: the diagnostics beside the top Hessian eigenvalues (which always run)
PARTS: tuple[str, ...] = ("trace", "density", "tic", "collapse", "conflict")

#: relative weight change used to express λ₁ as a loss increase
_PERTURBATION = 0.01
#: ½·λ₁·(0.01‖θ‖)² at or above this many nats → "sharp minimum" warning
_SHARP_NATS = 0.1
_NEGATIVE_CURVATURE = 0.05
_CONFLICT_COSINE = -0.5
_CURVATURE_UNIT = "nats per unit² of weight"


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

        with HessianOperator(module, x, y, batch_size=self.batch_size) as op:
            top = top_eigenvalues(
                op, self.top_k, tol=self.eig_tol, max_iter=self.iterations, seed=ctx.seed
            )
            trace = (
                hutchinson_trace(
                    op,
                    tol=self.tol,
                    min_probes=min(10, self.probes),
                    max_probes=self.probes,
                    level=self.level,
                    seed=ctx.seed + 1,
                    deflate=top.vectors,
                )
                if "trace" in self.parts
                else None
            )
            need_density = "density" in self.parts or ("tic" in self.parts and self.damping is None)
            density = (
                slq_density(op, iterations=self.iterations, runs=1, seed=ctx.seed + 2)
                if need_density
                else None
            )
            theta_norm = math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in op.params))
            loss, n_params, products = op.loss, op.size, op.products
        lam1 = float(top.values[0])
        theta_min, r_min = _bottom_ritz(density) if density is not None else (math.nan, math.nan)
        damping = (
            self.damping
            if self.damping is not None
            else max(0.0, r_min - theta_min) + 0.01 * max(lam1, 0.0)
            if density is not None
            else None
        )
        tic_est = None
        if "tic" in self.parts and damping is not None:
            tic_est = tic(
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
                seed=ctx.seed + 3,
            )
        conflict = (
            gradient_conflict(module, x, y, batch_size=self.batch_size)
            if "conflict" in self.parts
            else None
        )
        collapse: Collapse | None = None
        collapse_error = ""
        if "collapse" in self.parts:
            try:
                feats = penultimate(module, x, batch_size=self.batch_size)
                collapse = neural_collapse(
                    feats.features,
                    y.numpy(),
                    weight=feats.weight,
                    predictions=feats.logits.argmax(1),
                )
            except SpecError as e:
                collapse_error = str(e)

        res.settings.update(
            samples=int(index.size),
            parameters=n_params,
            loss="mean cross-entropy over the samples, eval mode",
            parts=["top_eigenvalues", *self.parts],
            damping_used=damping,
            damping_rule="given" if self.damping is not None else "max(0, r - θ_min) + 0.01·λ1",
            hessian_vector_products=products,
            trace_estimator=None
            if trace is None
            else f"Hutchinson (Rademacher), deflated by the top {top.values.size} "
            "Ritz vectors, Student-t interval",
            density=None
            if density is None
            else "SLQ, 1 run, σ² = 1e-5·max(1, λmax − λmin) (PyHessian density_plot)",
        )
        classes = conflict.classes if conflict is not None else list(range(k))
        names = [data.classes[c] if c < len(data.classes) else str(c) for c in classes]
        res.metrics += self._curvature_metrics(top, trace, theta_min, loss)
        res.metrics += self._collapse_metrics(collapse)
        if tic_est is not None:
            res.metrics += self._tic_metrics(tic_est)
        if conflict is not None:
            res.metrics += self._conflict_metrics(conflict)
        res.tables.append(_eigen_table(top))
        if "collapse" in self.parts:
            res.tables.append(_collapse_table(collapse))
        if conflict is not None:
            res.tables.append(_conflict_table(conflict, names))
        res.findings += self._findings(
            top, theta_min, theta_norm, collapse, collapse_error, tic_est, conflict, names
        )
        if density is not None:
            res.figures.append(density_figure(density, top))
        if conflict is not None:
            res.figures.append(conflict_figure(conflict, names))
        text = [f"λ₁ {lam1:.4g}"]
        if trace is not None:
            text.append(f"trace {trace.value:.4g} [{trace.ci.low:.4g}, {trace.ci.high:.4g}]")
        if "collapse" in self.parts:
            text.append(f"NC1 {collapse.nc1:.3g}" if collapse is not None else "NC1 n/a")
        if tic_est is not None:
            text.append(f"TIC {tic_est.tic:.3g} nats")
        res.summary = ", ".join(text) + f" ({index.size} samples)"
        return res

    # --------------------------------------------------------------------------------------------

    def _curvature_metrics(
        self, top: Eigenpairs, trace: MeanEstimate | None, theta_min: float, loss: float
    ) -> list[Metric]:
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

    def _collapse_metrics(self, c: Collapse | None) -> list[Metric]:
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

    def _tic_metrics(self, t: TICEstimate) -> list[Metric]:
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

    def _conflict_metrics(self, g: GradientConflict) -> list[Metric]:
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

    def _findings(
        self,
        top: Eigenpairs,
        theta_min: float,
        theta_norm: float,
        collapse: Collapse | None,
        collapse_error: str,
        t: TICEstimate | None,
        g: GradientConflict | None,
        names: list[str],
    ) -> list[Finding]:
        out: list[Finding] = []
        lam1 = float(top.values[0])
        rise = 0.5 * lam1 * (_PERTURBATION * theta_norm) ** 2
        evidence = {"top_eigenvalue": lam1, "weight_norm": theta_norm, "loss_rise_nats": rise}
        if rise >= _SHARP_NATS:
            out.append(
                Finding(
                    "warning",
                    f"sharp minimum: changing the weights by 1% of their norm along the sharpest "
                    f"direction raises the loss by ≈{rise:.2g} nats (λ₁ = {lam1:.3g}); expect "
                    "quantisation, pruning and bit flips to cost accuracy — compare λ₁ across "
                    "compression candidates, or train with a flatness-seeking optimiser (SAM)",
                    evidence,
                )
            )
        else:
            out.append(
                Finding(
                    "info",
                    f"flat minimum: a 1% weight change along the sharpest direction raises the "
                    f"loss by only ≈{rise:.2g} nats (λ₁ = {lam1:.3g})",
                    evidence,
                )
            )
        if lam1 > 0 and theta_min < -_NEGATIVE_CURVATURE * lam1:
            out.append(
                Finding(
                    "info",
                    f"negative curvature (smallest Ritz value {theta_min:.3g}): the model is not "
                    "at a minimum of the loss on these samples, as is usual on held-out data",
                    {"min_ritz_value": theta_min, "top_eigenvalue": lam1},
                )
            )
        if collapse is None and collapse_error:
            out.append(Finding("info", f"neural collapse not measured: {collapse_error}"))
        elif collapse is None:
            pass
        elif math.isfinite(collapse.nc1) and collapse.nc1 >= 1.0:
            out.append(
                Finding(
                    "warning",
                    f"no neural collapse (NC1 = {collapse.nc1:.3g} ≥ 1): the penultimate "
                    "features of a class spread as widely as the classes lie apart, so the "
                    "classes are not cleanly separated; the model may be under-trained or the "
                    "data may not be what it was trained on",
                    {"nc1": collapse.nc1},
                )
            )
        elif math.isfinite(collapse.nc1):
            strength = "strong" if collapse.nc1 < 0.1 else "partial"
            out.append(
                Finding(
                    "info",
                    f"{strength} neural collapse (NC1 = {collapse.nc1:.3g}); the nearest class "
                    f"mean disagrees with the model on {100 * collapse.nc4_mismatch:.1f}% of "
                    "samples",
                    {"nc1": collapse.nc1, "nc4_ncc_mismatch": collapse.nc4_mismatch},
                )
            )
        if t is None:
            pass
        elif not t.positive_definite:
            out.append(
                Finding(
                    "warning",
                    f"TIC undefined: the damped Hessian H + {t.damping:.3g}·I is not positive "
                    "definite (the model is not at a minimum of the loss on these samples); "
                    "pass a larger damping",
                    {"damping": t.damping, "min_ritz_value": theta_min},
                )
            )
        else:
            unconverged = (
                f"; {t.cg_unconverged} of {t.probes} CG solves hit the iteration budget, so this "
                "underestimates"
                if t.cg_unconverged
                else ""
            )
            out.append(
                Finding(
                    "info",
                    f"TIC: had the model been fitted to these {t.samples} samples, its loss on "
                    f"new data would exceed theirs by ≈{t.tic:.3g} nats "
                    f"(≈{t.complexity:.3g} effective parameters, damping {t.damping:.3g})"
                    + unconverged,
                    {"tic": t.tic, "damping": t.damping, "method": t.method},
                )
            )
        if g is not None and len(g.classes) >= 3:
            worst = [p for p in g.most_conflicting(3) if p[2] < _CONFLICT_COSINE]
            if worst:
                pos = {c: i for i, c in enumerate(g.classes)}
                pairs = ", ".join(f"{names[pos[a]]}/{names[pos[b]]} ({c:.2f})" for a, b, c in worst)
                out.append(
                    Finding(
                        "warning",
                        f"conflicting classes: their mean loss gradients point in opposite "
                        f"directions (cosine < {_CONFLICT_COSINE}): {pairs}; improving one costs "
                        "the other — more capacity or data for these classes helps",
                        {"pairs": [[a, b, c] for a, b, c in worst]},
                    )
                )
        return out


def _bottom_ritz(d: SpectralDensity) -> tuple[float, float]:
    """Smallest node of the SLQ run and its Ritz residual."""
    j = int(np.argmin(d.nodes[0]))
    return float(d.nodes[0, j]), float(d.residuals[0, j])


def _eigen_table(top: Eigenpairs) -> Table:
    return Table(
        "top_eigenvalues",
        "Top Hessian eigenvalues (Lanczos)",
        ["rank", "eigenvalue", "residual"],
        [[i + 1, float(v), float(r)] for i, (v, r) in enumerate(zip(top.values, top.residuals))],
        description="residual ‖Hy − θy‖: an eigenvalue of H lies within it of each value",
    )


def _collapse_table(c: Collapse | None) -> Table:
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


def _conflict_table(g: GradientConflict, names: list[str]) -> Table:
    return Table(
        "gradient_conflict",
        "Cosine of per-class mean loss gradients",
        ["class", *names],
        [[names[i], *[float(v) for v in g.cosine[i]]] for i in range(len(names))],
    )


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

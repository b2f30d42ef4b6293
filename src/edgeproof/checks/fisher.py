"""Fisher-information robustness: exact λ_max of the input-space Fisher per sample.

λ_max(F(x)) with ``F = J_zᵀ(diag p − ppᵀ)J_z`` (Zhang et al., arXiv 2606.04767), computed exactly
from the K×K matrix (:mod:`edgeproof.methods.fisher`). Reported: its distribution over the correctly
classified samples and its Spearman rank correlation with the per-sample minimal PGD ε (the same
bisection as the ``adversarial`` check, shared through the audit cache). A sensitive sample (large
λ_max) should break at a small ε, so the expected correlation is negative.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from edgeproof.checks.adversarial import attack_data, shared_minimal_eps
from edgeproof.checks.base import AuditContext, Check
from edgeproof.checks.budget import AUTO, SampleSetting
from edgeproof.errors import OptionError
from edgeproof.methods.attacks import PGD
from edgeproof.methods.fisher import Correlation, fisher_lambda_max, spearman_with_ci
from edgeproof.methods.stats import bootstrap_interval
from edgeproof.results import CheckResult, Figure, Finding, Metric, Table

__all__ = ["FisherCheck"]

_QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


class FisherCheck(Check):
    """Distribution of exact λ_max(F(x)) and its rank correlation with the minimal PGD ε.

    Settings:
        pgd_steps, pgd_restarts, bisection_steps: the minimal-ε bisection (defaults as in the
            ``adversarial`` check, so the two share one computation).
        max_samples: at most this many samples, a seeded subset (default ``"auto"``: the
            ``adversarial`` check's, so the two share the bisection; ``None``: all).
        batch_size: samples per Jacobian batch (default 64).
        level: confidence level (default 0.95).
    """

    name = "fisher"
    title = "Fisher-information sensitivity"
    headline = ("spearman_lambda_max_vs_minimal_eps", "median_lambda_max")
    quick_settings: ClassVar[Mapping[str, Any]] = {
        "pgd_steps": 3,
        "bisection_steps": 2,
        "max_samples": 16,
    }
    description = "Exact λ_max of the input-space Fisher and its correlation with minimal PGD ε."
    needs_data = True
    needs_gradients = True

    def __init__(
        self,
        *,
        pgd_steps: int = 10,
        pgd_restarts: int = 1,
        bisection_steps: int = 8,
        max_samples: SampleSetting = AUTO,
        batch_size: int = 64,
        level: float = 0.95,
    ) -> None:
        super().__init__(
            pgd_steps=pgd_steps,
            pgd_restarts=pgd_restarts,
            bisection_steps=bisection_steps,
            max_samples=max_samples,
            batch_size=batch_size,
            level=level,
        )
        if bisection_steps < 1:
            raise OptionError("bisection_steps", f"{bisection_steps} is too few", "use >= 1")
        if batch_size < 1:
            raise OptionError("batch_size", f"{batch_size} is too few", "use >= 1, e.g. 64")
        self.pgd = PGD(steps=pgd_steps, restarts=pgd_restarts)
        self.bisection_steps = int(bisection_steps)
        self.max_samples = max_samples
        self.batch_size = int(batch_size)
        self.level = float(level)

    def run(self, ctx: AuditContext) -> CheckResult:
        ad = attack_data(ctx, self.max_samples)
        module = ad.gradient_model()  # the runner skips models without gradients
        res = self.new_result()
        note = None if ad.count is None else ad.count.finding(self.name, "max_samples")
        if note is not None:
            res.findings.append(note)
        mins = shared_minimal_eps(
            ctx,
            ad,
            attack=self.pgd,
            iterations=self.bisection_steps,
            upper=None,
            batch_size=ctx.batch_size,
        )
        ok = mins.clean_correct
        if not ok.any():
            res.summary = "no correctly classified sample: nothing to measure"
            res.findings.append(
                Finding(
                    "warning",
                    "the model classifies none of the samples "
                    "correctly; λ_max and minimal ε are not meaningful",
                )
            )
            return res
        lam = fisher_lambda_max(module, ad.x[np.flatnonzero(ok)], batch_size=self.batch_size)
        eps = mins.values[ok]
        res.settings.update(
            samples=int(ok.sum()), norm=ad.norm, pgd=repr(self.pgd), minimal_eps_upper=mins.upper
        )
        corr = spearman_with_ci(lam, eps, self.level)
        res.metrics.extend(self._metrics(lam, corr, int(mins.censored[ok].sum()), ctx.seed))
        res.tables.append(_quantile_table(lam))
        res.findings.append(_correlation_finding(corr))
        res.figures.append(self._figure(lam, eps, ad.norm))
        res.summary = (
            f"median λ_max {np.median(lam):.3g}; Spearman ρ with minimal {ad.norm} ε "
            f"= {corr.rho:.2f} (n={corr.n})"
        )
        return res

    def _metrics(
        self, lam: np.ndarray, corr: Correlation, censored: int, seed: int
    ) -> list[Metric]:
        """The median λ_max (bootstrap interval) and its Spearman ρ with the minimal ε."""
        med_ci = bootstrap_interval(
            lambda idx: np.median(lam[idx], axis=1),
            lam.size,
            level=self.level,
            seed=seed,
            resamples=500,
        )
        return [
            Metric(
                "median_lambda_max",
                float(np.median(lam)),
                unit="nats per unit² of input",
                ci=med_ci,
                higher_is_better=False,
                description="median over correctly classified samples of the exact largest "
                "eigenvalue of the input-space Fisher information",
            ),
            Metric(
                "spearman_lambda_max_vs_minimal_eps",
                corr.rho,
                unit="",
                ci=corr.ci,
                description="Spearman ρ between λ_max and the per-sample minimal PGD ε "
                "(negative: high-λ samples break at smaller ε)",
                settings={
                    "n": corr.n,
                    "p_value": corr.p_value,
                    "bisection_steps": self.bisection_steps,
                    "censored": censored,
                },
            ),
        ]

    def _figure(self, lam: np.ndarray, eps: np.ndarray, norm: str) -> Figure:
        def draw() -> str:
            from edgeproof.report.charts import Axis, Chart, Panels
            from edgeproof.report.charts.colors import BLUE

            pos = np.isfinite(lam) & (lam > 0)
            dropped = int((~pos).sum())
            note = f" ({dropped} with λ_max = 0 not shown)" if dropped else ""
            top = Chart(640, 200, x=Axis(scale="log"), y=Axis("samples", integer=True),
                        title=f"λ_max of {int(pos.sum())} samples{note}")  # fmt: skip
            if pos.any():
                lo, hi = float(lam[pos].min()), float(lam[pos].max())
                if hi <= lo:
                    lo, hi = lo / 2, hi * 2
                edges = np.logspace(np.log10(lo), np.log10(hi), 31)
                counts, _ = np.histogram(lam[pos], bins=edges)
                top.histogram(edges, counts, color=BLUE)
            ok = pos & np.isfinite(eps)
            bottom = Chart(
                640,
                260,
                x=Axis("λ_max(F(x)), largest eigenvalue of the input-space Fisher", scale="log"),
                y=Axis(f"minimal PGD ε ({norm})"),
            )
            bottom.scatter(lam[ok], eps[ok], color=BLUE, size=2.2, opacity=0.55)
            return Panels([top, bottom]).svg()

        return Figure(
            "lambda_max",
            "λ_max distribution and minimal ε",
            draw,
            description="top: distribution over correctly classified samples (log-spaced "
            "bins); bottom: λ_max vs the per-sample minimal PGD ε (same x axis)",
        )


def _quantile_table(lam: np.ndarray) -> Table:
    qs = np.quantile(lam, _QUANTILES)
    return Table(
        "lambda_max_quantiles",
        "λ_max distribution",
        ["quantile", "lambda_max"],
        [[float(q), float(v)] for q, v in zip(_QUANTILES, qs)],
    )


def _correlation_finding(corr: Correlation) -> Finding:
    """Whether λ_max ranks the samples by vulnerability (ρ's interval below 0)."""
    if np.isfinite(corr.rho) and corr.ci.high < 0:
        msg = (
            f"λ_max ranks samples by vulnerability: Spearman ρ = {corr.rho:.2f} "
            f"(CI {corr.ci.low:.2f}..{corr.ci.high:.2f}) with the minimal PGD ε; the most "
            "sensitive samples are the first to break"
        )
    elif np.isfinite(corr.rho):
        msg = (
            f"λ_max does not clearly rank samples by vulnerability on this model: "
            f"Spearman ρ = {corr.rho:.2f} (CI {corr.ci.low:.2f}..{corr.ci.high:.2f})"
        )
    else:
        msg = "the rank correlation is undefined (too few samples or constant values)"
    return Finding("info", msg, {"rho": corr.rho, "n": corr.n})

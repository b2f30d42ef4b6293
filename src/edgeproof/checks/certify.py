"""Certified robustness: per-sample verdicts over the threat model's ε by bound propagation.

For every ε of the threat model (its norm, and its domain as the clipping box), each sample of a
seeded subset gets a lower bound of its smallest margin from each bound method (IBP, CROWN,
α-CROWN, …; :mod:`edgeproof.certify`); a positive bound *verifies* it. PGD looks for
counterexamples (*falsified*); samples left open may go to branch-and-bound within a per-sample
budget. The rest are *unknown* — the gap between what is proved (verified accuracy) and what the
attack could not break (PGD robust accuracy). Verified accuracies carry Wilson intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from torch import nn

from edgeproof.certify import METHODS, CertifyResult, EpsResult, MethodResult, certify_model, trace
from edgeproof.certify.graph import BoundGraph
from edgeproof.checks.adversarial import attack_data
from edgeproof.checks.base import AuditContext, Check
from edgeproof.checks.budget import AUTO, WORK_BUDGET_MACS
from edgeproof.errors import ModelError, OptionError, param
from edgeproof.methods.stats import wilson_interval
from edgeproof.results import CheckResult, Figure, Finding, Metric, Table

__all__ = ["CertifyCheck"]

_GRAPH_KEY = "certify:graph"

#: the methods of ``methods="auto"``, and those it keeps on a model too costly for CROWN
AUTO_METHODS: tuple[str, ...] = ("ibp", "crown-ibp", "crown", "alpha-crown")
CHEAP_METHODS: tuple[str, ...] = ("ibp", "crown-ibp")

#: back-substitution MACs the default methods may spend (samples × ε × :func:`crown_macs`):
#: edgeproof's dense CROWN runs at 2–4 G MACs/s on one core (digits LeNet-5: 3.8 G in 1 s;
#: a 0.3 M-MAC 28×28 CNN: 135 G in 58 s), so about 10 s
CERTIFY_BUDGET_MACS = 0.75 * WORK_BUDGET_MACS


def certify_budget() -> float:
    """The back-substitution MACs the ``"auto"`` bound methods may spend
    (:data:`CERTIFY_BUDGET_MACS`)."""
    return float(CERTIFY_BUDGET_MACS)


def crown_macs(module: nn.Module, shape: tuple[int, ...], graph: BoundGraph | None = None) -> int:
    """Estimated MACs of one CROWN bound (one sample, one ε): bounding the outputs of layer i
    (``o_i`` neurons) back-substitutes ``o_i`` rows through layers 1..i (``Σ m_j`` MACs per
    row); the first layer is bounded exactly by interval arithmetic, the last with K rows.
    An upper estimate: CROWN bounds only the unstable neurons.

    A module whose layers cannot be hooked (TorchScript) is estimated from its bound ``graph``
    instead: the inputs of every activation after the first times the whole forward pass's
    MACs (``FlopCounterMode``), a coarser upper estimate. 0 when neither can be counted."""
    import torch

    from edgeproof.runtime.macs import count_macs, flop_counter_macs

    example = torch.zeros((1, *shape))
    try:
        layers = [c for c in count_macs(module, example) if c.macs]
    except RuntimeError:
        layers = []
    if layers:
        total, cumulative = 0, 0
        for i, layer in enumerate(layers):
            cumulative += int(layer.macs or 0)
            if i:
                rows = math.prod(layer.output_shape[1:]) if i < len(layers) - 1 else 10
                total += rows * cumulative
        return total
    if graph is None:
        return 0
    try:
        forward = int(flop_counter_macs(module, example))
    except (RuntimeError, TypeError, ValueError):
        return 0
    acts = [n for n in graph.nonlinear()][1:]
    rows = sum(graph.nodes[n.inputs[0]].numel for n in acts) + graph.nodes[graph.output].numel
    return rows * forward


def _g(v: float) -> str:
    return f"{v:.4g}"


def _settings(result: CertifyResult) -> dict[str, Any]:
    """The settings every metric of ``result`` carries (norm, samples), ε added per metric."""
    return {"norm": result.norm, "samples": result.n}


class CertifyCheck(Check):
    """Verified accuracy vs ε by IBP / CROWN / α-CROWN (and branch-and-bound), with the gap to
    PGD robust accuracy.

    Settings:
        methods: bound methods (default ``"auto"``: IBP and CROWN-IBP always, CROWN and
            α-CROWN when their back-substitution fits the audit's work budget
            (:func:`crown_macs`, :mod:`edgeproof.checks.budget`); a finding says when they
            were left out and how to run them).
        max_samples: certify at most this many samples, a seeded subset (default 50).
        bab_budget_s: per-sample branch-and-bound budget for samples left open (default 0: off).
        alpha_iterations: α-CROWN iterations (default 20).
        alpha_intermediate: α-CROWN optimises the intermediate bounds' slopes too (default
            False; tighter, about ten times slower).
        pgd_steps: PGD steps of the counterexample search (default 20; 0 turns it off).
        level: confidence level of the intervals (default 0.95).
    """

    name = "certify"
    title = "Certified robustness"
    description = (
        "Verified accuracy over ε by IBP, CROWN and α-CROWN (optionally branch-and-bound), and "
        "the gap to PGD robust accuracy."
    )
    needs_data = True
    needs_gradients = True
    needs_architecture = True
    headline = ("verified_accuracy", "verification_gap")
    quick_settings: ClassVar[Mapping[str, Any]] = {
        "methods": ("ibp", "crown"),
        "max_samples": 16,
        "pgd_steps": 10,
    }

    def __init__(
        self,
        *,
        methods: Sequence[str] | Literal["auto"] = AUTO,
        max_samples: int | None = 50,
        bab_budget_s: float = 0.0,
        alpha_iterations: int = 20,
        alpha_intermediate: bool = False,
        pgd_steps: int = 20,
        level: float = 0.95,
    ) -> None:
        super().__init__(
            methods=methods if methods == AUTO else list(methods),
            max_samples=max_samples,
            bab_budget_s=bab_budget_s,
            alpha_iterations=alpha_iterations,
            alpha_intermediate=alpha_intermediate,
            pgd_steps=pgd_steps,
            level=level,
        )
        listed = AUTO_METHODS if methods == AUTO else tuple(methods)
        bad = [m for m in listed if m not in METHODS]
        if bad or not listed:
            raise OptionError(
                "methods",
                f"unknown bound method(s) {bad}" if bad else "no method given",
                f"use some of {', '.join(METHODS)}",
            )
        if bab_budget_s < 0:
            raise OptionError(
                "bab_budget_s", f"{bab_budget_s} is negative", "use 0 (off) or e.g. 5"
            )
        if alpha_iterations < 1:
            raise OptionError("alpha_iterations", f"{alpha_iterations} is < 1", "use e.g. 20")
        if pgd_steps < 0:
            raise OptionError("pgd_steps", f"{pgd_steps} is negative", "use e.g. 20, or 0")
        self.methods: tuple[str, ...] | Literal["auto"] = AUTO if methods == AUTO else listed
        self.max_samples = max_samples
        self.bab_budget_s = float(bab_budget_s)
        self.alpha_iterations = int(alpha_iterations)
        self.alpha_intermediate = bool(alpha_intermediate)
        self.pgd_steps = int(pgd_steps)
        self.level = float(level)

    def _graph(self, ctx: AuditContext) -> BoundGraph:
        if _GRAPH_KEY not in ctx.cache:
            module = ctx.model.module
            assert module is not None
            ctx.cache[_GRAPH_KEY] = trace(module, ctx.threat.input.shape)
        graph: BoundGraph = ctx.cache[_GRAPH_KEY]
        return graph

    def skip_reason(self, ctx: AuditContext) -> str | None:
        reason = super().skip_reason(ctx)
        if reason is not None:
            return reason
        try:
            self._graph(ctx)
        except OptionError as exc:
            return f"the bound engine cannot bound this model ({exc})"
        except ModelError:
            return None  # broken weights: run() raises it again, recorded as this check's error
        return None

    def plan_methods(
        self, ctx: AuditContext, samples: int
    ) -> tuple[tuple[str, ...], Finding | None]:
        """The methods to run and, with ``"auto"``, a finding when CROWN or α-CROWN was left
        out: CROWN runs when its back-substitution over the samples and ε fits the work budget,
        α-CROWN when ``1 + alpha_iterations / 4`` such passes do (it optimises only the samples
        CROWN left open, and stops early)."""
        if self.methods != AUTO:
            return self.methods, None
        module = ctx.model.module
        assert module is not None
        per = crown_macs(module, ctx.threat.input.shape, self._graph(ctx))
        crown = per * samples * len(ctx.threat.eps)
        alpha = crown * (1 + self.alpha_iterations / 4)
        budget = certify_budget()
        if per == 0 or alpha <= budget:
            return AUTO_METHODS, None
        methods = (*CHEAP_METHODS, "crown") if crown <= budget else CHEAP_METHODS
        left = "α-CROWN did not run" if "crown" in methods else "CROWN and α-CROWN did not run"
        cost = alpha if "crown" in methods else crown
        return methods, Finding(
            "info",
            f"{left}: back-substitution through the model's intermediate neurons costs about "
            f"{per / 1e9:.3g} G MACs per sample and ε ({cost / 1e12:.3g} T for {samples} "
            f"samples × {len(ctx.threat.eps)} ε"
            + (f" × {1 + self.alpha_iterations / 4:g} α-CROWN passes" if "crown" in methods else "")
            + f"), beyond the default work budget of {budget / 1e12:.3g} T; pass "
            f"{param('certify.methods')}=ibp,crown-ibp,crown,alpha-crown (or run `edgeproof "
            "certify`) for the tighter bounds",
            {"crown_macs_per_sample_eps": per, "budget_macs": budget, "methods": list(methods)},
        )

    def run(self, ctx: AuditContext) -> CheckResult:
        ad = attack_data(ctx, self.max_samples)
        graph = self._graph(ctx)
        eps = tuple(ctx.threat.eps)
        methods, left_out = self.plan_methods(ctx, int(ad.x.shape[0]))
        result = certify_model(
            ad.gradient_model(),
            ad.x,
            ad.y,
            ctx.threat.input,
            eps,
            ad.norm,
            methods=methods,
            bab_budget_s=self.bab_budget_s,
            alpha_iterations=self.alpha_iterations,
            alpha_intermediate=self.alpha_intermediate,
            pgd_steps=self.pgd_steps,
            batch_size=min(ctx.batch_size, 32),
            seed=ctx.seed,
            graph=graph,
        )
        res = self.new_result()
        res.settings.update(norm=ad.norm, eps=list(eps), samples=result.n, domain=list(ad.domain))
        res.metrics.extend(self._metrics(result))
        res.tables.append(self._table(result))
        res.tables.append(self._samples_table(result, ad.index))
        res.findings.extend(self._findings(result))
        if left_out is not None:
            res.findings.append(left_out)
        res.figures.append(_figure(result, self.level))
        last = result.per_eps[-1]
        res.summary = (
            f"{ad.norm} ε={_g(last.eps)}: verified accuracy "
            f"{last.count('verified') / result.n:.1%}, "
            f"{last.count('unknown')} of {result.n} samples unknown "
            f"(clean accuracy {result.clean_correct.mean():.1%})"
        )
        return res

    def _metrics(self, result: CertifyResult) -> list[Metric]:
        """Per ε: verified accuracy, per method (verified accuracy, time), PGD robust accuracy
        and the verification gap; then the headline pair at the largest ε."""
        out: list[Metric] = []
        for r in result.per_eps:
            out.append(self._verified_metric(result, r))
            for m, mr in r.methods.items():
                out.extend(self._method_metrics(result, r, m, mr))
            out.extend(self._gap_metrics(result, r))
        out.extend(self._headline_metrics(result))
        return out

    def _verified_metric(self, result: CertifyResult, r: EpsResult) -> Metric:
        n = result.n
        k = r.count("verified")
        return Metric(
            f"verified_accuracy@{r.eps:g}",
            k / n,
            unit="fraction",
            ci=wilson_interval(k, n, self.level),
            description=f"{result.norm} ε={r.eps:g}: correct and proved robust by any of "
            f"{', '.join(result.methods)}"
            + (" or branch-and-bound" if self.bab_budget_s > 0 else ""),
            higher_is_better=True,
            settings={**_settings(result), "eps": r.eps},
        )

    def _method_metrics(
        self, result: CertifyResult, r: EpsResult, m: str, mr: MethodResult
    ) -> list[Metric]:
        n = result.n
        km = int(mr.verified.sum())
        settings = {**_settings(result), "eps": r.eps, "method": m}
        return [
            Metric(
                f"verified_accuracy.{m}@{r.eps:g}",
                km / n,
                unit="fraction",
                ci=wilson_interval(km, n, self.level),
                description=f"{result.norm} ε={r.eps:g}: proved robust by {m}",
                higher_is_better=True,
                settings=settings,
            ),
            Metric(
                f"time_per_sample.{m}@{r.eps:g}",
                mr.time_s / max(1, mr.bounded),
                unit="s",
                description=f"seconds per bounded sample for {m} (one thread per process "
                "as configured; batches of samples)",
                higher_is_better=False,
                settings=dict(settings),
            ),
        ]

    def _gap_metrics(self, result: CertifyResult, r: EpsResult) -> list[Metric]:
        n = result.n
        k = r.count("verified")
        robust = n - r.count("falsified")
        pgd_robust = int((result.clean_correct & ~r.pgd_fooled).sum())
        return [
            Metric(
                f"pgd_robust_accuracy@{r.eps:g}",
                pgd_robust / n,
                unit="fraction",
                ci=wilson_interval(pgd_robust, n, self.level),
                description=f"correct and not fooled by PGD-{self.pgd_steps} at ε={r.eps:g} "
                "(an upper estimate of robust accuracy)",
                higher_is_better=True,
                settings={**_settings(result), "eps": r.eps},
            ),
            Metric(
                f"verification_gap@{r.eps:g}",
                (robust - k) / n,
                unit="fraction",
                description="fraction of samples neither proved robust nor broken (unknown): "
                "the gap between verified accuracy and what the attacks could not break",
                higher_is_better=False,
                settings={**_settings(result), "eps": r.eps},
            ),
        ]

    def _headline_metrics(self, result: CertifyResult) -> list[Metric]:
        n = result.n
        last = result.per_eps[-1]
        k = last.count("verified")
        return [
            Metric(
                "verified_accuracy",
                k / n,
                unit="fraction",
                ci=wilson_interval(k, n, self.level),
                description=f"verified accuracy at the largest ε of the threat model "
                f"({last.eps:g})",
                higher_is_better=True,
                settings={**_settings(result), "eps": last.eps},
            ),
            Metric(
                "verification_gap",
                last.count("unknown") / n,
                unit="fraction",
                description=f"fraction unknown (neither verified nor falsified) at ε={last.eps:g}",
                higher_is_better=False,
                settings={**_settings(result), "eps": last.eps},
            ),
        ]

    def _table(self, result: CertifyResult) -> Table:
        cols = [
            "eps",
            "verified",
            *[f"verified by {m}" for m in result.methods],
            "falsified",
            "counterexamples",
            "unknown",
            "pgd robust",
            "branch-and-bound runs",
            *[f"{m} s/sample" for m in result.methods],
            "n",
        ]
        rows: list[list[Any]] = []
        for r in result.per_eps:
            rows.append(
                [
                    r.eps,
                    r.count("verified"),
                    *[int(mr.verified.sum()) for mr in r.methods.values()],
                    r.count("falsified"),
                    int((r.broken_by > 0).sum()),
                    r.count("unknown"),
                    int((result.clean_correct & ~r.pgd_fooled).sum()),
                    len(r.bab),
                    *[round(mr.time_s / max(1, mr.bounded), 6) for mr in r.methods.values()],
                    result.n,
                ]
            )
        return Table(
            "verdicts",
            "Verdicts vs ε",
            cols,
            rows,
            description="counts of samples; verified = by any method; falsified = misclassified, "
            "or a counterexample checked by a forward pass (PGD or branch-and-bound); "
            "counterexamples = correctly classified samples with such a counterexample",
        )

    def _samples_table(self, result: CertifyResult, index: np.ndarray) -> Table:
        last = result.per_eps[-1]
        cols = ["sample", *[f"verdict@{r.eps:g}" for r in result.per_eps]]
        cols += [f"margin lower bound {m}@{last.eps:g}" for m in result.methods]
        rows: list[list[Any]] = []
        for i in range(result.n):
            row: list[Any] = [int(index[i]), *[str(r.verdict[i]) for r in result.per_eps]]
            for mr in last.methods.values():
                v = float(mr.margin_lower[i])
                row.append(round(v, 6) if np.isfinite(v) else None)
            rows.append(row)
        return Table(
            "samples",
            "Per-sample verdicts and certified margins",
            cols,
            rows,
            description="margin lower bound: a proved lower bound of f_y − max_{j≠y} f_j over the "
            "threat set (empty for misclassified samples)",
        )

    def _findings(self, result: CertifyResult) -> list[Finding]:
        out: list[Finding] = []
        last = result.per_eps[-1]
        n = result.n
        unknown = last.count("unknown")
        if unknown / max(1, n) > 0.2:
            out.append(
                Finding(
                    "warning",
                    f"at ε={_g(last.eps)}, {unknown} of {n} samples are neither verified nor "
                    "falsified: certified robustness is unknown there; tighter bounds "
                    "(alpha-crown, alpha_intermediate=True) or branch-and-bound (bab_budget_s > 0) "
                    "may decide more",
                    {"eps": last.eps, "unknown": unknown, "n": n},
                )
            )
        best = {m: int(mr.verified.sum()) for m, mr in last.methods.items()}
        out.append(
            Finding(
                "info",
                f"at ε={_g(last.eps)}: {last.count('verified')} verified, "
                f"{last.count('falsified')} falsified, {unknown} unknown of {n}; per method "
                + ", ".join(f"{m} {k}" for m, k in best.items()),
                {"eps": last.eps, "verified_by": best},
            )
        )
        return out


def _figure(result: CertifyResult, level: float) -> Figure:
    n = max(1, result.n)
    labels = [f"{e:g}" for e in result.eps]
    ver = np.array([r.count("verified") for r in result.per_eps]) / n
    fal = np.array([r.count("falsified") for r in result.per_eps]) / n
    unk = np.array([r.count("unknown") for r in result.per_eps]) / n
    per_method = {
        m: [float(r.methods[m].verified.sum()) / n for r in result.per_eps] for m in result.methods
    }

    def draw() -> str:
        from edgeproof.report.charts import Axis, Chart
        from edgeproof.report.charts.colors import (
            BLACK,
            BLUE,
            GREEN,
            GREY,
            ORANGE,
            PURPLE,
            SKY,
            VERMILLION,
        )

        lines = (BLUE, ORANGE, PURPLE, SKY, BLACK)

        chart = Chart(
            560,
            320,
            x=Axis(f"ε ({result.norm})", scale="category", categories=tuple(labels), grid=False),
            y=Axis("fraction of samples", limits=(0, 1)),
        )
        chart.bars(labels, ver, color=GREEN, label="verified")
        chart.bars(labels, unk, bottom=ver, color=GREY, opacity=0.6, label="unknown")
        chart.bars(labels, fal, bottom=ver + unk, color=VERMILLION, opacity=0.8, label="falsified")
        for i, (m, acc) in enumerate(per_method.items()):
            chart.line(
                np.arange(len(labels)),
                acc,
                color=lines[i % len(lines)],
                marker="circle",
                label=f"by {m}",
            )
        return chart.svg()

    return Figure(
        "verdicts",
        "Verified / unknown / falsified vs ε",
        draw,
        description=f"stacked fractions of {result.n} samples; lines: verified accuracy per method "
        f"(intervals in the metrics, {round(level * 100)}% Wilson)",
    )

"""Adversarial robustness: robust accuracy vs ε, per-sample worst case, gradient-masking sanity.

For every ε of the threat model, FGSM, PGD and APGD-CE (:mod:`edgeproof.methods.attacks`) each
attack every correctly classified sample; a sample is robust at ε when no attack fooled it (the
per-sample worst case). Robust accuracies carry Wilson intervals. The minimal ε per sample is
bisected with PGD.

Forward-only models (an ONNX Runtime session: a third-party graph, or edgeproof's own int8/int4
exports) have no gradients. On them the check runs the Square Attack instead
(:class:`~edgeproof.methods.attacks.Square`, score-based, a stated query budget per sample) —
or the gradient-free attacks named in ``attacks``, if any — through
:func:`edgeproof.runtime.ort.session_forward`, bisects the minimal ε with it, and says in the
result which attacks did not run and why. With gradients, ``square`` may be named in
``attacks`` next to the gradient attacks.

Sanity checks against gradient masking (Athalye et al. 2018; Carlini et al. 2019, "On evaluating
adversarial robustness", §5), each a warning when it fails:

1. robust accuracy must not increase with ε (evidence also counts the samples robust at a larger ε
   but fooled at a smaller one);
2. PGD must not be weaker than FGSM (its robust accuracy may not exceed FGSM's; the samples FGSM
   fools and PGD does not are counted);
3. at ε = the diameter of the input domain (the attacker may reach any input), accuracy must reach
   chance: the Wilson lower bound of the robust accuracy must not exceed 1/K;
4. where Square ran next to gradient attacks, a gradient-free attack must not be stronger than
   all of them (Carlini et al. 2019, §5.3): at each ε, b samples fooled by Square and by no
   gradient attack against c the other way round; warning when the exact one-sided sign test
   (b ~ Binomial(b + c, ½)) gives p below (1 − level) divided by the number of ε (Bonferroni).

On forward-only models checks 1 and 3 apply (to the score-based attack: a failure there means
too small a query budget, or a model that ignores its input); 2 and 4 need gradient attacks.

The sample selection and the shared minimal-ε bisection are in
:mod:`~edgeproof.checks.attack_data` (re-exported here), the sanity findings in
:mod:`~edgeproof.checks.adversarial_sanity`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from edgeproof.checks.adversarial_sanity import masking_findings
from edgeproof.checks.attack_data import (
    AttackData,
    attack_data,
    attack_passes,
    default_attack_passes,
    shared_minimal_eps,
)
from edgeproof.checks.base import AuditContext, Check, stage_progress
from edgeproof.checks.budget import AUTO, SampleSetting
from edgeproof.errors import OptionError
from edgeproof.methods.attacks import APGD, FGSM, PGD, Attack, MinimalEps, Square, get_attack
from edgeproof.methods.attacks.curve import RobustnessCurve, robustness_curve
from edgeproof.methods.stats import bootstrap_interval, wilson_interval
from edgeproof.results import CheckResult, Figure, Finding, Metric, Table

__all__ = [
    "AdversarialCheck",
    "AttackData",
    "attack_data",
    "attack_passes",
    "default_attack_passes",
    "shared_minimal_eps",
]


_SQUARE_OPTIONS = {"n_queries": "square_queries", "p_init": "square_p_init"}
_SQUARE_OPTIONS["n_restarts"] = "square_restarts"


def _display(attack: Attack) -> str:
    """The attack's name as the text says it (``PGD``, ``Square``)."""
    return type(attack).__name__


class AdversarialCheck(Check):
    """Robust accuracy vs ε (FGSM / PGD / APGD-CE; Square on forward-only models) with
    gradient-masking sanity findings.

    Settings:
        attacks: attack names (default ``("fgsm", "pgd", "apgd")``; ``square`` may be added).
            On a model without gradients only the gradient-free ones run, Square if none is.
        pgd_steps, pgd_restarts, pgd_random_start: PGD settings (default 10 steps, 1 restart,
            random start on; step 2.5ε/steps).
        apgd_steps, apgd_restarts: APGD-CE settings (default 10 steps, 1 restart).
        square_queries, square_p_init, square_restarts: Square settings (default 1000 queries
            per sample and restart, the start included; p_init 0.8; 1 restart; margin loss).
        bisection_steps: rounds of the minimal-ε bisection (default 8; 0 turns it off), with
            PGD, or with Square on a model without gradients.
        max_samples: attack at most this many samples, a seeded subset (default ``"auto"``:
            up to 1000, fewer on a costly model, by the work budget of
            :mod:`edgeproof.checks.budget`; ``None``: all).
        level: confidence level (default 0.95).
    """

    name = "adversarial"
    title = "Adversarial robustness"
    quick_settings: ClassVar[Mapping[str, Any]] = {
        "pgd_steps": 3,
        "apgd_steps": 3,
        "square_queries": 50,
        "bisection_steps": 2,
        "max_samples": 24,
    }
    description = (
        "FGSM, PGD and APGD-CE robust accuracy vs ε with gradient-masking checks "
        "(the Square Attack on forward-only models)."
    )
    needs_data = True
    # Forward-only models (ONNX) get the Square Attack; a forward pass and data are needed.
    needs_gradients = False
    headline = ("robust_accuracy", "median_minimal_eps")

    def __init__(
        self,
        *,
        attacks: Sequence[str] = ("fgsm", "pgd", "apgd"),
        pgd_steps: int = 10,
        pgd_restarts: int = 1,
        pgd_random_start: bool = True,
        apgd_steps: int = 10,
        apgd_restarts: int = 1,
        square_queries: int = 1000,
        square_p_init: float = 0.8,
        square_restarts: int = 1,
        bisection_steps: int = 8,
        max_samples: SampleSetting = AUTO,
        level: float = 0.95,
    ) -> None:
        super().__init__(
            attacks=list(attacks),
            pgd_steps=pgd_steps,
            pgd_restarts=pgd_restarts,
            pgd_random_start=pgd_random_start,
            apgd_steps=apgd_steps,
            apgd_restarts=apgd_restarts,
            square_queries=square_queries,
            square_p_init=square_p_init,
            square_restarts=square_restarts,
            bisection_steps=bisection_steps,
            max_samples=max_samples,
            level=level,
        )
        if not attacks:
            raise OptionError("attacks", "no attack named", "use e.g. fgsm,pgd,apgd")
        self.pgd = PGD(steps=pgd_steps, restarts=pgd_restarts, random_start=pgd_random_start)
        try:
            self.square = Square(
                n_queries=square_queries, p_init=square_p_init, n_restarts=square_restarts
            )
        except OptionError as exc:  # name the check's setting, not the attack's argument
            option = _SQUARE_OPTIONS.get(exc.option, exc.option)
            raise OptionError(option, str(exc)[len(exc.option) + 2 :]) from None
        built: list[Attack] = []
        for name in attacks:
            if name == "pgd":
                built.append(self.pgd)
            elif name == "apgd":
                built.append(APGD(steps=apgd_steps, restarts=apgd_restarts))
            elif name == "fgsm":
                built.append(FGSM())
            elif name == "square":
                built.append(self.square)
            else:
                built.append(get_attack(name))
        self.attacks = built
        if bisection_steps < 0:
            raise OptionError("bisection_steps", f"{bisection_steps} is negative", "use >= 0")
        self.bisection_steps = int(bisection_steps)
        self.max_samples = max_samples
        self.level = float(level)

    def plan_attacks(self, has_gradients: bool) -> tuple[list[Attack], list[str]]:
        """The attacks to run and the names of those that cannot run.

        With gradients, every attack of ``attacks``. Without, the gradient-free ones among
        them, or Square when there is none; the gradient attacks are left out.
        """
        if has_gradients:
            return list(self.attacks), []
        free = [a for a in self.attacks if not a.needs_gradients]
        left_out = [a.name for a in self.attacks if a.needs_gradients]
        return (free or [self.square]), left_out

    def _gradient_free_names(self) -> set[str]:
        return {a.name for a in (*self.attacks, self.square) if not a.needs_gradients}

    def passes(self, ctx: AuditContext) -> float:
        """Forward-pass equivalents per sample at these settings (the work budget's unit)."""
        has_gradients = ctx.model.has_gradients
        attacks, _ = self.plan_attacks(has_gradients)
        bisector = self.pgd if has_gradients else self.square
        steps = self.bisection_steps
        sweep = len(ctx.threat.eps) + 1
        if isinstance(bisector, Square):
            bisect = steps * bisector.n_queries * bisector.n_restarts
            return attack_passes(attacks, sweep, pgd=None, bisection_steps=0) + bisect
        return attack_passes(attacks, sweep, pgd=bisector, bisection_steps=steps)

    def run(self, ctx: AuditContext) -> CheckResult:
        ad = attack_data(ctx, self.max_samples, passes=self.passes(ctx))
        attacks, left_out = self.plan_attacks(ad.has_gradients)
        eps = tuple(ctx.threat.eps)
        sweep = eps + ((ad.diameter,) if ad.diameter > eps[-1] * (1 + 1e-9) else ())
        curve = robustness_curve(
            ad.model,
            ad.x,
            ad.y,
            norm=ad.norm,
            eps=sweep,
            domain=ad.domain,
            attacks=attacks,
            seed=ctx.seed,
            batch_size=ctx.batch_size,
            progress=stage_progress(ctx, "attacks × ε"),
        )
        res = self.new_result()
        self._record(res, ctx, ad, eps, attacks, left_out)
        clean = int(curve.clean_correct.sum())
        res.metrics += self._accuracy_metrics(curve, ad, eps)
        if "square" in curve.attacks and curve.counts_queries("square"):
            res.metrics.append(self._square_metric(curve, eps, ctx.seed))
        res.tables.append(self._table(curve))
        res.findings.extend(self._sanity(curve, ad, sweep))
        mins: MinimalEps | None = None
        bisector: Attack = self.pgd if ad.has_gradients else self.square
        if self.bisection_steps > 0 and clean > 0:
            mins = shared_minimal_eps(
                ctx,
                ad,
                attack=bisector,
                iterations=self.bisection_steps,
                upper=None,
                batch_size=ctx.batch_size,
            )
            res.metrics.append(self._minimal_eps_metric(mins, ad, bisector, ctx.seed))
        res.figures.append(self._figure(curve, ad, mins, _display(bisector)))
        n = curve.n
        worst = float(curve.robust_accuracy()[len(eps) - 1])
        res.summary = (
            f"{ad.norm} ε={eps[-1]:g}: robust accuracy {worst:.1%} "
            f"(clean {clean / n:.1%}, {n} samples, worst case over {', '.join(curve.attacks)}"
            + ("" if ad.has_gradients else "; no gradients: score-based attack only")
            + ")"
        )
        return res

    def _record(
        self,
        res: CheckResult,
        ctx: AuditContext,
        ad: AttackData,
        eps: tuple[float, ...],
        attacks: list[Attack],
        left_out: list[str],
    ) -> None:
        """The settings of this run, the sample-count note, and on a forward-only model the
        attacks that ran and those that could not."""
        res.settings.update(
            norm=ad.norm,
            eps=list(eps),
            sanity_eps=ad.diameter,
            samples=int(ad.x.shape[0]),
            samples_rule=None if ad.count is None else ad.count.rule,
            attack_objects=[repr(a) for a in attacks],
        )
        note = None if ad.count is None else ad.count.finding(self.name, "max_samples")
        if note is not None:
            res.findings.append(note)
        if not ad.has_gradients:
            why = f"needs gradients, which {ctx.model.described} does not provide"
            res.settings.update(
                gradients=False,
                attacks_run=[a.name for a in attacks],
                attacks_not_run={name: why for name in left_out},
            )
            res.findings.append(self._forward_only_finding(ctx, attacks, left_out))

    def _accuracy_metrics(
        self, curve: RobustnessCurve, ad: AttackData, eps: tuple[float, ...]
    ) -> list[Metric]:
        """Clean accuracy, the robust accuracy at every ε of the threat model, and at the
        largest (``robust_accuracy``)."""
        n = curve.n
        clean = int(curve.clean_correct.sum())
        out = [
            Metric(
                "clean_accuracy",
                clean / n,
                unit="fraction",
                ci=wilson_interval(clean, n, self.level),
                description="accuracy on the attacked samples before any attack",
                higher_is_better=True,
                settings={"samples": n},
            )
        ]
        robust_acc = curve.robust_accuracy()
        for e_i, e in enumerate(eps):
            out.append(
                Metric(
                    f"robust_accuracy@{e:g}",
                    float(robust_acc[e_i]),
                    unit="fraction",
                    ci=curve.interval(e_i, self.level),
                    description=f"{ad.norm} ε={e:g}: correct and not fooled by any of "
                    f"{', '.join(curve.attacks)} (per-sample worst case)",
                    higher_is_better=True,
                    settings={"norm": ad.norm, "eps": e},
                )
            )
        last = len(eps) - 1
        out.append(
            Metric(
                "robust_accuracy",
                float(robust_acc[last]),
                unit="fraction",
                ci=curve.interval(last, self.level),
                description=f"robust accuracy at the largest ε of the threat model ({eps[-1]:g})",
                higher_is_better=True,
                settings={"norm": ad.norm, "eps": eps[-1]},
            )
        )
        return out

    def _square_metric(self, curve: RobustnessCurve, eps: tuple[float, ...], seed: int) -> Metric:
        """``square_mean_queries``: Square's mean queries per sample it fooled at the largest
        ε, with a bootstrap interval."""
        last = len(eps) - 1
        clean = int(curve.clean_correct.sum())
        a_sq = curve.attacks.index("square")
        rows = curve.clean_correct & curve.fooled[a_sq, last]
        spent = curve.queries[a_sq, last][rows] if curve.queries is not None else []
        q_ci = (
            bootstrap_interval(
                lambda idx: np.mean(np.asarray(spent, dtype=np.float64)[idx], axis=1),
                len(spent),
                level=self.level,
                seed=seed,
                resamples=500,
            )
            if len(spent)
            else None
        )
        return Metric(
            "square_mean_queries",
            curve.mean_queries("square", last),
            unit="queries",
            ci=q_ci,
            description=f"Square at ε={eps[-1]:g}: mean model queries per sample it "
            f"fooled ({len(spent)} of {clean}; budget {self.square.n_queries} per "
            f"sample and restart, {self.square.n_restarts} restart(s))",
            higher_is_better=True,
            settings={
                "eps": eps[-1],
                "n_queries": self.square.n_queries,
                "n_restarts": self.square.n_restarts,
                "p_init": self.square.p_init,
            },
        )

    def _minimal_eps_metric(
        self, mins: MinimalEps, ad: AttackData, bisector: Attack, seed: int
    ) -> Metric:
        """``median_minimal_eps`` over the correctly classified samples, with a bootstrap
        interval."""
        vals = mins.values[mins.clean_correct]
        ci = bootstrap_interval(
            lambda idx: np.median(vals[idx], axis=1),
            vals.size,
            level=self.level,
            seed=seed,
            resamples=500,
        )
        return Metric(
            "median_minimal_eps",
            mins.median(),
            unit=f"{ad.norm} ε",
            ci=ci,
            description="median over correctly classified samples of the smallest ε at "
            "which "
            f"{_display(bisector)} succeeded (bisection, resolution "
            f"{mins.resolution:.3g}; "
            f"{int(mins.censored.sum())} sample(s) not fooled up to {mins.upper:g})",
            higher_is_better=True,
            settings={
                "bisection_steps": self.bisection_steps,
                "upper": mins.upper,
                "attack": repr(bisector),
            },
        )

    def _forward_only_finding(
        self, ctx: AuditContext, attacks: list[Attack], left_out: list[str]
    ) -> Finding:
        ran = ", ".join(repr(a) for a in attacks)
        skipped = (
            f"; {', '.join(left_out)} need gradients, which {ctx.model.described} does "
            "not provide, and did not run"
            if left_out
            else ""
        )
        return Finding(
            "info",
            f"forward-only model: ran {ran} (score-based, forward passes only){skipped}. A "
            "score-based attack bounds robust accuracy from above like any attack, usually "
            "less tightly than gradient attacks on a differentiable model; audit the PyTorch "
            "model (weights with its architecture) to run the gradient attacks too",
            {
                "attacks_run": [a.name for a in attacks],
                "attacks_not_run": left_out,
                "model_format": ctx.model.format,
            },
        )

    def _table(self, curve: RobustnessCurve) -> Table:
        counted = [a for a in curve.attacks if curve.counts_queries(a)]
        cols = [
            "eps",
            *[f"{a} robust acc" for a in curve.attacks],
            "worst-case robust acc",
            "ci low",
            "ci high",
            "n",
            *[f"{a} mean queries (fooled)" for a in counted],
        ]
        rows: list[list[Any]] = []
        for e_i, e in enumerate(curve.eps):
            iv = curve.interval(e_i, self.level)
            queries = [curve.mean_queries(a, e_i) for a in counted]
            rows.append(
                [
                    float(e),
                    *[round(float(curve.robust_accuracy(a)[e_i]), 6) for a in curve.attacks],
                    round(float(curve.robust_accuracy()[e_i]), 6),
                    round(iv.low, 6),
                    round(iv.high, 6),
                    curve.n,
                    *[None if np.isnan(q) else round(q, 2) for q in queries],
                ]
            )
        return Table(
            "robust_accuracy",
            "Robust accuracy vs ε",
            cols,
            rows,
            description="the last row is the sanity ε (the domain's diameter)",
        )

    def _sanity(
        self, curve: RobustnessCurve, ad: AttackData, sweep: tuple[float, ...]
    ) -> list[Finding]:
        """The gradient-masking sanity findings (:func:`~.adversarial_sanity.masking_findings`)."""
        return masking_findings(
            curve, ad, sweep, level=self.level, free=self._gradient_free_names()
        )

    def _figure(
        self, curve: RobustnessCurve, ad: AttackData, mins: MinimalEps | None, bisector: str
    ) -> Figure:
        eps = np.asarray(curve.eps, dtype=float)
        per_attack = [(a, curve.robust_accuracy(a)) for a in curve.attacks]
        acc = curve.robust_accuracy()
        ivs = [curve.interval(i, self.level) for i in range(len(eps))]
        low, high = np.array([iv.low for iv in ivs]), np.array([iv.high for iv in ivs])
        survival: tuple[np.ndarray, np.ndarray] | None = None
        if mins is not None:
            v = np.sort(mins.values[mins.clean_correct])
            if v.size:
                survival = (v, (v.size - np.arange(1, v.size + 1)) / curve.n)
        chance, norm, level = 1.0 / ad.num_classes, ad.norm, self.level

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

            colors = (BLUE, ORANGE, GREEN, VERMILLION, SKY)
            chart = Chart(
                640,
                360,
                x=Axis(f"ε ({norm})", scale="log"),
                y=Axis("robust accuracy", limits=(-0.02, 1.02)),
            )
            ci = f"{round(level * 100)}% Wilson CI"
            chart.band(eps, low, high, color=BLACK, opacity=0.13, label=ci)
            for i, (name, a) in enumerate(per_attack):
                chart.line(eps, a, color=colors[i % len(colors)], width=1.2, marker="circle",
                           marker_size=2.4, label=name)  # fmt: skip
            if survival is not None:
                chart.step(survival[0], survival[1], where="post", color=PURPLE, width=1.0,
                           dash="dashed", label=f"{bisector} minimal-ε survival")  # fmt: skip
            chart.hline(chance, color=GREY, dash="dotted", label="chance")
            chart.line(eps, acc, color=BLACK, width=2.2, marker="circle", marker_size=3.5,
                       label="worst case")  # fmt: skip
            chart.legend(order=("worst case", ci))
            return chart.svg()

        return Figure(
            "robust_accuracy",
            "Robust accuracy vs ε",
            draw,
            description="per attack and per-sample worst case; the last point is the "
            "domain's diameter (sanity check: should reach chance)",
        )

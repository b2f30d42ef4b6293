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
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.stats import binomtest
from torch import nn

from edgeproof.checks.base import AuditContext, Check, stage_progress
from edgeproof.checks.budget import AUTO, SampleCount, SampleSetting, resolve_samples
from edgeproof.errors import OptionError, SpecError
from edgeproof.methods.attacks import (
    APGD,
    FGSM,
    PGD,
    Attack,
    Forward,
    MinimalEps,
    Square,
    get_attack,
    minimal_eps,
)
from edgeproof.methods.attacks.base import check_domain, check_logits, diameter, frozen_copy
from edgeproof.methods.attacks.curve import RobustnessCurve, robustness_curve
from edgeproof.methods.stats import bootstrap_interval, wilson_interval
from edgeproof.results import CheckResult, Figure, Finding, Metric, Table
from edgeproof.runtime.ort import session_forward
from edgeproof.spec import Norm

__all__ = ["AdversarialCheck", "AttackData", "attack_data", "shared_minimal_eps"]


@dataclass(frozen=True)
class AttackData:
    """The model and samples an attack check works on.

    Attributes:
        model: what the attacks call: an eval-mode copy of the module with frozen parameters,
            or, for an ONNX model, :func:`~edgeproof.runtime.ort.session_forward` over its
            session (forward only).
        x: inputs ``(N, *shape)`` (float32), a seeded subset when the data is larger than
            ``max_samples``.
        y: labels ``(N,)``.
        index: positions of the samples in the dataset.
        num_classes: K, the number of logits the model returns.
        norm: threat norm.
        domain: input domain.
        diameter: the largest useful ε in this norm.
        module: the frozen module (the same object as ``model``) when the model has gradients;
            ``None`` for a forward-only model.
        count: how the sample count was chosen (:mod:`edgeproof.checks.budget`).
    """

    model: Forward
    x: torch.Tensor
    y: torch.Tensor
    index: np.ndarray
    num_classes: int
    norm: Norm
    domain: tuple[float, float]
    diameter: float
    module: nn.Module | None = None
    count: SampleCount | None = None

    @property
    def has_gradients(self) -> bool:
        return self.module is not None

    def gradient_model(self) -> nn.Module:
        """The frozen module; :class:`SpecError` for a forward-only model."""
        if self.module is None:  # the runner skips gradient checks for such models
            raise SpecError("this check differentiates the model: it needs a PyTorch model")
        return self.module


def attack_data(
    ctx: AuditContext, max_samples: SampleSetting, *, passes: float | None = None
) -> AttackData:
    """Validate model, data and threat for an attack check and pick the samples.

    ``max_samples``: a number, ``None`` (all) or ``"auto"`` (the work budget of
    :mod:`edgeproof.checks.budget` at ``passes`` forward-pass equivalents per sample; default:
    those of the default ``adversarial`` check, so checks sharing the minimal-ε bisection pick
    the same samples).

    A PyTorch model is attacked through a frozen eval-mode copy, an ONNX model through its
    session (forward only, batches of ``ctx.batch_size``).

    Raises :class:`SpecError` when the data leave the declared domain or the model's output is
    not ``(batch, K)`` logits of the declared classes.
    """
    data = ctx.require_data()
    module = ctx.model.module
    session = ctx.model.session
    if module is None and session is None:  # the runner skips such models (no forward pass)
        raise SpecError(f"{ctx.model.name}: attacks need a model with a forward pass")
    spec = ctx.threat.input
    k = spec.num_classes if spec.num_classes is not None else data.num_classes
    check_logits(ctx.clean_logits(), k, ctx.model.name)
    if data.num_classes > k:
        raise SpecError(
            f"{data.name}: the data has {data.num_classes} classes but the model outputs {k} "
            "logits; use data labelled for this model"
        )
    check_domain(data.x, spec, data.name)
    n = len(data)
    if max_samples is not None and not isinstance(max_samples, str) and max_samples < 1:
        raise OptionError("max_samples", f"{max_samples} is too few", "use >= 1 or None for all")
    if passes is None:
        passes = default_attack_passes(len(ctx.threat.eps) + 1)
    count = resolve_samples(ctx, max_samples, n, passes=passes)
    if count.n < n:
        rng = np.random.default_rng(ctx.seed)
        index = np.sort(rng.choice(n, size=count.n, replace=False))
    else:
        index = np.arange(n)
    frozen = frozen_copy(module) if module is not None else None
    if frozen is not None:
        forward: Forward = frozen
    else:
        run = session_forward(session, batch_size=ctx.batch_size)
        # the session takes the network's units: the audit's input transform first
        # (outside normalisation, per-feature ranges), as LoadedModel.predict_logits does
        preprocess = ctx.model.preprocess
        forward = run if ctx.model.input_affine is None else (lambda x: run(preprocess(x)))
    return AttackData(
        model=forward,
        x=torch.from_numpy(np.ascontiguousarray(data.x[index])),
        y=torch.from_numpy(np.ascontiguousarray(data.y[index])),
        index=index,
        num_classes=int(k),
        norm=ctx.threat.norm,
        domain=spec.domain,
        diameter=diameter(ctx.threat.norm, spec.domain, spec.numel),
        module=frozen,
        count=count,
    )


def attack_passes(
    attacks: Sequence[Attack], sweep: int, *, pgd: PGD | None, bisection_steps: int
) -> float:
    """Forward-pass equivalents per sample of ``attacks`` at ``sweep`` values of ε plus a
    ``bisection_steps`` minimal-ε bisection with ``pgd`` (a backward pass counts as two)."""

    def cost(a: Attack) -> float:
        if isinstance(a, Square):
            return float(a.n_queries * a.n_restarts)
        steps = getattr(a, "steps", 1)
        restarts = getattr(a, "restarts", 1)
        return 3.0 * steps * restarts + 1.0

    total = sweep * sum(cost(a) for a in attacks)
    if pgd is not None:
        total += bisection_steps * cost(pgd)
    return total


def default_attack_passes(sweep: int) -> float:
    """:func:`attack_passes` of the default ``adversarial`` check (FGSM, PGD-10, APGD-10 and an
    8-step PGD bisection) at ``sweep`` values of ε."""
    pgd = PGD(steps=10)
    return attack_passes([FGSM(), pgd, APGD(steps=10)], sweep, pgd=pgd, bisection_steps=8)


def shared_minimal_eps(
    ctx: AuditContext,
    ad: AttackData,
    *,
    attack: Attack,
    iterations: int,
    upper: float | None,
    batch_size: int,
) -> MinimalEps:
    """Minimal ε per sample of ``attack`` (PGD; Square on forward-only models), computed once
    per audit for the same settings (``ctx.cache``).

    ``upper`` defaults to the domain's diameter for L∞ and to ``min(diameter, 10·max ε)`` for
    L2 (whose diameter grows with √d and would waste the bisection's resolution).
    """
    if upper is None:
        upper = ad.diameter if ad.norm == "linf" else min(ad.diameter, 10 * max(ctx.threat.eps))
    samples = hashlib.sha256(ad.index.astype(np.int64).tobytes()).hexdigest()[:16]
    key = (
        f"minimal_eps:{attack!r}:{iterations}:{upper!r}:{ad.norm}:{ad.domain}:{samples}:{ctx.seed}"
    )
    if key not in ctx.cache:
        ctx.cache[key] = minimal_eps(
            ad.model,
            ad.x,
            ad.y,
            norm=ad.norm,
            domain=ad.domain,
            attack=attack,
            upper=upper,
            iterations=iterations,
            seed=ctx.seed,
            batch_size=batch_size,
            progress=stage_progress(ctx, "minimal ε"),
        )
    out: MinimalEps = ctx.cache[key]
    return out


def _g(v: float) -> str:
    return f"{v:.4g}"


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
        n = curve.n
        clean = int(curve.clean_correct.sum())
        res.metrics.append(
            Metric(
                "clean_accuracy",
                clean / n,
                unit="fraction",
                ci=wilson_interval(clean, n, self.level),
                description="accuracy on the attacked samples before any attack",
                higher_is_better=True,
                settings={"samples": n},
            )
        )
        robust_acc = curve.robust_accuracy()
        for e_i, e in enumerate(eps):
            res.metrics.append(
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
        res.metrics.append(
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
        if "square" in curve.attacks and curve.counts_queries("square"):
            a_sq = curve.attacks.index("square")
            rows = curve.clean_correct & curve.fooled[a_sq, last]
            spent = curve.queries[a_sq, last][rows] if curve.queries is not None else []
            q_ci = (
                bootstrap_interval(
                    lambda idx: np.mean(np.asarray(spent, dtype=np.float64)[idx], axis=1),
                    len(spent),
                    level=self.level,
                    seed=ctx.seed,
                    resamples=500,
                )
                if len(spent)
                else None
            )
            res.metrics.append(
                Metric(
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
            )
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
            vals = mins.values[mins.clean_correct]
            ci = bootstrap_interval(
                lambda idx: np.median(vals[idx], axis=1),
                vals.size,
                level=self.level,
                seed=ctx.seed,
                resamples=500,
            )
            res.metrics.append(
                Metric(
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
            )
        res.figures.append(self._figure(curve, ad, mins, _display(bisector)))
        worst = float(robust_acc[last])
        res.summary = (
            f"{ad.norm} ε={eps[-1]:g}: robust accuracy {worst:.1%} "
            f"(clean {clean / n:.1%}, {n} samples, worst case over {', '.join(curve.attacks)}"
            + ("" if ad.has_gradients else "; no gradients: score-based attack only")
            + ")"
        )
        return res

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
        out: list[Finding] = []
        counts = curve.robust_count()
        robust = curve.robust
        free = self._gradient_free_names()
        forward_only = all(a in free for a in curve.attacks)
        rises = [
            (sweep[i], sweep[i + 1], int(counts[i]), int(counts[i + 1]))
            for i in range(len(sweep) - 1)
            if counts[i + 1] > counts[i]
        ]
        flips = [int((robust[i + 1] & ~robust[i]).sum()) for i in range(len(sweep) - 1)]
        if rises:
            a, b, ca, cb = rises[0]
            cause = (
                "the attack is not converging; raise square_queries/square_restarts before "
                "trusting these numbers"
                if forward_only
                else "the attacks are not converging, which is a sign of gradient masking; raise "
                "pgd_steps/pgd_restarts before trusting these numbers"
            )
            out.append(
                Finding(
                    "warning",
                    f"robust accuracy increases with ε ({ca}/{curve.n} robust at ε={_g(a)}, "
                    f"{cb} at "
                    f"ε={_g(b)}): {cause}",
                    {"increases": rises, "samples_robust_only_at_larger_eps": flips},
                )
            )
        if "fgsm" in curve.attacks and "pgd" in curve.attacks:
            f_acc = curve.robust_accuracy("fgsm")
            p_acc = curve.robust_accuracy("pgd")
            only_fgsm = curve.only_fooled_by("fgsm", "pgd")
            weaker = [i for i in range(len(sweep)) if p_acc[i] > f_acc[i]]
            evidence = {
                "eps": list(sweep),
                "fgsm_robust_accuracy": f_acc.tolist(),
                "pgd_robust_accuracy": p_acc.tolist(),
                "fooled_by_fgsm_not_pgd": only_fgsm.tolist(),
            }
            if weaker:
                i = weaker[0]
                out.append(
                    Finding(
                        "warning",
                        f"PGD is weaker than FGSM at ε={_g(sweep[i])} (robust accuracy "
                        f"{p_acc[i]:.1%} vs {f_acc[i]:.1%}; {int(only_fgsm[i])} samples fooled "
                        "by FGSM but not PGD): a one-step attack beating an iterative one "
                        "indicates gradient "
                        "masking or a too-small PGD step",
                        evidence,
                    )
                )
            elif only_fgsm.sum() > 0:
                out.append(
                    Finding(
                        "info",
                        f"PGD is at least as strong as FGSM at every ε, but {int(only_fgsm.sum())} "
                        "(sample, ε) pairs were fooled by FGSM only; they count in the worst case",
                        evidence,
                    )
                )
        out.extend(self._gradient_free_vs_gradient(curve, sweep, free))
        if sweep[-1] == ad.diameter:
            k_big = int(counts[-1])
            iv = wilson_interval(k_big, curve.n, self.level)
            chance = 1.0 / ad.num_classes
            if iv.low > chance:
                cause = (
                    "the attack cannot find adversarial inputs the threat model allows: raise "
                    "square_queries/square_restarts, or the model ignores its input"
                    if forward_only
                    else "the attacks cannot find adversarial inputs the threat model "
                    "allows, a sign of gradient masking or of a model that ignores its input"
                )
                out.append(
                    Finding(
                        "warning",
                        f"at ε={_g(ad.diameter)} (any input in the domain is reachable) robust "
                        f"accuracy is still {k_big / curve.n:.1%} (CI low {iv.low:.1%}) > chance "
                        f"1/K = {chance:.1%}: {cause}",
                        {"eps": ad.diameter, "robust": k_big, "n": curve.n, "chance": chance},
                    )
                )
        if not any(f.severity == "warning" for f in out):
            message = (
                "no sign of a failing attack: robust accuracy falls with ε and reaches chance "
                "at the domain's diameter"
                if forward_only
                else "no sign of gradient masking: robust accuracy falls with ε, PGD is at "
                "least as strong as FGSM, and accuracy reaches chance at the domain's diameter"
            )
            out.append(
                Finding("info", message, {"eps": list(sweep), "robust_count": counts.tolist()})
            )
        return out

    def _gradient_free_vs_gradient(
        self, curve: RobustnessCurve, sweep: tuple[float, ...], free: set[str]
    ) -> list[Finding]:
        """Sanity check 4: a gradient-free attack stronger than every gradient attack."""
        grad = [i for i, a in enumerate(curve.attacks) if a not in free]
        score = [i for i, a in enumerate(curve.attacks) if a in free]
        if not grad or not score:
            return []
        by_grad = curve.fooled[grad].any(axis=0)  # (E, N)
        by_free = curve.fooled[score].any(axis=0)
        only_free = (by_free & ~by_grad).sum(axis=1)
        only_grad = (by_grad & ~by_free).sum(axis=1)
        p = [
            float(binomtest(int(b), int(b + c), 0.5, alternative="greater").pvalue)
            if b > 0
            else 1.0
            for b, c in zip(only_free, only_grad, strict=True)
        ]
        alpha = (1.0 - self.level) / len(sweep)
        names = ", ".join(curve.attacks[i] for i in score)
        grads = ", ".join(curve.attacks[i] for i in grad)
        evidence = {
            "eps": list(sweep),
            "fooled_only_by_gradient_free": only_free.tolist(),
            "fooled_only_by_gradient": only_grad.tolist(),
            "sign_test_p": p,
            "alpha_bonferroni": alpha,
        }
        worst = int(np.argmin(p))
        if p[worst] < alpha:
            return [
                Finding(
                    "warning",
                    f"{names} (gradient-free) fooled {int(only_free[worst])} samples at "
                    f"ε={_g(sweep[worst])} that none of {grads} fooled, against "
                    f"{int(only_grad[worst])} the other way (sign test p={p[worst]:.2g} < "
                    f"{alpha:.2g}): the gradient attacks miss inputs a score-based attack finds, "
                    "a sign of gradient masking; rely on the worst case (it includes "
                    f"{names}) and raise pgd_steps/apgd_steps",
                    evidence,
                )
            ]
        if only_free.sum() > 0:
            return [
                Finding(
                    "info",
                    f"{names} is not significantly stronger than {grads} at any ε, but "
                    f"{int(only_free.sum())} (sample, ε) pairs were fooled by {names} only; "
                    "they count in the worst case",
                    evidence,
                )
            ]
        return []

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

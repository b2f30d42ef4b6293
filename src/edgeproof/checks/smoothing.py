"""Randomised smoothing: certified L2 accuracy of the base model smoothed with Gaussian noise.

A thin adapter over :mod:`edgeproof.certify.smoothing` (Cohen, Rosenfeld & Kolter, ICML 2019;
reference code locuslab/smoothing ``code/core.py``): CERTIFY on a seeded subset of the data,
then the certified accuracy at each radius with Wilson intervals, the abstention rate, the average
certified radius and the time per sample.

What is certified is the *smoothed* classifier ``g(x) = argmax_c P(f(x + N(0, σ²I)) = c)`` built
from the audited model ``f``, not ``f`` itself. A model that was not trained with Gaussian noise
augmentation at this σ usually votes inconsistently under the noise, so ``g`` abstains often and
certifies small radii; the check says so when abstention is high.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from edgeproof.certify.smoothing import (
    Certificate,
    CertificationLimits,
    CertificationRun,
    CertifiedAccuracy,
    CertifySettings,
    Classifier,
    Smoothed,
    StepCurve,
    certification_limits,
    certified_accuracy_curve,
    certify_many,
    paper_radii,
    sample_size_warning,
)
from edgeproof.checks.base import AuditContext, Check
from edgeproof.checks.budget import AUTO, SampleSetting, resolve_samples
from edgeproof.errors import OptionError
from edgeproof.methods.attacks.base import check_logits
from edgeproof.methods.stats import bootstrap_interval, wilson_interval
from edgeproof.models.loaded import LoadedModel
from edgeproof.results import CheckResult, Figure, Finding, Metric, Table

__all__ = ["DEFAULT_SIGMA_FRACTION", "HIGH_ABSTENTION", "RADIUS_STEP_FRACTION", "SmoothingCheck"]

#: default σ as a fraction of the input domain's width (Cohen et al.'s σ = 0.25 on [0, 1] images)
DEFAULT_SIGMA_FRACTION = 0.25
#: default radius grid step as a fraction of the domain width (the paper's 0, 0.25, 0.5, …)
RADIUS_STEP_FRACTION = 0.25
#: abstention rate from which the check warns that the model is probably not noise-trained
HIGH_ABSTENTION = 0.2
#: salt of the per-sample noise generators (kept apart from other checks' streams)
_SEED_SALT = 7_331


def _classifier(model: LoadedModel, batch_size: int) -> Classifier:
    """The model as a ``Tensor -> logits`` callable: the module itself, or its ONNX session."""
    if model.module is not None:
        return model.module

    def run_session(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(model.predict_logits(x, batch_size))

    return run_session


class SmoothingCheck(Check):
    """CERTIFY (Cohen et al. 2019) on a seeded subset; certified accuracy vs L2 radius.

    Settings:
        sigma: noise level σ in input units; default ``0.25 × (hi − lo)`` of the input domain
            (:data:`DEFAULT_SIGMA_FRACTION`).
        n0: selection samples per input (default 100, as in the paper).
        n: estimation samples per input (default 1000; the paper uses 100000, which certifies
            radii up to ``σ·Φ⁻¹(α^{1/n})`` ≈ 3.8σ instead of ≈ 2.5σ, at 100× the cost).
        alpha: failure probability of each certificate (default 0.001).
        max_samples: at most this many inputs, a seeded subset (default ``"auto"``: up to 100,
            at least 16, fewer on a costly model by the work budget of
            :mod:`edgeproof.checks.budget`; ``None``: all).
        radii: L2 radii to report, in input units; default ``0, 0.25w, 0.5w, …`` (``w`` the
            domain width) up to the first one at or beyond the largest certifiable radius.
        batch_size: noisy copies per forward pass (default 250: on one core a CNN runs about a
            third faster at 250 than at 1000 rows; results depend on it, as on the seed).
        level: confidence level of the intervals (default 0.95).
    """

    name = "smoothing"
    title = "Randomised smoothing (certified L2 radius)"
    description = (
        "Certified L2 robustness of the model smoothed with Gaussian noise (Cohen et al. 2019): "
        "per input, a class and a radius within which the smoothed model provably keeps it, with "
        "probability 1 − α. A model not trained with Gaussian noise at this σ abstains a lot."
    )
    needs_data = True
    needs_forward = True
    needs_gradients = False
    headline = ("average_certified_radius", "certified_accuracy@0", "abstention_rate")
    quick_settings: ClassVar[Mapping[str, Any]] = {"n0": 10, "n": 100, "max_samples": 8}

    def __init__(
        self,
        *,
        sigma: float | None = None,
        n0: int = 100,
        n: int = 1000,
        alpha: float = 0.001,
        max_samples: SampleSetting = AUTO,
        radii: Sequence[float] | None = None,
        batch_size: int = 250,
        level: float = 0.95,
    ) -> None:
        super().__init__(
            sigma=sigma,
            n0=n0,
            n=n,
            alpha=alpha,
            max_samples=max_samples,
            radii=None if radii is None else [float(r) for r in radii],
            batch_size=batch_size,
            level=level,
        )
        self.conf = CertifySettings(n0, n, alpha, batch_size)  # one-line OptionErrors
        if sigma is not None:
            certification_limits(n, alpha, sigma)  # validates sigma
        if isinstance(max_samples, int) and max_samples < 1:
            raise OptionError("max_samples", f"{max_samples} is too few", "use >= 1 or None")
        if radii is not None and (
            not list(radii) or any(not np.isfinite(r) or r < 0 for r in radii)
        ):
            raise OptionError("radii", f"{list(radii)!r} must be radii >= 0", "e.g. 0,0.25,0.5")
        if not 0.0 < level < 1.0:
            raise OptionError("level", f"{level} is not in (0, 1)", "use e.g. 0.95")
        self.sigma = sigma
        self.max_samples = max_samples
        self.radii = None if radii is None else sorted({float(r) for r in radii})
        self.level = float(level)

    def run(self, ctx: AuditContext) -> CheckResult:
        data = ctx.require_data()
        spec = ctx.threat.input
        k = spec.num_classes if spec.num_classes is not None else data.num_classes
        logits = ctx.clean_logits()
        check_logits(logits, k, ctx.model.name)
        conf = self.conf
        width = spec.range
        sigma = float(self.sigma) if self.sigma is not None else DEFAULT_SIGMA_FRACTION * width
        limits = certification_limits(conf.n, conf.alpha, sigma)
        if self.radii is not None:
            radii = sorted({0.0, *self.radii})
        else:
            radii = list(paper_radii(limits.max_radius, RADIUS_STEP_FRACTION * width))
        count = resolve_samples(
            ctx, self.max_samples, len(data), passes=conf.n0 + conf.n, cap=100, floor=16
        )
        index = self._subset(len(data), count.n, ctx.seed)
        labels = data.y[index]
        ctx.progress.start(int(index.size), "certifying")

        def advance(_: Certificate) -> None:
            ctx.progress.advance()

        run = certify_many(
            Smoothed(_classifier(ctx.model, conf.batch_size), k, sigma),
            data.x[index],
            labels,
            n0=conf.n0,
            n=conf.n,
            alpha=conf.alpha,
            batch_size=conf.batch_size,
            seed=ctx.seed * 1_000_003 + _SEED_SALT,
            keys=index,
            on_sample=advance,
        )
        table = run.certified_accuracy(radii, level=self.level)
        base_acc = float(np.mean(np.argmax(logits[index], axis=1) == labels))
        res = self.new_result()
        res.settings.update(
            sigma=sigma, radii=radii, samples=int(index.size), samples_rule=count.rule
        )
        note = count.finding(self.name, "max_samples", "records")
        if note is not None:
            res.findings.append(note)
        res.metrics.extend(self._metrics(run, table, ctx.seed))
        res.tables.append(_accuracy_table(table))
        res.tables.append(_certificates_table(run, labels, [data.ids[i] for i in index]))
        res.findings.extend(self._findings(run, limits, radii, base_acc))
        res.figures.append(
            accuracy_figure(certified_accuracy_curve(run.radii, run.correct), table, sigma)
        )
        first = next((r for r in radii if r > 0), 0.0)
        res.summary = (
            f"certified accuracy {table.at(first):.2f} at L2 radius {first:g} "
            f"(σ={sigma:g}, n={conf.n}, α={conf.alpha:g}, {index.size} samples); "
            f"abstained on {np.mean(run.abstained):.0%}; ACR {run.average_certified_radius():.3g}"
        )
        return res

    @staticmethod
    def _subset(total: int, n: int, seed: int) -> np.ndarray:
        """A seeded subset of ``n`` of ``total`` indices, sorted (as the attack checks)."""
        if total > n:
            rng = np.random.default_rng(seed)
            return np.sort(rng.choice(total, size=n, replace=False))
        return np.arange(total)

    def _metrics(self, run: CertificationRun, table: CertifiedAccuracy, seed: int) -> list[Metric]:
        count = int(run.radii.size)
        settings: dict[str, Any] = dict(run.settings)
        per_sample = np.where(run.correct, run.radii, 0.0)
        abstained = int(run.abstained.sum())
        out = [
            Metric(
                "average_certified_radius",
                float(per_sample.mean()),
                unit="L2, input units",
                ci=bootstrap_interval(
                    lambda idx: per_sample[idx].mean(axis=1), count, level=self.level, seed=seed
                ),
                higher_is_better=True,
                description="mean over samples of the certified radius where the certified "
                "class is right, else 0 (ACR)",
                settings=settings,
            ),
            Metric(
                "abstention_rate",
                abstained / count,
                unit="fraction",
                ci=wilson_interval(abstained, count, self.level),
                higher_is_better=False,
                description="fraction of samples where CERTIFY abstained (p_A lower bound < 0.5)",
                settings=settings,
            ),
        ]
        for r, acc, hit in zip(table.radii, table.accuracy, table.certified):
            out.append(
                Metric(
                    f"certified_accuracy@{r:g}",
                    float(acc),
                    unit="fraction",
                    ci=wilson_interval(int(hit), count, self.level),
                    higher_is_better=True,
                    description="fraction of samples the smoothed model certifies correctly "
                    f"within L2 radius {r:g} (abstentions count as wrong)",
                    settings=settings,
                )
            )
        # headline order: ACR, certified accuracy at 0, abstention rate, then the other radii
        out[1], out[2] = out[2], out[1]
        out.append(
            Metric(
                "time_per_sample",
                float(np.mean(run.time_s) * 1e3),
                unit="ms",
                higher_is_better=False,
                description=f"mean wall-clock time of CERTIFY per input ({self.conf.n0} + "
                f"{self.conf.n} noisy forward passes, batches of {self.conf.batch_size})",
                settings=settings,
            )
        )
        return out

    def _findings(
        self,
        run: CertificationRun,
        limits: CertificationLimits,
        radii: list[float],
        base_acc: float,
    ) -> list[Finding]:
        out: list[Finding] = []
        evidence = {
            "n": limits.n,
            "alpha": limits.alpha,
            "sigma": limits.sigma,
            "max_certifiable_radius": limits.max_radius,
            "max_p_a_lower": limits.max_p_a_lower,
        }
        warning = sample_size_warning(limits.n, limits.alpha, limits.sigma, radii)
        beyond = [r for r in radii if r > limits.max_radius]
        if warning is not None:
            out.append(Finding("warning", warning, evidence))
        elif beyond:
            out.append(
                Finding(
                    "info",
                    f"radii {', '.join(f'{r:g}' for r in beyond)} lie beyond the largest radius "
                    f"n={limits.n} samples can certify ({limits.max_radius:.3g}); their certified "
                    "accuracy is 0 by construction (a larger n reaches further)",
                    evidence,
                )
            )
        abstained = int(run.abstained.sum())
        rate = abstained / int(run.radii.size)
        if rate >= HIGH_ABSTENTION:
            ci = wilson_interval(abstained, int(run.radii.size), self.level)
            out.append(
                Finding(
                    "warning",
                    f"the smoothed model abstains on {rate:.0%} of samples "
                    f"(CI {ci.low:.0%}..{ci.high:.0%}) while the base model is {base_acc:.0%} "
                    f"accurate on them: its votes under Gaussian noise of σ={limits.sigma:g} are "
                    "split, as is typical of a model not trained with noise; train with Gaussian "
                    "noise augmentation at this σ (Cohen et al. 2019) or certify with a smaller "
                    "sigma",
                    {"abstention_rate": rate, "base_accuracy": base_acc, "sigma": limits.sigma},
                )
            )
        return out


def _accuracy_table(table: CertifiedAccuracy) -> Table:
    rows: list[list[Any]] = [
        [float(r), float(a), float(lo), float(hi), int(c), table.samples]
        for r, a, lo, hi, c in zip(
            table.radii, table.accuracy, table.ci_low, table.ci_high, table.certified
        )
    ]
    return Table(
        "certified_accuracy",
        "Certified accuracy vs L2 radius",
        ["radius", "certified_accuracy", "ci_low", "ci_high", "certified", "samples"],
        rows,
        description=f"Wilson {table.level:.0%} intervals; a sample counts at radius r when its "
        "certified class is right and its radius is >= r",
    )


def _certificates_table(run: CertificationRun, labels: np.ndarray, ids: list[str]) -> Table:
    correct = run.correct
    rows: list[list[Any]] = [
        [
            ids[i],
            int(labels[i]),
            int(run.predictions[i]),
            float(run.radii[i]),
            float(run.p_a_lower[i]),
            bool(correct[i]),
        ]
        for i in range(run.radii.size)
    ]
    return Table(
        "certificates",
        "Per-sample certificates",
        ["id", "label", "prediction", "radius", "p_a_lower", "correct"],
        rows,
        description="prediction -1 = abstained (the columns of core.py's certify logs)",
    )


def accuracy_figure(curve: StepCurve, table: CertifiedAccuracy, sigma: float) -> Figure:
    """The certified-accuracy step curve with the table's radii and their Wilson intervals."""

    def draw() -> str:
        from edgeproof.report.charts import Axis, Chart
        from edgeproof.report.charts.colors import BLUE

        chart = Chart(
            600,
            340,
            x=Axis("L2 radius (input units)", limits=(0.0, None)),
            y=Axis("certified accuracy", limits=(0.0, 1.0)),
        )
        chart.line(curve.x, curve.y, color=BLUE, width=1.6, label=f"σ = {sigma:g}")
        chart.errorbars(table.radii, table.ci_low, table.ci_high, color=BLUE, cap=3.0)
        chart.scatter(table.radii, table.accuracy, color=BLUE, size=3.0, opacity=1.0,
                      label=f"table radii, Wilson {table.level:.0%} CI")  # fmt: skip
        return chart.svg()

    return Figure(
        "certified_accuracy",
        "Certified accuracy vs L2 radius",
        draw,
        description=f"exact step curve over the certified radii; points: the table's radii with "
        f"Wilson {table.level:.0%} intervals",
    )

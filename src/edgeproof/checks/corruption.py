"""Corruption robustness: accuracy under natural corruptions at five severities.

Forward passes only (runs on ONNX models too). The corruptions and their severities are those of
:mod:`edgeproof.methods.corruptions`, chosen by the input kind: Gaussian noise, blur, brightness and
contrast for images; jitter, scaling, baseline wander and channel dropout for time series (channel
dropout answers the electrode-reduction question of wearable EEG: what does losing a fraction of the
channels cost); Gaussian noise for tabular data. Every accuracy carries a Wilson interval; the
per-corruption mean over severities carries a bootstrap interval over records. Seeded.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from edgeproof.checks.base import AuditContext, Check
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError
from edgeproof.methods.attacks.base import check_domain, check_logits
from edgeproof.methods.corruptions import (
    SEVERITIES,
    Corruption,
    CorruptionContext,
    corruptions_for,
    get_corruption,
    registered_corruptions,
)
from edgeproof.methods.stats import bootstrap_interval, wilson_interval
from edgeproof.results import CheckResult, Figure, Finding, Metric, Table

__all__ = ["CorruptionCheck"]


def _mean_of(values: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The bootstrap statistic "mean of ``values`` over each resample of record indices"."""

    def stat(idx: np.ndarray) -> np.ndarray:
        out: np.ndarray = values[idx].mean(axis=1)
        return out

    return stat


def _not_applicable(kind: str, shape: tuple[int, ...], skipped: list[str]) -> Finding:
    """The info finding naming the corruptions that do not fit the inputs."""
    return Finding(
        "info",
        f"not applicable to {kind} inputs of shape {list(shape)}: "
        f"{', '.join(skipped)}"
        + (" (channel dropout needs at least 2 channels)" if "channel_dropout" in skipped else ""),
        {"skipped": skipped},
    )


def _accuracy_table(rows: list[list[Any]]) -> Table:
    """The accuracy of every corruption at every severity run, with its Wilson interval."""
    return Table(
        "corruption_accuracy",
        "Accuracy vs corruption severity",
        ["corruption", "severity", "level", "parameter", "accuracy", "ci low", "ci high", "n"],
        rows,
    )


class CorruptionCheck(Check):
    """Accuracy vs severity for each corruption that fits the input kind.

    Settings:
        corruptions: names to run (default: every registered one for the input kind).
        severities: which of 1..5 (default all).
        max_drop: warn when severity 1 of a corruption costs more than this much accuracy
            (absolute, default 0.10).
        level: confidence level (default 0.95).
    """

    name = "corruption"
    title = "Corruption robustness"
    headline = ("mean_corruption_accuracy",)
    quick_settings: ClassVar[Mapping[str, Any]] = {"severities": (1, 3)}
    description = "Accuracy under noise, blur, brightness/contrast or sensor faults, by severity."
    needs_data = True

    def __init__(
        self,
        *,
        corruptions: Sequence[str] | None = None,
        severities: Sequence[int] = SEVERITIES,
        max_drop: float = 0.10,
        level: float = 0.95,
    ) -> None:
        super().__init__(
            corruptions=None if corruptions is None else list(corruptions),
            severities=list(severities),
            max_drop=max_drop,
            level=level,
        )
        self.names = None if corruptions is None else [get_corruption(c).name for c in corruptions]
        bad = [s for s in severities if s not in SEVERITIES]
        if bad or not severities:
            raise OptionError(
                "severities", f"{list(severities)} is not a subset of 1..5", "use e.g. 1,3,5"
            )
        self.severities = tuple(sorted(set(int(s) for s in severities)))
        self.max_drop = float(max_drop)
        self.level = float(level)

    def _chosen(self, kind: str, shape: tuple[int, ...]) -> tuple[list[Corruption], list[str]]:
        fits = {c.name: c for c in corruptions_for(kind, shape)}
        if self.names is None:
            skipped = [
                c.name for c in registered_corruptions() if kind in c.kinds and c.name not in fits
            ]
            return list(fits.values()), skipped
        chosen, skipped = [], []
        for n in self.names:
            if n in fits:
                chosen.append(fits[n])
            else:
                skipped.append(n)
        return chosen, skipped

    def run(self, ctx: AuditContext) -> CheckResult:
        data = ctx.require_data()
        spec = ctx.threat.input
        k = spec.num_classes if spec.num_classes is not None else data.num_classes
        clean_logits = ctx.clean_logits()
        check_logits(clean_logits, k, ctx.model.name)
        check_domain(data.x, spec, data.name)
        res = self.new_result()
        chosen, skipped = self._chosen(spec.kind, spec.shape)
        n = len(data)
        clean_ok = clean_logits.argmax(axis=1) == data.y
        clean = int(clean_ok.sum())
        res.metrics.append(
            Metric(
                "clean_accuracy",
                clean / n,
                unit="fraction",
                ci=wilson_interval(clean, n, self.level),
                higher_is_better=True,
            )
        )
        if skipped:
            res.findings.append(_not_applicable(spec.kind, spec.shape, skipped))
        if not chosen:
            res.summary = f"no corruption applies to {spec.kind} inputs"
            return res
        cctx = CorruptionContext(domain=spec.domain)
        rows: list[list[Any]] = []
        curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        all_correct: list[np.ndarray] = []
        ctx.progress.start(len(chosen) * len(self.severities), "corruptions")
        for c in chosen:
            correct = self._correct_under(ctx, data, c, cctx, rows)
            curves[c.name] = self._curve(correct)
            all_correct.append(correct)
            res.metrics.append(self._corruption_metric(c, correct, ctx.seed))
            finding = self._drop_finding(c, curves[c.name][0], clean / n)
            if finding is not None:
                res.findings.append(finding)
        stacked = np.concatenate(all_correct, axis=1).mean(axis=1)
        mean_ci = bootstrap_interval(
            _mean_of(stacked), n, level=self.level, seed=ctx.seed, resamples=500
        )
        mean_acc = float(stacked.mean())
        res.metrics.append(
            Metric(
                "mean_corruption_accuracy",
                mean_acc,
                unit="fraction",
                ci=mean_ci,
                description="accuracy averaged over every corruption and severity run",
                higher_is_better=True,
            )
        )
        res.tables.append(_accuracy_table(rows))
        res.figures.append(self._figure(curves, clean / n))
        worst = min(chosen, key=lambda c: float(curves[c.name][0].mean()))
        res.summary = (
            f"mean accuracy under corruption {mean_acc:.1%} (clean {clean / n:.1%}); "
            f"hardest: {worst.name} ({curves[worst.name][0].mean():.1%})"
        )
        return res

    def _correct_under(
        self,
        ctx: AuditContext,
        data: Dataset,
        c: Corruption,
        cctx: CorruptionContext,
        rows: list[list[Any]],
    ) -> np.ndarray:
        """Which records the model gets right under ``c`` at each severity ``(N, S)``; appends
        one table row per severity to ``rows``. Each severity's noise is seeded from the audit
        seed, the corruption's name and the severity."""
        n = len(data)
        correct = np.zeros((n, len(self.severities)), dtype=bool)
        for j, s in enumerate(self.severities):
            rng = np.random.default_rng([ctx.seed, zlib.crc32(c.name.encode()), s])
            xc = c.apply(data.x, s, rng, cctx)
            logits = ctx.model.predict_logits(xc, ctx.batch_size)
            correct[:, j] = logits.argmax(axis=1) == data.y
            kc = int(correct[:, j].sum())
            iv = wilson_interval(kc, n, self.level)
            rows.append(
                [
                    c.name,
                    s,
                    float(c.level(s)),
                    c.parameter,
                    round(kc / n, 6),
                    round(iv.low, 6),
                    round(iv.high, 6),
                    n,
                ]
            )
            ctx.progress.advance()
        return correct

    def _curve(self, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Accuracy per severity with its Wilson interval's lows and highs."""
        n = int(correct.shape[0])
        acc = correct.mean(axis=0)
        lows_highs = [
            wilson_interval(int(correct[:, j].sum()), n, self.level)
            for j in range(len(self.severities))
        ]
        return (
            acc,
            np.array([iv.low for iv in lows_highs]),
            np.array([iv.high for iv in lows_highs]),
        )

    def _corruption_metric(self, c: Corruption, correct: np.ndarray, seed: int) -> Metric:
        """Mean accuracy over the severities of ``c``, with a bootstrap interval over records."""
        n = int(correct.shape[0])
        acc = correct.mean(axis=0)
        ci = bootstrap_interval(
            _mean_of(correct.mean(axis=1)), n, level=self.level, seed=seed, resamples=500
        )
        return Metric(
            f"accuracy@{c.name}",
            float(acc.mean()),
            unit="fraction",
            ci=ci,
            description=f"mean accuracy over severities {list(self.severities)} of {c.name}",
            higher_is_better=True,
            settings={
                "severities": list(self.severities),
                "levels": [c.level(s) for s in self.severities],
                "parameter": c.parameter,
            },
        )

    def _drop_finding(self, c: Corruption, acc: np.ndarray, clean: float) -> Finding | None:
        """A warning when the mildest severity run already costs more than ``max_drop``."""
        first = float(acc[0])
        if not clean - first > self.max_drop:
            return None
        return Finding(
            "warning",
            f"{c.name} at severity {self.severities[0]} ({c.parameter} "
            f"{c.level(self.severities[0]):g}) already costs "
            f"{(clean - first):.1%} accuracy ({clean:.1%} → {first:.1%}); "
            "train with this corruption as augmentation or check the sensor pipeline",
            {"corruption": c.name, "clean": clean, "accuracy": acc.tolist()},
        )

    def _figure(
        self, curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], clean: float
    ) -> Figure:
        severities = tuple(self.severities)

        def draw() -> str:
            from edgeproof.report.charts import Axis, Chart
            from edgeproof.report.charts.colors import BLACK, series_color, series_dash

            sev = np.asarray(severities, dtype=float)
            chart = Chart(
                640,
                360,
                x=Axis("severity", integer=True, limits=(sev.min() - 0.4, sev.max() + 0.4)),
                y=Axis("accuracy", limits=(-0.02, 1.02)),
            )
            chart.hline(clean, color=BLACK, width=1.0, dash="dotted", label="clean")
            names = list(curves)
            # a small horizontal dodge keeps the intervals of different corruptions apart
            dodge = 0.05 if len(names) > 1 else 0.0
            for i, name in enumerate(names):
                acc, low, high = curves[name]
                x = sev + (i - (len(names) - 1) / 2) * dodge
                color = series_color(i)
                chart.errorbars(x, low, high, color=color, cap=2.5)
                chart.line(x, acc, color=color, dash=series_dash(i), marker="circle",
                           marker_size=2.8, label=name)  # fmt: skip
            hardest = sorted(names, key=lambda n: float(np.mean(curves[n][0])))
            chart.legend(order=(*hardest, "clean"))
            return chart.svg()

        return Figure(
            "corruption_accuracy",
            "Accuracy vs severity",
            draw,
            description=f"{round(self.level * 100)}% Wilson intervals as error bars (points "
            "shifted a little sideways so the intervals stay apart); legend: hardest first",
        )

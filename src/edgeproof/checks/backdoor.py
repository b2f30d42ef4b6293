"""The ``backdoor`` check: is there a backdoor in this classifier, and which class does it target?

A thin adapter over :func:`edgeproof.methods.backdoor.scan_model`. Always (data-free): the
final-layer indicators (weights only), head random probing and FreeEagle (with a runnable module);
with data: Neural Cleanse trigger inversion and STRIP, within the budget in the settings. Scores
are compared with thresholds calibrated on clean models (shipped ``thresholds.json``; the finding
says which architecture's threshold and at which false-positive rate). A model whose last layer is
not a classifier head is refused with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from edgeproof.checks.base import AuditContext, Check
from edgeproof.errors import param
from edgeproof.methods.backdoor import (
    DATA_FREE_DETECTORS,
    BackdoorScan,
    DetectorVerdict,
    FreeEagleConfig,
    NeuralCleanseConfig,
    ReversedTrigger,
    STRIPConfig,
    StripSummary,
    scan_model,
)
from edgeproof.results import CheckResult, Figure, Finding, Metric, Table

__all__ = ["BackdoorCheck"]

_METRIC = {
    "final-layer": "final_layer_score",
    "head-probe": "head_probe_score",
    "freeeagle": "freeeagle_score",
    "neural-cleanse": "neural_cleanse_anomaly_index",
}


class BackdoorCheck(Check):
    """Data-free backdoor triage, plus trigger inversion and STRIP when data is given."""

    name = "backdoor"
    title = "Backdoor scan"
    description = (
        "Final-layer indicators, head random probing and FreeEagle (data-free), Neural Cleanse "
        "and STRIP (with clean samples); thresholds calibrated on clean model populations."
    )
    needs_forward = False  # the final-layer indicators work on weights alone
    headline = ("flagged_detectors", "final_layer_score", "freeeagle_score")
    quick_settings: ClassVar[Mapping[str, Any]] = {"freeeagle_steps": 20, "nc_epochs": 2}

    def __init__(
        self,
        detectors: tuple[str, ...] = DATA_FREE_DETECTORS,
        freeeagle_steps: int = 1000,
        nc_epochs: int = 20,
        nc_max_seconds: float | None = 30.0,
        strip_samples: int = 20,
        strip_fpr: float = 0.01,
        max_clean_samples: int = 128,
        trigger_inversion: bool = False,
        **settings: Any,
    ) -> None:
        super().__init__(
            trigger_inversion=trigger_inversion,
            detectors=list(detectors),
            freeeagle_steps=freeeagle_steps,
            nc_epochs=nc_epochs,
            nc_max_seconds=nc_max_seconds,
            strip_samples=strip_samples,
            strip_fpr=strip_fpr,
            max_clean_samples=max_clean_samples,
            **settings,
        )
        self.detectors = tuple(detectors)
        self.freeeagle = FreeEagleConfig(steps=freeeagle_steps)
        self.nc = NeuralCleanseConfig(epochs=nc_epochs, max_seconds=nc_max_seconds)
        self.strip = STRIPConfig(num_samples=strip_samples, fpr=strip_fpr)
        self.max_clean_samples = max_clean_samples
        self.trigger_inversion = bool(trigger_inversion)

    def skip_reason(self, ctx: AuditContext) -> str | None:
        """Also skipped for a model of fewer than 3 classes (a binary detector): the detectors
        compare the classes of a classifier head with one another."""
        reason = super().skip_reason(ctx)
        if reason is not None:
            return reason
        k = ctx.threat.input.num_classes
        if k is None and ctx.data is not None:
            k = ctx.data.num_classes
        if k is not None and k < 3:
            return (
                f"needs a classifier of at least 3 classes (the detectors compare classes with "
                f"one another); this one has {k}"
            )
        return None

    def run(self, ctx: AuditContext) -> CheckResult:
        clean_x = None
        if self.trigger_inversion and ctx.data is not None and ctx.model.module is not None:
            clean_x = ctx.data.x
        scan = scan_model(
            ctx.model,
            detectors=self.detectors,
            clean_x=clean_x,
            freeeagle_config=self.freeeagle,
            neural_cleanse_config=self.nc,
            strip=self.strip,
            max_clean_samples=self.max_clean_samples,
            seed=ctx.seed,
        )
        return self.to_result(scan, _class_names(ctx, scan.num_classes))

    def to_result(self, scan: BackdoorScan, classes: list[str]) -> CheckResult:
        res = self.new_result()
        flagged = scan.flagged_by
        res.metrics.append(
            Metric(
                "flagged_detectors",
                float(len(flagged)),
                "detectors",
                description="detectors whose model score is above their calibrated threshold",
                higher_is_better=False,
            )
        )
        for v in scan.verdicts:
            res.metrics.append(_detector_metric(v))
            if v.flagged:
                res.findings.append(_detector_finding(v, classes))
        if scan.strip is not None:
            res.metrics.append(_strip_metric(scan.strip))
            if scan.strip.flagged_fraction > max(3 * scan.strip.threshold.fpr, 0.05):
                res.findings.append(_strip_finding(scan.strip))
        if not flagged:
            res.findings.append(
                Finding(
                    "info",
                    "No detector flags a backdoor at its calibrated threshold. The detectors "
                    "miss some backdoors (see docs/benchmarks/backdoor.md for their measured "
                    "true-positive rates); this is triage, not proof.",
                    {"detectors": [v.result.detector for v in scan.verdicts]},
                )
            )
        for det, why in scan.skipped.items():
            res.findings.append(Finding("info", f"{det} did not run: {why}", {"detector": det}))
        res.tables.append(_per_class_table(scan, classes))
        res.figures.append(_anomaly_figure(scan, classes))
        if scan.triggers:
            nc = scan.verdict("neural-cleanse").result
            best = min(scan.triggers, key=lambda t: t.l1)
            res.figures.append(_trigger_figure(best, classes, nc.score))
        res.summary = (
            f"flagged by {', '.join(flagged)} (suspected target {classes[scan.suspected_target]!r})"
            if flagged and scan.suspected_target is not None
            else f"no detector flagged ({len(scan.verdicts)} ran)"
        )
        return res


def _detector_metric(v: DetectorVerdict) -> Metric:
    """One detector's model score, with the source of its threshold."""
    det = v.result.detector
    return Metric(
        _METRIC[det],
        float(v.result.score),
        "",
        description=f"{det} model score; threshold {v.threshold_source}",
        higher_is_better=False,
        settings=dict(v.result.settings),
    )


def _detector_finding(v: DetectorVerdict, classes: list[str]) -> Finding:
    """A flagging detector's suspicion, naming the suspected target class (critical for the
    detectors with the best measured precision)."""
    det = v.result.detector
    t = v.result.suspected_target
    return Finding(
        "critical" if det in ("freeeagle", "neural-cleanse") else "warning",
        f"{det} suspects a backdoor targeting class {classes[t]!r} (score "
        f"{v.result.score:.3g} > threshold {v.threshold_source}). Do not deploy "
        "before checking where this model came from; with clean data, run Neural "
        f"Cleanse ({param('backdoor.trigger_inversion')}=true) and inspect the "
        "reconstructed trigger.",
        {
            "detector": det,
            "suspected_target": t,
            "suspected_target_name": classes[t],
            "score": v.result.score,
            "threshold": v.threshold,
            "per_class": v.result.per_class,
        },
    )


def _strip_metric(s: StripSummary) -> Metric:
    """The fraction of the given inputs STRIP flags as trojaned."""
    return Metric(
        "strip_flagged_fraction",
        s.flagged_fraction,
        "",
        description=(
            f"fraction of {s.n_tested} given inputs STRIP flags as trojaned at a "
            f"threshold set for FPR {s.threshold.fpr:g} on the other half"
        ),
        higher_is_better=False,
    )


def _strip_finding(s: StripSummary) -> Finding:
    """STRIP flags far more of the given inputs than its false-positive rate explains."""
    return Finding(
        "warning",
        f"STRIP flags {s.flagged_fraction:.0%} of the given inputs as trojaned "
        f"(expected about {s.threshold.fpr:.0%} on clean data): the data may "
        "contain triggered inputs, or the model is unusually confident under "
        "superimposition",
        {"flagged_fraction": s.flagged_fraction, "threshold": s.threshold.value},
    )


def _class_names(ctx: AuditContext, k: int) -> list[str]:
    names = None
    if ctx.model.spec is not None and ctx.model.spec.class_names:
        names = list(ctx.model.spec.class_names)
    if names is None and ctx.data is not None:
        names = list(ctx.data.classes)
    if names is None or len(names) != k:
        names = [str(i) for i in range(k)]
    return names


def _per_class_table(scan: BackdoorScan, classes: list[str]) -> Table:
    dets = [v.result.detector for v in scan.verdicts]
    rows: list[list[str | float]] = []
    for c in range(scan.num_classes):
        rows.append([classes[c], *[float(v.result.per_class[c]) for v in scan.verdicts]])
    return Table(
        "per_class_anomaly",
        "Per-class anomaly (higher = more suspicious)",
        ["class", *dets],
        rows,
        description="final-layer / head-probe: robust z; freeeagle: (tendency − Q3)/IQR; "
        "neural-cleanse: (median − mask L1)/(1.4826·MAD).",
    )


def _anomaly_figure(scan: BackdoorScan, classes: list[str]) -> Figure:
    def draw() -> str:
        from edgeproof.report.charts import Axis, Chart
        from edgeproof.report.charts.colors import GREY

        k = scan.num_classes
        n = max(len(scan.verdicts), 1)
        width = 0.8 / n
        chart = Chart(
            min(1000.0, max(560.0, 140 + 14 * n * k)),
            320,
            x=Axis("class", scale="category", categories=tuple(classes[:k])),
            y=Axis("per-class anomaly"),
        )
        chart.hline(0.0, color=GREY, width=1.0, dash=None)
        xs = np.arange(k, dtype=float)
        for i, v in enumerate(scan.verdicts):
            det = v.result.detector
            per = np.asarray(v.result.per_class, dtype=float)
            chart.bars(
                xs - 0.4 + (i + 0.5) * width,
                per,
                width=width,
                label=det,
                tooltips=[f"{det}, class {classes[c]}: {per[c]:.3g}" for c in range(k)],
            )
        return chart.svg()

    return Figure(
        "per_class_anomaly",
        "Per-class anomaly by detector",
        draw,
        description="each detector's per-class anomaly (higher = more suspicious; the scales "
        "differ by detector, see the table)",
    )


def _cell(h: int, w: int, target: float) -> float:
    """A cell of about ``target`` px holding whole screen pixels per image pixel (≤ 128 px)."""
    m = max(h, w)
    return float(min(128, m * max(1, math.ceil(target / m))))


def _trigger_figure(trig: ReversedTrigger, classes: list[str], index: float) -> Figure:
    title = (
        f"Neural Cleanse: smallest trigger, class {classes[trig.target]!r} "
        f"(mask L1 {trig.l1:.2f}, anomaly index {index:.2f})"
    )
    stamp = trig.mask * trig.pattern
    if trig.mask.ndim == 3:
        description = (
            "the reconstructed trigger: the mask (where it is stamped, 0–1), the pattern (what "
            "is stamped; colour images as RGB clipped to 0–1, else channels averaged) and their "
            "product, the stamp the model reacts to"
        )
    else:
        description = (
            "the reconstructed trigger over time: the stamp mask·pattern per channel (input "
            "units) above the mask (0–1) that places it"
        )

    def images() -> str:
        from edgeproof.report.charts import ImageGrid

        h, w = trig.mask.shape[-2:]
        grid = ImageGrid(cols=3, cell=_cell(h, w, 96.0))
        grid.scale("mask", color_ramp="gray", vmin=0.0, vmax=1.0, colorbar="mask")
        grid.add(trig.mask[0], scale="mask", caption="mask")
        if trig.pattern.shape[0] == 3:
            for img, name in ((trig.pattern, "pattern"), (stamp, "mask·pattern")):
                grid.add(np.transpose(np.clip(img, 0.0, 1.0), (1, 2, 0)), caption=name)
        else:
            pat, st = trig.pattern.mean(axis=0), stamp.mean(axis=0)
            both = np.concatenate([pat.ravel(), st.ravel()])
            both = both[np.isfinite(both)]
            lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
            hi = hi if hi > lo else lo + 1.0
            grid.scale("value", color_ramp="gray", vmin=lo, vmax=hi, colorbar="input value")
            grid.add(pat, scale="value", caption="pattern")
            grid.add(st, scale="value", caption="mask·pattern")
        return grid.svg()

    def series() -> str:
        from edgeproof.report.charts import Axis, Chart, Panels
        from edgeproof.report.charts.colors import GREY

        t = np.arange(stamp.shape[-1], dtype=float)
        top = Chart(640, 240, x=Axis(), y=Axis("mask·pattern"))
        many = stamp.shape[0] > 1
        for c in range(stamp.shape[0]):
            top.line(t, stamp[c], width=1.0, label=f"channel {c}" if many else None)
        bottom = Chart(640, 150, x=Axis("time step"), y=Axis("mask", limits=(0.0, 1.0)))
        bottom.line(t, trig.mask[0], color=GREY, width=1.0)
        return Panels([top, bottom]).svg()

    return Figure("reversed_trigger", title, images if trig.mask.ndim == 3 else series, description)

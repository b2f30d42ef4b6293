"""The attribution check's metrics, findings, tables and summary, from each method's outcome
(:class:`MethodRun`): completeness gaps (δ), Integrated Gradients' convergence, the sanity
verdicts and their rank correlations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeproof.methods.attribution import Attribution, IntegratedGradients
from edgeproof.methods.attribution.sanity import SanityVerdict
from edgeproof.methods.stats import bootstrap_interval, wilson_interval
from edgeproof.results import Finding, Metric, Table

__all__ = [
    "MethodRun",
    "delta_metrics",
    "flagged_metric",
    "methods_table",
    "rank_correlation_metrics",
    "sanity_findings",
    "sanity_table",
    "skipped_findings",
    "summary",
]

_TITLES = {
    "integrated_gradients": "Integrated Gradients",
    "smoothgrad": "SmoothGrad",
    "gradient_shap": "GradientSHAP",
    "occlusion": "Occlusion",
    "feature_ablation": "Feature ablation",
    "kernel_shap": "KernelSHAP",
    "frequency_occlusion": "Frequency-band occlusion",
}


@dataclass
class MethodRun:
    """One method's outcome in the attribution check."""

    name: str
    attribution: Attribution | None = None
    skipped: str | None = None
    seconds: float = 0.0
    verdict: SanityVerdict | None = None


def flagged_metric(
    tested: Sequence[MethodRun], flagged: Sequence[MethodRun], threshold: float
) -> Metric:
    """``methods_flagged``: how many tested methods failed the sanity tests (NaN: none tested)."""
    return Metric(
        "methods_flagged",
        float(len(flagged)) if tested else float("nan"),  # not tested: unknown, not 0
        unit="methods",
        higher_is_better=False,
        description="attribution methods whose maps barely change when the weights are "
        "destroyed (Adebayo et al. 2018); their maps are not shown",
        settings={"tested": [r.name for r in tested], "threshold": threshold},
    )


def skipped_findings(runs: Sequence[MethodRun]) -> list[Finding]:
    """An info per method that did not run, with the reason."""
    return [
        Finding("info", f"{_TITLES[r.name]} skipped: {r.skipped}")
        for r in runs
        if r.skipped is not None
    ]


def delta_metrics(
    ran: Sequence[MethodRun], *, level: float, seed: int, ig: IntegratedGradients
) -> tuple[list[Metric], list[Finding]]:
    """The completeness gaps of every method with a δ, and adaptive IG's convergence."""
    metrics: list[Metric] = []
    findings: list[Finding] = []
    for r in ran:
        a = r.attribution
        assert a is not None
        rel = a.relative_delta
        if a.delta is None or rel is None:
            continue
        short = {"integrated_gradients": "ig", "gradient_shap": "gradient_shap"}.get(r.name, r.name)
        median = _relative_delta_metric(r.name, short, rel.numpy(), level, seed)
        if median is not None:
            metrics.append(median)
        metrics.append(
            Metric(
                f"{short}_abs_delta_max",
                float(a.delta.abs().max()),
                unit=a.output,
                higher_is_better=False,
                description=f"largest {_TITLES[r.name]} completeness gap |δ| over samples",
            )
        )
        if a.converged is not None and r.name == "integrated_gradients":
            m, f = _ig_convergence(a, level, ig)
            metrics += m
            findings += f
    return metrics, findings


def _relative_delta_metric(
    name: str, short: str, relv: np.ndarray, level: float, seed: int
) -> Metric | None:
    """The median relative completeness gap with its bootstrap interval (``None`` when no
    sample has a defined one)."""
    finite = relv[np.isfinite(relv)]
    if not finite.size:
        return None

    def median(idx: np.ndarray, f: np.ndarray = finite) -> np.ndarray:
        out: np.ndarray = np.median(f[idx], axis=1)
        return out

    ci = bootstrap_interval(median, finite.size, level=level, seed=seed, resamples=500)
    return Metric(
        f"{short}_relative_delta_median",
        float(np.median(finite)),
        unit="fraction of |f(x) − f(ref)|",
        ci=ci,
        higher_is_better=False,
        description=f"median over samples of the {_TITLES[name]} "
        "completeness gap |Σ attr − (f(x) − f(ref))| relative to the score change",
        settings={"undefined": int(relv.size - finite.size)},
    )


def _ig_convergence(
    a: Attribution, level: float, ig: IntegratedGradients
) -> tuple[list[Metric], list[Finding]]:
    """Adaptive IG: the share of samples that met the tolerance, the mean steps, and a warning
    for those that did not."""
    assert a.converged is not None and a.n_steps is not None
    k = int(a.converged.sum())
    metrics = [
        Metric(
            "ig_converged_fraction",
            k / a.num_samples,
            unit="fraction",
            ci=wilson_interval(k, a.num_samples, level),
            higher_is_better=True,
            description="samples whose IG |δ| met the tolerance within the step cap",
            settings={"tolerance": ig.tolerance, "max_steps": ig.max_steps},
        ),
        Metric(
            "ig_mean_steps",
            float(a.n_steps.double().mean()),
            unit="steps",
            higher_is_better=False,
            description="mean integration steps per sample in adaptive IG",
        ),
    ]
    if k == a.num_samples:
        return metrics, []
    return metrics, [
        Finding(
            "warning",
            f"Integrated Gradients missed the completeness tolerance "
            f"{ig.tolerance:g} on {a.num_samples - k} of {a.num_samples} "
            f"samples at {ig.max_steps} steps; their maps are approximate "
            "(raise ig_max_steps, or try another ig_rule)",
            {"unconverged": a.num_samples - k},
        )
    ]


def rank_correlation_metrics(tested: Sequence[MethodRun]) -> list[Metric]:
    """Per tested method, the rank correlations with the fully re-initialised model's maps."""
    out: list[Metric] = []
    for r in tested:
        assert r.verdict is not None
        final = r.verdict.cascade[-1]
        for form, corr in (("abs", final.abs_corr), ("signed", final.signed_corr)):
            out.append(
                Metric(
                    f"rank_correlation_{form}@{r.name}",
                    corr.mean,
                    unit="Spearman ρ",
                    ci=corr.ci,
                    higher_is_better=False,
                    description=f"mean over samples of Spearman's ρ between the {form} "
                    f"{_TITLES[r.name]} maps of the trained model and of the model with "
                    "every layer re-initialised",
                    settings={"n": corr.n, "undefined": corr.undefined},
                )
            )
    return out


def sanity_findings(tested: Sequence[MethodRun]) -> list[Finding]:
    """Per tested method, an info that it passes or a warning that its maps are not shown."""
    out: list[Finding] = []
    for r in tested:
        v = r.verdict
        assert v is not None
        if v.depends_on_weights:
            out.append(Finding("info", f"{_TITLES[r.name]} passes the sanity tests: {v.reason}"))
            continue
        final = v.cascade[-1]
        out.append(
            Finding(
                "warning",
                f"{_TITLES[r.name]} is not shown as an explanation: {v.reason}",
                {
                    "method": r.name,
                    "rho_abs": final.abs_corr.mean,
                    "rho_signed": final.signed_corr.mean,
                    "threshold": v.threshold,
                },
            )
        )
    return out


def methods_table(runs: Sequence[MethodRun]) -> Table:
    """Every method: ran or skipped (why), its model rows, seconds, verdict and settings."""
    rows: list[list[Any]] = []
    for r in runs:
        a = r.attribution
        v = r.verdict
        rows.append(
            [
                r.name,
                "skipped" if a is None else "ran",
                r.skipped or "",
                None if a is None else a.evaluations,
                round(r.seconds, 3),
                None if v is None else ("passes" if v.depends_on_weights else "flagged"),
                None if a is None else repr(dict(a.settings)),
            ]
        )
    return Table(
        "methods",
        "Attribution methods",
        ["method", "status", "reason", "model rows", "seconds", "sanity", "settings"],
        rows,
        description="model rows and seconds: the attribution itself (the sanity tests' "
        "re-explanations excluded; their total time is in the settings as sanity_seconds)",
    )


def sanity_table(tested: Sequence[MethodRun]) -> Table:
    """Every tested method × degraded model: the rank correlations with their intervals."""
    rows: list[list[Any]] = []
    for r in tested:
        v = r.verdict
        assert v is not None
        steps = list(v.cascade) + ([v.label] if v.label is not None else [])
        for st in steps:
            rows.append(
                [
                    r.name,
                    st.label,
                    st.abs_corr.mean,
                    st.abs_corr.ci.low,
                    st.abs_corr.ci.high,
                    st.signed_corr.mean,
                    st.signed_corr.ci.low,
                    st.signed_corr.ci.high,
                    st.abs_corr.n,
                ]
            )
    return Table(
        "sanity",
        "Sanity tests: rank correlation with the trained model's maps",
        [
            "method",
            "degraded model",
            "rho_abs",
            "rho_abs_low",
            "rho_abs_high",
            "rho_signed",
            "rho_signed_low",
            "rho_signed_high",
            "samples",
        ],
        rows,
        description="mean over samples of Spearman's ρ per sample, percentile-bootstrap "
        "interval; cascade stages re-initialise the layers from the top down, cumulatively",
    )


def summary(
    ran: Sequence[MethodRun],
    tested: Sequence[MethodRun],
    flagged: Sequence[MethodRun],
    samples: int,
) -> str:
    """One line: the methods run, how many the sanity tests flagged, and those shown."""
    if not ran:
        return "no attribution method could run on this model"
    passing = [r for r in tested if r not in flagged]
    return (
        f"{len(ran)} method(s) on {samples} samples; "
        + (
            f"{len(flagged)} of {len(tested)} flagged by the sanity tests"
            + (f" ({', '.join(_TITLES[r.name] for r in flagged)})" if flagged else "")
            if tested
            else "sanity tests not run"
        )
        + (f"; shown: {', '.join(_TITLES[r.name] for r in passing)}" if passing else "")
    )

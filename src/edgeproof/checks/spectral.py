"""The ``spectral`` check: heavy-tailed spectral diagnostics of every weight matrix, data-free.

Works on any model form: a PyTorch module (layers by module type), or bare named tensors
(weights-only ``.safetensors``, ONNX initializers: layer kinds inferred from names and shapes,
no code executed). The math and its sources are in :mod:`edgeproof.methods.spectral`; every
normalisation in force is written into the result's settings and description.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from edgeproof.checks.base import AuditContext, Check
from edgeproof.errors import ModelFileError, OptionError
from edgeproof.methods.layers import LayerInventory, layers_from_module, layers_from_tensors
from edgeproof.methods.spectral import (
    LayerSpectrum,
    SpectralAnalysis,
    SpectralConfig,
    SpectralMode,
    analyze_inventory,
    most_extreme,
)
from edgeproof.results import CheckResult, Figure, Finding, Metric, Table

__all__ = ["SpectralCheck", "inventory_of"]


def inventory_of(ctx: AuditContext) -> LayerInventory:
    """Layers of the audited model: from its module if there is one, else from its tensors."""
    model = ctx.model
    source = str(model.path) if model.path is not None else model.name
    if model.network is not None:
        inv = layers_from_module(model.network, source=source)
    else:
        inv = layers_from_tensors(model.weights, source=source)
    if not inv.layers:
        raise ModelFileError(
            source,
            "no 2-D or larger weight tensor found (only biases, normalisation or non-float "
            f"tensors: {', '.join(s.name for s in inv.skipped[:5]) or 'none'})",
            "spectral and bit-flip diagnostics need weight matrices; pass the full checkpoint",
        )
    return inv


def _settings_of(cfg: SpectralConfig) -> dict[str, Any]:
    """The analysis settings written into the result (every normalisation in force)."""
    return {
        "mode": cfg.mode,
        "min_evals": cfg.min_evals,
        "max_evals": cfg.max_evals,
        "max_n": cfg.max_n,
        "eigenvalue_threshold": 1e-5,
        "conv2d_eigenvalue_scale": cfg.conv2d_scale,
        "over_trained_alpha": cfg.over_trained_alpha,
        "under_trained_alpha": cfg.under_trained_alpha,
        "poor_fit_rule": f"D > {cfg.poor_fit_ks} / sqrt(n_tail)",
        "mp_spike_rule": f"λ/N > λ+ + {cfg.spike_tw_sigmas}·s_TW",
        "normalisations": cfg.normalisations(),
    }


def _spectral_metrics(
    analysis: SpectralAnalysis, alphas: np.ndarray, count: dict[str, int]
) -> list[Metric]:
    """Layer counts, mean α (plain and weighted), mean log-norm and the flag counts."""
    cfg = analysis.config
    fitted = analysis.fitted()
    norm_text = "; ".join(cfg.normalisations())
    return [
        Metric("layers_analysed", float(len(analysis.layers)), "layers"),
        Metric("layers_fitted", float(len(fitted)), "layers"),
        Metric(
            "mean_alpha",
            float(alphas.mean()) if alphas.size else math.nan,
            "",
            description="mean power-law exponent α over fitted layers (2–6: well trained). "
            + norm_text,
            settings={"mode": cfg.mode},
        ),
        Metric(
            "mean_alpha_weighted",
            float(np.mean([s.alpha_weighted for s in fitted])) if fitted else math.nan,
            description="mean α·log10 λmax (lower is better within an architecture)",
            higher_is_better=False,
        ),
        Metric(
            "mean_log_norm",
            float(np.mean([s.log_norm for s in analysis.layers])) if analysis.layers else math.nan,
            description="mean log10 Σλ (Frobenius norm squared)",
        ),
        Metric(
            "over_trained_layers",
            float(count["over-trained"]),
            "layers",
            description=f"layers with α < {cfg.over_trained_alpha}",
            higher_is_better=False,
        ),
        Metric(
            "under_trained_layers",
            float(count["under-trained"]),
            "layers",
            description=f"layers with α > {cfg.under_trained_alpha}",
            higher_is_better=False,
        ),
        Metric("poor_fit_layers", float(count["poor fit"]), "layers", higher_is_better=False),
        Metric("too_few_eigenvalue_layers", float(count["too few eigenvalues"]), "layers"),
        Metric("skipped_tensors", float(len(analysis.skipped)), "tensors"),
    ]


def _flag_findings(analysis: SpectralAnalysis) -> list[Finding]:
    """One finding per flag raised on some layer, naming (up to eight of) them."""
    cfg = analysis.config
    out: list[Finding] = []
    for flag, sev, text in (
        ("over-trained", "warning", "α < {t}: over-trained / over-fit (heavy tail)"),
        ("under-trained", "info", "α > {t}: under-trained (close to random)"),
        ("poor fit", "info", "power-law fit is poor (KS test)"),
        ("too few eigenvalues", "info", "too few eigenvalues to fit (< min_evals)"),
    ):
        names = [s.name for s in analysis.layers if flag in s.flags]
        if names:
            t = cfg.over_trained_alpha if flag == "over-trained" else cfg.under_trained_alpha
            labels = [_layer_label(s) for s in analysis.layers if flag in s.flags]
            out.append(
                Finding(
                    sev,  # type: ignore[arg-type]
                    f"{len(names)} layer(s) {text.format(t=t)}: {', '.join(labels[:8])}"
                    + (" …" if len(names) > 8 else ""),
                    {"layers": names},
                )
            )
    return out


class SpectralCheck(Check):
    """Per-layer ESD power-law α, norms, MP bulk fit and flags (WeightWatcher method)."""

    name = "spectral"
    title = "Weight spectra (heavy-tailed self-regularisation)"
    headline = ("mean_alpha", "over_trained_layers", "under_trained_layers")
    quick_settings: ClassVar[Mapping[str, Any]] = {}
    description = (
        "Power-law fit of each weight matrix's eigenvalue spectrum (Martin & Mahoney; "
        "WeightWatcher 0.7.7 method), Marchenko–Pastur bulk, over/under-training flags."
    )
    needs_forward = False
    parallel = True  # the eigen-solves run on a thread pool (docs/benchmarks/spectral.md)

    def __init__(
        self, mode: SpectralMode = "default", esd_layer: str | None = None, **settings: Any
    ) -> None:
        super().__init__(mode=mode, esd_layer=esd_layer, **settings)
        self.config = SpectralConfig(mode=mode, **settings)
        self.esd_layer = esd_layer

    def run(self, ctx: AuditContext) -> CheckResult:
        analysis = analyze_inventory(inventory_of(ctx), self.config)
        return self.to_result(analysis)

    def to_result(self, analysis: SpectralAnalysis) -> CheckResult:
        cfg = analysis.config
        res = self.new_result()
        res.settings.update(_settings_of(cfg))
        fitted = analysis.fitted()
        alphas = np.array([s.alpha for s in fitted])
        count = {
            f: sum(f in s.flags for s in analysis.layers)
            for f in (
                "over-trained",
                "under-trained",
                "poor fit",
                "too few eigenvalues",
                "fit failed",
            )
        }
        res.metrics += _spectral_metrics(analysis, alphas, count)
        res.findings += _flag_findings(analysis)
        res.tables.append(_layer_table(analysis.layers))
        if analysis.skipped:
            res.tables.append(
                Table(
                    "skipped",
                    "Tensors not analysed",
                    ["tensor", "shape", "reason"],
                    [
                        [s.name, "×".join(map(str, s.shape)) or "scalar", s.reason]
                        for s in analysis.skipped
                    ],
                )
            )
        if fitted:
            res.figures.append(_alpha_figure(analysis))
            chosen = self._esd_choice(analysis)
            if chosen is not None:
                res.figures.append(esd_figure(chosen))
        res.summary = (
            f"{len(fitted)}/{len(analysis.layers)} layers fitted ({cfg.mode} mode); "
            + (f"mean α {alphas.mean():.2f}; " if alphas.size else "")
            + f"{count['over-trained']} over-trained, {count['under-trained']} under-trained, "
            f"{len(analysis.skipped)} tensors skipped"
        )
        return res

    def _esd_choice(self, analysis: SpectralAnalysis) -> LayerSpectrum | None:
        if self.esd_layer is None:
            return most_extreme(analysis.fitted())
        for s in analysis.layers:
            if s.name == self.esd_layer or s.tensor == self.esd_layer:
                return s
        raise OptionError(
            "spectral.esd_layer",
            f"no analysed layer named {self.esd_layer!r}",
            f"choose one of {', '.join(s.name for s in analysis.layers[:10])}",
        )


def _f(v: float, nd: int = 4) -> float | None:
    return round(float(v), nd) if v is not None and math.isfinite(v) else None


def _layer_table(layers: list[LayerSpectrum]) -> Table:
    cols = [
        "layer",
        "flags",
        "alpha",
        "kind",
        "N",
        "M",
        "rf",
        "evals",
        "sigma_alpha",
        "D",
        "xmin",
        "log_norm",
        "log_spectral_norm",
        "alpha_weighted",
        "stable_rank",
        "entropy",
        "mp_sigma2",
        "mp_lambda_plus",
        "mp_spikes",
        "mp_softrank",
    ]
    rows: list[list[Any]] = []
    for s in layers:
        fit, mp = s.fit, s.mp
        rows.append(
            [
                _layer_name(s),
                ", ".join(s.flags),
                _f(fit.alpha) if fit else None,
                s.kind,
                s.n,
                s.m,
                s.rf,
                s.num_evals,
                _f(fit.sigma) if fit else None,
                _f(fit.D) if fit else None,
                _f(fit.xmin, 6) if fit else None,
                _f(s.log_norm),
                _f(s.log_spectral_norm),
                _f(s.alpha_weighted),
                _f(s.stable_rank),
                _f(s.entropy),
                _f(mp.sigma2, 6) if mp else None,
                _f(mp.lambda_plus, 6) if mp else None,
                mp.num_spikes if mp else None,
                _f(mp.mp_softrank) if mp else None,
            ]
        )
    return Table(
        "layers",
        "Per-layer spectral metrics",
        cols,
        rows,
        "flags: over-trained (α below the check's over_trained_alpha, default 2), "
        "under-trained (α above under_trained_alpha, default 6), poor fit, too few eigenvalues "
        "or fit failed; N × M: each slice of the weight matrix (N ≥ M), rf: the number of "
        "slices (a convolution's kernel positions), evals: eigenvalues of the ESD; alpha ± "
        "sigma_alpha, D (Kolmogorov–Smirnov distance) and xmin: the power-law fit of the ESD "
        "tail by Clauset–Shalizi–Newman with WeightWatcher's xmin search; mp_*: the "
        "Marchenko–Pastur fit, in units of λ/N",
    )


def _layer_label(s: LayerSpectrum) -> str:
    """A layer's name for people: its module path (the parameter's name when the path is a bare
    index of a ``Sequential``, ``1`` → ``1.weight``) and its kind, ``features.0 (conv2d)``."""
    return f"{_layer_name(s)} ({s.kind})"


def _layer_name(s: LayerSpectrum) -> str:
    """The module path, or the parameter's name when the path is a bare ``Sequential`` index."""
    bare = all(part.isdigit() for part in s.name.split("."))
    return s.tensor if bare and s.tensor else s.name


def _alpha_figure(analysis: SpectralAnalysis) -> Figure:
    cfg = analysis.config

    def draw() -> str:
        from edgeproof.report.charts import Axis, Chart
        from edgeproof.report.charts.colors import BLUE, GREY, VERMILLION

        layers = analysis.fitted()
        names = [_layer_label(s) for s in layers]
        # two layers with one label (a gate split shares its tensor) stay apart
        names = [n if names.count(n) == 1 else f"{n} #{i}" for i, n in enumerate(names)]
        a = np.array([s.alpha for s in layers])
        over, under = cfg.over_trained_alpha, cfg.under_trained_alpha
        colors = [VERMILLION if v < over else GREY if v > under else BLUE for v in a]
        row = 22.0 if len(layers) <= 40 else 15.0
        chart = Chart(
            680,
            max(180.0, 96 + row * len(layers)),
            x=Axis("power-law α", limits=(0.0, max(float(a.max()) * 1.12, under * 1.08))),
            y=Axis(scale="category", categories=tuple(names)),
        )
        chart.vline(over, color=VERMILLION, width=1.0, dash="dashed")
        chart.vline(under, color=GREY, width=1.0, dash="dashed")
        chart.barh(
            names,
            a,
            thickness=0.66,
            color=colors,
            tooltips=[
                f"{s.name} ({s.kind}, tensor {s.tensor}): α {s.alpha:.3f}"
                + (f"; {', '.join(s.flags)}" if s.flags else "")
                for s in layers
            ],
        )
        if len(layers) <= 40:
            for n, v in zip(names, a):
                chart.text(float(v), n, f"{v:.2f}", dx=4)
        chart.key(f"α < {over:g}: over-trained", VERMILLION)
        chart.key(f"{over:g} ≤ α ≤ {under:g}", BLUE)
        chart.key(f"α > {under:g}: under-trained", GREY)
        return chart.svg()

    return Figure(
        "alpha",
        "Power-law α per layer",
        draw,
        f"layers in definition order; vermillion: α < {cfg.over_trained_alpha} (over-trained); "
        f"grey: α > {cfg.under_trained_alpha} (under-trained); dashed lines at the thresholds",
    )


def esd_figure(s: LayerSpectrum) -> Figure:
    """Log–log ESD of one layer with the fitted power-law tail and the MP bulk density.

    The histogram has ``clip(⌈2√n⌉, 10, 60)`` log-spaced bins over the n eigenvalues above 1e-5
    (density per unit λ, as ``numpy.histogram(density=True)``); the y axis spans the non-empty
    bins (curves outside are clipped).
    """

    def draw() -> str:
        from edgeproof.report.charts import Axis, Chart
        from edgeproof.report.charts.colors import GREEN, SKY, VERMILLION

        ev = s.evals[s.evals > 1e-5]
        xlim: tuple[float | None, float | None] | None = None
        ylim: tuple[float | None, float | None] | None = None
        hist: tuple[np.ndarray, np.ndarray] | None = None
        if ev.size >= 2:
            nbins = int(np.clip(math.ceil(2 * math.sqrt(ev.size)), 10, 60))
            bins = np.logspace(np.log10(ev.min()), np.log10(ev.max()), nbins + 1)
            dens, _ = np.histogram(ev, bins=bins, density=True)
            hist = (bins, dens)
            pos = dens[dens > 0]
            xlim = (float(bins[0]) / 1.15, float(bins[-1]) * 1.15)
            ylim = (float(pos.min()) / 3, float(pos.max()) * 2.5)
        chart = Chart(
            600,
            340,
            x=Axis("eigenvalue λ", scale="log", limits=xlim),
            y=Axis("density", scale="log", limits=ylim),
        )
        if hist is not None:
            chart.histogram(hist[0], hist[1], bottom=None, color=SKY, label="ESD")
            if s.fit is not None and s.fit.status == "ok":
                a, xmin, frac = s.fit.alpha, s.fit.xmin, s.fit.n_tail / ev.size
                xs = np.logspace(np.log10(xmin), np.log10(ev.max()), 100)
                chart.line(
                    xs,
                    frac * (a - 1) / xmin * (xs / xmin) ** (-a),
                    color=VERMILLION,
                    width=1.8,
                    dash="dashed",
                    label=f"power law α = {a:.2f}",
                )
                chart.vline(xmin, color=VERMILLION, width=1.0, dash=None,
                            label=f"tail start xmin = {xmin:.3g}")  # fmt: skip
            if s.mp is not None and s.mp.sigma2 > 0:
                big, small = max(s.n, s.m), min(s.n, s.m)
                q = small / big
                lo = s.mp.sigma2 * (1 - math.sqrt(q)) ** 2
                hi = s.mp.lambda_plus
                xs = np.linspace(max(lo, 1e-12), hi, 200)
                dens_mp = np.sqrt(np.clip((hi - xs) * (xs - lo), 0, None)) / (
                    2 * math.pi * s.mp.sigma2 * q * xs
                )
                bulk = 1 - s.mp.num_spikes / max(s.num_evals, 1)
                chart.line(xs * big, bulk * dens_mp / big, color=GREEN, width=1.6,
                           label="Marchenko–Pastur bulk")  # fmt: skip
        return chart.svg()

    return Figure(
        "esd",
        f"ESD of {_layer_label(s)}",
        draw,
        "log–log eigenvalue density, fitted power-law tail (from xmin) and Marchenko–Pastur bulk",
    )

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
        res.settings.update(
            {
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
        )
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
        norm_text = "; ".join(cfg.normalisations())
        res.metrics += [
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
                float(np.mean([s.log_norm for s in analysis.layers]))
                if analysis.layers
                else math.nan,
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
        for flag, sev, text in (
            ("over-trained", "warning", "α < {t}: over-trained / over-fit (heavy tail)"),
            ("under-trained", "info", "α > {t}: under-trained (close to random)"),
            ("poor fit", "info", "power-law fit is poor (KS test)"),
            ("too few eigenvalues", "info", "too few eigenvalues to fit (< min_evals)"),
        ):
            names = [s.name for s in analysis.layers if flag in s.flags]
            if names:
                t = cfg.over_trained_alpha if flag == "over-trained" else cfg.under_trained_alpha
                res.findings.append(
                    Finding(
                        sev,  # type: ignore[arg-type]
                        f"{len(names)} layer(s) {text.format(t=t)}: {', '.join(names[:8])}"
                        + (" …" if len(names) > 8 else ""),
                        {"layers": names},
                    )
                )
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
        "kind",
        "N",
        "M",
        "rf",
        "evals",
        "alpha",
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
        "flags",
    ]
    rows: list[list[Any]] = []
    for s in layers:
        fit, mp = s.fit, s.mp
        rows.append(
            [
                s.name,
                s.kind,
                s.n,
                s.m,
                s.rf,
                s.num_evals,
                _f(fit.alpha) if fit else None,
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
                ", ".join(s.flags),
            ]
        )
    return Table(
        "layers",
        "Per-layer spectral metrics",
        cols,
        rows,
        "mp_* in units of λ/N; α by Clauset–Shalizi–Newman with WeightWatcher's xmin search",
    )


def _alpha_figure(analysis: SpectralAnalysis) -> Figure:
    cfg = analysis.config

    def draw() -> str:
        from edgeproof.report.plots import new_figure, svg_of

        fig, ax = new_figure(6.0, 3.0)
        layers = analysis.fitted()
        x = np.arange(len(layers))
        a = np.array([s.alpha for s in layers])
        colors = [
            "#c0392b"
            if v < cfg.over_trained_alpha
            else "#7f8c8d"
            if v > cfg.under_trained_alpha
            else "#2c7fb8"
            for v in a
        ]
        ax.bar(x, a, color=colors)
        ax.axhline(cfg.over_trained_alpha, color="#c0392b", lw=0.8, ls="--")
        ax.axhline(cfg.under_trained_alpha, color="#7f8c8d", lw=0.8, ls="--")
        ax.set_xlabel("layer (definition order)")
        ax.set_ylabel("power-law α")
        if len(layers) <= 30:
            ax.set_xticks(x, [s.name for s in layers], rotation=70, fontsize=6)
        return svg_of(fig)

    return Figure(
        "alpha",
        "Power-law α per layer",
        draw,
        f"red: α < {cfg.over_trained_alpha} (over-trained); grey: α > "
        f"{cfg.under_trained_alpha} (under-trained)",
    )


def esd_figure(s: LayerSpectrum) -> Figure:
    """Log–log ESD of one layer with the fitted power-law tail and the MP bulk density."""

    def draw() -> str:
        from edgeproof.report.plots import new_figure, svg_of

        fig, ax = new_figure(5.0, 3.2)
        ev = s.evals[s.evals > 1e-5]
        if ev.size >= 2:
            bins = np.logspace(np.log10(ev.min()), np.log10(ev.max()), 60)
            ax.hist(ev, bins=bins.tolist(), density=True, color="#9ecae1", label="ESD")
            if s.fit is not None and s.fit.status == "ok":
                a, xmin, frac = s.fit.alpha, s.fit.xmin, s.fit.n_tail / ev.size
                xs = np.logspace(np.log10(xmin), np.log10(ev.max()), 100)
                ax.plot(
                    xs,
                    frac * (a - 1) / xmin * (xs / xmin) ** (-a),
                    "r--",
                    label=f"power law α={a:.2f}",
                )
                ax.axvline(xmin, color="r", lw=0.6)
            if s.mp is not None and s.mp.sigma2 > 0:
                big, small = max(s.n, s.m), min(s.n, s.m)
                q = small / big
                lo = s.mp.sigma2 * (1 - math.sqrt(q)) ** 2
                hi = s.mp.lambda_plus
                xs = np.linspace(max(lo, 1e-12), hi, 200)
                dens = np.sqrt(np.clip((hi - xs) * (xs - lo), 0, None)) / (
                    2 * math.pi * s.mp.sigma2 * q * xs
                )
                bulk = 1 - s.mp.num_spikes / max(s.num_evals, 1)
                ax.plot(xs * big, bulk * dens / big, color="#31a354", label="MP bulk")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("eigenvalue λ")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
        return svg_of(fig)

    return Figure(
        "esd",
        f"ESD of {s.name}",
        draw,
        "log–log eigenvalue density, fitted power-law tail (from xmin) and Marchenko–Pastur bulk",
    )

"""Attributions with sanity checks: what the model's class scores depend on, and whether the
explanations depend on the model at all.

The methods that fit the model and the kind of data run on a seeded subset of the samples
(:mod:`edgeproof.methods.attribution`), each explaining the class the model predicts (or, with
``target``, that class for every sample):

* images — Integrated Gradients, SmoothGrad, GradientSHAP, sliding-window occlusion;
* time series — the same, plus frequency-band occlusion;
* tabular — Integrated Gradients, SmoothGrad, GradientSHAP, feature ablation, KernelSHAP.

Gradient methods need a PyTorch model; on an ONNX model they are skipped with the reason and the
gradient-free ones (occlusion, feature ablation, KernelSHAP, frequency occlusion) still run.

Baselines (stated, per kind, unless the caller gives one as ``baseline``): images take the low
end of the input domain (black); time series the zero signal clipped into the domain; tabular data
the per-feature mean of the data.
GradientSHAP's baseline distribution and KernelSHAP's background are seeded random subsets of the
data. SmoothGrad's σ is ``smoothgrad_sigma`` × the domain's width (default 15 %).

Integrated Gradients runs adaptively (``ig_tolerance``): steps double from ``ig_steps`` for the
samples whose completeness gap |δ| exceeds the tolerance, up to ``ig_max_steps``. δ statistics
are reported for every method with a completeness property (IG, GradientSHAP, KernelSHAP).

Sanity (Adebayo et al. 2018, :mod:`edgeproof.methods.attribution.sanity`), PyTorch models only:
cascading randomisation of the layers from the top down (``sanity_stages`` stages) and label
randomisation (a re-initialised copy trained on shuffled labels for at most ``label_epochs``
epochs on at most ``label_samples`` samples — on by default because it is cheap at these budgets;
set ``label_randomization=False`` to skip it). A method whose maps keep a high rank correlation
with the trained model's (lower bound above ``threshold``) is flagged as not depending on the
weights and its maps are not shown as an explanation. The sanity tests re-explain the first
``sanity_samples`` samples under every degraded model with the same targets, baselines and random
draws; IG is re-run there at a fixed ``ig_steps`` (non-adaptive) for the trained and the degraded
models alike, which keeps the comparison equal and the cost bounded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from edgeproof.checks.base import AuditContext, Check
from edgeproof.checks.budget import AUTO, SampleCount, SampleSetting, resolve_samples
from edgeproof.errors import OptionError
from edgeproof.methods.attacks.base import check_domain, check_logits, frozen_copy
from edgeproof.methods.attribution import (
    Attribution,
    AttributionMethod,
    FeatureAblation,
    FrequencyOcclusion,
    GradientShap,
    IntegratedGradients,
    KernelShap,
    Occlusion,
    SmoothGrad,
)
from edgeproof.methods.attribution.base import Forward
from edgeproof.methods.attribution.sanity import SanityVerdict, sanity_checks
from edgeproof.methods.stats import bootstrap_interval, wilson_interval
from edgeproof.results import CheckResult, Figure, Finding, Metric, Table

__all__ = ["AttributionCheck", "given_baseline", "methods_for_kind"]

_KIND_METHODS: dict[str, tuple[str, ...]] = {
    "image": ("integrated_gradients", "smoothgrad", "gradient_shap", "occlusion"),
    "timeseries": (
        "integrated_gradients",
        "smoothgrad",
        "gradient_shap",
        "occlusion",
        "frequency_occlusion",
    ),
    "tabular": (
        "integrated_gradients",
        "smoothgrad",
        "gradient_shap",
        "feature_ablation",
        "kernel_shap",
    ),
}
_GRADIENT = {"integrated_gradients", "smoothgrad", "gradient_shap"}
_TITLES = {
    "integrated_gradients": "Integrated Gradients",
    "smoothgrad": "SmoothGrad",
    "gradient_shap": "GradientSHAP",
    "occlusion": "Occlusion",
    "feature_ablation": "Feature ablation",
    "kernel_shap": "KernelSHAP",
    "frequency_occlusion": "Frequency-band occlusion",
}


def methods_for_kind(kind: str) -> tuple[str, ...]:
    """The methods the check runs by default on data of ``kind``."""
    return _KIND_METHODS.get(kind, _KIND_METHODS["image"])


@dataclass
class _Run:
    """One method's outcome in this check."""

    name: str
    attribution: Attribution | None = None
    skipped: str | None = None
    seconds: float = 0.0
    verdict: SanityVerdict | None = None


class AttributionCheck(Check):
    """Attribution maps, completeness gaps and sanity verdicts for the methods that fit.

    Settings (budgets first):
        methods: method names to run (default: those that fit the data kind, see
            :func:`methods_for_kind`).
        max_samples: samples explained, a seeded subset (default ``"auto"``: 64, fewer (at
            least 12) on a costly model by the work budget of :mod:`edgeproof.checks.budget`).
        sanity_samples: of those, how many the sanity tests re-explain (default ``"auto"``:
            16, or a quarter of the samples (at least 6) when the budget limited them).
        ig_steps, ig_tolerance, ig_max_steps, ig_rule: Integrated Gradients (defaults 16, 0.01,
            256, ``gausslegendre``); ``ig_tolerance=None`` runs ``ig_steps`` once.
        smoothgrad_samples, smoothgrad_sigma: SmoothGrad draws and σ as a fraction of the domain
            width (defaults 25, 0.15).
        gradient_shap_samples: GradientSHAP draws (default 25).
        background_size: baselines drawn from the data for GradientSHAP and KernelSHAP
            (default 8).
        occlusion_window, occlusion_stride: window and stride along each spatial/time axis
            (default: an eighth of the smallest axis rounded up, at least 2, and half of it).
        kernel_shap_samples: coalitions per sample (default ``min(2M + 2048, 512)``).
        kernel_shap_max_samples: KernelSHAP explains only the first this many of the samples
            (default 32; its cost is coalitions × background rows per sample).
        bands, sample_rate: frequency occlusion bands (default 8) and the sample rate in Hz
            (default: the data's ``sample_rate_hz`` metadata, if any).
        sanity, sanity_stages: run the randomisation tests, and how many cascade stages
            (default True, 5).
        label_randomization, label_epochs, label_samples: the shuffled-label model (default
            True, 60 epochs at most, 128 samples at most (``"auto"``: 64 when the work budget
            limited the samples); Adam at lr 1e-2, batches of 32, stopping once it fits 95 % of
            the shuffled labels).
        threshold, level: sanity verdict threshold and confidence level (0.5, 0.95).
        figure_samples: per-sample maps shown (default 4).
        target: explain this class index for every sample (default ``None``: the class the
            model predicts for each sample).
        baseline: the reference input of the point-baseline methods (IG, occlusion, feature
            ablation): a number, or one sample of the input shape (default ``None``: the
            per-kind baseline of the module docstring).
        internal_batch_size: rows per forward pass of the gradient methods (default 256).
        forward_batch_size: rows per forward pass of the gradient-free methods, which keep no
            activations for a backward pass (default: as many samples as fit in 16 MiB of
            float32 input, between 256 and 4096).
    """

    name = "attribution"
    title = "Attributions and their sanity"
    description = (
        "Integrated Gradients (with its completeness gap), SmoothGrad, GradientSHAP, occlusion, "
        "KernelSHAP and frequency occlusion, with Adebayo et al.'s randomisation sanity checks."
    )
    needs_data = True
    needs_gradients = False  # gradient methods are skipped with a reason; occlusion still runs
    headline = ("methods_flagged", "ig_relative_delta_median")

    def __init__(
        self,
        *,
        methods: Sequence[str] | None = None,
        max_samples: SampleSetting = AUTO,
        sanity_samples: int | Literal["auto"] = AUTO,
        ig_steps: int = 16,
        ig_tolerance: float | None = 0.01,
        ig_max_steps: int = 256,
        ig_rule: str = "gausslegendre",
        smoothgrad_samples: int = 25,
        smoothgrad_sigma: float = 0.15,
        gradient_shap_samples: int = 25,
        background_size: int = 8,
        occlusion_window: int | None = None,
        occlusion_stride: int | None = None,
        kernel_shap_samples: int | None = None,
        kernel_shap_max_samples: int = 32,
        bands: int | Sequence[tuple[float, float]] = 8,
        sample_rate: float | None = None,
        sanity: bool = True,
        sanity_stages: int = 5,
        label_randomization: bool = True,
        label_epochs: int = 60,
        label_samples: int | Literal["auto"] = AUTO,
        threshold: float = 0.5,
        level: float = 0.95,
        figure_samples: int = 4,
        internal_batch_size: int = 256,
        forward_batch_size: int | None = None,
        target: int | None = None,
        baseline: float | np.ndarray | None = None,
    ) -> None:
        super().__init__(
            methods=None if methods is None else list(methods),
            max_samples=max_samples,
            sanity_samples=sanity_samples,
            ig_steps=ig_steps,
            ig_tolerance=ig_tolerance,
            ig_max_steps=ig_max_steps,
            ig_rule=ig_rule,
            smoothgrad_samples=smoothgrad_samples,
            smoothgrad_sigma=smoothgrad_sigma,
            gradient_shap_samples=gradient_shap_samples,
            background_size=background_size,
            occlusion_window=occlusion_window,
            occlusion_stride=occlusion_stride,
            kernel_shap_samples=kernel_shap_samples,
            kernel_shap_max_samples=kernel_shap_max_samples,
            bands=bands,
            sample_rate=sample_rate,
            sanity=sanity,
            sanity_stages=sanity_stages,
            label_randomization=label_randomization,
            label_epochs=label_epochs,
            label_samples=label_samples,
            threshold=threshold,
            level=level,
            figure_samples=figure_samples,
            internal_batch_size=internal_batch_size,
            forward_batch_size=forward_batch_size,
            target=target,
            baseline=None if baseline is None else _baseline_setting(baseline),
        )
        known = {n for names in _KIND_METHODS.values() for n in names}
        for m in methods or ():
            if m not in known:
                raise OptionError(
                    "methods", f"unknown method {m!r}", f"choose from {', '.join(sorted(known))}"
                )
        for name, value in (
            ("max_samples", 64 if max_samples in (AUTO, None) else max_samples),
            ("sanity_samples", 16 if sanity_samples == AUTO else sanity_samples),
            ("background_size", background_size),
            ("sanity_stages", sanity_stages),
            ("label_samples", 128 if label_samples == AUTO else label_samples),
            ("kernel_shap_max_samples", kernel_shap_max_samples),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptionError(name, f"{value!r} is too few", "use an integer >= 1")
        if not smoothgrad_sigma > 0:
            raise OptionError(
                "smoothgrad_sigma", f"{smoothgrad_sigma} must be > 0", "use e.g. 0.15"
            )
        self.methods = None if methods is None else tuple(methods)
        self.max_samples: SampleSetting = max_samples
        self.sanity_samples: int | Literal["auto"] = sanity_samples
        self.ig = IntegratedGradients(
            n_steps=ig_steps,
            rule=ig_rule,  # type: ignore[arg-type]
            tolerance=ig_tolerance,
            max_steps=max(ig_max_steps, ig_steps),
            internal_batch_size=internal_batch_size,
        )
        self.smoothgrad_samples = int(smoothgrad_samples)
        self.smoothgrad_sigma = float(smoothgrad_sigma)
        self.gradient_shap = GradientShap(
            n_samples=gradient_shap_samples, internal_batch_size=internal_batch_size
        )
        self.background_size = int(background_size)
        self.occlusion_window = occlusion_window
        self.occlusion_stride = occlusion_stride
        self.kernel_shap_samples = kernel_shap_samples
        self.kernel_shap_max_samples = int(kernel_shap_max_samples)
        self.bands = bands
        self.sample_rate = sample_rate
        self.sanity = bool(sanity)
        self.sanity_stages = int(sanity_stages)
        self.label_randomization = bool(label_randomization)
        self.label_epochs = int(label_epochs)
        self.label_samples: int | Literal["auto"] = label_samples
        self.threshold = float(threshold)
        self.level = float(level)
        self.figure_samples = int(figure_samples)
        self.internal_batch_size = int(internal_batch_size)
        if forward_batch_size is not None and forward_batch_size < 1:
            raise OptionError(
                "forward_batch_size", f"{forward_batch_size} is too few", "use >= 1 or None"
            )
        self.forward_batch_size = forward_batch_size
        if target is not None and (
            isinstance(target, bool) or not isinstance(target, (int, np.integer)) or target < 0
        ):
            raise OptionError("target", f"{target!r} is not a class index", "use e.g. 0")
        self.target = None if target is None else int(target)
        self.baseline = baseline

    # --- planning -------------------------------------------------------------------------

    def _rows(self, name: str, shape: tuple[int, ...]) -> float:
        """Forward-pass equivalents per explained sample of method ``name`` (a gradient
        counts three; KernelSHAP weighted by the share of samples it explains)."""
        if name == "integrated_gradients":
            return 3.0 * self.ig.n_steps
        if name == "smoothgrad":
            return 3.0 * self.smoothgrad_samples
        if name == "gradient_shap":
            return 3.0 * self.gradient_shap.n_samples
        method = self._method(name, shape, 1.0, None)
        if name == "occlusion":
            axes = shape[1:] if len(shape) > 1 else shape
            w, s = method.window[-1], method.strides[-1]
            return float(math.prod((a - w) // s + 1 for a in axes)) + 1.0
        if name == "feature_ablation":
            return float(math.prod(shape)) + 1.0
        if name == "kernel_shap":
            coalitions = method.n_samples if method.n_samples is not None else 512
            return float(coalitions * self.background_size) * 0.5
        return float(self.bands if isinstance(self.bands, int) else len(self.bands)) + 1.0

    def _counts(
        self, ctx: AuditContext, names: Sequence[str], shape: tuple[int, ...], available: int
    ) -> tuple[SampleCount, int]:
        """The samples explained and how many of them the sanity tests re-explain.

        With ``"auto"``, a sample costs its maps plus, for the re-explained quarter, one map
        per randomisation stage and the shuffled-label model
        (:mod:`edgeproof.checks.budget`); at least 12 samples and 6 re-explained."""
        rows = sum(self._rows(m, shape) for m in names)
        stages = self.sanity_stages + (1 if self.label_randomization else 0)
        passes = rows * (1.0 + (stages / 4.0 if self.sanity else 0.0))
        count = resolve_samples(ctx, self.max_samples, available, passes=passes, cap=64, floor=12)
        if self.sanity_samples != AUTO:
            return count, int(self.sanity_samples)
        return count, (max(6, count.n // 4) if count.limited_by_budget else 16)

    def _method(self, name: str, shape: tuple[int, ...], width: float, rate: float | None) -> Any:
        ibs = self.internal_batch_size
        fbs = self.forward_batch_size or min(4096, max(256, 2**22 // max(1, math.prod(shape))))
        if name == "integrated_gradients":
            return self.ig
        if name == "smoothgrad":
            return SmoothGrad(
                n_samples=self.smoothgrad_samples,
                sigma=self.smoothgrad_sigma * width,
                internal_batch_size=ibs,
            )
        if name == "gradient_shap":
            return self.gradient_shap
        if name == "occlusion":
            axes = shape[1:] if len(shape) > 1 else shape
            w = self.occlusion_window or max(2, -(-min(axes) // 8))
            w = min(w, min(axes))
            s = self.occlusion_stride or max(1, w // 2)
            return Occlusion(
                window=(w,) * len(axes), strides=(s,) * len(axes), internal_batch_size=fbs
            )
        if name == "feature_ablation":
            return FeatureAblation(internal_batch_size=fbs)
        if name == "kernel_shap":
            m = math.prod(shape)
            n = self.kernel_shap_samples or min(2 * m + 2048, 512)
            return KernelShap(n_samples=max(2, n), internal_batch_size=fbs)
        return FrequencyOcclusion(bands=self.bands, sample_rate=rate, internal_batch_size=fbs)

    def _sanity_method(
        self, name: str, shape: tuple[int, ...], width: float, rate: float | None
    ) -> Any:
        """The method as the sanity tests re-run it: IG at a fixed ``ig_steps`` (its maps'
        ranking does not hinge on the last percent of completeness, and the adaptive steps of
        a randomised model would dominate the check's cost); the others as configured."""
        if name == "integrated_gradients":
            return IntegratedGradients(
                n_steps=self.ig.n_steps,
                rule=self.ig.rule,
                internal_batch_size=self.internal_batch_size,
            )
        return self._method(name, shape, width, rate)

    def run(self, ctx: AuditContext) -> CheckResult:
        data = ctx.require_data()
        spec = ctx.threat.input
        kind = spec.kind
        res = self.new_result()
        k = spec.num_classes if spec.num_classes is not None else data.num_classes
        check_logits(ctx.clean_logits(), k, ctx.model.name)
        check_domain(data.x, spec, data.name)
        module = ctx.model.module
        model: Forward
        torch_model: nn.Module | None = None
        if module is not None:
            torch_model = frozen_copy(module)
            model = torch_model
        else:
            loaded, ibs = ctx.model, self.internal_batch_size

            def model(t: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(loaded.predict_logits(t.detach().numpy(), ibs))

        rng = np.random.default_rng(ctx.seed)
        n = len(data)
        names = self.methods or methods_for_kind(kind)
        count, n_sanity = self._counts(ctx, names, tuple(data.x.shape[1:]), n)
        res.settings.update(samples_rule=count.rule, sanity_samples_used=n_sanity)
        note = count.finding(self.name, "max_samples", "records")
        if note is not None:
            res.findings.append(note)
        index = np.sort(rng.choice(n, size=count.n, replace=False))
        x = torch.from_numpy(np.ascontiguousarray(data.x[index]))
        logits = torch.from_numpy(ctx.clean_logits()[index])
        target = logits.argmax(dim=1)
        if self.target is not None:
            if self.target >= k:
                raise OptionError(
                    "target",
                    f"class {self.target} is outside the model's {k} classes",
                    f"use a class index in 0..{k - 1}, or leave it unset (the predicted class)",
                )
            target = torch.full_like(target, self.target)
        shape = tuple(x.shape[1:])
        lo, hi = spec.domain
        baseline = (
            self._baseline(kind, data.x, shape, spec.domain)
            if self.baseline is None
            else given_baseline(self.baseline, shape)
        )
        bg_index = rng.choice(n, size=min(n, self.background_size), replace=False)
        background = torch.from_numpy(np.ascontiguousarray(data.x[bg_index]))
        rate = self.sample_rate
        if rate is None and isinstance(data.metadata.get("sample_rate_hz"), (int, float)):
            rate = float(data.metadata["sample_rate_hz"])
        ctx.progress.start(len(names), "attribution")

        runs: list[_Run] = []
        for name in names:
            run = _Run(name)
            runs.append(run)
            if name in _GRADIENT and torch_model is None:
                run.skipped = f"needs gradients, which {ctx.model.described} does not provide"
                continue
            if name == "frequency_occlusion" and kind != "timeseries":
                run.skipped = "frequency occlusion explains time series (time on the last axis)"
                continue
            method = self._method(name, shape, hi - lo, rate)
            base = _baseline_for(method, baseline, background)
            cap = self.kernel_shap_max_samples if name == "kernel_shap" else x.shape[0]
            t0 = time.perf_counter()
            run.attribution = method.attribute(
                model, x[:cap], target=target[:cap], baseline=base, generator=ctx.generator(17)
            )
            run.seconds = time.perf_counter() - t0
            ctx.progress.advance()

        label_n = (
            self.label_samples
            if self.label_samples != AUTO
            else (64 if count.limited_by_budget else 128)
        )
        can_test, labels = self._sanity_plan(ctx, torch_model, data.x, data.y, res, label_n)
        if can_test and torch_model is not None and any(r.attribution for r in runs):
            ns = min(n_sanity, x.shape[0])
            xs, ts = x[:ns], target[:ns]
            explainers = {}
            for run in runs:
                if run.attribution is None:
                    continue
                method = self._sanity_method(run.name, shape, hi - lo, rate)
                base = _baseline_for(method, baseline, background)
                explainers[run.name] = _explainer(method, xs, ts, base, ctx, salt=23)
            t0 = time.perf_counter()
            verdicts = sanity_checks(
                explainers,
                torch_model,
                stages=self.sanity_stages,
                labels=labels,
                label_epochs=self.label_epochs,
                threshold=self.threshold,
                level=self.level,
                seed=ctx.seed,
            )
            res.settings["sanity_seconds"] = round(time.perf_counter() - t0, 3)
            for run in runs:
                run.verdict = verdicts.get(run.name)

        self._report(res, ctx, runs, x, target, index, kind, spec.class_names, data)
        return res

    # --- pieces -----------------------------------------------------------------------------

    @staticmethod
    def _baseline(
        kind: str, xs: np.ndarray, shape: tuple[int, ...], domain: tuple[float, float]
    ) -> torch.Tensor:
        lo, hi = domain
        if kind == "tabular":
            return torch.from_numpy(xs.mean(axis=0).astype(np.float32))
        if kind == "timeseries":
            return torch.full(shape, float(min(max(0.0, lo), hi)))
        return torch.full(shape, float(lo))

    def _sanity_plan(
        self,
        ctx: AuditContext,
        model: nn.Module | None,
        xs: np.ndarray,
        ys: np.ndarray,
        res: CheckResult,
        label_n: int,
    ) -> tuple[bool, tuple[torch.Tensor, torch.Tensor] | None]:
        """Whether the sanity tests can run (a finding says why not), and the samples to train
        the shuffled-label model on (``None`` without label randomisation)."""
        if not self.sanity:
            res.findings.append(
                Finding("info", "sanity tests were not run (sanity=False): maps are unverified")
            )
            return False, None
        if model is None:
            res.findings.append(
                Finding(
                    "info",
                    f"sanity tests need to re-initialise the weights, which {ctx.model.described} "
                    "does not allow: the maps shown are unverified (give the PyTorch model "
                    "to run them)",
                )
            )
            return False, None
        if not self.label_randomization:
            return True, None
        rng = np.random.default_rng(ctx.seed + 1)
        n = xs.shape[0]
        pick = np.sort(rng.choice(n, size=min(n, label_n), replace=False))
        return True, (
            torch.from_numpy(np.ascontiguousarray(xs[pick])),
            torch.from_numpy(np.ascontiguousarray(ys[pick])),
        )

    def _report(
        self,
        res: CheckResult,
        ctx: AuditContext,
        runs: list[_Run],
        x: torch.Tensor,
        target: torch.Tensor,
        index: np.ndarray,
        kind: str,
        class_names: tuple[str, ...] | None,
        data: Any,
    ) -> None:
        ran = [r for r in runs if r.attribution is not None]
        tested = [r for r in ran if r.verdict is not None]
        flagged = [r for r in tested if r.verdict is not None and not r.verdict.depends_on_weights]
        res.settings.update(
            samples=int(x.shape[0]),
            sample_index=index.tolist(),
            explained_classes=sorted(set(target.tolist())),
        )
        if tested:
            v0 = tested[0].verdict
            assert v0 is not None
            res.settings.update(
                cascade=[st.label for st in v0.cascade],
                label_train_accuracy=v0.label_train_accuracy,
                label_epochs_run=v0.label_epochs,
            )
        res.metrics.append(
            Metric(
                "methods_flagged",
                float(len(flagged)) if tested else float("nan"),  # not tested: unknown, not 0
                unit="methods",
                higher_is_better=False,
                description="attribution methods whose maps barely change when the weights are "
                "destroyed (Adebayo et al. 2018); their maps are not shown",
                settings={"tested": [r.name for r in tested], "threshold": self.threshold},
            )
        )
        for r in runs:
            if r.skipped is not None:
                res.findings.append(Finding("info", f"{_TITLES[r.name]} skipped: {r.skipped}"))
        self._delta_metrics(res, ran, ctx.seed)
        for r in tested:
            v = r.verdict
            assert v is not None
            final = v.cascade[-1]
            for form, corr in (("abs", final.abs_corr), ("signed", final.signed_corr)):
                res.metrics.append(
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
            if v.depends_on_weights:
                res.findings.append(
                    Finding("info", f"{_TITLES[r.name]} passes the sanity tests: {v.reason}")
                )
            else:
                res.findings.append(
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
        res.tables.append(self._methods_table(runs))
        if tested:
            res.tables.append(_sanity_table(tested))
        shown = [r for r in ran if r not in flagged]
        res.figures.extend(
            self._figures(shown, x, target, kind, class_names, data.metadata.get("features"))
        )
        passing = [r for r in tested if r not in flagged]
        if not ran:
            res.summary = "no attribution method could run on this model"
        else:
            res.summary = (
                f"{len(ran)} method(s) on {x.shape[0]} samples; "
                + (
                    f"{len(flagged)} of {len(tested)} flagged by the sanity tests"
                    + (f" ({', '.join(_TITLES[r.name] for r in flagged)})" if flagged else "")
                    if tested
                    else "sanity tests not run"
                )
                + (f"; shown: {', '.join(_TITLES[r.name] for r in passing)}" if passing else "")
            )

    def _delta_metrics(self, res: CheckResult, ran: list[_Run], seed: int) -> None:
        for r in ran:
            a = r.attribution
            assert a is not None
            rel = a.relative_delta
            if a.delta is None or rel is None:
                continue
            relv = rel.numpy()
            finite = relv[np.isfinite(relv)]
            short = {"integrated_gradients": "ig", "gradient_shap": "gradient_shap"}.get(
                r.name, r.name
            )
            if finite.size:

                def median(idx: np.ndarray, f: np.ndarray = finite) -> np.ndarray:
                    out: np.ndarray = np.median(f[idx], axis=1)
                    return out

                ci = bootstrap_interval(
                    median,
                    finite.size,
                    level=self.level,
                    seed=seed,
                    resamples=500,
                )
                res.metrics.append(
                    Metric(
                        f"{short}_relative_delta_median",
                        float(np.median(finite)),
                        unit="fraction of |f(x) − f(ref)|",
                        ci=ci,
                        higher_is_better=False,
                        description=f"median over samples of the {_TITLES[r.name]} "
                        "completeness gap |Σ attr − (f(x) − f(ref))| relative to the score change",
                        settings={"undefined": int(relv.size - finite.size)},
                    )
                )
            res.metrics.append(
                Metric(
                    f"{short}_abs_delta_max",
                    float(a.delta.abs().max()),
                    unit=a.output,
                    higher_is_better=False,
                    description=f"largest {_TITLES[r.name]} completeness gap |δ| over samples",
                )
            )
            if a.converged is not None and r.name == "integrated_gradients":
                k = int(a.converged.sum())
                res.metrics.append(
                    Metric(
                        "ig_converged_fraction",
                        k / a.num_samples,
                        unit="fraction",
                        ci=wilson_interval(k, a.num_samples, self.level),
                        higher_is_better=True,
                        description="samples whose IG |δ| met the tolerance within the step cap",
                        settings={
                            "tolerance": self.ig.tolerance,
                            "max_steps": self.ig.max_steps,
                        },
                    )
                )
                assert a.n_steps is not None
                res.metrics.append(
                    Metric(
                        "ig_mean_steps",
                        float(a.n_steps.double().mean()),
                        unit="steps",
                        higher_is_better=False,
                        description="mean integration steps per sample in adaptive IG",
                    )
                )
                if k < a.num_samples:
                    res.findings.append(
                        Finding(
                            "warning",
                            f"Integrated Gradients missed the completeness tolerance "
                            f"{self.ig.tolerance:g} on {a.num_samples - k} of {a.num_samples} "
                            f"samples at {self.ig.max_steps} steps; their maps are approximate "
                            "(raise ig_max_steps, or try another ig_rule)",
                            {"unconverged": a.num_samples - k},
                        )
                    )

    def _methods_table(self, runs: list[_Run]) -> Table:
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

    # --- figures ----------------------------------------------------------------------------

    def _figures(
        self,
        shown: list[_Run],
        x: torch.Tensor,
        target: torch.Tensor,
        kind: str,
        class_names: tuple[str, ...] | None,
        features: Any,
    ) -> list[Figure]:
        figs: list[Figure] = []
        xn = x.numpy()
        t = target.numpy()
        for r in shown:
            a = r.attribution
            assert a is not None
            vals = a.values.numpy()
            ta = a.target.numpy()  # a method may explain only the first samples (KernelSHAP)
            classes = sorted(set(ta.tolist()))
            names = [class_names[c] if class_names else str(c) for c in classes]
            means = np.stack([vals[ta == c].mean(axis=0) for c in classes])
            title = _TITLES[r.name]
            if r.name == "frequency_occlusion":
                figs.append(_bands_figure(title, [b.label for b in a.bands], means, names))
            elif kind == "image":
                figs.append(_image_classes_figure(r.name, title, means, names))
            elif kind == "timeseries":
                xa = xn[: ta.size]
                x_means = np.stack([xa[ta == c].mean(axis=0) for c in classes])
                figs.append(_series_classes_figure(r.name, title, x_means, means, names))
            else:
                labels = list(features) if features else [f"x{j}" for j in range(means.shape[1])]
                figs.append(_tabular_figure(r.name, title, means, names, labels))
        pixel = [r for r in shown if r.name != "frequency_occlusion"]
        if kind == "image" and pixel and self.figure_samples > 0:
            s = min(self.figure_samples, xn.shape[0])
            maps = {
                _TITLES[r.name]: r.attribution.values.numpy()[:s] for r in pixel if r.attribution
            }
            figs.append(_image_samples_figure(xn[:s], maps, t[:s], class_names))
        return figs


def given_baseline(baseline: float | np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """A caller's baseline as one sample of ``shape`` (a number fills it); an
    :class:`OptionError` naming ``baseline`` for any other shape, or a non-finite value."""
    if isinstance(baseline, (int, float, np.integer, np.floating)) and not isinstance(
        baseline, bool
    ):
        b = np.full(shape, float(baseline), dtype=np.float32)
    else:
        b = np.asarray(baseline, dtype=np.float32)
        if b.shape == (1, *shape):
            b = b[0]
        if b.shape != shape:
            raise OptionError(
                "baseline",
                f"shape {list(b.shape)} does not fit inputs of shape {list(shape)}",
                f"give a number or one sample of shape {list(shape)}",
            )
    if not np.all(np.isfinite(b)):
        raise OptionError("baseline", "contains NaN or Inf", "give a finite baseline")
    return torch.from_numpy(np.ascontiguousarray(b))


def _baseline_setting(baseline: float | np.ndarray) -> Any:
    """How a caller's baseline is recorded in the settings: the number, or its shape and range."""
    if isinstance(baseline, (int, float, np.integer, np.floating)):
        return float(baseline)
    b = np.asarray(baseline, dtype=np.float64)
    return {
        "shape": list(b.shape),
        "min": float(np.nanmin(b)) if b.size else None,
        "max": float(np.nanmax(b)) if b.size else None,
    }


def _baseline_for(
    method: AttributionMethod, point: torch.Tensor, distribution: torch.Tensor
) -> torch.Tensor | None:
    if method.baseline_kind == "distribution":
        return distribution
    if method.baseline_kind == "point":
        return point
    return None


def _explainer(
    method: AttributionMethod,
    x: torch.Tensor,
    target: torch.Tensor,
    baseline: torch.Tensor | None,
    ctx: AuditContext,
    salt: int,
) -> Callable[[nn.Module], Attribution]:
    """``model -> Attribution`` with the same samples, targets, baseline and draws each time."""

    def explain(m: nn.Module) -> Attribution:
        return method.attribute(
            m, x, target=target, baseline=baseline, generator=ctx.generator(salt)
        )

    return explain


def _sanity_table(tested: list[_Run]) -> Table:
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


def _sym(v: np.ndarray) -> float:
    m = float(np.nanmax(np.abs(v))) if v.size else 0.0
    return m if np.isfinite(m) and m > 0 else 1.0


def _cell(h: int, w: int, target: float = 72.0) -> float:
    """A cell of about ``target`` px holding whole screen pixels per image pixel (≤ 128 px)."""
    m = max(h, w)
    return float(min(128, m * max(1, math.ceil(target / m))))


def _decimals(v: float) -> int:
    """Decimals that write numbers up to ``v`` in magnitude with two significant digits."""
    return max(0, 1 - math.floor(math.log10(v))) if v > 0 and math.isfinite(v) else 2


def _image_classes_figure(name: str, title: str, means: np.ndarray, names: list[str]) -> Figure:
    """Per-class mean maps (channels summed) as small multiples on one diverging colour scale."""

    def draw() -> str:
        from edgeproof.report.charts import ImageGrid

        maps = means.reshape(means.shape[0], -1, *means.shape[-2:]).sum(axis=1)
        k, h, w = maps.shape
        vmax = _sym(maps)
        grid = ImageGrid(cols=min(k, 5 if k <= 10 else 10), cell=_cell(h, w))
        grid.scale("attr", color_ramp="rdbu_r", vmin=-vmax, vmax=vmax,
                   colorbar="mean attribution")  # fmt: skip
        for j in range(k):
            grid.add(maps[j], scale="attr", caption=names[j],
                     tooltip=f"predicted class {names[j]}")  # fmt: skip
        return grid.svg()

    return Figure(
        f"class_means_{name}",
        f"{title}: mean attribution per predicted class",
        draw,
        description="red raises the class score, blue lowers it (white: no effect); channels "
        "summed; one colour scale for all classes",
    )


def _image_samples_figure(
    xs: np.ndarray,
    maps: dict[str, np.ndarray],
    target: np.ndarray,
    class_names: tuple[str, ...] | None,
) -> Figure:
    """Inputs beside each shown method's map, every map on its own symmetric scale."""

    def draw() -> str:
        from edgeproof.report.charts import ImageGrid

        s = xs.shape[0]
        h, w = xs.shape[-2:]
        chans = xs.reshape(s, -1, h, w)
        finite = chans[np.isfinite(chans)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        hi = hi if hi > lo else lo + 1.0
        rgb = chans.shape[1] == 3
        grid = ImageGrid(cols=len(maps) + 1, cell=_cell(h, w))
        grid.scale("input", color_ramp="gray", vmin=lo, vmax=hi)
        grid.scale("map", color_ramp="rdbu_r", vmin=-1.0, vmax=1.0,
                   colorbar="relative attribution")  # fmt: skip
        rows = []
        for i in range(s):
            label = class_names[target[i]] if class_names else str(target[i])
            rows.append(f"class {label}")
            if rgb:
                grid.add(np.transpose((chans[i] - lo) / (hi - lo), (1, 2, 0)),
                         tooltip=f"sample {i}, explained for class {label}")  # fmt: skip
            else:
                grid.add(chans[i].mean(axis=0), scale="input",
                         tooltip=f"sample {i}, explained for class {label}")  # fmt: skip
            for title, m in maps.items():
                mm = m[i].reshape(-1, h, w).sum(axis=0)
                peak = _sym(mm)
                grid.add(mm / peak, scale="map",
                         tooltip=f"{title}, sample {i}: max |attribution| {peak:.3g}")  # fmt: skip
        grid.labels(rows=rows, cols=("input", *maps))
        return grid.svg()

    return Figure(
        "samples",
        "Attribution maps of a few samples",
        draw,
        description="one sample per row, labelled with the class explained (the model's "
        "prediction): the input (grey, or RGB), then each method's map divided by its largest "
        "|attribution|, on one symmetric colour scale (red raises that class's score, blue "
        "lowers it)",
    )


def _series_classes_figure(
    name: str, title: str, x_means: np.ndarray, means: np.ndarray, names: list[str]
) -> Figure:
    """Per class: the mean signal (first channel) as a line over the mean attribution as shading."""

    def draw() -> str:
        from edgeproof.report.charts import Axis, Chart, Panels
        from edgeproof.report.charts.colors import BLACK

        k = means.shape[0]
        attr = means.reshape(k, -1, means.shape[-1]).sum(axis=1)
        sig = x_means.reshape(k, -1, x_means.shape[-1])[:, 0]
        steps = attr.shape[1]
        vmax = _sym(attr)
        charts = []
        for j in range(k):
            lo, hi = float(sig[j].min()), float(sig[j].max())
            pad = 0.05 * (hi - lo or 1.0)
            last = j == k - 1
            chart = Chart(
                680,
                130 + (36 if last else 0),
                x=Axis("time step", limits=(0.0, float(steps)), grid=False),
                y=Axis("mean input", limits=(lo - pad, hi + pad), grid=False),
                title=names[j],
            )
            chart.image(attr[j][None, :], extent=(0.0, float(steps), lo - pad, hi + pad),
                        vmin=-vmax, vmax=vmax, color_ramp="rdbu_r", mode="png", opacity=0.75,
                        colorbar="attribution" if j == 0 else None)  # fmt: skip
            chart.line(np.arange(steps) + 0.5, sig[j], color=BLACK, width=1.0)
            charts.append(chart)
        return Panels(charts, gap=2.0).svg()

    return Figure(
        f"class_means_{name}",
        f"{title}: mean signal and mean attribution per predicted class",
        draw,
        description="one panel per predicted class; line: mean input (first channel); shading: "
        "mean attribution over time, channels summed, one colour scale for all classes (red "
        "raises the class score, blue lowers it)",
    )


def _bands_figure(title: str, labels: list[str], means: np.ndarray, names: list[str]) -> Figure:
    def draw() -> str:
        from edgeproof.report.charts import Axis, Chart

        vals = means.reshape(means.shape[0], -1, means.shape[-1]).sum(axis=1)
        v = _sym(vals)
        k, nb = vals.shape
        cell = 44.0 if max(k, nb) <= 12 else max(8.0, 520.0 / max(k, nb))
        dec = _decimals(v)
        chart = Chart(
            min(1000.0, cell * nb + 330),
            cell * k + 150,
            x=Axis("frequency band"),
            y=Axis("predicted class"),
        )
        chart.heatmap(
            vals,
            rows=names,
            cols=labels,
            vmin=-v,
            vmax=v,
            color_ramp="rdbu_r",
            annotations=[[f"{round(x, dec) + 0.0:.{dec}f}" for x in row] for row in vals],
            colorbar="score drop",
            tooltips=[
                [f"class {names[i]}, band {labels[b]}: drop {vals[i, b]:.3g}" for b in range(nb)]
                for i in range(k)
            ],
        )
        return chart.svg()

    return Figure(
        "class_means_frequency_occlusion",
        f"{title}: mean score drop per band and predicted class",
        draw,
        description="how much the class score falls when the band is removed (red: the class "
        "relies on the band; blue: removing it raises the score)",
    )


def _tabular_figure(
    name: str, title: str, means: np.ndarray, names: list[str], features: list[str]
) -> Figure:
    """Per class: horizontal bars of the mean attribution of the most important features."""

    def draw() -> str:
        from edgeproof.report.charts import Axis, Chart, Panels
        from edgeproof.report.charts.colors import BLUE, GREY, VERMILLION

        flat = means.reshape(means.shape[0], -1)
        top = np.argsort(-np.abs(flat).mean(axis=0), kind="stable")[: min(12, flat.shape[1])]
        labels = [features[i] if i < len(features) else str(i) for i in top]
        labels = [n if labels.count(n) == 1 else f"{n} #{i}" for n, i in zip(labels, top)]
        k = flat.shape[0]
        charts = []
        for j in range(k):
            v = flat[j, top]
            last = j == k - 1
            chart = Chart(
                640,
                40 + 20 * top.size + (36 if last else 0),
                x=Axis("mean attribution"),
                y=Axis(scale="category", categories=tuple(labels)),
                title=names[j],
            )
            chart.vline(0.0, color=GREY, width=1.0, dash=None)
            chart.barh(
                labels,
                v,
                thickness=0.66,
                color=[VERMILLION if x >= 0 else BLUE for x in v],
                tooltips=[f"class {names[j]}, {f}: {x:.3g}" for f, x in zip(labels, v)],
            )
            if j == 0:
                chart.key("raises the class score", VERMILLION)
                chart.key("lowers it", BLUE)
            charts.append(chart)
        return Panels(charts, gap=2.0).svg()

    return Figure(
        f"class_means_{name}",
        f"{title}: mean attribution of the top features per predicted class",
        draw,
        description="one panel per predicted class; features ranked by mean |attribution| over "
        "classes, most important at the top; vermillion raises the class score, blue lowers it",
    )

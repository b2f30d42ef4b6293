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

The check's pieces: settings and their validation in :mod:`~edgeproof.checks.attribution_settings`,
the samples, targets and baselines in :mod:`~edgeproof.checks.attribution_inputs`, metrics,
findings and tables in :mod:`~edgeproof.checks.attribution_metrics`, the drawings in
:mod:`~edgeproof.checks.attribution_figures`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from edgeproof.checks.attribution_figures import (
    _bands_figure,
    _image_classes_figure,
    _image_samples_figure,
    _series_classes_figure,
    _tabular_figure,
)
from edgeproof.checks.attribution_inputs import (
    ExplainedInputs,
    baseline_for,
    explained_inputs,
    forward_model,
    given_baseline,
)
from edgeproof.checks.attribution_metrics import (
    _TITLES,
    MethodRun,
    delta_metrics,
    flagged_metric,
    methods_table,
    rank_correlation_metrics,
    sanity_findings,
    sanity_table,
    skipped_findings,
    summary,
)
from edgeproof.checks.attribution_settings import _GRADIENT, AttributionSettings, methods_for_kind
from edgeproof.checks.base import AuditContext, Check
from edgeproof.checks.budget import AUTO, SampleCount, SampleSetting, resolve_samples
from edgeproof.data.dataset import Dataset
from edgeproof.methods.attacks.base import check_domain, check_logits
from edgeproof.methods.attribution import (
    Attribution,
    AttributionMethod,
    FeatureAblation,
    FrequencyOcclusion,
    IntegratedGradients,
    KernelShap,
    Occlusion,
    SmoothGrad,
)
from edgeproof.methods.attribution.base import Forward
from edgeproof.methods.attribution.sanity import sanity_checks
from edgeproof.results import CheckResult, Figure, Finding

__all__ = ["AttributionCheck", "given_baseline", "methods_for_kind"]


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
        settings = AttributionSettings(
            methods=methods,
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
            baseline=baseline,
        )
        super().__init__(**settings.recorded)
        self._apply(settings)

    def _apply(self, s: AttributionSettings) -> None:
        """Keep the validated settings as the check's attributes (counts as ints, ...)."""
        self.methods = None if s.methods is None else tuple(s.methods)
        self.max_samples: SampleSetting = s.max_samples
        self.sanity_samples: int | Literal["auto"] = s.sanity_samples
        self.ig = s.ig
        self.smoothgrad_samples = int(s.smoothgrad_samples)
        self.smoothgrad_sigma = float(s.smoothgrad_sigma)
        self.gradient_shap = s.gradient_shap
        self.background_size = int(s.background_size)
        self.occlusion_window = s.occlusion_window
        self.occlusion_stride = s.occlusion_stride
        self.kernel_shap_samples = s.kernel_shap_samples
        self.kernel_shap_max_samples = int(s.kernel_shap_max_samples)
        self.bands = s.bands
        self.sample_rate = s.sample_rate
        self.sanity = bool(s.sanity)
        self.sanity_stages = int(s.sanity_stages)
        self.label_randomization = bool(s.label_randomization)
        self.label_epochs = int(s.label_epochs)
        self.label_samples: int | Literal["auto"] = s.label_samples
        self.threshold = float(s.threshold)
        self.level = float(s.level)
        self.figure_samples = int(s.figure_samples)
        self.internal_batch_size = int(s.internal_batch_size)
        self.forward_batch_size = s.forward_batch_size
        self.target = None if s.target is None else int(s.target)
        self.baseline = s.baseline

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
        res = self.new_result()
        k = spec.num_classes if spec.num_classes is not None else data.num_classes
        check_logits(ctx.clean_logits(), k, ctx.model.name)
        check_domain(data.x, spec, data.name)
        model, torch_model = forward_model(ctx, self.internal_batch_size)
        names = self.methods or methods_for_kind(spec.kind)
        count, n_sanity = self._counts(ctx, names, tuple(data.x.shape[1:]), len(data))
        res.settings.update(samples_rule=count.rule, sanity_samples_used=n_sanity)
        note = count.finding(self.name, "max_samples", "records")
        if note is not None:
            res.findings.append(note)
        inputs = explained_inputs(
            ctx,
            data,
            count.n,
            k,
            target=self.target,
            baseline=self.baseline,
            background_size=self.background_size,
            sample_rate=self.sample_rate,
        )
        ctx.progress.start(len(names), "attribution")
        runs = [self._attribute(ctx, name, model, torch_model, inputs) for name in names]
        label_n = (
            self.label_samples
            if self.label_samples != AUTO
            else (64 if count.limited_by_budget else 128)
        )
        can_test, labels = self._sanity_plan(ctx, torch_model, data.x, data.y, res, label_n)
        if can_test and torch_model is not None and any(r.attribution for r in runs):
            self._run_sanity(ctx, runs, torch_model, inputs, n_sanity, labels, res)
        self._report(res, ctx, runs, inputs, spec.kind, spec.class_names, data)
        return res

    # --- pieces -----------------------------------------------------------------------------

    def _attribute(
        self,
        ctx: AuditContext,
        name: str,
        model: Forward,
        torch_model: nn.Module | None,
        inputs: ExplainedInputs,
    ) -> MethodRun:
        """Method ``name`` on the samples (KernelSHAP on the first ``kernel_shap_max_samples``),
        or why it cannot run on this model or data."""
        run = MethodRun(name)
        if name in _GRADIENT and torch_model is None:
            run.skipped = f"needs gradients, which {ctx.model.described} does not provide"
            return run
        if name == "frequency_occlusion" and ctx.threat.input.kind != "timeseries":
            run.skipped = "frequency occlusion explains time series (time on the last axis)"
            return run
        x, target = inputs.x, inputs.target
        method = self._method(name, inputs.shape, inputs.width, inputs.rate)
        base = baseline_for(method, inputs.baseline, inputs.background)
        cap = self.kernel_shap_max_samples if name == "kernel_shap" else x.shape[0]
        t0 = time.perf_counter()
        run.attribution = method.attribute(
            model, x[:cap], target=target[:cap], baseline=base, generator=ctx.generator(17)
        )
        run.seconds = time.perf_counter() - t0
        ctx.progress.advance()
        return run

    def _run_sanity(
        self,
        ctx: AuditContext,
        runs: list[MethodRun],
        torch_model: nn.Module,
        inputs: ExplainedInputs,
        n_sanity: int,
        labels: tuple[torch.Tensor, torch.Tensor] | None,
        res: CheckResult,
    ) -> None:
        """The randomisation tests of every method that ran, on the first ``n_sanity``
        samples; each run gets its verdict."""
        ns = min(n_sanity, inputs.x.shape[0])
        xs, ts = inputs.x[:ns], inputs.target[:ns]
        explainers = {}
        for run in runs:
            if run.attribution is None:
                continue
            method = self._sanity_method(run.name, inputs.shape, inputs.width, inputs.rate)
            base = baseline_for(method, inputs.baseline, inputs.background)
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
        runs: list[MethodRun],
        inputs: ExplainedInputs,
        kind: str,
        class_names: tuple[str, ...] | None,
        data: Dataset,
    ) -> None:
        """Settings, metrics, findings, tables, figures and summary of the runs."""
        x, target = inputs.x, inputs.target
        ran = [r for r in runs if r.attribution is not None]
        tested = [r for r in ran if r.verdict is not None]
        flagged = [r for r in tested if r.verdict is not None and not r.verdict.depends_on_weights]
        res.settings.update(
            samples=int(x.shape[0]),
            sample_index=inputs.index.tolist(),
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
        res.metrics.append(flagged_metric(tested, flagged, self.threshold))
        res.findings += skipped_findings(runs)
        metrics, findings = delta_metrics(ran, level=self.level, seed=ctx.seed, ig=self.ig)
        res.metrics += metrics + rank_correlation_metrics(tested)
        res.findings += findings + sanity_findings(tested)
        res.tables.append(methods_table(runs))
        if tested:
            res.tables.append(sanity_table(tested))
        shown = [r for r in ran if r not in flagged]
        res.figures.extend(
            self._figures(shown, x, target, kind, class_names, data.metadata.get("features"))
        )
        res.summary = summary(ran, tested, flagged, int(x.shape[0]))

    # --- figures ----------------------------------------------------------------------------

    def _figures(
        self,
        shown: list[MethodRun],
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

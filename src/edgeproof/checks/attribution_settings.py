"""The attribution check's settings: the methods per data kind, and the caller's settings
validated and recorded.

:class:`~edgeproof.checks.attribution.AttributionCheck` states every setting, its default and
its meaning; :class:`AttributionSettings` holds them as given, checks them once (in the order
the check always has: methods, sample counts, SmoothGrad's σ, Integrated Gradients and
GradientSHAP, batch size, target) and keeps how the result records them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np

from edgeproof.checks.budget import AUTO, SampleSetting
from edgeproof.errors import OptionError
from edgeproof.methods.attribution import GradientShap, IntegratedGradients

__all__ = ["AttributionSettings", "methods_for_kind"]

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
#: the methods that differentiate the model (skipped, with the reason, on a forward-only model)
_GRADIENT = {"integrated_gradients", "smoothgrad", "gradient_shap"}


def methods_for_kind(kind: str) -> tuple[str, ...]:
    """The methods the check runs by default on data of ``kind``."""
    return _KIND_METHODS.get(kind, _KIND_METHODS["image"])


@dataclass(frozen=True, eq=False)
class AttributionSettings:
    """The settings of one :class:`~edgeproof.checks.attribution.AttributionCheck`, as given
    (their defaults and meaning are the check's), validated on construction.

    Attributes beside the settings:
        recorded: the settings as the check's result records them (``methods`` as a list, the
            baseline as a number or its shape and range), taken before any validation.
        ig: the Integrated Gradients method of these settings.
        gradient_shap: the GradientSHAP method of these settings.
    """

    methods: Sequence[str] | None
    max_samples: SampleSetting
    sanity_samples: int | Literal["auto"]
    ig_steps: int
    ig_tolerance: float | None
    ig_max_steps: int
    ig_rule: str
    smoothgrad_samples: int
    smoothgrad_sigma: float
    gradient_shap_samples: int
    background_size: int
    occlusion_window: int | None
    occlusion_stride: int | None
    kernel_shap_samples: int | None
    kernel_shap_max_samples: int
    bands: int | Sequence[tuple[float, float]]
    sample_rate: float | None
    sanity: bool
    sanity_stages: int
    label_randomization: bool
    label_epochs: int
    label_samples: int | Literal["auto"]
    threshold: float
    level: float
    figure_samples: int
    internal_batch_size: int
    forward_batch_size: int | None
    target: int | None
    baseline: float | np.ndarray | None
    recorded: dict[str, Any] = field(init=False, repr=False, compare=False)
    ig: IntegratedGradients = field(init=False, repr=False, compare=False)
    gradient_shap: GradientShap = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        recorded = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        recorded["methods"] = None if self.methods is None else list(self.methods)
        recorded["baseline"] = None if self.baseline is None else _baseline_setting(self.baseline)
        object.__setattr__(self, "recorded", recorded)
        self._check_methods_and_counts()
        object.__setattr__(
            self,
            "ig",
            IntegratedGradients(
                n_steps=self.ig_steps,
                rule=self.ig_rule,  # type: ignore[arg-type]
                tolerance=self.ig_tolerance,
                max_steps=max(self.ig_max_steps, self.ig_steps),
                internal_batch_size=self.internal_batch_size,
            ),
        )
        object.__setattr__(
            self,
            "gradient_shap",
            GradientShap(
                n_samples=self.gradient_shap_samples,
                internal_batch_size=self.internal_batch_size,
            ),
        )
        self._check_batch_and_target()

    def _check_methods_and_counts(self) -> None:
        """An :class:`OptionError` for an unknown method, a count below 1 or SmoothGrad's σ
        not above 0."""
        known = {n for names in _KIND_METHODS.values() for n in names}
        for m in self.methods or ():
            if m not in known:
                raise OptionError(
                    "methods", f"unknown method {m!r}", f"choose from {', '.join(sorted(known))}"
                )
        for name, value in (
            ("max_samples", 64 if self.max_samples in (AUTO, None) else self.max_samples),
            ("sanity_samples", 16 if self.sanity_samples == AUTO else self.sanity_samples),
            ("background_size", self.background_size),
            ("sanity_stages", self.sanity_stages),
            ("label_samples", 128 if self.label_samples == AUTO else self.label_samples),
            ("kernel_shap_max_samples", self.kernel_shap_max_samples),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptionError(name, f"{value!r} is too few", "use an integer >= 1")
        if not self.smoothgrad_sigma > 0:
            raise OptionError(
                "smoothgrad_sigma", f"{self.smoothgrad_sigma} must be > 0", "use e.g. 0.15"
            )

    def _check_batch_and_target(self) -> None:
        """An :class:`OptionError` for a forward batch below 1 or a target that is no class."""
        fbs = self.forward_batch_size
        if fbs is not None and fbs < 1:
            raise OptionError("forward_batch_size", f"{fbs} is too few", "use >= 1 or None")
        target = self.target
        if target is not None and (
            isinstance(target, bool) or not isinstance(target, (int, np.integer)) or target < 0
        ):
            raise OptionError("target", f"{target!r} is not a class index", "use e.g. 0")


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

"""Attributions: which input elements (or frequency bands) a class score depends on, and whether
the explanation depends on the model at all.

One module per method family:

* :mod:`~.integrated_gradients` — Integrated Gradients (Gauss–Legendre and Riemann rules, δ per
  sample, adaptive step count);
* :mod:`~.smoothgrad` — SmoothGrad; :mod:`~.gradient_shap` — GradientSHAP (expected gradients);
* :mod:`~.occlusion` — sliding-window occlusion and feature-group ablation;
* :mod:`~.kernel_shap` — KernelSHAP (Shapley kernel, constrained least squares);
* :mod:`~.frequency` — frequency-band occlusion for time series and audio;
* :mod:`~.sanity` — Adebayo et al.'s sanity checks (cascading model randomisation, label
  randomisation) with rank correlations and verdicts.

Methods are registered by name; :func:`explain` is the one-call entry point (the future
``edgeproof explain`` command)::

    att = explain(model, x, method="integrated_gradients", n_steps=64, tolerance=0.01)
    att.values, att.delta, att.n_steps
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from edgeproof.errors import OptionError
from edgeproof.methods.attribution.base import (
    Attribution,
    AttributionMethod,
    Band,
    BaselineLike,
    Forward,
    Output,
    TargetLike,
)
from edgeproof.methods.attribution.frequency import FrequencyOcclusion, make_bands
from edgeproof.methods.attribution.gradient_shap import GradientShap, GradientShapDraws
from edgeproof.methods.attribution.integrated_gradients import RULES, IntegratedGradients, Rule
from edgeproof.methods.attribution.kernel_shap import KernelShap
from edgeproof.methods.attribution.occlusion import FeatureAblation, Occlusion
from edgeproof.methods.attribution.smoothgrad import SmoothGrad

__all__ = [
    "RULES",
    "Attribution",
    "AttributionMethod",
    "Band",
    "FeatureAblation",
    "FrequencyOcclusion",
    "GradientShap",
    "GradientShapDraws",
    "IntegratedGradients",
    "KernelShap",
    "Occlusion",
    "Output",
    "Rule",
    "SmoothGrad",
    "explain",
    "get_method",
    "make_bands",
    "method_names",
    "register_method",
]

_METHODS: dict[str, Callable[..., AttributionMethod]] = {
    IntegratedGradients.name: IntegratedGradients,
    SmoothGrad.name: SmoothGrad,
    GradientShap.name: GradientShap,
    Occlusion.name: Occlusion,
    FeatureAblation.name: FeatureAblation,
    KernelShap.name: KernelShap,
    FrequencyOcclusion.name: FrequencyOcclusion,
}


def register_method(name: str, factory: Callable[..., AttributionMethod]) -> None:
    """Register an attribution method class (or factory) under ``name``; a later one replaces it."""
    _METHODS[name] = factory


def method_names() -> list[str]:
    """Names of the registered attribution methods."""
    return list(_METHODS)


def get_method(name: str, **settings: Any) -> AttributionMethod:
    """Build the registered method ``name`` with ``settings`` (its constructor's arguments)."""
    try:
        factory = _METHODS[name]
    except KeyError:
        raise OptionError(
            "method", f"unknown attribution method {name!r}", f"choose from {', '.join(_METHODS)}"
        ) from None
    try:
        return factory(**settings)
    except TypeError as exc:  # an unknown setting: name it, as the constructor's own errors do
        raise OptionError(
            "settings", f"{name}: {exc}", "see the method's documentation for its settings"
        ) from None


def explain(
    model: Forward,
    x: torch.Tensor | np.ndarray,
    *,
    target: TargetLike = None,
    method: str = "integrated_gradients",
    baseline: BaselineLike = None,
    seed: int = 0,
    **settings: Any,
) -> Attribution:
    """Attributions of ``model``'s target score for the batch ``x`` with one method.

    Args:
        model: an ``nn.Module`` (required by the gradient methods) or any callable
            ``Tensor (batch, *shape) -> logits (batch, K)`` (occlusion, feature ablation,
            KernelSHAP and frequency occlusion).
        x: inputs ``(N, *shape)`` in the raw domain.
        target: one class for all samples, one per sample, or ``None`` (the predicted class).
        method: a registered name (:func:`method_names`).
        baseline: what the method compares with — one reference input (or one per sample) for
            IG, occlusion and feature ablation; a distribution ``(B, *shape)`` for GradientSHAP
            and KernelSHAP; none for SmoothGrad and frequency occlusion. ``None``: zeros.
        seed: seeds the method's random draws (SmoothGrad, GradientSHAP, KernelSHAP).
        **settings: the method's constructor settings (``n_steps``, ``rule``, ``tolerance``,
            ``n_samples``, ``sigma``, ``window``, ``strides``, ``groups``, ``bands``,
            ``internal_batch_size``, ``output``, …).

    Raises:
        OptionError: an unknown method or setting, or a setting out of range.
        SpecError: inputs without a batch dimension, or a model that does not return logits.
    """
    m = get_method(method, **settings)
    if m.needs_gradients and not isinstance(model, torch.nn.Module):
        raise OptionError(
            "method",
            f"{method} needs gradients, which a {type(model).__name__} does not provide",
            "give a torch.nn.Module, or use a gradient-free method "
            "(occlusion, feature_ablation, kernel_shap, frequency_occlusion)",
        )
    g = torch.Generator()
    g.manual_seed(int(seed))
    return m.attribute(model, x, target=target, baseline=baseline, generator=g)

"""What the attribution check explains: the model the methods call, the seeded samples and
their targets, and the baselines (the caller's, or the per-kind default) and background."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgeproof.checks.base import AuditContext
from edgeproof.data.dataset import Dataset
from edgeproof.errors import OptionError
from edgeproof.methods.attacks.base import frozen_copy
from edgeproof.methods.attribution import AttributionMethod
from edgeproof.methods.attribution.base import Forward

__all__ = [
    "ExplainedInputs",
    "baseline_for",
    "default_baseline",
    "explained_inputs",
    "forward_model",
    "given_baseline",
]


@dataclass(frozen=True)
class ExplainedInputs:
    """The samples the methods explain, their targets, the baselines and the sample rate.

    Attributes:
        x: the samples ``(N, *shape)``, a seeded subset of the data.
        target: ``(N,)`` the class explained for each sample.
        index: positions of the samples in the dataset.
        baseline: the point baseline, one sample of the input shape.
        background: baselines drawn from the data (GradientSHAP, KernelSHAP).
        rate: the sample rate in Hz (frequency occlusion), if known.
        width: the width of the input domain.
    """

    x: torch.Tensor
    target: torch.Tensor
    index: np.ndarray
    baseline: torch.Tensor
    background: torch.Tensor
    rate: float | None
    width: float

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


def forward_model(ctx: AuditContext, batch_size: int) -> tuple[Forward, nn.Module | None]:
    """What the methods call, and the frozen module (``None`` for a forward-only model, which
    is called through its ``predict_logits`` in batches of ``batch_size``)."""
    module = ctx.model.module
    if module is not None:
        torch_model = frozen_copy(module)
        return torch_model, torch_model
    loaded = ctx.model

    def model(t: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(loaded.predict_logits(t.detach().numpy(), batch_size))

    return model, None


def explained_inputs(
    ctx: AuditContext,
    data: Dataset,
    count: int,
    k: int,
    *,
    target: int | None,
    baseline: float | np.ndarray | None,
    background_size: int,
    sample_rate: float | None,
) -> ExplainedInputs:
    """A seeded subset of ``count`` samples (seed ``ctx.seed``), explained for the predicted
    class or ``target``; the caller's ``baseline`` or the per-kind default; a background of
    ``background_size`` samples drawn next from the same generator; the sample rate, or the
    data's ``sample_rate_hz`` metadata."""
    spec = ctx.threat.input
    rng = np.random.default_rng(ctx.seed)
    n = len(data)
    index = np.sort(rng.choice(n, size=count, replace=False))
    x = torch.from_numpy(np.ascontiguousarray(data.x[index]))
    logits = torch.from_numpy(ctx.clean_logits()[index])
    targets = logits.argmax(dim=1)
    if target is not None:
        if target >= k:
            raise OptionError(
                "target",
                f"class {target} is outside the model's {k} classes",
                f"use a class index in 0..{k - 1}, or leave it unset (the predicted class)",
            )
        targets = torch.full_like(targets, target)
    shape = tuple(x.shape[1:])
    lo, hi = spec.domain
    point = (
        default_baseline(spec.kind, data.x, shape, spec.domain)
        if baseline is None
        else given_baseline(baseline, shape)
    )
    bg_index = rng.choice(n, size=min(n, background_size), replace=False)
    background = torch.from_numpy(np.ascontiguousarray(data.x[bg_index]))
    rate = sample_rate
    if rate is None and isinstance(data.metadata.get("sample_rate_hz"), (int, float)):
        rate = float(data.metadata["sample_rate_hz"])
    return ExplainedInputs(x, targets, index, point, background, rate, hi - lo)


def default_baseline(
    kind: str, xs: np.ndarray, shape: tuple[int, ...], domain: tuple[float, float]
) -> torch.Tensor:
    """The per-kind baseline: the per-feature mean of the data (tabular), the zero signal
    clipped into the domain (time series), the low end of the domain (images)."""
    lo, hi = domain
    if kind == "tabular":
        return torch.from_numpy(xs.mean(axis=0).astype(np.float32))
    if kind == "timeseries":
        return torch.full(shape, float(min(max(0.0, lo), hi)))
    return torch.full(shape, float(lo))


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


def baseline_for(
    method: AttributionMethod, point: torch.Tensor, distribution: torch.Tensor
) -> torch.Tensor | None:
    """The baseline ``method`` takes: the distribution, the point, or none."""
    if method.baseline_kind == "distribution":
        return distribution
    if method.baseline_kind == "point":
        return point
    return None

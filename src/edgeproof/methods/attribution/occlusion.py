"""Occlusion (sliding windows) and feature ablation (feature groups): gradient-free attributions.

Both replace part of the input by a baseline and measure the drop of the target score::

    drop_w = f(x) − f(x with the elements of w set to the baseline)

* **Occlusion** (Zeiler & Fergus 2014, "Visualizing and understanding convolutional networks",
  §4.2): a window slides over the sample with a stride; each element's attribution is the mean
  of the drops of the windows that cover it. Variant followed: Captum 0.9.0's ``Occlusion`` —
  window start positions ``0, s, 2s, …`` per dimension, ``⌈(D − w)/s⌉ + 1`` of them, the last
  window cropped at the edge where ``s`` does not divide ``D − w``; the sum of drops divided by
  the number of windows covering the element.
* **Feature ablation** (Captum's ``FeatureAblation``; for tabular data, "leave one covariate
  out"): disjoint feature groups given by an integer mask of the sample's shape (default: every
  element its own group); every element of a group gets the group's drop.

The model is any callable ``Tensor -> logits`` (an ``nn.Module``, an ONNX Runtime session
wrapped in a function): no gradients are needed. Perturbed copies are evaluated
``internal_batch_size`` rows at a time, mixing samples and windows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from edgeproof.errors import OptionError
from edgeproof.methods.attribution.base import (
    Attribution,
    AttributionMethod,
    BaselineLike,
    Forward,
    Output,
    TargetLike,
    as_batch,
    check_internal_batch_size,
    check_output,
    eval_mode,
    expand_baseline,
    resolve_target,
    scores,
)

__all__ = ["FeatureAblation", "Occlusion", "ablation_drops", "window_slices"]


def _window_dims(value: int | Sequence[int], shape: tuple[int, ...]) -> tuple[int, ...]:
    """Window sizes right-aligned on ``shape``; leading dimensions not given are covered whole.

    ``(3, 3)`` on a ``(C, H, W)`` sample is ``(C, 3, 3)``; an int ``k`` is ``k`` on every
    dimension but the first of a multi-dimensional sample (``(C, k, k)``, ``(C, k)``, ``(k,)``).
    """
    if isinstance(value, (int, np.integer)):
        dims: tuple[int, ...] = (int(value),) * max(1, len(shape) - 1)
    else:
        dims = tuple(int(v) for v in value)
    _check_rank("window", dims, shape)
    return tuple(shape[: len(shape) - len(dims)]) + dims


def _stride_dims(value: int | Sequence[int], shape: tuple[int, ...]) -> tuple[int, ...]:
    """Strides right-aligned on ``shape``; an int applies to every dimension (as in Captum),
    leading dimensions not given take stride 1."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * len(shape)
    dims = tuple(int(v) for v in value)
    _check_rank("strides", dims, shape)
    return (1,) * (len(shape) - len(dims)) + dims


def _check_rank(name: str, dims: tuple[int, ...], shape: tuple[int, ...]) -> None:
    if len(dims) > len(shape) or not dims:
        raise OptionError(
            name,
            f"{list(dims)} has {len(dims)} dimension(s) for samples of shape {list(shape)}",
            f"give 1 to {len(shape)} sizes (right-aligned on the sample's shape)",
        )


def window_slices(
    shape: tuple[int, ...], window: tuple[int, ...], strides: tuple[int, ...]
) -> list[tuple[slice, ...]]:
    """Every window position (Captum's enumeration), as a tuple of slices per dimension."""
    per_dim: list[list[slice]] = []
    for d, w, s in zip(shape, window, strides):
        if not 1 <= w <= d:
            raise OptionError(
                "window", f"size {w} does not fit a dimension of size {d}", f"use 1..{d}"
            )
        if s < 1 or (s > w and d != w):
            raise OptionError(
                "strides",
                f"stride {s} with window {w} would skip elements",
                f"use a stride in 1..{w}",
            )
        count = math.ceil((d - w) / s) + 1
        per_dim.append([slice(k * s, min(d, k * s + w)) for k in range(count)])
    return [tuple(p) for p in itertools.product(*per_dim)]


def ablation_drops(
    model: Forward,
    x: torch.Tensor,
    baseline: torch.Tensor,
    target: torch.Tensor,
    f_x: torch.Tensor,
    masks: Sequence[torch.Tensor | tuple[slice, ...]],
    *,
    output: Output,
    internal_batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``Σ_w drop_w · mask_w`` per sample (float64, shape of ``x``) and ``Σ_w mask_w``.

    ``masks`` are bool tensors of the sample's shape, or slices (windows) that build them.
    """
    n, shape = x.shape[0], tuple(x.shape[1:])
    total = torch.zeros(x.shape, dtype=torch.float64)
    count = torch.zeros(shape, dtype=torch.float64)
    m = len(masks)
    wc = min(m, internal_batch_size)
    sb = max(1, internal_batch_size // wc)
    for w0 in range(0, m, wc):
        chunk = masks[w0 : w0 + wc]
        mk = torch.zeros((len(chunk), *shape), dtype=torch.bool)
        for j, item in enumerate(chunk):
            if isinstance(item, torch.Tensor):
                mk[j] = item
            else:
                mk[j][item] = True
        mflat = mk.reshape(len(chunk), -1).double()
        count += mflat.sum(0).view(shape)
        for i0 in range(0, n, sb):
            idx = torch.arange(i0, min(n, i0 + sb))
            xs = x[idx].unsqueeze(1)
            bs = baseline[idx].unsqueeze(1)
            rows = torch.where(mk.unsqueeze(0), bs, xs).reshape(-1, *shape)
            owner = idx.repeat_interleave(len(chunk))
            f_occ = scores(model, rows, target[owner], output, internal_batch_size)
            drop = f_x[idx].unsqueeze(1) - f_occ.view(len(idx), len(chunk))
            total[idx] += (drop @ mflat).view(len(idx), *shape)
    return total, count


class Occlusion(AttributionMethod):
    """Sliding-window occlusion (Captum's ``Occlusion``).

    Args:
        window: window size per sample dimension (an int, or a tuple right-aligned on the
            sample's shape; leading dimensions not given are covered whole, e.g. all channels).
            Default 3 (``C × 3 × 3`` on images, ``C × 3`` on time series).
        strides: step per dimension, same forms (default 1). Must not exceed the window.
        internal_batch_size: rows per forward pass (default 256).
        output: ``logit`` (default) or ``probability`` of the target class.
    """

    name: ClassVar[str] = "occlusion"
    needs_gradients: ClassVar[bool] = False

    def __init__(
        self,
        *,
        window: int | Sequence[int] = 3,
        strides: int | Sequence[int] = 1,
        internal_batch_size: int = 256,
        output: Output = "logit",
    ) -> None:
        self.window = window if isinstance(window, int) else tuple(int(v) for v in window)
        self.strides = strides if isinstance(strides, int) else tuple(int(v) for v in strides)
        self.internal_batch_size = check_internal_batch_size(internal_batch_size)
        self.output: Output = check_output(output)

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "strides": self.strides,
            "internal_batch_size": self.internal_batch_size,
            "output": self.output,
        }

    def attribute(
        self,
        model: Forward,
        x: torch.Tensor | np.ndarray,
        *,
        target: TargetLike = None,
        baseline: BaselineLike = None,
        generator: torch.Generator | None = None,
    ) -> Attribution:
        """Occlusion maps ``(N, *shape)``; ``baseline`` as in IG (default zeros)."""
        xb = as_batch(x)
        shape = tuple(xb.shape[1:])
        window = _window_dims(self.window, shape)
        strides = _stride_dims(self.strides, shape)
        slices = window_slices(shape, window, strides)
        x0 = expand_baseline(baseline, xb)
        ibs = self.internal_batch_size
        with eval_mode(model):
            t, _ = resolve_target(model, xb, target, ibs)
            f_x = scores(model, xb, t, self.output, ibs)
            total, count = ablation_drops(
                model, xb, x0, t, f_x, slices, output=self.output, internal_batch_size=ibs
            )
        values = torch.where(count > 0, total / count.clamp_min(1.0), 0.0)
        settings = self.settings | {"window": window, "strides": strides, "windows": len(slices)}
        return Attribution(
            method=self.name,
            values=values,
            target=t,
            output=self.output,
            score=f_x,
            evaluations=xb.shape[0] * (len(slices) + 1),
            settings=settings,
        )


class FeatureAblation(AttributionMethod):
    """Feature-group ablation (Captum's ``FeatureAblation``).

    Args:
        groups: integer mask of the sample's shape; elements with the same value form one group
            (values need not be contiguous). ``None`` (default): every element is its own group.
        internal_batch_size: rows per forward pass (default 256).
        output: ``logit`` (default) or ``probability`` of the target class.
    """

    name: ClassVar[str] = "feature_ablation"
    needs_gradients: ClassVar[bool] = False

    def __init__(
        self,
        *,
        groups: torch.Tensor | np.ndarray | None = None,
        internal_batch_size: int = 256,
        output: Output = "logit",
    ) -> None:
        self.groups = None if groups is None else torch.as_tensor(np.asarray(groups))
        self.internal_batch_size = check_internal_batch_size(internal_batch_size)
        self.output: Output = check_output(output)

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "groups": None if self.groups is None else int(self.groups.unique().numel()),
            "internal_batch_size": self.internal_batch_size,
            "output": self.output,
        }

    def masks(self, shape: tuple[int, ...]) -> list[torch.Tensor]:
        """One bool mask per group, in the order of the sorted group values."""
        if self.groups is None:
            d = math.prod(shape)
            eye = torch.eye(d, dtype=torch.bool)
            return [eye[j].view(shape) for j in range(d)]
        if tuple(self.groups.shape) != shape or self.groups.dtype.is_floating_point:
            raise OptionError(
                "groups",
                f"an integer mask of shape {list(self.groups.shape)} does not fit samples of "
                f"shape {list(shape)}",
                f"give integer group labels of shape {list(shape)}",
            )
        return [self.groups == g for g in torch.unique(self.groups)]

    def attribute(
        self,
        model: Forward,
        x: torch.Tensor | np.ndarray,
        *,
        target: TargetLike = None,
        baseline: BaselineLike = None,
        generator: torch.Generator | None = None,
    ) -> Attribution:
        """Group drops ``(N, *shape)``; ``baseline`` as in IG (default zeros)."""
        xb = as_batch(x)
        masks = self.masks(tuple(xb.shape[1:]))
        x0 = expand_baseline(baseline, xb)
        ibs = self.internal_batch_size
        with eval_mode(model):
            t, _ = resolve_target(model, xb, target, ibs)
            f_x = scores(model, xb, t, self.output, ibs)
            total, _ = ablation_drops(
                model, xb, x0, t, f_x, masks, output=self.output, internal_batch_size=ibs
            )
        return Attribution(
            method=self.name,
            values=total,
            target=t,
            output=self.output,
            score=f_x,
            evaluations=xb.shape[0] * (len(masks) + 1),
            settings=self.settings,
        )

"""What every attribution method shares: the result type, targets, baselines and batching.

An attribution method is a small object whose constructor stores its settings (steps, samples,
windows, ``internal_batch_size``) and whose ``attribute(model, x, target=..., ...)`` does the work
and returns a typed :class:`Attribution`.

Conventions, the same for every method (and the same as Captum 0.9.0's, so results compare
number for number):

* inputs ``x`` are a batch ``(N, *shape)`` in the raw value domain (normalisation lives inside the
  model); the model maps a batch to logits ``(batch, K)``;
* the explained quantity is the **target score** of sample ``i``: its logit ``f(x)[t_i]``
  (``output="logit"``, the default, as in Captum) or its softmax probability
  (``output="probability"``);
* the target is one class index per sample; ``None`` means the class the model predicts for the
  sample (arg-max of its logits);
* every forward pass is of at most ``internal_batch_size`` rows (model inputs), whatever ``N``,
  the number of steps, noise samples, windows or coalitions, so memory is bounded by the setting
  (Captum's IG batches whole steps of all ``N`` samples together and cannot go below ``N`` rows,
  captum #245/#538);
* the model is put in eval mode for the call and given back in the mode it came in; parameters
  are not modified and gradients are taken with respect to the input only.

Attribution values are float64: sums of many float32 gradient terms are accumulated in double
precision, so the completeness gap δ measures the method's approximation error, not rounding.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from edgeproof.errors import OptionError, SpecError
from edgeproof.models.modules import set_training
from edgeproof.serialize import JsonFields

__all__ = [
    "Attribution",
    "AttributionMethod",
    "Band",
    "BaselineKind",
    "BaselineLike",
    "Forward",
    "Output",
    "TargetLike",
    "as_batch",
    "check_internal_batch_size",
    "check_output",
    "eval_mode",
    "expand_baseline",
    "resolve_target",
    "scores",
    "target_scores",
]

#: the explained quantity: the target logit, or the target's softmax probability
Output = Literal["logit", "probability"]
#: any callable ``Tensor (batch, *shape) -> logits (batch, K)``: an ``nn.Module``, an ONNX session
#: wrapped in a function, … (gradient-free methods take any of them)
Forward = Callable[[torch.Tensor], torch.Tensor]
#: a class index for every sample, one per sample, or ``None`` (the predicted class)
TargetLike = int | Sequence[int] | np.ndarray | torch.Tensor | None

#: what a method's ``baseline`` argument is: one reference input (or one per sample), a
#: distribution of reference inputs ``(B, *shape)``, or nothing (the method takes none)
BaselineKind = Literal["point", "distribution", "none"]
#: a baseline as a method receives it (see :func:`expand_baseline` / :func:`check_distribution`)
BaselineLike = float | torch.Tensor | np.ndarray | None

_OUTPUTS: tuple[str, ...] = ("logit", "probability")


@dataclass(frozen=True)
class Band(JsonFields):
    """A frequency band ``[low, high)`` in cycles per sample (``0 … 0.5``), and its rFFT bins.

    Attributes:
        low, high: band edges in cycles per sample; the last band of a partition includes the
            Nyquist frequency 0.5.
        bins: the rFFT bin indices ``k`` (frequency ``k / T``) the band masks.
        label: how the band is named in tables and figures (Hz when a sample rate is known).
    """

    low: float
    high: float
    bins: tuple[int, ...]
    label: str


@dataclass(frozen=True)
class Attribution(JsonFields):
    """Attributions of one method for a batch, with what is needed to judge them.

    Attributes:
        method: the method's registry name (``integrated_gradients``, ``smoothgrad``, …).
        values: float64 attributions. Shape ``(N, *shape)`` (one value per input element) for
            every method except frequency-band occlusion, whose values are ``(N, n_bands)`` (or
            ``(N, C, n_bands)`` per channel) and whose :attr:`bands` name the last axis.
        target: ``(N,)`` int64 — the class each sample's attribution explains.
        output: what was explained, ``logit`` or ``probability``.
        score: ``(N,)`` float64 — the target score ``f(x)`` at the input.
        reference_score: ``(N,)`` float64 — the score the attributions are relative to (IG: at
            the baseline, ``f(x0)``; GradientSHAP: the mean of ``f`` over the drawn baselines;
            KernelSHAP: ``E_b f(b)`` over the background; occlusion: ``None``).
        delta: ``(N,)`` float64 completeness gap ``Σ values − (score − reference_score)``, where
            the method promises completeness (IG, GradientSHAP, KernelSHAP); else ``None``.
        n_steps: ``(N,)`` int64 — integration steps of each sample's final estimate (IG).
        converged: ``(N,)`` bool — ``|δ|`` met the tolerance (adaptive IG only).
        evaluations: model rows evaluated in total (forward passes counted per input row;
            gradient methods add one backward per row).
        bands: for frequency-band occlusion, the bands along the last axis of ``values``.
        settings: the method's settings (everything needed to reproduce the numbers).
    """

    method: str
    values: torch.Tensor
    target: torch.Tensor
    output: Output
    score: torch.Tensor
    reference_score: torch.Tensor | None = None
    delta: torch.Tensor | None = None
    n_steps: torch.Tensor | None = None
    converged: torch.Tensor | None = None
    evaluations: int = 0
    bands: tuple[Band, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)

    #: what was explained comes second, before the numbers
    json_order = ("method", "output", ...)

    @property
    def num_samples(self) -> int:
        return int(self.values.shape[0])

    @property
    def relative_delta(self) -> torch.Tensor | None:
        """``|δ| / |score − reference_score|`` per sample (``None`` without δ; inf where the
        score does not change and δ ≠ 0, 0 where both are 0)."""
        if self.delta is None or self.reference_score is None:
            return None
        change = (self.score - self.reference_score).abs()
        gap = self.delta.abs()
        flat = torch.where(gap > 0, torch.inf, 0.0).to(gap.dtype)
        return torch.where(change > 0, gap / change.clamp_min(1e-300), flat)

    def summary(self) -> str:
        """One line: method, samples, and δ where the method has one."""
        text = f"{self.method}: {self.num_samples} sample(s), {self.output} of the target"
        rel = self.relative_delta
        if self.delta is not None and rel is not None and self.num_samples:
            text += (
                f"; median |δ| {float(self.delta.abs().median()):.3g} "
                f"({float(rel.median()):.3g} of |f(x) − f(ref)|)"
            )
        if self.n_steps is not None and self.num_samples:
            text += f"; steps {int(self.n_steps.min())}–{int(self.n_steps.max())}"
        return text


class AttributionMethod(ABC):
    """Base class of the attribution methods: settings in the constructor, work in
    :meth:`attribute`.

    Class flags: ``name`` (registry name), ``needs_gradients`` (the model must be a
    differentiable ``nn.Module``; otherwise any :data:`Forward` callable works),
    ``baseline_kind`` (what ``baseline`` means for the method), ``has_delta`` (the result carries
    a completeness gap δ).
    """

    name: ClassVar[str]
    needs_gradients: ClassVar[bool] = False
    baseline_kind: ClassVar[BaselineKind] = "point"
    has_delta: ClassVar[bool] = False

    @property
    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The settings that reproduce the numbers (recorded in every result)."""

    @abstractmethod
    def attribute(
        self,
        model: Any,
        x: torch.Tensor | np.ndarray,
        *,
        target: TargetLike = None,
        baseline: BaselineLike = None,
        generator: torch.Generator | None = None,
    ) -> Attribution:
        """Attributions for the batch ``x`` (``(N, *shape)``, raw domain)."""

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.settings.items())
        return f"{type(self).__name__}({inner})"


def check_output(output: str) -> Output:
    if output not in _OUTPUTS:
        raise OptionError(
            "output", f"unknown output {output!r}", f"use one of {', '.join(_OUTPUTS)}"
        )
    return output  # type: ignore[return-value]


def check_internal_batch_size(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise OptionError(
            "internal_batch_size",
            f"{value!r} is not a positive number of rows",
            "use e.g. 256 (rows per forward pass; lower it if memory runs out)",
        )
    return int(value)


def refuse_baseline(method: str, baseline: BaselineLike) -> None:
    """Methods without a baseline refuse one instead of ignoring it."""
    if baseline is not None:
        raise OptionError(
            "baseline",
            f"{method} takes no baseline",
            "leave baseline=None (the method defines its own reference)",
        )


def check_positive_int(name: str, value: int, minimum: int = 1, fix: str = "") -> int:
    """``value`` as an int ``>= minimum``, else an :class:`OptionError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise OptionError(name, f"{value!r} must be an integer >= {minimum}", fix or "")
    return int(value)


def as_batch(x: torch.Tensor | np.ndarray, name: str = "x") -> torch.Tensor:
    """``x`` as a float32 tensor with a batch dimension, finite, detached."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach()
    if t.dim() < 2:
        raise SpecError(
            f"{name}: inputs of shape {list(t.shape)} have no batch dimension; give a batch "
            "(N, *shape), e.g. x[None] for one sample"
        )
    if t.shape[0] == 0:
        raise SpecError(f"{name}: the batch is empty; give at least one sample")
    t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise SpecError(f"{name}: the inputs contain NaN or Inf; give finite inputs")
    return t


@contextmanager
def eval_mode(model: Forward) -> Iterator[None]:
    """Run ``model`` in eval mode (BatchNorm statistics, no dropout); restore its mode after."""
    if not isinstance(model, nn.Module):
        yield
        return
    was = model.training
    set_training(model, False)
    try:
        yield
    finally:
        set_training(model, was)


def _check_logits(out: torch.Tensor, rows: int) -> None:
    if out.dim() != 2 or out.shape[0] != rows:
        raise SpecError(
            f"the model returns outputs of shape {list(out.shape)} for {rows} inputs; attributions "
            f"explain a class score, so the model must return logits of shape [{rows}, K]"
        )


def target_scores(logits: torch.Tensor, target: torch.Tensor, output: Output) -> torch.Tensor:
    """The target score of each row: ``logits[i, target[i]]`` or its softmax probability."""
    if output == "probability":
        logits = torch.softmax(logits, dim=1)
    return logits.gather(1, target.view(-1, 1)).squeeze(1)


def scores(
    model: Forward,
    x: torch.Tensor,
    target: torch.Tensor,
    output: Output,
    batch_size: int,
) -> torch.Tensor:
    """Target scores (float64) of rows ``x`` with targets ``target`` (one per row), batched."""
    out: list[torch.Tensor] = []
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size]
            logits = torch.as_tensor(model(xb))
            _check_logits(logits, xb.shape[0])
            out.append(target_scores(logits.double(), target[i : i + batch_size], output))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def resolve_target(
    model: Forward, x: torch.Tensor, target: TargetLike, batch_size: int
) -> tuple[torch.Tensor, int]:
    """Targets ``(N,)`` int64 and the number of classes K.

    ``None`` → the predicted class of each sample. An int → that class for every sample; a
    sequence → one class per sample. Raises :class:`OptionError` (parameter ``target``) for a
    class outside ``[0, K)`` or a wrong count.
    """
    n = x.shape[0]
    logits: list[torch.Tensor] = []
    with torch.no_grad():
        first = torch.as_tensor(model(x[: min(n, batch_size)]))
        _check_logits(first, min(n, batch_size))
        k = int(first.shape[1])
        if target is None:
            logits.append(first)
            for i in range(batch_size, n, batch_size):
                logits.append(torch.as_tensor(model(x[i : i + batch_size])))
            return torch.cat(logits).argmax(dim=1).to(torch.int64), k
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        t = torch.full((n,), int(target), dtype=torch.int64)
    else:
        arr = np.asarray(target.cpu() if isinstance(target, torch.Tensor) else target)
        if arr.ndim != 1 or arr.shape[0] != n or not np.issubdtype(arr.dtype, np.integer):
            raise OptionError(
                "target",
                f"got {arr.shape[0] if arr.ndim == 1 else list(arr.shape)} value(s) of type "
                f"{arr.dtype} for {n} samples",
                "give one class index for all samples, one integer per sample, or None "
                "(the predicted class)",
            )
        t = torch.from_numpy(arr.astype(np.int64))
    bad = (t < 0) | (t >= k)
    if bool(bad.any()):
        first_bad = int(t[bad][0])
        raise OptionError(
            "target",
            f"class {first_bad} is outside the model's {k} classes",
            f"use a class index in 0..{k - 1}, or None for the predicted class",
        )
    return t, k


def expand_baseline(
    baseline: float | torch.Tensor | np.ndarray | None,
    x: torch.Tensor,
    name: str = "baseline",
) -> torch.Tensor:
    """The baseline as a float32 tensor of ``x``'s shape ``(N, *shape)``.

    Accepted: ``None`` (zeros, Captum's default), a number (that value everywhere), one sample
    ``(*shape)`` (the same baseline for every input), or one baseline per input ``(N, *shape)``.
    Anything else is an :class:`OptionError` naming ``name``.
    """
    if baseline is None:
        return torch.zeros_like(x)
    if isinstance(baseline, (int, float, np.floating, np.integer)) and not isinstance(
        baseline, bool
    ):
        return torch.full_like(x, float(baseline))
    b = torch.as_tensor(
        np.asarray(baseline) if not isinstance(baseline, torch.Tensor) else baseline
    ).detach()
    b = b.to(torch.float32)
    shape = tuple(x.shape[1:])
    if tuple(b.shape) == shape:
        b = b.unsqueeze(0).expand_as(x)
    elif tuple(b.shape) != tuple(x.shape):
        raise OptionError(
            name,
            f"shape {list(b.shape)} does not fit inputs of shape {list(x.shape)}",
            f"give a number, one baseline of shape {list(shape)}, or one per input of shape "
            f"{list(x.shape)}",
        )
    if not bool(torch.isfinite(b).all()):
        raise OptionError(name, "contains NaN or Inf", "give a finite baseline")
    return b.contiguous()


def check_distribution(
    baselines: torch.Tensor | np.ndarray | None, x: torch.Tensor, name: str
) -> torch.Tensor:
    """A baseline distribution ``(B, *shape)`` (or one baseline ``(*shape)``) as float32."""
    shape = tuple(x.shape[1:])
    if baselines is None:
        return torch.zeros((1, *shape), dtype=torch.float32)
    b = torch.as_tensor(
        np.asarray(baselines) if not isinstance(baselines, torch.Tensor) else baselines
    ).detach()
    b = b.to(torch.float32)
    if tuple(b.shape) == shape:
        b = b.unsqueeze(0)
    if b.dim() != len(shape) + 1 or tuple(b.shape[1:]) != shape or b.shape[0] == 0:
        raise OptionError(
            name,
            f"shape {list(b.shape)} does not fit inputs of shape {list(x.shape)}",
            f"give baselines of shape [B, {', '.join(str(s) for s in shape)}] (B >= 1)",
        )
    if not bool(torch.isfinite(b).all()):
        raise OptionError(name, "contains NaN or Inf", "give finite baselines")
    return b.contiguous()

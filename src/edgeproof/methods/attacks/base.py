"""What every attack shares: the perturbation budget, the result type, and the model under attack.

An attack is a small object whose constructor stores its algorithm settings (steps, restarts, …)
and whose :meth:`Attack.perturb` does the work on one batch, within a :class:`Budget` (norm, ε,
input domain). ε may differ per sample (a 1-D tensor), which is what the minimal-ε bisection
needs.

Conventions (the same as torchattacks 3.5.1 and AutoAttack): the model is in eval mode, inputs are
in the raw value domain (normalisation lives inside the model), adversarial inputs are projected
onto the ε-ball around the clean input and then clipped to the domain ``[lo, hi]``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from edgeproof.errors import OptionError, SpecError, param
from edgeproof.models.modules import frozen_copy
from edgeproof.spec import InputSpec, Norm, ThreatModel

__all__ = [
    "Attack",
    "AttackResult",
    "Budget",
    "Forward",
    "as_layout",
    "check_domain",
    "check_logits",
    "frozen_copy",
    "input_layout",
    "misclassified",
    "with_restarts",
]

_NORMS = ("linf", "l2")

#: what a forward-only attack calls: a batch of raw inputs to a ``(batch, K)`` logits tensor (an
#: ``nn.Module``, or :func:`edgeproof.runtime.ort.session_forward` over an ONNX Runtime session)
Forward = Callable[[torch.Tensor], torch.Tensor]


def diameter(norm: str, domain: tuple[float, float], numel: int) -> float:
    """The largest perturbation that can change anything inside the box ``[lo, hi]^d``."""
    width = domain[1] - domain[0]
    return width * math.sqrt(numel) if norm == "l2" else width


@dataclass(frozen=True)
class Budget:
    """The attacker's budget for one attack call.

    Attributes:
        norm: ``linf`` or ``l2``.
        eps: one ε for every sample (a float) or one per sample (a 1-D tensor), in the units of
            the domain.
        domain: ``(lo, hi)``; adversarial inputs are clipped to it.
    """

    norm: Norm
    eps: float | torch.Tensor
    domain: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.norm not in _NORMS:
            raise OptionError(
                "norm", f"unknown norm {self.norm!r}", f"use one of {', '.join(_NORMS)}"
            )
        lo, hi = self.domain
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            raise SpecError(
                f"input domain {self.domain!r} is invalid: need finite lo < hi "
                f"(e.g. {param('domain')} 0,1)"
            )
        values = (
            self.eps.detach().double().reshape(-1)
            if isinstance(self.eps, torch.Tensor)
            else torch.tensor([float(self.eps)], dtype=torch.float64)
        )
        if (
            values.numel() == 0
            or not bool(torch.isfinite(values).all())
            or bool((values <= 0).any())
        ):
            raise OptionError("eps", f"ε={self.eps} must be positive finite number(s)")

    @classmethod
    def from_threat(cls, threat: ThreatModel, eps: float | torch.Tensor) -> Budget:
        """The budget for one ε of ``threat`` (its norm and domain)."""
        return cls(norm=threat.norm, eps=eps, domain=threat.input.domain)

    def eps_per_sample(self, n: int) -> torch.Tensor:
        """ε as a float64 tensor of shape ``(n,)``."""
        if isinstance(self.eps, torch.Tensor):
            e = self.eps.detach().to(torch.float64).reshape(-1)
            if e.numel() == 1:
                return e.expand(n).clone()
            if e.numel() != n:
                raise ValueError(f"Budget has {e.numel()} per-sample ε values for {n} samples")
            return e.clone()
        return torch.full((n,), float(self.eps), dtype=torch.float64)

    def check_within_diameter(self, numel: int) -> None:
        """Raise :class:`OptionError` if any ε exceeds the domain's diameter in this norm."""
        limit = diameter(self.norm, self.domain, numel)
        top = float(self.eps.max()) if isinstance(self.eps, torch.Tensor) else float(self.eps)
        if top > limit * (1 + 1e-9):
            raise OptionError(
                "eps",
                f"ε={top:g} exceeds the {self.norm} diameter {limit:g} of the input domain "
                f"{list(self.domain)}",
                "give ε in the units of the domain (e.g. 8/255 for images in [0,1])",
            )


@dataclass(frozen=True)
class AttackResult:
    """Adversarial inputs for one batch and whether each fooled the model.

    Attributes:
        x_adv: adversarial inputs, same shape as the clean batch, inside the budget.
        success: ``(N,)`` bool — the model's top-1 prediction on ``x_adv`` differs from the label.
        queries: ``(N,)`` int64 — model queries spent on each sample, for attacks that count
            them (score-based ones such as Square); ``None`` for the others.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    queries: torch.Tensor | None = None


class Attack(ABC):
    """Base class of the attacks: settings in the constructor, work in :meth:`perturb`.

    ``needs_gradients`` says whether the attack differentiates the model (then ``model`` must be
    an ``nn.Module``); an attack that sets it to False only calls ``model`` on batches of inputs,
    so any :data:`Forward` callable will do (an ONNX Runtime session, a quantized graph).
    """

    name: ClassVar[str]
    needs_gradients: ClassVar[bool] = True

    @abstractmethod
    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        budget: Budget,
        *,
        generator: torch.Generator | None = None,
    ) -> AttackResult:
        """Attack one batch ``x`` (raw domain) with labels ``y`` within ``budget``."""


RunOnce = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def with_restarts(
    restarts: int, run: RunOnce, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor
) -> AttackResult:
    """Attack the whole batch once, then re-attack only the samples not yet fooled.

    ``run(x, y, eps) -> (x_adv, fooled)`` must return buffers it owns (never a view of ``x``):
    the first run's buffers collect the later runs' results.
    """
    x_out, fooled = run(x, y, eps)
    for _ in range(restarts - 1):
        todo = (~fooled).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        adv, ok = run(x[todo], y[todo], eps[todo])
        x_out[todo] = adv
        fooled[todo] = ok
    return AttackResult(x_out.contiguous(), fooled)


def misclassified(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: the top-1 prediction of ``model`` on ``x`` is not ``y``."""
    with torch.no_grad():
        out: torch.Tensor = model(x).argmax(dim=1) != y
    return out


def check_logits(logits: np.ndarray | torch.Tensor, num_classes: int, model_name: str) -> None:
    """Raise :class:`SpecError` unless ``logits`` has shape ``(batch, num_classes)``."""
    shape = tuple(int(s) for s in logits.shape)
    if len(shape) != 2 or shape[1] != num_classes:
        raise SpecError(
            f"{model_name}: the model returns outputs of shape {list(shape)}, but logits of the "
            f"{num_classes} declared classes must have shape [batch, {num_classes}]; give a model "
            "whose last layer outputs one logit per class, or data labelled for this model"
        )


def check_domain(x: np.ndarray, spec: InputSpec, data_name: str) -> None:
    """Raise :class:`SpecError` if the clean inputs leave the input domain.

    Attacks and corruptions clip to the domain, so a clean input outside it would be changed by
    the clipping alone, and ε would be measured in the wrong units. The advice depends on where
    the domain came from (:class:`~edgeproof.spec.DomainViolation`).
    """
    violation = spec.domain_violation(x)
    if violation is not None:
        raise SpecError(
            violation.message(data_name) + "; attacks and corruptions clip to the domain"
        )


def input_layout(model: nn.Module, x: torch.Tensor) -> torch.memory_format:
    """The memory layout in which to feed ``x`` to ``model`` during a gradient attack.

    ``channels_last`` (NHWC) for a batch of images into a model with 2-D convolutions: PyTorch's
    CPU (oneDNN) convolutions and pooling then run without layout conversions, which makes a
    forward+backward about 30 % cheaper at one thread for the zoo's LeNet-5 on 1×8×8 and
    ResNet-8 on 3×32×32 (docs/benchmarks/attacks.md). The values are the same; only the order
    of floating-point sums inside a convolution may change, by rounding. ``contiguous_format``
    otherwise (an MLP would only pay for an extra copy when it flattens the input).
    """
    if x.dim() == 4 and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return torch.channels_last
    return torch.contiguous_format


def as_layout(x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """``x`` in ``layout`` (a copy only where the memory order changes).

    With one channel, NCHW and NHWC hold the same memory, and PyTorch treats such a tensor as
    NCHW; its strides are set to the NHWC ones (a view) so the convolutions take the NHWC path.
    """
    if layout != torch.channels_last:
        return x.contiguous(memory_format=layout)
    if x.dim() == 4 and x.shape[1] == 1 and x.is_contiguous():
        h, w = x.shape[2], x.shape[3]
        return x.as_strided(x.shape, (h * w, 1, w, 1), x.storage_offset())
    return x.contiguous(memory_format=layout)


def per_sample_view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(N,)`` values reshaped to ``(N, 1, 1, …)`` to broadcast over ``like``, in its dtype."""
    return values.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def loss_gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at ``x`` and the gradient of the summed cross-entropy with respect to ``x`` only.

    The sum (not the mean) makes each sample's gradient independent of the batch size; its sign
    and direction are those of the mean torchattacks differentiates.
    """
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xg)
        loss = nn.functional.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xg)
    return logits.detach(), grad

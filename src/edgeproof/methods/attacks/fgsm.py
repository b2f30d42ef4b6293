"""FGSM (Goodfellow et al. 2015, "Explaining and harnessing adversarial examples") and its L2 form.

One gradient step of the full budget on the cross-entropy of the true label:

* L∞: ``x' = clip(x + ε·sign(∇ₓL), lo, hi)`` — exactly torchattacks 3.5.1 ``FGSM``;
* L2 (the "fast gradient method", FGM): ``x' = clip(x + ε·∇ₓL/‖∇ₓL‖₂, lo, hi)``, with the
  same ``1e-10`` guard in the denominator as torchattacks' ``PGDL2``.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeproof.methods.attacks.base import (
    Attack,
    AttackResult,
    Budget,
    loss_gradient,
    misclassified,
    per_sample_view,
)

__all__ = ["FGSM"]


class FGSM(Attack):
    """Single-step attack of the full budget (no settings)."""

    name = "fgsm"

    def __repr__(self) -> str:  # the report records it: no memory address
        return "FGSM()"

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        budget: Budget,
        *,
        generator: torch.Generator | None = None,
    ) -> AttackResult:
        eps = per_sample_view(budget.eps_per_sample(x.shape[0]), x)
        lo, hi = budget.domain
        _, grad = loss_gradient(model, x, y)
        with torch.no_grad():
            if budget.norm == "linf":
                step = grad.sign_().mul_(eps)
            else:
                norms = grad.flatten(1).norm(p=2, dim=1).add_(1e-10)
                step = grad.div_(per_sample_view(norms, x)).mul_(eps)
            x_adv = (x + step).clamp_(lo, hi)
        return AttackResult(x_adv, misclassified(model, x_adv, y))

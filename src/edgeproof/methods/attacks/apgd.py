"""APGD-CE: Auto-PGD on the cross-entropy (Croce & Hein 2020, arXiv 2003.01690, Algorithm 1).

Follows the reference code (fra31/auto-attack ``autopgd_base.py``, as ported in torchattacks
3.5.1 ``APGD``), generalised to any input shape, any domain ``[lo, hi]`` and per-sample ε:

* start at a random point of the ε-ball surface direction (L∞: ``ε·t/‖t‖∞``, ``t ~ U(−1,1)^d``;
  L2: ``ε·t/‖t‖₂``, ``t ~ N(0, I)``), clipped to the domain; initial step size ``η = 2ε``;
* step with momentum ``α = 0.75`` (``α = 1`` on the first step):
  ``z = P(x + η·sign(g))`` (L2: ``η·g/‖g‖₂``), ``x ← P(x + α(z − x) + (1 − α)(x − x_prev))``;
* checkpoints after ``w₁ = ⌈0.22·N⌉`` steps, then intervals shrinking by ``0.03·N`` down to
  ``0.06·N`` (the reference's integer rounding: ``max(int(0.22N), 1)`` etc.);
* at a checkpoint, per sample, halve η and restart from the best point when (condition 1) the
  loss increased in at most ``ρ = 0.75`` of the interval's steps, or (condition 2) η was not
  halved at the previous checkpoint and the best loss did not improve since;
* a sample counts as fooled if any iterate is misclassified; the misclassified iterate is returned.

One deliberate difference from the reference: condition 1 compares the loss of the interval's
first step with the loss at the starting point. The reference indexes ``loss_steps[-1]`` there (a
row not yet written, i.e. 0), which counts that step as an increase whatever happened.
Restarts re-attack only the samples not yet fooled; random numbers come from a
``torch.Generator`` (deterministic under a seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgeproof.errors import OptionError
from edgeproof.methods.attacks.base import (
    Attack,
    AttackResult,
    Budget,
    as_layout,
    input_layout,
    per_sample_view,
    with_restarts,
)

__all__ = ["APGD"]


class APGD(Attack):
    """Auto-PGD with the cross-entropy loss (APGD-CE).

    Args:
        steps: iterations per restart (default 20; the paper uses 100).
        restarts: random restarts (default 1).
        rho: the fraction ρ of condition 1 (default 0.75).
        momentum: α of the momentum step (default 0.75).
    """

    name = "apgd"

    def __init__(
        self, *, steps: int = 20, restarts: int = 1, rho: float = 0.75, momentum: float = 0.75
    ) -> None:
        if int(steps) < 1:
            raise OptionError("apgd steps", f"{steps} steps is too few", "use steps >= 1, e.g. 20")
        if int(restarts) < 1:
            raise OptionError("apgd restarts", f"{restarts} restarts is too few", "use >= 1")
        if not (0.0 < rho < 1.0 and 0.0 < momentum <= 1.0):
            raise OptionError(
                "apgd rho/momentum",
                f"rho={rho}, momentum={momentum} out of range",
                "use 0 < rho < 1 and 0 < momentum <= 1 (defaults 0.75)",
            )
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.rho = float(rho)
        self.momentum = float(momentum)

    def __repr__(self) -> str:
        return (
            f"APGD(steps={self.steps}, restarts={self.restarts}, rho={self.rho:g}, "
            f"momentum={self.momentum:g})"
        )

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        budget: Budget,
        *,
        generator: torch.Generator | None = None,
    ) -> AttackResult:
        layout = input_layout(model, x)  # channels-last for images into conv nets (faster)
        return with_restarts(
            self.restarts,
            lambda xs, ys, es: self._single_run(
                model, as_layout(xs.detach(), layout), ys, es, budget, generator, layout
            ),
            x,
            y,
            budget.eps_per_sample(x.shape[0]),
        )

    def _project(
        self, z: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, budget: Budget
    ) -> torch.Tensor:
        lo, hi = budget.domain
        if budget.norm == "linf":
            return torch.minimum(torch.maximum(z, x - eps), x + eps).clamp_(lo, hi)
        d = z - x
        norm = per_sample_view(d.flatten(1).norm(p=2, dim=1), x)
        scale = torch.minimum(eps, norm) / (norm + 1e-12)
        return (x + d * scale).clamp_(lo, hi)

    def _single_run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps64: torch.Tensor,
        budget: Budget,
        generator: torch.Generator | None,
        layout: torch.memory_format,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n_iter = self.steps
        n = x.shape[0]
        x = x.detach()
        eps = per_sample_view(eps64, x)
        x_adv = _random_start(x, eps, budget, generator, layout)
        logits, loss_i, grad = _loss_and_grad(model, x_adv, y)
        robust = logits.argmax(dim=1) == y
        x_best_adv = x_adv.clone()
        x_best = x_adv.clone()
        grad_best = grad.clone()
        loss_best = loss_i.clone()
        losses = torch.zeros(n_iter + 1, n, dtype=loss_i.dtype)  # losses[0]: starting point
        losses[0] = loss_i
        step = 2.0 * eps
        x_old = x_adv.clone()
        checkpoints = _Checkpoints.first(n_iter, self.rho, loss_best)
        for i in range(n_iter):
            with torch.no_grad():
                grad2 = x_adv - x_old
                x_old = x_adv
                a = self.momentum if i > 0 else 1.0
                x_adv = self._momentum_step(x_adv, grad, grad2, step, a, x, eps, budget)
            logits, loss_i, grad = _loss_and_grad(model, x_adv, y)
            with torch.no_grad():
                wrong = logits.argmax(dim=1) != y
                robust &= ~wrong
                x_best_adv[wrong] = x_adv[wrong]
                losses[i + 1] = loss_i
                better = loss_i > loss_best
                x_best[better] = x_adv[better]
                grad_best[better] = grad[better]
                loss_best = torch.where(better, loss_i, loss_best)
                reduce = checkpoints.after_step(losses, i, loss_best)
                if reduce is not None and bool(reduce.any()):
                    step[reduce] /= 2.0
                    x_adv = x_adv.clone()
                    x_adv[reduce] = x_best[reduce]
                    grad[reduce] = grad_best[reduce]
        return x_best_adv, ~robust

    def _momentum_step(
        self,
        x_adv: torch.Tensor,
        grad: torch.Tensor,
        grad2: torch.Tensor,
        step: torch.Tensor,
        a: float,
        x: torch.Tensor,
        eps: torch.Tensor,
        budget: Budget,
    ) -> torch.Tensor:
        """``z = P(x_adv + η·sign(g))`` (L2: ``η·g/‖g‖₂``), then
        ``P(x_adv + a(z − x_adv) + (1 − a)·grad2)`` with ``grad2 = x_adv − x_prev``."""
        if budget.norm == "linf":
            z = self._project(x_adv + step * grad.sign(), x, eps, budget)
        else:
            gn = per_sample_view(grad.flatten(1).norm(p=2, dim=1), x) + 1e-12
            z = self._project(x_adv + step * grad / gn, x, eps, budget)
        return self._project(x_adv + (z - x_adv) * a + grad2 * (1 - a), x, eps, budget)


def _random_start(
    x: torch.Tensor,
    eps: torch.Tensor,
    budget: Budget,
    generator: torch.Generator | None,
    layout: torch.memory_format,
) -> torch.Tensor:
    """The starting point ``x + ε·t/‖t‖`` (L∞: ``t ~ U(−1, 1)^d``, L2: ``t ~ N(0, I)``), clipped
    to the domain."""
    lo, hi = budget.domain
    if budget.norm == "linf":
        t = torch.rand(x.shape, generator=generator, dtype=x.dtype)
        t = as_layout(t, layout).mul_(2).sub_(1)
        tn = per_sample_view(t.flatten(1).abs().amax(dim=1), x)
    else:
        t = as_layout(torch.randn(x.shape, generator=generator, dtype=x.dtype), layout)
        tn = per_sample_view(t.flatten(1).norm(p=2, dim=1), x) + 1e-12
    return (x + eps * t / tn).clamp_(lo, hi)


def _loss_and_grad(
    model: nn.Module, z: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits, per-sample cross-entropy and the gradient of its sum at ``z``."""
    zg = z.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(zg)
        loss_i = nn.functional.cross_entropy(logits, y, reduction="none")
        (g,) = torch.autograd.grad(loss_i.sum(), zg)
    return logits.detach(), loss_i.detach(), g


@dataclass
class _Checkpoints:
    """The step-size checkpoints of Algorithm 1: after ``w`` steps, then intervals shrinking by
    ``w_decr`` down to ``w_min``; at each, the samples whose η halves (conditions 1 and 2 of the
    module docstring)."""

    w: int
    w_min: int
    w_decr: int
    rho: float
    loss_best_last_check: torch.Tensor
    reduced_last_check: torch.Tensor
    since_check: int = 0

    @classmethod
    def first(cls, n_iter: int, rho: float, loss_best: torch.Tensor) -> _Checkpoints:
        """The checkpoints of an ``n_iter``-step run starting at losses ``loss_best``."""
        return cls(
            w=max(int(0.22 * n_iter), 1),
            w_min=max(int(0.06 * n_iter), 1),
            w_decr=max(int(0.03 * n_iter), 1),
            rho=rho,
            loss_best_last_check=loss_best.clone(),
            reduced_last_check=torch.ones(loss_best.shape[0], dtype=torch.bool),
        )

    def after_step(
        self, losses: torch.Tensor, i: int, loss_best: torch.Tensor
    ) -> torch.Tensor | None:
        """After step ``i`` (``losses[i + 1]`` written): the samples whose η halves when this is
        a checkpoint, else ``None``."""
        self.since_check += 1
        if self.since_check != self.w:
            return None
        w = self.w
        window = losses[i + 1 - w : i + 2]  # the interval's w steps and the one before
        increases = (window[1:] > window[:-1]).sum(dim=0)
        cond1 = increases <= w * self.rho
        cond2 = ~self.reduced_last_check & (self.loss_best_last_check >= loss_best)
        reduce = cond1 | cond2
        self.reduced_last_check = reduce.clone()
        self.loss_best_last_check = loss_best.clone()
        self.since_check = 0
        self.w = max(w - self.w_decr, self.w_min)
        return reduce

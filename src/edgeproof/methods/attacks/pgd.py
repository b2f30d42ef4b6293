"""PGD: projected gradient descent on the cross-entropy (Madry et al. 2018, arXiv 1706.06083).

Each step follows torchattacks 3.5.1 (``PGD`` for L∞, ``PGDL2`` for L2), so with
``random_start=False`` the adversarial examples are the same to float rounding (≤ 1e-7 on digits):

* L∞: ``x ← x + α·sign(g)``; then projection onto the ε-ball and clipping to the domain, which
  torchattacks writes ``clamp(x₀ + clamp(x − x₀, −ε, ε), lo, hi)`` and we compute as one clamp
  to the precomputed bounds ``[max(x₀ − ε, lo), min(x₀ + ε, hi)]`` (the same set and order, three
  elementwise passes per step instead of six; only the rounding of the ``x₀ + δ`` round trip
  differs).
* L2: ``x ← x + α·g/(‖g‖₂ + 1e-10)``; ``δ = (x − x₀)·min(1, ε/‖x − x₀‖₂)``;
  ``x ← clamp(x₀ + δ, lo, hi)``.
* Random start: L∞ uniform in ``[−ε, ε]^d``; L2 a Gaussian direction scaled to radius ``r·ε``,
  ``r ~ U(0, 1)`` (torchattacks' choice; not uniform in the ball), then clipped to the domain.

Differences from torchattacks, all deliberate:

* the gradient is of the *summed* cross-entropy (torchattacks: the mean), so a sample's attack
  does not depend on the batch size; sign and direction are the same;
* ε may differ per sample, the step is relative to it (``α = step·ε``, default ``2.5/steps``,
  Madry et al.'s choice) and may follow a ``cosine`` schedule ``αₜ = α·½(1 + cos(πt/T))``;
* restarts (random start required) re-attack only the samples not yet fooled, and the random
  numbers come from an explicit ``torch.Generator``, so a run is deterministic under a seed;
* ``keep="first"`` (default) stops each sample at its first misclassified iterate and returns
  it (the batch shrinks as samples are fooled, which makes large-ε and bisection runs cheap);
  ``keep="last"`` runs every sample for every step and returns the final iterate, as torchattacks
  does (success is judged on the final iterate only).

Cost (docs/benchmarks/attacks.md): one forward and one backward pass per step, plus three in-place
elementwise passes (sign, scaled add, clamp) and one final forward to judge the last iterate.
Images go to conv nets in channels-last layout
(:func:`edgeproof.methods.attacks.base.input_layout`), which CPU convolutions run faster; the
examples are returned in the caller's (contiguous) layout.
"""

from __future__ import annotations

import math
from typing import Literal

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

__all__ = ["PGD", "Schedule"]

Schedule = Literal["constant", "cosine"]


class PGD(Attack):
    """Projected gradient descent (L∞ or L2, from the budget).

    Args:
        steps: gradient steps per restart (default 10).
        step: step size relative to ε (``α = step·ε``); default ``2.5/steps``.
        random_start: start from a random point of the ε-ball (default True).
        restarts: number of random restarts (default 1); more than one needs ``random_start``.
        schedule: ``constant`` (Madry et al.) or ``cosine`` step size.
        keep: ``first`` (stop at the first misclassified iterate) or ``last`` (final iterate).
    """

    name = "pgd"

    def __init__(
        self,
        *,
        steps: int = 10,
        step: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        schedule: Schedule = "constant",
        keep: Literal["first", "last"] = "first",
    ) -> None:
        if int(steps) < 1:
            raise OptionError("pgd steps", f"{steps} steps is too few", "use steps >= 1, e.g. 10")
        if int(restarts) < 1:
            raise OptionError("pgd restarts", f"{restarts} restarts is too few", "use >= 1")
        if restarts > 1 and not random_start:
            raise OptionError(
                "pgd restarts",
                f"{restarts} restarts without a random start would repeat the same attack",
                "set random_start=True or restarts=1",
            )
        if step is not None and not (math.isfinite(step) and step > 0):
            raise OptionError("pgd step", f"relative step {step} must be positive", "e.g. 0.25")
        if schedule not in ("constant", "cosine"):
            raise OptionError(
                "pgd schedule", f"unknown schedule {schedule!r}", "use constant or cosine"
            )
        if keep not in ("first", "last"):
            raise OptionError("pgd keep", f"unknown value {keep!r}", "use first or last")
        self.steps = int(steps)
        self.step = float(step) if step is not None else 2.5 / self.steps
        self.random_start = bool(random_start)
        self.restarts = int(restarts)
        self.schedule: Schedule = schedule
        self.keep = keep

    def __repr__(self) -> str:
        return (
            f"PGD(steps={self.steps}, step={self.step:g}, random_start={self.random_start}, "
            f"restarts={self.restarts}, schedule={self.schedule!r}, keep={self.keep!r})"
        )

    def _multipliers(self) -> list[float]:
        if self.schedule == "constant":
            return [1.0] * self.steps
        return [0.5 * (1.0 + math.cos(math.pi * t / self.steps)) for t in range(self.steps)]

    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        budget: Budget,
        *,
        generator: torch.Generator | None = None,
    ) -> AttackResult:
        layout = input_layout(model, x)
        return with_restarts(
            self.restarts,
            lambda xs, ys, es: self._single_run(model, xs, ys, es, budget, generator, layout),
            x,
            y,
            budget.eps_per_sample(x.shape[0]),
        )

    def _start(
        self,
        x: torch.Tensor,
        eps: torch.Tensor,
        budget: Budget,
        generator: torch.Generator | None,
        layout: torch.memory_format,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The first iterate (random or ``x``) and the bounds ``lower``, ``upper`` of the step's
        projection: L∞ the ε-ball ∩ domain box per element, L2 ``x`` itself (not used by
        the L2 step)."""
        lo, hi = budget.domain
        linf = budget.norm == "linf"
        # L∞: the ε-ball ∩ domain box as per-element bounds, computed once; one clamp per step
        # then equals torchattacks' clamp(x + clamp(x' − x, −ε, ε), lo, hi) up to float rounding.
        below = torch.sub(x, eps) if linf else x  # x − ε, before clipping to the domain
        if self.random_start:
            if linf:  # x + U(−ε, ε) = (x − ε) + 2ε·u, written into the noise buffer
                adv = as_layout(torch.rand(x.shape, generator=generator, dtype=x.dtype), layout)
                torch.addcmul(below, adv, 2 * eps, out=adv)
            else:
                delta = torch.randn(x.shape, generator=generator, dtype=x.dtype)
                delta = as_layout(delta, layout)
                norms = per_sample_view(delta.flatten(1).norm(p=2, dim=1), x)
                r = per_sample_view(torch.rand(x.shape[0], generator=generator), x)
                adv = delta.mul_(r / norms * eps).add_(x).clamp_(lo, hi)
        else:
            adv = as_layout(x.clone(), layout)
        lower = below.clamp_(min=lo) if linf else x
        upper = torch.add(x, eps).clamp_(max=hi) if linf else x
        if linf and self.random_start:  # the start inside the ε-ball ∩ domain, rounding included
            torch.clamp(adv, lower, upper, out=adv)
        return adv, lower, upper

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
        linf = budget.norm == "linf"
        first = self.keep == "first"
        # Large buffers are allocated once per run and updated in place: on CPU a fresh
        # multi-megabyte tensor costs page faults, which show up next to a cheap model.
        x = as_layout(x.detach(), layout)
        adv, lower, upper = self._start(x, per_sample_view(eps64, x), budget, generator, layout)
        n = x.shape[0]
        out = torch.empty_like(x) if first else x  # "last" never writes to it
        done = torch.zeros(n, dtype=torch.bool)
        active = torch.arange(n)  # rows of the batch still attacked ("first" drops fooled rows)
        for mult in self._multipliers():
            adv.requires_grad_(True)
            with torch.enable_grad():
                logits = model(adv)
                loss = nn.functional.cross_entropy(logits, y, reduction="sum")
                (grad,) = torch.autograd.grad(loss, adv)
            adv = adv.detach()
            with torch.no_grad():
                if first:
                    # logits of this step's forward judge the current iterate: no extra pass
                    wrong = logits.argmax(dim=1) != y
                    if bool(wrong.any()):  # one host sync per step, only in "first" mode
                        out[active[wrong]] = adv[wrong]
                        done[active[wrong]] = True
                        keep = ~wrong
                        active, x, y = active[keep], x[keep], y[keep]
                        adv = as_layout(adv[keep], layout)
                        grad = grad[keep]
                        eps64 = eps64[keep]
                        if linf:
                            lower, upper = lower[keep], upper[keep]
                        if active.numel() == 0:
                            return out, done
                # α computed in float64 from ε, rounded once (as torchattacks' float alpha).
                alpha = per_sample_view(eps64 * (self.step * mult), x)
                adv = _step(adv, grad, alpha, x, eps64, lower, upper, budget)
        with torch.no_grad():
            final_wrong = model(adv).argmax(dim=1) != y
        if not first:
            return adv, final_wrong
        out[active] = adv
        done[active] = final_wrong
        return out, done


def _step(
    adv: torch.Tensor,
    grad: torch.Tensor,
    alpha: torch.Tensor,
    x: torch.Tensor,
    eps64: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    budget: Budget,
) -> torch.Tensor:
    """One PGD step from ``adv`` along ``grad`` (both overwritten in place) with step sizes
    ``alpha``, projected onto the ε-ball and clipped to the domain (the module docstring's
    formulas): L∞ one clamp to ``[lower, upper]``, L2 the rescaling of ``adv − x`` to ε."""
    if budget.norm == "linf":
        adv.addcmul_(alpha, grad.sign_())
        torch.clamp(adv, lower, upper, out=adv)
    else:
        gnorm = grad.flatten(1).norm(p=2, dim=1).add_(1e-10)
        adv.add_(grad.div_(per_sample_view(gnorm, x)).mul_(alpha))
        delta = adv.sub_(x)
        dnorm = delta.flatten(1).norm(p=2, dim=1)
        factor = torch.clamp(eps64.to(x.dtype) / dnorm, max=1.0)
        adv = delta.mul_(per_sample_view(factor, x)).add_(x).clamp_(*budget.domain)
    return adv

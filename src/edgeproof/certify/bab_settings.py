"""The settings and result of branch-and-bound (see :mod:`~edgeproof.certify.bab`): the verdicts,
:class:`BabSettings`, :class:`BabResult`, and the margins of a model on a spec."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from edgeproof.errors import OptionError

Verdict = Literal["verified", "falsified", "unknown"]


ModelFn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class BabSettings:
    """Branch-and-bound settings.

    Attributes:
        budget_s: wall-clock budget per sample (seconds), after the root bound.
        batch_domains: domains split per round (their children are bounded together).
        iterations: α/β optimisation steps per batch of subdomains.
        lr_alpha, lr_beta: Adam learning rates of α and β.
        max_domains: stop (``unknown``) when this many domains are open.
        input_split_dims: use input splitting when the set has at most this many free
            coordinates (a segment has one).
        pgd_steps, pgd_restarts: the counterexample search before branching.
    """

    budget_s: float = 5.0
    batch_domains: int = 32
    iterations: int = 20
    lr_alpha: float = 0.1
    lr_beta: float = 0.05
    max_domains: int = 20_000
    input_split_dims: int = 2
    pgd_steps: int = 30
    pgd_restarts: int = 3

    def __post_init__(self) -> None:
        if not (self.budget_s >= 0 and math.isfinite(self.budget_s)):
            raise OptionError(
                "bab_budget_s", f"{self.budget_s} is not a finite number >= 0", "use e.g. 5"
            )
        if self.batch_domains < 1:
            raise OptionError("bab_batch", f"{self.batch_domains} is < 1", "use e.g. 32")
        if self.iterations < 1:
            raise OptionError("bab_iterations", f"{self.iterations} is < 1", "use e.g. 20")


@dataclass(frozen=True)
class BabResult:
    """The outcome of branch-and-bound on one sample.

    Attributes:
        verdict: ``verified`` (every margin row is positive on the whole set), ``falsified``
            (a counterexample checked by a forward pass of the model) or ``unknown``.
        lower_bound: a proven lower bound of the smallest margin over the set (over the open
            subdomains when unknown; over all leaves when verified).
        counterexample: ``(1, *shape)`` input with a negative margin (falsified only).
        margin: the model's smallest margin at the counterexample.
        domains: subdomains bounded.
        time_s: seconds spent.
        strategy: ``relu-split`` or ``input-split``.
    """

    verdict: Verdict
    lower_bound: float
    counterexample: Tensor | None
    margin: float | None
    domains: int
    time_s: float
    strategy: str


def _margins(model_fn: ModelFn, x: Tensor, spec: Tensor) -> Tensor:
    """``spec·f(x)`` ``(N, R)`` for inputs ``x`` ``(N, *shape)`` and spec ``(1, R, K)``."""
    with torch.no_grad():
        out = model_fn(x).to(spec.dtype)
    return torch.einsum("rk,nk->nr", spec[0], out)

"""Robust accuracy versus ε: every attack at every ε, per-sample worst case, Wilson intervals.

A sample is *robust at ε* when the model classifies it correctly and no attack run at that ε
found a misclassified input within the budget. Each attack runs on every correctly classified
sample (not only on the survivors of earlier attacks), so the per-attack success sets can be
compared — that is what the gradient-masking sanity checks need.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from edgeproof.methods.attacks.base import Attack, Budget, Forward
from edgeproof.methods.stats import wilson_interval
from edgeproof.results import Interval
from edgeproof.spec import Norm

__all__ = ["RobustnessCurve", "robustness_curve"]


def attack_generator(seed: int, *salts: int) -> torch.Generator:
    """A generator for one (attack, ε, batch) cell, independent of the order cells run in."""
    h = int(seed) % (2**61)
    for s in salts:
        h = (h * 1_000_003 + int(s) + 1) % (2**61)
    g = torch.Generator()
    g.manual_seed(h)
    return g


@dataclass(frozen=True)
class RobustnessCurve:
    """Per-sample outcomes of every attack at every ε.

    Attributes:
        norm: the threat norm.
        eps: the budgets, ascending, ``(E,)``.
        attacks: attack names, ``(A,)``.
        clean_correct: ``(N,)`` bool, the clean prediction is right.
        fooled: ``(A, E, N)`` bool, attack ``a`` at ``eps[e]`` found a misclassified input for
            sample ``n`` (always False where the clean prediction is wrong).
        queries: ``(A, E, N)`` int64, model queries attack ``a`` spent on sample ``n`` at
            ``eps[e]`` (0 where the clean prediction is wrong: not attacked), −1 for attacks
            that do not count queries; ``None`` when no attack counts them.
    """

    norm: Norm
    eps: tuple[float, ...]
    attacks: tuple[str, ...]
    clean_correct: np.ndarray
    fooled: np.ndarray
    queries: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.clean_correct.shape[0])

    @property
    def robust(self) -> np.ndarray:
        """``(E, N)`` bool: correct and not fooled by any attack (the per-sample worst case)."""
        return self.clean_correct[None, :] & ~self.fooled.any(axis=0)

    def robust_count(self, attack: str | None = None) -> np.ndarray:
        """``(E,)`` robust samples, worst case over attacks or for one ``attack``."""
        result: np.ndarray
        if attack is None:
            result = self.robust.sum(axis=1)
        else:
            a = self.attacks.index(attack)
            result = (self.clean_correct[None, :] & ~self.fooled[a]).sum(axis=1)
        return result

    def robust_accuracy(self, attack: str | None = None) -> np.ndarray:
        """``(E,)`` robust accuracy (worst case over attacks, or one attack)."""
        return self.robust_count(attack) / max(self.n, 1)

    def interval(self, e: int, level: float = 0.95, attack: str | None = None) -> Interval:
        """Wilson interval of the robust accuracy at ``eps[e]``."""
        return wilson_interval(int(self.robust_count(attack)[e]), self.n, level)

    def only_fooled_by(self, weak: str, strong: str) -> np.ndarray:
        """``(E,)`` samples fooled by attack ``weak`` but not by ``strong``."""
        a, b = self.attacks.index(weak), self.attacks.index(strong)
        result: np.ndarray = (self.fooled[a] & ~self.fooled[b]).sum(axis=1)
        return result

    def counts_queries(self, attack: str) -> bool:
        """Whether ``attack`` reported the queries it spent per sample."""
        if self.queries is None:
            return False
        return bool((self.queries[self.attacks.index(attack)] >= 0).all())

    def mean_queries(self, attack: str, e: int, *, fooled_only: bool = True) -> float:
        """Mean queries of ``attack`` at ``eps[e]`` per attacked sample (NaN if none, or if it
        does not count them); with ``fooled_only`` over the samples it fooled (the paper's
        "average queries of successful attacks")."""
        if not self.counts_queries(attack):
            return float("nan")
        a = self.attacks.index(attack)
        rows = self.clean_correct & (self.fooled[a, e] if fooled_only else True)
        q = self.queries[a, e][rows] if self.queries is not None else np.zeros(0)
        return float(q.mean()) if q.size else float("nan")


def robustness_curve(
    model: Forward,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: Norm,
    eps: Sequence[float],
    domain: tuple[float, float],
    attacks: Sequence[Attack],
    seed: int = 0,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> RobustnessCurve:
    """Run every attack at every ε on the correctly classified samples of ``(x, y)``.

    ``model`` should be an eval-mode module with frozen parameters
    (:func:`edgeproof.methods.attacks.base.frozen_copy`), or, when every attack is forward-only
    (``needs_gradients`` False), any :data:`~edgeproof.methods.attacks.base.Forward` callable.
    Batches of ``batch_size``; the random numbers of each (attack, ε, batch) come from their own
    seeded generator. ``progress(done, total)`` is called after each (attack, ε, batch) with the
    units done and the total (attacks × ε × batches).
    """
    n = x.shape[0]
    with torch.no_grad():
        pred = (
            torch.cat([model(x[i : i + batch_size]).argmax(dim=1) for i in range(0, n, batch_size)])
            if n
            else torch.zeros(0, dtype=torch.long)
        )
    correct = (pred == y).numpy()
    idx = np.flatnonzero(correct)
    eps_t = tuple(float(e) for e in eps)
    fooled = np.zeros((len(attacks), len(eps_t), n), dtype=bool)
    queries = np.zeros((len(attacks), len(eps_t), n), dtype=np.int64)
    counted = [idx.size > 0] * len(attacks)  # unknown (not counted) if nothing was attacked
    xc, yc = x[idx], y[idx]
    total = len(attacks) * len(eps_t) * -(-idx.size // batch_size)
    done = 0
    if progress is not None:
        progress(done, total)
    for ai, attack in enumerate(attacks):
        for ei, e in enumerate(eps_t):
            budget = Budget(norm=norm, eps=e, domain=domain)
            for bi, start in enumerate(range(0, idx.size, batch_size)):
                xb, yb = xc[start : start + batch_size], yc[start : start + batch_size]
                g = attack_generator(seed, zlib.crc32(attack.name.encode()), ei, bi)
                res = attack.perturb(model, xb, yb, budget, generator=g)  # type: ignore[arg-type]
                rows = idx[start : start + batch_size]
                fooled[ai, ei, rows] = res.success.numpy()
                if res.queries is not None:
                    queries[ai, ei, rows] = res.queries.numpy()
                else:  # the attack does not count its queries
                    counted[ai] = False
                done += 1
                if progress is not None:
                    progress(done, total)
    queries[[ai for ai, ok in enumerate(counted) if not ok]] = -1
    return RobustnessCurve(
        norm=norm,
        eps=eps_t,
        attacks=tuple(a.name for a in attacks),
        clean_correct=correct,
        fooled=fooled,
        queries=queries if any(counted) else None,
    )

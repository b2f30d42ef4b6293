"""Per-sample minimal adversarial ε, by bisection with an attack (PGD, or Square on forward-only
models) at each ε.

For each correctly classified sample, bisect ``[0, upper]`` for ``iterations`` rounds: run the
attack with a per-sample ε at the midpoint; if it finds a misclassified input the
upper end moves down, else the lower end moves up. The reported value is the upper end — the
smallest ε at which the attack *succeeded* — so it is an upper bound on the true minimal ε (the
attack is not exact), resolved to ``upper / 2**iterations``. All samples are bisected together in
one batched attack per round.

Samples the attack cannot fool even at ``upper`` are *censored*: their value is ``upper`` and the
``censored`` mask says so. Misclassified clean samples have minimal ε 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from edgeproof.errors import OptionError
from edgeproof.methods.attacks.base import Attack, Budget, Forward
from edgeproof.methods.attacks.curve import attack_generator
from edgeproof.spec import Norm

__all__ = ["MinimalEps", "minimal_eps"]


@dataclass(frozen=True)
class MinimalEps:
    """Minimal ε per sample found by bisection.

    Attributes:
        values: ``(N,)`` float64 — smallest ε at which the attack succeeded (0 for misclassified
            clean samples, ``upper`` for censored ones).
        clean_correct: ``(N,)`` bool.
        censored: ``(N,)`` bool — not fooled even at ``upper``.
        upper: the bisection's upper end.
        resolution: ``upper / 2**iterations``.
        norm: the norm ε is measured in.
    """

    values: np.ndarray
    clean_correct: np.ndarray
    censored: np.ndarray
    upper: float
    resolution: float
    norm: Norm

    def median(self) -> float:
        """Median over the correctly classified samples (censored ones count as ``upper``)."""
        v = self.values[self.clean_correct]
        return float(np.median(v)) if v.size else float("nan")


def minimal_eps(
    model: Forward,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: Norm,
    domain: tuple[float, float],
    attack: Attack,
    upper: float,
    iterations: int = 10,
    seed: int = 0,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> MinimalEps:
    """Bisect the minimal ε of ``attack`` for every sample of ``(x, y)``.

    ``model`` is an ``nn.Module`` for gradient attacks; a forward-only attack (Square) takes any
    :data:`~edgeproof.methods.attacks.base.Forward` callable. ``progress(done, total)`` is called
    after each attacked batch (``(1 + iterations) × batches`` in all).
    """
    if iterations < 1:
        raise OptionError("bisection_steps", f"{iterations} is too few", "use >= 1, e.g. 10")
    if not upper > 0:
        raise OptionError("minimal-ε upper bound", f"{upper} must be positive")
    n = x.shape[0]
    with torch.no_grad():
        pred = (
            torch.cat([model(x[i : i + batch_size]).argmax(dim=1) for i in range(0, n, batch_size)])
            if n
            else torch.zeros(0, dtype=torch.long)
        )
    correct = (pred == y).numpy()
    values = np.zeros(n, dtype=np.float64)
    censored = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(correct)
    if idx.size:
        xc, yc = x[idx], y[idx]
        lo = torch.zeros(idx.size, dtype=torch.float64)
        hi = torch.full((idx.size,), float(upper), dtype=torch.float64)
        total = (1 + iterations) * -(-idx.size // batch_size)
        done = 0
        if progress is not None:
            progress(done, total)

        def fooled_at(eps: torch.Tensor, salt: int) -> torch.Tensor:
            nonlocal done
            out = torch.zeros(idx.size, dtype=torch.bool)
            for bi, s in enumerate(range(0, idx.size, batch_size)):
                sl = slice(s, s + batch_size)
                budget = Budget(norm=norm, eps=eps[sl], domain=domain)
                g = attack_generator(seed, 7_919, salt, bi)
                res = attack.perturb(model, xc[sl], yc[sl], budget, generator=g)  # type: ignore[arg-type]
                out[sl] = res.success
                done += 1
                if progress is not None:
                    progress(done, total)
            return out

        top = fooled_at(hi, 0)
        for it in range(iterations):
            mid = (lo + hi) / 2
            ok = fooled_at(mid, it + 1)
            hi = torch.where(ok, mid, hi)
            lo = torch.where(ok, lo, mid)
        values[idx] = hi.numpy()
        censored[idx] = ~top.numpy()
        values[idx[~top.numpy()]] = float(upper)
    return MinimalEps(
        values=values,
        clean_correct=correct,
        censored=censored,
        upper=float(upper),
        resolution=float(upper) / 2**iterations,
        norm=norm,
    )

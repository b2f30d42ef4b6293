"""Square Attack: score-based random search at the vertices of the ε-ball (Andriushchenko, Croce,
Flammarion & Hein, ECCV 2020, arXiv 1912.00049), the variant of AutoAttack.

No gradient is ever taken: the attack only calls ``model`` on batches of inputs and reads the
logits, so it runs on anything with a forward pass — an ``nn.Module``, an ONNX Runtime session
(:func:`edgeproof.runtime.ort.session_forward`), a quantized QDQ graph.

The algorithm follows ``SquareAttack.attack_single_run`` of fra31/auto-attack (``square.py``),
step by step and with the same sequence of random draws, so with the same seed it returns the
same adversarial examples (``benchmarks/bench_square.py`` checks this):

* **L∞.** Start at vertical stripes: ``x + ε·σ`` with one random sign σ per (sample, channel,
  column), clipped to the domain. Each iteration draws one window of side
  ``s = round(√(p·h·w))`` (at least 1, at most ``min(h, w)``) at a random position and one sign
  per channel, moves the window of the current best point by ``2ε·σ`` and projects it back onto
  the ε-ball and the domain — the window lands on a vertex of the ball.
* **L2.** Start at a 5×5 grid of tiles of side ``⌊h/5⌋``, each holding the repository's
  two-bump pattern ``η`` (nested centred rectangles of weight ``1/(k+1)²`` in each half, the
  halves of opposite sign, randomly transposed) with a random sign per (sample, channel),
  rescaled to ‖δ‖₂ = ε. Each iteration draws two windows of odd side ``s ≥ 3``: the first gets a
  fresh ``η`` plus its old content (normalised), rescaled so that the window takes the mass of
  both windows and what the budget has left; the second is zeroed (the paired-squares update);
  then ``δ`` is rescaled to ‖δ‖₂ = ε and ``x + δ`` clipped to the domain.
* **Schedule.** The window's area fraction ``p`` starts at ``p_init`` and halves at iterations
  10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of a run rescaled to 10 000 iterations
  (``p_selection`` with ``resc_schedule=True``).
* **Acceptance.** A candidate replaces the best point when its loss is lower (margin loss
  ``z_y − max_{j≠y} z_j`` by default, or ``−CE``) or when it is misclassified (margin ≤ 0);
  a sample stops as soon as its margin is ≤ 0 (early stop per sample).
* **Restarts** re-attack, from a new random start, only the samples not fooled yet; the random
  numbers continue from the same generator.

Faithful to the reference also where it is unusual, and said here: the window positions and
signs of an iteration are drawn once and shared by every sample of the batch (the reference's
batching; the original code draws them per image); a window position is drawn as
``⌊(h − s)·u⌋``, ``u ~ U[0, 1)``, so the last position ``h − s`` is never chosen; the L2 start
leaves the first row and column empty on an 8×8 image (tiles of side 1 offset by one).

Deliberate differences, none of which changes an iterate on a square image of side ≥ 5:

* **Query budget.** ``n_queries`` is the number of model queries per sample and restart
  *including* the starting point, as in the paper's code (``n_iters``); AutoAttack runs
  ``n_queries`` iterations after the start, i.e. ``n_queries + 1`` queries, and rescales the
  schedule to its iteration count. So ``Square(n_queries=N)`` runs ``N − 1`` iterations with
  the schedule rescaled to ``N − 1`` — exactly AutoAttack's ``SquareAttack(n_queries=N − 1)``.
  ``AttackResult.queries`` counts, per sample, the queries on perturbed inputs summed over
  restarts (start + iterations); the one clean forward pass every call begins with (to leave
  already-misclassified samples alone, as the reference does) is not counted, as in both
  references. A sample misclassified clean is returned unchanged with 0 queries.
* **Domain and ε.** Clipping is to ``[lo, hi]`` (the reference: ``[0, 1]``); ε may differ per
  sample.
* **Success** is read from the logits of the accepted point (the reference runs one more
  forward pass per restart to judge it). Samples not fooled return the best point of their last
  restart (the reference: the clean input).
* **Shapes.** Inputs ``(N, C, H, W)`` are images. Other inputs are attacked as one-row images
  ``(N, C, 1, L)``: ``(N, F)`` as ``(N, 1, 1, F)``, ``(N, C, L)`` as ``(N, C, 1, L)``, and
  ``(N, C, d₁, d₂, …)`` with the trailing axes flattened. On a one-row input the windows are
  segments covering the same fraction ``p`` of the row (``s = round(p·L)``; L2: odd, ≥ 3), drawn
  at any of the ``L − s + 1`` positions (so every feature of a tabular record can move; on
  images the reference never places a window at the last row or column, which only the start
  sets), the L2 pattern is the 1-D version of ``η`` (one bump per half, no transpose) and the
  L2 start is five segment tiles of length ``⌊L/5⌋``. On images smaller than 5 in height (where the
  reference's L2 start divides by zero) the L2 tiles have side 1, and tiles that would overrun
  the border (heights such as 12, where the reference raises) are cut at the border.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from edgeproof.errors import OptionError
from edgeproof.methods.attacks.base import Attack, AttackResult, Budget, Forward, per_sample_view

__all__ = ["Square", "p_selection"]

SquareLoss = Literal["margin", "ce"]
_LOSSES = ("margin", "ce")
# p halves after each of these iterations of a run rescaled to 10 000 iterations
_BREAKS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """The window's area fraction at iteration ``it`` of ``n_iters`` (AutoAttack's schedule)."""
    scaled = int(it / n_iters * 10000)
    halvings = sum(scaled > b for b in _BREAKS)
    result: float = p_init / 2**halvings
    return result


def _sign(g: torch.Generator | None, shape: tuple[int, ...]) -> torch.Tensor:
    """Random ±1 as the reference draws it: ``sign(2u − 1)``, ``u ~ U[0, 1)`` in float32."""
    return torch.sign(2 * torch.rand(shape, generator=g, dtype=torch.float32) - 1)


def _position(g: torch.Generator | None, high: int) -> int:
    """A window offset in ``[0, high)`` drawn as the reference does (``⌊high·u⌋``, 0 if high 0)."""
    return int((high * torch.rand([1], generator=g, dtype=torch.float32)).long())


def _rectangles(x: int, y: int) -> torch.Tensor:
    """The reference's ``eta_rectangles`` (L2): nested centred rectangles of weight 1/(k+1)²."""
    delta = torch.zeros([x, y])
    x_c, y_c = x // 2 + 1, y // 2 + 1
    c0, c1 = x_c - 1, y_c - 1
    for k in range(max(x_c, y_c)):
        delta[max(c0, 0) : min(c0 + (2 * k + 1), x), max(0, c1) : min(c1 + (2 * k + 1), y)] += (
            1.0 / (torch.Tensor([k + 1]).view(1, 1) ** 2)
        )
        c0 -= 1
        c1 -= 1
    delta /= (delta**2).sum(dim=(0, 1), keepdim=True).sqrt()
    return delta


def _eta(s: int) -> torch.Tensor:
    """The reference's L2 pattern ``eta(s)`` before its random transpose, ``(s, s)``."""
    delta = torch.zeros([s, s])
    delta[: s // 2] = _rectangles(s // 2, s)
    delta[s // 2 :] = -1.0 * _rectangles(s - s // 2, s)
    delta /= (delta**2).sum(dim=(0, 1), keepdim=True).sqrt()
    return delta


def _bump_1d(n: int) -> torch.Tensor:
    """One-row version of :func:`_rectangles`: nested centred segments of weight 1/(k+1)²."""
    delta = torch.zeros([n])
    start = n // 2
    for k in range(n // 2 + 1):
        delta[max(start, 0) : min(start + 2 * k + 1, n)] += 1.0 / (k + 1) ** 2
        start -= 1
    return delta / (delta**2).sum().sqrt() if n else delta


def _eta_1d(s: int) -> torch.Tensor:
    """One-row version of :func:`_eta`, ``(1, s)``: a bump in each half, of opposite signs."""
    delta = torch.cat([_bump_1d(s // 2), -_bump_1d(s - s // 2)])
    return (delta / (delta**2).sum().sqrt()).view(1, s)


class _Patterns:
    """The L2 patterns of one run, built once per side and randomly transposed per draw."""

    def __init__(self, flat: bool, g: torch.Generator | None) -> None:
        self.flat = flat
        self.g = g
        self.cache: dict[int, torch.Tensor] = {}

    def __call__(self, s: int) -> torch.Tensor:
        if s not in self.cache:
            self.cache[s] = _eta_1d(s) if self.flat else _eta(s)
        delta = self.cache[s]
        # the reference's random transpose (one draw per pattern, images only)
        if not self.flat and torch.rand([1], generator=self.g, dtype=torch.float32) > 0.5:
            delta = delta.permute([1, 0])
        return delta


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` as ``(N, C, H, W)``: images as they are, anything else as one-row images."""
    if x.dim() == 4:
        return x
    if x.dim() == 1:
        return x.reshape(x.shape[0], 1, 1, 1)
    if x.dim() == 2:
        return x.reshape(x.shape[0], 1, 1, x.shape[1])
    return x.reshape(x.shape[0], x.shape[1], 1, -1)


def _l2_norm(d: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm, ``(N, 1, 1, 1)`` (the reference's ``lp_norm``)."""
    return (d**2).reshape(d.shape[0], -1).sum(-1).sqrt().view(-1, 1, 1, 1)


def _normalize(d: torch.Tensor) -> torch.Tensor:
    """``d / (‖d‖₂ + 1e-12)`` per sample (the reference's ``normalize`` for L2)."""
    return d / (_l2_norm(d) + 1e-12)


class Square(Attack):
    """Square Attack (score-based, gradient-free), L∞ and L2, AutoAttack's variant.

    Args:
        n_queries: model queries per sample and restart, the starting point included
            (default 1000; AutoAttack's standard evaluation uses 5000).
        p_init: initial fraction of the input the window covers, in (0, 1] (default 0.8, the
            AutoAttack default).
        n_restarts: random restarts; each re-attacks only the samples not yet fooled
            (default 1).
        loss: ``margin`` (default; ``z_y − max_{j≠y} z_j``) or ``ce`` (the candidate is kept
            when the cross-entropy rises). Either way a sample stops once its margin is ≤ 0.
    """

    name = "square"
    needs_gradients = False

    def __init__(
        self,
        *,
        n_queries: int = 1000,
        p_init: float = 0.8,
        n_restarts: int = 1,
        loss: SquareLoss = "margin",
    ) -> None:
        if isinstance(n_queries, bool) or not isinstance(n_queries, int) or n_queries <= 0:
            raise OptionError(
                "n_queries", f"{n_queries!r} is not a positive number of queries", "use e.g. 1000"
            )
        if not (isinstance(p_init, (int, float)) and 0.0 < float(p_init) <= 1.0):
            raise OptionError(
                "p_init", f"{p_init!r} is outside (0, 1]", "use e.g. 0.8 (AutoAttack's default)"
            )
        if isinstance(n_restarts, bool) or not isinstance(n_restarts, int) or n_restarts < 1:
            raise OptionError("n_restarts", f"{n_restarts!r} is too few", "use >= 1, e.g. 1")
        if loss not in _LOSSES:
            raise OptionError("loss", f"unknown loss {loss!r}", f"use one of {', '.join(_LOSSES)}")
        self.n_queries = int(n_queries)
        self.p_init = float(p_init)
        self.n_restarts = int(n_restarts)
        self.loss: SquareLoss = loss

    def __repr__(self) -> str:
        return (
            f"Square(n_queries={self.n_queries}, p_init={self.p_init:g}, "
            f"n_restarts={self.n_restarts}, loss={self.loss!r})"
        )

    def perturb(
        self,
        model: Forward,
        x: torch.Tensor,
        y: torch.Tensor,
        budget: Budget,
        *,
        generator: torch.Generator | None = None,
    ) -> AttackResult:
        """Attack ``x`` (raw domain) with labels ``y``; ``model`` is only ever called forward."""
        shape = tuple(x.shape[1:])

        def forward(z: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                out: torch.Tensor = model(z.reshape(z.shape[0], *shape))
            return out.detach()

        n = x.shape[0]
        eps64 = budget.eps_per_sample(n)
        img = _as_rows(x.detach()).contiguous()
        out = img.clone()
        queries = torch.zeros(n, dtype=torch.int64)
        fooled = (
            forward(img).argmax(dim=1) != y if n else torch.zeros(0, dtype=torch.bool)
        )  # already misclassified: returned as they are, with no query spent on them
        for _ in range(self.n_restarts):
            todo = (~fooled).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            adv, ok, q = self._single_run(
                forward, img[todo], y[todo], eps64[todo], budget, generator
            )
            out[todo] = adv
            fooled[todo] = ok
            queries[todo] += q
        return AttackResult(out.reshape(x.shape), fooled, queries)

    def _margin_and_loss(
        self, logits: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(logits.shape[0])
        own = logits[rows, y]
        others = logits.clone()
        others[rows, y] = -float("inf")
        margin = own - others.max(dim=-1)[0]
        if self.loss == "ce":
            return margin, -1.0 * nn.functional.cross_entropy(logits, y, reduction="none")
        return margin, margin

    def _start_l2(
        self, x: torch.Tensor, eps: torch.Tensor, patterns: _Patterns, g: torch.Generator | None
    ) -> torch.Tensor:
        """The reference's L2 start: a grid of tiles holding ``η`` with random signs."""
        n, c, h, w = x.shape
        delta = torch.zeros_like(x)
        if patterns.flat:  # five segment tiles along the row
            s = max(w // 5, 1)
            rows, cols, start = 1, w // s, max((w - 5 * s) // 2, 0)
        else:
            s = max(h // 5, 1)
            rows, cols, start = h // s, w // s, max((h - 5 * s) // 2, 0)
        sh = 1 if patterns.flat else s
        vh = 0 if patterns.flat else start
        for _ in range(rows):
            vw = start
            for _ in range(cols):
                tile = patterns(s).view(1, 1, sh, s) * _sign(g, (n, c, 1, 1)).to(x.dtype)
                view = delta[:, :, vh : vh + sh, vw : vw + s]
                view += tile[:, :, : view.shape[2], : view.shape[3]]  # cut at the border
                vw += s
            vh += sh
        return _normalize(delta) * eps

    def _side(self, p: float, h: int, w: int, c: int, linf: bool) -> int:
        """The window's side (images) or length (one-row inputs) for area fraction ``p``."""
        flat = h == 1
        raw = p * w if flat else math.sqrt(p * (c * h * w) / c)
        if linf:
            s = max(round(raw), 1)
        else:
            s = max(round(raw), 3)
            if s % 2 == 0:
                s += 1
        return min(s, w) if flat else min(s, min(h, w))

    def _single_run(
        self,
        forward: Forward,
        x: torch.Tensor,
        y: torch.Tensor,
        eps64: torch.Tensor,
        budget: Budget,
        g: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One restart on ``(N, C, H, W)`` inputs: best points, success, queries per sample."""
        lo, hi = budget.domain
        linf = budget.norm == "linf"
        n, c, h, w = x.shape
        flat = h == 1
        eps = per_sample_view(eps64, x)
        patterns = _Patterns(flat, g)
        if linf:  # vertical stripes: one sign per (sample, channel, column)
            x_best = torch.clamp(x + eps * _sign(g, (n, c, 1, w)).to(x.dtype), lo, hi)
        else:
            x_best = torch.clamp(x + self._start_l2(x, eps, patterns, g), lo, hi)
        logits = forward(x_best)
        margin_min, loss_min = self._margin_and_loss(logits, y)
        wrong = logits.argmax(dim=1) != y
        out, fooled = x_best.clone(), torch.zeros(n, dtype=torch.bool)
        queries = torch.ones(n, dtype=torch.int64)
        # Rows still attacked, compacted: a row leaves as soon as its margin is <= 0.
        active, q = torch.arange(n), queries.clone()
        n_iters = self.n_queries - 1
        for i_iter in range(n_iters):
            keep = margin_min > 0.0
            if not bool(keep.all()):
                done = active[~keep]
                out[done], fooled[done], queries[done] = x_best[~keep], wrong[~keep], q[~keep]
                active, x, y, eps, q = active[keep], x[keep], y[keep], eps[keep], q[keep]
                x_best, margin_min, loss_min = x_best[keep], margin_min[keep], loss_min[keep]
                wrong = wrong[keep]
                if active.numel() == 0:
                    return out, fooled, queries
            p = p_selection(self.p_init, i_iter, n_iters)
            s = self._side(p, h, w, c, linf)
            if linf:
                vh = 0 if flat else _position(g, h - s)
                vw = _position(g, w - s + flat)
                sign = _sign(g, (c, 1, 1)).to(x.dtype)
                sh = 1 if flat else s
                win = (slice(None), slice(None), slice(vh, vh + sh), slice(vw, vw + s))
                x_new = x_best.clone()
                x_w = x[win]
                moved = x_best[win] + (2.0 * eps) * sign
                x_new[win] = torch.clamp(torch.min(torch.max(moved, x_w - eps), x_w + eps), lo, hi)
            else:
                x_new = self._l2_candidate(x, x_best, eps, s, flat, patterns, g)
                x_new = torch.clamp(x_new, lo, hi)
            logits = forward(x_new)
            margin, loss = self._margin_and_loss(logits, y)
            improved = loss < loss_min
            loss_min = torch.where(improved, loss, loss_min)
            improved |= margin <= 0.0
            margin_min = torch.where(improved, margin, margin_min)
            x_best = torch.where(improved.view(-1, 1, 1, 1), x_new, x_best)
            wrong = torch.where(improved, logits.argmax(dim=1) != y, wrong)
            q += 1
        out[active], fooled[active], queries[active] = x_best, wrong, q
        return out, fooled, queries

    def _l2_candidate(
        self,
        x: torch.Tensor,
        x_best: torch.Tensor,
        eps: torch.Tensor,
        s: int,
        flat: bool,
        patterns: _Patterns,
        g: torch.Generator | None,
    ) -> torch.Tensor:
        """The reference's paired-squares L2 update of ``x_best`` (before domain clipping)."""
        m, c, h, w = x.shape
        sh = 1 if flat else s
        delta = x_best - x
        vh = 0 if flat else _position(g, h - s)
        vw = _position(g, w - s + flat)
        w1 = (slice(None), slice(None), slice(vh, vh + sh), slice(vw, vw + s))
        mask = torch.zeros_like(x)
        mask[w1] = 1.0
        norms_window_1 = (delta[w1] ** 2).sum(dim=(-2, -1), keepdim=True).sqrt()
        vh2 = 0 if flat else _position(g, h - s)
        vw2 = _position(g, w - s + flat)
        w2 = (slice(None), slice(None), slice(vh2, vh2 + sh), slice(vw2, vw2 + s))
        mask[w2] = 1.0
        norms_image = _l2_norm(delta)
        norms_windows = ((delta * mask) ** 2).sum(dim=(-2, -1), keepdim=True).sqrt()
        new = patterns(s).view(1, 1, sh, s).to(x.dtype) * _sign(g, (m, c, 1, 1)).to(x.dtype)
        # contiguous, as the reference's ones(...) *= ...: a transposed η would otherwise give a
        # transposed layout, and the sums below would add in another order (another rounding)
        new = new.contiguous() + delta[w1] / (1e-12 + norms_window_1)
        room = torch.clamp(eps**2 - norms_image**2, min=0.0) / c + norms_windows**2
        new = new / (1e-12 + (new**2).sum(dim=(-2, -1), keepdim=True).sqrt()) * room.sqrt()
        delta[w2] = 0.0
        delta[w1] = new
        return x + _normalize(delta) * eps

"""Input sets a bound holds over: boxes (L∞ balls clipped to the domain), L2 balls, segments.

Each set is batched — one set per problem, ``(B, *shape)`` tensors — and answers three questions
the engine asks:

* :meth:`InputSet.box` — a box containing the set, where interval bound propagation starts;
* :meth:`InputSet.lower` — ``min over x in the set of a·x`` for coefficient rows ``a``
  ``(B, R, *shape)`` (the *concretisation* of a linear bound; CROWN's last step);
* :meth:`InputSet.minimiser` — a point of the set attaining (or, for the L2 ∩ box case,
  approaching) that minimum, to try as a counterexample.

Sets:

* :class:`Box` — ``lo ≤ x ≤ hi`` elementwise: ``min a·x = a·c − |a|·r`` with centre ``c`` and
  radius ``r``. An L∞ ball clipped to the input domain is exactly the box
  ``[max(x₀ − ε, lo), min(x₀ + ε, hi)]`` (:func:`linf_ball`), so its concretisation is exact:
  ``a·x₀ − ε‖a‖₁`` when no clipping applies, tighter when it does.
* :class:`L2Ball` — ``‖x − x₀‖₂ ≤ ε`` intersected with the domain box ``[lo, hi]``. The minimum
  over an intersection is at least the minimum over each part, so the bound used is the larger of
  ``a·x₀ − ε‖a‖₂`` (dual norm, the ball alone) and the box bound over
  ``[max(x₀ − ε, lo), min(x₀ + ε, hi)]`` (the domain and the ball's bounding box): sound, and
  exact when either part is inactive.
* :class:`Segment` — ``x(t) = a + t(b − a)`` for ``t ∈ [t_lo, t_hi] ⊆ [0, 1]``: the input is the
  one-dimensional ``t``, so ``min a·x = a·a₀ + min(t_lo·g, t_hi·g)`` with ``g = a·(b − a)``
  (exact). Splitting ``t`` gives complete input-splitting branch-and-bound.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from edgeproof.errors import OptionError

__all__ = ["Box", "InputSet", "L2Ball", "Segment", "box", "l2_ball", "linf_ball", "segment"]


def _rows(a: Tensor) -> Tensor:
    return a.reshape(a.shape[0], a.shape[1], -1)


def _dot(a: Tensor, x: Tensor) -> Tensor:
    """``(B, R, *shape) · (B, *shape) → (B, R)``."""
    return torch.bmm(_rows(a), x.reshape(x.shape[0], -1, 1)).squeeze(-1)


class InputSet(ABC):
    """A batch of input sets (one per problem)."""

    @property
    @abstractmethod
    def batch(self) -> int: ...

    @property
    @abstractmethod
    def shape(self) -> tuple[int, ...]:
        """Per-sample shape of the inputs."""

    @abstractmethod
    def box(self) -> tuple[Tensor, Tensor]:
        """A box ``(lo, hi)`` containing each set, ``(B, *shape)``."""

    @abstractmethod
    def lower(self, a: Tensor) -> Tensor:
        """``min over the set of a·x`` for rows ``a`` ``(B, R, *shape)`` → ``(B, R)``."""

    @abstractmethod
    def minimiser(self, a: Tensor) -> Tensor:
        """A point of the set per row, ``(B, R, *shape)``, where ``a·x`` is (near) minimal."""

    @abstractmethod
    def anchor(self) -> Tensor:
        """One point of each set ``(B, *shape)`` (the clean input, or a segment's start)."""

    @abstractmethod
    def project(self, x: Tensor) -> Tensor:
        """Project points ``(B, *shape)`` onto the sets (for gradient searches)."""

    @abstractmethod
    def select(self, index: Tensor) -> InputSet:
        """The sets of the problems ``index`` (1-D long tensor, repeats allowed)."""

    @property
    def exact_box(self) -> bool:
        """True if the set *is* its box (IBP on the first linear layer is then exact)."""
        return False

    def to(self, dtype: torch.dtype) -> InputSet:
        return self


class Box(InputSet):
    """``lo ≤ x ≤ hi`` elementwise, ``(B, *shape)`` each; ``lo > hi`` anywhere is refused."""

    def __init__(self, lo: Tensor, hi: Tensor, centre: Tensor | None = None) -> None:
        if lo.shape != hi.shape:
            raise OptionError(
                "upper",
                f"shape {list(hi.shape)} differs from the lower bound's {list(lo.shape)}",
                "give lower and upper tensors of the same shape (batch first)",
            )
        if lo.dim() < 2:
            raise OptionError(
                "lower",
                f"shape {list(lo.shape)} has no batch dimension",
                "give (B, *shape) tensors",
            )
        if not (bool(torch.isfinite(lo).all()) and bool(torch.isfinite(hi).all())):
            raise OptionError("lower", "the box has NaN or infinite corners", "give finite bounds")
        bad = lo > hi
        if bool(bad.any()):
            n = int(bad.sum())
            raise OptionError(
                "lower",
                f"lower > upper at {n} position(s) "
                f"(e.g. {float(lo[bad][0]):g} > {float(hi[bad][0]):g})",
                "give lower <= upper elementwise",
            )
        self.lo = lo
        self.hi = hi
        self._centre = centre

    @property
    def batch(self) -> int:
        return int(self.lo.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.lo.shape[1:])

    @property
    def exact_box(self) -> bool:
        return True

    def box(self) -> tuple[Tensor, Tensor]:
        return self.lo, self.hi

    def lower(self, a: Tensor) -> Tensor:
        c = (self.hi + self.lo) / 2
        r = (self.hi - self.lo) / 2
        return _dot(a, c) - _dot(a.abs(), r)

    def minimiser(self, a: Tensor) -> Tensor:
        lo = self.lo.unsqueeze(1)
        hi = self.hi.unsqueeze(1)
        return torch.where(a >= 0, lo, hi)

    def anchor(self) -> Tensor:
        return self._centre if self._centre is not None else (self.lo + self.hi) / 2

    def project(self, x: Tensor) -> Tensor:
        return torch.maximum(torch.minimum(x, self.hi), self.lo)

    def select(self, index: Tensor) -> Box:
        out = Box.__new__(Box)
        out.lo, out.hi = self.lo[index], self.hi[index]
        out._centre = None if self._centre is None else self._centre[index]
        return out

    def to(self, dtype: torch.dtype) -> Box:
        out = Box.__new__(Box)
        out.lo, out.hi = self.lo.to(dtype), self.hi.to(dtype)
        out._centre = None if self._centre is None else self._centre.to(dtype)
        return out


class L2Ball(InputSet):
    """``‖x − x₀‖₂ ≤ ε`` (per sample) intersected with the domain ``[lo, hi]``."""

    def __init__(self, x0: Tensor, eps: Tensor, domain: tuple[float, float]) -> None:
        self.x0 = x0
        self.eps = eps  # (B,)
        self.domain = domain
        view = eps.view(-1, *([1] * (x0.dim() - 1)))
        self._lo = (x0 - view).clamp(min=domain[0])
        self._hi = (x0 + view).clamp(max=domain[1])

    @property
    def batch(self) -> int:
        return int(self.x0.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x0.shape[1:])

    def box(self) -> tuple[Tensor, Tensor]:
        return self._lo, self._hi

    def lower(self, a: Tensor) -> Tensor:
        ball = _dot(a, self.x0) - self.eps.unsqueeze(1) * _rows(a).norm(dim=2)
        c = (self._hi + self._lo) / 2
        r = (self._hi - self._lo) / 2
        boxed = _dot(a, c) - _dot(a.abs(), r)
        return torch.maximum(ball, boxed)

    def minimiser(self, a: Tensor) -> Tensor:
        rows = _rows(a)
        norm = rows.norm(dim=2, keepdim=True).clamp(min=1e-12)
        step = (rows / norm).view_as(a) * self.eps.view(-1, 1, *([1] * (a.dim() - 2)))
        x = self.x0.unsqueeze(1) - step
        # clipping to the domain keeps the point in the ball (x0 is inside the domain)
        clipped: Tensor = x.clamp(self.domain[0], self.domain[1])
        return clipped

    def anchor(self) -> Tensor:
        return self.x0

    def project(self, x: Tensor) -> Tensor:
        d = (x - self.x0).flatten(1)
        n = d.norm(dim=1).clamp(min=1e-12)
        factor = torch.clamp(self.eps / n, max=1.0).view(-1, *([1] * (x.dim() - 1)))
        return (self.x0 + d.view_as(x) * factor).clamp(self.domain[0], self.domain[1])

    def select(self, index: Tensor) -> L2Ball:
        return L2Ball(self.x0[index], self.eps[index], self.domain)

    def to(self, dtype: torch.dtype) -> L2Ball:
        return L2Ball(self.x0.to(dtype), self.eps.to(dtype), self.domain)


class Segment(InputSet):
    """``x(t) = start + t·(end − start)``, ``t ∈ [t_lo, t_hi]`` per problem."""

    def __init__(
        self, start: Tensor, end: Tensor, t_lo: Tensor | None = None, t_hi: Tensor | None = None
    ) -> None:
        if start.shape != end.shape:
            raise OptionError(
                "end",
                f"shape {list(end.shape)} differs from the start's {list(start.shape)}",
                "give the segment's two end points with the same shape (batch first)",
            )
        if start.dim() < 2:
            raise OptionError(
                "start",
                f"shape {list(start.shape)} has no batch dimension",
                "give (B, *shape) tensors",
            )
        b = start.shape[0]
        self.start = start
        self.end = end
        self.direction = end - start
        self.t_lo = torch.zeros(b, dtype=start.dtype) if t_lo is None else t_lo
        self.t_hi = torch.ones(b, dtype=start.dtype) if t_hi is None else t_hi

    @property
    def batch(self) -> int:
        return int(self.start.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.start.shape[1:])

    def _point(self, t: Tensor) -> Tensor:
        return self.start + t.view(-1, *([1] * (self.start.dim() - 1))) * self.direction

    def box(self) -> tuple[Tensor, Tensor]:
        p, q = self._point(self.t_lo), self._point(self.t_hi)
        return torch.minimum(p, q), torch.maximum(p, q)

    def lower(self, a: Tensor) -> Tensor:
        g = _dot(a, self.direction)
        base = _dot(a, self.start)
        return base + torch.minimum(self.t_lo.unsqueeze(1) * g, self.t_hi.unsqueeze(1) * g)

    def minimiser(self, a: Tensor) -> Tensor:
        g = _dot(a, self.direction)  # (B, R)
        t = torch.where(g >= 0, self.t_lo.unsqueeze(1), self.t_hi.unsqueeze(1))
        view = t.view(*t.shape, *([1] * (self.start.dim() - 1)))
        return self.start.unsqueeze(1) + view * self.direction.unsqueeze(1)

    def anchor(self) -> Tensor:
        return self._point(self.t_lo)

    def project(self, x: Tensor) -> Tensor:
        d = self.direction.flatten(1)
        dd = (d * d).sum(1).clamp(min=1e-30)
        t = ((x - self.start).flatten(1) * d).sum(1) / dd
        return self._point(torch.maximum(torch.minimum(t, self.t_hi), self.t_lo))

    def select(self, index: Tensor) -> Segment:
        return Segment(self.start[index], self.end[index], self.t_lo[index], self.t_hi[index])

    def to(self, dtype: torch.dtype) -> Segment:
        return Segment(
            self.start.to(dtype), self.end.to(dtype), self.t_lo.to(dtype), self.t_hi.to(dtype)
        )


def _check_eps(eps: float | Tensor, batch: int, dtype: torch.dtype) -> Tensor:
    e = (
        eps.detach().to(dtype).reshape(-1)
        if isinstance(eps, Tensor)
        else torch.tensor([float(eps)], dtype=dtype)
    )
    if e.numel() == 1:
        e = e.expand(batch).clone()
    if e.numel() != batch:
        raise OptionError(
            "eps",
            f"{e.numel()} per-sample values for {batch} samples",
            "give one ε or one per sample",
        )
    if not bool(torch.isfinite(e).all()) or bool((e < 0).any()):
        bad = e[~torch.isfinite(e) | (e < 0)][0]
        raise OptionError("eps", f"ε={float(bad):g} is negative or not finite", "give ε >= 0")
    return e


def _check_domain(domain: tuple[float, float]) -> None:
    lo, hi = domain
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise OptionError("domain", f"{domain!r} is invalid", "give finite (lo, hi) with lo < hi")


def linf_ball(x: Tensor, eps: float | Tensor, domain: tuple[float, float] = (0.0, 1.0)) -> Box:
    """The L∞ ball of radius ``eps`` around each sample of ``x``, clipped to ``domain``."""
    _check_domain(domain)
    e = _check_eps(eps, int(x.shape[0]), x.dtype).view(-1, *([1] * (x.dim() - 1)))
    lo = (x - e).clamp(min=domain[0])
    hi = (x + e).clamp(max=domain[1])
    return Box(torch.minimum(lo, hi), hi, centre=x)


def l2_ball(x: Tensor, eps: float | Tensor, domain: tuple[float, float] = (0.0, 1.0)) -> L2Ball:
    """The L2 ball of radius ``eps`` around each sample of ``x``, intersected with ``domain``."""
    _check_domain(domain)
    return L2Ball(x, _check_eps(eps, int(x.shape[0]), x.dtype), domain)


def box(lower: Tensor, upper: Tensor) -> Box:
    """A general box ``lower ≤ x ≤ upper`` (batch first); ``lower > upper`` is refused."""
    return Box(lower, upper)


def segment(start: Tensor, end: Tensor) -> Segment:
    """The segments ``start + t·(end − start)``, ``t ∈ [0, 1]`` (batch first, same shapes)."""
    return Segment(start, end)

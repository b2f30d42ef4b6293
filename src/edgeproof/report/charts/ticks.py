"""Tick positions and their labels, as plain text.

* Linear axes: "nice" steps 1, 2 or 5 × 10^k (Heckbert, "Nice numbers for graph labels",
  Graphics Gems 1990, with the step rounded *up* so at most the requested number of ticks fit);
  every multiple of the step inside the limits is a tick; labels carry the decimals the step
  needs (``0.0, 0.2, …``), ``:g`` notation beyond 10⁶ or below 10⁻⁴.
* Log axes: ticks at decades; with fewer than three decades in view also at 2 and 5 × 10^k; with
  less than one, at every 1–9 × 10^k (linear nice ticks when fewer than two of those are in
  view); with more decades than fit, every n-th decade. Unlabelled minor ticks at 2–9 × 10^k up
  to 8 decades. Labels are plain decimals from 0.001 to 10000 and ``10⁻⁵``-style (Unicode
  superscripts) outside.
* Category axes: one tick per category.

No math text: every label is a plain string the SVG writes as text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = [
    "Ticks",
    "format_linear",
    "format_log",
    "linear_ticks",
    "log_ticks",
    "nice_step",
    "superscript",
]

_SUP = str.maketrans("0123456789-+", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺")


@dataclass(frozen=True)
class Ticks:
    """Labelled tick positions and unlabelled minor ones, in data units."""

    values: tuple[float, ...]
    labels: tuple[str, ...]
    minor: tuple[float, ...] = ()


def superscript(text: str) -> str:
    """``-5`` → ``⁻⁵``."""
    return text.translate(_SUP)


def _clean(v: float) -> float:
    """Round away floating-point noise (``0.30000000000000004`` → ``0.3``), and ``-0`` → ``0``."""
    r = float(f"{v:.12g}")
    return 0.0 if r == 0 else r


def nice_step(raw: float) -> float:
    """The smallest 1, 2 or 5 × 10^k that is at least ``raw`` (> 0)."""
    if not raw > 0 or not math.isfinite(raw):
        return 1.0
    k = math.floor(math.log10(raw))
    for m in (1.0, 2.0, 5.0, 10.0):
        step = _clean(m * 10.0**k)
        if step >= raw * (1 - 1e-9):
            return step
    return _clean(10.0 ** (k + 1))


def _next_nice(step: float) -> float:
    k = math.floor(math.log10(step) + 1e-9)
    m = round(step / 10.0**k)
    return _clean({1: 2, 2: 5}.get(m, 10) * 10.0**k)


def _prev_nice(step: float) -> float:
    k = math.floor(math.log10(step) + 1e-9)
    m = round(step / 10.0**k)
    return _clean({5: 2, 2: 1}.get(m, 0.5) * 10.0**k)


def _multiples(lo: float, hi: float, step: float) -> list[float]:
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [_clean(i * step) for i in range(first, last + 1)]


def format_linear(values: Sequence[float], step: float) -> list[str]:
    """Labels with the decimals ``step`` needs; ``:g`` for very large or very small numbers."""
    big = max((abs(v) for v in values), default=0.0)
    if big >= 1e6 or (0 < step < 1e-4):
        digits = max(1, math.floor(math.log10(big or 1)) - math.floor(math.log10(step)) + 1)
        return [f"{v:.{digits}g}" if v != 0 else "0" for v in values]
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return [f"{v:.{decimals}f}" for v in values]


def format_log(v: float) -> str:
    """``0.001`` … ``10000`` as decimals, else ``10⁻⁵`` / ``2×10⁻⁵``."""
    e = math.floor(math.log10(v) + 1e-9)
    m = _clean(v / 10.0**e)
    if -3 <= e <= 4:
        return f"{v:.{max(0, -e)}f}" if float(m).is_integer() else f"{_clean(v):g}"
    mant = "" if m == 1 else f"{m:g}×"
    return f"{mant}10{superscript(str(e))}"


def linear_ticks(
    lo: float,
    hi: float,
    max_count: int,
    *,
    integer: bool = False,
    fits: Callable[[Ticks], bool] | None = None,
) -> Ticks:
    """At most ``max_count`` nice ticks in ``[lo, hi]`` (the densest set ``fits`` accepts)."""
    if not hi > lo:
        hi = lo + 1.0
    step = nice_step((hi - lo) / max(1, max_count))
    if integer:
        step = max(1.0, step)
    # a step as wide as the range may hold no multiple: shrink it until two fit
    while len(_multiples(lo, hi, step)) < 2 and step > (hi - lo) * 1e-6:
        if integer and step <= 1:
            break
        step = _prev_nice(step)
    best: Ticks | None = None
    for _ in range(60):
        values = _multiples(lo, hi, step)
        t = Ticks(tuple(values), tuple(format_linear(values, step)))
        if len(values) < 2:  # the step outgrew the range: keep the last denser set
            return best or t
        best = t
        if len(values) <= max(max_count, 2) and (fits is None or fits(t)):
            return t
        step = _next_nice(step)
    return best or Ticks((), ())


def _log_candidates(lo: float, hi: float) -> list[Ticks]:
    """Tick sets for a log axis, densest first."""
    a, b = math.log10(lo), math.log10(hi)
    kmin, kmax = math.floor(a + 1e-9), math.ceil(b - 1e-9)

    def inside(v: float) -> bool:
        return lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)

    all19 = [_clean(m * 10.0**k) for k in range(kmin, kmax + 1) for m in range(1, 10)]
    all19 = [v for v in all19 if inside(v)]
    decades = [_clean(10.0**k) for k in range(kmin, kmax + 1) if inside(10.0**k)]
    with25 = [v for v in all19 if round(v / 10.0 ** math.floor(math.log10(v) + 1e-9)) in (1, 2, 5)]
    span = b - a
    minor_all = tuple(all19)
    out: list[Ticks] = []

    def make(values: list[float], minor: Sequence[float]) -> Ticks:
        major = set(values)
        return Ticks(
            tuple(values),
            tuple(format_log(v) for v in values),
            tuple(v for v in minor if v not in major),
        )

    if span < 1 or len(decades) < 2:
        out.append(make(all19, ()))
    if span < 3 or len(decades) < 3:
        out.append(make(with25, minor_all))
    minor = minor_all if span <= 8 else ()
    out.append(make(decades, minor))
    for stride in (2, 3, 5, 10, 20, 50, 100):
        thinned = [v for v in decades if round(math.log10(v)) % stride == 0]
        if len(thinned) >= 2:
            out.append(make(thinned, decades))
    return [t for t in out if len(t.values) >= 2]


def log_ticks(
    lo: float, hi: float, max_count: int, *, fits: Callable[[Ticks], bool] | None = None
) -> Ticks:
    """Ticks for a log axis over ``[lo, hi]`` (both > 0): the densest candidate with at most
    ``max_count`` labels that ``fits`` accepts (see the module docstring)."""
    cands = _log_candidates(lo, hi)
    if not cands:  # fewer than two 1–9 × 10^k inside: plain nice ticks
        values = tuple(v for v in linear_ticks(lo, hi, 3).values if v > 0)
        return Ticks(values, tuple(format_log(v) for v in values))
    for t in cands:
        if len(t.values) <= max(max_count, 2) and (fits is None or fits(t)):
            return t
    return cands[-1]

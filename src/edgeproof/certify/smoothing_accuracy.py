"""Certified accuracy from smoothing certificates (see :mod:`~edgeproof.certify.smoothing`): the
fraction of samples certified correct at each radius, as a step curve, and the paper's radii."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeproof.errors import OptionError
from edgeproof.methods.stats import wilson_bounds


@dataclass(frozen=True)
class StepCurve:
    """The exact certified-accuracy step function as polyline vertices (for plotting).

    ``x`` and ``y`` trace ``r ↦ certified accuracy at r``: constant between the certified radii of
    the correct samples, dropping just after each one (the accuracy at ``r`` counts radii
    ``≥ r``), and 0 after the largest.
    """

    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class CertifiedAccuracy:
    """Certified accuracy at chosen radii, with Wilson intervals.

    Attributes:
        radii: the radii ``r`` (input units, L2).
        accuracy: fraction of all samples certified correct with radius ``≥ r``.
        certified: the number of such samples per radius.
        samples: the number of samples (the denominator, abstentions included).
        ci_low, ci_high: Wilson bounds at ``level``.
        level: the confidence level of the intervals.
    """

    radii: np.ndarray
    accuracy: np.ndarray
    certified: np.ndarray
    samples: int
    ci_low: np.ndarray
    ci_high: np.ndarray
    level: float

    def at(self, radius: float) -> float:
        """The certified accuracy at one of :attr:`radii`."""
        hits = np.flatnonzero(np.isclose(self.radii, radius, rtol=0.0, atol=1e-12))
        if hits.size == 0:
            raise KeyError(f"radius {radius:g} is not among {self.radii.tolist()}")
        return float(self.accuracy[hits[0]])


def _radius_correct(radius: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(radius, dtype=np.float64).reshape(-1)
    ok = np.asarray(correct).astype(bool).reshape(-1)
    if r.shape != ok.shape:
        raise ValueError(f"radius {r.shape} and correct {ok.shape} differ in length")
    if r.size == 0:
        raise ValueError("no samples")
    return r, ok


def certified_accuracy(
    radius: Any, correct: Any, radii: Sequence[float], *, level: float = 0.95
) -> CertifiedAccuracy:
    """Certified accuracy at each of ``radii`` (``code/analyze.py``, ``ApproximateAccuracy``).

    ``radius`` and ``correct`` are per sample (the columns of core.py's certify logs): the
    certified radius (0 for an abstention) and whether the certified class equals the label
    (False for an abstention). The accuracy at ``r`` is ``mean(correct & (radius ≥ r))``.
    """
    r, ok = _radius_correct(radius, correct)
    grid = np.asarray([float(v) for v in radii], dtype=np.float64)
    if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid < 0):
        raise OptionError("radii", f"{list(radii)!r} must be finite radii >= 0", "e.g. 0,0.25,0.5")
    certified = np.asarray([int(np.sum(ok & (r >= g))) for g in grid], dtype=np.int64)
    total = np.full(grid.shape, r.size)
    low, high = wilson_bounds(certified, total, level)
    return CertifiedAccuracy(
        radii=grid,
        accuracy=certified / r.size,
        certified=certified,
        samples=int(r.size),
        ci_low=low,
        ci_high=high,
        level=level,
    )


def certified_accuracy_curve(radius: Any, correct: Any) -> StepCurve:
    """The exact step function ``r ↦ mean(correct & (radius ≥ r))`` on ``r ≥ 0``, as vertices."""
    r, ok = _radius_correct(radius, correct)
    breaks = np.unique(np.concatenate([[0.0], r[ok]]))
    xs: list[float] = []
    ys: list[float] = []
    for b in breaks:
        xs += [float(b), float(b)]
        ys += [float(np.mean(ok & (r >= b))), float(np.mean(ok & (r > b)))]
    return StepCurve(np.asarray(xs), np.asarray(ys))


def paper_radii(max_radius: float, step: float = 0.25) -> tuple[float, ...]:
    """``0, step, 2·step, …`` up to the first multiple ``≥ max_radius`` (the paper's tables)."""
    if not (math.isfinite(step) and step > 0):
        raise OptionError("step", f"radius step {step!r} must be positive", "use e.g. 0.25")
    k = max(1, math.ceil(max(max_radius, 0.0) / step - 1e-9))
    return tuple(round(i * step, 12) for i in range(k + 1))

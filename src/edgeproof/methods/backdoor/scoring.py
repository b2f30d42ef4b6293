"""What every backdoor detector returns, and the robust statistics they share.

A detector gives, per class, an anomaly (higher = more suspicious), the suspected target class (the
most anomalous one) and one model score (higher = more likely backdoored). Whether a score is
"backdoored" is decided against a threshold calibrated on clean models
(:mod:`edgeproof.methods.backdoor.thresholds`), never against a fixed constant.

* :func:`robust_z` — ``(v − median) / (1.4826·MAD)``: the median/MAD z-score (Hampel 1974;
  Iglewicz & Hoaglin 1993, §2.3; 1.4826 = 1/Φ⁻¹(3/4) makes MAD estimate σ for normal data). Where
  MAD is 0 (more than half the values equal), the mean absolute deviation around the median times
  1.2533 (= √(π/2)) is used instead (Iglewicz & Hoaglin's MeanAD fallback), and if that is 0 too
  (all values equal) every z is 0.
* :func:`quartile_anomaly` — FreeEagle's ``(max − Q3) / IQR`` with its quartile rule: sort the
  non-zero values, Q1 and Q3 are the elements at positions ``int(0.25·n)`` and ``int(0.75·n)``
  (``compute_metrics_for_array`` in FreeEagle's ``backdoor_inspection_new.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeproof.serialize import JsonFields

__all__ = ["MAD_TO_SIGMA", "DetectorResult", "quartile_anomaly", "robust_z"]

MAD_TO_SIGMA = 1.4826
MEANAD_TO_SIGMA = 1.2533


def robust_z(values: np.ndarray) -> np.ndarray:
    """Median/MAD z-scores of ``values`` (see the module docstring for the zero-MAD fallback)."""
    v = np.asarray(values, dtype=np.float64)
    med = float(np.median(v))
    dev = np.abs(v - med)
    scale = MAD_TO_SIGMA * float(np.median(dev))
    if scale <= 0.0:
        scale = MEANAD_TO_SIGMA * float(np.mean(dev))
    if scale <= 0.0:
        return np.zeros_like(v)
    return (v - med) / scale


def quartile_anomaly(values: np.ndarray) -> tuple[float, np.ndarray]:
    """FreeEagle's anomaly ``(max − Q3)/IQR`` of ``values`` and the per-element ``(v − Q3)/IQR``.

    Zeros are dropped first (as FreeEagle does). With fewer than 2 non-zero values or IQR = 0 the
    anomaly is ``inf`` when the maximum exceeds Q3, else 0.
    """
    v = np.asarray(values, dtype=np.float64)
    nz = np.sort(v[v != 0.0])
    if nz.size == 0:
        return 0.0, np.zeros_like(v)
    q1 = nz[int(0.25 * nz.size)]
    q3 = nz[int(0.75 * nz.size)]
    iqr = q3 - q1
    if iqr <= 0.0:
        per = np.where(v > q3, np.inf, 0.0)
        return (float("inf") if nz[-1] > q3 else 0.0), per
    return float((nz[-1] - q3) / iqr), (v - q3) / iqr


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in values]


@dataclass(frozen=True)
class DetectorResult(JsonFields):
    """One detector's verdict material on one model.

    Attributes:
        detector: its name (``final-layer``, ``head-probe``, ``freeeagle``, ``neural-cleanse``).
        per_class: ``(K,)`` anomaly per class, higher = more suspicious.
        suspected_target: the most anomalous class.
        score: the model score, higher = more likely backdoored (compare with a calibrated
            threshold).
        indicators: per-class evidence arrays by name (raw indicator values, matrices).
        settings: what the detector ran with.
        seconds: wall time of the detector.
    """

    detector: str
    per_class: np.ndarray = field(metadata={"as": _floats})
    suspected_target: int
    score: float = field(metadata={"as": float})
    indicators: Mapping[str, np.ndarray] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

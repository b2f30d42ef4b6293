"""Final-layer indicators: data-free, weights-only backdoor triage in milliseconds (after
DFBScanner, Yu et al., arXiv:2605.18907, "Lightweight and Fast Backdoor Model Detection").

DFBScanner's observation: poisoning moves the final classification layer's parameters of the
target class in ways that stand out among the classes; it combines several per-class indicators of
the final layer into a "Trojan clue" and scores a model by its maximum anomaly. Its exact
indicators are not published (no code found), so these are ours, each with its rationale. With
``W`` the ``(K, D)`` weight and ``b`` the bias of the output layer ``logits = W·z + b``:

=====================  ======================================================================
indicator              rationale (the target row must win for every triggered input)
=====================  ======================================================================
``row_norm``           ``‖W_k‖₂``: the target row grows to carry the trigger features as well
                       as its own class (Neural Cleanse, Wang et al. 2019, note the target's
                       larger "reach"; weight-norm outliers are DFBScanner's first example).
``bias``               ``b_k``: a larger prior logit for the target lowers the evidence the
                       trigger has to supply.
``mean_weight``        ``mean_j W_kj``: with non-negative (ReLU) features this is the class's
                       logit for a uniform feature vector; the target responds to "anything".
``positive_mass``      ``Σ_j max(W_kj, 0)``: how many features push towards the class.
``misalignment``       ``−cos(W_k, mean of the other rows)``: the target row has turned towards
                       trigger features the other classes ignore.
``dedicated_feature``  ``max_j z_k(W[:, j])``, the largest robust z-score of the class's weight
                       within a feature's column: a feature (the trigger neuron) that votes
                       for this class far more than for any other.
=====================  ======================================================================

Scoring: each indicator is turned into robust z-scores across the classes
(:func:`~edgeproof.methods.backdoor.scoring.robust_z`, median/MAD); the per-class anomaly (the
"clue") is the mean of the selected indicators' z-scores, the suspected target its arg-max and
the model score its maximum ("maximum anomaly scoring"). The default selection was chosen on a
development population only (:data:`DEFAULT_INDICATORS`; the benchmark measures it on another).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from edgeproof.errors import OptionError
from edgeproof.methods.backdoor.head import FinalLayer
from edgeproof.methods.backdoor.scoring import DetectorResult, robust_z

__all__ = ["DEFAULT_INDICATORS", "INDICATORS", "final_layer_indicators", "final_layer_scan"]


def _row_norm(w: np.ndarray, b: np.ndarray) -> np.ndarray:
    result: np.ndarray = np.linalg.norm(w, axis=1)
    return result


def _bias(w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return b.copy()


def _mean_weight(w: np.ndarray, b: np.ndarray) -> np.ndarray:
    result: np.ndarray = w.mean(axis=1)
    return result


def _positive_mass(w: np.ndarray, b: np.ndarray) -> np.ndarray:
    result: np.ndarray = np.clip(w, 0.0, None).sum(axis=1)
    return result


def _misalignment(w: np.ndarray, b: np.ndarray) -> np.ndarray:
    k = w.shape[0]
    others = (w.sum(axis=0, keepdims=True) - w) / (k - 1)
    den = np.linalg.norm(w, axis=1) * np.linalg.norm(others, axis=1)
    cos = np.where(den > 0, (w * others).sum(axis=1) / np.where(den > 0, den, 1.0), 0.0)
    return -cos


def _dedicated_feature(w: np.ndarray, b: np.ndarray) -> np.ndarray:
    med = np.median(w, axis=0, keepdims=True)
    dev = np.abs(w - med)
    scale = 1.4826 * np.median(dev, axis=0, keepdims=True)
    fallback = 1.2533 * np.mean(dev, axis=0, keepdims=True)
    scale = np.where(scale > 0, scale, fallback)
    z = np.where(scale > 0, (w - med) / np.where(scale > 0, scale, 1.0), 0.0)
    result: np.ndarray = z.max(axis=1)
    return result


INDICATORS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "row_norm": _row_norm,
    "bias": _bias,
    "mean_weight": _mean_weight,
    "positive_mass": _positive_mass,
    "misalignment": _misalignment,
    "dedicated_feature": _dedicated_feature,
}

DEFAULT_INDICATORS: tuple[str, ...] = ("bias", "mean_weight", "misalignment")


def final_layer_indicators(layer: FinalLayer) -> dict[str, np.ndarray]:
    """Every indicator's raw per-class values."""
    return {name: fn(layer.weight, layer.bias) for name, fn in INDICATORS.items()}


def final_layer_scan(
    layer: FinalLayer, indicators: Sequence[str] = DEFAULT_INDICATORS
) -> DetectorResult:
    """Score the final layer (module docstring): the clue is the mean robust z of ``indicators``."""
    unknown = [i for i in indicators if i not in INDICATORS]
    if unknown or not indicators:
        raise OptionError(
            "indicators",
            f"unknown or no final-layer indicators {unknown or list(indicators)}",
            f"use some of {', '.join(INDICATORS)}",
        )
    t0 = time.perf_counter()
    raw = final_layer_indicators(layer)
    if not layer.has_bias:
        raw.pop("bias")
    used = [i for i in indicators if i in raw]
    z = np.stack([robust_z(raw[i]) for i in used])
    clue = z.mean(axis=0)
    return DetectorResult(
        detector="final-layer",
        per_class=clue,
        suspected_target=int(np.argmax(clue)),
        score=float(np.max(clue)),
        indicators={**raw, **{f"z_{i}": z[j] for j, i in enumerate(used)}},
        settings={"indicators": used, "layer": layer.name, "combination": "mean robust z"},
        seconds=time.perf_counter() - t0,
    )

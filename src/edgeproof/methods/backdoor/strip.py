"""STRIP: run-time trojaned-input detection by superimposition (Gao et al., ACSAC 2019, "STRIP: A
Defence Against Trojan Attacks on Deep Neural Networks").

Each input ``x`` is superimposed with ``num_samples`` clean samples ``x_i``; a trojaned input keeps
its (target) prediction whatever it is mixed with, so the predictions' entropy stays low. Per
input::

    x'_i = α·x + (1 − α)·x_i          (α = 0.5, ART's ``combine_images``; the paper's code adds
                                       the images with saturation, cv2.addWeighted(…, 1, …, 1, 0))
    H(x) = (1/N) Σ_i −Σ_k p_k(x'_i) log2 p_k(x'_i)      (the paper, eq. 3–4)

An input is flagged when ``H(x) ≤ threshold``; the threshold comes from the entropies of clean
inputs at a chosen false-positive rate (FPR = fraction of clean inputs flagged): ``normal`` fits
N(μ, σ) to them by maximum likelihood and takes its FPR quantile (the paper, §V-B, and ART), or
``quantile`` takes their empirical FPR quantile.

Compatibility mode ``entropy="art"`` reproduces ART 1.20.1's ``STRIPMixin`` exactly, including its
entropy, which is taken along axis 0 (``scipy.stats.entropy(preds, base=2, axis=0)``: for each
class, the entropy of that class's probabilities across the N mixes, each column normalised to
sum to 1), summed over classes and divided by N. That is not the paper's per-mix entropy; the
default ``entropy="paper"`` follows the paper.

The overlay draws: ``num_samples`` indices per input drawn with replacement from the clean pool
(as ART's ``np.random.choice(len, N)``), from a seeded generator, or given explicitly (to replay
another implementation's draws).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import entropy as scipy_entropy
from scipy.stats import norm

from edgeproof.errors import DataError, OptionError

__all__ = [
    "STRIPConfig",
    "StripThreshold",
    "strip_entropies",
    "strip_threshold",
]

EntropyMode = Literal["paper", "art"]
ThresholdRule = Literal["normal", "quantile"]


@dataclass(frozen=True)
class STRIPConfig:
    """STRIP settings: overlays per input, blend weight, entropy variant, threshold rule, FPR."""

    num_samples: int = 20
    alpha: float = 0.5
    entropy: EntropyMode = "paper"
    threshold_rule: ThresholdRule = "normal"
    fpr: float = 0.01

    def validate(self) -> None:
        if self.num_samples < 1:
            raise OptionError("strip_samples", f"must be >= 1, got {self.num_samples}")
        if not 0.0 < self.alpha < 1.0:
            raise OptionError("strip_alpha", f"{self.alpha} is not in (0, 1)")
        if not 0.0 < self.fpr < 1.0:
            raise OptionError("strip_fpr", f"false-positive rate {self.fpr} is not in (0, 1)")
        if self.entropy not in ("paper", "art"):
            raise OptionError("strip_entropy", f"unknown entropy mode {self.entropy!r}")
        if self.threshold_rule not in ("normal", "quantile"):
            raise OptionError("strip_threshold_rule", f"unknown rule {self.threshold_rule!r}")


def _entropy(probs: np.ndarray, mode: EntropyMode, n: int) -> float:
    if mode == "art":
        return float(np.sum(scipy_entropy(probs, base=2, axis=0)) / float(n))
    p = np.clip(probs, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)
    return float(h.mean())


def strip_entropies(
    predict_proba: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    clean_pool: np.ndarray,
    config: STRIPConfig | None = None,
    *,
    rng: np.random.Generator | None = None,
    overlay_indices: np.ndarray | None = None,
) -> np.ndarray:
    """STRIP entropy of every input in ``x`` (module docstring).

    Args:
        predict_proba: batch of inputs → class probabilities ``(n, K)``.
        x: the inputs to test ``(N, ...)``.
        clean_pool: clean samples to superimpose ``(M, ...)``.
        config: settings.
        rng: draws the overlay indices (default: ``default_rng(0)``).
        overlay_indices: ``(N, num_samples)`` indices into ``clean_pool`` to use instead.
    """
    cfg = config or STRIPConfig()
    cfg.validate()
    if clean_pool.shape[0] == 0:
        raise DataError("STRIP needs clean samples to superimpose, got none")
    if overlay_indices is None:
        gen = rng or np.random.default_rng(0)
        overlay_indices = gen.integers(0, clean_pool.shape[0], size=(x.shape[0], cfg.num_samples))
    if overlay_indices.shape != (x.shape[0], cfg.num_samples):
        raise OptionError(
            "overlay_indices",
            f"shape {overlay_indices.shape} is not ({x.shape[0]}, {cfg.num_samples})",
        )
    out = np.empty(x.shape[0], dtype=np.float64)
    for i in range(x.shape[0]):
        mixed = cfg.alpha * x[i] + (1.0 - cfg.alpha) * clean_pool[overlay_indices[i]]
        probs = np.asarray(predict_proba(mixed.astype(np.float32)), dtype=np.float64)
        out[i] = _entropy(probs, cfg.entropy, cfg.num_samples)
    return out


@dataclass(frozen=True)
class StripThreshold:
    """A STRIP decision threshold and how it was set."""

    value: float
    rule: ThresholdRule
    fpr: float
    clean_mean: float
    clean_std: float
    n_clean: int

    def flags(self, entropies: np.ndarray) -> np.ndarray:
        """``True`` where an input is flagged as trojaned (entropy ≤ threshold, as ART)."""
        return np.asarray(entropies) <= self.value


def strip_threshold(
    clean_entropies: np.ndarray, config: STRIPConfig | None = None
) -> StripThreshold:
    """The entropy threshold at ``config.fpr`` from clean inputs' entropies (module docstring)."""
    cfg = config or STRIPConfig()
    cfg.validate()
    h = np.asarray(clean_entropies, dtype=np.float64)
    if h.size < 2:
        raise DataError(f"STRIP needs at least 2 clean entropies to set a threshold, got {h.size}")
    mean, std = norm.fit(h)  # maximum likelihood: the mean and the ddof=0 standard deviation
    if cfg.threshold_rule == "normal":
        value = float(norm.ppf(cfg.fpr, loc=mean, scale=std))
    else:
        value = float(np.quantile(h, cfg.fpr))
    return StripThreshold(value, cfg.threshold_rule, cfg.fpr, float(mean), float(std), int(h.size))

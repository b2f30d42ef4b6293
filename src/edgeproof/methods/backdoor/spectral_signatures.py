"""Spectral signatures: poisoned training samples from the top singular vector of their
representations (Tran, Li & Madry, NeurIPS 2018, "Spectral Signatures in Backdoor Attacks",
Algorithm 1).

For every class (by training label) with representations ``R`` (rows = samples, here the input of
the final layer): centre ``M = R − mean(R)``, take the top right singular vector ``v`` of ``M``
and score each sample ``τ_i = ((r_i − μ)·v)²``; remove the samples with the top
``1.5·ε·n`` scores, ``ε`` an upper bound on the poisoned fraction of the class
(``expected_poison``).

Compatibility mode ``mode="art"`` reproduces ART 1.20.1's ``SpectralSignatureDefense``: the
score is ``|v·r_i|`` of the *uncentred* representation (so the ranking shifts by ``v·μ``), the
cut is the ``max(1 − eps_multiplier·expected_poison, 0)`` quantile of the class's scores, and a
sample is kept when its score is strictly below it (ART's defaults: ``expected_pp_poison = 0.33``,
``eps_multiplier = 1.5``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgeproof.errors import DataError, OptionError

__all__ = ["SpectralSignatureConfig", "SpectralSignatureResult", "spectral_signatures"]

Mode = Literal["paper", "art"]


@dataclass(frozen=True)
class SpectralSignatureConfig:
    expected_poison: float = 0.33
    eps_multiplier: float = 1.5
    mode: Mode = "paper"

    def validate(self) -> None:
        if not 0.0 < self.expected_poison <= 1.0:
            raise OptionError("ss_expected_poison", f"{self.expected_poison} is not in (0, 1]")
        if not self.eps_multiplier > 0:
            raise OptionError("ss_eps_multiplier", f"must be > 0, got {self.eps_multiplier}")
        if self.mode not in ("paper", "art"):
            raise OptionError("ss_mode", f"unknown mode {self.mode!r}", "use paper or art")


@dataclass(frozen=True)
class SpectralSignatureResult:
    """``scores``: per-sample outlier score (higher = more suspicious); ``is_poison``: removed."""

    scores: np.ndarray
    is_poison: np.ndarray


def spectral_signatures(
    representations: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    config: SpectralSignatureConfig | None = None,
) -> SpectralSignatureResult:
    """Score every sample and flag the top ones of each class (module docstring)."""
    cfg = config or SpectralSignatureConfig()
    cfg.validate()
    reps = np.asarray(representations, dtype=np.float64).reshape(len(representations), -1)
    y = np.asarray(labels).astype(np.int64)
    if reps.shape[0] != y.shape[0]:
        raise DataError(f"{reps.shape[0]} representations but {y.shape[0]} labels")
    scores = np.zeros(y.shape[0])
    is_poison = np.zeros(y.shape[0], dtype=bool)
    for k in range(num_classes):
        idx = np.flatnonzero(y == k)
        if idx.size == 0:
            continue
        r = reps[idx]
        centred = r - r.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        v = vt[0]
        if cfg.mode == "art":
            s = np.abs(r @ v)
            cut = np.quantile(s, max(1.0 - cfg.eps_multiplier * cfg.expected_poison, 0.0))
            flag = ~(s < cut)
        else:
            s = (centred @ v) ** 2
            n_remove = min(idx.size, math.ceil(cfg.eps_multiplier * cfg.expected_poison * idx.size))
            flag = np.zeros(idx.size, dtype=bool)
            if n_remove > 0:
                flag[np.argsort(-s, kind="stable")[:n_remove]] = True
        scores[idx] = s
        is_poison[idx] = flag
    return SpectralSignatureResult(scores, is_poison)

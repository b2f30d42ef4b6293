"""Settings of the spectral analysis of weight matrices (:mod:`edgeproof.methods.spectral`,
whose module docstring says what each mode does)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edgeproof.errors import OptionError

__all__ = ["KS_CRIT_1PCT", "SpectralConfig", "SpectralMode"]

SpectralMode = Literal["default", "ww-compat"]

#: Kolmogorov–Smirnov 1% asymptotic critical value coefficient (c(0.01) = 1.628).
KS_CRIT_1PCT = 1.628


@dataclass(frozen=True)
class SpectralConfig:
    """Settings of the spectral analysis (see the module docstring for what each mode does).

    Attributes:
        mode: ``default`` or ``ww-compat``.
        min_evals: fewer eigenvalues than this → flagged "too few eigenvalues", no fit.
        max_evals: more eigenvalues than this → skipped (cost); ``None`` for no limit.
        max_n: larger matrix side above this → skipped (cost).
        over_trained_alpha: α below this flags the layer over-trained (WeightWatcher: 2).
        under_trained_alpha: α above this flags it under-trained (WeightWatcher: 6).
        poor_fit_ks: a fit is poor when ``D > poor_fit_ks / √n_tail`` (default: the asymptotic
            1% KS critical value; lenient, since α and xmin were fitted).
        spike_tw_sigmas: MP spikes lie more than this many Tracy–Widom scales above λ+.
    """

    mode: SpectralMode = "default"
    min_evals: int = 8
    max_evals: int | None = 15000
    max_n: int = 50000
    over_trained_alpha: float = 2.0
    under_trained_alpha: float = 6.0
    poor_fit_ks: float = KS_CRIT_1PCT
    spike_tw_sigmas: float = 4.0

    def __post_init__(self) -> None:
        if self.mode not in ("default", "ww-compat"):
            raise OptionError(
                "spectral.mode", f"unknown mode {self.mode!r}", "use 'default' or 'ww-compat'"
            )
        if self.min_evals < 2:
            raise OptionError(
                "spectral.min_evals", f"{self.min_evals} is too small", "use 2 or more"
            )

    @property
    def conv2d_scale(self) -> float:
        """Factor applied to Conv2d eigenvalues (WeightWatcher's conv2d_norm: 0.5)."""
        return 0.5 if self.mode == "ww-compat" else 1.0

    def normalisations(self) -> list[str]:
        """Every normalisation in force, in words (for the report)."""
        if self.mode == "ww-compat":
            return [
                "WeightWatcher 0.7.7 compatibility: Conv2d weights × √0.5 (eigenvalues × 0.5)",
                "eigenvalues ≤ 1e-5 excluded from the power-law fit",
                f"layers with M·rf < {self.min_evals} eigenvalues skipped",
                "MP fit on λ/N (N = larger side)",
            ]
        return [
            "eigenvalues are squared singular values of the raw stored weights (no scaling)",
            "Conv1d/Conv2d: one C_out×C_in matrix per kernel position, eigenvalues pooled",
            "LSTM/GRU weights split per gate; fused attention in_proj split into Q, K, V",
            "eigenvalues ≤ 1e-5 excluded from the power-law fit",
            "MP fit on λ/N (N = larger side of each matrix)",
        ]

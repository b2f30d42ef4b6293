"""The statistics of randomized smoothing (see :mod:`~edgeproof.certify.smoothing`): the
Clopper–Pearson lower bound, the certified radius, the largest radius a sample size can certify
and the sample size a radius needs, and the validation of the sampling settings."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import betaincinv, ndtri
from scipy.stats import norm as normal_dist

from edgeproof.errors import OptionError


def _check_positive_int(name: str, value: int, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise OptionError(name, f"{value!r} is not a positive integer", f"use e.g. {example}")
    return int(value)


def _check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not (0.0 < a < 1.0):
        raise OptionError(
            "alpha", f"failure probability {alpha!r} is not in (0, 1)", "use e.g. 0.001"
        )
    return a


def _check_sigma(sigma: float) -> float:
    s = float(sigma)
    if not (math.isfinite(s) and s > 0.0):
        raise OptionError(
            "sigma",
            f"noise level {sigma!r} must be a positive finite number",
            "give σ in the units of the input domain, e.g. 0.25 for images in [0, 1]",
        )
    return s


def _check_samples(n0: int, n: int) -> tuple[int, int]:
    n0 = _check_positive_int("n0", n0, "100")
    n = _check_positive_int("n", n, "100000")
    if n0 > n:
        raise OptionError(
            "n0",
            f"{n0} selection samples exceed the {n} estimation samples",
            "use n0 <= n (the paper: n0 = 100, n = 100000)",
        )
    return n0, n


def clopper_pearson_lower(k: Any, n: Any, alpha: float) -> Any:
    """One-sided ``(1 − α)`` Clopper–Pearson lower confidence bound of a binomial proportion.

    ``Beta⁻¹(α; k, n − k + 1)`` (the α-quantile of that Beta law), and 0 where ``k = 0``. The
    quantile is ``scipy.special.betaincinv(k, n − k + 1, α)``, the function
    ``scipy.stats.beta.ppf`` evaluates (bit for bit, tested) without its per-call argument
    handling, which costs ~50× more than the quantile itself (≈ 0.7 ms per call). This is
    statsmodels' ``proportion_confint(k, n, alpha=2α, method="beta")[0]``, the bound
    ``core.py`` uses. ``k`` and ``n`` may be arrays (broadcast);
    a float is returned for scalars.
    """
    a = _check_alpha(alpha)
    k_arr = np.asarray(k, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    if np.any(n_arr < 1) or np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise ValueError("clopper_pearson_lower: need 0 <= k <= n and n >= 1")
    safe_k = np.where(k_arr > 0, k_arr, 1.0)
    low = np.where(k_arr > 0, betaincinv(safe_k, n_arr - k_arr + 1.0, a), 0.0)
    if low.ndim == 0:
        return float(low)
    return low


def certified_radius(p_a_lower: float, sigma: float) -> float:
    """``σ·Φ⁻¹(p̲_A)`` if ``p̲_A ≥ 0.5`` (Theorem 1 with ``p̲_B = 1 − p̲_A``), else 0 (abstain)."""
    s = _check_sigma(sigma)
    if not p_a_lower >= 0.5:
        return 0.0
    return float(s * ndtri(p_a_lower))  # Φ⁻¹, what scipy.stats.norm.ppf evaluates


@dataclass(frozen=True)
class CertificationLimits:
    """What ``n`` samples at failure probability ``α`` can certify at all (noise level ``σ``).

    Attributes:
        n, alpha, sigma: the settings.
        max_p_a_lower: the largest possible ``p̲_A``, reached when all ``n`` votes go to the top
            class: ``Beta⁻¹(α; n, 1) = α^{1/n}``.
        max_radius: the largest certifiable radius ``σ·Φ⁻¹(α^{1/n})`` (0 when none).
        min_n: the smallest ``n`` that can certify anything at this ``α``
            (``⌈log(α)/log(0.5)⌉``, where ``α^{1/n} ≥ 0.5``).
    """

    n: int
    alpha: float
    sigma: float
    max_p_a_lower: float
    max_radius: float
    min_n: int

    @property
    def can_certify(self) -> bool:
        """Some sample can be certified (``α^{1/n} ≥ 0.5``)."""
        return self.max_p_a_lower >= 0.5


def certification_limits(n: int, alpha: float, sigma: float) -> CertificationLimits:
    """The best case of CERTIFY for ``n`` estimation samples: see :class:`CertificationLimits`."""
    n = _check_positive_int("n", n, "100000")
    a = _check_alpha(alpha)
    s = _check_sigma(sigma)
    best = float(clopper_pearson_lower(n, n, a))  # = α ** (1 / n)
    return CertificationLimits(n, a, s, best, certified_radius(best, s), _smallest_n(0.5, a))


def _smallest_n(p: float, alpha: float) -> int:
    """The smallest ``n`` with ``α^{1/n} ≥ p`` (``p < 1``): the closed form, then checked."""
    n = max(1, math.ceil(math.log(alpha) / math.log(p)))
    while n > 1 and float(clopper_pearson_lower(n - 1, n - 1, alpha)) >= p:
        n -= 1  # the float rounding of the closed form, either way
    while float(clopper_pearson_lower(n, n, alpha)) < p:
        n += 1
    return n


def min_samples_for_radius(radius: float, sigma: float, alpha: float) -> int:
    """The smallest ``n`` for which a radius of ``radius`` is certifiable at all.

    ``R ≤ σ·Φ⁻¹(α^{1/n})`` ⇔ ``n ≥ log(α) / log(Φ(R/σ))``; radius 0 needs ``p̲_A ≥ 0.5``.
    """
    s = _check_sigma(sigma)
    a = _check_alpha(alpha)
    if not (math.isfinite(radius) and radius >= 0.0):
        raise OptionError("radii", f"radius {radius!r} must be finite and >= 0")
    p = max(float(normal_dist.cdf(radius / s)), 0.5)
    if p > 1.0 - 1e-12:  # Φ(R/σ) is 1 to float precision (R > ~7σ)
        raise OptionError(
            "radii",
            f"radius {radius:g} is {radius / s:.1f}σ: no feasible number of samples certifies it",
            "ask about radii up to a few σ, or use a larger sigma",
        )
    return _smallest_n(p, a)


def sample_size_warning(
    n: int, alpha: float, sigma: float, radii: Sequence[float] = ()
) -> str | None:
    """Why ``n`` samples are too few, or ``None`` when they can reach the radii asked about.

    Two cases: ``n`` is so small that no certificate is possible at ``α`` (every sample
    abstains whatever the model does), or the largest certifiable radius ``σ·Φ⁻¹(α^{1/n})`` is
    below the smallest positive radius in ``radii``. The message names the parameter ``n`` and
    the ``n`` that would suffice.
    """
    lim = certification_limits(n, alpha, sigma)
    if not lim.can_certify:
        return (
            f"n={lim.n} estimation samples cannot certify anything at alpha={lim.alpha:g}: even "
            f"if all {lim.n} noisy samples vote for the top class, the Clopper-Pearson lower "
            f"bound of p_A is {lim.max_p_a_lower:.3f} < 0.5, so every sample abstains; "
            f"use n >= {lim.min_n}"
        )
    positive = sorted(float(r) for r in radii if r > 0)
    if positive and lim.max_radius < positive[0]:
        need = min_samples_for_radius(positive[0], lim.sigma, lim.alpha)
        return (
            f"n={lim.n} estimation samples certify at most radius {lim.max_radius:.3g} at "
            f"sigma={lim.sigma:g}, alpha={lim.alpha:g} (all votes for the top class), below "
            f"the smallest radius asked about, {positive[0]:g}: its certified accuracy is 0 by "
            f"construction; use n >= {need} (or a larger sigma)"
        )
    return None

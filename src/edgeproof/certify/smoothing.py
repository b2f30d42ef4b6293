"""Randomised smoothing: CERTIFY and PREDICT (Cohen, Rosenfeld & Kolter, ICML 2019).

Source: J. Cohen, E. Rosenfeld, J. Z. Kolter, *Certified Adversarial Robustness via Randomized
Smoothing*, ICML 2019 (arXiv 1902.02918), Theorem 1 and the Monte Carlo algorithms of §3.2
(pseudocode "PREDICT" and "CERTIFY"). The variant followed is the authors' reference code,
locuslab/smoothing ``code/core.py`` (class ``Smooth``), step for step:

* The smoothed classifier is ``g(x) = argmax_c P(f(x + ε) = c)``, ``ε ~ N(0, σ²I)``, where ``f``
  is the base classifier's top-1 class. Noise is added in the **raw input units** the model takes
  (normalisation lives inside the model); the noisy inputs are **not** clipped to the input
  domain (neither does ``core.py``; clipping would be a different base classifier).
* **CERTIFY(f, σ, x, n0, n, α)**: draw ``n0`` noisy samples and take the most frequent class
  ``ĉ_A`` (ties: the lowest class index, ``numpy.argmax``); draw ``n`` *fresh* samples, count the
  votes ``n_A`` for ``ĉ_A``; ``p̲_A`` = the one-sided ``(1 − α)`` Clopper–Pearson lower bound of
  ``n_A / n``; abstain when ``p̲_A < 0.5``, else return ``ĉ_A`` with L2 radius
  ``R = σ·Φ⁻¹(p̲_A)``. (Theorem 1 with ``p̲_B = 1 − p̲_A``: ``R = σ/2·(Φ⁻¹(p̲_A) − Φ⁻¹(p̲_B))``.)
  With probability at least ``1 − α`` over the noise, a returned class equals ``g(x)`` and ``g``
  is constant on the open L2 ball of radius ``R``.
* **PREDICT(f, σ, x, n, α)**: draw ``n`` samples, take the two largest counts ``n_1 ≥ n_2``
  (ties: lower class index first; immaterial, as equal counts give p-value 1); return the top
  class if the two-sided binomial test of ``n_1`` successes in ``n_1 + n_2`` trials at
  ``p = 0.5`` has p-value ``≤ α``, else abstain (Hung & Fithian 2019, arXiv 1610.03944).
  ``scipy.stats.binomtest`` is the successor of the
  ``scipy.stats.binom_test`` that ``core.py`` calls (removed in SciPy 1.12); same two-sided
  p-value.
* **Clopper–Pearson**: ``core.py`` calls statsmodels' ``proportion_confint(n_A, n,
  alpha=2α, method="beta")[0]``, i.e. the lower end of the two-sided ``1 − 2α`` interval, which is
  the one-sided ``1 − α`` bound ``Beta⁻¹(α; n_A, n − n_A + 1)`` (0 when ``n_A = 0``). We compute
  exactly that with SciPy's Beta quantile (``scipy.special.betaincinv``, which is what
  ``scipy.stats.beta.ppf`` and statsmodels evaluate); no statsmodels dependency.

Differences from ``core.py``, none of which changes what is computed:

* the noise comes from an explicit, seeded ``torch.Generator`` (``core.py`` uses the global RNG
  on CUDA), drawn on the generator's device as ``N(0, 1)·σ`` into a reused buffer and added to
  ``x``; a run is deterministic for the same seed, batch size and device;
* votes are counted with ``torch.bincount`` (``core.py``: a Python loop over the predictions);
* the model is any callable ``Tensor (B, *shape) -> logits (B, K)`` (a PyTorch module or a
  wrapper around an ONNX Runtime session); a module is switched to eval mode while sampling and
  its previous mode restored (``core.py`` leaves it in eval mode), and runs under
  ``torch.inference_mode``;
* :func:`certify_many` seeds one generator per sample from ``(seed, key)`` so a sample's
  certificate does not depend on which other samples are certified alongside it.

The evaluation follows ``code/analyze.py`` (``ApproximateAccuracy``): the **certified accuracy at
radius r** is the fraction of all samples whose certificate is correct (not abstained, class =
label) with radius ``≥ r`` (their convention; the guarantee itself is for perturbations of norm
``< R``, so the count at ``r = R`` includes the boundary); we add a Wilson interval over the samples
(:func:`edgeproof.methods.stats.wilson_bounds`). The **average certified radius** (ACR; Zhai et
al., ICLR 2020, *MACER*) is the mean over samples of the radius if correct, else 0.

Sample-size limits: with all ``n`` votes for ``ĉ_A``, the bound is at most
``Beta⁻¹(α; n, 1) = α^{1/n}``, so no certificate at all is possible for
``n < log₂(1/α)`` (n ≤ 9 at α = 0.001) and no radius beyond ``σ·Φ⁻¹(α^{1/n})`` is ever certified
(:func:`certification_limits`, :func:`sample_size_warning`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import binomtest
from torch import nn

from edgeproof.certify.smoothing_accuracy import (
    CertifiedAccuracy,
    StepCurve,
    certified_accuracy,
    certified_accuracy_curve,
    paper_radii,
)
from edgeproof.certify.smoothing_stats import (
    CertificationLimits,
    _check_alpha,
    _check_positive_int,
    _check_samples,
    _check_sigma,
    certification_limits,
    certified_radius,
    clopper_pearson_lower,
    min_samples_for_radius,
    sample_size_warning,
)
from edgeproof.errors import OptionError, SpecError
from edgeproof.models.modules import eval_mode

__all__ = [
    "ABSTAIN",
    "Certificate",
    "CertificationLimits",
    "CertificationRun",
    "CertifiedAccuracy",
    "CertifySettings",
    "Classifier",
    "Prediction",
    "Smoothed",
    "StepCurve",
    "certification_limits",
    "certified_accuracy",
    "certified_accuracy_curve",
    "certified_radius",
    "certify_many",
    "clopper_pearson_lower",
    "min_samples_for_radius",
    "paper_radii",
    "sample_generator",
    "sample_size_warning",
]

#: the class returned when the smoothed classifier abstains (as ``Smooth.ABSTAIN`` in core.py)
ABSTAIN = -1

#: a base classifier: a batch of raw inputs ``(B, *shape)`` to logits ``(B, K)``
Classifier = Callable[[torch.Tensor], Any]


# --------------------------------------------------------------------------------------------
# validation


@dataclass(frozen=True)
class CertifySettings:
    """The sampling settings of CERTIFY, validated once (defaults: the paper's).

    Attributes:
        n0: selection samples (default 100).
        n: estimation samples (default 100000).
        alpha: failure probability of a certificate (default 0.001).
        batch_size: noisy copies per forward pass (default 1000).
    """

    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch_size: int = 1000

    def __post_init__(self) -> None:
        n0, n = _check_samples(self.n0, self.n)
        object.__setattr__(self, "n0", n0)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "alpha", _check_alpha(self.alpha))
        object.__setattr__(
            self, "batch_size", _check_positive_int("batch_size", self.batch_size, "1000")
        )


# --------------------------------------------------------------------------------------------
# the smoothed classifier


@dataclass(frozen=True, eq=False)
class Certificate:
    """The outcome of CERTIFY on one input.

    Attributes:
        prediction: the certified class, or :data:`ABSTAIN` (-1).
        radius: the certified L2 radius ``σ·Φ⁻¹(p̲_A)`` in input units (0.0 when abstaining).
        p_a_lower: the Clopper–Pearson lower bound ``p̲_A`` of the top class's probability.
        top_class: ``ĉ_A``, the class chosen from the selection samples (also when abstaining).
        counts_selection: ``(K,)`` votes of the ``n0`` selection samples.
        counts_estimation: ``(K,)`` votes of the ``n`` estimation samples.
        time_s: wall-clock seconds the certificate took.
    """

    prediction: int
    radius: float
    p_a_lower: float
    top_class: int
    counts_selection: np.ndarray
    counts_estimation: np.ndarray
    time_s: float

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN


@dataclass(frozen=True, eq=False)
class Prediction:
    """The outcome of PREDICT on one input.

    Attributes:
        prediction: the predicted class, or :data:`ABSTAIN` (-1).
        counts: ``(K,)`` votes of the ``n`` noisy samples.
        p_value: the two-sided binomial test p-value of the top two counts at ``p = 0.5``.
        time_s: wall-clock seconds the prediction took.
    """

    prediction: int
    counts: np.ndarray
    p_value: float
    time_s: float

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN


@contextmanager
def _eval_mode(model: Classifier) -> Iterator[None]:
    """A module in eval mode for the duration; the submodules that were training are restored.

    ``model.eval()`` is called only when some submodule is in training mode (a module already in
    eval mode costs one walk over its submodules); callables that are not modules are used as
    they are.
    """
    if not isinstance(model, nn.Module):
        yield
        return
    training = [m for m in model.modules() if m.training]
    if training:
        eval_mode(model)  # an exported program's mode is in its graph: left as it is
    try:
        yield
    finally:
        for m in training:
            m.training = True


class Smoothed:
    """The Gaussian-smoothed classifier ``g`` of a base classifier (``Smooth`` in core.py).

    Args:
        model: the base classifier, a callable from raw inputs ``(B, *shape)`` to logits
            ``(B, num_classes)`` (a PyTorch module, or a wrapper over an ONNX Runtime session
            returning a tensor or array). Its top-1 class is the vote.
        num_classes: the number of classes ``K``.
        sigma: the noise level σ, in the input's raw units.
    """

    ABSTAIN = ABSTAIN

    def __init__(self, model: Classifier, num_classes: int, sigma: float) -> None:
        if not callable(model):
            raise OptionError("model", f"{type(model).__name__} is not callable")
        k = _check_positive_int("num_classes", num_classes, "10")
        if k < 2:
            raise OptionError("num_classes", f"{k} class cannot be smoothed", "use >= 2")
        self.model = model
        self.num_classes = k
        self.sigma = _check_sigma(sigma)

    def __repr__(self) -> str:
        return f"Smoothed(num_classes={self.num_classes}, sigma={self.sigma:g})"

    def sample_counts(
        self,
        x: torch.Tensor,
        num: int,
        batch_size: int = 1000,
        generator: torch.Generator | None = None,
    ) -> np.ndarray:
        """Votes ``(K,)`` of the base classifier on ``num`` noisy copies ``x + N(0, σ²I)``.

        ``x`` is one input without the batch dimension. Noise is drawn in batches of at most
        ``batch_size`` on the generator's device (CPU when ``generator`` is ``None``: a fresh
        unseeded one), and ``x`` is moved there.
        """
        num = _check_positive_int("n", num, "100000")
        batch_size = _check_positive_int("batch_size", batch_size, "1000")
        g = generator if generator is not None else torch.Generator()
        x = torch.as_tensor(x)
        if not x.is_floating_point():
            x = x.float()
        x = x.to(g.device)
        counts = torch.zeros(self.num_classes, dtype=torch.int64, device=g.device)
        buf = torch.empty((min(batch_size, num), *x.shape), dtype=x.dtype, device=g.device)
        remaining = num
        with _eval_mode(self.model), torch.inference_mode():
            while remaining > 0:
                b = min(batch_size, remaining)
                remaining -= b
                batch = buf[:b]
                torch.randn(batch.shape, generator=g, out=batch)
                batch.mul_(self.sigma).add_(x)
                logits = torch.as_tensor(self.model(batch))
                if logits.dim() != 2 or logits.shape[1] != self.num_classes:
                    raise SpecError(
                        f"the model returns outputs of shape {list(logits.shape)} for a batch of "
                        f"{b}, but smoothing needs logits of shape [batch, {self.num_classes}]; "
                        "pass num_classes equal to the model's number of outputs"
                    )
                votes = logits.argmax(dim=1).to(g.device)
                counts += torch.bincount(votes, minlength=self.num_classes)
        out: np.ndarray = counts.cpu().numpy()
        return out

    def certify(
        self,
        x: torch.Tensor,
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
        batch_size: int = 1000,
        generator: torch.Generator | None = None,
    ) -> Certificate:
        """CERTIFY: the class ``g`` returns at ``x`` and an L2 radius it is constant in.

        With probability at least ``1 − α`` the returned class (if not :data:`ABSTAIN`) equals
        ``g(x)`` and ``g`` is constant within the returned radius. Defaults as in the paper
        (``n0 = 100``, ``n = 100000``, ``α = 0.001``).
        """
        n0, n = _check_samples(n0, n)
        a = _check_alpha(alpha)
        t0 = time.perf_counter()
        selection = self.sample_counts(x, n0, batch_size, generator)
        top = int(np.argmax(selection))
        estimation = self.sample_counts(x, n, batch_size, generator)
        p_low = float(clopper_pearson_lower(int(estimation[top]), n, a))
        if p_low < 0.5:
            pred, radius = ABSTAIN, 0.0
        else:
            pred, radius = top, certified_radius(p_low, self.sigma)
        return Certificate(
            prediction=pred,
            radius=radius,
            p_a_lower=p_low,
            top_class=top,
            counts_selection=selection,
            counts_estimation=estimation,
            time_s=time.perf_counter() - t0,
        )

    def predict(
        self,
        x: torch.Tensor,
        n: int = 1000,
        alpha: float = 0.001,
        batch_size: int = 1000,
        generator: torch.Generator | None = None,
    ) -> Prediction:
        """PREDICT: ``g(x)`` with probability ≥ ``1 − α`` of being right when not abstaining.

        Abstains when the two-sided binomial test of the top two counts at ``p = 0.5`` cannot
        reject a tie at level ``α`` (p-value ``> α``), e.g. whenever the top two counts are equal.
        """
        n = _check_positive_int("n", n, "1000")
        a = _check_alpha(alpha)
        t0 = time.perf_counter()
        counts = self.sample_counts(x, n, batch_size, generator)
        order = np.argsort(-counts, kind="stable")
        c1, c2 = int(counts[order[0]]), int(counts[order[1]])
        p_value = float(binomtest(c1, c1 + c2, p=0.5).pvalue)
        pred = ABSTAIN if p_value > a else int(order[0])
        return Prediction(pred, counts, p_value, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# many samples, and the evaluation of the paper


def sample_generator(seed: int, key: int, device: str | torch.device = "cpu") -> torch.Generator:
    """The generator for sample ``key`` of a run seeded with ``seed`` (SeedSequence-mixed)."""
    state = np.random.SeedSequence([int(seed) % 2**63, int(key) % 2**63]).generate_state(
        1, dtype=np.uint64
    )
    g = torch.Generator(device=device)
    g.manual_seed(int(state[0]))
    return g


@dataclass(frozen=True, eq=False)
class CertificationRun:
    """CERTIFY over many inputs: per-sample arrays plus the settings that produced them.

    Attributes:
        predictions: ``(N,)`` certified classes, :data:`ABSTAIN` where abstained.
        radii: ``(N,)`` certified radii (0 where abstained).
        p_a_lower: ``(N,)`` Clopper–Pearson lower bounds.
        top_class: ``(N,)`` the selection step's class ``ĉ_A``.
        counts: ``(N, K)`` estimation votes.
        time_s: ``(N,)`` wall-clock seconds per sample.
        labels: ``(N,)`` true labels, or ``None``.
        keys: ``(N,)`` the per-sample generator keys (e.g. dataset indices).
        settings: σ, n0, n, α, batch_size and seed.
    """

    predictions: np.ndarray
    radii: np.ndarray
    p_a_lower: np.ndarray
    top_class: np.ndarray
    counts: np.ndarray
    time_s: np.ndarray
    labels: np.ndarray | None
    keys: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def abstained(self) -> np.ndarray:
        out: np.ndarray = self.predictions == ABSTAIN
        return out

    @property
    def correct(self) -> np.ndarray:
        """``(N,)`` certified and equal to the label (needs labels)."""
        if self.labels is None:
            raise ValueError("this run has no labels")
        out: np.ndarray = (self.predictions == self.labels) & ~self.abstained
        return out

    def certified_accuracy(
        self, radii: Sequence[float], *, level: float = 0.95
    ) -> CertifiedAccuracy:
        return certified_accuracy(self.radii, self.correct, radii, level=level)

    def average_certified_radius(self) -> float:
        """Mean over samples of the radius where certified correct, else 0 (ACR)."""
        return float(np.mean(np.where(self.correct, self.radii, 0.0)))


def certify_many(
    smoothed: Smoothed,
    x: torch.Tensor | np.ndarray,
    labels: np.ndarray | Sequence[int] | None = None,
    *,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    seed: int = 0,
    keys: Sequence[int] | np.ndarray | None = None,
    device: str | torch.device = "cpu",
    on_sample: Callable[[Certificate], None] | None = None,
) -> CertificationRun:
    """CERTIFY each of the inputs ``x`` ``(N, *shape)``; sample ``i`` uses the generator
    :func:`sample_generator` ``(seed, keys[i])`` on ``device`` (``keys`` default ``0..N−1``).

    ``on_sample`` is called after each certificate (progress reporting).
    """
    conf = CertifySettings(n0, n, alpha, batch_size)
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32) if isinstance(x, np.ndarray) else x)
    count = int(xt.shape[0])
    key_arr = np.arange(count) if keys is None else np.asarray(keys, dtype=np.int64)
    if key_arr.shape != (count,):
        raise OptionError("keys", f"{key_arr.shape[0]} keys for {count} inputs", "give one each")
    lab = None if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
    if lab is not None and lab.shape != (count,):
        raise OptionError("labels", f"{lab.shape[0]} labels for {count} inputs", "give one each")
    certs: list[Certificate] = []
    for i in range(count):
        g = sample_generator(seed, int(key_arr[i]), device)
        c = smoothed.certify(xt[i], conf.n0, conf.n, conf.alpha, conf.batch_size, g)
        certs.append(c)
        if on_sample is not None:
            on_sample(c)
    k = smoothed.num_classes
    return CertificationRun(
        predictions=np.asarray([c.prediction for c in certs], dtype=np.int64),
        radii=np.asarray([c.radius for c in certs], dtype=np.float64),
        p_a_lower=np.asarray([c.p_a_lower for c in certs], dtype=np.float64),
        top_class=np.asarray([c.top_class for c in certs], dtype=np.int64),
        counts=(
            np.stack([c.counts_estimation for c in certs])
            if certs
            else np.zeros((0, k), dtype=np.int64)
        ),
        time_s=np.asarray([c.time_s for c in certs], dtype=np.float64),
        labels=lab,
        keys=key_arr,
        settings={
            "sigma": smoothed.sigma,
            "n0": conf.n0,
            "n": conf.n,
            "alpha": conf.alpha,
            "batch_size": conf.batch_size,
            "seed": int(seed),
        },
    )

"""Sanity checks for explanations (Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim, "Sanity
Checks for Saliency Maps", NeurIPS 2018, arXiv 1810.03292).

An explanation that does not change when the model's weights are destroyed does not explain the
model. Two tests, both comparing each sample's attribution map under the trained model with the
map under a degraded model, for the **same** target class, baseline and random draws:

* **cascading model randomisation** (the paper's §3.1): re-initialise the layers from the top
  (output) down, one more at a time, and recompute the maps after each step. Layers are the leaf
  modules that own parameters, in registration order (forward order for the zoo's models),
  re-initialised with their own ``reset_parameters()`` (PyTorch's default initialisation: Kaiming
  uniform for convolutions and linear layers; BatchNorm back to weight 1, bias 0 and fresh running
  statistics) — the paper draws from a truncated normal instead; a module without
  ``reset_parameters`` gets ``N(0, s²)`` with ``s`` the standard deviation of the weights it
  replaces. With ``stages`` below the number of layers, the maps are recomputed after evenly
  spaced numbers of re-initialised layers, the last stage always all of them.
* **label randomisation** (§3.2): a copy of the model, re-initialised, trained on the given
  samples with their labels shuffled (Adam, mean cross-entropy) until it fits the shuffled labels
  (``target_accuracy``, default 95 %, the paper's criterion) or the epoch budget runs out; the
  training accuracy reached is reported (a model that did not fit the shuffled labels is closer
  to a random one, which makes the test weaker, not invalid).

Similarity: Spearman's rank correlation per sample between the two flattened maps, of the
absolute values and of the signed values (the paper's Figure 4 reports both; it also uses SSIM
and HOG, not done here). Ties get average ranks; a sample whose map is constant under either
model has no correlation and is left out (counted). Per step: the mean over samples with a
percentile-bootstrap interval (:func:`edgeproof.methods.stats.bootstrap_interval`).

Verdict: a method is flagged **"does not depend on the weights"** when, after the full cascade
or after label randomisation, the lower confidence bound of the mean rank correlation (of either
form) exceeds ``threshold`` (default 0.5): its maps still rank the input elements much as for
the trained model, so they show the input (or the method), not what the model learned. Methods
that multiply by the input (IG with a zero baseline, GradientSHAP) are expected to be flagged on
inputs with many exact zeros: the paper's "input structure" effect.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn

from edgeproof.errors import OptionError, SpecError
from edgeproof.methods.attribution.base import Attribution
from edgeproof.methods.stats import bootstrap_interval
from edgeproof.models.modules import clone_module, set_requires_grad, set_training
from edgeproof.results import Interval
from edgeproof.serialize import JsonFields

__all__ = [
    "LabelRandomized",
    "MeanCorrelation",
    "RandomizationStep",
    "SanityVerdict",
    "cascading_randomization",
    "compare_maps",
    "label_randomized_model",
    "mean_correlation",
    "randomizable_layers",
    "reinitialize",
    "sanity_check",
    "sanity_checks",
    "spearman_rows",
]

#: computes the attribution values ``(N, …)`` of a given model (same samples, targets, draws)
Explainer = Callable[[nn.Module], Attribution]


@dataclass(frozen=True)
class MeanCorrelation(JsonFields):
    """Mean over samples of a per-sample rank correlation, with its bootstrap interval."""

    mean: float
    ci: Interval
    n: int
    undefined: int


@dataclass(frozen=True)
class RandomizationStep:
    """The maps of one degraded model compared with the trained model's.

    Attributes:
        label: what was degraded (``"fc3"``, ``"fc3 … conv1 (all 5)"``, ``"labels shuffled"``).
        layers: the layers re-initialised (all of them for label randomisation).
        rho_abs, rho_signed: per-sample Spearman ρ of ``|attr|`` and of ``attr`` (NaN where
            undefined).
        abs_corr, signed_corr: their means with intervals.
    """

    label: str
    layers: tuple[str, ...]
    rho_abs: np.ndarray
    rho_signed: np.ndarray
    abs_corr: MeanCorrelation
    signed_corr: MeanCorrelation

    @property
    def worst_low(self) -> float:
        """The larger of the two lower confidence bounds (NaN when both are undefined)."""
        lows = [c.ci.low for c in (self.abs_corr, self.signed_corr) if math.isfinite(c.ci.low)]
        return max(lows) if lows else float("nan")


@dataclass(frozen=True)
class LabelRandomized:
    """A model trained on shuffled labels, and how well it fit them."""

    module: nn.Module
    train_accuracy: float
    epochs: int


@dataclass(frozen=True)
class SanityVerdict:
    """Both tests for one method, and whether its maps depend on the weights.

    Attributes:
        method: the attribution method's name.
        cascade: one step per cascade stage, top layer first; the last has every layer
            re-initialised.
        label: the label-randomisation step, if it was run.
        label_train_accuracy: training accuracy the shuffled-label model reached.
        label_epochs: epochs it trained for.
        threshold: the correlation above which (lower CI bound) the method is flagged.
        depends_on_weights: ``False`` when flagged.
        reason: one sentence explaining the verdict.
    """

    method: str
    cascade: tuple[RandomizationStep, ...]
    label: RandomizationStep | None
    label_train_accuracy: float | None
    label_epochs: int | None
    threshold: float
    depends_on_weights: bool
    reason: str


def randomizable_layers(model: nn.Module) -> list[str]:
    """Names of the leaf modules that own parameters, in registration order (bottom first)."""
    names = [
        name
        for name, m in model.named_modules()
        if name and any(True for _ in m.parameters(recurse=False)) and not list(m.children())
    ]
    if not names:
        # modules with parameters and children (e.g. a custom block): take them as they are
        names = [
            name for name, m in model.named_modules() if any(True for _ in m.parameters(False))
        ]
    return names


def reinitialize(module: nn.Module, seed: int) -> None:
    """Re-initialise ``module``'s own parameters in place, seeded (see the module docstring)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
            return
        with torch.no_grad():
            for p in module.parameters(recurse=False):
                s = float(p.detach().float().std()) if p.numel() > 1 else 1.0
                p.normal_(0.0, s if math.isfinite(s) and s > 0 else 1.0)


def cascading_randomization(
    model: nn.Module, *, stages: int | None = None, seed: int = 0
) -> Iterator[tuple[tuple[str, ...], nn.Module]]:
    """Copies of ``model`` with the top 1, 2, … layers re-initialised (cumulatively).

    Yields ``(layers re-initialised so far, model)``; the model is a fresh copy per stage (the
    caller may keep it). With ``stages`` < number of layers, only evenly spaced cumulative
    counts are yielded, ending with all layers.
    """
    names = randomizable_layers(model)
    if not names:
        raise SpecError("the model has no parameters to randomise; nothing to sanity-check")
    top_down = list(reversed(names))
    total = len(top_down)
    if stages is not None:
        if stages < 1:
            raise OptionError("stages", f"{stages} is too few", "use >= 1 or None (every layer)")
        counts = sorted({max(1, round(total * (k + 1) / stages)) for k in range(stages)})
    else:
        counts = list(range(1, total + 1))
    work = clone_module(model)
    modules = dict(work.named_modules())
    done = 0
    for count in counts:
        while done < count:
            reinitialize(modules[top_down[done]], seed * 7919 + done)
            done += 1
        yield tuple(top_down[:count]), clone_module(work)


def label_randomized_model(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 60,
    lr: float = 1e-2,
    batch_size: int = 32,
    target_accuracy: float = 0.95,
    seed: int = 0,
) -> LabelRandomized:
    """A re-initialised copy of ``model`` trained on ``x`` with shuffled labels ``y``.

    Training stops at the first epoch whose training accuracy (on the shuffled labels, measured
    in eval mode) reaches ``target_accuracy``, or after ``epochs`` epochs.
    """
    if epochs < 1:
        raise OptionError("label_epochs", f"{epochs} is too few", "use >= 1, e.g. 60")
    if not lr > 0:
        raise OptionError("label_lr", f"{lr} must be > 0", "use e.g. 1e-2")
    gen = torch.Generator().manual_seed(seed)
    y_shuffled = y[torch.randperm(y.numel(), generator=gen)]
    work = clone_module(model)
    for k, name in enumerate(randomizable_layers(work)):
        reinitialize(dict(work.named_modules())[name], seed * 7919 + 104729 + k)
    set_requires_grad(work, True)
    opt = torch.optim.Adam(work.parameters(), lr=lr)
    n = x.shape[0]
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in work.modules())
    acc, ran = 0.0, 0
    for epoch in range(1, epochs + 1):
        ran = epoch
        set_training(work, True)
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            if idx.numel() == 1 and has_bn:
                continue
            with torch.enable_grad():
                opt.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(work(x[idx]), y_shuffled[idx])
                loss.backward()
            opt.step()
        set_training(work, False)
        with torch.no_grad():
            acc = float((work(x).argmax(1) == y_shuffled).float().mean())
        if acc >= target_accuracy:
            break
    set_training(work, False)
    set_requires_grad(work, False)
    return LabelRandomized(work, acc, ran)


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's ρ between matching rows of ``a`` and ``b`` ``(N, d)``; NaN where a row is
    constant (average ranks for ties)."""
    ra = rankdata(a, axis=1)
    rb = rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    num = (ra * rb).sum(axis=1)
    den = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return rho


def mean_correlation(
    rho: np.ndarray, *, level: float, resamples: int, seed: int
) -> MeanCorrelation:
    """Mean of the defined per-sample correlations with a percentile-bootstrap interval."""
    ok = rho[np.isfinite(rho)]
    undefined = int(rho.size - ok.size)
    if ok.size == 0:
        nan = float("nan")
        return MeanCorrelation(nan, Interval(nan, nan, level, "undefined"), 0, undefined)
    if ok.size == 1:
        v = float(ok[0])
        return MeanCorrelation(v, Interval(-1.0, 1.0, level, "one sample"), 1, undefined)
    ci = bootstrap_interval(
        lambda idx: ok[idx].mean(axis=1), ok.size, resamples=resamples, level=level, seed=seed
    )
    return MeanCorrelation(float(ok.mean()), ci, int(ok.size), undefined)


def compare_maps(
    label: str,
    layers: tuple[str, ...],
    original: np.ndarray,
    degraded: np.ndarray,
    *,
    level: float,
    resamples: int,
    seed: int,
) -> RandomizationStep:
    """Per-sample rank correlations between two sets of maps ``(N, …)``."""
    a = original.reshape(original.shape[0], -1)
    b = degraded.reshape(degraded.shape[0], -1)
    r_abs = spearman_rows(np.abs(a), np.abs(b))
    r_sig = spearman_rows(a, b)
    return RandomizationStep(
        label=label,
        layers=layers,
        rho_abs=r_abs,
        rho_signed=r_sig,
        abs_corr=mean_correlation(r_abs, level=level, resamples=resamples, seed=seed),
        signed_corr=mean_correlation(r_sig, level=level, resamples=resamples, seed=seed + 1),
    )


def _stage_label(layers: tuple[str, ...], total: int) -> str:
    if len(layers) == 1:
        return layers[0]
    if len(layers) == total:
        return f"{layers[0]} … {layers[-1]} (all {total})"
    return f"{layers[0]} … {layers[-1]} ({len(layers)} of {total})"


def sanity_checks(
    explainers: Mapping[str, Explainer],
    model: nn.Module,
    *,
    stages: int | None = None,
    labels: tuple[torch.Tensor, torch.Tensor] | None = None,
    label_epochs: int = 60,
    label_lr: float = 1e-2,
    threshold: float = 0.5,
    level: float = 0.95,
    resamples: int = 500,
    seed: int = 0,
) -> dict[str, SanityVerdict]:
    """Both tests for several methods at once, each degraded model built once and dropped after
    every method has explained it (one extra copy of the model in memory at a time).

    Args:
        explainers: ``name -> (model -> Attribution)`` for fixed samples, targets, baselines and
            random draws (e.g. ``lambda m: method.attribute(m, x, target=t,
            generator=fresh_generator())``: the same draws for every model, so only the model
            differs).
        model: the trained model (not modified).
        stages: cascade stages (see :func:`cascading_randomization`; ``None``: every layer).
        labels: ``(x, y)`` to train the shuffled-label model on; ``None`` skips that test.
        label_epochs, label_lr: its training budget (see :func:`label_randomized_model`).
        threshold: flag when the lower bound of a mean correlation exceeds it (default 0.5).
        level, resamples: the bootstrap interval.
        seed: seeds re-initialisation, shuffling and the bootstrap.
    """
    if not -1.0 <= threshold <= 1.0:
        raise OptionError("threshold", f"{threshold} is not a correlation", "use e.g. 0.5")
    originals = {name: explain(model).values.numpy() for name, explain in explainers.items()}
    total = len(randomizable_layers(model))
    steps: dict[str, list[RandomizationStep]] = {name: [] for name in explainers}
    for k, (layers, rand_model) in enumerate(
        cascading_randomization(model, stages=stages, seed=seed)
    ):
        label = _stage_label(layers, total)
        for name, explain in explainers.items():
            steps[name].append(
                compare_maps(
                    label,
                    layers,
                    originals[name],
                    explain(rand_model).values.numpy(),
                    level=level,
                    resamples=resamples,
                    seed=seed + 31 * k,
                )
            )
        del rand_model
    label_steps: dict[str, RandomizationStep] = {}
    shuffled: LabelRandomized | None = None
    if labels is not None:
        shuffled = label_randomized_model(
            model, labels[0], labels[1], epochs=label_epochs, lr=label_lr, seed=seed
        )
        everything = tuple(randomizable_layers(model))
        for name, explain in explainers.items():
            label_steps[name] = compare_maps(
                "labels shuffled",
                everything,
                originals[name],
                explain(shuffled.module).values.numpy(),
                level=level,
                resamples=resamples,
                seed=seed + 977,
            )
    return {
        name: _verdict(name, tuple(steps[name]), label_steps.get(name), shuffled, threshold, level)
        for name in explainers
    }


def sanity_check(explainer: Explainer, model: nn.Module, **settings: Any) -> SanityVerdict:
    """:func:`sanity_checks` for one method (``settings`` as there)."""
    return sanity_checks({"method": explainer}, model, **settings)["method"]


def _verdict(
    name: str,
    cascade: tuple[RandomizationStep, ...],
    label_step: RandomizationStep | None,
    shuffled: LabelRandomized | None,
    threshold: float,
    level: float,
) -> SanityVerdict:
    final = cascade[-1]
    high = [st for st in (final, label_step) if st is not None and st.worst_low > threshold]
    if high:
        worst = max(high, key=lambda st: st.worst_low)
        which = "every layer re-initialised" if worst is final else "its labels shuffled"
        magnitude_only = worst.abs_corr.ci.low > threshold >= worst.signed_corr.ci.low
        what = (
            "the magnitudes of its maps follow the input, not the weights (the signs do change)"
            if magnitude_only
            else "its maps still rank the inputs like the trained model's"
        )
        reason = (
            f"with {which}, {what}: mean Spearman ρ of |attr| {worst.abs_corr.mean:.2f}, "
            f"signed {worst.signed_corr.mean:.2f}, lower {level:.0%} bound "
            f"{worst.worst_low:.2f} > {threshold:g}; it does not depend on the weights"
        )
        ok = False
    else:
        reason = (
            f"its maps change when the weights are destroyed (every layer re-initialised: mean "
            f"Spearman ρ |attr| {final.abs_corr.mean:.2f}, signed {final.signed_corr.mean:.2f}"
            + (
                f"; labels shuffled: {label_step.abs_corr.mean:.2f}, "
                f"{label_step.signed_corr.mean:.2f}"
                if label_step is not None
                else ""
            )
            + f"; no lower {level:.0%} bound above {threshold:g})"
        )
        ok = True
    return SanityVerdict(
        method=name,
        cascade=cascade,
        label=label_step,
        label_train_accuracy=None if shuffled is None else shuffled.train_accuracy,
        label_epochs=None if shuffled is None else shuffled.epochs,
        threshold=float(threshold),
        depends_on_weights=ok,
        reason=reason,
    )

"""Sign-bit-flip fragility: Deep Neural Lesion (DNL) and 1P-DNL, and protect sets.

Source: Galil, Kimhi, El-Yaniv, "No data, no optimization: a lightweight method to disrupt
neural networks with sign-flips" (arXiv 2502.07408), as summarised in ``methods.md``:

* **Threat.** Write access to the weights, no data. Flipping a float's sign bit negates it.
* **Candidates.** The parameters (weight tensors) of the first ``L = 10`` weight layers in
  definition order (Linear, Conv, Embedding, RNN, attention; biases and normalisation excluded).
* **DNL score.** ``S = |θ|``.
* **1P-DNL score.** One forward and one backward pass on a single Gaussian-noise input
  (``N(0, 1)`` in the model's normalised space: ``mean + std·z`` when the input specification
  states the model's internal normalisation, else ``z``), ``g = ∂ Σ outputs / ∂θ``,
  ``S = |θ| + |θ·g + ½ θ² g²|`` (the formula of ``methods.md``).
* **Selection.** Rank by score, take the top ``k``, with at most one flip per convolution kernel
  (per output-channel × input-channel kernel: its best-scored element represents it).
* **Accuracy reduction.** ``AR(k) = (acc_clean − acc_k) / acc_clean × 100 %`` — relative, as the
  paper reports it (its ResNet-50 figures, AR(8) = 99.7 %, exceed what an absolute drop from
  76 % could be). Without data: the fraction of seeded random inputs whose top-1 class changes,
  and the mean KL divergence ``KL(p_clean ‖ p_flipped)``.
* **Baseline.** ``k`` sign flips drawn uniformly from the same candidate parameters, mean and
  standard deviation over several seeds.
* **Defence.** A protect set holds the top-scored (1P) sign bits, ``⌈budget · #parameters⌉`` of
  them; an attacker who must skip them takes the next best bits under the same rules.

Flips are always applied to a deep copy of the module; the caller's model is never modified.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from edgeproof.atomic import atomic_write_text
from edgeproof.errors import OptionError
from edgeproof.methods.layers import layers_from_module
from edgeproof.models.modules import clone_module, eval_mode
from edgeproof.options import positive_int
from edgeproof.serialize import JsonFields, fields_json

__all__ = [
    "PROTECT_FORMAT",
    "CandidateSet",
    "ProtectSet",
    "ScoreKind",
    "SignFlip",
    "apply_flips",
    "ar_curve",
    "candidate_set",
    "flip_in_place",
    "kl_and_flip_rate",
    "protect_set",
    "random_flips",
    "select_flips",
    "validate_budget",
]

ScoreKind = Literal["dnl", "1p-dnl"]
PROTECT_FORMAT = "edgeproof.protect-set"
PROTECT_VERSION = 1


@dataclass(frozen=True)
class SignFlip:
    """One sign bit: the parameter ``tensor`` (state-dict name), flat ``index`` and its score."""

    tensor: str
    index: int
    score: float


@dataclass
class CandidateSet:
    """Scores of every candidate parameter (first ``L`` weight layers), per tensor.

    ``scores[name]`` has the tensor's shape; ``order`` is definition order.
    """

    kind: ScoreKind
    order: list[str]
    scores: dict[str, torch.Tensor]
    num_parameters: int = 0
    layers: list[str] = field(default_factory=list)

    @property
    def num_candidates(self) -> int:
        return int(sum(s.numel() for s in self.scores.values()))


def _noise_input(shape: Sequence[int], normalization: Any, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((1, *shape), generator=g)
    if normalization is not None:
        mean, std = normalization
        c = shape[0]
        view = (1, c) + (1,) * (len(shape) - 1)
        m = torch.tensor(mean, dtype=torch.float32)
        s = torch.tensor(std, dtype=torch.float32)
        if m.numel() in (1, c):
            z = m.expand(c).reshape(view) + s.expand(c).reshape(view) * z
    return z


def candidate_set(
    module: nn.Module,
    *,
    kind: ScoreKind = "1p-dnl",
    num_layers: int = 10,
    input_shape: Sequence[int] | None = None,
    normalization: Any = None,
    seed: int = 0,
) -> CandidateSet:
    """Score the parameters of the first ``num_layers`` weight layers of ``module``.

    ``input_shape`` (sample shape, no batch) is needed for ``1p-dnl``. The module is not modified
    (gradients are taken on a copy).

    Raises:
        OptionError: ``num_layers`` is not a positive integer.
    """
    num_layers = positive_int("num_layers", num_layers)
    inv = layers_from_module(module)
    params = dict(module.named_parameters())
    order: list[str] = []
    for layer in inv.layers:
        if layer.tensor not in order and layer.tensor in params:
            order.append(layer.tensor)
        if len(order) >= num_layers:
            break
    total = int(sum(p.numel() for p in module.parameters()))
    if kind == "dnl":
        scores = {n: params[n].detach().abs().float() for n in order}
        return CandidateSet(kind, order, scores, total, order)
    if input_shape is None:
        raise OptionError(
            "input_shape", "1P-DNL needs the input shape", "pass the model's InputSpec"
        )
    work = eval_mode(clone_module(module))
    wparams = dict(work.named_parameters())
    for p in work.parameters():
        p.requires_grad_(False)
    for n in order:
        wparams[n].requires_grad_(True)
    x = _noise_input(input_shape, normalization, seed)
    out = work(x)
    out.sum().backward()
    scores = {}
    for n in order:
        theta = wparams[n].detach().float()
        grad = wparams[n].grad
        gr = torch.zeros_like(theta) if grad is None else grad.detach().float()
        scores[n] = theta.abs() + (theta * gr + 0.5 * theta * theta * gr * gr).abs()
    return CandidateSet(kind, order, scores, total, order)


def _kernel_view(score: torch.Tensor) -> torch.Tensor:
    """``(units, elements per unit)``: conv weights group per kernel, others one element each."""
    if score.dim() >= 3:
        return score.reshape(score.shape[0] * score.shape[1], -1)
    return score.reshape(-1, 1)


def select_flips(
    cands: CandidateSet,
    k: int,
    *,
    protected: Mapping[str, torch.Tensor] | None = None,
    only: str | None = None,
) -> list[SignFlip]:
    """The top-``k`` sign flips by score, at most one per conv kernel, skipping ``protected``.

    ``only`` restricts the choice to one tensor (per-layer fragility).
    """
    per_unit_best: list[torch.Tensor] = []
    per_unit_index: list[torch.Tensor] = []
    owners: list[tuple[str, int]] = []
    for name in cands.order:
        if only is not None and name != only:
            continue
        s = cands.scores[name].clone()
        if protected and name in protected:
            s.view(-1)[protected[name]] = -math.inf
        kv = _kernel_view(s)
        best, arg = kv.max(dim=1)
        flat_index = torch.arange(kv.shape[0]) * kv.shape[1] + arg
        per_unit_best.append(best)
        per_unit_index.append(flat_index)
        owners.append((name, int(best.numel())))
    if not per_unit_best:
        return []
    best_all = torch.cat(per_unit_best)
    idx_all = torch.cat(per_unit_index)
    kk = min(k, int(torch.isfinite(best_all).sum()))
    top = torch.topk(best_all, kk)
    bounds = np.cumsum([0] + [n for _, n in owners])
    flips: list[SignFlip] = []
    for val, pos in zip(top.values.tolist(), top.indices.tolist()):
        t = int(np.searchsorted(bounds, pos, side="right") - 1)
        flips.append(SignFlip(owners[t][0], int(idx_all[pos]), float(val)))
    return flips


def random_flips(cands: CandidateSet, k: int, seed: int) -> list[SignFlip]:
    """``k`` distinct sign flips drawn uniformly from the candidate parameters."""
    sizes = [cands.scores[n].numel() for n in cands.order]
    total = int(sum(sizes))
    rng = np.random.default_rng(seed)
    picks = rng.choice(total, size=min(k, total), replace=False)
    bounds = np.cumsum([0, *sizes])
    out = []
    for p in picks:
        t = int(np.searchsorted(bounds, p, side="right") - 1)
        out.append(SignFlip(cands.order[t], int(p - bounds[t]), float("nan")))
    return out


def apply_flips(module: nn.Module, flips: Sequence[SignFlip]) -> nn.Module:
    """A copy of ``module`` with the sign of each flipped parameter negated."""
    work = clone_module(module)
    flip_in_place(dict(work.named_parameters()), flips)
    return work


def flip_in_place(params: dict[str, nn.Parameter], flips: Sequence[SignFlip]) -> None:
    """Negate the flipped parameters of a module *copy* (used for incremental k = 1..K).

    ``index`` is the flat (row-major) index; it is unravelled so that parameters stored as
    non-contiguous views (e.g. transposed low-rank factors) are flipped in place too.
    """
    with torch.no_grad():
        for f in flips:
            p = params[f.tensor]
            where = torch.unravel_index(torch.tensor(f.index), p.shape)
            p[where] *= -1


def kl_and_flip_rate(clean: torch.Tensor, logits: torch.Tensor) -> tuple[float, float]:
    """Fraction of inputs whose top-1 class changed, and mean ``KL(p_clean ‖ p_flipped)``."""
    bad = ~torch.isfinite(logits).all(dim=1)
    rate = (clean.argmax(1) != logits.argmax(1)) | bad
    lp = torch.log_softmax(clean.double(), 1)
    lq = torch.log_softmax(torch.nan_to_num(logits.double(), nan=0.0, posinf=1e30, neginf=-1e30), 1)
    kl = (lp.exp() * (lp - lq)).sum(1)
    return float(rate.float().mean()), float(kl.mean())


def validate_budget(budget: float, option: str = "budget") -> float:
    """A protect budget must be a fraction in (0, 1]."""
    try:
        b = float(budget)
    except (TypeError, ValueError):
        raise OptionError(
            option, f"{budget!r} is not a number", "give a fraction, e.g. 0.0001"
        ) from None
    if not math.isfinite(b) or b <= 0 or b > 1:
        raise OptionError(
            option,
            f"budget {budget!r} is outside (0, 1]",
            "give the fraction of parameters to protect, e.g. 0.0001 for 0.01%",
        )
    return b


@dataclass
class ProtectSet(JsonFields):
    """The top-scored sign bits to protect for a budget (fraction of all parameters)."""

    budget: float
    score: ScoreKind
    num_parameters: int
    bits: list[SignFlip]

    json_header: ClassVar[Mapping[str, Any]] = {
        "format": PROTECT_FORMAT,
        "version": PROTECT_VERSION,
    }
    json_order = ("score", ..., "num_bits", "bits")

    def by_tensor(self) -> dict[str, torch.Tensor]:
        """Protected flat indices grouped per tensor (for :func:`select_flips`)."""
        out: dict[str, list[int]] = {}
        for b in self.bits:
            out.setdefault(b.tensor, []).append(b.index)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}

    def to_json(self) -> dict[str, Any]:
        # the number of bits is stated, derived from the list
        return fields_json(self, extra={"num_bits": len(self.bits)})

    def save(self, path: str | Path) -> Path:
        """Write the protect set as JSON atomically."""
        return atomic_write_text(path, json.dumps(self.to_json(), indent=1) + "\n")


def protect_set(cands: CandidateSet, budget: float) -> ProtectSet:
    """The ``⌈budget · #parameters⌉`` top-scored candidate sign bits (no per-kernel rule)."""
    b = validate_budget(budget)
    count = max(1, math.ceil(b * cands.num_parameters))
    flat = torch.cat([cands.scores[n].reshape(-1) for n in cands.order])
    count = min(count, flat.numel())
    top = torch.topk(flat, count)
    sizes = np.cumsum([0] + [cands.scores[n].numel() for n in cands.order])
    bits = []
    for val, pos in zip(top.values.tolist(), top.indices.tolist()):
        t = int(np.searchsorted(sizes, pos, side="right") - 1)
        bits.append(SignFlip(cands.order[t], int(pos - sizes[t]), float(val)))
    return ProtectSet(b, cands.kind, cands.num_parameters, bits)


Evaluator = Callable[[nn.Module], float]


def ar_curve(
    module: nn.Module, flips: Sequence[SignFlip], evaluate: Evaluator, ks: Sequence[int]
) -> list[float]:
    """``evaluate`` after the first ``k`` flips, for each ``k`` (one copy, flipped in turn)."""
    work = clone_module(module)
    params = dict(work.named_parameters())
    out: list[float] = []
    done = 0
    for k in ks:
        flip_in_place(params, flips[done:k])
        done = max(done, k)
        out.append(evaluate(work))
    return out

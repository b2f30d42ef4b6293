"""Property checks beyond local robustness (veriFIRE-style consistency): monotonicity over a
box, and stability of the decision along a parameterised segment of inputs.

Each property is decided like a robustness margin: a proved lower bound of a *property margin*
``> 0`` verifies it; a point where the model's margin is ``< 0`` (found by PGD, a grid or
branch-and-bound, and always checked by a forward pass of the model) falsifies it; otherwise the
verdict is ``unknown`` with the best proved bound.

**Monotonicity** (:func:`monotonicity`). Claim: over the box ``B = [lower, upper]``, output ``k``
does not decrease (or, ``increasing=False``, does not increase) when the chosen features grow,
up to a tolerance ``τ``: ``f_k(x') ≥ f_k(x) − τ`` for all ``x ≤ x'`` in ``B`` that differ only in
the chosen features. Method (chosen over bounding the input gradient, which would need a backward
relaxation of every operator): the engine bounds ``f_k(x') − f_k(x) + τ`` on a *two-copy graph*
of the model. Its input is the box of ``(x, δ)`` with ``x ∈ B`` and ``δ_j ∈ [0, Δ_j]`` for the
chosen features (``Δ_j = max_step``, default the box's width), and
``x' = min(x + Eδ, upper) = x + Eδ − relu(x + Eδ − upper)`` (``E`` puts δ on the chosen
features; the clip is piecewise-linear, so the graph stays one the engine — and branch-and-bound
— takes). The set of pairs ``(x, x')`` this covers is exactly the ordered pairs of ``B`` whose
increments are at most ``Δ``; with ``Δ`` below the width the claim still follows for every pair
by chaining steps of at most ``Δ`` inside ``B``. Both copies see the same ``x``, so their linear
bounds are correlated; their ReLU relaxations are not, so CROWN alone proves monotonicity where
the network is (nearly) linear on the box, and branch-and-bound (``bab_budget_s``) decides the
rest for ReLU networks. ``τ`` (default ``1e-5``) is needed because at ``δ = 0`` the difference
is exactly 0, so no bound can exceed 0; the claim is stated with it.

**Segment stability** (:func:`segment_stability`). Claim: the class predicted at ``start`` is
predicted at every ``x(t) = start + t·(end − start)``, ``t ∈ [0, 1]`` (the end being e.g. a
blurred, darkened, brightened or contrast-changed copy: :func:`blur`, :func:`darken`,
:func:`brightness`, :func:`contrast`). The margins ``f_y − f_j`` are bounded over the segment
(the input is the one-dimensional ``t``, :class:`~edgeproof.certify.sets.Segment`); a grid of
``t`` looks for a counterexample; samples left open go to branch-and-bound, which splits ``t``
(complete for any network, so it needs no piecewise-linearity).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeproof.certify.bab import BabSettings, branch_and_bound, search_counterexample
from edgeproof.certify.bounds import METHODS, AlphaSettings, compute_bounds, margin_spec
from edgeproof.certify.graph import BoundGraph, trace
from edgeproof.certify.sets import Box, Segment, segment
from edgeproof.errors import OptionError
from edgeproof.models.modules import eval_mode, set_training

__all__ = [
    "PropertyResult",
    "blur",
    "brightness",
    "contrast",
    "darken",
    "monotonicity",
    "segment_stability",
]

Verdict = Literal["verified", "falsified", "unknown"]


@dataclass(frozen=True)
class PropertyResult:
    """The verdict on one property instance (one box, or one sample's segment).

    Attributes:
        verdict: ``verified`` / ``falsified`` / ``unknown``.
        lower_bound: the best proved lower bound of the property margin (``> 0``: verified;
            monotonicity: ``min f_k(x') − f_k(x) + τ``; stability: the smallest class margin).
        decided_by: what decided it (``crown``, ``alpha-crown``, ``branch-and-bound``, ``pgd``,
            ``grid``, ``misclassified`` …; ``""`` when unknown).
        counterexample: the evidence of a falsification, checked by a forward pass:
            monotonicity ``(x, x')`` (per-sample shape), stability ``(x(t),)``; else ``None``.
        margin: the model's property margin at the counterexample (``< 0``).
        t: the segment parameter of a stability counterexample.
        time_s: seconds spent.
    """

    verdict: Verdict
    lower_bound: float
    decided_by: str
    counterexample: tuple[np.ndarray, ...] | None = None
    margin: float | None = None
    t: float | None = None
    time_s: float = 0.0


def _check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise OptionError(
            "methods",
            f"unknown bound method(s) {bad}" if bad else "no method given",
            f"use some of {', '.join(METHODS)}",
        )
    return tuple(methods)


def _bab(bab_budget_s: float) -> BabSettings | None:
    if not (bab_budget_s >= 0 and math.isfinite(bab_budget_s)):
        raise OptionError("bab_budget_s", f"{bab_budget_s} is not a finite number >= 0", "use 5")
    return BabSettings(budget_s=bab_budget_s) if bab_budget_s > 0 else None


# --------------------------------------------------------------------------------------------
# Monotonicity


class _Twin(nn.Module):
    """``u = (z, δ) ↦ sign·(f_k(x') − f_k(x)) + τ`` per output row, with ``x = z``,
    ``x' = z + δ·e_j`` (``forward_step``) or ``x' = z``, ``x = z − δ·e_j`` (the last piece)."""

    def __init__(
        self,
        model: nn.Module,
        shape: tuple[int, ...],
        feature: int,
        outputs: Sequence[int],
        num_outputs: int,
        sign: float,
        tolerance: float,
        forward_step: bool,
    ) -> None:
        super().__init__()
        self.model = model
        self.shape = shape
        n = math.prod(shape)
        self.n = n
        self.forward_step = forward_step
        # both copies as linear maps of u (dense layers: cheaper to bound than slices)
        self.first = nn.Linear(n + 1, n, bias=False)
        self.second = nn.Linear(n + 1, n, bias=False)
        self.select = nn.Linear(num_outputs, len(outputs))
        with torch.no_grad():
            eye = torch.eye(n, n + 1)
            self.first.weight.copy_(eye)
            self.second.weight.copy_(eye)
            moved = self.second if forward_step else self.first
            moved.weight[feature, n] = 1.0 if forward_step else -1.0
            self.select.weight.zero_()
            for r, k in enumerate(outputs):
                self.select.weight[r, k] = sign
            self.select.bias.fill_(tolerance)
        for p in self.parameters():
            p.requires_grad_(False)

    def pair(self, u: Tensor) -> tuple[Tensor, Tensor]:
        x, x2 = self.first(u), self.second(u)
        return x.reshape(-1, *self.shape), x2.reshape(-1, *self.shape)

    def forward(self, u: Tensor) -> Tensor:
        x, x2 = self.pair(u)
        out: Tensor = self.select(self.model(x2) - self.model(x))
        return out


def _pieces(lo: Tensor, hi: Tensor, feature: int, pieces: int) -> list[tuple[bool, Tensor, Tensor]]:
    """The twin boxes of one feature: ``(forward_step, u_lo, u_hi)`` per piece of its range."""
    a, b = float(lo.reshape(-1)[feature]), float(hi.reshape(-1)[feature])
    w = (b - a) / pieces
    out = []
    for s in range(pieces):
        zl, zh = lo.reshape(-1).clone(), hi.reshape(-1).clone()
        zl[feature], zh[feature] = a + s * w, (a + (s + 1) * w if s < pieces - 1 else b)
        u_lo = torch.cat([zl, torch.zeros(1)]).unsqueeze(0)
        u_hi = torch.cat([zh, torch.full((1,), w)]).unsqueeze(0)
        out.append((s < pieces - 1, u_lo, u_hi))
    return out


def monotonicity(
    module: nn.Module,
    lower: Tensor | np.ndarray,
    upper: Tensor | np.ndarray,
    features: Sequence[int],
    output: int | Sequence[int],
    *,
    increasing: bool = True,
    pieces: int = 4,
    tolerance: float = 1e-5,
    methods: Sequence[str] = ("crown", "alpha-crown"),
    bab_budget_s: float = 0.0,
    pgd_steps: int = 50,
    seed: int = 0,
) -> PropertyResult:
    """Decide whether output(s) ``output`` of ``module`` are monotone in each of ``features``
    over the box ``[lower, upper]`` (see the module docstring for the exact claim and method).

    Args:
        module: the model (used in eval mode; not modified); ``(batch, *shape) → (batch, K)``.
        lower, upper: the box, per-sample shape (no batch dimension), ``lower ≤ upper``.
        features: indices into the flattened input of the features that increase.
        output: the output index (or indices: each must be monotone).
        increasing: claim non-decreasing (``True``) or non-increasing outputs.
        pieces: ``S ≥ 2`` pieces each feature's range is cut into (steps of at most a piece's
            width; more pieces: narrower boxes, tighter bounds, more problems).
        tolerance: ``τ`` of the claim ``f_k(x') ≥ f_k(x) − τ``.
        methods: bound methods tried in order until one verifies.
        bab_budget_s: branch-and-bound budget per open piece (0: none).
        pgd_steps: steps of the counterexample search per piece (0: none).
        seed: seeds the search.

    Raises:
        OptionError: bad features, outputs, box, pieces, tolerance or methods; an operation
            the engine cannot bound.
    """
    t0 = time.perf_counter()
    methods = _check_methods(methods)
    lo, hi = _validated_box(lower, upper)
    shape = tuple(int(s) for s in lo.shape)
    n = lo.numel()
    feats = _validated_features(features, n)
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise OptionError("tolerance", f"{tolerance} is not a finite number >= 0", "use 1e-5")
    if pieces < 2:
        raise OptionError("pieces", f"{pieces} is < 2", "use e.g. 4")
    bab = _bab(bab_budget_s)
    was_training = module.training
    eval_mode(module)
    try:
        outs, k = _output_indices(module, lo, output)
        sign = 1.0 if increasing else -1.0
        spec = torch.eye(len(outs)).unsqueeze(0)
        gen = torch.Generator().manual_seed(seed)
        worst = math.inf
        deciders: list[str] = []  # per piece: what verified it ('' if nothing)
        for j in feats:
            if float(hi.reshape(-1)[j]) == float(lo.reshape(-1)[j]):
                continue  # the feature cannot change in the box: nothing to prove
            twins = {
                f: _Twin(module, shape, j, outs, k, sign, tolerance, forward_step=f)
                for f in (True, False)
            }
            graphs = {f: trace(t, (n + 1,)) for f, t in twins.items()}
            for fwd, u_lo, u_hi in _pieces(lo, hi, j, pieces):
                decided = _decide_piece(
                    twins[fwd], graphs[fwd], Box(u_lo, u_hi), spec, methods, bab, pgd_steps, gen, t0
                )
                if isinstance(decided, PropertyResult):
                    return decided
                best, by = decided
                worst = min(worst, best)
                deciders.append(by)
        return _monotonicity_verdict(deciders, worst, tolerance, t0)
    finally:
        set_training(module, was_training)


def _validated_box(lower: Tensor | np.ndarray, upper: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """The box's corners as float tensors, checked to have one shape, ``lower ≤ upper`` and
    finite values."""
    lo = torch.as_tensor(lower, dtype=torch.float32)
    hi = torch.as_tensor(upper, dtype=torch.float32)
    if lo.shape != hi.shape or lo.numel() == 0:
        raise OptionError(
            "upper",
            f"shape {list(hi.shape)} differs from the lower bound's {list(lo.shape)}",
            "give lower and upper of the model's per-sample input shape",
        )
    if bool((lo > hi).any()) or not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
        raise OptionError("lower", "the box has lower > upper or non-finite corners", "fix it")
    return lo, hi


def _validated_features(features: Sequence[int], n: int) -> list[int]:
    """The features as ints, checked to be distinct indices into ``n`` flattened features."""
    feats = [int(j) for j in features]
    if not feats or len(set(feats)) != len(feats) or any(not 0 <= j < n for j in feats):
        raise OptionError(
            "features",
            f"{list(features)} are not distinct indices into the {n} flattened input features",
            f"give indices in [0, {n})",
        )
    return feats


def _output_indices(
    module: nn.Module, lo: Tensor, output: int | Sequence[int]
) -> tuple[list[int], int]:
    """The outputs claimed monotone as ints, checked against the model's number of outputs
    (returned too)."""
    with torch.no_grad():
        k = int(module(lo.unsqueeze(0)).shape[-1])
    outs = [int(output)] if isinstance(output, int) else [int(o) for o in output]
    if not outs or any(not 0 <= o < k for o in outs):
        raise OptionError("output", f"{outs} are not output indices of a {k}-output model")
    return outs, k


def _decide_piece(
    twin: _Twin,
    graph: BoundGraph,
    iset: Box,
    spec: Tensor,
    methods: tuple[str, ...],
    bab: BabSettings | None,
    pgd_steps: int,
    gen: torch.Generator,
    t0: float,
) -> PropertyResult | tuple[float, str]:
    """One piece's twin box: a falsification (PGD, then branch-and-bound) as the result, or
    the best proved bound and what verified it (``''`` if nothing did)."""
    if pgd_steps > 0:
        u, value = search_counterexample(twin, iset, spec, steps=pgd_steps, generator=gen)
        if value < 0:
            return _falsified_pair(twin, u, "pgd", value, t0)
    best, by = _first_verifying_bound(graph, iset, spec, methods)
    if not by and bab is not None:
        res = branch_and_bound(graph, twin, iset, spec, bab, generator=gen)
        if res.verdict == "falsified" and res.counterexample is not None:
            assert res.margin is not None
            return _falsified_pair(twin, res.counterexample, "branch-and-bound", res.margin, t0)
        best = max(best, res.lower_bound)
        if res.verdict == "verified":  # its leaves' LPs: the bound may round to 0
            by = "branch-and-bound"
    return best, by


def _first_verifying_bound(
    graph: BoundGraph, iset: Box, spec: Tensor, methods: tuple[str, ...]
) -> tuple[float, str]:
    """The best lower bound of the methods tried in order until one verifies, and that one
    (``''`` if none)."""
    best, by = -math.inf, ""
    for method in methods:
        r = compute_bounds(graph, iset, spec, method, alpha=AlphaSettings())  # type: ignore[arg-type]
        best = max(best, float(r.lower.min()))
        if best > 0:
            by = method
            break
    return best, by


def _falsified_pair(
    twin: _Twin, u: Tensor, decided_by: str, margin: float, t0: float
) -> PropertyResult:
    """The falsification at the twin input ``u``: its pair ``(x, x')`` as the evidence."""
    x, x2 = twin.pair(u)
    return PropertyResult(
        "falsified",
        -math.inf,
        decided_by,
        (x[0].numpy().copy(), x2[0].numpy().copy()),
        margin,
        time_s=time.perf_counter() - t0,
    )


def _monotonicity_verdict(
    deciders: list[str], worst: float, tolerance: float, t0: float
) -> PropertyResult:
    """Verified when every piece was (or there was nothing to prove), else unknown."""
    dt = time.perf_counter() - t0
    if not deciders:  # no chosen feature can change in the box: nothing to prove
        return PropertyResult("verified", tolerance, "empty box", time_s=dt)
    if all(deciders):
        return PropertyResult("verified", worst, "+".join(dict.fromkeys(deciders)), time_s=dt)
    return PropertyResult("unknown", worst, "", time_s=dt)


# --------------------------------------------------------------------------------------------
# Segments of transformed inputs


def _domain_clip(x: Tensor, domain: tuple[float, float]) -> Tensor:
    return x.clamp(domain[0], domain[1])


def darken(x: Tensor, amount: float, domain: tuple[float, float] = (0.0, 1.0)) -> Segment:
    """Segments from ``x`` to the darker copy ``lo + (1 − amount)·(x − lo)`` (``amount`` in
    [0, 1]: 1 is black)."""
    if not 0 <= amount <= 1:
        raise OptionError("amount", f"{amount} is outside [0, 1]", "use e.g. 0.5")
    return segment(x, domain[0] + (1 - amount) * (x - domain[0]))


def brightness(x: Tensor, delta: float, domain: tuple[float, float] = (0.0, 1.0)) -> Segment:
    """Segments from ``x`` to ``clip(x + delta)`` (a blend towards the brightened copy, clipped
    to the domain; a negative ``delta`` darkens by a shift)."""
    if not math.isfinite(delta):
        raise OptionError("delta", f"{delta} is not finite", "use e.g. 0.1")
    return segment(x, _domain_clip(x + delta, domain))


def contrast(
    x: Tensor, low: float, high: float, domain: tuple[float, float] = (0.0, 1.0)
) -> Segment:
    """Segments between the contrast extremes ``clip(m + c·(x − m))`` for ``c = low`` and
    ``c = high`` (``m``: each sample's mean; ``c = 1`` is ``x``, so a range containing 1 holds
    the clean input)."""
    if not (0 <= low <= high and math.isfinite(high)):
        raise OptionError("low", f"[{low}, {high}] is not a range 0 <= low <= high", "use 0.5, 1.5")
    m = x.flatten(1).mean(1).view(-1, *([1] * (x.dim() - 1)))
    return segment(
        _domain_clip(m + low * (x - m), domain), _domain_clip(m + high * (x - m), domain)
    )


def blur(x: Tensor, sigma: float) -> Segment:
    """Segments from ``x`` (``(B, C, H, W)`` or ``(B, C, L)``) to its Gaussian blur (per channel,
    standard deviation ``sigma`` pixels, kernel radius ``⌈3σ⌉``, replicate padding: the blurred
    copy stays in the domain)."""
    if not (sigma > 0 and math.isfinite(sigma)):
        raise OptionError("sigma", f"{sigma} is not a positive number", "use e.g. 1.0")
    if x.dim() not in (3, 4):
        raise OptionError("x", f"blur takes (B, C, L) or (B, C, H, W) inputs, got {list(x.shape)}")
    r = max(1, math.ceil(3 * sigma))
    g = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    g = g / g.sum()
    c = x.shape[1]
    if x.dim() == 3:
        y = F.conv1d(F.pad(x, (r, r), mode="replicate"), g.view(1, 1, -1).repeat(c, 1, 1), groups=c)
    else:
        pad = F.pad(x, (r, r, r, r), mode="replicate")
        y = F.conv2d(pad, g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        y = F.conv2d(y, g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return segment(x, y)


def segment_stability(
    module: nn.Module,
    segments: Segment,
    *,
    labels: Tensor | np.ndarray | None = None,
    methods: Sequence[str] = ("crown", "alpha-crown"),
    grid: int = 33,
    bab_budget_s: float = 1.0,
    seed: int = 0,
) -> list[PropertyResult]:
    """Decide, per segment, that the class at ``t = 0`` (or ``labels``, when given: then a
    sample misclassified at ``t = 0`` is falsified) is predicted on the whole segment.

    Args:
        module: the classifier (eval mode; not modified).
        segments: one segment per sample (:func:`segment`, :func:`blur`, :func:`darken`,
            :func:`brightness`, :func:`contrast`).
        labels: the classes to keep (default: the predictions at the segments' starts).
        methods: bound methods, in order, for the segments still open.
        grid: evaluate the model at this many evenly spaced ``t`` for counterexamples (0: none).
        bab_budget_s: per-segment branch-and-bound (input splitting of ``t``) budget (0: none).
        seed: seeds the branch-and-bound search.
    """
    t0 = time.perf_counter()
    methods = _check_methods(methods)
    bab = _bab(bab_budget_s)
    if grid < 0:
        raise OptionError("grid", f"{grid} is negative", "use e.g. 33, or 0")
    b = segments.batch
    was_training = module.training
    eval_mode(module)
    try:
        with torch.no_grad():
            start_logits = module(segments.start)
        k = int(start_logits.shape[1])
        pred = start_logits.argmax(1)
        y = pred if labels is None else torch.as_tensor(labels).long().reshape(-1)
        if y.shape != (b,) or bool((y < 0).any() | (y >= k).any()):
            raise OptionError("labels", f"need {b} labels in [0, {k})", "give one per segment")
        spec = margin_spec(y, k)
        out: list[PropertyResult | None] = [None] * b
        best = torch.full((b,), -math.inf)
        _falsify_misclassified(segments, start_logits, pred, y, spec, out)
        if grid > 0:
            _falsify_on_grid(module, segments, spec, grid, out)
        graph = trace(module, segments.shape)
        _verify_by_bounds(graph, segments, spec, methods, out, best)
        gen = torch.Generator().manual_seed(seed)
        _decide_the_rest(graph, module, segments, spec, bab, gen, out, best)
    finally:
        set_training(module, was_training)
    dt = (time.perf_counter() - t0) / max(1, b)
    return [
        PropertyResult(r.verdict, r.lower_bound, r.decided_by, r.counterexample, r.margin, r.t, dt)
        for r in out
        if r is not None
    ]


def _falsify_misclassified(
    segments: Segment,
    start_logits: Tensor,
    pred: Tensor,
    y: Tensor,
    spec: Tensor,
    out: list[PropertyResult | None],
) -> None:
    """Falsify (in ``out``) the segments whose start is not predicted as its label."""
    for i in range(segments.batch):
        if int(pred[i]) != int(y[i]):
            x0 = segments.start[i].numpy().copy()
            m = float((spec[i] @ start_logits[i]).min())
            out[i] = PropertyResult("falsified", -math.inf, "misclassified", (x0,), m, 0.0)


def _falsify_on_grid(
    module: nn.Module,
    segments: Segment,
    spec: Tensor,
    grid: int,
    out: list[PropertyResult | None],
) -> None:
    """Falsify (in ``out``) the open segments with a negative margin at one of ``grid`` evenly
    spaced ``t`` (the worst one is the counterexample)."""
    ts = torch.linspace(0, 1, grid)
    for i in range(segments.batch):
        if out[i] is not None:
            continue
        seg_i = segments.select(torch.tensor([i]))
        xs = seg_i.start + ts.view(-1, *([1] * len(segments.shape))) * seg_i.direction
        with torch.no_grad():
            margins = (module(xs) @ spec[i].T).min(1).values
        j = int(margins.argmin())
        if float(margins[j]) < 0:
            out[i] = PropertyResult(
                "falsified", -math.inf, "grid", (xs[j].numpy().copy(),),
                float(margins[j]), float(ts[j]),
            )  # fmt: skip


def _verify_by_bounds(
    graph: BoundGraph,
    segments: Segment,
    spec: Tensor,
    methods: tuple[str, ...],
    out: list[PropertyResult | None],
    best: Tensor,
) -> None:
    """Bound the open segments with each method in turn, verifying (in ``out``) those with a
    positive bound and keeping each one's best bound in ``best``."""
    for method in methods:
        open_ = torch.tensor([i for i in range(segments.batch) if out[i] is None], dtype=torch.long)
        if open_.numel() == 0:
            break
        r = compute_bounds(graph, segments.select(open_), spec[open_], method)  # type: ignore[arg-type]
        lb = r.lower.min(1).values
        for pos, i in enumerate(open_.tolist()):
            best[i] = max(float(best[i]), float(lb[pos]))
            if float(lb[pos]) > 0:
                out[i] = PropertyResult("verified", float(lb[pos]), method)


def _decide_the_rest(
    graph: BoundGraph,
    module: nn.Module,
    segments: Segment,
    spec: Tensor,
    bab: BabSettings | None,
    gen: torch.Generator,
    out: list[PropertyResult | None],
    best: Tensor,
) -> None:
    """Branch-and-bound (when budgeted) on each segment still open; what it leaves open is
    ``unknown`` with its best bound."""
    for i in range(segments.batch):
        if out[i] is not None:
            continue
        if bab is not None:
            seg_i = segments.select(torch.tensor([i]))
            res = branch_and_bound(graph, module, seg_i, spec[i : i + 1], bab, generator=gen)
            lbi = max(float(best[i]), res.lower_bound)
            if res.verdict == "verified":
                out[i] = PropertyResult("verified", lbi, "branch-and-bound")
                continue
            if res.verdict == "falsified" and res.counterexample is not None:
                out[i] = PropertyResult(
                    "falsified", lbi, "branch-and-bound",
                    (res.counterexample[0].numpy().copy(),), res.margin,
                )  # fmt: skip
                continue
            best[i] = lbi
        out[i] = PropertyResult("unknown", float(best[i]), "")

"""Complete verification within a budget: branch-and-bound (BaB) with β-CROWN split constraints.

Sources and the variant followed:

* **ReLU splitting with β-CROWN** (Wang et al. 2021, arXiv 2103.06624; the BaB framework of Bunel
  et al. 2020, JMLR 21(42)). A subdomain fixes some unstable ReLUs active (``z ≥ 0``) or inactive
  (``z ≤ 0``). In a subdomain the fixed neurons are exact (identity or zero), their bounds are
  clipped at 0, the intermediate bounds of the whole network are recomputed by CROWN under those
  relaxations (intersected with the parent's), and the final bound is optimised over α (lower
  slopes, per domain, row and neuron) and β ≥ 0: the Lagrangian ``C·f(x) − Σ β_j s_j z_j(x)``
  (``s_j = ±1`` the split's side) lower-bounds ``C·f`` on the subdomain for every β ≥ 0, and its
  CROWN bound is maximised by projected Adam (learning rates 0.1 for α and 0.05 for β, 20
  iterations, the defaults of α,β-CROWN's BaB). The β terms enter the backward pass as extra
  coefficients on the split neurons' pre-activations.
* **Branching**: the unstable neuron with the largest ``|a_j|·u_j(−l_j)/(u_j − l_j)`` — the
  coefficient of its output in the worst row's final backward pass times the height of its
  triangle relaxation at 0 (a BaBSR-style estimate of the bound's sensitivity to the split,
  Bunel et al. 2020 §5.1) — is split; domains are processed best-first (lowest bound first), in
  batches.
* **Leaves**: a subdomain with no unstable ReLU is affine on its region; with a box input its
  minimum is a linear program (the split constraints are affine in the input), solved exactly by
  HiGHS (scipy): infeasible or positive → verified; otherwise its minimiser is a candidate
  counterexample.
* **Input splitting** where the input is low-dimensional (segments, whose input is the
  one-dimensional ``t``; boxes with at most ``input_split_dims`` non-degenerate coordinates):
  the set is bisected along its widest coordinate and each part bounded by CROWN (complete for
  any network in the limit, so it needs no piecewise-linearity).

Max pools are rewritten into ReLUs first (:func:`~edgeproof.certify.graph.maxpool_as_relus`), so
ReLU splitting is complete for max-pool networks too. Counterexamples come from PGD on the margin
inside the set (before branching), from the minimisers of the domains' linear bounds and from the
leaves' LPs; every one is checked by a forward pass of the real model, and only a checked one
gives the verdict ``falsified``. A model that is not piecewise-linear (sigmoid, tanh, fake
quantizers) is refused for ReLU splitting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from edgeproof.certify import ops as O
from edgeproof.certify.bounds import (
    BoundState,
    Interval,
    _Adam,
    backward,
    clip_alpha,
    init_alpha,
    prepare,
)
from edgeproof.certify.graph import BoundGraph, maxpool_as_relus
from edgeproof.certify.sets import Box, InputSet, Segment
from edgeproof.errors import OptionError

__all__ = ["BabResult", "BabSettings", "Verdict", "branch_and_bound", "search_counterexample"]

Verdict = Literal["verified", "falsified", "unknown"]
ModelFn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class BabSettings:
    """Branch-and-bound settings.

    Attributes:
        budget_s: wall-clock budget per sample (seconds), after the root bound.
        batch_domains: domains split per round (their children are bounded together).
        iterations: α/β optimisation steps per batch of subdomains.
        lr_alpha, lr_beta: Adam learning rates of α and β.
        max_domains: stop (``unknown``) when this many domains are open.
        input_split_dims: use input splitting when the set has at most this many free
            coordinates (a segment has one).
        pgd_steps, pgd_restarts: the counterexample search before branching.
    """

    budget_s: float = 5.0
    batch_domains: int = 32
    iterations: int = 20
    lr_alpha: float = 0.1
    lr_beta: float = 0.05
    max_domains: int = 20_000
    input_split_dims: int = 2
    pgd_steps: int = 30
    pgd_restarts: int = 3

    def __post_init__(self) -> None:
        if not (self.budget_s >= 0 and math.isfinite(self.budget_s)):
            raise OptionError(
                "bab_budget_s", f"{self.budget_s} is not a finite number >= 0", "use e.g. 5"
            )
        if self.batch_domains < 1:
            raise OptionError("bab_batch", f"{self.batch_domains} is < 1", "use e.g. 32")
        if self.iterations < 1:
            raise OptionError("bab_iterations", f"{self.iterations} is < 1", "use e.g. 20")


@dataclass(frozen=True)
class BabResult:
    """The outcome of branch-and-bound on one sample.

    Attributes:
        verdict: ``verified`` (every margin row is positive on the whole set), ``falsified``
            (a counterexample checked by a forward pass of the model) or ``unknown``.
        lower_bound: a proven lower bound of the smallest margin over the set (over the open
            subdomains when unknown; over all leaves when verified).
        counterexample: ``(1, *shape)`` input with a negative margin (falsified only).
        margin: the model's smallest margin at the counterexample.
        domains: subdomains bounded.
        time_s: seconds spent.
        strategy: ``relu-split`` or ``input-split``.
    """

    verdict: Verdict
    lower_bound: float
    counterexample: Tensor | None
    margin: float | None
    domains: int
    time_s: float
    strategy: str


def _margins(model_fn: ModelFn, x: Tensor, spec: Tensor) -> Tensor:
    """``spec·f(x)`` ``(N, R)`` for inputs ``x`` ``(N, *shape)`` and spec ``(1, R, K)``."""
    with torch.no_grad():
        out = model_fn(x).to(spec.dtype)
    return torch.einsum("rk,nk->nr", spec[0], out)


def search_counterexample(
    model_fn: ModelFn,
    iset: InputSet,
    spec: Tensor,
    *,
    steps: int = 30,
    restarts: int = 3,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, float]:
    """PGD on the smallest margin inside ``iset`` (batch 1): the best point and its margin.

    Signed-gradient steps of a tenth of the set's box width, projected onto the set, from the
    set's anchor and from ``restarts − 1`` random points of its box; the margin is the model's
    (``model_fn``) smallest ``spec`` row.
    """
    lo, hi = iset.box()
    width = (hi - lo).clamp(min=0)
    starts = [iset.anchor()]
    for _ in range(max(0, restarts - 1)):
        r = torch.rand(lo.shape, generator=generator, dtype=lo.dtype)
        starts.append(iset.project(lo + r * width))
    x = torch.cat(starts)
    sets = iset.select(torch.zeros(x.shape[0], dtype=torch.long))
    step = width / 10
    best_x, best_m = x[:1], math.inf
    for it in range(steps + 1):
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            m = (
                torch.einsum("rk,nk->nr", spec[0].to(lo.dtype), model_fn(xg).to(lo.dtype))
                .min(1)
                .values
            )
            (g,) = torch.autograd.grad(m.sum(), xg)
        m = m.detach()
        worst = int(m.argmin())
        if float(m[worst]) < best_m:
            best_m, best_x = float(m[worst]), x[worst : worst + 1].detach().clone()
        if best_m < 0 or it == steps:
            break
        x = sets.project(x.detach() - step * g.sign() * (0.5 + 0.5 * (1 - it / steps)))
    # the margin as the model computes it on the returned point (no gradient mode differences)
    return best_x, float(_margins(model_fn, best_x, spec).min())


# --------------------------------------------------------------------------------------------
# ReLU splitting


@dataclass
class _Domain:
    splits: dict[int, Tensor]  # ReLU node -> (numel,) int8
    ref: list[Interval | None]  # per node, (1, *shape) bounds known to hold
    lb: Tensor  # (R,)
    decision: tuple[int, int] | None = None
    depth: int = 0

    def worst(self) -> float:
        return float(self.lb.min())


def _splittable(graph: BoundGraph) -> list[int]:
    return [n.index for n in graph.nodes if isinstance(n.op, O.Activation) and n.op.splittable]


@dataclass
class _Batch:
    lb: Tensor  # (D, R)
    state: BoundState
    capture: dict[int, Tensor | None] = field(default_factory=dict)
    a_in: Tensor | None = None


def _bound_domains(
    graph: BoundGraph,
    iset: InputSet,
    spec: Tensor,
    splits: dict[int, Tensor],
    ref: list[Interval | None] | None,
    settings: BabSettings,
    relus: list[int],
) -> _Batch:
    """α-β-CROWN bounds of ``D`` subdomains (the rows of ``splits``)."""
    d = iset.batch
    state = prepare(graph, iset, "crown", splits=splits, ref=ref)
    rows = int(spec.shape[1])
    a0 = spec.expand(d, *spec.shape[1:]).reshape(d, rows, *graph.nodes[graph.output].shape)
    alphas, masks = init_alpha(state, rows, kinds=("relu",))
    betas: dict[int, Tensor] = {}
    signs: dict[int, Tensor] = {}
    for s in relus:
        sp = splits.get(s)
        if sp is None or not bool((sp != 0).any()):
            continue
        signs[s] = sp.to(a0.dtype).unsqueeze(1)  # (D, 1, numel)
        betas[s] = torch.zeros(d, rows, sp.shape[1], dtype=a0.dtype)

    def extra() -> dict[int, Tensor]:
        out: dict[int, Tensor] = {}
        for s, beta in betas.items():
            p = graph.nodes[s].inputs[0]
            out[p] = (-beta * signs[s]).reshape(d, rows, *graph.nodes[p].shape)
        return out

    for a in (*alphas.values(), *betas.values()):
        a.requires_grad_(True)
    opt_a = _Adam(list(alphas.values()), settings.lr_alpha, 0.98)
    opt_b = _Adam(list(betas.values()), settings.lr_beta, 0.98)
    best: Tensor | None = None
    steps = settings.iterations if (alphas or betas) else 1
    for it in range(steps):
        last = it == steps - 1
        with torch.set_grad_enabled(not last):
            lb, _ = backward(state, graph.output, a0, alpha=alphas or None, extra=extra() or None)
        best = lb.detach() if best is None else torch.maximum(best, lb.detach())
        if last:
            break
        (-lb.sum()).backward()
        opt_a.step()
        opt_b.step()
        clip_alpha(graph, alphas, masks)
        with torch.no_grad():
            for beta in betas.values():
                beta.clamp_(min=0)
    assert best is not None
    capture: dict[int, Tensor | None] = dict.fromkeys(relus)
    with torch.no_grad():
        for a in alphas.values():
            a.requires_grad_(False)
        for beta in betas.values():
            beta.requires_grad_(False)
        _lb, a_in = backward(
            state,
            graph.output,
            a0,
            alpha=alphas or None,
            extra=extra() or None,
            keep_input=True,
            capture=capture,
        )
    if state.infeasible is not None:
        best = torch.where(state.infeasible.unsqueeze(1), torch.full_like(best, math.inf), best)
    return _Batch(best, state, capture, a_in)


def _decide(graph: BoundGraph, batch: _Batch, relus: list[int]) -> list[tuple[int, int] | None]:
    """The neuron to split in each domain (``None`` when no ReLU is unstable)."""
    d = batch.lb.shape[0]
    worst_row = batch.lb.argmin(1)  # (D,)
    best_score = torch.full((d,), -math.inf)
    best_node = torch.full((d,), -1, dtype=torch.long)
    best_idx = torch.zeros(d, dtype=torch.long)
    for s in relus:
        p = graph.nodes[s].inputs[0]
        b = batch.state.bounds[p]
        coef = batch.capture.get(s)
        if b is None:
            continue
        lo, hi = b[0].reshape(d, -1), b[1].reshape(d, -1)
        unstable = (lo < 0) & (hi > 0)
        if not bool(unstable.any()):
            continue
        if coef is None:
            a = torch.ones_like(lo)
        else:
            a = coef.reshape(d, coef.shape[1], -1)[torch.arange(d), worst_row]
        height = hi * (-lo) / (hi - lo).clamp(min=1e-12)
        score = torch.where(
            unstable, a.abs() * height + 1e-9 * height, torch.full_like(lo, -math.inf)
        )
        val, idx = score.max(1)
        better = val > best_score
        best_score = torch.where(better, val, best_score)
        best_node = torch.where(better, torch.full_like(best_node, s), best_node)
        best_idx = torch.where(better, idx, best_idx)
    out: list[tuple[int, int] | None] = []
    for i in range(d):
        out.append(None if int(best_node[i]) < 0 else (int(best_node[i]), int(best_idx[i])))
    return out


def _leaf_lp(
    graph: BoundGraph,
    iset: Box,
    spec: Tensor,
    domain: _Domain,
    relus: list[int],
) -> tuple[bool, Tensor | None]:
    """Exact check of a subdomain with no unstable ReLU (the network is affine on it): returns
    ``(verified, minimiser)``; ``verified`` also when the split constraints are infeasible."""
    from scipy.optimize import linprog

    splits = {s: t.unsqueeze(0) for s, t in domain.splits.items()}
    ref = [None if r is None else (r[0], r[1]) for r in domain.ref]
    state = prepare(graph, iset, "crown", splits=splits, ref=ref)
    if state.infeasible is not None and bool(state.infeasible.any()):
        return True, None
    rows = int(spec.shape[1])
    a0 = spec.reshape(1, rows, *graph.nodes[graph.output].shape)
    obj_b, obj_a = backward(state, graph.output, a0, keep_input=True)
    assert obj_a is not None
    a_ub: list[np.ndarray] = []
    b_ub: list[np.ndarray] = []
    for s, sp in domain.splits.items():
        idx = torch.nonzero(sp).flatten()
        if idx.numel() == 0:
            continue
        p = graph.nodes[s].inputs[0]
        n = graph.nodes[p].numel
        rows_p = torch.zeros(1, idx.numel(), n, dtype=a0.dtype)
        rows_p[0, torch.arange(idx.numel()), idx] = 1.0
        zb, za = backward(
            state, p, rows_p.view(1, idx.numel(), *graph.nodes[p].shape), keep_input=True
        )
        assert za is not None
        # backward gives the concretised lower bound; recover the constant: c = lb - min(A·x)
        za2 = za[0].reshape(idx.numel(), -1).double().numpy()
        zc = (zb - iset.lower(za))[0].double().numpy()
        sign = sp[idx].double().numpy()
        # s·(A x + c) >= 0  ->  -s·A x <= s·c
        a_ub.append(-sign[:, None] * za2)
        b_ub.append(sign * zc)
    lo = iset.lo[0].reshape(-1).double().numpy()
    hi = iset.hi[0].reshape(-1).double().numpy()
    obj = obj_a[0].reshape(rows, -1).double().numpy()
    const = (obj_b - iset.lower(obj_a))[0].double().numpy()
    worst_val, worst_x = math.inf, None
    for r in range(rows):
        res = linprog(
            obj[r],
            A_ub=np.vstack(a_ub) if a_ub else None,
            b_ub=np.concatenate(b_ub) if b_ub else None,
            bounds=list(zip(lo, hi)),
            method="highs",
        )
        if res.status == 2:  # infeasible: the subdomain is empty
            return True, None
        if res.status != 0:
            return False, None
        val = float(res.fun + const[r])
        if val < worst_val:
            worst_val, worst_x = val, res.x
    if worst_val > 0:
        return True, None
    x = torch.tensor(worst_x, dtype=iset.lo.dtype).view(1, *iset.shape)
    return False, x


def _finished(
    verdict: Verdict,
    bound: float,
    count: int,
    t0: float,
    strategy: str,
    x: Tensor | None = None,
    margin: float | None = None,
) -> BabResult:
    """The search's result, timed from ``t0``."""
    return BabResult(verdict, bound, x, margin, count, time.perf_counter() - t0, strategy)


def _relu_split(
    graph: BoundGraph,
    model_fn: ModelFn,
    iset: InputSet,
    spec: Tensor,
    settings: BabSettings,
    t0: float,
) -> BabResult:
    g = maxpool_as_relus(graph)
    relus = _splittable(g)
    root = _bound_domains(g, iset, spec, {}, None, settings, relus)
    count = 1
    if bool((root.lb > 0).all()):
        return _finished("verified", float(root.lb.min()), count, t0, "relu-split")
    ref0 = [None if b is None else (b[0][:1], b[1][:1]) for b in root.state.bounds]
    first = _Domain({}, ref0, root.lb[0])
    decisions = _decide(g, root, relus)
    first.decision = decisions[0]
    open_domains = [first]
    verified_min = math.inf
    leaves_unknown: list[_Domain] = []
    numel = {s: g.nodes[s].numel for s in relus}
    while open_domains:
        if time.perf_counter() - t0 > settings.budget_s or len(open_domains) > settings.max_domains:
            break
        open_domains.sort(key=lambda dm: dm.worst())
        picked = open_domains[: settings.batch_domains]
        open_domains = open_domains[settings.batch_domains :]
        children: list[_Domain] = []
        for dm in picked:
            if dm.decision is not None:
                children += _children(dm, numel)
                continue
            # no unstable ReLU left: the network is affine on this subdomain
            verdict, x, m = _affine_leaf(g, model_fn, iset, spec, dm, relus)
            if verdict == "verified":
                verified_min = min(verified_min, max(0.0, dm.worst()))
            elif verdict == "falsified":
                return _finished("falsified", dm.worst(), count, t0, "relu-split", x, m)
            else:
                leaves_unknown.append(dm)
        if not children:
            continue
        d = len(children)
        sets = iset.select(torch.zeros(d, dtype=torch.long))
        splits, ref = _stacked(children, relus, numel, len(g.nodes))
        batch = _bound_domains(g, sets, spec, splits, ref, settings, relus)
        count += d
        lb = torch.maximum(
            batch.lb, torch.stack([c.lb for c in children])
        )  # parents' bounds hold too
        found = _candidate_counterexample(model_fn, sets, batch, lb, spec)
        if found is not None:
            return _finished("falsified", float(lb.min()), count, t0, "relu-split", *found)
        verified_min = min(verified_min, _reopen(g, children, batch, lb, relus, open_domains))
    remaining = open_domains + leaves_unknown
    if not remaining:
        return _finished("verified", verified_min, count, t0, "relu-split")
    worst = min(dm.worst() for dm in remaining)
    return _finished("unknown", worst, count, t0, "relu-split")


def _affine_leaf(
    g: BoundGraph,
    model_fn: ModelFn,
    iset: InputSet,
    spec: Tensor,
    dm: _Domain,
    relus: list[int],
) -> tuple[Verdict, Tensor | None, float | None]:
    """Decide a domain with no unstable ReLU (the network is affine on it) by its exact LP over
    a box: ``verified``, ``falsified`` with the LP's minimiser and the model's margin there, or
    ``unknown`` (not a box, or the minimiser is not a counterexample of the model)."""
    if isinstance(iset, Box):
        ok, x = _leaf_lp(g, iset, spec, dm, relus)
        if ok:
            return "verified", None, None
        if x is not None:
            m = float(_margins(model_fn, x, spec).min())
            if m < 0:
                return "falsified", x, m
    return "unknown", None, None


def _children(dm: _Domain, numel: dict[int, int]) -> list[_Domain]:
    """The two subdomains of ``dm``'s split decision (the neuron active, then inactive)."""
    assert dm.decision is not None
    s, j = dm.decision
    out = []
    for side in (1, -1):
        sp = {k: v.clone() for k, v in dm.splits.items()}
        vec = sp.get(s, torch.zeros(numel[s], dtype=torch.int8))
        vec[j] = side
        sp[s] = vec
        out.append(_Domain(sp, dm.ref, dm.lb, None, dm.depth + 1))
    return out


def _stacked(
    children: list[_Domain], relus: list[int], numel: dict[int, int], n_nodes: int
) -> tuple[dict[int, Tensor], list[Interval | None]]:
    """The children's split vectors (per ReLU node split in any of them) and reference bounds
    (per node known in all of them), batched along the first dimension."""
    splits = {
        s: torch.stack([c.splits.get(s, torch.zeros(numel[s], dtype=torch.int8)) for c in children])
        for s in relus
        if any(s in c.splits for c in children)
    }
    ref: list[Interval | None] = []
    for i in range(n_nodes):
        parts = [c.ref[i] for c in children]
        if any(p is None for p in parts):
            ref.append(None)
        else:
            ref.append(
                (
                    torch.cat([p[0] for p in parts if p is not None]),
                    torch.cat([p[1] for p in parts if p is not None]),
                )
            )
    return splits, ref


def _candidate_counterexample(
    model_fn: ModelFn, sets: InputSet, batch: _Batch, lb: Tensor, spec: Tensor
) -> tuple[Tensor, float] | None:
    """The best counterexample among the minimisers of each domain's worst row (the input and
    the model's margin there), or ``None`` when none has a negative margin."""
    if batch.a_in is None:
        return None
    d = lb.shape[0]
    worst_rows = lb.argmin(1)
    cand = sets.minimiser(batch.a_in)[torch.arange(d), worst_rows]
    cm = _margins(model_fn, cand, spec).min(1).values
    k = int(cm.argmin())
    if float(cm[k]) < 0:
        return cand[k : k + 1], float(cm[k])
    return None


def _reopen(
    g: BoundGraph,
    children: list[_Domain],
    batch: _Batch,
    lb: Tensor,
    relus: list[int],
    open_domains: list[_Domain],
) -> float:
    """Give each child its bound; append those not verified to ``open_domains`` with their
    reference bounds and next split decision. Returns the smallest verified bound (∞ if none)."""
    verified_min = math.inf
    decisions = _decide(g, batch, relus)
    for i, c in enumerate(children):
        c.lb = lb[i]
        if bool((lb[i] > 0).all()):
            verified_min = min(verified_min, float(lb[i].min()))
            continue
        c.ref = [
            None if b is None else (b[0][i : i + 1], b[1][i : i + 1]) for b in batch.state.bounds
        ]
        c.decision = decisions[i]
        open_domains.append(c)
    return verified_min


# --------------------------------------------------------------------------------------------
# Input splitting


def _free_dims(iset: InputSet) -> int:
    if isinstance(iset, Segment):
        return 1
    lo, hi = iset.box()
    return int((hi > lo).sum())


def _input_split(
    graph: BoundGraph,
    model_fn: ModelFn,
    iset: InputSet,
    spec: Tensor,
    settings: BabSettings,
    t0: float,
) -> BabResult:
    parts = _initial_parts(iset)
    rows = int(spec.shape[1])
    count = 0
    verified_min = math.inf
    lbs: list[float] = []
    while parts:
        if time.perf_counter() - t0 > settings.budget_s or len(parts) > settings.max_domains:
            break
        batch = parts[: settings.batch_domains * 2]
        parts = parts[settings.batch_domains * 2 :]
        d = len(batch)
        sets = _part_sets(iset, batch)
        state = prepare(graph, sets, "crown")
        a0 = spec.expand(d, *spec.shape[1:]).reshape(d, rows, *graph.nodes[graph.output].shape)
        with torch.no_grad():
            lb, a_in = backward(state, graph.output, a0, keep_input=True)
        count += d
        assert a_in is not None
        cand = sets.minimiser(a_in)[torch.arange(d), lb.argmin(1)]
        m = _margins(model_fn, cand, spec).min(1).values
        k = int(m.argmin())
        if float(m[k]) < 0:
            return _finished(
                "falsified", float(lb.min()), count, t0, "input-split", cand[k : k + 1], float(m[k])
            )
        nxt: list[tuple[Tensor, Tensor]] = []
        for i in range(d):
            if bool((lb[i] > 0).all()):
                verified_min = min(verified_min, float(lb[i].min()))
                continue
            nxt += _bisect(iset, *batch[i])
            lbs.append(float(lb[i].min()))
        parts = nxt + parts
    if not parts:
        return _finished("verified", verified_min, count, t0, "input-split")
    return _finished("unknown", min(lbs) if lbs else -math.inf, count, t0, "input-split")


def _initial_parts(iset: InputSet) -> list[tuple[Tensor, Tensor]]:
    """The one part input splitting starts from: a segment's ``t`` range or a box's corners."""
    if isinstance(iset, Segment):
        return [(iset.t_lo, iset.t_hi)]
    if isinstance(iset, Box):
        return [(iset.lo, iset.hi)]
    raise OptionError(
        "bab", "input splitting needs a box or a segment", "use an L∞ ball, a box or a segment"
    )


def _part_sets(iset: InputSet, batch: list[tuple[Tensor, Tensor]]) -> InputSet:
    """The parts in ``batch`` as one batched input set (sub-segments of ``iset``, or boxes)."""
    d = len(batch)
    lo = torch.cat([p[0] for p in batch])
    hi = torch.cat([p[1] for p in batch])
    if isinstance(iset, Segment):
        return Segment(iset.start.expand(d, *iset.shape), iset.end.expand(d, *iset.shape), lo, hi)
    return Box(lo, hi)


def _bisect(iset: InputSet, plo: Tensor, phi: Tensor) -> list[tuple[Tensor, Tensor]]:
    """A part's two halves: a segment's ``t`` range at its midpoint, a box along its widest
    dimension."""
    if isinstance(iset, Segment):
        mid = (plo + phi) / 2
        return [(plo, mid), (mid, phi)]
    width = (phi - plo).flatten()
    j = int(width.argmax())
    mid = (plo.flatten()[j] + phi.flatten()[j]) / 2
    left_hi = phi.clone().flatten()
    left_hi[j] = mid
    right_lo = plo.clone().flatten()
    right_lo[j] = mid
    return [(plo, left_hi.view_as(phi)), (right_lo.view_as(plo), phi)]


# --------------------------------------------------------------------------------------------
# Entry point


def branch_and_bound(
    graph: BoundGraph,
    model_fn: ModelFn,
    iset: InputSet,
    spec: Tensor,
    settings: BabSettings | None = None,
    *,
    generator: torch.Generator | None = None,
) -> BabResult:
    """Decide ``spec·f(x) > 0`` for every ``x`` of ``iset`` (one sample) within the budget.

    Args:
        graph: the traced model.
        model_fn: the real model (eval mode); every counterexample is checked with it.
        iset: the input set of one sample (batch 1).
        spec: ``(1, R, K)`` rows; the property is that every row is positive.
        settings: budget and optimisation settings.
        generator: random starts of the counterexample search.

    Raises:
        OptionError: ReLU splitting on a model that is not piecewise-linear (the message names
            the first such node), or a set of more than one sample.
    """
    settings = settings or BabSettings()
    t0 = time.perf_counter()
    if iset.batch != 1 or spec.shape[0] != 1:
        raise OptionError(
            "x",
            f"branch-and-bound takes one sample at a time, got {iset.batch}",
            "loop over samples",
        )
    split_inputs = _free_dims(iset) <= settings.input_split_dims
    bad = next((n for n in graph.nodes if n.op is not None and not n.op.piecewise_linear), None)
    if bad is not None and not split_inputs:
        assert bad.op is not None
        raise OptionError(
            "bab_budget_s",
            f"branch-and-bound splits ReLUs, but node '{bad.name}' ({bad.op.kind}) is not "
            "piecewise-linear",
            "set bab_budget_s=0 (bound without branching) or bound a ReLU network",
        )
    x, m = search_counterexample(
        model_fn,
        iset,
        spec,
        steps=settings.pgd_steps,
        restarts=settings.pgd_restarts,
        generator=generator,
    )
    if m < 0:
        return BabResult("falsified", -math.inf, x, m, 0, time.perf_counter() - t0, "pgd")
    if split_inputs:
        return _input_split(graph, model_fn, iset, spec, settings, t0)
    return _relu_split(graph, model_fn, iset, spec, settings, t0)

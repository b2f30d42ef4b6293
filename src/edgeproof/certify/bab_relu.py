"""ReLU splitting with β-CROWN (see :mod:`~edgeproof.certify.bab`): subdomains bounded in
batches with α and β optimised, branching on the BaBSR-style score, leaves solved as linear
programs, and candidate counterexamples checked on the model."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from edgeproof.certify import ops as O
from edgeproof.certify.bab_settings import (
    BabResult,
    BabSettings,
    ModelFn,
    Verdict,
    _margins,
)
from edgeproof.certify.bound_state import Interval
from edgeproof.certify.bounds import (
    BoundState,
    _Adam,
    backward,
    clip_alpha,
    init_alpha,
    prepare,
)
from edgeproof.certify.graph import BoundGraph, maxpool_as_relus
from edgeproof.certify.sets import Box, InputSet


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

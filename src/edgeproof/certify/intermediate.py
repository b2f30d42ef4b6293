"""Intermediate bounds of CROWN and α-CROWN (see :mod:`~edgeproof.certify.bounds`): which nodes
and which of their neurons get a CROWN bound (auto_LiRPA 0.7.1's order and sparse unstable-neuron
rows), in row chunks — as periodic patches where most neurons of a convolutional node are
unstable — with problems grouped by their unstable counts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from edgeproof.certify import ops as O
from edgeproof.certify.backward import backward
from edgeproof.certify.bound_state import (
    BoundState,
    Interval,
    Method,
)
from edgeproof.certify.graph import BoundGraph
from edgeproof.certify.ibp import (
    _ibp_exact,
    _needed,
    _node_ibp,
    _relu_only_consumers,
    _split_consumer,
)
from edgeproof.certify.patches import Patches
from edgeproof.certify.sets import InputSet
from edgeproof.certify.steps import Coef

#: values per coefficient tensor of one chunk of intermediate rows (when ``max_elements`` allows):
#: a few MB, so that the tensors of a backward pass stay in the caches between its memory-bound
#: elementwise steps (measured fastest on ResNet-8 against chunks 4–16 times smaller or larger)
_CHUNK_ELEMENTS = 1 << 21


def _rows_per_chunk(budget: int, state: BoundState, start: int, batch: int) -> int:
    widest = max(n.numel for n in state.graph.nodes[: start + 1])
    return max(1, budget // max(1, batch * widest))


@dataclass(frozen=True)
class RowPlan:
    """The neurons of one node that get a CROWN bound: ``index`` ``(B, m)`` (per problem,
    padded) and ``valid`` ``(B, m)`` (False on padding). A ``full`` plan bounds every neuron
    (``index`` is ``0..n-1`` in every problem) and keeps the bound only where ``valid``: the
    rows of a convolutional node are then periodic patches (see
    :class:`~edgeproof.certify.patches.Patches`), cheaper than gathering most of them."""

    index: Tensor
    valid: Tensor
    full: bool = False

    @property
    def rows(self) -> int:
        return int(self.index.shape[1])

    def select(self, g: Tensor) -> RowPlan:
        """The plan of the problems ``g``, padded to their largest count."""
        if self.full:
            return RowPlan(self.index[g], self.valid[g], True)
        rows = int(self.valid[g].sum(1).max())
        return RowPlan(self.index[g, :rows], self.valid[g, :rows])


def _sparse_safe(graph: BoundGraph, idx: int) -> bool:
    """Bounds of stable neurons of node ``idx`` cannot change any relaxation: every consumer
    is a ReLU whose output bounds nothing needs (a max pool reading them would use the values)."""
    if not _relu_only_consumers(graph, idx):
        return False
    need = _needed(graph)
    return not any(need[c] for c in graph.consumers[idx])


#: a convolutional node's rows are all its neurons (periodic patches) when at least this share
#: of them is unstable
_FULL_SHARE = 0.75


def row_plan(graph: BoundGraph, idx: int, ref: Interval, *, sparse: bool | None = None) -> RowPlan:
    """Which neurons of node ``idx`` CROWN bounds given the bounds ``ref`` it already has: the
    unstable ones (``l < 0 < u``) when ``sparse`` (default: when every consumer is a ReLU, the
    rule of auto_LiRPA), else all of them. Where rows start as patches and most neurons are
    unstable, the plan is ``full`` (every neuron computed, the unstable ones kept)."""
    b = int(ref[0].shape[0])
    n = graph.nodes[idx].numel
    every = torch.arange(n).unsqueeze(0).expand(b, n)
    if _relu_only_consumers(graph, idx) if sparse is None else sparse:
        lo, hi = ref[0].reshape(b, n), ref[1].reshape(b, n)
        unstable = (lo < 0) & (hi > 0)
        counts = unstable.sum(1)
        rows = int(counts.max()) if b else 0
        if rows and _patch_start(graph, idx) and rows >= _FULL_SHARE * n:
            return RowPlan(every, unstable, True)
        order = torch.sort(unstable.to(torch.int8), dim=1, descending=True, stable=True).indices
        index = order[:, :rows]
        valid = torch.arange(rows).unsqueeze(0) < counts.unsqueeze(1)
        return RowPlan(index, valid)
    return RowPlan(every, torch.ones(b, n, dtype=torch.bool), _patch_start(graph, idx))


_PATCH_OPS = (O.Conv, O.Elementwise, O.Add, O.Sub)


def _patch_start(graph: BoundGraph, idx: int) -> bool:
    """Whether CROWN rows of node ``idx`` start as patches (a 2-D feature map produced by a
    convolution, an elementwise map or a residual sum)."""
    node = graph.nodes[idx]
    op = node.op
    if len(node.shape) != 3 or node.shape[1] * node.shape[2] <= 1:
        return False
    if isinstance(op, O.Conv):
        return op.dim == 2
    return isinstance(op, _PATCH_OPS)


def _widest_patch(graph: BoundGraph, idx: int) -> int:
    """A size estimate (values per row) for chunking patch rows: the widest channel count
    times the receptive field area, capped by the map size."""
    widest = 1
    for n in graph.nodes[: idx + 1]:
        widest = max(
            widest, n.numel if len(n.shape) != 3 else n.shape[0] * min(n.shape[1] * n.shape[2], 256)
        )
    return widest


def _crown_node(
    state: BoundState,
    idx: int,
    base: Interval,
    plan: RowPlan,
    alpha: dict[int, Tensor] | None = None,
    forms: dict[int, tuple[object, ...]] | None = None,
) -> Interval:
    """CROWN bounds of the neurons ``plan`` of node ``idx``; the others keep ``base``.

    ``alpha`` (α-CROWN on intermediate bounds): per activation, ``(B, 2m, *shape)`` slopes for
    the ``m`` lower-bound rows followed by the ``m`` upper-bound rows.
    """
    node = state.graph.nodes[idx]
    b, n, m = state.batch, node.numel, plan.rows
    lower = base[0].reshape(b, n)
    upper = base[1].reshape(b, n)
    if m == 0:
        return base
    dtype = lower.dtype
    use_patches = _patch_start(state.graph, idx)
    budget = min(state.max_elements, _CHUNK_ELEMENTS)
    if use_patches:
        c_, h_, w_ = node.shape
        chunk = max(1, budget // max(1, b * _widest_patch(state.graph, idx)))
    else:
        chunk = _rows_per_chunk(budget, state, idx, b)
    half = max(1, chunk // 2)
    periodic = use_patches and plan.full
    if periodic:  # whole channels per chunk
        half = max(h_ * w_, half // (h_ * w_) * (h_ * w_))
    for s in range(0, m, half):
        idx_c = plan.index[:, s : s + half]
        h = int(idx_c.shape[1])
        a0: Coef
        if use_patches:
            ch = idx_c // (h_ * w_)
            pi = (idx_c // w_) % h_
            pj = idx_c % w_
            onehot = torch.zeros(b, h, c_, dtype=dtype).scatter_(2, ch.unsqueeze(-1), 1.0)
            pdata = torch.cat([onehot, -onehot], dim=1).view(b, 2 * h, c_, 1, 1)
            a0 = Patches(
                pdata,
                torch.cat([pi, pi], 1),
                torch.cat([pj, pj], 1),
                (1, 1),
                (0, 0),
                (h_, w_),
                periodic=periodic,
            )
        else:
            dense0 = torch.zeros(b, 2 * h, n, dtype=dtype)
            dense0[:, :h].scatter_(2, idx_c.unsqueeze(-1), 1.0)
            dense0[:, h:].scatter_(2, idx_c.unsqueeze(-1), -1.0)
            a0 = dense0.view(b, 2 * h, *node.shape)
        al = None
        if alpha is not None:
            al = {
                j: torch.cat([v[:, s : s + h], v[:, m + s : m + s + h]], dim=1)
                for j, v in alpha.items()
            }
        lb, _ = backward(state, idx, a0, alpha=al, forms=forms)
        ok = plan.valid[:, s : s + h]
        lower = lower.scatter(1, idx_c, torch.where(ok, lb[:, :h], lower.gather(1, idx_c)))
        upper = upper.scatter(1, idx_c, torch.where(ok, -lb[:, h:], upper.gather(1, idx_c)))
    return lower.view(b, *node.shape), upper.view(b, *node.shape)


def _tighten(
    state: BoundState, idx: int, bounds: Interval, ref: Sequence[Interval | None] | None
) -> Interval:
    """Intersect with ``ref`` (bounds known to hold) and apply branch-and-bound splits."""
    lo, hi = bounds
    if ref is not None and ref[idx] is not None:
        rlo, rhi = ref[idx]  # type: ignore[misc]
        lo, hi = torch.maximum(lo, rlo), torch.minimum(hi, rhi)
    split_node = _split_consumer(state.graph, idx)
    if split_node is not None and split_node in state.splits:
        s = state.splits[split_node].view(lo.shape)
        lo = torch.where(s > 0, lo.clamp(min=0), lo)
        hi = torch.where(s < 0, hi.clamp(max=0), hi)
    bad = (lo > hi).flatten(1).any(1)
    if bool(bad.any()):
        # an empty subdomain: the splits contradict the bounds; its bounds are never used
        state.infeasible = bad if state.infeasible is None else state.infeasible | bad
        hi = torch.maximum(hi, lo)
    return lo, hi


#: rows × widest map above which problems are bounded one at a time (measured faster for
#: ResNet-8 on 3×16×16 than a batch of two: the tensors no longer fit any cache anyway)
_PER_PROBLEM_WORK = 1 << 22


def _groups(counts: Tensor) -> list[Tensor]:
    """Problems grouped so that padding every group's rows to its largest count wastes at most
    a quarter of the work (sorted by count, greedily)."""
    order = torch.argsort(counts, descending=True, stable=True)
    groups: list[list[int]] = []
    for i in order.tolist():
        c = int(counts[i])
        if groups:
            g = groups[-1]
            top = int(counts[g[0]])
            if top * (len(g) + 1) <= 1.25 * (sum(int(counts[j]) for j in g) + c):
                g.append(i)
                continue
        groups.append([i])
    return [torch.tensor(sorted(g)) for g in groups]


def _crown_grouped(state: BoundState, idx: int, base: Interval, plan: RowPlan) -> Interval:
    """:func:`_crown_node` for a batch, with problems of very different unstable counts bounded
    in separate groups (rows are padded to a group's largest count), and large problems one at
    a time."""
    forms = state.forms.setdefault(idx, {})
    counts = plan.valid.sum(1)
    b = state.batch
    widest = max(n.numel for n in state.graph.nodes[: idx + 1])
    big = plan.rows * widest >= _PER_PROBLEM_WORK
    if b == 1 or (not big and (plan.full or plan.rows * b <= 1.25 * int(counts.sum()))):
        return _crown_node(state, idx, base, plan, forms=forms)
    lower, upper = base[0].clone(), base[1].clone()
    groups = [torch.tensor([i]) for i in range(b)] if big else _groups(counts)
    for g in groups:
        if int(counts[g].max()) == 0:
            continue
        sub_plan = plan.select(g)
        lo, hi = _crown_node(state.subset(g), idx, (base[0][g], base[1][g]), sub_plan, forms=forms)
        lower[g], upper[g] = lo, hi
    return lower, upper


def crown_nodes(graph: BoundGraph, iset: InputSet) -> list[int]:
    """The nodes CROWN bounds (needed, not derived by IBP, not exact by IBP)."""
    need = _needed(graph)
    exact = _ibp_exact(graph)
    out = []
    for n in graph.nodes:
        op = n.op
        if (
            need[n.index]
            and op is not None
            and not op.ibp_intermediate
            and not isinstance(op, O.Constant)
            and not (exact[n.index] and iset.exact_box)
        ):
            out.append(n.index)
    return out


def intermediate_bounds(
    state: BoundState, method: Method, *, ref: Sequence[Interval | None] | None = None
) -> None:
    """Fill ``state.bounds`` for every node (rules in the module docstring).

    ``ref``: bounds known to hold (a parent subdomain's), intersected with the new ones.
    """
    graph = state.graph
    use_crown = set(crown_nodes(graph, state.iset)) if method in ("crown", "alpha-crown") else set()
    for node in graph.nodes:
        idx = node.index
        bounds = _node_ibp(state, idx)
        if node.op is not None:
            bounds = _tighten(state, idx, bounds, ref)
        if idx in use_crown:
            plan = row_plan(graph, idx, bounds)
            bounds = _tighten(state, idx, _crown_grouped(state, idx, bounds, plan), ref)
        state.bounds[idx] = bounds


def _joint_intermediate(
    state: BoundState,
    ref: list[Interval | None],
    plans: dict[int, RowPlan],
    alphas: dict[int, dict[int, Tensor]],
    before: Callable[[BoundState, int], None] | None = None,
) -> None:
    """Intermediate bounds for α-CROWN's joint optimisation: the needed nodes only; CROWN
    nodes bound their fixed rows ``plans`` with slopes ``alphas[node]`` and keep ``ref`` (the
    first CROWN pass) elsewhere, intersected with ``ref``."""
    graph = state.graph
    need = _needed(graph)
    for node in graph.nodes:
        idx = node.index
        if idx in plans:
            base = ref[idx]
            assert base is not None
            if before is not None:
                before(state, idx)
            b = _crown_node(state, idx, base, plans[idx], alphas.get(idx))
            state.bounds[idx] = _tighten(state, idx, b, None)
        elif node.op is not None and node.op.ibp_intermediate and need[idx]:
            state.bounds[idx] = _tighten(state, idx, _node_ibp(state, idx), ref)
        elif need[idx] or idx == 0:
            state.bounds[idx] = ref[idx]

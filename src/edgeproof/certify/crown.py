"""CROWN's backward pass (see :mod:`~edgeproof.certify.bounds`): a linear function of a node
moved back to the input through exact affine steps and relaxations, in row chunks, and the
intermediate bounds computed with it (auto_LiRPA 0.7.1's order and sparse unstable-neuron rows)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from edgeproof.certify import ops as O
from edgeproof.certify.bound_state import (
    BoundState,
    Interval,
    Method,
)
from edgeproof.certify.graph import BoundGraph, Node
from edgeproof.certify.ibp import (
    _ibp_exact,
    _needed,
    _node_ibp,
    _relu_only_consumers,
    _split_consumer,
)
from edgeproof.certify.patches import Patches
from edgeproof.certify.sets import Box, InputSet
from edgeproof.certify.sparse_lines import SparseLines, apply_sparse, sparse_lines

Coef = Tensor | Patches


def _dense(a: Coef, shape: tuple[int, ...]) -> Tensor:
    return a.dense(shape) if isinstance(a, Patches) else a


def _accumulate(acc: dict[int, Coef], i: int, new: Coef, shape: tuple[int, ...]) -> None:
    old = acc.get(i)
    if old is None:
        acc[i] = new
        return
    if isinstance(old, Patches) and isinstance(new, Patches):
        both = old.add(new)
        if both is not None:
            acc[i] = both
            return
    acc[i] = _dense(old, shape) + _dense(new, shape)


def _patch_step(
    state: BoundState,
    idx: int,
    a: Patches,
    alpha: dict[int, Tensor] | None,
) -> tuple[list[Coef | None], Tensor | None] | None:
    """One backward step of patches through node ``idx`` (``None``: no patch form)."""
    graph = state.graph
    node = graph.nodes[idx]
    op = node.op
    if len(node.shape) != 3 or a.covers(node.shape[1], node.shape[2]):
        return None
    b, r = int(a.data.shape[0]), int(a.data.shape[1])
    if isinstance(op, O.Conv) and op.dim == 2:
        a = a.masked(node.shape[1], node.shape[2])
        new = a.conv_backward(op.weight, op.stride, op.padding, op.dilation, op.groups)
        c = None if op.bias is None else a.data.sum((3, 4)) @ op.bias
        return [new], c
    if isinstance(op, O.Elementwise):
        if op.shift is not None:  # a map constant over space would read entries outside
            a = a.masked(node.shape[1], node.shape[2])
        data = a.data
        if op.scale is not None:
            data = a.unblock(a.blocks() * a.windows(op.scale, state.tables))
        c = None
        if op.shift is not None:
            c = (a.blocks() * a.windows(op.shift, state.tables)).sum((3, 4, 5)).reshape(b, r)
        return [a.with_data(data)], c
    if isinstance(op, O.Add):
        return [a, a], None
    if isinstance(op, O.Sub):
        return [a, a.with_data(-a.data)], None
    if isinstance(op, O.Activation):
        rel = state.relaxation(idx)
        assert isinstance(rel, O.Relaxation)
        al = None if alpha is None else alpha.get(idx)
        sparse = _patch_sparse_lines(state, idx, rel, a, al is not None)
        if sparse is not None:
            if not a.periodic:
                sparse = sparse.rows(a.flat_positions())
            out, c = apply_sparse(a.flat(), sparse, None if al is None else a.flat(al))
            return [a.with_data(a.unflat(out), clean=True)], None if c is None else c.reshape(b, r)
        t = state.tables
        dl = a.windows(rel.lower_slope, t)
        du = a.windows(rel.upper_slope, t)
        if al is not None and rel.unstable is not None:
            dl = torch.where(a.windows(rel.unstable, t), a.blocks(al), dl)
        lb_w = None if rel.lower_bias is None else a.windows(rel.lower_bias, t)
        ub_w = None if rel.upper_bias is None else a.windows(rel.upper_bias, t)
        lines, c = O.apply_lines(a.blocks(), dl, lb_w, du, ub_w, feature_dims=3)
        # the slope windows are zero outside the map: the lines are clean
        return [a.with_data(a.unblock(lines), clean=True)], None if c is None else c.reshape(b, r)
    return None


def _patch_sparse_lines(
    state: BoundState, idx: int, rel: O.Relaxation, a: Patches, free: bool
) -> SparseLines | None:
    """The sparse lines of node ``idx`` in the window geometry of ``a`` (cached per state;
    ``free``: with the entries α may move)."""
    key = ("lines", idx, free, a.kernel, a.stride, a.pad, a.grid)
    hit = state.tables.get(key)
    if hit is not None and hit[0] is rel:
        return hit[1]  # type: ignore[return-value]
    t = state.tables

    def table(m: Tensor | None) -> Tensor | None:
        return None if m is None else a.flat_table(m, t)

    dl, du = table(rel.lower_slope), table(rel.upper_slope)
    assert dl is not None and du is not None
    unstable = table(rel.unstable) if free else None
    lines = sparse_lines(dl, du, table(rel.lower_bias), table(rel.upper_bias), unstable)
    state.tables[key] = (rel, lines)
    return lines


def _dense_sparse_lines(
    state: BoundState, idx: int, rel: O.Relaxation, inner: bool, free: bool
) -> SparseLines | None:
    """The sparse lines of node ``idx`` for dense coefficients (``inner``: channels-inner)."""
    key = ("dense-lines", idx, free, inner)
    hit = state.tables.get(key)
    if hit is not None and hit[0] is rel:
        return hit[1]  # type: ignore[return-value]

    def flat(m: Tensor | None) -> Tensor | None:
        if m is None:
            return None
        if inner:
            m = m.permute(0, 2, 3, 1)
        return m.reshape(m.shape[0], 1, -1)

    dl, du = flat(rel.lower_slope), flat(rel.upper_slope)
    assert dl is not None and du is not None
    unstable = flat(rel.unstable) if free else None
    lines = sparse_lines(dl, du, flat(rel.lower_bias), flat(rel.upper_bias), unstable)
    state.tables[key] = (rel, lines)
    return lines


def backward(
    state: BoundState,
    start: int,
    a0: Coef,
    *,
    alpha: dict[int, Tensor] | None = None,
    extra: dict[int, Tensor] | None = None,
    keep_input: bool = False,
    forms: dict[int, tuple[object, ...]] | None = None,
    capture: dict[int, Tensor | None] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Lower bounds of ``a0·z_start`` over the input set, ``(B, R)``.

    Args:
        state: bounds of every node the relaxations need.
        start: the node whose linear function is bounded.
        a0: coefficients ``(B, R, *shape_start)``, or :class:`Patches`.
        alpha: per optimisable node, free lower slopes ``(B, R, *shape)`` (as patches
            ``(B, R, C, Kh, Kw)`` where the coefficients reach the node as patches; max pools:
            ``(B, R, C, window, L)``).
        extra: per node, coefficients ``(B, R, *shape)`` added to that node's (β-CROWN split
            terms); nodes after ``start`` are ignored.
        keep_input: also return the coefficients at the input ``(B, R, *input_shape)``.
        forms: if given, filled with the form in which coefficients reach each nonlinear node:
            ``("dense",)`` or ``("patch", stride, pad, kernel)``.
        capture: if given, its keys are nodes whose incoming coefficients ``(B, R, *shape)``
            (those of the node's output) are stored in it (branching heuristics).
    """
    graph = state.graph
    data = a0.data if isinstance(a0, Patches) else a0
    b, r = int(data.shape[0]), int(data.shape[1])
    acc = _initial_coefficients(graph, start, a0, extra)
    bias = torch.zeros(b, r, dtype=data.dtype)
    for idx in range(start, 0, -1):
        a = acc.pop(idx, None)
        if a is None:
            continue
        node = graph.nodes[idx]
        op = node.op
        assert op is not None
        if capture is not None and idx in capture:
            capture[idx] = _dense(a, node.shape).detach()
        if isinstance(a, Patches):
            step = _patch_step(state, idx, a, alpha)
            if step is not None:
                if forms is not None and not isinstance(op, O.LinearOp):
                    forms[idx] = ("patch", a.stride, a.pad, a.kernel)
                news, c = step
                if c is not None:
                    bias = bias + c
                for inp, na in zip(node.inputs, news):
                    if na is not None:
                        _accumulate(acc, inp, na, graph.nodes[inp].shape)
                continue
            a = a.dense(node.shape)
        if isinstance(op, O.LinearOp):
            c = _linear_backward(graph, node, op, a, acc, b, r)
            if c is not None:
                bias = bias + c.view(b, r)
            continue
        if forms is not None:
            forms[idx] = ("dense",)
        na, c = _relaxed_backward(state, idx, op, a, alpha)
        if c is not None:
            bias = bias + c
        _accumulate(acc, node.inputs[0], na, graph.nodes[node.inputs[0]].shape)
    return _input_lower(state, acc.pop(0, None), bias, keep_input)


def _initial_coefficients(
    graph: BoundGraph, start: int, a0: Coef, extra: dict[int, Tensor] | None
) -> dict[int, Coef]:
    """The coefficients to propagate, per node: ``a0`` at ``start`` plus the ``extra`` terms
    of the nodes up to ``start``."""
    acc: dict[int, Coef] = {start: a0}
    if extra:
        for k, v in extra.items():
            if k <= start:
                _accumulate(acc, k, v, graph.nodes[k].shape)
    return acc


def _linear_backward(
    graph: BoundGraph,
    node: Node,
    op: O.LinearOp,
    a: Tensor,
    acc: dict[int, Coef],
    b: int,
    r: int,
) -> Tensor | None:
    """Pass dense coefficients ``a`` ``(B, R, *shape)`` back through a linear node into its
    inputs' entries of ``acc``; returns the constant term ``(B·R,)`` (``None`` if zero)."""
    new, c = op.backward(a.reshape(b * r, *node.shape))
    for inp, nd in zip(node.inputs, new):
        if nd is not None:
            _accumulate(acc, inp, nd.reshape(b, r, *graph.nodes[inp].shape), graph.nodes[inp].shape)
    return c


def _relaxed_backward(
    state: BoundState,
    idx: int,
    op: O.BoundOp,
    a: Tensor,
    alpha: dict[int, Tensor] | None,
) -> tuple[Tensor, Tensor | None]:
    """Pass dense coefficients back through an activation or a max pool by its relaxation
    (the α slopes where given); returns the input's coefficients and the constant term."""
    rel = state.relaxation(idx)
    if isinstance(op, O.Activation):
        assert isinstance(rel, O.Relaxation)
        al = None if alpha is None else alpha.get(idx)
        inner = a.dim() == 5 and a.stride(2) == 1 and not a.is_contiguous()
        sparse = _dense_sparse_lines(state, idx, rel, inner, al is not None)
        if sparse is None:
            return O.backward_elementwise(a, rel, al)
        b, r = a.shape[0], a.shape[1]

        def flat(x: Tensor) -> Tensor:
            x = x.permute(0, 1, 3, 4, 2) if inner else x.contiguous()
            return x.reshape(b, r, 1, -1)

        new, c = apply_sparse(flat(a), sparse, None if al is None else flat(al))
        if inner:
            h, w = a.shape[3], a.shape[4]
            new = new.view(b, r, h, w, a.shape[2]).permute(0, 1, 4, 2, 3)
        return new.view(a.shape) if not inner else new, None if c is None else c.view(b, r)
    assert isinstance(op, O.MaxPool)
    assert isinstance(rel, O.PoolRelaxation)
    lower = alpha[idx] if alpha is not None and idx in alpha else rel.lower.unsqueeze(1)
    return op.backward_windows(a, lower, rel.upper, rel.upper_const)


def _input_lower(
    state: BoundState, a_in: Coef | None, bias: Tensor, keep_input: bool
) -> tuple[Tensor, Tensor | None]:
    """The bound given the coefficients that reached the input (concretised over the input
    set; patches over a box directly) and the accumulated constant ``bias``."""
    if a_in is None:
        return bias, None
    if isinstance(a_in, Patches):
        if isinstance(state.iset, Box) and not keep_input:
            lo, hi = state.iset.box()
            centre, radius = (hi + lo) / 2, (hi - lo) / 2
            a_in = a_in.masked(*centre.shape[-2:])
            d = a_in.blocks()
            dims = (3, 4, 5)
            lb = (d * a_in.windows(centre)).sum(dims) - (d.abs() * a_in.windows(radius)).sum(dims)
            return bias + lb.reshape(bias.shape), None
        a_in = a_in.dense(state.graph.nodes[0].shape)
    return bias + state.iset.lower(a_in), (a_in if keep_input else None)


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

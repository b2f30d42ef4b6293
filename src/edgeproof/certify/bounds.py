"""Bound propagation on a :class:`~edgeproof.certify.graph.BoundGraph`: IBP, CROWN, CROWN-IBP
and α-CROWN.

Sources and the variant followed:

* **IBP** (Gowal et al. 2018, arXiv 1810.12715; Mirman et al. 2018): interval arithmetic node by
  node in centre/radius form, ``W c + b ± |W| r`` for affine layers, ``[f(l), f(u)]`` for
  monotone activations. With a spec matrix ``C`` and a linear output layer, ``C`` is folded into
  that layer (``(C W) y + C b`` bounded over the box of ``y``), as auto_LiRPA does.
* **CROWN** (Zhang et al. 2018, arXiv 1811.00866; the LiRPA formulation of Xu et al. 2020,
  arXiv 2002.12920): a linear function ``Λ·z`` of a node is moved backward to the input through
  exact affine steps and the relaxations of :mod:`~edgeproof.certify.ops` (lower line where a
  coefficient is positive, upper line where it is negative), then concretised over the input
  set (:mod:`~edgeproof.certify.sets`). Intermediate bounds follow auto_LiRPA 0.7.1 exactly, so
  bounds agree with it to float rounding:

  - every node whose bounds a relaxation needs (the input of each activation and max pool) is
    bounded in topological order; activation outputs and reshapes take interval arithmetic from
    their input's bounds (``ibp_intermediate``);
  - a node whose path from a *box* input has one general linear layer at most (the first layer,
    possibly after an elementwise normalisation) is bounded by IBP, which is then exact;
  - every other needed node is bounded by CROWN; where all its consumers are ReLUs, only the
    neurons that interval arithmetic from the current bounds of its inputs leaves *unstable*
    (``l < 0 < u``) get a CROWN bound, the others keep that interval (auto_LiRPA's
    ``sparse_intermediate_bounds`` with IBP reference bounds, per sample).

  Margins ``C·f(x)`` start the final backward pass with ``Λ = C`` at the output (the spec folded
  into the last linear layer). Only lower bounds are propagated; an upper bound is the negated
  lower bound of the negated rows.
* **CROWN-IBP** (Zhang et al. 2020, arXiv 1906.06316): all intermediate bounds by IBP, the final
  bound by CROWN.
* **α-CROWN** (Xu et al. 2021, arXiv 2011.13824): the lower slopes of unstable ReLUs — one per
  neuron per spec row and per problem — and the lower coefficients of max pools (a point of the
  simplex per window per row) are optimised by projected gradient ascent on the final lower bound
  (Adam, learning rate 0.5 decayed ×0.98 per step, clipped to ``[a, 1]`` or projected on the
  simplex after each step; auto_LiRPA's defaults). By default the intermediate bounds are
  CROWN's and only the final pass is optimised; ``AlphaSettings(intermediate=True)`` also
  optimises the slopes of every intermediate bound jointly, as auto_LiRPA's ``alpha-CROWN``
  does. The best bound of each row over the iterations is kept, so α-CROWN is never looser than
  CROWN; any α is sound.

All computations are batched over problems (samples or branch-and-bound subdomains) and rows;
rows are processed in chunks so that no coefficient tensor exceeds ``max_elements`` values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from edgeproof.certify import ops as O
from edgeproof.certify.graph import BoundGraph, Node
from edgeproof.certify.patches import Patches
from edgeproof.certify.sets import Box, InputSet
from edgeproof.errors import OptionError

__all__ = [
    "METHODS",
    "AlphaSettings",
    "BoundResult",
    "BoundState",
    "Method",
    "backward",
    "compute_bounds",
    "margin_spec",
]

Method = Literal["ibp", "crown-ibp", "crown", "alpha-crown"]
METHODS: tuple[str, ...] = ("ibp", "crown-ibp", "crown", "alpha-crown")

Interval = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class AlphaSettings:
    """α-CROWN optimisation settings (defaults: auto_LiRPA 0.7.1's).

    Attributes:
        iterations: bound evaluations (the last one without a gradient step).
        lr: Adam learning rate of the slopes.
        lr_decay: multiplicative decay of the learning rate per step.
        intermediate: also optimise the slopes of every intermediate bound, jointly through
            the final bound, as auto_LiRPA's ``alpha-CROWN`` does (tighter; about ten times the
            cost of the default, which optimises the slopes of the final backward pass only,
            with the intermediate bounds of CROWN).
    """

    iterations: int = 20
    lr: float = 0.5
    lr_decay: float = 0.98
    intermediate: bool = False

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise OptionError("alpha_iterations", f"{self.iterations} is < 1", "use >= 1")
        if not self.lr > 0:
            raise OptionError("alpha_lr", f"{self.lr} is not positive", "use e.g. 0.5")


@dataclass
class BoundState:
    """Everything one bound computation keeps for a batch of problems.

    Attributes:
        graph: the graph.
        iset: the input sets.
        bounds: per node, its ``(lower, upper)`` bounds ``(B, *shape)`` (or ``None``).
        splits: per splittable activation node, ``(B, numel)`` int8: ``+1`` the neuron is
            forced active (input ``≥ 0``), ``-1`` inactive (``≤ 0``), ``0`` free.
        infeasible: ``(B,)`` bool: the splits contradict the bounds (an empty subdomain).
    """

    graph: BoundGraph
    iset: InputSet
    bounds: list[Interval | None]
    splits: dict[int, Tensor] = field(default_factory=dict)
    infeasible: Tensor | None = None
    max_elements: int = 1 << 25
    #: per CROWN-bounded node, the form coefficients reach each nonlinear node in (see backward)
    forms: dict[int, dict[int, tuple[object, ...]]] = field(default_factory=dict)
    _relax: dict[int, O.Relaxation | O.PoolRelaxation] = field(default_factory=dict)

    @property
    def batch(self) -> int:
        return self.iset.batch

    def subset(self, index: Tensor) -> BoundState:
        """The state of the problems ``index`` (bounds, splits and cached relaxations sliced)."""
        sub = BoundState(
            graph=self.graph,
            iset=self.iset.select(index),
            bounds=[None if b is None else (b[0][index], b[1][index]) for b in self.bounds],
            splits={k: v[index] for k, v in self.splits.items()},
            max_elements=self.max_elements,
            forms=self.forms,
        )
        for k, rel in self._relax.items():
            sliced = {
                f.name: (None if getattr(rel, f.name) is None else getattr(rel, f.name)[index])
                for f in dataclasses.fields(rel)
            }
            sub._relax[k] = dataclasses.replace(rel, **sliced)  # type: ignore[arg-type]
        return sub

    def relaxation(self, idx: int) -> O.Relaxation | O.PoolRelaxation:
        """The relaxation of nonlinear node ``idx`` from its input's bounds (cached)."""
        if idx not in self._relax:
            node = self.graph.nodes[idx]
            b = self.bounds[node.inputs[0]]
            if b is None:
                raise RuntimeError(f"bounds of the input of node {node.name} were not computed")
            op = node.op
            if isinstance(op, O.Activation):
                self._relax[idx] = op.relax(*b)
            elif isinstance(op, O.MaxPool):
                self._relax[idx] = op.relax_windows(*b)
            else:
                raise AssertionError(type(op))
        return self._relax[idx]


@dataclass(frozen=True)
class BoundResult:
    """Bounds of ``C·f(x)`` (or of ``f(x)`` when no spec is given), ``(B, R)`` each.

    Attributes:
        lower: the lower bounds.
        upper: the upper bounds (``None`` when only lower bounds were asked for).
        state: the intermediate bounds (for reuse by branch-and-bound).
    """

    lower: Tensor
    upper: Tensor | None
    state: BoundState


def margin_spec(y: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The spec matrix ``C`` ``(B, K − 1, K)`` of the margins ``f_y − f_j`` for ``j ≠ y``."""
    b = int(y.shape[0])
    eye = torch.eye(num_classes, dtype=dtype)
    c = eye[y].unsqueeze(1) - eye.unsqueeze(0)  # (B, K, K): row j = e_y - e_j
    keep = torch.ones(b, num_classes, dtype=torch.bool)
    keep[torch.arange(b), y] = False
    return c[keep].view(b, num_classes - 1, num_classes)


# --------------------------------------------------------------------------------------------
# Graph analysis


def _needed(graph: BoundGraph) -> list[bool]:
    """Nodes whose bounds a relaxation needs (inputs of nonlinear nodes, transitively through
    ``ibp_intermediate`` nodes)."""
    need = [False] * len(graph.nodes)
    for n in reversed(graph.nodes):
        if n.op is not None and not isinstance(n.op, O.LinearOp):
            need[n.inputs[0]] = True
    for n in reversed(graph.nodes):
        if need[n.index] and n.op is not None and n.op.ibp_intermediate:
            for i in n.inputs:
                need[i] = True
    return need


def _ibp_exact(graph: BoundGraph) -> list[bool]:
    """Nodes whose IBP bounds are exact for a box input (≤ 1 general linear layer on the path,
    the rest elementwise affine maps and reshapes)."""
    exact0 = [False] * len(graph.nodes)
    exact1 = [False] * len(graph.nodes)
    exact0[0] = exact1[0] = True
    for n in graph.nodes[1:]:
        op = n.op
        if op is None or len(n.inputs) != 1:
            continue
        i = n.inputs[0]
        if op.box_exact:
            exact0[n.index] = exact0[i]
            exact1[n.index] = exact1[i]
        elif isinstance(op, (O.Dense, O.Conv, O.LinearFn)):
            exact1[n.index] = exact0[i]
    return exact1


def _relu_only_consumers(graph: BoundGraph, idx: int) -> bool:
    cons = graph.consumers[idx]
    return bool(cons) and all(isinstance(graph.nodes[c].op, O.ReLU) for c in cons)


def _split_consumer(graph: BoundGraph, idx: int) -> int | None:
    for c in graph.consumers[idx]:
        op = graph.nodes[c].op
        if isinstance(op, O.Activation) and op.splittable:
            return c
    return None


def _node_ibp(state: BoundState, idx: int) -> Interval:
    node = state.graph.nodes[idx]
    if node.op is None:
        return state.iset.box()
    op = node.op
    if isinstance(op, O.Constant):
        v = op.value.expand(state.batch, *node.shape)
        return v, v
    ins = []
    for i in node.inputs:
        b = state.bounds[i]
        assert b is not None
        ins.append(b)
    return op.ibp(*ins)


# --------------------------------------------------------------------------------------------
# Backward pass


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
    if isinstance(op, O.Conv) and op.dim == 2:
        in_shape = graph.nodes[node.inputs[0]].shape
        new = a.conv_backward(
            op.weight, op.stride, op.padding, op.dilation, op.groups, (in_shape[1], in_shape[2])
        )
        c = None if op.bias is None else a.data.sum((3, 4)) @ op.bias
        return [new], c
    if isinstance(op, O.Elementwise):
        data = a.data if op.scale is None else a.data * a.window(op.scale)
        c = None if op.shift is None else (a.data * a.window(op.shift)).sum((2, 3, 4))
        return [a.with_data(data)], c
    if isinstance(op, O.Add):
        return [a, a], None
    if isinstance(op, O.Sub):
        return [a, a.with_data(-a.data)], None
    if isinstance(op, O.Activation):
        rel = state.relaxation(idx)
        assert isinstance(rel, O.Relaxation)
        dl = a.window(rel.lower_slope)
        du = a.window(rel.upper_slope)
        al = None if alpha is None else alpha.get(idx)
        if al is not None and rel.unstable is not None:
            dl = torch.where(a.window(rel.unstable.to(a.data.dtype)) > 0, al, dl)
        lb_w = None if rel.lower_bias is None else a.window(rel.lower_bias)
        ub_w = None if rel.upper_bias is None else a.window(rel.upper_bias)
        lines, c = O.apply_lines(a.data, dl, lb_w, du, ub_w, feature_dims=3)
        return [a.with_data(lines)], c
    return None


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
        return O.backward_elementwise(a, rel, None if alpha is None else alpha.get(idx))
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
            d = a_in.data
            lb = (d * a_in.window(centre)).sum((2, 3, 4)) - (d.abs() * a_in.window(radius)).sum(
                (2, 3, 4)
            )
            return bias + lb, None
        a_in = a_in.dense(state.graph.nodes[0].shape)
    return bias + state.iset.lower(a_in), (a_in if keep_input else None)


def _rows_per_chunk(state: BoundState, start: int, batch: int) -> int:
    widest = max(n.numel for n in state.graph.nodes[: start + 1])
    return max(1, state.max_elements // max(1, batch * widest))


@dataclass(frozen=True)
class RowPlan:
    """The neurons of one node that get a CROWN bound: ``index`` ``(B, m)`` (per problem,
    padded) and ``valid`` ``(B, m)`` (False on padding)."""

    index: Tensor
    valid: Tensor

    @property
    def rows(self) -> int:
        return int(self.index.shape[1])


def _sparse_safe(graph: BoundGraph, idx: int) -> bool:
    """Bounds of stable neurons of node ``idx`` cannot change any relaxation: every consumer
    is a ReLU whose output bounds nothing needs (a max pool reading them would use the values)."""
    if not _relu_only_consumers(graph, idx):
        return False
    need = _needed(graph)
    return not any(need[c] for c in graph.consumers[idx])


def row_plan(graph: BoundGraph, idx: int, ref: Interval, *, sparse: bool | None = None) -> RowPlan:
    """Which neurons of node ``idx`` CROWN bounds given the bounds ``ref`` it already has: the
    unstable ones (``l < 0 < u``) when ``sparse`` (default: when every consumer is a ReLU, the
    rule of auto_LiRPA), else all of them."""
    b = int(ref[0].shape[0])
    n = graph.nodes[idx].numel
    if _relu_only_consumers(graph, idx) if sparse is None else sparse:
        lo, hi = ref[0].reshape(b, n), ref[1].reshape(b, n)
        unstable = (lo < 0) & (hi > 0)
        counts = unstable.sum(1)
        rows = int(counts.max()) if b else 0
        order = torch.sort(unstable.to(torch.int8), dim=1, descending=True, stable=True).indices
        index = order[:, :rows]
        valid = torch.arange(rows).unsqueeze(0) < counts.unsqueeze(1)
        return RowPlan(index, valid)
    return RowPlan(torch.arange(n).unsqueeze(0).expand(b, n), torch.ones(b, n, dtype=torch.bool))


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
    if use_patches:
        c_, h_, w_ = node.shape
        chunk = max(1, state.max_elements // max(1, b * _widest_patch(state.graph, idx)))
    else:
        chunk = _rows_per_chunk(state, idx, b)
    half = max(1, chunk // 2)
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
            a0 = Patches(pdata, torch.cat([pi, pi], 1), torch.cat([pj, pj], 1), (1, 1), (0, 0))
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
    if b == 1 or (not big and plan.rows * b <= 1.25 * int(counts.sum())):
        return _crown_node(state, idx, base, plan, forms=forms)
    lower, upper = base[0].clone(), base[1].clone()
    groups = [torch.tensor([i]) for i in range(b)] if big else _groups(counts)
    for g in groups:
        rows = int(counts[g].max())
        if rows == 0:
            continue
        sub_plan = RowPlan(plan.index[g, :rows], plan.valid[g, :rows])
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


# --------------------------------------------------------------------------------------------
# Entry point


def _ibp_final(state: BoundState, spec: Tensor | None) -> Interval:
    graph = state.graph
    out = graph.nodes[graph.output]
    if spec is None:
        b = state.bounds[graph.output]
        assert b is not None
        return b[0].flatten(1), b[1].flatten(1)
    if isinstance(out.op, O.Dense) and len(graph.nodes[out.inputs[0]].shape) == 1:
        ib = state.bounds[out.inputs[0]]
        assert ib is not None
        return out.op.ibp_spec(ib, spec)
    b = state.bounds[graph.output]
    assert b is not None
    lo, hi = b[0].flatten(1).unsqueeze(1), b[1].flatten(1).unsqueeze(1)
    lower = (spec.clamp(min=0) * lo + spec.clamp(max=0) * hi).sum(2)
    upper = (spec.clamp(min=0) * hi + spec.clamp(max=0) * lo).sum(2)
    return lower, upper


def _final_rows(graph: BoundGraph, spec: Tensor | None, batch: int, dtype: torch.dtype) -> Tensor:
    k = graph.nodes[graph.output].numel
    if spec is None:
        return torch.eye(k, dtype=dtype).unsqueeze(0).expand(batch, k, k)
    return spec.to(dtype)


def prepare(
    graph: BoundGraph,
    iset: InputSet,
    method: Method,
    *,
    splits: dict[int, Tensor] | None = None,
    ref: Sequence[Interval | None] | None = None,
    max_elements: int = 1 << 25,
) -> BoundState:
    """Intermediate bounds of every node for ``method`` (the part shared by all specs)."""
    if method not in METHODS:
        raise OptionError(
            "method", f"unknown bound method {method!r}", f"use one of {', '.join(METHODS)}"
        )
    if tuple(iset.shape) != tuple(graph.input_shape):
        raise OptionError(
            "x",
            f"inputs of shape {list(iset.shape)} do not fit the model's input "
            f"{list(graph.input_shape)}",
            "give inputs of the shape the model was traced with",
        )
    state = BoundState(
        graph=graph,
        iset=iset,
        bounds=[None] * len(graph.nodes),
        splits=dict(splits or {}),
        max_elements=max_elements,
    )
    with torch.no_grad():
        intermediate_bounds(state, method, ref=ref)
    return state


def final_bound(
    state: BoundState,
    spec: Tensor | None,
    method: Method,
    *,
    upper: bool = False,
    alpha: AlphaSettings | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Bounds of ``spec·f(x)`` from prepared intermediate bounds."""
    graph = state.graph
    b = state.batch
    dtype = state.bounds[0][0].dtype if state.bounds[0] is not None else torch.float32
    if method == "ibp":
        lo, hi = _ibp_final(state, spec)
        return lo, (hi if upper else None)
    rows = _final_rows(graph, spec, b, dtype)
    r = rows.shape[1]
    a0 = torch.cat([rows, -rows], dim=1) if upper else rows
    a0 = a0.reshape(b, a0.shape[1], *graph.nodes[graph.output].shape)
    if method == "alpha-crown":
        settings = alpha or AlphaSettings()
        shape = graph.nodes[graph.output].shape
        if upper:  # lower and upper bounds optimised separately, as auto_LiRPA does
            lo = optimise_alpha(state, rows.reshape(b, r, *shape), settings)
            hi = optimise_alpha(state, (-rows).reshape(b, r, *shape), settings)
            return lo, -hi
        lb = optimise_alpha(state, a0, settings)
    else:
        with torch.no_grad():
            lb, _ = backward(state, graph.output, a0)
    if upper:
        return lb[:, :r], -lb[:, r:]
    return lb, None


def compute_bounds(
    graph: BoundGraph,
    iset: InputSet,
    spec: Tensor | None = None,
    method: Method = "crown",
    *,
    upper: bool = False,
    alpha: AlphaSettings | None = None,
    max_elements: int = 1 << 25,
) -> BoundResult:
    """Bound ``spec·f(x)`` (``f(x)`` if ``spec`` is ``None``) for ``x`` in ``iset``.

    Args:
        graph: the traced model.
        iset: the input sets, one per problem.
        spec: ``(B, R, K)`` rows (e.g. :func:`margin_spec`), or ``None`` for the outputs.
        method: ``ibp``, ``crown-ibp``, ``crown`` or ``alpha-crown``.
        upper: also compute upper bounds.
        alpha: α-CROWN settings.
        max_elements: memory cap of one coefficient tensor (values).
    """
    state = prepare(graph, iset, method, max_elements=max_elements)
    lo, hi = final_bound(state, spec, method, upper=upper, alpha=alpha)
    return BoundResult(lo, hi, state)


# --------------------------------------------------------------------------------------------
# α-CROWN


def _project_simplex(v: Tensor, valid: Tensor, dim: int) -> Tensor:
    """Euclidean projection of ``v`` onto the probability simplex along ``dim`` (positions where
    ``valid`` is False are held at 0); the sort-based algorithm of Held et al. 1974 /
    Duchi et al. 2008. The condition ``s_k > (Σ_{i≤k} s_i − 1)/k`` holds for a prefix of the
    sorted values, so its count gives the support size without a search."""
    big = torch.finfo(v.dtype).max / 4
    w = torch.where(valid, v, torch.full_like(v, -big)).movedim(dim, -1)
    srt = torch.sort(w, dim=-1, descending=True).values
    css = srt.cumsum(-1) - 1
    k = torch.arange(1, w.shape[-1] + 1, dtype=v.dtype)
    rho = ((srt - css / k) > 0).sum(-1, keepdim=True).clamp(min=1)
    theta = css.gather(-1, rho - 1) / rho.to(v.dtype)
    out = (w - theta).clamp(min=0).movedim(-1, dim)
    return torch.where(valid, out, torch.zeros_like(out))


class _Adam:
    """Adam (Kingma & Ba 2015) with torch.optim.Adam's defaults (β = (0.9, 0.999), eps 1e-8, no
    weight decay) and an exponentially decayed learning rate; written out because the first use
    of ``torch.optim`` imports ``torch._dynamo`` (seconds per process)."""

    def __init__(self, params: Sequence[Tensor], lr: float, decay: float = 1.0) -> None:
        self.params = list(params)
        self.lr = lr
        self.decay = decay
        self.t = 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def add(self, params: Sequence[Tensor]) -> None:
        """Optimise more parameters from now on (their moments start at zero)."""
        for p in params:
            self.params.append(p)
            self.m.append(torch.zeros_like(p))
            self.v.append(torch.zeros_like(p))

    def step(self, sign: float = 1.0) -> None:
        """One step *descending* the gradient (``sign=-1`` ascends)."""
        self.t += 1
        b1, b2 = 0.9, 0.999
        c1 = 1 - b1**self.t
        c2 = 1 - b2**self.t
        with torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v):
                g = p.grad
                if g is None:
                    continue
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v / c2).sqrt_().add_(1e-8)
                p.addcdiv_(m, denom, value=-sign * self.lr / c1)
                p.grad = None
        self.lr *= self.decay


def init_alpha(
    state: BoundState,
    rows: int,
    start: int | None = None,
    plan: RowPlan | None = None,
    kinds: tuple[str, ...] = ("relu", "maxpool"),
) -> tuple[dict[int, Tensor], dict[int, Tensor | None]]:
    """Initial α of a backward pass from ``start`` (default: the output) with ``rows`` rows:
    CROWN's lower slopes of unstable ReLUs ``(B, rows, *shape)`` — or, where the coefficients
    from ``start`` reach a ReLU as patches, their windows ``(B, rows, C, Kh, Kw)`` (``plan``
    gives the rows' neurons; rows are the plan's lower rows then its upper rows) — and the
    one-hot max-pool coefficients ``(B, rows, C, window, L)``. Returns the α tensors and, per
    node, the simplex validity mask (``None`` for ReLUs)."""
    graph = state.graph
    b = state.batch
    alphas: dict[int, Tensor] = {}
    masks: dict[int, Tensor | None] = {}
    root = graph.output if start is None else start
    forms = state.forms.get(root, {}) if start is not None else {}
    ancestors = _ancestors(graph, root)
    for n in graph.nodes:
        if n.index not in ancestors or n.op is None or n.index == root:
            continue
        op = n.op
        form = forms.get(n.index, ("dense",))
        if isinstance(op, O.Activation) and op.optimisable and "relu" in kinds:
            rel = state.relaxation(n.index)
            assert isinstance(rel, O.Relaxation)
            if rel.unstable is None or not bool(rel.unstable.any()):
                continue
            if form[0] == "patch":
                assert plan is not None and start is not None
                _, stride, pad, kernel = form
                _c, _h, w_ = graph.nodes[start].shape
                pos = plan.index
                pi, pj = (pos // w_) % _h, pos % w_
                probe = Patches(
                    torch.zeros(b, 2 * plan.rows, 1, *kernel, dtype=rel.lower_slope.dtype),  # type: ignore[misc]
                    torch.cat([pi, pi], 1),
                    torch.cat([pj, pj], 1),
                    stride,  # type: ignore[arg-type]
                    pad,  # type: ignore[arg-type]
                )
                alphas[n.index] = probe.window(rel.lower_slope).clone()
            else:
                alphas[n.index] = rel.lower_slope.unsqueeze(1).expand(b, rows, *n.shape).clone()
            masks[n.index] = None
        elif isinstance(op, O.MaxPool) and op.padding == (0, 0) and "maxpool" in kinds:
            pr = state.relaxation(n.index)
            assert isinstance(pr, O.PoolRelaxation)
            if bool((pr.upper.sum(2) > 0).all()):
                continue  # every window is linear: nothing to optimise
            alphas[n.index] = pr.lower.unsqueeze(1).expand(b, rows, *pr.lower.shape[1:]).clone()
            masks[n.index] = pr.valid.unsqueeze(1)
    return alphas, masks


def clip_alpha(
    graph: BoundGraph, alphas: dict[int, Tensor], masks: dict[int, Tensor | None]
) -> None:
    """Project α back onto its feasible set in place: ``[a, 1]`` for (leaky) ReLUs, the
    simplex for max pools."""
    with torch.no_grad():
        for idx, a in alphas.items():
            mask = masks[idx]
            if mask is None:
                op = graph.nodes[idx].op
                assert isinstance(op, O.Activation)
                a.clamp_(op.alpha_min, 1.0)
            else:
                a.copy_(_project_simplex(a, mask, 3))


def optimise_alpha(state: BoundState, a0: Tensor, settings: AlphaSettings) -> Tensor:
    """α-CROWN: the best lower bound of ``a0·f(x)`` over the iterations, ``(B, R)``.

    ``settings.iterations`` bound evaluations, a projected Adam step after each but the last
    (auto_LiRPA's loop). With ``settings.intermediate`` the slopes of every intermediate CROWN
    bound (per start node, per row, per neuron) are optimised jointly through the final bound,
    as auto_LiRPA's ``alpha-CROWN`` does: each iteration recomputes the intermediate bounds —
    of the neurons the first CROWN pass left unstable where only their stability matters (every
    consumer a ReLU whose output bounds nothing reads), of every neuron otherwise (a max pool's
    relaxation reads the values) — and uses them as they are (auto_LiRPA's iterations). ReLU
    slopes start at CROWN's; max-pool coefficients start one-hot at the window maximum of the
    lower bounds of the first iteration (auto_LiRPA initialises them lazily, too).
    """
    graph = state.graph
    rows = int(a0.shape[1])
    final_alpha, final_masks = init_alpha(state, rows, kinds=("relu",))
    inter: dict[int, dict[int, Tensor]] = {}
    inter_masks: dict[int, dict[int, Tensor | None]] = {}
    plans: dict[int, RowPlan] = {}
    if settings.intermediate:
        _init_intermediate_alpha(state, inter, inter_masks, plans)
    has_pools = any(isinstance(n.op, O.MaxPool) for n in graph.nodes)
    params = list(final_alpha.values()) + [a for d in inter.values() for a in d.values()]
    if not params and not has_pools:
        with torch.no_grad():
            return backward(state, graph.output, a0)[0]
    for p in params:
        p.requires_grad_(True)
    opt = _Adam(params, settings.lr, settings.lr_decay)
    best: Tensor | None = None
    first_pass = list(state.bounds)
    joint = bool(plans)

    def add_pools(cur: BoundState, k: int | None) -> None:
        """Max-pool coefficients of start ``k`` (None: the output), one-hot at the current
        relaxation, created just before their first use."""
        if k is None:
            al, ms = init_alpha(cur, rows, kinds=("maxpool",))
            final_alpha.update(al)
            final_masks.update(ms)
        else:
            plan = plans[k]
            al, ms = init_alpha(cur, 2 * plan.rows, start=k, plan=plan, kinds=("maxpool",))
            inter[k].update(al)
            inter_masks[k].update(ms)
        for p in al.values():
            p.requires_grad_(True)
        opt.add(list(al.values()))

    for it in range(settings.iterations):
        last = it == settings.iterations - 1
        first = it == 0 and has_pools
        with torch.set_grad_enabled(not last):
            if joint:
                cur = _unbounded_copy(state)
                _joint_intermediate(cur, first_pass, plans, inter, add_pools if first else None)
            else:
                cur = state
            if first:
                add_pools(cur, None)
            lb, _ = backward(cur, graph.output, a0, alpha=final_alpha)
        best = lb.detach() if best is None else torch.maximum(best, lb.detach())
        if last:
            break
        if lb.requires_grad:
            (-lb.sum()).backward()
            opt.step()
        clip_alpha(graph, final_alpha, final_masks)
        for k, d in inter.items():
            clip_alpha(graph, d, inter_masks[k])
    assert best is not None
    return best


def _init_intermediate_alpha(
    state: BoundState,
    inter: dict[int, dict[int, Tensor]],
    inter_masks: dict[int, dict[int, Tensor | None]],
    plans: dict[int, RowPlan],
) -> None:
    """Fill the ReLU slopes (and their masks and row plans) of every intermediate CROWN bound
    with unstable rows, per start node, starting at CROWN's."""
    graph = state.graph
    for k in crown_nodes(graph, state.iset):
        ref = state.bounds[k]
        assert ref is not None
        plan = row_plan(graph, k, ref, sparse=_sparse_safe(graph, k))
        if plan.rows == 0:
            continue
        plans[k] = plan
        if not state.forms.get(k):
            # the first pass had no unstable row here: probe the coefficient forms
            probe = RowPlan(plan.index[:, :1], plan.valid[:, :1])
            with torch.no_grad():
                _crown_node(state, k, ref, probe, forms=state.forms.setdefault(k, {}))
        al, ms = init_alpha(state, 2 * plan.rows, start=k, plan=plan, kinds=("relu",))
        inter[k], inter_masks[k] = al, ms


def _unbounded_copy(state: BoundState) -> BoundState:
    """``state`` with no node bounds yet (each joint iteration recomputes them)."""
    graph = state.graph
    return BoundState(
        graph=graph,
        iset=state.iset,
        bounds=[None] * len(graph.nodes),
        splits=state.splits,
        max_elements=state.max_elements,
        forms=state.forms,
    )


def _ancestors(graph: BoundGraph, idx: int) -> set[int]:
    seen = {idx}
    for n in reversed(graph.nodes[: idx + 1]):
        if n.index in seen:
            seen.update(n.inputs)
    return seen

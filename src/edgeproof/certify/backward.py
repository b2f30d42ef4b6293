"""CROWN's backward pass (see :mod:`~edgeproof.certify.bounds`): a linear function of a node
moved back to the input through exact affine steps and relaxations
(:mod:`~edgeproof.certify.steps`), then concretised over the input set.

Coefficient tensors that only the pass holds (made by its own steps, handed to one input) are
updated in place where no gradient is recorded: a step's output takes the place of its input
instead of a fresh allocation (the pass is memory-bound, and fresh memory costs page faults).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from edgeproof.certify import ops as O
from edgeproof.certify.bound_state import BoundState
from edgeproof.certify.graph import BoundGraph, Node
from edgeproof.certify.patches import Patches
from edgeproof.certify.sets import Box
from edgeproof.certify.steps import Coef, patch_step, relaxation_step


def _dense(a: Coef, shape: tuple[int, ...]) -> Tensor:
    return a.dense(shape) if isinstance(a, Patches) else a


def _storage(a: Coef) -> int:
    return (a.data if isinstance(a, Patches) else a).untyped_storage().data_ptr()


class _Pending:
    """The coefficients still to propagate, per node, and which of them only the pass holds
    (free to overwrite when ``inplace``)."""

    def __init__(self, inplace: bool) -> None:
        self.acc: dict[int, Coef] = {}
        self.owned: set[int] = set()  # nodes whose coefficients are the pass's own
        self.inplace = inplace

    def pop(self, i: int) -> tuple[Coef | None, bool]:
        a = self.acc.pop(i, None)
        mine = i in self.owned
        self.owned.discard(i)
        return a, mine and self.inplace

    def add(self, i: int, new: Coef, mine: bool, shape: tuple[int, ...]) -> None:
        """Add ``new`` (``mine``: only the pass holds it) to node ``i``'s coefficients."""
        old, old_mine = self.pop(i)
        mine = mine and self.inplace
        if old is None:
            self.acc[i] = new
        elif isinstance(old, Patches) and isinstance(new, Patches):
            both = old.add(new, own=(old_mine, mine))
            if both is not None:
                self.acc[i] = both
                mine = True
            else:
                self.acc[i] = old.dense(shape).add_(new.dense(shape))
                mine = True
        else:
            d_old, d_new = _dense(old, shape), _dense(new, shape)
            if old_mine or isinstance(old, Patches):
                self.acc[i] = d_old.add_(d_new)
            elif mine or isinstance(new, Patches):
                self.acc[i] = d_new.add_(d_old)
            else:
                self.acc[i] = d_old + d_new
            mine = True
        if mine:
            self.owned.add(i)

    def spread(
        self, graph: BoundGraph, node: Node, a: Coef, mine: bool, news: Sequence[Coef | None]
    ) -> None:
        """Hand a step's per-input coefficients ``news`` to the inputs of ``node``; an output
        sharing memory with the step's input ``a`` stays the pass's own only if it is the one
        such output and ``a`` was."""
        ptr = _storage(a)
        shared = [n is not None and _storage(n) == ptr for n in news]
        for inp, n, s in zip(node.inputs, news, shared):
            if n is not None:
                own = (not s) or (mine and sum(shared) == 1)
                self.add(inp, n, own, graph.nodes[inp].shape)


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
    pending = _initial_coefficients(graph, start, a0, extra)
    bias = torch.zeros(b, r, dtype=data.dtype)
    for idx in range(start, 0, -1):
        a, mine = pending.pop(idx)
        if a is None:
            continue
        node = graph.nodes[idx]
        op = node.op
        assert op is not None
        if capture is not None and idx in capture:
            capture[idx] = _dense(a, node.shape).detach()
            mine = False
        if isinstance(a, Patches):
            step = patch_step(state, idx, a, alpha, mine)
            if step is not None:
                if forms is not None and not isinstance(op, O.LinearOp):
                    forms[idx] = ("patch", a.stride, a.pad, a.kernel)
                news, c = step
                if c is not None:
                    bias = bias + c
                pending.spread(graph, node, a, mine, news)
                continue
            a, mine = a.dense(node.shape), pending.inplace
        if isinstance(op, O.LinearOp):
            new, c = op.backward(a.reshape(b * r, *node.shape))
            shaped = [
                None if n is None else n.reshape(b, r, *graph.nodes[i].shape)
                for i, n in zip(node.inputs, new)
            ]
            pending.spread(graph, node, a, mine, shaped)
            if c is not None:
                bias = bias + c.view(b, r)
            continue
        if forms is not None:
            forms[idx] = ("dense",)
        na, c = relaxation_step(state, idx, op, a, alpha, mine)
        if c is not None:
            bias = bias + c
        pending.spread(graph, node, a, mine, [na])
    a_in, mine = pending.pop(0)
    return _input_lower(state, a_in, bias, keep_input, mine)


def _initial_coefficients(
    graph: BoundGraph, start: int, a0: Coef, extra: dict[int, Tensor] | None
) -> _Pending:
    """The coefficients to propagate, per node: ``a0`` at ``start`` plus the ``extra`` terms
    of the nodes up to ``start`` (the caller's tensors: never overwritten)."""
    pending = _Pending(inplace=not torch.is_grad_enabled())
    pending.acc[start] = a0
    if extra:
        for k, v in extra.items():
            if k <= start:
                pending.add(k, v, False, graph.nodes[k].shape)
    return pending


def _box_lower(a: Coef, lo: Tensor, hi: Tensor, mine: bool) -> Tensor:
    """``min a·z`` over the box ``[lo, hi]`` ``(B, *shape)`` (patches: by their windows, which
    are zero outside the map); ``mine``: ``a`` may be overwritten."""
    centre, radius = (hi + lo) / 2, (hi - lo) / 2
    if isinstance(a, Patches):
        d = a.blocks()
        dims = (3, 4, 5)
        lb = (d * a.windows(centre)).sum(dims)
        absd = d.abs_() if mine else d.abs()
        lb = lb - (absd * a.windows(radius)).sum(dims)
        return lb.reshape(a.data.shape[0], a.data.shape[1])
    b, r = a.shape[0], a.shape[1]
    if a.dim() == 5 and a.stride(2) == 1 and not a.is_contiguous():  # channels-inner
        flat = a.permute(0, 1, 3, 4, 2).reshape(b, r, -1)
        c = centre.permute(0, 2, 3, 1).reshape(b, -1, 1)
        rad = radius.permute(0, 2, 3, 1).reshape(b, -1, 1)
    else:
        flat = a.reshape(b, r, -1)
        c, rad = centre.reshape(b, -1, 1), radius.reshape(b, -1, 1)
    lb = torch.bmm(flat, c).squeeze(-1)
    copied = flat.data_ptr() != a.data_ptr() and not torch.is_grad_enabled()
    absd = flat.abs_() if mine or copied else flat.abs()
    return lb - torch.bmm(absd, rad).squeeze(-1)


def _input_lower(
    state: BoundState, a_in: Coef | None, bias: Tensor, keep_input: bool, mine: bool = False
) -> tuple[Tensor, Tensor | None]:
    """The bound given the coefficients that reached the input (concretised over the input
    set; patches over a box directly) and the accumulated constant ``bias``."""
    if a_in is None:
        return bias, None
    if isinstance(a_in, Patches):
        if isinstance(state.iset, Box) and not keep_input:
            lo, hi = state.iset.box()
            return bias + _box_lower(a_in, lo, hi, mine), None
        a_in = a_in.dense(state.graph.nodes[0].shape)
    return bias + state.iset.lower(a_in), (a_in if keep_input else None)

"""CROWN's backward pass (see :mod:`~edgeproof.certify.bounds`): a linear function of a node
moved back to the input through exact affine steps and relaxations
(:mod:`~edgeproof.certify.steps`), then concretised over the input set."""

from __future__ import annotations

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
            step = patch_step(state, idx, a, alpha)
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
        na, c = relaxation_step(state, idx, op, a, alpha)
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

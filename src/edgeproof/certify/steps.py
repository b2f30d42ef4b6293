"""One backward step of CROWN through a node (see :mod:`~edgeproof.certify.backward`): for
coefficients held as :class:`~edgeproof.certify.patches.Patches` (convolutions, elementwise maps,
sums, activations), and for dense coefficients through an activation or a max pool; relaxation
steps apply the lines only where they differ when that is cheaper
(:mod:`~edgeproof.certify.sparse_lines`)."""

from __future__ import annotations

import torch
from torch import Tensor

from edgeproof.certify import ops as O
from edgeproof.certify.bound_state import BoundState
from edgeproof.certify.patches import Patches
from edgeproof.certify.sparse_lines import SparseLines, apply_sparse, sparse_lines

Coef = Tensor | Patches


def patch_step(
    state: BoundState,
    idx: int,
    a: Patches,
    alpha: dict[int, Tensor] | None,
    inplace: bool = False,
) -> tuple[list[Coef | None], Tensor | None] | None:
    """One backward step of patches through node ``idx`` (``None``: no patch form);
    ``inplace``: ``a``'s data may be overwritten."""
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
        c = None
        if op.shift is not None:  # before the scale may overwrite the data
            c = (a.blocks() * a.windows(op.shift, state.tables)).sum((3, 4, 5)).reshape(b, r)
        data = a.data
        if op.scale is not None:
            scale = a.windows(op.scale, state.tables)
            data = a.unblock(a.blocks().mul_(scale) if inplace else a.blocks() * scale)
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
            al_flat = None if al is None else a.flat(al)
            out, c = apply_sparse(a.flat(), sparse, al_flat, inplace=inplace)
            return [a.with_data(a.unflat(out), clean=True)], None if c is None else c.reshape(b, r)
        t = state.tables
        dl = a.windows(rel.lower_slope, t)
        du = a.windows(rel.upper_slope, t)
        if al is not None and rel.unstable is not None:
            dl = torch.where(a.windows(rel.unstable, t), a.blocks(al), dl)
        lb_w = None if rel.lower_bias is None else a.windows(rel.lower_bias, t)
        ub_w = None if rel.upper_bias is None else a.windows(rel.upper_bias, t)
        lines, c = O.apply_lines(a.blocks(), dl, lb_w, du, ub_w, feature_dims=3, inplace=inplace)
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


def relaxation_step(
    state: BoundState,
    idx: int,
    op: O.BoundOp,
    a: Tensor,
    alpha: dict[int, Tensor] | None,
    inplace: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Pass dense coefficients back through an activation or a max pool by its relaxation
    (the α slopes where given); returns the input's coefficients (written into ``a`` if
    ``inplace`` allows) and the constant term."""
    rel = state.relaxation(idx)
    if isinstance(op, O.Activation):
        assert isinstance(rel, O.Relaxation)
        al = None if alpha is None else alpha.get(idx)
        inner = a.dim() == 5 and a.stride(2) == 1 and not a.is_contiguous()
        sparse = _dense_sparse_lines(state, idx, rel, inner, al is not None)
        if sparse is None:
            return O.backward_elementwise(a, rel, al, inplace=inplace)
        b, r = a.shape[0], a.shape[1]

        def flat(x: Tensor) -> Tensor:
            x = x.permute(0, 1, 3, 4, 2) if inner else x.contiguous()
            return x.reshape(b, r, 1, -1)

        new, c = apply_sparse(flat(a), sparse, None if al is None else flat(al), inplace=inplace)
        if inner:
            h, w = a.shape[3], a.shape[4]
            new = new.view(b, r, h, w, a.shape[2]).permute(0, 1, 4, 2, 3)
        return new.view(a.shape) if not inner else new, None if c is None else c.view(b, r)
    assert isinstance(op, O.MaxPool)
    assert isinstance(rel, O.PoolRelaxation)
    if alpha is not None and idx in alpha:
        return op.backward_windows(a, alpha[idx], rel.upper, rel.upper_const, rel)
    if rel.argmax is not None:
        return op.backward_argmax(a, rel)
    return op.backward_windows(a, rel.lower.unsqueeze(1), rel.upper, rel.upper_const)

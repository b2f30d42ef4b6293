"""Interval bound propagation (IBP) node by node, and the graph analysis that decides which
nodes' bounds are needed and where IBP is exact (see :mod:`~edgeproof.certify.bounds`)."""

from __future__ import annotations

from edgeproof.certify import ops as O
from edgeproof.certify.bound_state import (
    BoundState,
    Interval,
)
from edgeproof.certify.graph import BoundGraph


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

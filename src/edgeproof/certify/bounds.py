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

from collections.abc import Sequence

import torch
from torch import Tensor

from edgeproof.certify import ops as O
from edgeproof.certify.alpha import _Adam as _Adam
from edgeproof.certify.alpha import clip_alpha as clip_alpha
from edgeproof.certify.alpha import init_alpha as init_alpha
from edgeproof.certify.alpha import optimise_alpha
from edgeproof.certify.backward import backward
from edgeproof.certify.bound_state import (
    METHODS,
    AlphaSettings,
    BoundResult,
    BoundState,
    Interval,
    Method,
    margin_spec,
)
from edgeproof.certify.graph import BoundGraph
from edgeproof.certify.intermediate import intermediate_bounds
from edgeproof.certify.sets import InputSet
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
